"""Header identifiers (a study's own PatientName, ids, accession numbers, birth date) found in free text in
any spelling: both sides are folded (radretrieve.archive.deid.fold) and matched as patterns that allow the
other separators, orders, initials, leading zeros and date formats people write."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from radretrieve.archive.deid.fold import fold, fold_with_map, name_variants

if TYPE_CHECKING:
    from radretrieve.archive.redact import PatientIds

MIN_ID_CHARS = 3  # shorter ids ("7") would redact ordinary numbers of every report; they are left alone
MIN_DIGITS_ALONE = 5  # "MRN-004277" is also found as "004277" (its digits alone) when they are this many
_ID_SEP = r"[\s\-_./:#]*"
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


def _bounded(core: str) -> str:
    """`core` as a whole token: not inside a longer run of letters or digits."""
    return rf"(?<![0-9a-z])(?:{core})(?![0-9a-z])"


def _name_parts(group: str) -> tuple[list[str], list[str], list[str]]:
    """(family, given, middle) words of one name; DICOM `Family^Given^Middle`, else "Family, Given" or
    "Given ... Family" (a name from a manifest column)."""
    if "^" in group:
        parts = [p.strip() for p in group.split("^")[:3]]
    elif "," in group:
        family, given = group.split(",", 1)
        parts = [family, given]
    else:
        words = group.split()
        parts = [words[-1] if words else "", " ".join(words[:1]), " ".join(words[1:-1])]
    family, given, middle = (parts + ["", "", ""])[:3]
    split = lambda part: [w for w in re.split(r"[\W_]+", part) if fold(w)]  # noqa: E731
    return split(family), split(given), split(middle)


def _spellings(words: list[str]) -> set[str]:
    """Each way the words of one name part are written, joined ("hansjurgen", "hansjuergen")."""
    out = {""}
    for word in words:
        out = {done + v for done in out for v in name_variants(word)}
    return out - {""}


@dataclass(frozen=True)
class NameMatcher:
    """The folded name words of a study's names, in every spelling, for matching folded text token by token."""

    words: frozenset[str]  # every name word (two letters or more), parts and words joined ("johndoe", "angellloyd")
    initials: frozenset[str]  # first letters of given and middle names: kept with a name word next to them

    @classmethod
    def of(cls, names: Iterable[str]) -> NameMatcher:
        words: set[str] = set()
        initials: set[str] = set()
        for value in names:
            for group in value.split("="):  # PN component groups: alphabetic=ideographic=phonetic
                family, given, middle = _name_parts(group)
                for w in family + given + middle:
                    words |= {v for v in name_variants(w) if len(v) >= 2}
                f, g, m = _spellings(family), _spellings(given), _spellings(middle)
                for first, second in ((g, f), (f, g), (g, m), (m, f), (f, m)):
                    words |= {a + b for a in first for b in second}
                words |= {a + b + c for a in g for b in m for c in f} | f | g | m
                singles = [name_variants(w) for w in family + given + middle]
                words |= {a + b for x in singles for y in singles if x is not y for a in x for b in y}
                initials |= {fold(w)[0] for w in given[:1] + middle[:1] if fold(w)[0].isalpha()}
                initials |= {fold(w) for w in family + given + middle if len(fold(w)) == 1}  # O'Sullivan's O
        return cls(frozenset(words), frozenset(initials))

    def spans(self, folded: str) -> list[tuple[int, int]]:
        """Folded spans of whole names: name words, with the initials and separators between them."""
        tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"[a-z0-9]+", folded)]
        hits = [t in self.words for _, _, t in tokens]
        out: list[list[int]] = []
        for i, (start, end, token) in enumerate(tokens):
            initial = token in self.initials and any(
                0 <= j < len(tokens) and hits[j] and _NAME_GAP.fullmatch(_gap(folded, tokens, i, j))
                for j in (i - 1, i + 1)
            )
            if not (hits[i] or initial):
                continue
            if initial and folded[end : end + 1] == ".":
                end += 1
            if out and _NAME_GAP.fullmatch(folded[out[-1][1] : start]):
                out[-1][1] = end
            else:
                out.append([start, end])
        return [(a, b) for a, b in out]


_NAME_GAP = re.compile(r"[\s^,.\-']*")


def _gap(folded: str, tokens: list[tuple[int, int, str]], i: int, j: int) -> str:
    a, b = sorted((i, j))
    return folded[tokens[a][1] : tokens[b][0]]


def _digit_run(run: str, keep: int = MIN_ID_CHARS) -> str:
    """Digits with their leading zeros optional ("00123" also as "123"), unless that leaves fewer than `keep`."""
    core = run.lstrip("0")
    if len(core) < keep:
        return _ID_SEP.join(re.escape(c) for c in run)
    return rf"(?:0{_ID_SEP})*" + _ID_SEP.join(re.escape(c) for c in core)


