"""Committing a finished task: its errors file, its shard, then its manifest entry (each atomic).

The order makes a crash at any point safe: a shard that is written but not yet listed is removed by the next
run (pipelines.outdir_open) and its task runs again; the manifest lists only whole shards, each with the
size and SHA-256 it was committed with (radretrieve.outdir.verify checks them).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.plan import Task
from pipelines.stages import Failure, Row, rows_to_table
from radretrieve.foundation.fileio import atomic_write_bytes, file_sha256
from radretrieve.foundation.names import shown
from radretrieve.outdir.anonymise import write_sources
from radretrieve.outdir.layout import ERROR_DIR, SCAN_ERRORS, SHARD_DIR
from radretrieve.outdir.manifest import Manifest, ShardEntry, write_manifest
from radretrieve.outdir.shards import shard_metadata, write_shard


@dataclass(frozen=True)
class Written:
    """What committing one task's files produced (sent back to the driver by a Ray worker)."""

    entry: ShardEntry  # the manifest entry of its shard (size and SHA-256 included)
    rows: Mapping[str, int]  # rows written, by kind
    errors: Mapping[str, int]  # failures recorded, by error type
    failed: tuple[int, ...] = ()  # ids of the items that failed (a server's sync counts their series)


def write_task(
    out_dir: Path,
    manifest: Manifest,
    task: Task,
    rows: list[Row],
    failures: list[Failure],
    real_sources: Mapping[int, str] | None = None,
) -> Written:
    """Write one finished task's files: its source map (anonymised out dirs), errors file, then its shard.

    Does not touch the manifest: the caller commits `Written.entry` (the local engine right away, the Ray
    engine's driver when a worker reports it), so that only whole shards are ever listed."""
    out_dir = Path(out_dir)
    if real_sources:
        failures = [_scrub(f, task) for f in failures]
        ids = [w.item_id for w in task.work if w.item_id in real_sources]
        write_sources(out_dir, task.task_id, {i: real_sources[i] for i in ids})
    if failures:
        body = "".join(f.to_json() + "\n" for f in failures).encode()
        atomic_write_bytes(out_dir / ERROR_DIR / f"{task.task_id}.jsonl", body)
    meta = shard_metadata(manifest.fingerprint, manifest.preprocess_hash, manifest.dim)
    table = rows_to_table(rows, manifest.dim, meta)
    rel = f"{SHARD_DIR}/{task.shard_name}"
    path = out_dir / rel
    write_shard(path, table)
    counts = collections.Counter(table.column("kind").to_pylist())
    entry = ShardEntry(rel, task.task_id, table.num_rows, dict(counts), path.stat().st_size, file_sha256(path))
    errors = dict(collections.Counter(f.error_type for f in failures))
    return Written(entry, dict(counts), errors, tuple(f.item_id for f in failures if f.item_id is not None))


class ShardWriter:
    """Writes finished tasks into one out dir and commits each to the manifest; counts what it wrote."""

    def __init__(self, out_dir: Path, manifest: Manifest, real_sources: Mapping[int, str] | None = None) -> None:
        self.out_dir, self.manifest = Path(out_dir), manifest
        self.real_sources = dict(real_sources or {})  # --anonymise-paths: item id -> real source
        self.rows: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.failed: set[int] = set()  # ids of the items that failed, whichever engine ran them

    def finish(self, task: Task, rows: list[Row], failures: list[Failure]) -> None:
        self.commit(write_task(self.out_dir, self.manifest, task, rows, failures, self.real_sources))

    def commit(self, written: Written) -> None:
        """List a written shard in the manifest (atomically); tasks may be committed in any order."""
        self.manifest = self.manifest.with_shard(written.entry)
        write_manifest(self.out_dir, self.manifest)
        self.rows.update(written.rows)
        self.errors.update(written.errors)
        self.failed.update(written.failed)


def _scrub(failure: Failure, task: Task) -> Failure:
    """A failure of an anonymised item with every real file path in its message replaced by the item's hash."""
    work = next((w for w in task.work if w.item_id == failure.item_id and w.item is not None), None)
    if work is None:
        return failure
    message = failure.message
    # The message names the files in their shown form (radretrieve.foundation.names), as stored.
    for rel in sorted({shown(f) for f in work.item.files}, key=len, reverse=True):  # longest first: no partials
        message = message.replace(rel, work.item.source)
    return dataclasses.replace(failure, message=message)


def write_scan_errors(out_dir: Path, errors: Iterable, kept: Iterable[str] = ()) -> None:
    """Scan-level failures (unreadable headers, mixed series...): rewritten on every run, never duplicated.
    `kept`: record lines of an earlier run to keep (a server's series not scanned again: `sync.kept_records`)."""
    body = "".join(
        [*kept]
        + [
            Failure(getattr(e, "item_id", None), e.source, e.stage, e.error_type, e.message).to_json() + "\n"
            for e in errors
        ]
    ).encode()
    path = Path(out_dir) / ERROR_DIR / SCAN_ERRORS
    if body or path.exists():
        atomic_write_bytes(path, body)
