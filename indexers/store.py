"""Re-rank store: the indexed vectors as memory-mapped .npy segments next to the index.

IVF-PQ keeps only compressed codes, so its exact re-ranking needs the full vectors of a few hundred
candidates per query. Fetching them through duckdb Parquet scans cost ~0.75 s per query; reading them
from a memory-mapped array costs a page-cache lookup per row. The store is never loaded into RAM (the
`max_memory` budget is for the index): the OS pages in the rows that searches touch.

The store is a list of segments, one per build or incremental add, so adding a shard to a 10M-vector
index writes only the new rows: the old segment files are never opened for writing (nor renamed over).
Files of segment s, under OUT/index/ (plain `np.load(..., mmap_mode="r")` reads them)::

    <target>.vectors.<s:05d>.f32.npy   float32[n_s, D] (or .f16.npy float16[n_s, D]), rows in the order
                                       they were added to the index
    <target>.vectors.<s:05d>.ids.npy   int64[2, n_s]: row 0 the segment's item ids sorted ascending, row 1
                                       each one's row in the segment's vectors file

index.json lists the segments in order (`store.segments`: file names and row counts) and `checks` holds
each file's size and SHA-256; the loader checks every segment's length, so a crash between a segment's
rename and index.json is caught. A store row number is global: segment s's rows follow segment s-1's.
Looking an id up is one `np.searchsorted` per segment (an item id is in exactly one segment: a shard
whose rows changed forces a rebuild). Stores written before segments (one `<target>.vectors.f32.npy` and
`<target>.vectors.ids.npy`, index.json fields `vectors`, `ids`) read as one segment. Segments only
accumulate; `build-index --rebuild` writes the store again as one segment.

Dtype: by default the store keeps the shards' own dtype ("auto"): float16 shards are stored as float16
without loss, float32 shards as float32, so re-ranked scores are exactly the inner products with the
shard vectors (computed in float32). float16 can be forced to halve the disk/page-cache footprint of
float32 shards, at ~1e-3 score error. An add keeps the dtype of the segments before it.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from indexers.checks import file_name
from indexers.errors import StaleIndex
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path, commit, temp_path

STORE_DTYPES = ("auto", "float32", "float16")


@dataclass(frozen=True)
class Segment:
    """One segment's files (under OUT/index/) and rows."""

    vectors: str  # float32[n, D] or float16[n, D] in index-add order
    ids: str  # int64[2, n]: sorted ids; their rows in `vectors`
    count: int  # n

    def to_json(self) -> dict[str, Any]:
        return {"vectors": self.vectors, "ids": self.ids, "count": self.count}


@dataclass(frozen=True)
class StoreInfo:
    """The store of one index, as recorded in index.json."""

    dtype: str  # "float32" | "float16" (every segment)
    count: int  # rows in all segments (== the index's ntotal)
    segments: tuple[Segment, ...]  # in row order

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of the store, segment by segment (vectors, ids)."""
        return tuple(name for seg in self.segments for name in (seg.vectors, seg.ids))

    @property
    def vectors(self) -> str:
        """The newest segment's vectors file (the whole store when it has one segment)."""
        return self.segments[-1].vectors

    @property
    def ids(self) -> str:
        """The newest segment's id map."""
        return self.segments[-1].ids

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "count": self.count, "segments": [seg.to_json() for seg in self.segments]}

    @staticmethod
    def from_json(data: Mapping[str, Any] | None) -> StoreInfo | None:
        if not data:
            return None
        if "segments" not in data:  # a store written before segments: one segment
            return StoreInfo(
                data["dtype"],
                int(data["count"]),
                (Segment(file_name(data["vectors"]), file_name(data["ids"]), int(data["count"])),),
            )
        segments = tuple(
            Segment(file_name(d["vectors"]), file_name(d["ids"]), int(d["count"])) for d in data["segments"]
        )
        return StoreInfo(data["dtype"], int(data["count"]), segments)


def segment_files(name: str, dtype: str, seq: int) -> tuple[str, str]:
    """(vectors file, ids file) names of segment `seq` of target `name`."""
    return f"{name}.vectors.{seq:05d}.{'f16' if dtype == 'float16' else 'f32'}.npy", f"{name}.vectors.{seq:05d}.ids.npy"


