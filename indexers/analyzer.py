"""The text analysis of the full-text index: medical terms kept whole, English stemmed, one spelling in Rust and Python.

Two analyzers, both tantivy `TextAnalyzer`s built from a regex tokenizer, lower-casing and the English
(Porter/Snowball) stemmer; no stop words ("no" is what negates a finding in a report):

* `TERMS` keeps hyphenated and slashed words whole (``C5-C6``, ``T2-weighted``, ``L4/L5``) and decimals
  (``3.5``); a query for ``C5-C6`` matches that level, not every report that mentions C5 and C6;
* `WORDS` splits them (``c5``, ``c6``), so a query for ``T2`` still finds ``T2-weighted``.

A document is indexed under both (fields `terms` and `words`); a query term that matches in both fields scores
twice, so the exact compound ranks above a loose match. Abbreviations such as ``T2``, ``FLAIR``, ``CT`` are
plain alphanumeric tokens and survive as they are (lower-cased).

`PY_TERM_RE` is the same tokenizer in Python's `re` (``[^\\W_]`` is ``\\p{L}|\\p{N}``); it finds the character
spans of tokens in a hit's text for highlighting, and `tests/test_fulltext.py` checks it against tantivy's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

ANALYZER_VERSION = "medical-en-2"  # recorded in index.json; a change of the analysis or fields forces a rebuild
TERMS = "radretrieve_terms"  # tokenizer name of the `terms` field (compounds kept)
WORDS = "radretrieve_words"  # tokenizer name of the `words` field (compounds split)
_DECIMAL = r"[0-9]+(?:\.[0-9]+)+"
RUST_TERM_RE = _DECIMAL + r"|[\p{L}\p{N}]+(?:[-/][\p{L}\p{N}]+)*"
RUST_WORD_RE = _DECIMAL + r"|[\p{L}\p{N}]+"
PY_TERM_RE = re.compile(_DECIMAL + r"|[^\W_]+(?:[-/][^\W_]+)*")
MAX_TOKEN_CHARS = 40  # longer tokens (base64, hashes) are dropped: no one searches for them
MAX_QUERY_TERMS = 64  # distinct terms per analyzer kept from a query: each is a clause, a pasted report is not a query


def _analyzer(pattern: str) -> Any:
    import tantivy

    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(pattern))
        .filter(tantivy.Filter.remove_long(MAX_TOKEN_CHARS))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


@lru_cache(maxsize=1)
def analyzers() -> dict[str, Any]:
    """{tokenizer name: tantivy TextAnalyzer} (built once per process)."""
    return {TERMS: _analyzer(RUST_TERM_RE), WORDS: _analyzer(RUST_WORD_RE)}


def register(index: Any) -> None:
    """Register both analyzers on a tantivy `Index` (needed before writing; harmless for reading)."""
    for name, analyzer in analyzers().items():
        index.register_tokenizer(name, analyzer)


def query_terms(text: str) -> dict[str, tuple[str, ...]]:
    """{tokenizer name: the first MAX_QUERY_TERMS distinct analysed terms of `text`, in order of appearance}."""
    out = {}
    for name, analyzer in analyzers().items():
        out[name] = tuple(dict.fromkeys(analyzer.analyze(text)))[:MAX_QUERY_TERMS]
    return out


def all_terms(text: str) -> frozenset[str]:
    """Every analysed term of `text` under either analyzer."""
    return frozenset(t for terms in query_terms(text).values() for t in terms)


@lru_cache(maxsize=1 << 16)
def token_terms(token: str) -> frozenset[str]:
    """`all_terms` of one token, cached: a report's words repeat across hits and queries."""
    return all_terms(token)


def text_terms(text: str) -> frozenset[str]:
    """`all_terms(text)`, token by token through the cache (the Python tokenizer finds tantivy's tokens)."""
    return frozenset().union(*(token_terms(t) for t in PY_TERM_RE.findall(text)))


def spans(text: str, wanted: Iterable[str]) -> Iterator[tuple[int, int, str]]:
    """(start, end, token) of each token of `text` (Python character offsets) whose analysis under either
    analyzer shares a term with `wanted` (analysed query terms): what a page highlights."""
    want = frozenset(wanted)
    if not want or not text:
        return
    for m in PY_TERM_RE.finditer(text):
        if token_terms(m.group(0)) & want:
            yield m.start(), m.end(), m.group(0)
