"""The headers of a DICOMweb series (WADO-RS metadata), scanned by the folder scanner's own code.

Each instance's metadata (DICOM JSON, bulk data such as the pixels left out) is written as a header-only
DICOM file to a temporary folder and scanned by `scan_file`, exactly as a file of an archive folder is; the
file is removed at once. So every rule of the folder scan applies to a DICOMweb archive unchanged (the PHI
allow-list, series grouping and slice order, SOP class rules). Instances are named `STUDY/SERIES/SOP.dcm`
(UIDs only): these virtual paths are the items' `files` and `source`, and what the reader fetches.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.archive.dicomweb.client import FetchFailed, client_for, with_retries
from radretrieve.archive.dicomweb.listing import SERIES_UID, STUDY_UID, SeriesRef
from radretrieve.archive.dicomweb.source import DicomWebSource
from radretrieve.archive.records import ErrorRecord, ScanResult
from radretrieve.archive.scanner import (
    DEFAULT_POLICY,
    Collector,
    FileScan,
    ScanPolicy,
    assemble,
    collect_scans,
    scan_file,
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
    """(study, series, SOP instance UID) of a virtual path made by `instance_path`."""
    study, series, name = rel.split("/")
    return study, series, name[: -len(".dcm")]


def series_source(ref: SeriesRef) -> str:
    """How a series is named in error records (as its items' `source`): UIDs only."""
    return f"{ref.study_uid}/{ref.series_uid}"


def scan_series(source: DicomWebSource, ref: SeriesRef) -> SeriesScan:
    """Fetch a series' metadata and scan each instance's header; never raises for a server failure."""
    client = client_for(source)
    try:
        meta = with_retries(lambda: client.retrieve_series_metadata(ref.study_uid, ref.series_uid), source.retry)
    except FetchFailed as exc:
        message = f"series {ref.series_uid}: metadata could not be fetched ({exc.reason})"
        return SeriesScan(ref, error=ErrorRecord(series_source(ref), "fetch", "FetchFailed", message))
    scans = []
    with tempfile.TemporaryDirectory(prefix="radretrieve-dicomweb-") as tmp:
        for obj in meta:
            scans.append(_scan_instance(Path(tmp), ref, obj))
    return SeriesScan(ref, tuple(s for s in scans if s is not None))


def assemble_series(
    source: DicomWebSource, scans: Iterable[SeriesScan], log_paths: bool = True, policy: ScanPolicy = DEFAULT_POLICY
) -> ScanResult:
    """One ScanResult from scanned series, grouped into items and studies, selected (`policy.selection`), with
    structured reports and `--reports` texts joined and every text redacted, all by the folder scanner's code."""
    col = Collector(log_paths=log_paths, policy=policy)
    scans = list(scans)
    collect_scans((f for s in scans for f in s.files), col)
    col.errors.extend(s.error for s in scans if s.error is not None)
    return assemble(source, col)  # type: ignore[arg-type] - every item has its StudyInstanceUID: no sidecars


def _scan_instance(tmp: Path, ref: SeriesRef, obj: dict[str, Any]) -> FileScan | None:
    sop = (obj.get(SOP_UID, {}).get("Value") or [""])[0]
    if not sop:
        return None  # an instance without a UID cannot be fetched: the server's listing is broken
    rel = instance_path(ref.study_uid, ref.series_uid, str(sop))
    path = tmp / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write_header_file(obj, ref, path)
        return scan_file(tmp, rel)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed DICOM JSON
        return FileScan(
            rel, "dicom", error=(rel, f"unreadable DICOM JSON metadata ({type(exc).__name__})", "CorruptFile", "scan")
        )
    finally:
        path.unlink(missing_ok=True)


def _write_header_file(obj: dict[str, Any], ref: SeriesRef, path: Path) -> None:
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
    ds.save_as(path, enforce_file_format=True)
