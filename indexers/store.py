"""Re-rank store: the indexed vectors as memory-mapped .npy files next to the index.

IVF-PQ keeps only compressed codes, so its exact re-ranking needs the full vectors of a few hundred
candidates per query. Fetching them through duckdb Parquet scans cost ~0.75 s per query; reading them
from a memory-mapped array costs a page-cache lookup per row. The store is never loaded into RAM (the
`max_memory` budget is for the index): the OS pages in the rows that searches touch.

Files, under OUT/index/ (plain `np.load(..., mmap_mode="r")` reads them)::

    <target>.vectors.f32.npy   float32[n, D] (or .f16.npy float16[n, D]), rows in the order they were
                               added to the index
    <target>.vectors.ids.npy   int64[2, n]: row 0 the item ids sorted ascending, row 1 each one's row in
                               the vectors file (so id -> row is one `np.searchsorted`)

Dtype: by default the store keeps the shards' own dtype ("auto"): float16 shards are stored as float16
without loss, float32 shards as float32, so re-ranked scores are exactly the inner products with the
shard vectors (computed in float32). float16 can be forced to halve the disk/page-cache footprint of
float32 shards, at ~1e-3 score error. Incremental adds rewrite both files (copy + append) to temp names
and rename them; the loader checks their lengths against index.json, so a crash in between is caught.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexers.errors import StaleIndex
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path, commit, temp_path

STORE_DTYPES = ("auto", "float32", "float16")
COPY_ROWS = 65536  # rows copied at once when an incremental add rewrites the store
TAKE_ROWS = 65536  # candidate rows gathered at once (bounds the float32 copy)


@dataclass(frozen=True)
class StoreInfo:
    """The store of one index, as recorded in index.json."""

    vectors: str  # file under OUT/index/: float32[n, D] or float16[n, D] in index-add order
    ids: str  # file under OUT/index/: int64[2, n] (sorted ids; their rows in `vectors`)
    dtype: str  # "float32" | "float16"
    count: int  # n: rows in both files (== the index's ntotal)

    def to_json(self) -> dict[str, Any]:
        return {"vectors": self.vectors, "ids": self.ids, "dtype": self.dtype, "count": self.count}

    @staticmethod
    def from_json(data: Mapping[str, Any] | None) -> StoreInfo | None:
        if not data:
            return None
        return StoreInfo(data["vectors"], data["ids"], data["dtype"], int(data["count"]))


def store_files(name: str, dtype: str) -> tuple[str, str]:
    """(vectors file, ids file) names for target `name`."""
    return f"{name}.vectors.{'f16' if dtype == 'float16' else 'f32'}.npy", f"{name}.vectors.ids.npy"


def resolve_dtype(requested: str, shard_dtypes: set[str]) -> str:
    """'auto' -> float16 only when every shard stores float16 (lossless), else float32."""
    if requested not in STORE_DTYPES:
        raise RadRetrieveError(f"unknown store dtype {requested!r} (choose from {', '.join(STORE_DTYPES)})")
    if requested != "auto":
        return requested
    return "float16" if shard_dtypes == {"float16"} else "float32"


class VectorStore:
    """Read side: id -> row lookup and row gathers over the memory-mapped files."""

    def __init__(self, folder: Path, info: StoreInfo) -> None:
        try:
            self.vectors = np.load(Path(folder) / info.vectors, mmap_mode="r")  # [n, D], paged in on use
            idmap = np.load(Path(folder) / info.ids, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StaleIndex(f"{folder}: re-rank store unreadable ({exc}); rebuild with --rebuild") from exc
        if self.vectors.ndim != 2 or len(self.vectors) != info.count or idmap.shape != (2, info.count):
            raise StaleIndex(
                f"{folder}/{info.vectors}: holds {len(self.vectors)} rows, index.json says {info.count} "
                "(interrupted build?); rebuild with --rebuild"
            )
        self.sorted_ids = idmap[0]  # int64[n], ascending
        self.rows = idmap[1]  # int64[n]: row in `vectors` of sorted_ids[i]

    def __len__(self) -> int:
        return len(self.vectors)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id (int64 array of any shape) in `vectors`; -1 where the id is not stored."""
        if len(self.sorted_ids) == 0:
            return np.full(np.shape(ids), -1, np.int64)
        pos = np.minimum(np.searchsorted(self.sorted_ids, ids), len(self.sorted_ids) - 1)
        return np.where(self.sorted_ids[pos] == ids, self.rows[pos], -1)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32[..., D] vectors of rows (any shape; -1 rows give row 0's vector: mask them yourself)."""
        return np.asarray(self.vectors[np.maximum(rows, 0)], dtype=np.float32)

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64[m], float32[m, D]) for the stored ones of `ids`, ascending (the `VectorFetch` contract)."""
        uniq = np.unique(np.asarray(ids, dtype=np.int64))
        rows = self.rows_of(uniq)
        keep = rows >= 0
        return uniq[keep], self.take(rows[keep])


class StoreWriter:
    """Write side: rows are appended in index-add order into a temp file, renamed into place by `commit`.

    `base` (an existing store) is copied first, so an incremental add yields one store holding old and
    new rows; `new_rows` must be the exact number of rows `add` will receive (a mismatch is an error).
    """

    def __init__(
        self, folder: Path, name: str, dim: int, dtype: str, new_rows: int, base: StoreInfo | None = None
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.files = store_files(name, dtype)
        self.base = base
        base_rows = base.count if base is not None else 0
        self.total = base_rows + new_rows
        self._tmp = temp_path(self.folder / self.files[0])
        # plain appends, not a writable memmap: the dirty pages of a mapped 10 GB store count in the
        # build's RSS until the kernel evicts them (measured: RssFile grew with the store), written pages
        # of a file only sit in the page cache
        self._out = open(self._tmp, "xb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self._out, header | {"shape": (self.total, dim)})
        self._filled = 0
        self._new_ids: list[np.ndarray] = []
        if base is not None:
            self._copy_base(base, dim)

    def _copy_base(self, base: StoreInfo, dim: int) -> None:
        old = VectorStore(self.folder, base)
        if old.vectors.shape[1] != dim:
            raise StaleIndex(f"{base.vectors}: dim {old.vectors.shape[1]}, expected {dim}; rebuild with --rebuild")
        for start in range(0, len(old), COPY_ROWS):
            self._out.write(np.ascontiguousarray(old.vectors[start : start + COPY_ROWS]).tobytes())
        self._filled = len(old)
        self._base_map = (np.array(old.sorted_ids), np.array(old.rows))

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Append ids int64[n] / vectors float32[n, D], in the order they go into the index."""
        stop = self._filled + len(ids)
        if stop > self.total:
            raise RadRetrieveError(f"re-rank store: more rows than the {self.total} counted (shards changed?)")
        self._out.write(np.ascontiguousarray(vecs, dtype=self.dtype).tobytes())
        self._new_ids.append(np.asarray(ids, dtype=np.int64))
        self._filled = stop

    def commit(self) -> StoreInfo:
        """Flush, write the id map, rename both files into place; returns the index.json entry."""
        if self._filled != self.total:
            raise RadRetrieveError(
                f"re-rank store: {self._filled} rows written, {self.total} counted (shards changed?)"
            )
        self._out.close()  # fileio.commit fsyncs it before the rename
        base_count = self.base.count if self.base is not None else 0
        new_ids = np.concatenate(self._new_ids) if self._new_ids else np.empty(0, np.int64)
        ids = new_ids
        rows = base_count + np.arange(len(new_ids), dtype=np.int64)
        if self.base is not None:
            ids = np.concatenate([self._base_map[0], new_ids])
            rows = np.concatenate([self._base_map[1], rows])
        order = np.argsort(ids, kind="stable")
        with atomic_path(self.folder / self.files[1]) as ids_tmp, open(ids_tmp, "xb") as fh:
            np.save(fh, np.stack([ids[order], rows[order]]))
        commit(self._tmp, self.folder / self.files[0])
        return StoreInfo(self.files[0], self.files[1], self.dtype, self.total)

    def abort(self) -> None:
        """Drop the temp file (on a failed build)."""
        self._out.close()
        self._tmp.unlink(missing_ok=True)
