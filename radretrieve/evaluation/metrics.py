"""Cross-modal retrieval metrics (numpy only): Recall@k, precision@k, mAP, MRR, median rank, bootstrap CIs.

Inputs are a similarity source (a ``[Q, N]`` matrix, two embedding matrices, or a callable that returns
rows ``start:stop`` of the similarity matrix) and a relevance rule (see `GroupRelevance`). Queries are scored
in chunks of rows, so the full ``Q x N`` matrix never has to exist for a big gallery.

Tie convention ("pessimistic", the only one): the rank of a gallery item is the number of gallery items
whose score is ``>=`` its own score, i.e. ties are resolved against the query. This is the convention of
scikit-learn's ``average_precision_score`` (one threshold per distinct score), of
``label_ranking_average_precision_score`` and of ``coverage_error``; a model that gives every item the same
score gets no credit for it. Every metric below is a function of these ranks:

- ``recall@k``: the fraction of queries whose best-ranked relevant item has rank <= k (the hit rate used by
  CLIP-style retrieval benchmarks, not the fraction of all relevant items found);
- ``precision@k``: (number of relevant items with rank <= k) / k; when the gallery holds fewer than k items
  the missing slots count as misses (torchmetrics' ``adaptive_k=False``);
- average precision: the mean over relevant items i of (relevant items with rank <= rank_i) / rank_i;
- reciprocal rank: 1 / (rank of the best-ranked relevant item); median rank: the median of that rank.

Queries with no relevant gallery item are left out of every mean and counted in ``n_scored``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

TIES = "pessimistic"
DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
# Scores per chunk when no chunk size is given: bounds each [chunk, N] working array to about 16 MB.
CHUNK_SCORES = 1 << 21
# Returns rows start:stop of the similarity matrix: float [stop - start, N], higher = more similar.
ScoreFn = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class GroupRelevance:
    """Relevance as equal integer codes: query q and gallery item g match when their codes are equal.

    Pairs, study keys and label-aware matching all reduce to this; build it with `pair_relevance`,
    `group_relevance` or `label_relevance` rather than by hand.
    """

    query_codes: np.ndarray  # int64 [Q]; negative = the query has no relevant gallery item
    gallery_codes: np.ndarray  # int64 [N]; negative codes never match (missing labels)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Relevance of queries ``start:stop``: bool [stop - start, N]."""
        q = self.query_codes[start:stop, None]
        return (q == self.gallery_codes[None, :]) & (q >= 0)


@dataclass(frozen=True)
class MatrixRelevance:
    """Relevance given explicitly as a boolean matrix (small problems, hand-made ground truth)."""

    mask: np.ndarray  # bool [Q, N]; True where gallery item n is relevant to query q

    def block(self, start: int, stop: int) -> np.ndarray:
        """Relevance of queries ``start:stop``: bool [stop - start, N]."""
        return self.mask[start:stop]


Relevance = GroupRelevance | MatrixRelevance


def pair_relevance(gt: np.ndarray, n_gallery: int) -> GroupRelevance:
    """One relevant gallery item per query: query i matches gallery item ``gt[i]`` (int [Q]; -1 = none)."""
    gt = np.asarray(gt)
    if gt.ndim != 1 or not np.issubdtype(gt.dtype, np.integer):
        raise ValueError(f"gt must be a 1-D integer array, got shape {gt.shape} dtype {gt.dtype}")
    if gt.size and (gt.max() >= n_gallery or gt.min() < -1):
        raise ValueError(f"gt values must lie in [-1, {n_gallery - 1}]")
    return GroupRelevance(gt.astype(np.int64), np.arange(n_gallery, dtype=np.int64))


