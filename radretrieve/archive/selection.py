"""Series selection: which DICOM series are embedded, and why the others are skipped.

Default rules (each has a reason name; skipped series are recorded with stage `select` and the reason as
their error type, so every input is accounted for):

- non-image objects, by SOP Class UID or Modality: Segmentation (SEG), RTStructure (RTSTRUCT), RTDose
  (RTDOSE), RTPlan (RTPLAN and RT records), StructuredReport (SR: read as the study's report instead),
  KeyObject (KO), PresentationState (PR), EncapsulatedDocument (DOC: PDF, CDA, STL), RawData, Registration
  (REG, FID);
- Localizer: ImageType LOCALIZER or SCOUT, a SeriesDescription naming a localizer/scout/topogram/surview, or
  a CT/MR/PT series of at most `scout_max_slices` slices in a sagittal or coronal plane;
- SecondaryCapture: secondary-capture SOP classes (dose reports, screenshots) and ImageType SCREEN SAVE.

Options: `--exclude FIELD=GLOB` skips matching series (reason Excluded); `--include FIELD=GLOB` keeps matching
series whatever a default rule says; `--include REASON` (e.g. `secondary-capture`) turns a default rule off.
FIELD is `sop_class`, `modality`, `image_type` (any of its values) or `description` (SeriesDescription, else
StudyDescription);
GLOB is an fnmatch pattern, case-insensitive. A rules file (`--selection FILE`, JSON or TOML) holds the same:
`{"include": [...], "exclude": [...], "defaults": true, "scout_max_slices": 3}`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radretrieve.foundation.errors import RadRetrieveError

FIELDS = ("sop_class", "modality", "image_type", "description")
EXCLUDED = "Excluded"
LOCALIZER = "Localizer"
SECONDARY_CAPTURE = "SecondaryCapture"
STRUCTURED_REPORT = "StructuredReport"
_SR = "1.2.840.10008.5.1.4.1.1.88."
_KEY_OBJECT = "1.2.840.10008.5.1.4.1.1.88.59"
# SR classes whose content tree is a report's text (the others, e.g. dose SRs, are skipped but not read).
REPORT_SR_CLASSES = frozenset({_SR + "11", _SR + "22", _SR + "33", _SR + "34", _SR + "35"})
SECONDARY_CAPTURE_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.7", *(f"1.2.840.10008.5.1.4.1.1.7.{i}" for i in "1234")}
)
ULTRASOUND_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2", "1.2.840.10008.5.1.4.1.1.3.1"}
    | {"1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.3"}  # retired classes still found in archives
)

# (reason, SOP Class UID prefixes, modalities): objects that are not images to embed.
NON_IMAGE: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "Segmentation",
        ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.5", "1.2.840.10008.5.1.4.1.1.66.7"),
        ("SEG",),
    ),
    ("RTStructure", ("1.2.840.10008.5.1.4.1.1.481.3",), ("RTSTRUCT",)),
    ("RTDose", ("1.2.840.10008.5.1.4.1.1.481.2",), ("RTDOSE",)),
    ("RTPlan", tuple(f"1.2.840.10008.5.1.4.1.1.481.{i}" for i in (4, 5, 6, 7, 8, 9)), ("RTPLAN", "RTRECORD")),
    ("KeyObject", (_KEY_OBJECT,), ("KO",)),
    (STRUCTURED_REPORT, (_SR,), ("SR",)),
    ("PresentationState", ("1.2.840.10008.5.1.4.1.1.11.",), ("PR",)),
    ("EncapsulatedDocument", ("1.2.840.10008.5.1.4.1.1.104.",), ("DOC",)),
    ("RawData", ("1.2.840.10008.5.1.4.1.1.66",), ()),  # exact UID: 66.x are matched above or below
    (
        "Registration",
        ("1.2.840.10008.5.1.4.1.1.66.1", "1.2.840.10008.5.1.4.1.1.66.2", "1.2.840.10008.5.1.4.1.1.66.3"),
        ("REG", "FID"),
    ),
)
LOCALIZER_TYPES = ("LOCALIZER", "SCOUT")
LOCALIZER_DESCRIPTIONS = ("*localizer*", "*localiser*", "*scout*", "*topogram*", "*surview*")
SCREEN_TYPES = ("SCREEN SAVE", "SCREENSHOT")
SCOUT_MODALITIES = frozenset({"CT", "MR", "PT"})
REASONS = tuple(r for r, _, _ in NON_IMAGE) + (LOCALIZER, SECONDARY_CAPTURE)


def reason_name(text: str) -> str | None:
    """'secondary-capture', 'SecondaryCapture', 'rt_dose' -> the reason it names, or None."""
    flat = re.sub(r"[-_\s]", "", text).lower()
    return next((r for r in REASONS if r.lower() == flat), None)


def sop_reason(sop_class: str, modality: str) -> str | None:
    """The default non-image reason of an object, by SOP class (exact, or a prefix ending in '.'), else Modality."""
    for reason, prefixes, _ in NON_IMAGE:
        for p in prefixes:
            if sop_class == p or (p.endswith(".") and sop_class.startswith(p)):
                return reason
    return next((reason for reason, _, mods in NON_IMAGE if modality in mods), None)


@dataclass(frozen=True)
class Pattern:
    """One `FIELD=GLOB` rule."""

    field: str  # one of FIELDS
    glob: str  # fnmatch pattern, matched case-insensitively

    def matches(self, s: SeriesFacts) -> bool:
        values = {"sop_class": (s.sop_class,), "modality": (s.modality,), "description": (s.description,)}
        candidates = values.get(self.field) or (*s.image_type, "\\".join(s.image_type))
        return any(fnmatch.fnmatchcase(v.lower(), self.glob.lower()) for v in candidates)

    def __str__(self) -> str:
        return f"{self.field}={self.glob}"


@dataclass(frozen=True)
class SelectionRules:
    """Which series are embedded (see the module docstring)."""

    include: tuple[Pattern, ...] = ()  # keep matching series whatever a default rule says
    exclude: tuple[Pattern, ...] = ()  # skip matching series (reason Excluded)
    disabled: frozenset[str] = frozenset()  # default rules turned off by `--include REASON`
    defaults: bool = True  # apply the default rules at all
    scout_max_slices: int = 3  # a CT/MR/PT series this short in a sagittal/coronal plane is a scout


@dataclass(frozen=True)
class SeriesFacts:
    """What selection looks at: allow-listed header values of a series (its first file) and its geometry."""

    sop_class: str  # SOPClassUID
    modality: str  # Modality (upper case)
    image_type: tuple[str, ...]  # ImageType values (upper case)
    description: str  # SeriesDescription, else StudyDescription ("" if none)
    slices: int  # single-frame files in the series
    normals: tuple[tuple[float, float, float], ...] = field(default=())  # slice normals of its files (LPS)


@dataclass(frozen=True)
class Skip:
    """Why a series is not embedded."""

    reason: str  # one of REASONS or EXCLUDED: the error type of its `select` record
    why: str  # what matched, for the message (never a header's free text)


def select(s: SeriesFacts, rules: SelectionRules) -> Skip | None:
    """None to embed the series, else why it is skipped."""
    for p in rules.exclude:
        if p.matches(s):
            return Skip(EXCLUDED, f"matches --exclude {p}")
    if any(p.matches(s) for p in rules.include) or not rules.defaults:
        return None
    found = _default(s, rules)
    return found if found is not None and found.reason not in rules.disabled else None


def _default(s: SeriesFacts, rules: SelectionRules) -> Skip | None:
    reason = sop_reason(s.sop_class, s.modality)
    if reason is not None:
        return Skip(reason, f"not an image to embed (SOP class {s.sop_class or '?'}, modality {s.modality or '?'})")
    if s.sop_class in SECONDARY_CAPTURE_CLASSES or any(t in SCREEN_TYPES for t in s.image_type):
        return Skip(SECONDARY_CAPTURE, "secondary or screen capture")
    hit = next((t for t in s.image_type if t in LOCALIZER_TYPES), None)
    if hit is not None:
        return Skip(LOCALIZER, f"ImageType {hit}")
    if any(fnmatch.fnmatchcase(s.description.lower(), g) for g in LOCALIZER_DESCRIPTIONS):
        return Skip(LOCALIZER, "its SeriesDescription names a localizer/scout")
    if s.modality in SCOUT_MODALITIES and 0 < s.slices <= rules.scout_max_slices and s.normals:
        if all(abs(n[2]) < 0.5 for n in s.normals):  # slice normal far from the body axis: not axial
            return Skip(LOCALIZER, f"{s.slices} slice(s) in a sagittal/coronal plane (a scout)")
    return None


def normal_of(orientation: Sequence[float] | None) -> tuple[float, float, float] | None:
    """Unit slice normal of an ImageOrientationPatient (row and column cosines), None if unknown."""
    if not orientation or len(orientation) != 6:
        return None
    n = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
    norm = float(np.linalg.norm(n))
    return tuple(float(v) / norm for v in n) if norm > 0 else None  # type: ignore[return-value]


# -- building rules from options and files -------------------------------------------------------------------
def parse_pattern(text: str, option: str) -> Pattern:
    name, sep, glob = text.partition("=")
    name = name.strip().lower().replace("-", "_")
    if not sep or name not in FIELDS or not glob.strip():
        raise RadRetrieveError(
            f"{option} {text!r}: give FIELD=PATTERN with FIELD one of {', '.join(FIELDS)}"
            + (f", or a reason ({', '.join(REASONS)})" if option == "--include" else "")
        )
    return Pattern(name, glob.strip())


def build_rules(
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    rules_file: Path | None = None,
) -> SelectionRules:
    """Rules from a rules file (if any) plus `--include`/`--exclude` values; one clear error line when bad."""
    data = read_rules_file(rules_file) if rules_file is not None else {}
    inc = [*_strings(data.get("include"), rules_file, "include"), *include]
    exc = [*_strings(data.get("exclude"), rules_file, "exclude"), *exclude]
    patterns, disabled = [], set()
    for text in inc:
        reason = reason_name(text) if "=" not in text else None
        if reason is not None:
            disabled.add(reason)
        else:
            patterns.append(parse_pattern(text, "--include"))
    defaults = data.get("defaults", True)
    max_slices = data.get("scout_max_slices", 3)
    if not isinstance(defaults, bool) or not isinstance(max_slices, int) or isinstance(max_slices, bool):
        raise RadRetrieveError(f"{rules_file}: 'defaults' must be true/false and 'scout_max_slices' a whole number")
    return SelectionRules(
        include=tuple(patterns),
        exclude=tuple(parse_pattern(t, "--exclude") for t in exc),
        disabled=frozenset(disabled),
        defaults=defaults,
        scout_max_slices=max_slices,
    )


def read_rules_file(path: Path) -> dict[str, Any]:
    """A rules file: JSON (.json) or TOML (.toml)."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RadRetrieveError(
            f"{path}: cannot read the selection rules ({exc.strerror or type(exc).__name__})"
        ) from None
    try:
        if Path(path).suffix.lower() == ".toml":
            import tomllib

            data: Any = tomllib.loads(raw)
        else:
            data = json.loads(raw)
    except ValueError as exc:
        raise RadRetrieveError(f"{path}: not valid {Path(path).suffix.lstrip('.') or 'JSON'} ({exc})") from None
    if not isinstance(data, dict):
        raise RadRetrieveError(f"{path}: the selection rules must be an object (include, exclude, defaults)")
    unknown = set(data) - {"include", "exclude", "defaults", "scout_max_slices"}
    if unknown:
        raise RadRetrieveError(f"{path}: unknown selection key(s) {', '.join(sorted(unknown))}")
    return data


def _strings(value: Any, path: Path | None, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RadRetrieveError(f"{path}: '{key}' must be a list of strings")
    return list(value)


DEFAULT_RULES = SelectionRules()
