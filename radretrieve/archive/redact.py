"""Free-text redaction: identifiers are removed from every text before anything is stored or shown
(docs/guide/patient-data.md; docs/THREAT_MODEL.md), then an optional site scrubber (`--scrubber module:callable`) runs.

Texts redacted: report texts (sidecars, DICOM SR, `--reports`, manifest text), StudyDescription,
SeriesDescription and BodyPartExamined. Two kinds of identifier are removed, each match becoming `[REDACTED]`:

- the study's own header identifiers (`PatientIds`: PatientName, PatientID, OtherPatientIDs, AccessionNumber,
  PatientBirthDate) in any spelling: both sides folded (Unicode form, accents transliterated, case), names in
  any order, with initials or joined, ids with any separators and leading zeros, the birth date in numeric
  and month-name formats (radretrieve.archive.deid.header);
- identifiers no header carries: e-mail addresses, phone numbers, dates, record numbers and other long ids,
  street addresses, and names written with a cue (radretrieve.archive.deid.freetext).

`PatientIds` is the only place header identifiers live: read from headers for this purpose, used by `assemble`
(radretrieve.archive.scanner) and dropped there; its repr never shows a value, so a log line cannot leak one.
The detectors are imported on the first text redacted, so importing this module (every reader process does)
costs nothing.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from radretrieve.foundation.errors import RadRetrieveError

REDACTED = "[REDACTED]"

Scrubber = Callable[[str], str]  # a site's own rules: text -> text


@dataclass(frozen=True)
class PatientIds:
    """Identifiers read from a study's headers (or a manifest row's identifier columns), for redaction only;
    never stored, shown or logged."""

    # PatientName values: DICOM PN (Family^Given^Middle^...), or "Family, Given" / "Given Family"
    names: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()  # PatientID, OtherPatientIDs (record numbers), any separators
    accessions: frozenset[str] = frozenset()  # AccessionNumber
    # PatientBirthDate: DICOM DA (YYYYMMDD), YYYY-MM-DD, or DD.MM.YYYY / DD/MM/YYYY / MM/DD/YYYY (both readings)
    birth_dates: frozenset[str] = frozenset()

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


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching spans as one (a name next to its id becomes one [REDACTED])."""
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def identifier_spans(text: str, ids: PatientIds = NO_IDS) -> list[tuple[int, int]]:
    """Spans of `text` that hold an identifier: one of `ids` in any spelling, or one that no header carries.
    Spans inside an earlier `[REDACTED]` are dropped, so redacting twice changes nothing."""
    from radretrieve.archive.deid.freetext import freetext_spans
    from radretrieve.archive.deid.header import header_spans

    done = [(m.start(), m.end()) for m in re.finditer(re.escape(REDACTED), text)]
    spans = header_spans(text, ids) + freetext_spans(text)
    return _merged([s for s in spans if s[1] > s[0] and not any(a <= s[0] and s[1] <= b for a, b in done)])


def redact(text: str, ids: PatientIds = NO_IDS) -> str:
    """`text` with every identifier replaced by [REDACTED]: those of `ids` in any spelling, and those found
    in free text with no header (radretrieve.archive.deid)."""
    if not text or not text.strip():
        return text
    out, last = [], 0
    for start, end in identifier_spans(text, ids):
        out += [text[last:start], REDACTED]
        last = end
    return "".join(out) + text[last:]


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
