"""Text folded for matching: transliterated to ASCII (anyascii), lower case, with a map back to the original.

Matching on the folded form makes "Müller", "Mu\u0308ller" (NFD), "MÜLLER" and "Muller" one spelling, so a
header identifier is found whatever Unicode form or case the text uses; spans found in the folded text are
mapped back to the original characters, so the original text is what gets redacted.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass


@functools.lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    from anyascii import anyascii

    if unicodedata.combining(ch):  # an NFD accent: belongs to the letter before it
        return ""
    return anyascii(ch).lower() if ord(ch) > 127 else ch.lower()


def fold(text: str) -> str:
    """`text` transliterated to ASCII and lower-cased (no map back)."""
    return "".join(_fold_char(c) for c in text)


@dataclass(frozen=True)
class Folded:
    """A text's folded form and, for each folded character, the index of the original character it came from."""

    text: str  # the folded text
    origin: tuple[int, ...]  # len(text) entries: index into `source`
    source: str  # the original text

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the non-empty folded span [start, end), with the accents after its last letter."""
        s, e = self.origin[start], self.origin[end - 1] + 1
        while e < len(self.source) and unicodedata.combining(self.source[e]):
            e += 1
        return s, e


def fold_with_map(text: str) -> Folded:
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        f = _fold_char(ch)
        out.append(f)
        origin.extend([i] * len(f))
    return Folded("".join(out), tuple(origin), text)


# Spellings of the same letters that transliteration does not unify ("Müller" folds to "muller", but is also
# written "Mueller"): each header name is matched in every variant.
_DIGRAPHS = (("ae", "a"), ("oe", "o"), ("ue", "u"), ("aa", "a"))
_EXPAND = {"ä": "ae", "ö": "oe", "ü": "ue", "å": "aa", "ø": "oe", "æ": "ae", "ß": "ss"}


def name_variants(part: str) -> frozenset[str]:
    """Folded spellings of one name part: transliterated, German/Scandinavian digraphs expanded or dropped."""
    nfc = unicodedata.normalize("NFC", part)
    expanded = "".join(_EXPAND.get(c, c) for c in nfc.lower())
    out = {fold(nfc), fold(expanded)}
    for folded in list(out):
        for digraph, single in _DIGRAPHS:
            if digraph in folded:
                out.add(folded.replace(digraph, single))
    return frozenset(v for v in out if v)
