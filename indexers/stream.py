"""Streaming passes over an out dir's shards: counting, uniform sampling, filling an index (+ store).

Every pass reads the shards batch by batch (`radretrieve.outdir.shards.iter_embeddings`), so memory stays at
one batch plus what the caller keeps (a sample, the index), whatever the archive size. A batch holds at
most `batch_rows` rows; Parquet decodes a whole row group at a time, so the reader's own buffer is one
row group (a shard is written as one task's rows, thousands of rows, not the archive). `StreamStats`
records what a pass read, so a build can show (and a test check) that no pass held more than a batch.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexers.store import StoreWriter
from radretrieve.outdir.manifest import ShardEntry, read_manifest
from radretrieve.outdir.shards import iter_embeddings


@dataclass
class StreamStats:
    """What streaming passes read (mutable: one per build, updated as batches go by)."""

    passes: int = 0  # full or partial passes over the shards
    batches: int = 0  # batches read
    rows: int = 0  # rows read (over all passes)
    max_batch_rows: int = 0  # largest batch: what one pass holds of the stream at a time

    def reading(
        self, out_dir: Path, kinds: tuple[str, ...], batch_rows: int, files: Collection[str] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`iter_embeddings` with the batches counted."""
        self.passes += 1
        for ids, vecs in iter_embeddings(out_dir, kinds, batch_rows, files=files):
            self.batches += 1
            self.rows += len(ids)
            self.max_batch_rows = max(self.max_batch_rows, len(ids))
            yield ids, vecs

    def to_json(self) -> dict[str, int]:
        return {"passes": self.passes, "batches": self.batches, "rows": self.rows, "max_rows": self.max_batch_rows}


def count_rows(out_dir: Path, entries: tuple[ShardEntry, ...], kinds: tuple[str, ...]) -> int:
    """Rows of the given kinds, from the manifest counts (reading only `kind` where counts are missing)."""
    total = 0
    for entry in entries:
        if entry.counts:
            total += sum(int(entry.counts.get(k, 0)) for k in kinds)
        else:
            col = pq.read_table(Path(out_dir) / entry.file, columns=["kind"]).column("kind").to_numpy()
            total += int(np.isin(col, kinds).sum())
    return total


def sample_rows(
    out_dir: Path,
    kinds: tuple[str, ...],
    total: int,
    n: int,
    seed: int,
    batch_rows: int,
    files: Collection[str] | None = None,
    stats: StreamStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A uniform sample of min(n, total) rows (ids int64[m], vectors float32[m, D]) in random order.

    `total` is the row count of the streamed shards (`files`, or all). Positions are drawn up front and
    picked out while streaming, so memory is the sample plus one batch.
    """
    stats = stats if stats is not None else StreamStats()
    rng = np.random.default_rng(seed)
    m = min(n, total)
    wanted = np.sort(rng.choice(total, size=m, replace=False)) if m else np.empty(0, np.int64)
    ids_out, vecs_out, seen = [], [], 0
    for ids, vecs in stats.reading(out_dir, kinds, batch_rows, files):
        lo, hi = np.searchsorted(wanted, [seen, seen + len(ids)])
        if hi > lo:
            local = wanted[lo:hi] - seen
            ids_out.append(ids[local])
            vecs_out.append(vecs[local])
        seen += len(ids)
    if not ids_out:
        return np.empty(0, np.int64), np.empty((0, read_manifest(out_dir).dim), np.float32)
    perm = rng.permutation(sum(len(i) for i in ids_out))
    return np.concatenate(ids_out)[perm], np.concatenate(vecs_out)[perm]


def without(
    batches: Iterator[tuple[np.ndarray, np.ndarray]], skip: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (ids, vectors) batches with the ids in `skip` (int64[m], sorted) left out."""
    for ids, vecs in batches:
        if len(skip):
            keep = ~np.isin(ids, skip)
            if not keep.all():
                ids, vecs = ids[keep], vecs[keep]
        if len(ids):
            yield ids, vecs


def add_shards(
    index: Any,
    out_dir: Path,
    kinds: tuple[str, ...],
    batch_rows: int,
    files: set[str] | None,
    store: StoreWriter | None = None,
    skip: np.ndarray | None = None,
    stats: StreamStats | None = None,
) -> int:
    """Stream the (given) shards into `index` with their item ids; returns rows added to the index.

    `store` receives every streamed row; `skip` (int64[m], sorted) are ids kept out of the index for
    now (the held-out tuning queries, added by the caller after tuning).
    """
    added = 0
    stats = stats if stats is not None else StreamStats()
    for ids, vecs in stats.reading(out_dir, kinds, batch_rows, files):
        if store is not None:
            store.add(ids, vecs)
        if skip is not None and len(skip):
            keep = ~np.isin(ids, skip)
            ids, vecs = ids[keep], vecs[keep]
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vecs), ids)
            added += len(ids)
    return added


def shard_dtypes(out_dir: Path, entries: tuple[ShardEntry, ...]) -> set[str]:
    """Storage dtypes ("float16"/"float32") of the shards' embedding column (Parquet footers only)."""
    out = set()
    for entry in entries:
        field = pq.read_schema(Path(out_dir) / entry.file).field("embedding")
        out.add("float16" if field.type.value_type == pa.float16() else "float32")
    return out
