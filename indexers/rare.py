"""Exact matches of a specific query: the first tier of hybrid search.

Reciprocal rank fusion (indexers/fusion.py) reads only ranks. A keyword list holds the reports that match the
whole query at its top and then, at nearly the same reciprocal rank, reports that match only a common word of
it ("hernia" for "Morgagni hernia"); a trained but weak vector model's first hits then outweigh exact matches
ranked 10th or 20th (measured in docs/guide/hybrid-search.md, "Exact matches"). So hybrid search puts first the
items that hold *every* word of the query that the archive holds at all, in fused order among themselves, when
the query is specific: when at least one of those words is rare.

A query word (analysed by the `words` analyzer: compounds split, stemmed) is rare when at least one and at most
one in `RARE_ONE_IN` of the searched view's documents hold it: a finding, a device or an eponym, rarely an organ
or a modality. A word no document holds is left out (a typo or a word of the question must not empty the tier). A
query without rare words ("chest CT") is fused by rank alone, and so is a query whose words no item holds all of
(a sentence: "axial CT of the head, hyperdense lesion"), where one rare word alone must not outrank the items
that match the rest of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

RARE_ONE_IN = 5  # a word held by at most one document in five is rare (integers: no rounding at the boundary)


def exact_words(searcher: Any, field: str, words: Sequence[str], documents: int) -> tuple[str, ...]:
    """What an exact match must hold: the `words` (analysed query terms) that some of the `documents` hold in
    `field`, when at least one of them is held by at most one in RARE_ONE_IN of them; () for a query that is not
    specific."""
    held = [(w, searcher.doc_freq(field, w)) for w in words]
    present = tuple(w for w, n in held if n > 0)
    return present if any(n * RARE_ONE_IN <= documents for w, n in held if n > 0) else ()


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
