"""The headers of a series on a DICOM node, scanned by the folder scanner's own code.

DIMSE has no way to ask for headers alone, and a C-FIND at IMAGE level is no substitute: it cannot return a
structured report's content tree (reports come from SRs), and many nodes answer only a few of the keys the
scan reads (slice geometry, image type, burned-in annotation). So the series is retrieved whole (C-GET, or
C-MOVE), and each instance, as it arrives, has its header read by the folder scanner's `read_header` from its
bytes in memory (`memory.MemoryFile`), exactly as a file of an archive folder is; nothing is written to disk.
While the process's budget allows (`memory.KEPT`, `Limits.max_held_bytes`), the instance's bytes are kept, so
that reading the series' item decodes them instead of retrieving its sampled slices a second time (`fetch`).
Every rule of the folder scan applies unchanged (the PHI allow-list, grouping and slice order, SOP classes).
Instances are named `STUDY/SERIES/SOP.dcm` (checked UIDs only) as in a DICOMweb scan, so item ids, the
incremental sync by Series UID and the selection are the same whichever protocol reads the archive.

A series that arrives incomplete (fewer instances than the node lists) is one `fetch` error: it is retried
by the next run, never indexed with slices missing.
"""

from __future__ import annotations

from radretrieve.archive.dicom_header import read_header
from radretrieve.archive.dicomweb.listing import SeriesRef
from radretrieve.archive.dicomweb.scan import SeriesScan, instance_path, series_source
from radretrieve.archive.dimse.association import DimseFailed, with_retries
from radretrieve.archive.dimse.memory import KEPT, MemoryFile
from radretrieve.archive.dimse.retrieve import Receiver, Wanted, instance_classes, retrieve
from radretrieve.archive.dimse.source import DimseSource
from radretrieve.archive.records import ArchiveError, ErrorRecord
from radretrieve.archive.scanner import FileScan


def scan_series(source: DimseSource, ref: SeriesRef) -> SeriesScan:
    """Retrieve a series and scan each instance's header as it arrives; never raises for a node failure."""
    try:
        return with_retries(lambda: _scan(source, ref), source)
    except DimseFailed as exc:
        record = ErrorRecord(series_source(ref), "fetch", exc.error_type, f"series {ref.series_uid}: {exc.reason}")
        return SeriesScan(ref, error=record)


def _scan(source: DimseSource, ref: SeriesRef) -> SeriesScan:
    KEPT.drop(source.display, ref.series_uid)  # what an earlier try kept: this one keeps its own
    listed = instance_classes(source, ref.study_uid, ref.series_uid)
    if not listed:
        raise DimseFailed("the node lists no instance of it", "IncompleteSeries", True)
    order = [sop for sop, _ in listed]
    scans: dict[str, FileScan] = {}

    def on_instance(sop: str, data: bytes) -> None:
        rel = instance_path(ref.study_uid, ref.series_uid, sop)  # the virtual path: the name in every record
        try:
            scans[sop] = FileScan(rel, "dicom", header=read_header(MemoryFile(data, rel), rel))  # type: ignore[arg-type]
        except ArchiveError as exc:
            scans[sop] = FileScan(rel, "dicom", error=(exc.path, exc.reason, exc.error_type, exc.stage))
        if source.keep_scanned:
            KEPT.offer(source.display, ref.series_uid, rel, data, source.limits.max_held_bytes)

    wanted = Wanted(ref.study_uid, ref.series_uid, frozenset(order), tuple(sorted({cls for _, cls in listed})))
    receiver = Receiver(wanted, source.limits.max_response_bytes, on_instance, strict=False)
    try:
        retrieve(source, wanted, receiver, "SERIES")
    except DimseFailed:
        KEPT.drop(source.display, ref.series_uid)
        raise
    return SeriesScan(ref, tuple(scans[sop] for sop in order))
