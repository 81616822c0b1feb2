"""`index_archive`: scan -> plan -> decode/encode/write shards -> manifest. Resumable, incremental, one writer.

The whole job holds the out dir's writer lock (radretrieve.foundation.lock): a second job on the same out
dir stops at once naming the holder (or waits, `wait`), and a lock left by a killed job is taken over.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipelines.failures import failed_ids
from pipelines.outdir_open import open_out_dir
from pipelines.plan import Task, indexed_ids, make_plan
from pipelines.preflight import check_archive, nothing_indexable, remove_new_out_dir
from pipelines.ray_cluster.engine import RayPlan, run_on_cluster
from pipelines.scan import scan_archive, scan_remote
from pipelines.sync import SeriesSync, indexed_series, kept_records
from pipelines.writer import ShardWriter, write_scan_errors
from radretrieve.archive.anonymise import PathHasher, anonymise_scan
from radretrieve.archive.records import RemoteArchive
from radretrieve.archive.scanner import DEFAULT_POLICY, ScanPolicy
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_write_text
from radretrieve.foundation.lock import LOCK_FILE, holds_lock, writer_lock
from radretrieve.foundation.signals import sigterm_unwinds
from radretrieve.models.protocol import Encoder
from radretrieve.outdir.anonymise import path_key
from radretrieve.outdir.archive_root import write_archive_root, write_remote_root
from radretrieve.outdir.layout import JOB_FILE
from radretrieve.outdir.manifest import Manifest, read_manifest
from radretrieve.outdir.text_tower import save_text_tower

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexOptions:
    """Options of one indexing job (the CLI's flags)."""

    workers: int = 2  # reader processes; 0 decodes in the main process
    batch_size: int = 256  # slices per encoder call
    studies_per_task: int = 64  # studies per task, i.e. per shard
    engine: Literal["local", "ray"] = "local"  # execution engine
    overwrite: bool = False  # wipe an out dir built with another model/preprocessing
    progress: bool = True  # tqdm bars on stderr (drawn only when stderr is a terminal)
    ray_address: str | None = None  # join an existing Ray cluster (engine=ray)
    encoders: int = 0  # engine=ray, no GPUs: CPU encoder actors (0: one per node)
    wait: float = 0.0  # seconds to wait for another writer of the out dir (0: stop at once)
    retry_errors: bool = False  # retry every recorded failure, not only those whose files changed
    anonymise_paths: bool = True  # store and show keyed hashes instead of file and folder names (False: --keep-paths)
    policy: ScanPolicy = DEFAULT_POLICY  # series selection, --reports, --scrubber (radretrieve.archive.scanner)
    # called once the scan found work, before the first item is encoded: a job refused by its lock, its archive or
    # its server says only why (the application's untrained-model warning goes here)
    before_encoding: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.engine == "ray":  # an optional extra: say so before any work, not at the first Ray call
            from pipelines.ray_cluster.connect import require_ray

            require_ray()


@dataclass
class IndexSummary:
    """What a job did."""

    studies: int = 0  # studies in the archive
    tasks: int = 0  # tasks run now (0 when everything was already done)
    rows: collections.Counter = field(default_factory=collections.Counter)  # rows written now, by kind
    errors: collections.Counter = field(default_factory=collections.Counter)  # failures now, by error type
    skipped: collections.Counter = field(default_factory=collections.Counter)  # series not selected, by reason
    seconds: float = 0.0  # wall time
    # scan, plan, run, text_tower (its write, on a thread of its own), text_tower_wait: wall time of the job's
    # steps; decode (summed over the readers), decode_wait, encode, text_encode, write: the engine's stages
    # (pipelines.tracker.StageTimes)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    slices: int = 0  # slices encoded
    engine: str = "local"  # the engine that ran the job
    cluster: dict[str, Any] = field(default_factory=dict)  # engine=ray: nodes, encoders (node, items), lost runs
    manifest_rows: int = 0  # rows of a manifest archive (0 for a folder)
    manifest_rows_used: int = 0  # of those, rows that gave an item (the others are in errors/)
    series: dict[str, int] = field(default_factory=dict)  # a server: listed, skipped, fetched, failed (sync.py)
    identifier_columns: tuple[str, ...] = ()  # manifest columns dropped as patient identifiers (names only)

    def to_dict(self) -> dict[str, Any]:
        items = sum(v for k, v in self.rows.items() if k != "report")
        return {
            "studies": self.studies,
            "tasks": self.tasks,
            "rows": dict(self.rows),
            "errors": dict(self.errors),
            "skipped_series": dict(self.skipped),
            "seconds": self.seconds,
            "items": items,
            "items_per_s": items / self.seconds if self.seconds else 0.0,
            "slices": self.slices,
            "stage_seconds": dict(self.stage_seconds),
            "manifest_rows": self.manifest_rows,
            "manifest_rows_used": self.manifest_rows_used,
            "engine": self.engine,
            **({"cluster": self.cluster} if self.cluster else {}),
            **({"series": self.series} if self.series else {}),
            **({"identifier_columns": list(self.identifier_columns)} if self.identifier_columns else {}),
        }

    def lines(self) -> list[str]:
        items = sum(v for k, v in self.rows.items() if k != "report")
        rate = items / self.seconds if self.seconds else 0.0
        out = [
            f"studies in archive: {self.studies}; tasks run: {self.tasks}",
            f"rows written: {dict(sorted(self.rows.items())) or 0}",
            f"errors: {dict(sorted(self.errors.items())) or 0}",
            f"series skipped by selection: {dict(sorted(self.skipped.items())) or 0}",
            f"time: {self.seconds:.1f} s; {rate:.1f} items/s; {self.slices / max(self.seconds, 1e-9):.1f} slices/s",
        ]
        if self.manifest_rows:
            left = self.manifest_rows - self.manifest_rows_used
            out.append(f"manifest rows used: {self.manifest_rows_used} of {self.manifest_rows} ({left} in errors/)")
        if self.series:
            out.append(SeriesSync(**self.series).line())
        if self.identifier_columns:
            names = ", ".join(self.identifier_columns)
            out.append(f"identifier columns dropped (not stored; used to redact their row's text): {names}")
        if self.cluster:
            encoders = ", ".join(f"{e['node']}: {e['items']} items" for e in self.cluster.get("encoders", []))
            out.append(f"ray: {len(self.cluster.get('nodes', []))} node(s); encoders {encoders or 'none'}")
        if self.stage_seconds:
            out.append("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_seconds.items()))
        return out


def index_archive(
    archive: Path | RemoteArchive,
    out_dir: Path,
    model: Encoder,
    options: IndexOptions = IndexOptions(),
    readers: Any = None,
) -> IndexSummary:
    """Embed an archive folder, a manifest or a server (a `RemoteArchive`: DICOMweb, DIMSE) into `out_dir`
    (shards + manifest + errors), with either engine. A server's series already in `out_dir` are not fetched
    again. `readers`: the local engine's reader pool (`pipelines.local.start_readers`), started by a caller that
    has work of its own meanwhile (loading the model), which closes it; None: one is started and closed here."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    archive = archive if isinstance(archive, RemoteArchive) else Path(archive)
    if isinstance(archive, Path):
        check_archive(archive)  # a refused job writes nothing
    return _locked_job(archive, out_dir, model, options, start, not out_dir.exists(), readers)


def _locked_job(
    archive: Path | RemoteArchive,
    out_dir: Path,
    model: Encoder,
    options: IndexOptions,
    start: float,
    created: bool,
    given_readers: Any = None,
) -> IndexSummary:
    # SIGTERM (`kill`, a scheduler's stop) unwinds the job as Ctrl-C does: readers and encoders are stopped
    # on the way out (exit status 143)
    with sigterm_unwinds(), writer_lock(out_dir, "radretrieve index", wait=options.wait):
        # ours alone: it did not exist before this job, and holds only our lock now that we hold it (another job
        # that made it while we waited for the lock may have left files: those are never removed)
        ours = created and {p.name for p in out_dir.iterdir()} <= {LOCK_FILE}
        try:
            # the readers' start-up overlaps opening the out dir, scanning and planning
            with _reader_pool(options, given_readers) as readers:
                summary = _index(archive, out_dir, model, options, readers)
        except RadRetrieveError:
            if ours:  # a job refused after its scan leaves no out dir behind either (not on Ctrl-C: resumable)
                remove_new_out_dir(out_dir)
            raise
        return _recorded(summary, start, out_dir)


def index_opened(
    folder: Path, out_dir: Path, model: Encoder, options: IndexOptions = IndexOptions(), readers: Any = None
) -> IndexSummary:
    """One more job from an archive `folder` into an out dir that the calling thread holds the writer lock of and
    has opened (`open_out_dir`, which removes what a killed writer left and checks every shard) for `model`:
    the receiving node's micro-batches (pipelines.receive), which must not re-check every shard per batch.
    Same scan, selection, redaction, item ids and plan as `index_archive`. `readers`: a reader pool the caller
    keeps across jobs (`pipelines.local.start_readers`; the node's, not started per batch), else one of its own."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if not holds_lock(out_dir):
        raise RadRetrieveError(f"{out_dir}: index_opened needs the out dir's writer lock held by this thread")
    check_archive(Path(folder))
    manifest = read_manifest(out_dir)
    if manifest.fingerprint != model.fingerprint:
        raise RadRetrieveError(f"{out_dir} was opened for another model (fingerprint {manifest.fingerprint})")
    if readers is not None:
        summary = _run_job(Path(folder), out_dir, model, options, readers, manifest, None, None)
    else:
        with _reader_pool(options) as own:
            summary = _run_job(Path(folder), out_dir, model, options, own, manifest, None, None)
    return _recorded(summary, start, out_dir)


@contextmanager
def _reader_pool(options: IndexOptions, given: Any = None) -> Iterator[Any]:
    """The local engine's reader processes for one job (None for the Ray engine), closed however it ends;
    `given` readers are used as they are (their owner closes them)."""
    if given is not None and options.engine == "local":
        yield given
        return
    readers = _start_readers(options)
    try:
        yield readers
    finally:
        if readers is not None:
            readers.close()


def _recorded(summary: IndexSummary, start: float, out_dir: Path) -> IndexSummary:
    """`summary` with its wall time, written to OUT/job.json for `radretrieve info`."""
    summary.seconds = time.perf_counter() - start
    atomic_write_text(out_dir / JOB_FILE, json.dumps(summary.to_dict(), indent=1))
    return summary


def _start_readers(options: IndexOptions) -> Any:
    if options.engine != "local":
        return None
    from pipelines.local import start_readers

    return start_readers(options.workers)


def _index(
    archive: Path | RemoteArchive, out_dir: Path, model: Encoder, options: IndexOptions, readers: Any
) -> IndexSummary:
    manifest = open_out_dir(out_dir, model, options.overwrite, options.anonymise_paths)
    ray = _cluster(options, out_dir)
    with _encoders(ray, model, options) as actors:
        return _run_job(archive, out_dir, model, options, readers, manifest, ray, actors)


def _run_job(
    archive: Path | RemoteArchive,
    out_dir: Path,
    model: Encoder,
    options: IndexOptions,
    readers: Any,
    manifest: Manifest,
    ray: Any,
    actors: list[Any] | None,
) -> IndexSummary:
    """Scan, plan and encode into the opened out dir, on the local readers or the Ray encoder actors."""
    with _TowerWrite(model, out_dir) as tower:
        setup = time.perf_counter()
        done_series: set[str] = set()
        listed: list[Any] = []
        if isinstance(archive, RemoteArchive):
            done_series = indexed_series(out_dir, options.retry_errors)
            result, listed = _scan_remote(archive, options, readers, ray, done_series)
        else:
            result = _scan(archive, options, readers, ray)
        scan_s = time.perf_counter() - setup
        # no item and no failure: nothing to index; a failure of every file is a job like any other (errors/)
        if not isinstance(archive, RemoteArchive) and not result.items and not result.errors:
            raise nothing_indexable(archive)
        if options.before_encoding is not None:
            options.before_encoding()
        job = _Scanned(archive, result, listed, done_series)
        summary, steps = _encode_scanned(job, out_dir, model, options, readers, manifest, ray, actors, tower)
        tower.wait()  # a job with no shard to write (nothing new) still stores its text tower, or says why not
    steps = {"scan": scan_s} | steps | {"text_tower": tower.seconds, "text_tower_wait": tower.waited}
    summary.stage_seconds = steps | summary.stage_seconds
    return summary


@dataclass(frozen=True)
class _Scanned:
    """What the scan of a job found."""

    archive: Path | RemoteArchive  # the archive as given
    result: Any  # its ScanResult
    listed: list[Any]  # a server's listed series (empty for a folder)
    done_series: set[str]  # a server's series already indexed, not fetched again


class _TowerWrite:
    """The stored text tower (it lets `radretrieve search` start without open_clip), written on a thread of its
    own while the job scans and encodes: it is file I/O and hashing, outside the GIL. `wait` is called before
    the first shard is written, so that a full disk or a model without a storable tower stops the job after its
    first task, not after hours of encoding, and the job's start is not held up by it."""

    def __init__(self, model: Encoder, out_dir: Path) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="text-tower")
        self._future: Any = self._pool.submit(_timed_call, save_text_tower, model, out_dir)
        self.seconds = 0.0  # how long the write took
        self.waited = 0.0  # how long the job waited for it

    def wait(self) -> None:
        """Block until the tower is written; raise what its write raised (once)."""
        if self._future is None:
            return
        start = time.perf_counter()
        future, self._future = self._future, None
        try:
            self.seconds = future.result()
        finally:
            self.waited += time.perf_counter() - start

    def before(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn`, called only once the tower is written (the shard writer's finish or commit)."""

        def after_tower(*args: Any) -> Any:
            self.wait()
            return fn(*args)

        return after_tower

    def __enter__(self) -> _TowerWrite:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)  # a job that failed still leaves no writer thread behind


def _encode_scanned(
    job: _Scanned,
    out_dir: Path,
    model: Encoder,
    options: IndexOptions,
    readers: Any,
    manifest: Manifest,
    ray: Any,
    actors: list[Any] | None,
    tower: _TowerWrite,
) -> tuple[IndexSummary, dict[str, float]]:
    """Anonymise, record and plan the scan, then encode and write the tasks; the summary and the wall time of the
    plan and run steps."""
    start = time.perf_counter()
    archive, result = job.archive, job.result
    # identifying `study` values are always hashed, paths unless --keep-paths (radretrieve.archive.anonymise); a
    # DICOMweb server's sources are UIDs, not names
    paths = options.anonymise_paths and not isinstance(result.root, RemoteArchive)
    result, real_sources = anonymise_scan(result, PathHasher(path_key(out_dir)), paths)
    # where the sources are, for thumbnails and for encoding stored items again (not a data path in shards)
    if isinstance(result.root, RemoteArchive):
        write_remote_root(out_dir, result.root.display)
    else:
        write_archive_root(out_dir, result.root, private=options.anonymise_paths)
    # a server's series skipped as done keep their scan records (sync.kept_records: failed for good stays so)
    kept = kept_records(out_dir, job.done_series) if isinstance(result.root, RemoteArchive) else []
    write_scan_errors(out_dir, result.errors, kept)
    items = {it.item_id: it for it in result.items}
    done = indexed_ids(out_dir) | failed_ids(out_dir, items, result.root, options.retry_errors)
    tasks = make_plan(result.studies, done, options.studies_per_task)
    summary = IndexSummary(studies=len(result.studies), tasks=len(tasks))
    summary.manifest_rows, summary.manifest_rows_used = result.rows, result.rows_used
    summary.identifier_columns = result.identifier_columns
    summary.errors.update(e.error_type for e in result.errors if e.stage != "select")
    summary.skipped.update(e.error_type for e in result.errors if e.stage == "select")
    writer = ShardWriter(out_dir, manifest, real_sources)
    bar = _progress(tasks, options.progress)
    run_start = time.perf_counter()
    summary.engine = options.engine
    if ray is not None:
        # a server travels as its source object: the reader tasks on the workers fetch their own items
        root = result.root if isinstance(result.root, RemoteArchive) else str(result.root)
        plan = RayPlan(root, str(out_dir), manifest, options.encoders, options.batch_size, None, real_sources)
        commit = tower.before(writer.commit)
        times, summary.cluster = run_on_cluster(ray, tasks, model, plan, commit, bar, actors)
    else:
        times = _run_local(options, tasks, result.root, model, tower.before(writer.finish), bar, readers)
    run_s = time.perf_counter() - run_start
    if isinstance(archive, RemoteArchive):  # which series were fetched, skipped or failed (either engine)
        failed_series = {items[i].series_key for i in writer.failed if i in items}
        uids = {ref.series_uid for ref in job.listed}
        summary.series = SeriesSync.count(uids, job.done_series, result, tasks, failed_series).to_dict()
    bar.close()
    summary.rows.update(writer.rows)
    summary.errors.update(writer.errors)
    # the engine's per-stage seconds (pipelines.tracker.StageTimes)
    summary.stage_seconds = times.to_dict()
    summary.slices = times.slices
    return summary, {"plan": run_start - start, "run": run_s}


def _timed_call(fn: Callable[..., Any], *args: Any) -> float:
    """Run `fn(*args)`; its wall time in seconds."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@contextmanager
def _encoders(ray: Any, model: Encoder, options: IndexOptions) -> Iterator[list[Any] | None]:
    """engine=ray: the encoder actors, started before the scan so that their model loads overlap it (as the
    local engine's readers start while it scans); killed when the job ends, however it ends."""
    if ray is None:
        yield None
        return
    from pipelines.ray_cluster.engine import start_encoders, stop_encoders

    actors = start_encoders(ray, model, options.encoders, options.batch_size)
    try:
        yield actors
    finally:
        stop_encoders(ray, actors)


def _cluster(options: IndexOptions, out_dir: Path) -> Any:
    """Connected `ray` for engine=ray (after checking that every node sees the out dir), else None."""
    if options.engine != "ray":
        return None
    from pipelines.ray_cluster.connect import alive_nodes, check_out_dir_visible, connect

    ray = connect(options.ray_address, options.workers)
    check_out_dir_visible(ray, out_dir, alive_nodes(ray))
    return ray


def _scan_remote(
    archive: RemoteArchive, options: IndexOptions, readers: Any, ray: Any, done_series: set[str]
) -> tuple[Any, list[Any]]:
    """A server's listing (here) and the header scans of its series not in `done_series`: in the reader
    processes (local), or as tasks on the cluster (ray). Returns the scan and every listed series."""
    log_paths = not options.anonymise_paths
    if ray is None:
        return scan_remote(archive, readers, done_series, log_paths, options.policy)
    from pipelines.ray_cluster.scan import cluster_scan_remote

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return cluster_scan_remote(ray, archive, done_series, cpus, log_paths, options.policy)


def _scan(archive: Path, options: IndexOptions, readers: Any, ray: Any) -> Any:
    """The header scan: in the reader processes (local), or as tasks on the cluster (ray)."""
    log_paths = not options.anonymise_paths
    if ray is None:
        return scan_archive(archive, readers, log_paths=log_paths, policy=options.policy)
    from pipelines.ray_cluster.scan import cluster_scan

    cpus = int(ray.cluster_resources().get("CPU", 1))
    return cluster_scan(ray, archive, cpus, log_paths, options.policy)


def _run_local(
    options: IndexOptions,
    tasks: list[Task],
    root: Path | RemoteArchive,
    model: Encoder,
    finish: Any,
    bar: Any,
    readers: Any,
) -> Any:
    from pipelines.local import run_local

    def on_item(decoded: Any) -> None:
        bar.update(1)
        if decoded.failure is not None:
            bar.errors += 1
            bar.set_postfix(errors=bar.errors, refresh=False)

    return run_local(tasks, root, model, options.batch_size, options.workers, finish, on_item, readers)


def _progress(tasks: list[Task], enabled: bool) -> Any:
    from tqdm import tqdm

    bar = tqdm(
        total=sum(t.n_images for t in tasks),
        unit="item",
        desc="indexing",
        file=sys.stderr,
        # None: tqdm draws only on a terminal; into a pipe or a log file it would write a \r-joined redraw
        disable=None if enabled else True,
        dynamic_ncols=True,
    )
    bar.errors = 0
    return bar


__all__ = ["IndexOptions", "IndexSummary", "Manifest", "index_archive", "index_opened"]
