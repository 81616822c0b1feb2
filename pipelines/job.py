"""`index_archive`: scan -> plan -> decode/encode/write shards -> manifest. Resumable and incremental."""

from __future__ import annotations

import collections
import logging
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipelines.plan import Task, done_item_ids, make_plan
from pipelines.stages import Failure, Row, rows_to_table
from radretrieve.foundation.config import config_hash
from radretrieve.foundation.errors import FingerprintMismatch, RadRetrieveError
from radretrieve.foundation.fileio import atomic_write_bytes
from radretrieve.models.protocol import Encoder
from radretrieve.outdir.archive_root import write_archive_root
from radretrieve.outdir.layout import ERROR_DIR, MANIFEST, SHARD_DIR
from radretrieve.outdir.manifest import Manifest, ShardEntry, read_manifest, write_manifest
from radretrieve.outdir.shards import shard_metadata, write_shard
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
    progress: bool = True  # tqdm bars on stderr
    ray_address: str | None = None  # join an existing Ray cluster (engine=ray)


@dataclass
class IndexSummary:
    """What a job did."""

    studies: int = 0  # studies in the archive
    tasks: int = 0  # tasks run now (0 when everything was already done)
    rows: collections.Counter = field(default_factory=collections.Counter)  # rows written now, by kind
    errors: collections.Counter = field(default_factory=collections.Counter)  # failures now, by error type
    seconds: float = 0.0  # wall time
    stage_seconds: dict[str, float] = field(default_factory=dict)  # decode / encode / write
    slices: int = 0  # slices encoded

    def to_dict(self) -> dict[str, Any]:
        items = sum(v for k, v in self.rows.items() if k != "report")
        return {
            "studies": self.studies,
            "tasks": self.tasks,
            "rows": dict(self.rows),
            "errors": dict(self.errors),
            "seconds": self.seconds,
            "items": items,
            "items_per_s": items / self.seconds if self.seconds else 0.0,
            "slices": self.slices,
            "stage_seconds": dict(self.stage_seconds),
        }

    def lines(self) -> list[str]:
        items = sum(v for k, v in self.rows.items() if k != "report")
        rate = items / self.seconds if self.seconds else 0.0
        out = [
            f"studies in archive: {self.studies}; tasks run: {self.tasks}",
            f"rows written: {dict(sorted(self.rows.items())) or 0}",
            f"errors: {dict(sorted(self.errors.items())) or 0}",
            f"time: {self.seconds:.1f} s; {rate:.1f} items/s; {self.slices / max(self.seconds, 1e-9):.1f} slices/s",
        ]
        if self.stage_seconds:
            out.append("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_seconds.items()))
        return out


def index_archive(archive: Path, out_dir: Path, model: Encoder, options: IndexOptions = IndexOptions()) -> IndexSummary:
    """Embed an archive folder or manifest into `out_dir` (shards + manifest + errors)."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    readers = _start_readers(options)  # their start-up overlaps opening the out dir, scanning and planning
    try:
        return _index(archive, out_dir, model, options, readers, start)
    finally:
        if readers is not None:
            readers.terminate()


def _start_readers(options: IndexOptions) -> Any:
    if options.engine != "local":
        return None
    from pipelines.local import start_readers

    return start_readers(options.workers)


def _index(
    archive: Path, out_dir: Path, model: Encoder, options: IndexOptions, readers: Any, start: float
) -> IndexSummary:
    manifest = _open_out_dir(out_dir, model, options.overwrite)
    # lets `radretrieve search` encode text without building the whole model; written (mostly file I/O,
    # outside the GIL) on a thread while the job scans and encodes, instead of before it
    with ThreadPoolExecutor(1, thread_name_prefix="text-tower") as background:
        tower = background.submit(save_text_tower, model, out_dir)
        summary = _scan_and_run(archive, out_dir, model, options, readers, manifest)
        tower.result()
    summary.seconds = time.perf_counter() - start
    return summary


def _scan_and_run(
    archive: Path, out_dir: Path, model: Encoder, options: IndexOptions, readers: Any, manifest: Manifest
) -> IndexSummary:
    from radretrieve.archive import scan

    # the readers are idle until the plan exists: they read the headers meanwhile
    map_fn = (lambda fn, rels: readers.imap(fn, rels, chunksize=64)) if readers is not None else map
    result = scan(Path(archive), map_fn=map_fn)
    # where the sources are, for thumbnails and for encoding stored items again (not a data path in shards)
    write_archive_root(out_dir, result.root)
    _write_scan_errors(out_dir, result.errors)
    done = done_item_ids(out_dir)
    first_seq = 1 + max((int(Path(s.file).stem.split("-")[1]) for s in manifest.shards), default=-1)
    tasks = make_plan(result.studies, done, options.studies_per_task, first_seq)
    summary = IndexSummary(studies=len(result.studies), tasks=len(tasks))
    summary.errors.update(e.error_type for e in result.errors)
    writer = _ShardWriter(out_dir, manifest, model, summary)
    runner = _engine(options)
    bar = _progress(tasks, options.progress)
    times = runner(tasks, result.root, model, options, writer.finish, bar, readers)
    bar.close()
    summary.stage_seconds = {"decode": times.decode, "encode": times.encode, "write": times.write}
    summary.slices = times.slices
    return summary


def _engine(options: IndexOptions) -> Any:
    if options.engine == "ray":
        from pipelines.ray_engine import run_ray

        return lambda tasks, root, model, o, finish, bar, _readers: run_ray(tasks, root, model, o, finish, bar)
    from pipelines.local import run_local

    def run(tasks, root, model, o, finish, bar, readers):  # an adapter to the engines' common signature
        def on_item(decoded):
            bar.update(1)
            if decoded.failure is not None:
                bar.errors += 1
                bar.set_postfix(errors=bar.errors, refresh=False)

        return run_local(tasks, root, model, o.batch_size, o.workers, finish, on_item, readers)

    return run


def _progress(tasks: list[Task], enabled: bool) -> Any:
    from tqdm import tqdm

    bar = tqdm(
        total=sum(t.n_images for t in tasks),
        unit="item",
        desc="indexing",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    )
    bar.errors = 0
    return bar


class _ShardWriter:
    """Writes a finished task: errors file, shard (atomic), then the manifest (atomic)."""

    def __init__(self, out_dir: Path, manifest: Manifest, model: Encoder, summary: IndexSummary) -> None:
        self.out_dir, self.manifest, self.summary = out_dir, manifest, summary
        self.dim = manifest.dim
        self.meta = shard_metadata(manifest.fingerprint, manifest.preprocess_hash, manifest.dim)

    def finish(self, task: Task, rows: list[Row], failures: list[Failure]) -> None:
        if failures:
            body = "".join(f.to_json() + "\n" for f in failures).encode()
            atomic_write_bytes(self.out_dir / ERROR_DIR / f"{task.task_id}.jsonl", body)
        table = rows_to_table(rows, self.dim, self.meta)
        rel = f"{SHARD_DIR}/{task.shard_name}"
        write_shard(self.out_dir / rel, table)
        counts = collections.Counter(table.column("kind").to_pylist())
        self.manifest = self.manifest.with_shard(ShardEntry(rel, task.task_id, table.num_rows, dict(counts)))
        write_manifest(self.out_dir, self.manifest)
        self.summary.rows.update(counts)
        self.summary.errors.update(f.error_type for f in failures)


def _open_out_dir(out_dir: Path, model: Encoder, overwrite: bool) -> Manifest:
    """Create or reopen an out dir; refuse another model/preprocessing unless `overwrite`."""
    from radretrieve.outdir.model_ref import model_reference

    fingerprint, prep = model.fingerprint, config_hash(model.config.preprocess)
    if (out_dir / MANIFEST).is_file():
        old = read_manifest(out_dir)
        if (old.fingerprint, old.preprocess_hash) == (fingerprint, prep):
            _remove_orphans(out_dir, old)
            return old
        if not overwrite:
            what = "model" if old.fingerprint != fingerprint else "preprocessing"
            raise FingerprintMismatch(
                f"{out_dir} was built with another {what} (fingerprint {old.fingerprint}); "
                "use another --out or pass --overwrite to rebuild it"
            )
        for name in (SHARD_DIR, ERROR_DIR, "index", "model", MANIFEST):
            path = out_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise RadRetrieveError(f"{out_dir} exists, is not empty and is not a radretrieve out dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(fingerprint, prep, model.config.embed_dim, model_reference(model, out_dir), ())
    write_manifest(out_dir, manifest)
    return manifest


def _remove_orphans(out_dir: Path, manifest: Manifest) -> None:
    """Shards written by a killed run but never entered in the manifest, and temp files, are removed."""
    listed = {out_dir / s.file for s in manifest.shards}
    for path in (out_dir / SHARD_DIR).glob("*") if (out_dir / SHARD_DIR).is_dir() else []:
        if path not in listed:
            log.info("removing unlisted %s from an interrupted run", path.name)
            path.unlink()


def _write_scan_errors(out_dir: Path, errors: Any) -> None:
    """Scan-level failures (unreadable headers, mixed series...): rewritten on every run, never duplicated."""
    body = "".join(
        Failure(getattr(e, "item_id", None), e.source, e.stage, e.error_type, e.message).to_json() + "\n"
        for e in errors
    ).encode()
    path = out_dir / ERROR_DIR / "scan.jsonl"
    if body or path.exists():
        atomic_write_bytes(path, body)