def id_patterns(value: str) -> list[str]:
    """An id with any separators or spaces between its characters and its leading zeros optional
    ("MRN-0042-77" = "mrn 004277" = "MRN42-77"), and its digits alone when they are many."""
    chars = re.sub(r"[^0-9a-z]", "", fold(value))
    if len(chars) < MIN_ID_CHARS:
        return []
    runs = re.findall(r"[0-9]+|[a-z]+", chars)
    pattern = _ID_SEP.join(_digit_run(r) if r.isdigit() else _ID_SEP.join(re.escape(c) for c in r) for r in runs)
    out = [pattern]
    digits = "".join(r for r in runs if r.isdigit())
    if digits != chars and len(digits) >= MIN_DIGITS_ALONE:
        if len(digits.lstrip("0")) >= MIN_DIGITS_ALONE:
            out.append(_digit_run(digits, MIN_DIGITS_ALONE))
        else:  # "MRN-0042-77" as "004277", not as "4277"
            out.append(_ID_SEP.join(re.escape(c) for c in digits))
    return out


def _ymd(value: str) -> list[tuple[str, int, int]]:
    """(year, month, day) readings of a birth date: DICOM YYYYMMDD, ISO, or from a manifest DD.MM.YYYY,
    DD/MM/YYYY or MM/DD/YYYY (both readings when the day is 12 or less)."""
    m = re.fullmatch(r"\s*(\d{4})[-/.]?(\d{1,2})[-/.]?(\d{1,2})\s*", value)
    if m is not None:
        found = [(m.group(1), int(m.group(2)), int(m.group(3)))]
    elif (m := re.fullmatch(r"\s*(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})\s*", value)) is not None:
        a, b, y = int(m.group(1)), int(m.group(2)), m.group(3)
        found = [(y, b, a), (y, a, b)]
    else:
        return []
    return [(y, mo, d) for y, mo, d in dict.fromkeys(found) if 1 <= mo <= 12 and 1 <= d <= 31]


def date_patterns(value: str) -> list[str]:
    """A birth date in the numeric and month-name formats people write, day and month with or without
    leading zeros, two- or four-digit years (19700131, 1970-01-31, 31/01/1970, 01/31/70, 31.01.1970,
    31 Jan 1970, 31-JAN-1970, January 31st, 1970, 1970 Jan 31, 31JAN1970)."""
    return [p for y, mo, d in _ymd(value) for p in _date_forms(y, mo, d)]


def _date_forms(y: str, mo: int, d: int) -> list[str]:
    years = rf"(?:{y}|'?{y[2:]})"
    dd, mm = f"0?{d}", f"0?{mo}"
    sep = r"\s*[-/.]\s*|\s+"
    name = MONTHS[mo - 1]
    month = rf"(?:{name}|{name[:4]}|{name[:3]})\.?"
    day = rf"{dd}(?:st|nd|rd|th)?"
    text = r"[\s,.\-/]*"
    return [
        rf"{y}{mo:02d}{d:02d}",
        rf"{d:02d}{mo:02d}{y}",
        rf"{mo:02d}{d:02d}{y}",
        rf"{y}(?:{sep}){mm}(?:{sep}){dd}",
        rf"{dd}(?:{sep}){mm}(?:{sep}){years}",
        rf"{mm}(?:{sep}){dd}(?:{sep}){years}",
        rf"{day}{text}(?:of\s+)?{month}{text}{years}",
        rf"{month}{text}{day}{text}{years}",
        rf"{y}{text}{month}{text}{day}",
    ]


@dataclass(frozen=True)
class HeaderMatcher:
    """A study's header identifiers, ready to match: names token by token, ids and dates as one pattern."""

    names: NameMatcher
    pattern: re.Pattern[str] | None  # ids, accession numbers and birth dates in every spelling


@functools.lru_cache(maxsize=256)
def matcher(ids: PatientIds) -> HeaderMatcher:
    patterns: list[str] = []
    for value in sorted(ids.ids | ids.accessions):
        patterns += id_patterns(value)
    for value in sorted(ids.birth_dates):
        patterns += date_patterns(value)
    ordered = sorted(set(patterns), key=len, reverse=True)  # longest first: a whole id wins over its digits
    pattern = re.compile("|".join(_bounded(p) for p in ordered)) if ordered else None
    return HeaderMatcher(NameMatcher.of(ids.names), pattern)


def header_spans(text: str, ids: PatientIds) -> list[tuple[int, int]]:
    """Spans of `text` (original indices) that spell one of `ids`."""
    if not ids:
        return []
    m = matcher(ids)
    folded = fold_with_map(text)
    spans = m.names.spans(folded.text)
    if m.pattern is not None:
        spans += [match.span() for match in m.pattern.finditer(folded.text) if match.end() > match.start()]
    return [folded.span(a, b) for a, b in spans]
