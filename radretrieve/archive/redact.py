"""Free-text redaction: the identifiers of a study's own headers are removed from its texts before anything
is stored or shown (DESIGN.md: PHI), then an optional site scrubber (`--scrubber module:callable`) runs.

Texts redacted: report texts (sidecars, DICOM SR, `--reports`), StudyDescription and SeriesDescription.
Identifiers: PatientName in its DICOM form (`Family^Given^Middle`) and in the word orders people write it
("Given Family", "Family, Given", any case; every name part of two letters or more also on its own),
PatientID and OtherPatientIDs (with or without their punctuation), AccessionNumber, and the birth date in
common formats (19610423, 1961-04-23, 23/04/1961, 04/23/1961, 23.04.1961, "23 April 1961", "April 23, 1961").
Each match becomes `[REDACTED]`.

`PatientIds` is the only place identifiers live: read from headers for this purpose, used by `assemble`
(radretrieve.archive.scanner) and dropped there; its repr never shows a value, so a log line cannot leak one.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from radretrieve.foundation.errors import RadRetrieveError

REDACTED = "[REDACTED]"
MIN_ID_CHARS = 3  # shorter ids ("7") would redact ordinary numbers of every report; they are left alone
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

Scrubber = Callable[[str], str]  # a site's own rules: text -> text


@dataclass(frozen=True)
class PatientIds:
    """Identifiers read from a study's headers, for redaction only; never stored, shown or logged."""

    names: frozenset[str] = frozenset()  # PatientName values as stored (DICOM PN: Family^Given^Middle^...)
    ids: frozenset[str] = frozenset()  # PatientID, OtherPatientIDs
    accessions: frozenset[str] = frozenset()  # AccessionNumber
    birth_dates: frozenset[str] = frozenset()  # PatientBirthDate (DICOM DA: YYYYMMDD)

    def __repr__(self) -> str:  # values must never reach a log line or a traceback
        return "PatientIds(<withheld>)"

    def __bool__(self) -> bool:
        return bool(self.names or self.ids or self.accessions or self.birth_dates)

    def __or__(self, other: PatientIds) -> PatientIds:
        return PatientIds(
            self.names | other.names,
            self.ids | other.ids,
            self.accessions | other.accessions,
            self.birth_dates | other.birth_dates,
        )


NO_IDS = PatientIds()


def merge_ids(all_ids: Iterable[PatientIds]) -> PatientIds:
    out = NO_IDS
    for ids in all_ids:
        out = out | ids
    return out


def _bounded(core: str) -> str:
    """`core` as a whole token: not inside a longer run of letters or digits."""
    return rf"(?<![0-9A-Za-z]){core}(?![0-9A-Za-z])"


def _name_patterns(value: str) -> list[str]:
    """Whole-name forms first (one [REDACTED] for the whole name), then each part on its own."""
    out: list[str] = []
    for group in value.split("="):  # PN component groups: alphabetic=ideographic=phonetic
        parts = [p.strip() for p in group.split("^")[:3]]
        family, given, middle = (parts + ["", "", ""])[:3]
        words = [w for p in (family, given, middle) for w in p.split() if len(w) >= 2]
        sep = r"[\s^,.]+"
        orders = [[family, given, middle], [given, middle, family], [family, given], [given, family]]
        for order in orders:
            names = [re.escape(p) for p in order if p]
            if len(names) > 1:
                out.append(sep.join(names))
        out.extend(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    return out


def _id_pattern(value: str) -> str | None:
    """An id with any punctuation or spacing between its letter/digit runs ("MRN-0042-77" = "MRN 004277")."""
    runs = re.findall(r"[0-9A-Za-z]+", value)
    if sum(len(r) for r in runs) < MIN_ID_CHARS:
        return None
    return r"[\s\-_./:#]*".join(re.escape(r) for r in runs)


def _date_patterns(value: str) -> list[str]:
    """A DICOM date (YYYYMMDD) in the formats reports use; day and month with or without a leading zero."""
    m = re.fullmatch(r"\s*(\d{4})-?(\d{2})-?(\d{2})\s*", value)
    if m is None:
        return []
    y, mo, d = m.group(1), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return []
    dd, mm = f"0?{d}", f"0?{mo}"
    name = MONTHS[mo - 1]
    month = rf"(?:{name}|{name[:3]}\.?)"
    day = rf"{dd}(?:st|nd|rd|th)?"
    return [
        rf"{y}{mo:02d}{d:02d}",
        rf"{y}[-/.]{mm}[-/.]{dd}",
        rf"{dd}[-/.]{mm}[-/.]{y}",
        rf"{mm}[-/.]{dd}[-/.]{y}",
        rf"{day}[\s\-]+(?:of\s+)?{month}[\s,\-]+{y}",
        rf"{month}[\s\-]+{day},?[\s\-]+{y}",
    ]


@functools.lru_cache(maxsize=256)
def _compiled(ids: PatientIds) -> re.Pattern[str] | None:
    patterns: list[str] = []
    for name in sorted(ids.names):
        patterns += _name_patterns(name)
    for value in sorted(ids.ids | ids.accessions):
        pattern = _id_pattern(value)
        if pattern:
            patterns.append(pattern)
    for value in sorted(ids.birth_dates):
        patterns += _date_patterns(value)
    if not patterns:
        return None
    # One alternation, longest alternatives first, so a whole name wins over its parts.
    ordered = sorted(set(patterns), key=len, reverse=True)
    return re.compile("|".join(_bounded(f"(?:{p})") for p in ordered), re.IGNORECASE)


def redact(text: str, ids: PatientIds) -> str:
    """`text` with every identifier of `ids` replaced by [REDACTED]."""
    if not text or not ids:
        return text
    pattern = _compiled(ids)
    return pattern.sub(REDACTED, text) if pattern is not None else text


def load_scrubber(spec: str) -> Scrubber:
    """`module:callable` -> the callable (text -> text); one clear error line when it cannot be used."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RadRetrieveError(f"--scrubber {spec!r}: give it as module:callable (e.g. mysite.phi:scrub)")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - the site's module may fail in any way on import
        raise RadRetrieveError(f"--scrubber {spec}: cannot import {module_name} ({type(exc).__name__})") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)  # type: ignore[assignment]
        if fn is None:
            raise RadRetrieveError(f"--scrubber {spec}: {module_name} has no {attr}")
    if not callable(fn):
        raise RadRetrieveError(f"--scrubber {spec}: {attr} is not callable")
    return fn  # type: ignore[return-value]


def scrub(text: str, scrubber: Scrubber | None, spec: str = "the scrubber") -> str:
    """Run the site scrubber on a text that was already redacted; a failing scrubber stops the job, since
    storing the text unscrubbed is what it is there to prevent."""
    if scrubber is None or not text:
        return text
    try:
        out = scrubber(text)
    except Exception as exc:  # noqa: BLE001 - site code
        raise RadRetrieveError(f"--scrubber {spec} failed on a text ({type(exc).__name__}); nothing stored") from None
    if not isinstance(out, str):
        raise RadRetrieveError(f"--scrubber {spec} returned {type(out).__name__}, not text")
    return out
