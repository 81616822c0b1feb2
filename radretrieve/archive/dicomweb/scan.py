"""The headers of a DICOMweb series (WADO-RS metadata), scanned by the folder scanner's own code.

Each instance's metadata (DICOM JSON, bulk data such as the pixels left out) is written as a header-only
DICOM file to a private temporary folder (`scratch`: numbered names, never the server's) and its header read
by the folder scanner's `read_header`, exactly as a file of an archive folder is; the file is removed at
once. So every rule of the folder scan applies to a DICOMweb archive unchanged (the PHI allow-list, series
grouping and slice order, SOP class rules). Instances are named `STUDY/SERIES/SOP.dcm` (checked UIDs only):
these virtual paths are the items' `files` and `source`, and what the reader fetches; they name no file.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.archive.dicom_header import read_header
from radretrieve.archive.dicomweb.client import FetchFailed, client_for, with_retries
from radretrieve.archive.dicomweb.listing import SERIES_UID, STUDY_UID, SeriesRef, first_value
from radretrieve.archive.dicomweb.scratch import local_name, private_folder, write_new
from radretrieve.archive.dicomweb.source import DicomWebSource
from radretrieve.archive.dicomweb.uids import is_uid, why_not_uid
from radretrieve.archive.records import ArchiveError, ErrorRecord, ScanResult
from radretrieve.archive.scanner import (
    DEFAULT_POLICY,
    Collector,
    FileScan,
    ScanPolicy,
    assemble,
    collect_scans,
)

SOP_UID = "00080018"
_DROPPED = {"7FE00010", "7FE00008", "7FE00009", "FFFCFFFC"}  # pixel data and padding: never needed for headers


@dataclass(frozen=True)
class SeriesScan:
    """What scanning one series gave: one FileScan per instance, or the error that stopped it."""

    ref: SeriesRef
    files: tuple[FileScan, ...] = ()
    error: ErrorRecord | None = None


def instance_path(study: str, series: str, sop: str) -> str:
    """The virtual archive path of an instance (what `split_path` reads back)."""
    return f"{study}/{series}/{sop}.dcm"


def split_path(rel: str) -> tuple[str, str, str]:
    """(study, series, SOP instance UID) of a virtual path made by `instance_path`; ValueError for anything
    else (so that no other text reaches a request URL)."""
    parts = rel.split("/")
    if len(parts) != 3 or not parts[2].endswith(".dcm"):
        raise ValueError("not a DICOMweb instance path")
    study, series, sop = parts[0], parts[1], parts[2][: -len(".dcm")]
    if not (is_uid(study) and is_uid(series) and is_uid(sop)):
        raise ValueError("not a DICOMweb instance path")
    return study, series, sop


def series_source(ref: SeriesRef) -> str:
    """How a series is named in error records (as its items' `source`): UIDs only."""
    return f"{ref.study_uid}/{ref.series_uid}"


def scan_series(source: DicomWebSource, ref: SeriesRef) -> SeriesScan:
    """Fetch a series' metadata and scan each instance's header; never raises for a server failure."""
    client = client_for(source)
    try:
        meta = with_retries(lambda: client.retrieve_series_metadata(ref.study_uid, ref.series_uid), source.retry)
    except FetchFailed as exc:
        return _failed(ref, exc.error_type, f"metadata could not be fetched ({exc.reason})")
    if not isinstance(meta, list) or not all(isinstance(obj, dict) for obj in meta):
        return _failed(ref, "FetchFailed", "metadata could not be fetched (unexpected answer: not DICOM JSON)")
    sops = [first_value(obj, SOP_UID) for obj in meta]
    bad = [sop for sop in sops if not is_uid(sop)]
    if bad:  # the whole series: a volume missing slices would be wrong data
        return _failed(ref, "InvalidUID", f"an instance has {why_not_uid(bad[0], 'SOP Instance UID')}")
    if len(set(sops)) != len(sops):
        return _failed(ref, "InvalidUID", "the metadata lists the same SOP Instance UID twice")
    with private_folder() as tmp:
        scans = tuple(_scan_instance(tmp, n, ref, obj, sop) for n, (obj, sop) in enumerate(zip(meta, sops)))
    return SeriesScan(ref, scans)


def _failed(ref: SeriesRef, error_type: str, why: str) -> SeriesScan:
    record = ErrorRecord(series_source(ref), "fetch", error_type, f"series {ref.series_uid}: {why}")
    return SeriesScan(ref, error=record)


def assemble_series(
    source: DicomWebSource,
    scans: Iterable[SeriesScan],
    log_paths: bool = True,
    policy: ScanPolicy = DEFAULT_POLICY,
    listing_errors: Iterable[ErrorRecord] = (),
) -> ScanResult:
    """One ScanResult from scanned series, grouped into items and studies, selected (`policy.selection`), with
    structured reports and `--reports` texts joined and every text redacted, all by the folder scanner's code.
    `listing_errors`: what the listing could not list (`ListedSeries.errors`), recorded with the rest."""
    col = Collector(log_paths=log_paths, policy=policy)
    scans = list(scans)
    collect_scans((f for s in scans for f in s.files), col)
    col.errors.extend(s.error for s in scans if s.error is not None)
    col.errors.extend(listing_errors)
    return assemble(source, col)  # type: ignore[arg-type] - every item has its StudyInstanceUID: no sidecars


def _scan_instance(tmp: Path, n: int, ref: SeriesRef, obj: dict[str, Any], sop: str) -> FileScan:
    """Scan one instance's metadata as the header of a file (the `n`-th temporary file of `tmp`)."""
    rel = instance_path(ref.study_uid, ref.series_uid, sop)  # the virtual path: the name in every record
    try:
        data = _header_file(obj, ref)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed DICOM JSON
        return FileScan(
            rel, "dicom", error=(rel, f"unreadable DICOM JSON metadata ({type(exc).__name__})", "CorruptFile", "scan")
        )
    path = write_new(tmp, local_name(n), data)
    try:
        return FileScan(rel, "dicom", header=read_header(path, rel))
    except ArchiveError as exc:
        return FileScan(rel, "dicom", error=(exc.path, exc.reason, exc.error_type, exc.stage))
    finally:
        path.unlink(missing_ok=True)


def _header_file(obj: dict[str, Any], ref: SeriesRef) -> bytes:
    """The bytes of a header-only DICOM file made of an instance's DICOM JSON."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    kept = {tag: value for tag, value in obj.items() if tag.upper() not in _DROPPED and "BulkDataURI" not in value}
    # the UIDs it was listed and is fetched under (so every item has a study key: no sidecar lookup)
    kept[STUDY_UID] = {"vr": "UI", "Value": [ref.study_uid]}
    kept[SERIES_UID] = {"vr": "UI", "Value": [ref.series_uid]}
    ds = Dataset.from_json(kept, bulk_data_uri_handler=lambda *args: b"")
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian  # the stored syntax is not in the metadata: checked at read
    meta.MediaStorageSOPClassUID = getattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