def resolve_dtype(requested: str, shard_dtypes: set[str]) -> str:
    """'auto' -> float16 only when every shard stores float16 (lossless), else float32."""
    if requested not in STORE_DTYPES:
        raise RadRetrieveError(f"unknown store dtype {requested!r} (choose from {', '.join(STORE_DTYPES)})")
    if requested != "auto":
        return requested
    return "float16" if shard_dtypes == {"float16"} else "float32"


class _Open:
    """One segment, memory-mapped."""

    def __init__(self, folder: Path, seg: Segment) -> None:
        try:
            self.vectors = np.load(folder / seg.vectors, mmap_mode="r")  # [n, D], paged in on use
            idmap = np.load(folder / seg.ids, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StaleIndex(f"{folder}: re-rank store unreadable ({exc}); rebuild with --rebuild") from exc
        if self.vectors.ndim != 2 or len(self.vectors) != seg.count or idmap.shape != (2, seg.count):
            raise StaleIndex(
                f"{folder}/{seg.vectors}: holds {len(self.vectors)} rows, index.json says {seg.count} "
                "(interrupted build?); rebuild with --rebuild"
            )
        self.sorted_ids = idmap[0]  # int64[n], ascending
        self.rows = idmap[1]  # int64[n]: row in `vectors` of sorted_ids[i]
        self.path = folder / seg.vectors
        self._fd: int | None = None

    def local_rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in this segment; -1 where absent. `ids` ascending keeps the binary searches
        cache-friendly (the sorted id map of a 10M store is 80 MB of memory-mapped pages)."""
        if len(self.sorted_ids) == 0:
            return np.full(np.shape(ids), -1, np.int64)
        pos = np.minimum(np.searchsorted(self.sorted_ids, ids), len(self.sorted_ids) - 1)
        return np.where(self.sorted_ids[pos] == ids, self.rows[pos], -1)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows [m, D] in the file's dtype by one `pread` each: through the page cache, never mapped into
        this process, so they do not count in its RSS (what a build's tuning needs, see VectorStore)."""
        out = np.empty((len(rows), self.vectors.shape[1]), self.vectors.dtype)
        if len(rows) == 0:
            return out
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            weakref.finalize(self, os.close, self._fd)
        row_bytes = out.shape[1] * out.itemsize
        base = self.vectors.offset  # the .npy header's length
        fd = self._fd
        for j, r in enumerate(rows.tolist()):
            if os.preadv(fd, [out[j]], base + r * row_bytes) != row_bytes:
                raise StaleIndex(f"{self.path}: shorter than its header says; rebuild with --rebuild")
        return out


class VectorStore:
    """Read side: id -> (global) row lookup and row gathers over the memory-mapped segments."""

    def __init__(self, folder: Path, info: StoreInfo, keep_pages: bool = True) -> None:
        # False: gathers read rows with pread instead of the mapping. A build's tuning reads rows all over
        # the store (a 10M store is 10 GB), and every mapped page (with the kernel's fault-around, 16
        # pages per fault) would count in the build's RSS until the process ends
        self.keep_pages = keep_pages
        self.segments = [_Open(Path(folder), seg) for seg in info.segments]
        if sum(seg.count for seg in info.segments) != info.count:
            raise StaleIndex(f"{folder}: re-rank store segments do not add up to {info.count} rows; rebuild")
        counts = [len(seg.vectors) for seg in self.segments]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # segment s: rows [o_s, o_s+1)
        dims = {seg.vectors.shape[1] for seg in self.segments}
        if len(dims) > 1:
            raise StaleIndex(f"{folder}: re-rank store segments of dims {sorted(dims)}; rebuild with --rebuild")
        self.dim = dims.pop() if dims else 0
        self.dtype = self.segments[0].vectors.dtype if self.segments else np.dtype(info.dtype)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def parts(self) -> list[np.ndarray]:
        """The memory-mapped vector arrays in row order (their concatenation is the store)."""
        return [seg.vectors for seg in self.segments]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Global row of each id (int64 array of any shape); -1 where the id is not stored."""
        flat = np.asarray(ids, dtype=np.int64).reshape(-1)
        order = np.argsort(flat, kind="stable")  # looked up in ascending order (see _Open.local_rows)
        wanted = flat[order]
        found = np.full(len(flat), -1, np.int64)
        for offset, seg in zip(self.offsets, self.segments):
            local = seg.local_rows(wanted)
            found = np.where(local >= 0, local + offset, found)
        out = np.empty(len(flat), np.int64)
        out[order] = found
        return out.reshape(np.shape(ids))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32[..., D] vectors of global rows (any shape; -1 rows give row 0's vector: mask them yourself)."""
        flat = np.maximum(np.asarray(rows, dtype=np.int64).reshape(-1), 0)
        if len(self.segments) == 1:  # the usual case: one gather, one conversion
            out = self._gather(self.segments[0], flat).astype(np.float32, copy=False)
        else:
            out = np.empty((len(flat), self.dim), np.float32)
            seg_of = np.searchsorted(self.offsets, flat, side="right") - 1
            for s, seg in enumerate(self.segments):
                pick = np.flatnonzero(seg_of == s)
                if len(pick):
                    out[pick] = self._gather(seg, flat[pick] - self.offsets[s])
        return out.reshape(*np.shape(rows), self.dim)

    def _gather(self, seg: _Open, local: np.ndarray) -> np.ndarray:
        return np.take(seg.vectors, local, axis=0) if self.keep_pages else seg.read_rows(local)

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64[m], float32[m, D]) for the stored ones of `ids`, ascending (the `VectorFetch` contract)."""
        uniq = np.unique(np.asarray(ids, dtype=np.int64))
        rows = self.rows_of(uniq)
        keep = rows >= 0
        return uniq[keep], self.take(rows[keep])


class StoreWriter:
    """Write side: one new segment, rows appended in index-add order into a temp file, renamed by `commit`.

    With `base` (the existing store) the new segment follows its segments, which are left as they are;
    `new_rows` must be the exact number of rows `add` will receive (a mismatch is an error).
    """

    def __init__(
        self, folder: Path, name: str, dim: int, dtype: str, new_rows: int, base: StoreInfo | None = None
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.base = base
        if base is not None:
            self._check_base(base, dim)
        self.files = segment_files(name, dtype, len(base.segments) if base is not None else 0)
        self.total = new_rows  # rows of the new segment
        self._tmp = temp_path(self.folder / self.files[0])
        self._out: BinaryIO | None = None
        if new_rows:
            # plain appends after an .npy header, not a writable memmap: a mapped file's dirty pages count
            # in the build's RSS until the kernel writes them back; appended pages sit in the page cache
            self._out = open(self._tmp, "xb")
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
            np.lib.format.write_array_header_1_0(self._out, header | {"shape": (new_rows, dim)})
        self._filled = 0
        self._new_ids: list[np.ndarray] = []

    def _check_base(self, base: StoreInfo, dim: int) -> None:
        old = VectorStore(self.folder, base)  # opens (and length-checks) the segments; reads no rows
        if old.dim != dim:
            raise StaleIndex(f"{base.vectors}: dim {old.dim}, expected {dim}; rebuild with --rebuild")

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Append ids int64[n] / vectors float32[n, D], in the order they go into the index."""
        stop = self._filled + len(ids)
        if stop > self.total:
            raise RadRetrieveError(f"re-rank store: more rows than the {self.total} counted (shards changed?)")
        if len(ids) and self._out is not None:
            self._out.write(np.ascontiguousarray(vecs, dtype=self.dtype).tobytes())
        self._new_ids.append(np.asarray(ids, dtype=np.int64))
        self._filled = stop

    def commit(self) -> StoreInfo:
        """Flush, write the id map, rename both files into place; returns the index.json entry."""
        if self._filled != self.total:
            raise RadRetrieveError(
                f"re-rank store: {self._filled} rows written, {self.total} counted (shards changed?)"
            )
        before = self.base.segments if self.base is not None else ()
        base_count = self.base.count if self.base is not None else 0
        if self._out is None:  # nothing new: the store is what it was
            return StoreInfo(self.dtype, base_count, before)
        self._out.close()  # fileio.commit fsyncs it before the rename
        self._out = None
        ids = np.concatenate(self._new_ids) if self._new_ids else np.empty(0, np.int64)
        order = np.argsort(ids, kind="stable")
        with atomic_path(self.folder / self.files[1]) as ids_tmp, open(ids_tmp, "xb") as fh:
            np.save(fh, np.stack([ids[order], order.astype(np.int64)]))
        commit(self._tmp, self.folder / self.files[0])
        segment = Segment(self.files[0], self.files[1], self.total)
        return StoreInfo(self.dtype, base_count + self.total, before + (segment,))

    def abort(self) -> None:
        """Drop the temp file (on a failed build)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self._tmp.unlink(missing_ok=True)
