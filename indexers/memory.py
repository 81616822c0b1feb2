"""Search modes over rows held in memory, for benchmarks: the same analysis, BM25 and fusion as an out dir's
search, over a gallery given as arrays (`radretrieve bench retrieval --mode`).

`mode_scores(mode, cosine[C, N], queries, docs)` gives float[C, N], higher first: the cosine itself (vector), BM25
from an in-memory tantivy index with the analyzers of indexers/analyzer.py (keyword; 0 where nothing matches), or
the reciprocal rank fusion of both lists, each read `fusion.depth(k)` deep with k = `BENCH_K`, exact matches on the
query first (indexers/rare.py; hybrid; 0 outside both lists). Rows that score 0 tie at the bottom, where the metrics'
pessimistic ties put them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from indexers import analyzer, rare
from indexers.fusion import RRF_K, depth, rrf

EXACT_TIER = 1.0  # added to an exact match's fused score: above any sum of reciprocal ranks (each at most 1 / 2)
BENCH_K = 50  # the deepest k the labels protocol reports (P@50): hybrid reads each list depth(50) = 100 deep


def _gallery(docs: Sequence[str]) -> tuple[Any, Any]:
    """(searcher, schema) of an in-memory tantivy index of `docs` (field `row`: the doc's position)."""
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("row", stored=False, indexed=True, fast=True)
    builder.add_text_field("terms", stored=False, tokenizer_name=analyzer.TERMS, index_option="freq")
    builder.add_text_field("words", stored=False, tokenizer_name=analyzer.WORDS, index_option="freq")
    schema = builder.build()
    index = tantivy.Index(schema)  # in memory
    analyzer.register(index)
    writer = index.writer(heap_size=15_000_000, num_threads=1)
    for row, text in enumerate(docs):
        writer.add_document(tantivy.Document(row=row, terms=text, words=text))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    return index.searcher(), schema


def keyword_scores(queries: Sequence[str], docs: Sequence[str], gallery: tuple[Any, Any] | None = None) -> np.ndarray:
    """float32[C, N]: BM25 of each query over the docs (0 where a doc matches no query term); `gallery`: the
    docs' index from `_gallery`, when the caller has built it."""
    import tantivy

    searcher, schema = gallery or _gallery(docs)
    out = np.zeros((len(queries), len(docs)), np.float32)
    for c, text in enumerate(queries):
        terms = analyzer.query_terms(text)
        should = [
            (tantivy.Occur.Should, tantivy.Query.term_query(schema, field, t))
            for field, name in (("terms", analyzer.TERMS), ("words", analyzer.WORDS))
            for t in terms[name]
        ]
        if not should:
            continue
        result = searcher.search(tantivy.Query.boolean_query(should), max(len(docs), 1))
        rows = searcher.fast_field_values("row", [addr for _, addr in result.hits])
        for (score, _), row in zip(result.hits, rows):
            out[c, int(row)] = score
    return out


def _ranked(scores: np.ndarray, n: int, positive: bool) -> list[tuple[int, float]]:
    """The top-n (row, score) of one query's scores, ties by row; `positive`: only scores above 0."""
    order = np.lexsort((np.arange(len(scores)), -scores))[:n]
    return [(int(r), float(scores[r])) for r in order if not positive or scores[r] > 0]


def mode_scores(
    mode: str, cosine: np.ndarray, queries: Sequence[str], docs: Sequence[str], vector_weight: float = 1.0
) -> np.ndarray:
    """float[C, N] scores of `mode` ("vector" | "keyword" | "hybrid") for C queries over N docs; `vector_weight`
    as in `fusion.rrf` (fusion.UNTRAINED_VECTOR_WEIGHT for an untrained model, as the search service does)."""
    if mode == "vector":
        return cosine
    gallery = _gallery(docs)
    bm25 = keyword_scores(queries, docs, gallery)
    if mode == "keyword":
        return bm25
    if mode != "hybrid":
        raise ValueError(f"unknown search mode {mode!r}")
    deep = depth(BENCH_K)
    fused = np.zeros_like(cosine, dtype=np.float64)
    searcher, schema = gallery
    for c in range(cosine.shape[0]):
        by_vector, by_keyword = _ranked(cosine[c], deep, False), _ranked(bm25[c], deep, True)
        exact: frozenset[int] = frozenset()
        if by_keyword:  # the exact-match tier, as Searcher.hybrid (indexers/rare.py)
            words = rare.exact_words(searcher, "words", analyzer.query_terms(queries[c])[analyzer.WORDS], len(docs))
            exact = rare.holding_all(searcher, schema, "words", "row", words, [i for i, _ in by_vector + by_keyword])
        for f in rrf(by_vector, by_keyword, deep, RRF_K, vector_weight, exact):
            fused[c, f.item_id] = f.score + (EXACT_TIER if f.exact else 0.0)
    return fused
