"""Stored tuning truth: the tuning queries of an ANN index and their exact top-k, kept next to the index.

A build tunes search params on query sets (held-out rows of the index's own kind, and the other
modality's vectors; indexers/holdout.py) against their exact neighbours, which cost a streaming pass over
every shard. Computing that again on each nightly add made an add of 1% of the vectors cost as much as a
build. So the build stores the queries and their exact top-k (ids and scores) in `<target>.truth.npz`
under OUT/index/ (listed in index.json with its size and SHA-256, like the other index files), and an add
only streams its NEW shards past the stored queries and merges the two top-k lists: the top-k over old
and new rows is the top-k of (old top-k + new top-k), so the result is the exact truth over everything
the index holds, at a cost proportional to what was added.

The held-out queries of the index's own kind are in the index once the build is done; their ids are
stored as `exclude`: they are left out of the truth, and every recall measurement on the stored queries
searches with them excluded (a faiss ID selector), so the queries stay "fresh" for an IVF index. For an
HNSW graph the queries' own nodes are still walked through, which can flatter the measurement.

File layout (an uncompressed npz: `np.load(path)` reads it; `read` checks every header itself, `_arrays`): per
query set NAME ("image" | "text"), `NAME.queries` float32[Q, D], `NAME.ids` int64[Q, K], `NAME.scores`
float32[Q, K] (padded with -1 / -inf); and `exclude` int64[m] sorted.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexers.exact import exact_search_stream
from indexers.stream import without
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path

TRUTH_K = 10  # neighbours kept per query: recall@10 is what tuning measures
DTYPE_KINDS = {"queries": "f", "ids": "i", "scores": "f", "exclude": "i"}  # array (name suffix) -> numpy dtype kind


def truth_file(target: str) -> str:
    """File name (under OUT/index/) of a target's stored truth."""
    return f"{target}.truth.npz"


@dataclass(frozen=True)
class TruthSet:
    """One query type's queries and their exact top-k over what the index holds (less `exclude`)."""

    queries: np.ndarray  # float32[Q, D]
    ids: np.ndarray  # int64[Q, K], best first, -1 padded
    scores: np.ndarray  # float32[Q, K], descending, -inf padded

    def __len__(self) -> int:
        return len(self.queries)


@dataclass(frozen=True)
class StoredTruth:
    """Every query set of one index, and the ids left out of truth and measurement."""

    sets: Mapping[str, TruthSet]  # query type -> set (empty sets are not stored)
    exclude: np.ndarray  # int64[m] sorted: the held-out queries' own ids (in the index, not in the truth)


class TruthDamaged(RadRetrieveError):
    """A stored-truth file that cannot be read as one (the builder recomputes it)."""


def compute(
    queries: Mapping[str, np.ndarray], exclude: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]]
) -> StoredTruth:
    """Exact top-K of each query set (name -> float32[Q, D]) over `batches` less the `exclude` ids."""
    names = [name for name, q in queries.items() if len(q)]
    exclude = np.sort(np.asarray(exclude, dtype=np.int64))
    if not names:
        return StoredTruth({}, exclude)
    stacked = np.concatenate([queries[name] for name in names])
    scores, ids = exact_search_stream(stacked, without(iter(batches), exclude), TRUTH_K)
    return StoredTruth(_split(names, queries, stacked, scores, ids), exclude)


