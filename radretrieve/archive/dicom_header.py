"""DICOM headers through a PHI allow-list, decoder checks, and slice ordering of a series.

PHI rule (docs/guide/patient-data.md): only the attributes in `ALLOWED_TAGS` reach a record that can be stored or shown.
Headers are read with pydicom's `specific_tags` so that every other attribute is skipped by the parser
itself, not filtered afterwards. The identifiers in `IDENTIFIER_TAGS` are read too, for one purpose only:
removing them from the study's free text (radretrieve.archive.redact); they are held in a `PatientIds`
whose repr shows no value, and dropped once the scan has redacted its texts.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from radretrieve.archive.records import ArchiveError
from radretrieve.archive.redact import NO_IDS, PatientIds, redact
from radretrieve.archive.selection import REPORT_SR_CLASSES, SECONDARY_CAPTURE_CLASSES, ULTRASOUND_CLASSES, sop_reason

log = logging.getLogger(__name__)

# The only attributes that may reach an output: technical and linking attributes, no identifiers.
ALLOWED_TAGS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",  # the display window the scanner chose: the `clip` profile's CT window
    "WindowWidth",
    "ImageType",  # ORIGINAL/DERIVED, LOCALIZER ...: series selection
    "BurnedInAnnotation",  # YES: the pixels carry text (patient data)
)
# Read for redaction only (never stored): see the module docstring.
IDENTIFIER_TAGS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "AccessionNumber",
    "PatientBirthDate",
)

# Modalities whose single-frame files are separate 2D images even when a series has several.
PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "XA", "RF", "IO", "PX", "OT", "SC", "US", "XC", "ES", "NM"})

# What to install for each family of compressed transfer syntaxes (named in MissingDecoder errors).
_PLUGIN_HINT = (
    "install one of: pylibjpeg with pylibjpeg-libjpeg/pylibjpeg-openjpeg/pylibjpeg-rle, "
    "python-gdcm, or pillow (JPEG baseline/JPEG 2000 only)"
)


@dataclass(frozen=True)
class DicomHeader:
    """The allow-listed header of one DICOM file."""

    path: str  # root-relative path
    sop_uid: str  # SOPInstanceUID ("" if missing)
    study_uid: str  # StudyInstanceUID ("" if missing)
    series_uid: str  # SeriesInstanceUID ("" if missing)
    modality: str  # Modality ("" if missing)
    body_part: str  # BodyPartExamined
    description: str  # SeriesDescription, else StudyDescription
    instance: int | None  # InstanceNumber
    position: tuple[float, float, float] | None  # ImagePositionPatient (mm, LPS)
    orientation: tuple[float, ...] | None  # ImageOrientationPatient: row then column direction cosines
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) in mm; (1, 1) if unknown
    thickness: float | None  # SpacingBetweenSlices, else SliceThickness (mm)
    rows: int  # Rows
    cols: int  # Columns
    frames: int  # NumberOfFrames (1 for single-frame files)
    sop_class: str = ""  # SOPClassUID ("" if missing)
    image_type: tuple[str, ...] = ()  # ImageType values, upper case
    burned_in: bool = False  # the pixels may carry text: BurnedInAnnotation YES, or a capture/ultrasound class
    report: str = ""  # a structured report's text (not yet redacted); "" for images
    patient: PatientIds = field(default=NO_IDS, repr=False, compare=False)  # for redaction only
    window: tuple[float, float] | None = None  # first (WindowCenter, WindowWidth) pair; None if absent/invalid


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _text(ds: object, name: str) -> str:
    value = getattr(ds, name, "")
    return " ".join(str(value).split()) if value is not None else ""


def _number(ds: object, name: str, cast: type) -> object:
    try:
        value = getattr(ds, name, None)
        return None if value is None or value == "" else cast(value)
    except (TypeError, ValueError):
        return None


def read_header(path: Path, rel: str) -> DicomHeader:
    """Read the allow-listed header of `path` (no pixels). Raises ArchiveError for unusable files."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if path.stat().st_size == 0:
        raise ArchiveError(rel, "empty file (0 bytes)", "EmptyFile", "scan")
    try:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_tags())
        except InvalidDicomError:  # no preamble/'DICM': old files without file meta
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_tags(), force=True)
        ds = _Memo(ds)
        rows, cols = _number(ds, "Rows", int), _number(ds, "Columns", int)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on garbage input
        raise ArchiveError(rel, f"not a readable DICOM file ({type(exc).__name__})", "CorruptFile", "scan") from None
    if not getattr(ds, "SOPInstanceUID", None) and not getattr(ds, "SeriesInstanceUID", None) and rows is None:
        raise ArchiveError(rel, "not a DICOM file (no DICOM attributes found)", "CorruptFile", "scan")
    sop_class, modality = _text(ds, "SOPClassUID"), _text(ds, "Modality").upper()
    if sop_reason(sop_class, modality) is not None:  # not an image: series selection records it (stage select)
        report = ""
        if sop_class in REPORT_SR_CLASSES or (not sop_class and modality == "SR"):
            from radretrieve.archive.sr import read_sr_text

            report = read_sr_text(path, rel)
        return _header(ds, rel, int(rows or 0), int(cols or 0), report=report)
    if not rows or not cols:
        raise ArchiveError(rel, "DICOM object has no pixel data (e.g. a structured report)", "NoPixelData", "scan")
    check_decoder(ds, rel, "scan")
    return _header(ds, rel, int(rows), int(cols))


