"""Reciprocal rank fusion of ranked lists (vector and keyword), and the evidence each hybrid hit carries.

A hit's fused score is the sum over the lists that hold it of ``1 / (rrf_k + rank)`` (rank 1-based), after
Cormack, Clarke and Buettcher (SIGIR 2009). Only ranks count, never raw scores, so a cosine of 0.31 and a BM25
of 14.2 need no common scale, and an untrained model's noise cannot outweigh an exact keyword match by the size
of its numbers: its first hit and the keyword list's first hit weigh the same.

`RRF_K = 60` (the paper's value; docs/guide/hybrid-search.md): larger flattens the head of each list, smaller
lets the first few hits of either list dominate. Each list is read `depth(k)` deep, so an item ranked low in
one list and high in the other still meets its second rank.

An untrained model's vector list is noise by construction: its weight is `UNTRAINED_VECTOR_WEIGHT` (the caller
knows the model's provenance), ``w / (rrf_k + rank)``, small enough that every keyword match of a list `depth(k)`
deep (at least ``1 / (rrf_k + depth)``) ranks above every hit found by the vector list alone (at most
``w / (rrf_k + 1)``), which then only fills the list and orders the keyword matches among themselves.

Exact matches of a specific query come first: the caller passes the ids that hold every word of the query the
archive holds, when one of them is rare (indexers/rare.py), and those items rank above all others, ordered
among themselves by the fused score. Ranks alone cannot keep them there: a keyword list's 20th exact match and
its 21st item, which matches only a common word, differ by less than a vector list's first hit adds.

Ties are broken by the better of the two ranks, then by the item id, so the order is a function of the two
lists and the exact set alone (tests/test_hybrid_search.py checks it against a ranking computed by hand).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RRF_K = 60  # the rank constant: 1 / (RRF_K + rank) per list
MIN_DEPTH = 100  # each list is read at least this deep
UNTRAINED_VECTOR_WEIGHT = 0.25  # the vector list's weight when the model is untrained (1.0 otherwise)


def depth(k: int) -> int:
    """How deep each list is read for a fused top-k."""
    return max(MIN_DEPTH, 2 * k)


@dataclass(frozen=True)
class Fused:
    """One item of the fused list."""

    item_id: int  # stable item id
    score: float  # sum of 1 / (rrf_k + rank) over the lists that hold it
    vector_rank: int | None  # 1-based rank in the vector list (None: not in it)
    vector_score: float | None  # cosine with the query vector
    keyword_rank: int | None  # 1-based rank in the keyword list (None: not in it)
    keyword_score: float | None  # BM25 score
    exact: bool = False  # an exact match of a specific query (ranked above the items that are not)


def rrf(
    vector: Sequence[tuple[int, float]],
    keyword: Sequence[tuple[int, float]],
    k: int,
    rrf_k: int = RRF_K,
    vector_weight: float = 1.0,
    exact: frozenset[int] = frozenset(),
) -> list[Fused]:
    """The fused top-k of two ranked lists of (item id, score), best first; the vector list weighs `vector_weight`;
    the ids in `exact` (exact matches, indexers/rare.py) rank above all others."""
    if rrf_k < 1:
        raise ValueError(f"rrf_k must be at least 1, got {rrf_k}")
    weights = {"vector": float(vector_weight), "keyword": 1.0}
    seen: dict[int, dict[str, tuple[int, float]]] = {}
    for name, ranked in (("vector", vector), ("keyword", keyword)):
        for rank, (item, score) in enumerate(ranked, start=1):
            seen.setdefault(int(item), {}).setdefault(name, (rank, float(score)))
    fused = []
    for item, found in seen.items():
        v, kw = found.get("vector"), found.get("keyword")
        total = sum(weights[name] / (rrf_k + rank) for name, (rank, _) in found.items())
        fused.append(
            Fused(
                item,
                total,
                v[0] if v else None,
                v[1] if v else None,
                kw[0] if kw else None,
                kw[1] if kw else None,
                item in exact,
            )
        )
    fused.sort(key=_order)
    return fused[:k]


def _order(f: Fused) -> tuple[bool, float, int, int]:
    """Exact matches first, then the fused score, the better of the two ranks, the item id."""
    best = min(r for r in (f.vector_rank, f.keyword_rank) if r is not None)
    return (not f.exact, -f.score, best, f.item_id)