def matrix_relevance(mask: np.ndarray) -> MatrixRelevance:
    """Relevance from a boolean matrix ``mask``: bool [Q, N]."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.bool_:
        raise ValueError(f"relevance mask must be a 2-D bool array, got shape {mask.shape} dtype {mask.dtype}")
    return MatrixRelevance(mask)


def group_relevance(
    query_keys: Sequence[Any], gallery_keys: Sequence[Any], missing: Sequence[Any] = (None, "")
) -> GroupRelevance:
    """Items sharing a key (e.g. a study key) are relevant; keys listed in ``missing`` never match."""
    missing_set = set(missing)
    codes: dict[Any, int] = {}

    def encode(keys: Sequence[Any], missing_code: int) -> np.ndarray:
        out = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            out[i] = missing_code if _is_missing(key, missing_set) else codes.setdefault(key, len(codes))
        return out

    return GroupRelevance(encode(query_keys, -1), encode(gallery_keys, -2))


def label_relevance(
    query_labels: Mapping[str, Sequence[Any]],
    gallery_labels: Mapping[str, Sequence[Any]],
    keys: Sequence[str],
    missing: Sequence[Any] = (None, "", "unknown"),
) -> GroupRelevance:
    """Label-aware relevance: a gallery item is relevant when it agrees with the query on every label in
    ``keys`` (RadCLIP's organ + modality matching is ``keys=("organ", "modality")``). ``*_labels`` map a
    label name to one value per query / gallery item. An item missing any of the labels matches nothing."""
    if not keys:
        raise ValueError("label_relevance needs at least one label key")
    for name, labels in (("query", query_labels), ("gallery", gallery_labels)):
        absent = [k for k in keys if k not in labels]
        if absent:
            raise ValueError(f"{name} labels lack the key(s) {absent}; have {sorted(labels)}")
        if len({len(labels[k]) for k in keys}) != 1:
            raise ValueError(f"{name} labels {list(keys)} have different lengths")
    missing_set = set(missing)

    def combine(labels: Mapping[str, Sequence[Any]]) -> list[tuple[Any, ...] | None]:
        rows = list(zip(*(labels[k] for k in keys)))
        return [None if any(_is_missing(v, missing_set) for v in row) else row for row in rows]

    return group_relevance(combine(query_labels), combine(gallery_labels), missing=(None,))


def _is_missing(value: Any, missing: set[Any]) -> bool:
    # NaN (pandas' empty cell) is never equal to itself, so it is checked apart from the missing set.
    return (isinstance(value, float) and value != value) or value in missing


@dataclass(frozen=True)
class PerQuery:
    """Per-query ranking statistics; every metric is a mean (or median) of these over scored queries."""

    ks: tuple[int, ...]  # the depths k of `hits` columns
    n_relevant: np.ndarray  # int64 [Q]: relevant gallery items per query
    first_rank: np.ndarray  # int64 [Q]: pessimistic rank of the best relevant item (0 = none relevant)
    hits: np.ndarray  # int64 [Q, len(ks)]: relevant items with rank <= k
    ap: np.ndarray  # float64 [Q]: average precision (0 where no item is relevant)

    @property
    def scored(self) -> np.ndarray:
        """bool [Q]: queries with at least one relevant item (the only ones the metrics average)."""
        return self.n_relevant > 0


# Up to this many relevant items per query, ranks are counted directly (one pass over the row per
# relevant item) instead of sorting the row: pairs, the common case, cost O(N) rather than O(N log N).
FEW_RELEVANT = 16


def rank_block(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int], method: str = "auto") -> PerQuery:
    """Rank one chunk of queries.

    scores: float [q, N], higher = more similar; relevant: bool [q, N]. ``method`` is "count", "sort" or
    "auto" (count when no query has more than `FEW_RELEVANT` relevant items); both give the same numbers.
    """
    q, n = scores.shape
    if n == 0:
        raise ValueError("the gallery is empty")
    if not np.all(np.isfinite(scores)):
        raise ValueError("similarity scores contain NaN or inf")
    if method not in ("auto", "count", "sort"):
        raise ValueError(f"method must be auto, count or sort, got {method!r}")
    n_relevant = relevant.sum(axis=1).astype(np.int64)
    few = q == 0 or int(n_relevant.max()) <= FEW_RELEVANT
    if method == "count" or (method == "auto" and few):
        return _rank_by_count(scores, relevant, n_relevant, tuple(ks))
    return _rank_by_sort(scores, relevant, n_relevant, tuple(ks))


def _rank_by_count(scores: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, ks: tuple[int, ...]) -> PerQuery:
    """Ranks of the relevant items only: rank_i = #{j : s_j >= s_i}, one pass per relevant slot."""
    q = scores.shape[0]
    width = int(n_relevant.max()) if q else 0
    rows, cols = np.nonzero(relevant)  # row-major, so each row's relevant items are contiguous
    slot = np.arange(rows.size) - np.repeat(np.cumsum(n_relevant) - n_relevant, n_relevant)
    rel_scores = np.zeros((q, width), dtype=scores.dtype)
    rel_scores[rows, slot] = scores[rows, cols]
    valid = np.zeros((q, width), dtype=bool)
    valid[rows, slot] = True
    ranks = np.full((q, width), np.inf)  # inf pads the slots past a query's last relevant item
    for r in range(width):
        counted = (scores >= rel_scores[:, r : r + 1]).sum(axis=1)
        ranks[:, r] = np.where(valid[:, r], counted, np.inf)
    first_rank = np.where(n_relevant > 0, ranks.min(axis=1, initial=np.inf), 0).astype(np.int64)
    hits = np.stack([(ranks <= k).sum(axis=1) for k in ks], axis=1).astype(np.int64)
    # For relevant item i: relevant items ranked at or before it, over its rank (pads contribute 0).
    at_or_before = (ranks[:, None, :] <= ranks[:, :, None]).sum(axis=2)
    precision = np.where(valid, at_or_before / np.where(valid, ranks, 1.0), 0.0)
    ap = np.divide(precision.sum(axis=1), n_relevant, out=np.zeros(q), where=n_relevant > 0)
    return PerQuery(ks, n_relevant, first_rank, hits.reshape(q, len(ks)), ap)


def _rank_by_sort(scores: np.ndarray, relevant: np.ndarray, n_relevant: np.ndarray, ks: tuple[int, ...]) -> PerQuery:
    """Ranks of every item from one sort per row; for queries with many relevant items."""
    q, n = scores.shape
    order = np.argsort(-scores, axis=1, kind="stable")
    s_sorted = np.take_along_axis(scores, order, axis=1)
    rel_sorted = np.take_along_axis(relevant, order, axis=1)
    # Pessimistic rank = 1 + position of the last item of the item's tie group in the sorted row.
    last_of_group = np.ones((q, n), dtype=bool)
    last_of_group[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
    candidates = np.where(last_of_group, np.arange(n), n)
    group_end = np.minimum.accumulate(candidates[:, ::-1], axis=1)[:, ::-1]
    rank = group_end + 1  # int [q, N], non-decreasing along each row

    first_pos = np.argmax(rel_sorted, axis=1)
    first_rank = np.where(n_relevant > 0, rank[np.arange(q), first_pos], 0).astype(np.int64)
    hits = np.stack([(rel_sorted & (rank <= k)).sum(axis=1) for k in ks], axis=1).astype(np.int64)
    # Relevant items up to and including the item's whole tie group, over its rank.
    rel_through_group = np.take_along_axis(np.cumsum(rel_sorted, axis=1), group_end, axis=1)
    precision = rel_through_group / rank
    ap_sum = np.where(rel_sorted, precision, 0.0).sum(axis=1)
    ap = np.divide(ap_sum, n_relevant, out=np.zeros(q), where=n_relevant > 0)
    return PerQuery(ks, n_relevant, first_rank, hits.reshape(q, len(ks)), ap)


def per_query_stats(
    score_fn: ScoreFn,
    n_queries: int,
    relevance: Relevance,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 256,
) -> PerQuery:
    """Score queries ``chunk_size`` at a time; ``score_fn(start, stop)`` returns float [stop - start, N]."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"every k must be >= 1, got {ks}")
    parts: list[PerQuery] = []
    for start in range(0, n_queries, chunk_size):
        stop = min(start + chunk_size, n_queries)
        scores = np.asarray(score_fn(start, stop))
        relevant = np.asarray(relevance.block(start, stop), dtype=bool)
        if scores.ndim != 2 or scores.shape[0] != stop - start or relevant.shape != scores.shape:
            raise ValueError(
                f"queries {start}:{stop}: scores have shape {scores.shape}, relevance {relevant.shape}; "
                f"both must be [{stop - start}, N]"
            )
        parts.append(rank_block(scores, relevant, ks))
    if not parts:
        raise ValueError("no queries to evaluate")
    joined = [np.concatenate([getattr(p, f) for p in parts]) for f in ("n_relevant", "first_rank", "hits", "ap")]
    return PerQuery(ks, *joined)


@dataclass(frozen=True)
class Estimate:
    """A metric's value over all scored queries and its bootstrap percentile interval."""

    value: float  # point estimate
    low: float  # lower CI bound (NaN when no bootstrap was run)
    high: float  # upper CI bound (NaN when no bootstrap was run)


@dataclass(frozen=True)
class RetrievalResult:
    """Retrieval metrics of one direction (e.g. text -> image) on one dataset."""

    metrics: Mapping[str, Estimate]  # "recall@k", "precision@k", "mAP", "MRR", "median_rank", in that order
    n_queries: int  # queries given
    n_scored: int  # queries with >= 1 relevant gallery item; the others are left out of every metric
    n_gallery: int  # gallery items
    confidence: float  # CI level, e.g. 0.95
    n_bootstrap: int  # bootstrap resamples of the scored queries (0 = no CI)
    seed: int  # bootstrap RNG seed
    ties: str = field(default=TIES)  # tie convention; see the module docstring

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN bounds become None."""
        metrics = {
            name: {"value": _num(e.value), "low": _num(e.low), "high": _num(e.high)} for name, e in self.metrics.items()
        }
        return {"metrics": metrics} | {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metrics"}


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)  # JSON has no NaN


def _metric_columns(stats: PerQuery) -> tuple[list[str], np.ndarray, int]:
    """Per-query metric values of the scored queries: float64 [n_scored, M], and the median-rank column."""
    keep = stats.scored
    cols = {f"recall@{k}": (stats.hits[keep, i] > 0).astype(float) for i, k in enumerate(stats.ks)}
    cols.update({f"precision@{k}": stats.hits[keep, i] / k for i, k in enumerate(stats.ks)})
    cols["mAP"] = stats.ap[keep]
    cols["MRR"] = 1.0 / stats.first_rank[keep]
    cols["median_rank"] = stats.first_rank[keep].astype(float)
    names = list(cols)
    return names, np.stack([cols[n] for n in names], axis=1), names.index("median_rank")


def summarize(
    stats: PerQuery, n_gallery: int, n_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> RetrievalResult:
    """Aggregate per-query stats; CIs by resampling scored queries with replacement (percentile method)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    names, values, median_col = _metric_columns(stats)
    n = values.shape[0]
    if n == 0:
        raise ValueError("no query has a relevant gallery item; nothing to measure")
    point = values.mean(axis=0)
    point[median_col] = np.median(values[:, median_col])
    low = np.full(len(names), np.nan)
    high = np.full(len(names), np.nan)
    if n_bootstrap > 0:
        boot = _bootstrap(values, median_col, n_bootstrap, np.random.default_rng(seed))
        alpha = (1.0 - confidence) / 2.0
        low, high = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)], axis=0)
    metrics = {name: Estimate(float(point[i]), float(low[i]), float(high[i])) for i, name in enumerate(names)}
    return RetrievalResult(metrics, len(stats.n_relevant), n, n_gallery, confidence, n_bootstrap, seed)


