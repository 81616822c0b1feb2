"""Rare query words, and which items hold every one of them: the exact-match tier of hybrid search.

Reciprocal rank fusion (indexers/fusion.py) reads only ranks. A keyword list holds its exact matches on a rare
word at the top and then, at nearly the same reciprocal rank, items that match only a common word of the query;
a trained but weak vector model's first hits then outweigh exact matches ranked 10th or 20th (measured in
docs/guide/hybrid-search.md, "Exact matches on rare words"). So hybrid search puts the items that hold *every*
rare word of the query first, ordered among themselves by the fused score, and the rest after them.

A query word (analysed by the `words` analyzer: compounds split, stemmed) is rare when at least one and at most
`RARE_SHARE` of the searched view's documents hold it: a finding, a device or an eponym, rarely an organ or a
modality. A word no document holds is ignored (a typo must not empty the tier), and a query without rare words
is fused by rank alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

RARE_SHARE = 0.2  # a word held by at most one document in five is rare


def rare_words(searcher: Any, field: str, words: Sequence[str], documents: int) -> tuple[str, ...]:
    """The `words` (analysed query terms) that at least one and at most RARE_SHARE of `documents` hold in `field`."""
    limit = RARE_SHARE * documents
    return tuple(w for w in words if 0 < searcher.doc_freq(field, w) <= limit)


def holding_all(
    searcher: Any, schema: Any, field: str, id_field: str, words: Sequence[str], ids: Iterable[int]
) -> frozenset[int]:
    """The ids among `ids` (values of the integer field `id_field`) whose `field` holds every one of `words`."""
    import tantivy

    wanted = sorted({int(i) for i in ids})
    if not words or not wanted:
        return frozenset()
    must = [(tantivy.Occur.Must, tantivy.Query.term_query(schema, field, w)) for w in words]
    must.append((tantivy.Occur.Must, tantivy.Query.term_set_query(schema, id_field, wanted)))
    result = searcher.search(tantivy.Query.boolean_query(must), len(wanted))
    return frozenset(int(i) for i in searcher.fast_field_values(id_field, [addr for _, addr in result.hits]))
