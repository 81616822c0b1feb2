"""Exact inner-product top-k, in memory or streamed over batches (the ground truth for recall checks).

Streaming keeps a running top-k per query and merges each batch's candidates into it, so the database
never has to fit in memory: only `queries` plus one batch of vectors and a [Q, batch] score block do.
Missing results (k > n) are padded with id -1 and score -inf, as faiss does.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Rows of a database batch scored at once; bounds the [Q, rows] float32 score block.
SCORE_BLOCK_ROWS = 16384


def _check_queries(queries: np.ndarray) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"queries must be float32[Q, D], got shape {q.shape}")
    return q


def topk_of_scores(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row of a score block.

    scores: float32[Q, n]; ids: int64[n] (the id of each column). Returns (float32[Q, k'], int64[Q, k'])
    sorted by descending score, ties broken by ascending id; k' = min(k, n).
    """
    n = scores.shape[1]
    kk = min(k, n)
    if kk == 0:
        return np.empty((scores.shape[0], 0), np.float32), np.empty((scores.shape[0], 0), np.int64)
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(scores), 1))
    top_scores = np.take_along_axis(scores, part, axis=1)
    top_ids = ids[part]
    # lexsort: last key is primary -> descending score, then ascending id for deterministic ties
    order = np.lexsort((top_ids, -top_scores), axis=1)
    return np.take_along_axis(top_scores, order, axis=1), np.take_along_axis(top_ids, order, axis=1)


class TopK:
    """Running top-k per query, merged batch by batch."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = k
        self.scores = np.full((n_queries, 0), -np.inf, np.float32)  # float32[Q, <=k]
        self.ids = np.full((n_queries, 0), -1, np.int64)  # int64[Q, <=k]

    def add(self, scores: np.ndarray, ids: np.ndarray) -> None:
        """scores: float32[Q, n] for database ids: int64[n]."""
        s, i = topk_of_scores(scores, ids, self.k)
        all_s = np.concatenate([self.scores, s], axis=1)
        all_i = np.concatenate([self.ids, i], axis=1)
        keep = min(self.k, all_s.shape[1])
        order = np.lexsort((all_i, -all_s), axis=1)[:, :keep]
        self.scores = np.take_along_axis(all_s, order, axis=1)
        self.ids = np.take_along_axis(all_i, order, axis=1)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(float32[Q, k], int64[Q, k]) padded with -inf / -1 where fewer than k vectors were seen."""
        q, have = self.scores.shape
        scores = np.full((q, self.k), -np.inf, np.float32)
        ids = np.full((q, self.k), -1, np.int64)
        scores[:, :have] = self.scores
        ids[:, :have] = self.ids
        return scores, ids


def exact_search(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product. queries float32[Q, D], vectors float32[n, D], ids int64[n]."""
    return exact_search_stream(queries, [(ids, vectors)], k)


def exact_search_stream(
    queries: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over a stream of (ids int64[n], vectors float32[n, D]) batches.

    queries: float32[Q, D]. Returns (scores float32[Q, k], ids int64[Q, k]), padded with -inf / -1.
    """
    q = _check_queries(queries)
    heap = TopK(len(q), k)
    for ids, vecs in batches:
        for start in range(0, len(ids), SCORE_BLOCK_ROWS):
            block = np.asarray(vecs[start : start + SCORE_BLOCK_ROWS], dtype=np.float32)
            if block.shape[1] != q.shape[1]:
                raise ValueError(f"query dim {q.shape[1]} differs from vector dim {block.shape[1]}")
            heap.add(q @ block.T, np.asarray(ids[start : start + SCORE_BLOCK_ROWS], dtype=np.int64))
    return heap.result()


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |found[:, :k] ∩ truth[:, :k]| / |valid truth[:, :k]| (ids int64[Q, >=k])."""
    total = 0.0
    rows = 0
    for f, t in zip(found[:, :k], truth[:, :k]):
        t = t[t >= 0]
        if len(t) == 0:
            continue
        total += len(np.intersect1d(f[f >= 0], t)) / len(t)
        rows += 1
    return total / rows if rows else 1.0
