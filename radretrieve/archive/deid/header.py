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


MAX_JOINED_CHARS = 64  # a longer run of letters is no name written joined: not segmented (bounded time)


@dataclass(frozen=True)
class NameMatcher:
    """The folded name words of a study's names, in every spelling, for matching folded text token by token."""

    words: frozenset[str]  # every name word (two letters or more) in every spelling: "muller", "weiss", "jose"
    initials: frozenset[str]  # first letters of every name word: kept with a name word (or initial) next to them

    @classmethod
    def of(cls, names: Iterable[str]) -> NameMatcher:
        words: set[str] = set()
        initials: set[str] = set()
        for value in names:
            for group in value.split("="):  # PN component groups: alphabetic=ideographic=phonetic
                family, given, middle = _name_parts(group)
                for w in family + given + middle:
                    words |= {v for v in name_variants(w) if len(v) >= 2}
                    initials |= {v[0] for v in name_variants(w) if v[:1].isalpha()}  # "J.M. Müller-Weiß"
        return cls(frozenset(words), frozenset(initials))

    def is_name(self, token: str) -> bool:
        """`token` is name words written together in any order and number ("mullerweissjose", "josemuller",
        "weissmuller"): it splits wholly into name words (a word break over the study's name words)."""
        if token in self.words:
            return True
        if len(token) > MAX_JOINED_CHARS or not token.isalpha():
            return False
        ends = [True] + [False] * len(token)  # ends[i]: token[:i] splits into name words
        for i in range(2, len(token) + 1):
            ends[i] = any(ends[j] and token[j:i] in self.words for j in range(max(0, i - MAX_JOINED_CHARS), i - 1))
        return ends[-1]

    def spans(self, folded: str) -> list[tuple[int, int]]:
        """Folded spans of whole names: name words, with the initials and separators between them."""
        tokens = [(m.start(), m.end(), m.group()) for m in re.finditer(r"[a-z0-9]+", folded)]
        hits = [self.is_name(t) for _, _, t in tokens]
        kept = list(hits)
        for order in (range(len(tokens)), range(len(tokens) - 1, -1, -1)):  # a run of initials before or after
            for i in order:
                if not kept[i] and tokens[i][2] in self.initials:
                    kept[i] = any(
                        0 <= j < len(tokens) and kept[j] and _NAME_GAP.fullmatch(_gap(folded, tokens, i, j))
                        for j in (i - 1, i + 1)
                    )
        out: list[list[int]] = []
        for i, (start, end, _) in enumerate(tokens):
            if not kept[i]:
                continue
            if not hits[i] and folded[end : end + 1] == ".":  # an initial's full stop
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


_SEPARATORS = frozenset(" \t\n\r\f\v-_./:#")  # what may stand between the characters of an id


@dataclass(frozen=True)
class IdPattern:
    """One spelling of an id in compact text (folded, separators removed). `zeros`: leading zeros may be added
    in front ("123456" also as "00123456"): found by extending a match backwards, not by a leading `0*`, so
    a long run of zeros cannot make the search quadratic."""

    pattern: re.Pattern[str]
    zeros: bool


def _digits(run: str, keep: int, first: bool) -> tuple[str, bool]:
    """A digit run with its leading zeros optional ("0042" also as "42") unless that leaves fewer than
    `keep`; at the start of an id the zeros are added back by extension (see IdPattern)."""
    core = run.lstrip("0")
    if len(core) < keep:
        return re.escape(run), False
    return (re.escape(core), True) if first else ("0*" + re.escape(core), False)


def id_patterns(value: str) -> list[IdPattern]:
    """An id with any separators or spaces between its characters and its leading zeros optional
    ("MRN-0042-77" = "mrn 004277" = "MRN42-77"), and its digits alone when there are five or more."""
    chars = re.sub(r"[^0-9a-z]", "", fold(value))
    if len(chars) < MIN_ID_CHARS:
        return []
    runs = re.findall(r"[0-9]+|[a-z]+", chars)
    parts, zeros = [], False
    for i, run in enumerate(runs):
        if run.isdigit():
            part, extend = _digits(run, MIN_ID_CHARS, first=i == 0)
            zeros = zeros or extend
            parts.append(part)
        else:
            parts.append(re.escape(run))
    out = [IdPattern(re.compile(f"(?=({''.join(parts)}))"), zeros)]
    digits = "".join(r for r in runs if r.isdigit())
    if digits != chars and len(digits) >= MIN_DIGITS_ALONE:  # "MRN-0042-77" as "004277", not as "4277"
        part, extend = _digits(digits, MIN_DIGITS_ALONE, first=True)
        out.append(IdPattern(re.compile(f"(?=({part}))"), extend))
    return out


def _compact(folded: str) -> tuple[str, list[int]]:
    """`folded` without the id separators, and each kept character's index in `folded`."""
    keep = [i for i, c in enumerate(folded) if c not in _SEPARATORS]
    return "".join(folded[i] for i in keep), keep


def id_spans(folded: str, patterns: list[IdPattern]) -> list[tuple[int, int]]:
    """Folded spans of the ids: whole tokens only (no letter or digit just before or after)."""
    if not patterns:
        return []
    compact, where = _compact(folded)
    out = []
    for p in patterns:
        for m in p.pattern.finditer(compact):
            start, end = m.start(1), m.end(1)
            while p.zeros and start > 0 and compact[start - 1] == "0":
                start -= 1
            a, b = where[start], where[end - 1] + 1
            if (a == 0 or not folded[a - 1].isalnum()) and (b == len(folded) or not folded[b].isalnum()):
                out.append((a, b))
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
    """A study's header identifiers, ready to match: names token by token, ids in compact text, birth dates
    as one pattern."""

    names: NameMatcher
    ids: list[IdPattern]  # ids and accession numbers in every spelling
    dates: re.Pattern[str] | None  # birth dates in every format


@functools.lru_cache(maxsize=256)
def matcher(ids: PatientIds) -> HeaderMatcher:
    id_list = [p for value in sorted(ids.ids | ids.accessions) for p in id_patterns(value)]
    dates = sorted({p for value in ids.birth_dates for p in date_patterns(value)}, key=len, reverse=True)
    pattern = re.compile("|".join(_bounded(p) for p in dates)) if dates else None
    return HeaderMatcher(NameMatcher.of(ids.names), id_list, pattern)


def header_spans(text: str, ids: PatientIds) -> list[tuple[int, int]]:
    """Spans of `text` (original indices) that spell one of `ids`."""
    if not ids:
        return []
    m = matcher(ids)
    folded = fold_with_map(text)
    spans = m.names.spans(folded.text) + id_spans(folded.text, m.ids)
    if m.dates is not None:
        spans += [match.span() for match in m.dates.finditer(folded.text) if match.end() > match.start()]
    return [folded.span(a, b) for a, b in spans]
