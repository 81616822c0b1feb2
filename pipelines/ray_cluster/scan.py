"""The header scan as Ray tasks: the driver lists partitions (folders, or manifest row ranges, or a server's
series), workers read the headers, and the driver merges the small per-partition results into the plan. The
driver never reads a pixel, nor a header.

A DICOM series is normally inside one partition (partitions are folders); when the same Series UID comes back
from two partitions, its files are scanned again together by one more task, so a split series is one item.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.ray_cluster.decode import CHUNK_RETRIES, gather_chunk
from pipelines.scan import crashed_series
from radretrieve.archive import ScanResult
from radretrieve.archive.manifest import count_rows, is_manifest, scan_manifest_part
from radretrieve.archive.records import RemoteArchive
from radretrieve.archive.scanner import DEFAULT_POLICY, PartialScan, ScanPolicy, merge_scans, scan_part, walk
from radretrieve.archive.selection import DEFAULT_RULES, SelectionRules
from radretrieve.foundation.errors import ReadError

PARTITIONS_PER_CPU = 4  # partitions aimed at per cluster CPU: enough to balance uneven folders
MANIFEST_ROWS_PER_PART = 2000  # manifest rows per scan task (at least)
SERIES_PER_SCAN_TASK = 4  # series of a server whose headers one scan task reads (a task costs ms to schedule)
SCAN_TASKS_PER_CPU = 2  # server scan tasks in flight per cluster CPU (their results wait on the driver in order)


@dataclass(frozen=True)
class Partition:
    """Part of a folder archive: every file under `folder` (`recursive`), or only those directly in it."""

    folder: str  # root-relative folder ("" is the root)
    recursive: bool  # the whole subtree, or just the files in the folder itself


def _subdirs(root: Path, rel: str) -> list[str]:
    with os.scandir(root / rel if rel else root) as it:
        return sorted(f"{rel}/{e.name}" if rel else e.name for e in it if e.is_dir() and not e.name.startswith("."))


def folder_partitions(root: Path, target: int) -> list[Partition]:
    """Split the tree at `root` into about `target` partitions by descending into folders, breadth first.

    Only folder names are listed on the driver; files are listed by the scan tasks themselves."""
    parts = [Partition("", True)]
    while len(parts) < target:
        split = next((p for p in parts if p.recursive and _subdirs(root, p.folder)), None)
        if split is None:
            break
        parts.remove(split)
        parts.append(Partition(split.folder, False))  # the files directly in it
        parts.extend(Partition(d, True) for d in _subdirs(root, split.folder))
    return parts


def _files(root: Path, part: Partition) -> list[str]:
    if part.recursive:
        return walk(root, part.folder)
    folder = root / part.folder if part.folder else root
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and not e.name.startswith("."))
    return [f"{part.folder}/{n}" if part.folder else n for n in names]


def scan_partition(root: str, part: Partition, log_paths: bool, rules: SelectionRules = DEFAULT_RULES) -> PartialScan:
    """Ray task: the headers of one folder partition."""
    return scan_part(Path(root), _files(Path(root), part), log_paths, rules)


def scan_files(root: str, rels: list[str], log_paths: bool, rules: SelectionRules = DEFAULT_RULES) -> PartialScan:
    """Ray task: the headers of given files (a series that was split over partitions)."""
    return scan_part(Path(root), rels, log_paths, rules)


def scan_rows(
    manifest: str, start: int, stop: int, log_paths: bool, rules: SelectionRules = DEFAULT_RULES
) -> PartialScan:
    """Ray task: rows [start, stop) of a manifest."""
    return scan_manifest_part(Path(manifest), start, stop, log_paths, rules)


def _row_ranges(rows: int, target: int) -> Iterator[tuple[int, int]]:
    step = max(MANIFEST_ROWS_PER_PART, -(-rows // max(1, target)))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def _split_series(parts: list[PartialScan]) -> dict[str, list[str]]:
    """Series keys found in more than one part -> every file of theirs (to be scanned together)."""
    seen: dict[str, list[int]] = collections.defaultdict(list)
    for index, part in enumerate(parts):
        for key in {i.item_key for i in part.items if i.item_key.startswith("dicom-series:")}:
            seen[key].append(index)
    files: dict[str, list[str]] = {}
    for key, where in seen.items():
        if len(where) > 1:
            files[key] = sorted({f for i in where for it in parts[i].items if it.item_key == key for f in it.files})
    return files


def _without(part: PartialScan, keys: set[str]) -> PartialScan:
    items = tuple(i for i in part.items if i.item_key not in keys)
    return dataclasses.replace(part, items=items)


def cluster_scan(
    ray: Any, archive: Path, cpus: int, log_paths: bool = True, policy: ScanPolicy = DEFAULT_POLICY
) -> ScanResult:
    """Scan a folder or manifest with Ray tasks (one per partition), merged (and redacted) on the driver."""
    archive = Path(archive)
    rules = policy.selection
    target = max(1, cpus * PARTITIONS_PER_CPU)
    if is_manifest(archive):
        task = ray.remote(num_cpus=1)(scan_rows)
        ranges = _row_ranges(count_rows(archive), target)
        refs = [task.remote(str(archive), a, b, log_paths, rules) for a, b in ranges]
        return merge_scans(archive.parent, ray.get(refs), policy)
    if not archive.is_dir():
        raise ReadError(str(archive), "not a folder or a manifest (.csv, .parquet, .jsonl)", "scan")
    task = ray.remote(num_cpus=1)(scan_partition)
    parts = ray.get([task.remote(str(archive), p, log_paths, rules) for p in folder_partitions(archive, target)])
    split = _split_series(parts)
    if split:
        again = ray.remote(num_cpus=1)(scan_files)
        parts = [_without(p, set(split)) for p in parts]
        parts += ray.get([again.remote(str(archive), files, log_paths, rules) for files in split.values()])
    return merge_scans(archive, parts, policy)


def scan_series_chunk(source: RemoteArchive, refs: list[Any]) -> list[Any]:
    """Ray task: the headers of a few listed series of a server (`RemoteArchive.scan_series`, which never
    raises for a server failure: a series that cannot be fetched is an error record in its scan).

    A DIMSE source keeps nothing it retrieves here (`keep_scanned`, `dimse.memory`): a Ray worker process
    outlives the job (a cluster joined with `--ray-address` runs the next jobs' tasks in it) and only the
    driver's store is cleared at a job's start, so what a worker kept and no read of this job took (a read
    lands on whichever worker is free) would stay there, patient data in memory after the job, for a later
    job's read on this worker to take instead of what the node holds then."""
    if getattr(source, "keep_scanned", False):
        source = dataclasses.replace(source, keep_scanned=False)  # type: ignore[type-var]
    return [source.scan_series(ref) for ref in refs]


def cluster_scan_remote(
    ray: Any,
    source: RemoteArchive,
    done_series: set[str],
    cpus: int,
    log_paths: bool = True,
    policy: ScanPolicy = DEFAULT_POLICY,
) -> tuple[ScanResult, list[Any]]:
    """`pipelines.scan.scan_remote` on the cluster: the driver lists the server's series (one listing, UIDs
    only), the header scans of those not in `done_series` run as Ray tasks on the workers, a few series each,
    at most `cpus * SCAN_TASKS_PER_CPU` tasks in flight; the driver assembles (groups, selects, redacts). A
    task whose worker or node dies is run again, then series by series: a series that kills its worker again
    is a `WorkerCrashed` error record, and the scan goes on. Returns the scan and every listed series."""
    source.remove_stale()  # the driver's scratch copies; each worker removes those of its node's dead processes
    listed = source.list_series()
    refs = list(listed.refs)
    todo = [ref for ref in refs if ref.series_uid not in done_series]
    scans = _remote_scans(ray, source, todo, max(1, cpus) * SCAN_TASKS_PER_CPU)
    return source.assemble(scans, log_paths, policy, listed.errors), refs


def _remote_scans(ray: Any, source: RemoteArchive, todo: list[Any], inflight: int) -> Iterator[Any]:
    """The scans of `todo`, in order, from Ray tasks of SERIES_PER_SCAN_TASK series each."""
    task = ray.remote(num_cpus=1, max_retries=CHUNK_RETRIES)(scan_series_chunk)
    chunks = [todo[i : i + SERIES_PER_SCAN_TASK] for i in range(0, len(todo), SERIES_PER_SCAN_TASK)]
    window: collections.deque = collections.deque()
    for chunk in chunks:
        window.append((chunk, task.remote(source, chunk)))
        if len(window) >= inflight:
            chunk_done, ref = window.popleft()
            yield from gather_chunk(ray, chunk_done, ref, scan_series_chunk, crashed_series, source)
    while window:
        chunk_done, ref = window.popleft()
        yield from gather_chunk(ray, chunk_done, ref, scan_series_chunk, crashed_series, source)
