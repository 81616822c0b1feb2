"""Held-out tuning queries: sampled index vectors kept out of the index until tuning is done.

Tuning on vectors that are already in the index (even leaving each one's own id out of the lists)
overstates a graph index's recall on real, out-of-index queries: the search walks straight to the
query's own node, whose links are its nearest neighbours (measured on 100k x 512 clustered vectors:
HNSW tuned to 0.953 that way gave 0.918 on fresh queries). So the build samples `tune_queries` rows,
adds every other row, tunes with the sample as truly fresh queries against exact truth over what the
index holds, and only then adds the sample. Perturbing in-index vectors instead was tried and rejected:
how optimistic or pessimistic it is depends on the dimension (it over-shot at 512, under-shot at 64).

The other modality's queries (text vectors for the items index: the out dir's report embeddings; image
vectors for the reports index) are sampled the same way from the rows of the other kind. They are not in
the index being tuned, so they need no holding out there, and their truth is computed in the same
streaming pass as the held-out rows' (indexers/truth.py `compute`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexers.exact import exact_search_stream
from indexers.stream import count_rows, sample_rows, without
from radretrieve.outdir.manifest import ShardEntry
from radretrieve.outdir.shards import iter_embeddings

CROSS_POOL = 20  # other-modality queries are sampled from shards holding at least this many times as many rows


@dataclass(frozen=True)
class HeldOut:
    """Rows kept out of the index while tuning."""

    ids: np.ndarray  # int64[m] item ids, sorted ascending
    vectors: np.ndarray  # float32[m, D], aligned with `ids`

    def __len__(self) -> int:
        return len(self.ids)


def hold_out(
    out_dir: Path,
    kinds: tuple[str, ...],
    rows: int,
    n: int,
    seed: int,
    batch_rows: int,
    files: Collection[str] | None = None,
) -> HeldOut:
    """Sample min(n, rows) of the `rows` rows in `files` (None: all shards) to hold out.

    At most a fifth of the rows is held out, so a small index is still tuned on most of its content.
    """
    want = min(n, max(1, rows // 5)) if rows > 1 else 0
    if want == 0:  # nothing to tune (flat index, or a single row): skip the streaming pass
        return HeldOut(np.empty(0, np.int64), np.empty((0, 0), np.float32))
    ids, vecs = sample_rows(out_dir, kinds, rows, want, seed, batch_rows, files)
    order = np.argsort(ids, kind="stable")
    return HeldOut(ids[order], vecs[order])


def held_out_truth(out_dir: Path, kinds: tuple[str, ...], held: HeldOut, k: int, batch_rows: int) -> np.ndarray:
    """Exact top-k ids int64[m, k] of the held-out vectors over every shard row except the held-out ones."""
    stream = without(iter_embeddings(out_dir, kinds, batch_rows), held.ids)
    _, truth = exact_search_stream(held.vectors, stream, k)
    return truth


def cross_queries(
    out_dir: Path, entries: tuple[ShardEntry, ...], kinds: tuple[str, ...], n: int, seed: int, batch_rows: int
) -> HeldOut:
    """A sample of min(n, rows) vectors of the other modality (`kinds`, e.g. ("report",)).

    Drawn from shards in a seeded random order until they hold CROSS_POOL * n such rows, not from every
    shard: at archive scale a uniform sample would cost one more pass over all shards, and the other
    modality's queries need no exactness about which shards they come from. Old shards count too (the
    queries are not in the index, so an incremental add can use any).
    """
    files, rows = [], 0
    for i in np.random.default_rng(seed).permutation(len(entries)):
        have = count_rows(out_dir, (entries[i],), kinds)
        if have:
            files.append(entries[i].file)
            rows += have
        if rows >= CROSS_POOL * n:
            break
    if rows == 0 or n == 0:
        return HeldOut(np.empty(0, np.int64), np.empty((0, 0), np.float32))
    ids, vecs = sample_rows(out_dir, kinds, rows, min(n, rows), seed, batch_rows, set(files))
    return HeldOut(ids, vecs)