def _bootstrap(values: np.ndarray, median_col: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Metric values over ``n_boot`` resamples: float64 [n_boot, M]. Resamples are drawn in batches and
    gathered one metric at a time, so working memory stays about 2M entries however many queries there are."""
    n, m = values.shape
    out = np.empty((n_boot, m))
    batch = max(1, 2_000_000 // n)
    for start in range(0, n_boot, batch):
        stop = min(start + batch, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        for c in range(m):
            sample = values[idx, c]  # [b, n]
            out[start:stop, c] = np.median(sample, axis=1) if c == median_col else sample.mean(axis=1)
    return out


def evaluate(
    score_fn: ScoreFn,
    n_queries: int,
    n_gallery: int,
    relevance: Relevance,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> RetrievalResult:
    """All metrics for queries scored by ``score_fn(start, stop) -> float [stop - start, n_gallery]``.

    ``chunk_size`` (queries per call) defaults to about `CHUNK_SCORES` scores per chunk."""
    if chunk_size is None:
        chunk_size = max(1, CHUNK_SCORES // max(1, n_gallery))

    def checked(start: int, stop: int) -> np.ndarray:
        scores = np.asarray(score_fn(start, stop))
        if scores.ndim != 2 or scores.shape[1] != n_gallery:
            raise ValueError(f"scores for queries {start}:{stop} have shape {scores.shape}, want [*, {n_gallery}]")
        return scores

    stats = per_query_stats(checked, n_queries, relevance, ks, chunk_size)
    return summarize(stats, n_gallery, n_bootstrap, seed, confidence)


def evaluate_similarity(sim: np.ndarray, relevance: Relevance, **kwargs: Any) -> RetrievalResult:
    """Metrics from a full similarity matrix ``sim``: float32 [Q, N] (rows = queries, columns = gallery)."""
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"sim must be 2-D [Q, N], got shape {sim.shape}")
    return evaluate(lambda a, b: sim[a:b], sim.shape[0], sim.shape[1], relevance, **kwargs)


def evaluate_embeddings(
    query_emb: np.ndarray, gallery_emb: np.ndarray, relevance: Relevance, **kwargs: Any
) -> RetrievalResult:
    """Metrics from embeddings scored by dot product (cosine if both are L2-normalised).

    query_emb: float [Q, D]; gallery_emb: float [N, D]. Only ``chunk_size x N`` scores exist at a time.
    """
    query_emb = np.asarray(query_emb, dtype=np.float32)
    gallery_emb = np.asarray(gallery_emb, dtype=np.float32)
    if query_emb.ndim != 2 or gallery_emb.ndim != 2 or query_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(
            f"embeddings must be [Q, D] and [N, D] with the same D, got {query_emb.shape} and {gallery_emb.shape}"
        )
    gallery_t = np.ascontiguousarray(gallery_emb.T)
    return evaluate(
        lambda a, b: query_emb[a:b] @ gallery_t, query_emb.shape[0], gallery_emb.shape[0], relevance, **kwargs
    )


# -- chance levels: the expected metric of a random ranking, printed next to every benchmark table --------------
def log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def chance_recall(n_relevant: np.ndarray, n_gallery: int, k: int) -> float:
    """Expected hit rate recall@k of a random ranking: mean over queries of 1 - C(N - r, k) / C(N, k)."""
    r = np.asarray(n_relevant, dtype=np.int64)
    r = r[r > 0]
    if r.size == 0:
        return float("nan")
    k = min(k, n_gallery)
    miss = [0.0 if n_gallery - ri < k else math.exp(log_comb(n_gallery - ri, k) - log_comb(n_gallery, k)) for ri in r]
    return float(1.0 - np.mean(miss))


def chance_precision(n_relevant: np.ndarray, n_gallery: int, k: int) -> float:
    """Expected precision@k of a random ranking: min(k, N)/k * r/N, averaged over queries with r > 0."""
    r = np.asarray(n_relevant, dtype=np.float64)
    r = r[r > 0]
    if r.size == 0:
        return float("nan")
    return float(np.mean(r / n_gallery) * min(k, n_gallery) / k)
