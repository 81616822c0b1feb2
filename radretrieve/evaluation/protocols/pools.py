"""`pools`: Merlin's retrieval protocol (Blankemeier et al., arXiv 2406.06512): the studies are split at random
into pools of 128; within each pool every study's image is a query against the pool's reports (image -> report)
and every report against the pool's images (report -> image); a hit at k is the study's own counterpart among
the k highest scores. Recall@1 and @8 are averaged over all queries of a partition, then over several seeded
partitions; chance is k / 128.

The unit ranked is the study: a study's image embedding is the normalised mean of its items' embeddings (one
volume per study in Merlin's data). Studies without a report or without an image take no part. A trailing pool
smaller than the pool size is dropped (every pool has the same chance level); with fewer studies than the pool
size there is one pool of all of them, and the table says so. The CI is a percentile bootstrap over studies of
each study's recall averaged over the partitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radretrieve.evaluation.protocols.common import ProtocolTable, estimates, run_dict
from radretrieve.evaluation.retrieval import BenchOptions, Embedded
from radretrieve.foundation.errors import RadRetrieveError

POOL_KS = (1, 8)


@dataclass(frozen=True)
class PoolOptions:
    pool_size: int = 128  # studies per pool (Merlin: 128)
    partitions: int = 10  # seeded random partitions of the studies into pools, averaged


def study_pairs(emb: Embedded) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Studies with both a report and an image: keys, image vectors float32 [S, D], report vectors [S, D]."""
    report_row = {k: i for i, k in enumerate(emb.texts.study_keys) if k}
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(emb.images.study_keys):
        if key in report_row:
            groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    if not keys:
        raise RadRetrieveError("pools: no study has both a report and an image (check the study keys)")
    img = np.stack([emb.images.vectors[groups[k]].mean(axis=0) for k in keys]).astype(np.float32)
    img /= np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
    txt = emb.texts.vectors[[report_row[k] for k in keys]].astype(np.float32)
    return keys, img, txt


def partition(n: int, size: int, seed: int, index: int) -> list[np.ndarray]:
    """Partition `index` of n studies into pools of `size` (a trailing smaller pool dropped)."""
    perm = np.random.default_rng([seed, index]).permutation(n)
    if n <= size:
        return [perm]
    return [perm[i : i + size] for i in range(0, n - size + 1, size)]


def pool_hits(img: np.ndarray, txt: np.ndarray, ks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """bool [P, len(ks)] hits of image -> report and of report -> image for one pool (row p = study p).
    Pessimistic ties: the rank of the counterpart is the number of candidates scoring >= it."""
    sim = img @ txt.T
    out = []
    for s in (sim, sim.T):
        rank = (s >= np.diag(s)[:, None]).sum(axis=1)
        out.append(np.stack([rank <= k for k in ks], axis=1))
    return out[0], out[1]


def pools_table(emb: Embedded, options: BenchOptions, pools: PoolOptions = PoolOptions()) -> ProtocolTable:
    if pools.pool_size < 2 or pools.partitions < 1:
        raise RadRetrieveError("pools: the pool size must be >= 2 and the number of partitions >= 1")
    keys, img, txt = study_pairs(emb)
    n = len(keys)
    size = min(pools.pool_size, n)
    i2t = np.zeros((n, len(POOL_KS)))
    t2i = np.zeros((n, len(POOL_KS)))
    counted = np.zeros(n)
    for p in range(pools.partitions):
        for pool in partition(n, size, options.seed, p):
            a, b = pool_hits(img[pool], txt[pool], POOL_KS)
            i2t[pool] += a
            t2i[pool] += b
            counted[pool] += 1
    used = counted > 0  # studies of a dropped trailing pool in every partition (rare) are left out
    names = [f"recall@{k}" for k in POOL_KS]
    runs = {}
    for name, hits in (("image->report", i2t), ("report->image", t2i)):
        values = hits[used] / counted[used, None]
        runs[name] = run_dict(
            estimates(values, names, options.n_bootstrap, options.seed, options.confidence),
            int(used.sum()),
            int(used.sum()),
            size,
            options.n_bootstrap,
            options.seed,
            options.confidence,
        )
    note = f"{n} studies, {pools.partitions} seeded partitions into pools of {size}"
    if size < pools.pool_size:
        note += f" (fewer studies than the pool size {pools.pool_size}: one pool of all)"
    return ProtocolTable(
        "pools (Merlin)",
        "study",
        size,
        {f"recall@{k}": min(k, size) / size for k in POOL_KS},
        runs,
        (note + ".",),
    )