def update(truth: StoredTruth, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> StoredTruth:
    """The stored truth with the rows of `batches` (the NEW rows only) merged into every top-K."""
    names = list(truth.sets)
    if not names:
        return truth
    stacked = np.concatenate([truth.sets[n].queries for n in names])
    old_ids = np.concatenate([truth.sets[n].ids for n in names])
    old_scores = np.concatenate([truth.sets[n].scores for n in names])
    new_scores, new_ids = exact_search_stream(stacked, without(iter(batches), truth.exclude), TRUTH_K)
    scores, ids = merge(old_scores, old_ids, new_scores, new_ids)
    queries = {n: truth.sets[n].queries for n in names}
    return StoredTruth(_split(names, queries, stacked, scores, ids), truth.exclude)


def merge(
    scores_a: np.ndarray, ids_a: np.ndarray, scores_b: np.ndarray, ids_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Top-K per row of two top-K lists over disjoint rows (float32[Q, K] / int64[Q, K], -1 padded):
    descending score, ties by ascending id, as exact search orders them."""
    ids = np.concatenate([ids_a, ids_b], axis=1).astype(np.int64)
    scores = np.where(ids >= 0, np.concatenate([scores_a, scores_b], axis=1), -np.inf).astype(np.float32)
    tie = np.where(ids >= 0, ids, np.iinfo(np.int64).max)  # padding sorts last
    order = np.lexsort((tie, -scores), axis=1)[:, :TRUTH_K]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _split(
    names: list[str], queries: Mapping[str, np.ndarray], stacked: np.ndarray, scores: np.ndarray, ids: np.ndarray
) -> dict[str, TruthSet]:
    out, start = {}, 0
    for name in names:
        stop = start + len(queries[name])
        out[name] = TruthSet(stacked[start:stop], ids[start:stop], scores[start:stop])
        start = stop
    return out


def write(folder: Path, target: str, truth: StoredTruth) -> str:
    """Write the truth atomically as `<target>.truth.npz` under `folder`; returns the file name."""
    name = truth_file(target)
    arrays: dict[str, np.ndarray] = {"exclude": truth.exclude}
    for set_name, s in truth.sets.items():
        arrays[f"{set_name}.queries"] = np.ascontiguousarray(s.queries, dtype=np.float32)
        arrays[f"{set_name}.ids"] = np.ascontiguousarray(s.ids, dtype=np.int64)
        arrays[f"{set_name}.scores"] = np.ascontiguousarray(s.scores, dtype=np.float32)
    with atomic_path(Path(folder) / name) as tmp, open(tmp, "xb") as fh:
        np.savez(fh, **arrays)
    return name


def read(path: Path, dim: int) -> StoredTruth:
    """The stored truth in `path`; `TruthDamaged` (one line naming it) if it is not a whole one of `dim`."""
    try:
        arrays = _arrays(path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise TruthDamaged(f"{path}: unreadable stored truth ({type(exc).__name__}: {exc})") from exc
    exclude = arrays.get("exclude")
    if exclude is None or exclude.ndim != 1:
        raise TruthDamaged(f"{path}: stored truth without its 1-D `exclude` ids")
    sets = {}
    for key in arrays:
        if key.endswith(".queries"):
            name = key[: -len(".queries")]
            sets[name] = _checked_set(path, name, arrays, dim)
    return StoredTruth(sets, np.sort(exclude.astype(np.int64)))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """The file's arrays, each header checked before anything is allocated: only the members `write` makes
    (stored, not compressed, so no member is larger than the file), only floats or ints by name (no objects:
    nothing is ever unpickled), and exactly as many bytes as the header's shape claims (numpy would allocate
    whatever a crafted header claims before reading)."""
    arrays = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            kind = DTYPE_KINDS.get(key.rpartition(".")[2])
            if kind is None or info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"member {info.filename[:40]!r} is not one a stored truth holds")
            with zf.open(info) as fh:
                major, _ = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(fh)
                size = info.file_size - fh.tell()
                if dtype.kind != kind or dtype.hasobject or int(np.prod(shape)) * dtype.itemsize != size:
                    raise ValueError(f"member {key!r}: {dtype} {shape} in {size} bytes")
                flat = np.frombuffer(fh.read(size), dtype=dtype)
            arrays[key] = flat.reshape(shape, order="F" if fortran else "C")
    return arrays


def _checked_set(path: Path, name: str, arrays: Mapping[str, np.ndarray], dim: int) -> TruthSet:
    q, ids, scores = (arrays.get(f"{name}.{part}") for part in ("queries", "ids", "scores"))
    if ids is None or scores is None or q is None or q.ndim != 2 or q.shape[1] != dim:
        raise TruthDamaged(f"{path}: stored truth set {name!r} is incomplete or not of dim {dim}")
    if ids.shape != (len(q), TRUTH_K) or scores.shape != ids.shape:
        raise TruthDamaged(f"{path}: stored truth set {name!r} has shape {ids.shape}, expected ({len(q)}, {TRUTH_K})")
    return TruthSet(q.astype(np.float32), ids.astype(np.int64), scores.astype(np.float32))
