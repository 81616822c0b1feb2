"""Tune search params on held-out queries until recall@10 vs exact reaches the target.

An index is tuned on several query sets at once (`tune_sets`): its own held-out rows and the other
modality's vectors (text embeddings for the items index). CLIP text and image embeddings sit in different
regions (the modality gap), so an IVF probe count that finds an image query's neighbours can miss a text
query's, which lie across more inverted lists; a setting counts as reaching the target only when every
set reaches it (the score is the lowest set's recall).

The sweep walks the cheapest knob upward (powers of two, then a bisection between the last miss and the
first hit), so the chosen params are close to the cheapest that reach the target rather than up to 2x
too expensive. If nothing reaches the target, the best setting tried is kept and its recall recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from indexers.ann import AnnIndex
from indexers.exact import recall_at
from indexers.plan import SearchParams

log = logging.getLogger(__name__)
RECALL_K = 10
# Tuning aims this far above the target: the bisection stops right at the target on the tuning
# queries, and recall on other queries scatters around that by about this much (500 queries x 10 hits).
TUNE_MARGIN = 0.005
PLATEAU = 0.002  # recall gained by doubling a knob below which the sweep stops (see _sweep)
RERANK_FACTORS = (4, 16, 64)  # IVF-PQ over-fetch before exact re-ranking; a larger one only if the first fails


@dataclass(frozen=True)
class TuneResult:
    """Chosen params and what they measured."""

    params: SearchParams  # cheapest params that reached the target (or the best tried)
    recall: float  # recall@10 of `params` on the tuning queries (the lowest set's)
    queries: int  # tuning queries used (all sets)
    by_set: Mapping[str, tuple[float, int]] = field(default_factory=dict)  # set name -> (recall@10, queries)


@dataclass(frozen=True)
class QuerySet:
    """One kind of tuning query."""

    name: str  # query type, e.g. "image" | "text"
    queries: np.ndarray  # float32[Q, D], none of them in the index
    truth: np.ndarray  # int64[Q, >=10] exact top ids over what the index holds


def measure_recall(
    ann: AnnIndex, queries: np.ndarray, truth: np.ndarray, params: SearchParams, exclude: Any = None
) -> float:
    """recall@10 of `ann` under `params`. queries float32[Q, D] (held out of the index, see
    indexers/holdout.py, or left out of the results by `exclude`, a selector from `ann.excluding`);
    truth int64[Q, >=10] exact ids over what the index holds (less the excluded ids)."""
    _, found = ann.search(queries, RECALL_K, params, exclude)
    return recall_at(found, truth, RECALL_K)


def _sweep(
    values: list[int], make: Callable[[int], SearchParams], score: Callable[[SearchParams], float], target: float
) -> tuple[SearchParams, float]:
    """Smallest value in `values` (ascending) reaching `target`, refined by bisection; else the best.

    Stops early when doubling the value gains under PLATEAU recall: the index is limited by something
    else (PQ code quality), and the most thorough settings are the slowest to measure.
    """
    best = (make(values[0]), -1.0)
    prev_miss: int | None = None
    for value in values:
        recall = score(make(value))
        if prev_miss is not None and recall < target and recall - best[1] < PLATEAU:
            return best if recall <= best[1] else (make(value), recall)
        if recall > best[1]:
            best = (make(value), recall)
        if recall >= target:
            hit = (value, recall)
            lo = prev_miss
            while lo is not None and hit[0] - lo > max(1, hit[0] // 8):
                mid = (lo + hit[0]) // 2
                r = score(make(mid))
                if r >= target:
                    hit = (mid, r)
                else:
                    lo = mid
            return make(hit[0]), hit[1]
        prev_miss = value
    return best


def _powers(upto: int, start: int = 1) -> list[int]:
    out = []
    v = start
    while v < upto:
        out.append(v)
        v *= 2
    return out + [upto]


def tune(ann: AnnIndex, queries: np.ndarray, truth: np.ndarray, target: float = 0.95) -> TuneResult:
    """Tune `ann`'s params on one query set. queries float32[Q, D], held out of the index; truth
    int64[Q, >=10] their exact top ids over what the index holds."""
    return tune_sets(ann, [QuerySet("queries", queries, truth)], target)


def measure_sets(
    ann: AnnIndex, sets: Sequence[QuerySet], params: SearchParams, exclude: Any = None
) -> dict[str, float]:
    """recall@10 per non-empty set under `params` (see `measure_recall`)."""
    return {s.name: measure_recall(ann, s.queries, s.truth, params, exclude) for s in sets if len(s.queries)}


def tune_sets(ann: AnnIndex, sets: Sequence[QuerySet], target: float = 0.95, exclude: Any = None) -> TuneResult:
    """Tune `ann`'s params until every non-empty set in `sets` reaches `target` recall@10 (`exclude`: ids
    left out of every search, see `measure_recall`)."""
    plan = ann.plan
    sets = [s for s in sets if len(s.queries)]
    measured: dict[SearchParams, dict[str, float]] = {}

    def score(p: SearchParams) -> float:
        if p not in measured:
            measured[p] = measure_sets(ann, sets, p, exclude)
        return min(measured[p].values(), default=1.0)

    goal = min(target + TUNE_MARGIN, 1.0)
    if plan.index_type == "flat" or not sets:
        return TuneResult(SearchParams(), 1.0, 0, {s.name: (1.0, 0) for s in sets})
    if plan.index_type == "hnsw":
        params, recall = _sweep(_powers(4096, 16), lambda v: SearchParams(ef_search=v), score, goal)
    elif plan.index_type == "ivf_flat":
        params, recall = _sweep(_powers(plan.nlist), lambda v: SearchParams(nprobe=v), score, goal)
    else:
        params, recall = SearchParams(), -1.0
        for factor in RERANK_FACTORS:
            p, r = _sweep(_powers(plan.nlist), lambda v, f=factor: SearchParams(nprobe=v, rerank=f), score, goal)
            if r > recall:
                params, recall = p, r
            if recall >= goal:
                break
    if recall < target:
        log.warning("%s: recall@10 %.3f below target %.2f at the most thorough setting", plan.factory, recall, target)
    score(params)  # measured already unless nothing was tried
    by_set = {s.name: (measured[params][s.name], len(s.queries)) for s in sets}
    return TuneResult(params, recall, sum(len(s.queries) for s in sets), by_set)