@functools.cache
def _tags() -> list[int]:
    """The tags of `ALLOWED_TAGS` and `IDENTIFIER_TAGS` as numbers, looked up once: pydicom turns every keyword
    given to `specific_tags` into its tag on every read (about a fifth of a header read's time)."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.tag import Tag

    return [Tag(tag_for_keyword(name)) for name in ALLOWED_TAGS + IDENTIFIER_TAGS]


# Converted for each file alone, never remembered across files (`_Memo`): free text (a description or body part
# may hold a name until it is redacted) and per-instance values (never met again). Identifiers are not in
# ALLOWED_TAGS, so MEMO_TAGS, the attributes a series repeats on every slice, hold none.
PER_FILE_TAGS = (
    "StudyDescription",  # free text
    "SeriesDescription",
    "BodyPartExamined",
    "SOPInstanceUID",  # per instance
    "InstanceNumber",
    "ImagePositionPatient",
)
MEMO_TAGS = tuple(name for name in ALLOWED_TAGS if name not in PER_FILE_TAGS)
_MEMO_SIZE = 4096  # distinct raw values remembered per process (a few per series)
_MEMO_BYTES = 1024  # longer raw values are converted each time: a hostile file's huge values are not kept
_CHARSET_CHARS = 256  # a file whose character set is longer is read without the memo
_memo: dict[tuple[object, ...], object] = {}
_memo_tags: dict[str, int] = {}  # {keyword: tag} of MEMO_TAGS, set on first use


def clear_memo() -> None:
    """Forget every remembered value (a benchmark's cold start)."""
    _memo.clear()


class _Memo:
    """A parsed header whose values of `MEMO_TAGS` are converted once per distinct raw value in the process.

    The slices of a series repeat most of their attributes byte for byte (the study and series UIDs,
    orientation, spacing, sizes), and pydicom's conversion of a raw value was about a quarter of the header scan
    (docs/guide/speed.md). A value is keyed by its tag, VR, bytes, byte order, VR encoding and the file's
    character set values, everything its conversion depends on, so it is the value pydicom would give. Every
    other attribute, identifiers and free text included, is pydicom's own, converted for this file alone."""

    __slots__ = ("_ds", "_charset", "_raw")

    def __init__(self, ds: object) -> None:
        from pydicom.dataelem import RawDataElement

        if not _memo_tags:
            tags = dict(zip(ALLOWED_TAGS, _tags()))
            _memo_tags.update((name, tags[name]) for name in MEMO_TAGS)
        self._ds, self._raw = ds, RawDataElement
        self._charset = _charset_key(ds)

    def __getattr__(self, name: str) -> object:
        tag = _memo_tags.get(name)
        if tag is None or self._charset is None:  # not remembered: pydicom's own
            return getattr(self._ds, name)
        raw = self._ds.get_item(tag)  # type: ignore[attr-defined]
        if raw is None:
            raise AttributeError(name)
        if type(raw) is not self._raw or raw.VR == "SQ" or raw.value is None or len(raw.value) > _MEMO_BYTES:
            return self._ds[tag].value  # type: ignore[index]
        key = (tag, raw.VR, raw.value, raw.is_little_endian, raw.is_implicit_VR, self._charset)
        try:
            return _memo[key]
        except KeyError:
            value = self._ds[tag].value  # type: ignore[index]
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[key] = value
        return value


def _charset_key(ds: object) -> tuple[str, ...] | None:
    """The file's SpecificCharacterSet values as a tuple (a value and a list never compare equal), or None when
    they are too long to be kept in a key (the file is read without the memo)."""
    value = getattr(ds, "SpecificCharacterSet", None)
    values = (
        tuple(str(v) for v in value)
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
        else (str(value or ""),)
    )
    return values if sum(len(v) for v in values) <= _CHARSET_CHARS else None


def _values(ds: object, name: str) -> tuple[str, ...]:
    """A possibly multi-valued attribute as cleaned strings ('' values dropped)."""
    value = getattr(ds, name, None)
    if value is None or value == "":
        return ()
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return tuple(v for v in (" ".join(str(x).split()) for x in items) if v)


def patient_ids(ds: object) -> PatientIds:
    """The identifiers of a header, for redaction (radretrieve.archive.redact)."""
    others = _values(ds, "OtherPatientIDs")
    for item in getattr(ds, "OtherPatientIDsSequence", None) or ():
        others += _values(item, "PatientID")
    return PatientIds(
        names=frozenset(_values(ds, "PatientName")),
        ids=frozenset(_values(ds, "PatientID") + others),
        accessions=frozenset(_values(ds, "AccessionNumber")),
        birth_dates=frozenset(_values(ds, "PatientBirthDate")),
    )


@functools.lru_cache(maxsize=1024)
def _redacted(value: str, ids: PatientIds) -> str:
    """A free-text attribute with identifiers removed; once per value and patient (every slice repeats it)."""
    return redact(value, ids)


def _burned_in(ds: object, sop_class: str, modality: str) -> bool:
    """May the pixels carry text? BurnedInAnnotation YES, or a class that typically does (captures, US)."""
    if _text(ds, "BurnedInAnnotation").upper() == "YES":
        return True
    return sop_class in SECONDARY_CAPTURE_CLASSES or sop_class in ULTRASOUND_CLASSES or modality in ("US", "SC")


def _header(ds: object, rel: str, rows: int, cols: int, with_ids: bool = True, report: str = "") -> DicomHeader:
    """The allow-listed header; `with_ids=False` (reader workers) skips UIDs and texts, which cost time."""
    text = _text if with_ids else (lambda _ds, _name: "")
    sop_class, modality = text(ds, "SOPClassUID"), text(ds, "Modality").upper()
    spacing = _floats(getattr(ds, "PixelSpacing", None), 2) or _floats(getattr(ds, "ImagerPixelSpacing", None), 2)
    thickness = _number(ds, "SpacingBetweenSlices", float) or _number(ds, "SliceThickness", float)
    patient = patient_ids(ds) if with_ids else NO_IDS
    return DicomHeader(
        path=rel,
        sop_uid=text(ds, "SOPInstanceUID"),
        study_uid=text(ds, "StudyInstanceUID"),
        series_uid=text(ds, "SeriesInstanceUID"),
        modality=modality,
        body_part=_redacted(text(ds, "BodyPartExamined"), patient),  # free text typed at the scanner
        description=text(ds, "SeriesDescription") or text(ds, "StudyDescription"),
        instance=_number(ds, "InstanceNumber", int),  # type: ignore[arg-type]
        position=_floats(getattr(ds, "ImagePositionPatient", None), 3),  # type: ignore[arg-type]
        orientation=_floats(getattr(ds, "ImageOrientationPatient", None), 6),
        pixel_spacing=spacing or (1.0, 1.0),  # type: ignore[arg-type]
        thickness=thickness if thickness and thickness > 0 else None,  # type: ignore[arg-type,operator]
        rows=rows,
        cols=cols,
        frames=max(1, _number(ds, "NumberOfFrames", int) or 1),  # type: ignore[operator]
        sop_class=sop_class,
        image_type=tuple(v.upper() for v in _values(ds, "ImageType")) if with_ids else (),
        burned_in=_burned_in(ds, sop_class, modality) if with_ids else False,
        report=report,
        patient=patient,
        window=_window(ds),
    )


def _window(ds: object) -> tuple[float, float] | None:
    """The first WindowCenter/WindowWidth pair (both may be multi-valued); None unless finite with width > 0."""
    pair = []
    for name in ("WindowCenter", "WindowWidth"):
        value = getattr(ds, name, None)
        if value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
            value = value[0] if len(value) else None
        try:
            pair.append(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    centre, width = pair
    return (centre, width) if np.isfinite(centre) and np.isfinite(width) and width > 0 else None


def check_decoder(ds: object, rel: str, stage: str) -> None:
    """Raise MissingDecoder if the file's transfer syntax has no installed pixel decoder."""
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if uid is None or not uid.is_compressed:
        return
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        raise ArchiveError(rel, f"unsupported transfer syntax {uid}", "MissingDecoder", stage) from None  # type: ignore[arg-type]
    if not available:
        name = getattr(uid, "name", str(uid))
        raise ArchiveError(rel, f"no decoder installed for '{name}': {_PLUGIN_HINT}", "MissingDecoder", stage)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SeriesOrder:
    """A validated slice order of one single-frame DICOM series."""

    headers: tuple[DicomHeader, ...]  # in ascending position along the slice normal (or InstanceNumber)
    slice_spacing: float  # mm between consecutive slices (median step), or thickness/1.0 when unknown
    gaps: tuple[int, ...]  # indices i where the step from slice i to i+1 exceeds 1.5x the median step


def order_series(headers: list[DicomHeader], series_path: str) -> SeriesOrder:
    """Order the slices of a series and check it is one stackable volume.

    Raises MixedSeries for mixed sizes or orientations and DuplicateSlices for repeated positions.
    """
    sizes = {(h.rows, h.cols) for h in headers}
    if len(sizes) > 1:
        found = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise ArchiveError(
            series_path, f"series of {len(headers)} files mixes slice sizes ({found})", "MixedSeries", "scan"
        )
    orients = {tuple(round(v, 3) for v in h.orientation) for h in headers if h.orientation}
    if len(orients) > 1:
        raise ArchiveError(series_path, f"series mixes {len(orients)} slice orientations", "MixedSeries", "scan")
    if all(h.position and h.orientation for h in headers):
        normal = np.cross(np.array(headers[0].orientation[:3]), np.array(headers[0].orientation[3:]))  # type: ignore[index]
        along = np.array([float(np.dot(normal, h.position)) for h in headers])  # type: ignore[arg-type]
        order = np.argsort(along, kind="stable")
        steps = np.diff(along[order])
        if steps.size and np.min(steps) < 1e-3:
            # positions, not the two files' paths: the message is kept in errors/, and only the series path
            # (the record's source) is hashed there (radretrieve.archive.anonymise)
            repeated = int(np.sum(steps < 1e-3))
            first = float(along[order[int(np.argmin(steps))]])
            raise ArchiveError(
                series_path,
                f"series has slices at duplicate positions ({repeated} repeated, the first at {first:.1f} mm)",
                "DuplicateSlices",
                "scan",
            )
    else:  # no geometry: fall back to InstanceNumber, then to the file name
        order = np.array(sorted(range(len(headers)), key=lambda i: (headers[i].instance or 0, headers[i].path)))
        steps = np.array([])
    ordered = tuple(headers[i] for i in order)
    median = float(np.median(steps)) if steps.size else (headers[0].thickness or 1.0)
    gaps = tuple(int(i) for i in np.nonzero(steps > 1.5 * median)[0]) if steps.size else ()
    if gaps:
        log.warning("%s: %d slice gap(s) wider than 1.5x the median step %.3g mm", series_path, len(gaps), median)
    return SeriesOrder(headers=ordered, slice_spacing=median, gaps=gaps)
