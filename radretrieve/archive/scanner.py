"""Scan an archive folder (headers only) into studies and items; see the package docstring for keys."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from radretrieve.archive.dicom_header import PROJECTION_MODALITIES, DicomHeader, order_series, read_header
from radretrieve.archive.dicom_pixels import series_affine
from radretrieve.archive.identifiers import is_identifier_value, split_labels
from radretrieve.archive.links import is_inside, leaves_root, link_error
from radretrieve.archive.records import ArchiveError, ErrorRecord, Item, ScanResult, Study
from radretrieve.archive.redact import NO_IDS, PatientIds, Scrubber, merge_ids, redact, scrub
from radretrieve.archive.reports_file import ReportsTable
from radretrieve.archive.selection import (
    DEFAULT_RULES,
    STRUCTURED_REPORT,
    SelectionRules,
    SeriesFacts,
    Skip,
    normal_of,
    select,
)
from radretrieve.archive.volumes import canonical_geometry
from radretrieve.foundation.ids import item_id, normalise_relpath
from radretrieve.foundation.names import shown

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
SIDECAR_SUFFIXES = (".json", ".txt")


def file_format(rel: str) -> str:
    """'nifti', 'image', 'dicom' (known DICOM suffix), 'maybe-dicom' (no/numeric suffix) or 'other'."""
    name = PurePosixPath(rel).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    suffix = PurePosixPath(name).suffix
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in DICOM_SUFFIXES:
        return "dicom"
    if suffix == "" or suffix[1:].isdigit():  # DICOM files are often named by UID ("1.2.840.1234")
        return "maybe-dicom"
    return "other"


def stem_of(rel: str) -> str:
    """Path without its image/volume suffix ('a/b.nii.gz' -> 'a/b'); folders are returned unchanged."""
    lower = rel.lower()
    for suffix in NIFTI_SUFFIXES + IMAGE_SUFFIXES + DICOM_SUFFIXES:
        if lower.endswith(suffix):
            return rel[: -len(suffix)]
    return rel


@dataclass(frozen=True)
class ScanPolicy:
    """What a scan selects and how it treats free text (the `index` options of series selection and reports)."""

    selection: SelectionRules = DEFAULT_RULES  # which series are embedded (radretrieve.archive.selection)
    reports: ReportsTable | None = None  # `--reports FILE`: RIS texts joined by StudyInstanceUID/AccessionNumber
    scrubber: Scrubber | None = None  # `--scrubber module:callable`: site rules, run after the redaction
    scrubber_spec: str = ""  # its import path, for messages
    follow_links: bool = False  # `--follow-external-links`: follow links out of the root (archive.links)


DEFAULT_POLICY = ScanPolicy()


def make_policy(
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    selection_file: Path | None = None,
    reports_file: Path | None = None,
    scrubber: str | None = None,
    follow_links: bool = False,
) -> ScanPolicy:
    """The policy of the `index` options; each bad option is one clear error line, raised before any work."""
    from radretrieve.archive.redact import load_scrubber
    from radretrieve.archive.reports_file import read_reports
    from radretrieve.archive.selection import build_rules

    return ScanPolicy(
        selection=build_rules(include, exclude, selection_file),
        reports=read_reports(reports_file) if reports_file is not None else None,
        scrubber=load_scrubber(scrubber) if scrubber else None,
        scrubber_spec=scrubber or "",
        follow_links=follow_links,
    )


@dataclass
class Collector:
    """Accumulates items, errors and notes of one scan; `strict` turns the first error into an exception."""

    strict: bool = False
    log_paths: bool = True  # False: log the problem, not the file name (names can carry patient data)
    policy: ScanPolicy = DEFAULT_POLICY
    items: list[Item] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    notes: list[ErrorRecord] = field(default_factory=list)
    # StudyInstanceUID -> (path, text) of its structured reports, each redacted with its own header's ids
    sr_reports: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    identifier_columns: set[str] = field(default_factory=set)  # manifest/sidecar columns dropped as identifiers

    def skip(self, source: str, skip: Skip, files: int) -> None:
        """A series not selected: recorded (stage select, the reason as error type), never raised."""
        what = "read as the study's report" if skip.reason == STRUCTURED_REPORT else "skipped"
        source = shown(source)
        message = f"{source}: series of {files} file(s) {what} ({skip.reason}: {skip.why})"
        log.info("%s", message if self.log_paths else f"a series {what} ({skip.reason})")
        self.errors.append(ErrorRecord(source, "select", skip.reason, message))

    def error(self, exc: ArchiveError) -> None:
        if self.strict:
            raise exc
        log.warning("skipped %s", exc if self.log_paths else f"a file ({exc.error_type}, stage {exc.stage})")
        self.errors.append(ErrorRecord.from_error(exc))

    def note(self, source: str, note_type: str, message: str) -> None:
        source = shown(source)
        log.info("%s: %s", source if self.log_paths else "a file", message)
        self.notes.append(ErrorRecord(source, "scan", note_type, f"{source}: {message}"))


def walk(root: Path, sub: str = "", follow_links: bool = False, base: Path | None = None) -> list[str]:
    """Root-relative paths (sorted) of the non-hidden files under `root/sub`, and of the links to folders outside
    `base` (default `root`; `scan_file` records each as an `ExternalLink`).

    A link to a folder inside `base` is not walked (its target is, under its own name). With `follow_links`, a
    link to a folder outside it is walked, each real folder once, so a loop of links ends."""
    real_base = os.path.realpath(base if base is not None else root)
    out: list[str] = []
    seen: set[str] = set()
    tops = [str(root / sub if sub else root)]
    while tops:
        for dirpath, dirnames, filenames in os.walk(tops.pop()):
            kept = []
            for name in dirnames:
                full = os.path.join(dirpath, name)
                if name.startswith("."):
                    continue
                if not os.path.islink(full):
                    kept.append(name)
                    continue
                target = os.path.realpath(full)
                if is_inside(target, real_base):
                    continue
                if not follow_links:
                    out.append(normalise_relpath(os.path.relpath(full, root)))
                elif target not in seen:
                    seen.add(target)
                    tops.append(full)
            dirnames[:] = kept
            for name in filenames:
                if not name.startswith("."):
                    out.append(normalise_relpath(os.path.relpath(os.path.join(dirpath, name), root)))
    return sorted(out)


def _parent(rel: str) -> str:
    return normalise_relpath(str(PurePosixPath(rel).parent)) or "."


def _item(key: str, **fields: object) -> Item:
    return Item(item_id=item_id(key), item_key=key, **fields)  # type: ignore[arg-type]


MapFn = Callable[[Callable[[str], "FileScan"], Iterable[str]], Iterable["FileScan"]]


@dataclass(frozen=True)
class FileScan:
    """What scanning one file gave; plain data, so that reader processes can scan files in parallel."""

    rel: str  # the file, root-relative
    fmt: str  # file_format(rel)
    item: Item | None = None  # a NIfTI volume or a 2D image
    header: DicomHeader | None = None  # a DICOM file's allow-listed header
    error: tuple[str, str, str, str] | None = None  # ArchiveError(path, reason, error_type, stage)
    notes: tuple[ErrorRecord, ...] = ()  # Collector.notes made while scanning it


def scan_file(root: Path, rel: str, follow_links: bool = False, base: Path | None = None) -> FileScan:
    """Scan one file's header; never raises for bad input. A link out of the allowed root (`base`, default the
    archive root: radretrieve.archive.links) is not opened unless `follow_links`."""
    fmt = file_format(rel)
    notes = Collector()
    if not follow_links and leaves_root(root, rel, base):
        exc = link_error(rel)
        return FileScan(rel, fmt, error=(exc.path, exc.reason, exc.error_type, exc.stage))
    try:
        if fmt == "nifti":
            return FileScan(rel, fmt, item=scan_nifti(root, rel, notes), notes=tuple(notes.notes))
        if fmt == "image":
            return FileScan(rel, fmt, item=scan_image(root, rel))
        if fmt in ("dicom", "maybe-dicom"):
            return FileScan(rel, fmt, header=read_header(root / rel, rel))
    except ArchiveError as exc:
        return FileScan(rel, fmt, error=(exc.path, exc.reason, exc.error_type, exc.stage))
    except OSError as exc:
        return FileScan(
            rel, fmt, error=(rel, f"cannot read file ({exc.strerror or type(exc).__name__})", "CorruptFile", "scan")
        )
    return FileScan(rel, fmt)


def collect_files(
    root: Path, rels: Iterable[str], col: Collector, map_fn: MapFn = map, base: Path | None = None
) -> None:
    """Scan files (root-relative, or absolute for manifest entries outside the root) into `col`.

    `map_fn`: how `scan_file` is mapped over the files, in order (e.g. a process pool's `imap`); `base`: the
    allowed root of the files when it is not the archive root (a manifest row's folder).
    """
    fn = functools.partial(scan_file, root, follow_links=col.policy.follow_links, base=base)
    collect_scans(map_fn(fn, rels), col)


def collect_scans(scans: Iterable[FileScan], col: Collector) -> None:
    """Files scanned by `scan_file` (here, in reader processes, or from a server's metadata) into `col`."""
    dicom: list[DicomHeader] = []
    for res in scans:
        col.notes.extend(res.notes)
        if res.error is not None:
            exc = ArchiveError(*res.error)
            if res.fmt == "maybe-dicom" and exc.error_type == "CorruptFile":
                log.debug("ignored %s: not DICOM", shown(res.rel))  # READMEs, licences and such without a suffix
            else:
                col.error(exc)
        elif res.header is not None:
            dicom.append(res.header)
        elif res.item is not None:
            col.items.append(res.item)
    group_dicom(dicom, col)


def scan_nifti(root: Path, rel: str, col: Collector) -> Item:
    """A NIfTI volume from its header (the data is not read)."""
    import nibabel as nib

    if (root / rel).stat().st_size == 0:
        raise ArchiveError(rel, "empty file (0 bytes)", "EmptyFile", "scan")
    try:
        img = nib.load(root / rel)
        shape, zooms, affine = img.shape, img.header.get_zooms(), img.affine
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on garbage
        raise ArchiveError(rel, f"not a readable NIfTI file ({type(exc).__name__})", "CorruptFile", "scan") from None
    if len(shape) == 4 and shape[3] > 1:
        col.note(rel, "FirstVolume", f"4D NIfTI with {shape[3]} volumes: only the first is used")
    if len(shape) < 2 or len(shape) > 4 or 0 in shape:
        raise ArchiveError(rel, f"NIfTI has unsupported shape {tuple(shape)}", "CorruptFile", "scan")
    shape3 = (tuple(shape) + (1,))[:3]
    zyx, spacing = canonical_geometry(shape3, zooms, affine, rel)
    key = "file:" + rel
    return _item(
        key,
        kind="volume",
        study_key="",  # assigned by assign_studies: only a real key groups files into a study
        series_key=key,
        source=rel,
        files=(rel,),
        fmt="nifti",
        shape=zyx,
        spacing=spacing,
    )


def scan_image(root: Path, rel: str) -> Item:
    """A 2D image from its header (PIL opens lazily; pixels are decoded at read time)."""
    from PIL import Image

    if (root / rel).stat().st_size == 0:
        raise ArchiveError(rel, "empty file (0 bytes)", "EmptyFile", "scan")
    try:
        with Image.open(root / rel) as img:
            width, height = img.size
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ...
        raise ArchiveError(rel, f"not a readable image ({type(exc).__name__})", "CorruptFile", "scan") from None
    key = "file:" + rel
    return _item(
        key,
        kind="image",
        study_key="",  # assigned by assign_studies
        series_key=key,
        source=rel,
        files=(rel,),
        fmt="image",
        shape=(height, width),
        spacing=(1.0, 1.0),
    )


def scan_image_stack(rels: list[str]) -> Item:
    """Several image files forming one volume, in the given slice order (manifest `a.png;b.png`)."""
    source = ";".join(rels)
    key = "files:" + source
    return _item(key, kind="volume", study_key="", series_key=key, source=source, files=tuple(rels), fmt="image")


def _dicom_fields(h: DicomHeader, group: list[DicomHeader] | None = None) -> dict[str, object]:
    group = group or [h]
    return {
        "study_key": h.study_uid,  # "" without a StudyInstanceUID: assigned by assign_studies
        "fmt": "dicom",
        "modality": h.modality,
        "body_part": h.body_part,
        "description": h.description,  # redacted by `assemble` with the study's identifiers
        "burned_in": any(g.burned_in for g in group),
        "patient": merge_ids(g.patient for g in group),
    }


def _facts(group: list[DicomHeader]) -> SeriesFacts:
    first = group[0]
    normals = tuple(n for n in (normal_of(h.orientation) for h in group) if n is not None)
    single = sum(1 for h in group if h.frames == 1)
    return SeriesFacts(first.sop_class, first.modality, first.image_type, first.description, single, normals)


def _group_source(group: list[DicomHeader]) -> str:
    if len(group) == 1:
        return group[0].path
    return normalise_relpath(os.path.commonpath([str(PurePosixPath(h.path).parent) for h in group])) or "."


def select_group(group: list[DicomHeader], col: Collector) -> list[DicomHeader]:
    """The headers of one series to embed (none when selection skips it); structured reports are kept aside
    as their study's report, and objects without pixels that were selected anyway are errors."""
    for h in group:
        if h.report:
            col.sr_reports[h.study_uid].append((h.path, redact(h.report, h.patient)))
    skip = select(_facts(group), col.policy.selection)
    if skip is not None:
        col.skip(_group_source(group), skip, len(group))
        return []
    for h in group:
        if not h.rows or not h.cols:
            col.error(
                ArchiveError(h.path, "DICOM object has no pixel data (selected by --include)", "NoPixelData", "scan")
            )
    return [h for h in group if h.rows and h.cols]


def group_dicom(headers: list[DicomHeader], col: Collector) -> None:
    """Group DICOM headers into series (SeriesInstanceUID), select series, and make image/volume items."""
    by_series: dict[str, list[DicomHeader]] = defaultdict(list)
    for h in headers:
        by_series[h.series_uid or "file:" + h.path].append(h)
    for series_key in sorted(by_series):
        group = select_group(sorted(by_series[series_key], key=lambda h: h.path), col)
        if not group:
            continue
        single = [h for h in group if h.frames == 1]
        for h in group:
            if h.frames > 1 or len(single) == 1 or h.modality in PROJECTION_MODALITIES:
                col.items.append(_dicom_file_item(h, series_key))
        if len(single) > 1 and single[0].modality not in PROJECTION_MODALITIES:
            try:
                col.items.append(_series_item(single, series_key, col))
            except ArchiveError as exc:
                col.error(exc)


def _dicom_file_item(h: DicomHeader, series_key: str) -> Item:
    key = "dicom:" + h.sop_uid if h.sop_uid else "file:" + h.path
    kind = "volume" if h.frames > 1 else "image"
    shape = (h.frames, h.rows, h.cols) if h.frames > 1 else (h.rows, h.cols)
    spacing = ((h.thickness or 1.0),) + h.pixel_spacing if h.frames > 1 else h.pixel_spacing
    return _item(
        key,
        kind=kind,
        series_key=series_key,
        source=h.path,
        files=(h.path,),
        shape=shape,
        spacing=tuple(spacing),
        **_dicom_fields(h),
    )


def _series_item(single: list[DicomHeader], series_key: str, col: Collector) -> Item:
    folder = normalise_relpath(os.path.commonpath([str(PurePosixPath(h.path).parent) for h in single])) or "."
    order = order_series(single, folder)
    if order.gaps:
        col.note(folder, "SliceGap", f"{len(order.gaps)} gap(s) wider than 1.5x the median slice step")
    first = order.headers[0]
    affine = series_affine(list(order.headers), order.slice_spacing)
    zyx, spacing = canonical_geometry(
        (first.cols, first.rows, len(single)),
        (first.pixel_spacing[1], first.pixel_spacing[0], order.slice_spacing),
        affine,
        folder,
    )
    key = "dicom-series:" + series_key
    return _item(
        key,
        kind="volume",
        series_key=series_key,
        source=folder,
        files=tuple(h.path for h in order.headers),
        shape=zyx,
        spacing=spacing,
        **_dicom_fields(first, single),
    )


def read_sidecar(root: Path, rel: str, col: Collector) -> dict[str, object]:
    """Report/labels next to a file or folder: `<stem>.json` ({"text", "labels", "split", "study"}) or `<stem>.txt`."""
    stem = stem_of(rel)
    if stem in ("", "."):
        return {}
    json_path, txt_path = root / (stem + ".json"), root / (stem + ".txt")
    for side in (stem + ".json", stem + ".txt"):
        if (root / side).is_file() and not col.policy.follow_links and leaves_root(root, side):
            col.error(link_error(side))  # a report linked in from outside the archive is not read either
            return {}
    if json_path.is_file():
        try:
            data = json.loads(read_text(json_path, stem + ".json", col))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            col.error(
                ArchiveError(stem + ".json", f"unreadable sidecar ({type(exc).__name__})", "CorruptSidecar", "scan")
            )
            return {}
        raw = data.get("labels") if isinstance(data.get("labels"), dict) else {}
        labels, patient, dropped = split_labels({str(k): "" if v is None else str(v) for k, v in raw.items()})
        col.identifier_columns.update(dropped)
        study = str(data.get("study") or "")
        return {
            "study_origin": "identifier" if is_identifier_value(study, raw) else "",
            "text": str(data.get("text") or ""),
            "labels": labels,
            "patient": patient,
            "split": str(data.get("split") or ""),
            "study": str(data.get("study") or ""),
        }
    if txt_path.is_file():
        return {"text": read_text(txt_path, stem + ".txt", col).strip()}
    return {}


def read_text(path: Path, rel: str, col: Collector) -> str:
    """A report file as text: UTF-8 (a BOM is dropped), else Latin-1 with a note (every byte decodes, so a
    report from an old RIS export is kept rather than lost; the note says it may be mis-decoded)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        col.note(rel, "NotUTF8", "not UTF-8: decoded as Latin-1")
        return raw.decode("latin-1")


def with_meta(item: Item, meta: Mapping[str, object]) -> Item:
    """Attach report text, labels, split and study override; labels fill missing modality/body part."""
    labels = {str(k): "" if v is None else str(v) for k, v in dict(meta.get("labels") or {}).items()}  # type: ignore[call-overload]
    patient = meta.get("patient")
    return dataclasses.replace(
        item,
        patient=item.patient | patient if isinstance(patient, PatientIds) else item.patient,
        text=str(meta.get("text") or item.text),
        labels=labels or item.labels,
        split=str(meta.get("split") or item.split),
        study_key=str(meta.get("study") or item.study_key),
        study_origin=str(meta.get("study_origin") or ("given" if meta.get("study") else item.study_origin)),
        modality=item.modality or labels.get("modality", ""),
        body_part=item.body_part or labels.get("body_part", labels.get("region", "")),
    )


def assign_studies(root: Path, items: list[Item], col: Collector) -> tuple[list[Item], dict[str, str]]:
    """Give every item without a study key one, and return the reports of folder studies.

    Only a real key groups items into one study: a StudyInstanceUID, a manifest or JSON-sidecar `study`, or a
    sidecar beside the folder that holds the item (`case1/` + `case1.txt` or `case1.json`: every item directly
    in `case1/` is study "case1", the sidecar its report). Anything else is a study of its own, keyed by its
    item key, so a flat folder of `x.jpg` + `x.txt` pairs gives one study (and one report) per image.
    """
    reports: dict[str, str] = {}
    sidecars: dict[str, dict[str, object]] = {}  # folder -> its sidecar ({} if none), read once
    out = []
    for item in items:
        if item.study_key:
            out.append(item)
            continue
        folder = _parent(item.source.split(";")[0])
        if folder not in sidecars:
            sidecars[folder] = read_sidecar(root, folder, col) if folder != "." else {}
        meta = sidecars[folder]
        if meta:
            key = str(meta.get("study") or folder)
            reports[key] = str(meta.get("text") or "")
            origin = str(meta.get("study_origin") or ("given" if meta.get("study") else ""))
            patient = meta.get("patient")
            ids = item.patient | patient if isinstance(patient, PatientIds) else item.patient
            out.append(dataclasses.replace(item, study_key=key, study_origin=origin, patient=ids))
        else:
            out.append(dataclasses.replace(item, study_key=item.item_key))
    return out, reports


def assemble(root: Path, col: Collector, reports: Mapping[str, str] | None = None) -> ScanResult:
    """Group items into studies (see `assign_studies`); drop duplicate keys (the same instance stored twice).

    `reports`: study key -> the study's own report (a folder sidecar), put before its items' texts."""
    col.items, found = assign_studies(root, col.items, col)
    reports = {**found, **(reports or {})}
    by_key: dict[str, Item] = {}
    for item in sorted(col.items, key=lambda i: (i.item_key, i.source)):
        if item.item_key in by_key:
            # not the other file's path: only a record's own source is hashed in errors/ (archive.anonymise)
            col.note(item.source, "DuplicateItem", "same source key as another file of the archive; ignored")
            continue
        by_key[item.item_key] = item
    by_study: dict[str, list[Item]] = defaultdict(list)
    for item in by_key.values():
        by_study[item.study_key].append(item)
    studies = tuple(
        _study(key, by_study[key], _own_reports(key, by_study[key], reports, col)) for key in sorted(by_study)
    )
    studies = tuple(sorted((shown_study(redact_study(identifying_key(s), col.policy)) for s in studies), key=_key))
    order = lambda r: (r.source, r.error_type, r.message)  # noqa: E731
    return ScanResult(
        root=root,
        studies=studies,
        errors=tuple(sorted(col.errors, key=order)),
        notes=tuple(sorted(col.notes, key=order)),
        identifier_columns=tuple(sorted(col.identifier_columns)),
    )


def _key(study: Study) -> str:
    return study.key


def identifying_key(study: Study) -> Study:
    """The study, its key marked identifying (hashed even with --keep-paths: radretrieve.archive.anonymise)
    when a `study` value given by a manifest or sidecar holds an identifier: one of the study's own (its
    headers' PatientID or name, its identifier columns or labels), or a date, a name, an e-mail address or
    a street address that the free-text redaction finds. Runs before `redact_study`, while the items still
    hold their identifiers."""
    if not any(i.study_origin == "given" for i in study.items):
        return study
    if not _holds_identifier(study.key, merge_ids(i.patient for i in study.items)):
        return study
    items = tuple(dataclasses.replace(i, study_origin="identifier") for i in study.items)
    return dataclasses.replace(study, items=items)


def _holds_identifier(key: str, ids: PatientIds) -> bool:
    """Whether a study key holds one of `ids` (a record or accession number, or a birth date, by its letters and
    digits; a name part as a word), or a free-text identifier of a kind that never makes a plain dataset key.
    Record-number and phone shapes are left out of the latter: dataset keys look like them (`ROCO_00012`,
    `CT-2021-001`) and would all be hashed; a record number is caught as one of `ids`."""
    from radretrieve.archive.deid.freetext import addresses, dates, emails, names

    flat = _alnum(key)
    numbers = [_alnum(v) for v in (*ids.ids, *ids.accessions, *ids.birth_dates)]
    if any(len(n) >= 4 and n in flat for n in numbers):
        return True
    words = {w.lower() for w in re.findall(r"[^\W\d_]+", key)}
    parts = {p.lower() for n in ids.names for p in re.split(r"[\^,\s]+", n) if len(p) >= 3}
    return bool(words & parts) or any(next(detect(key), None) for detect in (dates, names, emails, addresses))


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def shown_study(study: Study) -> Study:
    """The study with its path-derived strings in their shown form (radretrieve.foundation.names): a file name
    that is not UTF-8 is indexed, not lost, and stored as valid UTF-8. `files` keeps the real names; the ids
    stay (an item id is the hash of the shown key)."""

    def item(i: Item) -> Item:
        fields = (i.item_key, i.source, i.series_key, i.study_key)
        if all(f.isascii() for f in fields):
            return i
        return dataclasses.replace(
            i,
            item_key=shown(i.item_key),
            source=shown(i.source),
            series_key=shown(i.series_key),
            study_key=shown(i.study_key),
        )

    return dataclasses.replace(study, key=shown(study.key), items=tuple(item(i) for i in study.items))


def _own_reports(key: str, items: list[Item], sidecars: Mapping[str, str], col: Collector) -> list[str]:
    """A study's own reports, in this order: its folder sidecar, its structured reports (by file), and the
    `--reports` texts joined by its StudyInstanceUID or AccessionNumber."""
    texts = [sidecars.get(key, "")]
    texts += [text for _, text in sorted(col.sr_reports.get(key, ()))]
    if col.policy.reports is not None:
        accessions = merge_ids(i.patient for i in items).accessions
        texts += col.policy.reports.texts(key, accessions)
    return [t for t in texts if t]


def redact_study(study: Study, policy: ScanPolicy) -> Study:
    """The study with its identifiers removed from its report and its items' texts and descriptions, then the
    site scrubber run on them; the items no longer hold the identifiers afterwards."""
    ids: PatientIds = merge_ids(i.patient for i in study.items)
    cache: dict[str, str] = {}

    def clean(text: str) -> str:
        if text not in cache:
            cache[text] = scrub(redact(text, ids), policy.scrubber, policy.scrubber_spec)
        return cache[text]

    def clean_labels(labels: Mapping[str, str]) -> dict[str, str]:
        return {k: clean(v) for k, v in labels.items()}  # manifest labels are free text too

    items = tuple(
        dataclasses.replace(
            i,
            text=clean(i.text),
            description=clean(i.description),
            body_part=clean(i.body_part),
            labels=clean_labels(i.labels),
            patient=NO_IDS,
        )
        for i in study.items
    )
    return dataclasses.replace(study, items=items, report=clean(study.report), labels=clean_labels(study.labels))


def _study(key: str, items: list[Item], own_reports: list[str] | str = "") -> Study:
    own = [own_reports] if isinstance(own_reports, str) else own_reports
    texts = list(dict.fromkeys(t for t in [*own, *(i.text for i in items)] if t))
    labels: dict[str, str] = {}
    for item in items:
        for k, v in item.labels.items():
            labels.setdefault(k, v)
    split = next((i.split for i in items if i.split), "")
    return Study(key=key, items=tuple(items), report="\n\n".join(texts), labels=labels, split=split)


def scan_folder(
    root: Path, strict: bool = False, map_fn: MapFn = map, log_paths: bool = True, policy: ScanPolicy = DEFAULT_POLICY
) -> ScanResult:
    """Walk `root`, scan every image/volume file, pair sidecar reports, group into studies."""
    col = Collector(strict=strict, log_paths=log_paths, policy=policy)
    collect_files(root, walk(root, follow_links=policy.follow_links), col, map_fn)
    col.items = [with_meta(item, read_sidecar(root, _sidecar_base(item), col)) for item in col.items]
    return assemble(root, col)


@dataclass(frozen=True)
class PartialScan:
    """A scan of part of an archive (some of its files, or some manifest rows), for a scan spread over many
    processes or machines: items with their sidecars and study keys, not yet grouped into studies."""

    items: tuple[Item, ...]  # with text, labels and study keys
    errors: tuple[ErrorRecord, ...]
    notes: tuple[ErrorRecord, ...]
    reports: Mapping[str, str] = field(default_factory=dict)  # study key -> its folder-sidecar report
    rows: int = 0  # manifest rows scanned (manifest parts)
    rows_used: int = 0  # of those, rows that gave an item
    sr_reports: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # Collector.sr_reports
    identifier_columns: tuple[str, ...] = ()  # Collector.identifier_columns
    # Items still hold their identifiers (Item.patient): the redaction happens when the parts are merged.


def scan_part(
    root: Path, rels: Iterable[str], log_paths: bool = True, rules: SelectionRules = DEFAULT_RULES
) -> PartialScan:
    """Scan the files `rels` of the archive at `root` (headers only), as `scan_folder` scans a whole one."""
    col = Collector(log_paths=log_paths, policy=ScanPolicy(selection=rules))
    collect_files(root, rels, col)
    col.items = [with_meta(item, read_sidecar(root, _sidecar_base(item), col)) for item in col.items]
    items, reports = assign_studies(root, col.items, col)
    return partial(col, items, reports)


def partial(col: Collector, items: list[Item], reports: Mapping[str, str], rows: int = 0, used: int = 0) -> PartialScan:
    sr = {k: tuple(v) for k, v in col.sr_reports.items()}
    dropped = tuple(sorted(col.identifier_columns))
    return PartialScan(tuple(items), tuple(col.errors), tuple(col.notes), reports, rows, used, sr, dropped)


def merge_scans(root: Path, parts: Iterable[PartialScan], policy: ScanPolicy = DEFAULT_POLICY) -> ScanResult:
    """One ScanResult from the parts of an archive (items of one study may come from several parts)."""
    col = Collector(policy=policy)
    reports: dict[str, str] = {}
    rows = used = 0
    for part in parts:
        col.items.extend(part.items)
        col.errors.extend(part.errors)
        col.notes.extend(part.notes)
        reports.update(part.reports)
        for key, texts in part.sr_reports.items():
            col.sr_reports[key].extend(texts)
        col.identifier_columns.update(part.identifier_columns)
        rows, used = rows + part.rows, used + part.rows_used
    result = assemble(root, col, reports)
    return dataclasses.replace(result, rows=rows, rows_used=used) if rows else result


def _sidecar_base(item: Item) -> str:
    # A multi-file DICOM series is described by a sidecar named after its folder; anything else by its file.
    return item.source if item.fmt == "dicom" and len(item.files) > 1 else item.files[0]
