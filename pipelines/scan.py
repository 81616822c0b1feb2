"""The archive scan, run in the reader processes while they would otherwise wait for the plan.

Files are scanned in chunks (one inter-process round trip per chunk, not per file); a file whose header read
kills its reader twice (pipelines.readers) becomes a `WorkerCrashed` scan error, and the scan goes on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipelines.readers import ReaderPool, Window, ordered_map, run_alone
from radretrieve.archive import ScanResult, scan
from radretrieve.archive.scanner import DEFAULT_POLICY, FileScan, file_format

SCAN_CHUNK = 64  # files per round trip to a reader
CRASH_REASON = "the reader process died reading its header, twice"


def _scan_chunk(fn: Callable[[str], FileScan], rels: list[str]) -> list[FileScan]:
    return [fn(rel) for rel in rels]


def _crashed_file(rel: str) -> FileScan:
    return FileScan(rel, file_format(rel), error=(rel, CRASH_REASON, "WorkerCrashed", "scan"))


def _chunks(rels: Iterable[str]) -> Iterator[list[str]]:
    chunk: list[str] = []
    for rel in rels:
        chunk.append(rel)
        if len(chunk) == SCAN_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pool_map(pool: ReaderPool) -> Callable[[Callable[[str], FileScan], Iterable[str]], Iterator[FileScan]]:
    """A `map_fn` for `radretrieve.archive.scan` that reads headers in `pool`, in order."""

    def map_fn(fn: Callable[[str], FileScan], rels: Iterable[str]) -> Iterator[FileScan]:
        chunk_fn = functools.partial(_scan_chunk, fn)

        def crashed(chunk: list[str]) -> list[FileScan]:  # one file of the chunk kills readers: find it
            return [run_alone(pool, fn, rel, _crashed_file) for rel in chunk]

        window = Window(budget=4 * pool.workers, min_items=2 * pool.workers)
        for results in ordered_map(pool, chunk_fn, _chunks(rels), window, crashed):
            yield from results

    return map_fn


def scan_archive(archive: Path, pool: ReaderPool | None, **options: Any) -> ScanResult:
    """`scan(archive, **options)`, with the header reads of a folder in `pool` when there is one."""
    return scan(Path(archive), map_fn=pool_map(pool) if pool is not None else map, **options)


def scan_remote(
    source: Any, pool: ReaderPool | None, done_series: set[str], log_paths: bool = True, policy: Any = None
) -> tuple[ScanResult, list[Any]]:
    """List a server's series (here) and scan the headers of those not in `done_series` (in `pool`, a bounded
    number of series in flight). `source` is any `radretrieve.archive.records.RemoteArchive` (DICOMweb,
    DIMSE). Returns the scan and every listed series."""
    source.remove_stale()
    listed = source.list_series()  # UIDs checked; studies that could not be listed are error records
    refs = list(listed.refs)
    todo = [ref for ref in refs if ref.series_uid not in done_series]
    if pool is None:
        scans: Iterable[Any] = map(source.scan_series, todo)
    else:
        window = Window(budget=4 * pool.workers, min_items=2 * pool.workers)
        scans = ordered_map(pool, source.scan_series, todo, window, crashed_series)
    result = source.assemble(scans, log_paths, policy if policy is not None else DEFAULT_POLICY, listed.errors)
    return result, refs


def crashed_series(ref: Any) -> Any:
    """The scan of a listed series whose header read killed its reader (or Ray worker) twice: an error record."""
    from radretrieve.archive.dicomweb.scan import SeriesScan, series_source
    from radretrieve.archive.records import ErrorRecord

    message = f"series {ref.series_uid}: {CRASH_REASON}s"
    return SeriesScan(ref, error=ErrorRecord(series_source(ref), "scan", "WorkerCrashed", message))
