"""The receiving node's loop: hold the out dir, receive into the spool, index settled studies in micro-batches.

The main thread holds the out dir's writer lock for the whole run (a second `listen` or `index` waits or is
refused), opens the out dir once (stale files removed, every shard checked), starts the SCP (its association
threads only store into the spool) and its reader processes (`--workers`: started once for the whole run, not
per batch), then loops: studies that settled are moved into `batch/`, indexed with the folder pipeline
(`pipelines.job.index_opened`: the same scan, selection, redaction and item ids as `radretrieve index FOLDER`),
the batch's files are removed, and then the caller hears of the batch (`on_batch`). The caller's `update_index`
(the application updates the FAISS indexes there) runs after a batch when no other batch is ready to be taken,
or when it last ran `index_every` seconds ago or more: an update reads and writes the whole index file, so
while studies keep arriving it is not paid per batch; once the spool is quiet the indexes are always caught
up. SIGTERM and Ctrl-C stop the SCP first, then leave the spool as it is: a restart indexes `batch/` at once
and lets `incoming/` settle again (an update a stop came before is done by the next batch's update, which adds
every shard the indexes lack, or by `radretrieve build-index`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.job import IndexOptions, IndexSummary, index_opened
from pipelines.local import start_readers
from pipelines.outdir_open import open_out_dir
from pipelines.receive.scp import Counters, ReceivingScp, ScpOptions
from pipelines.receive.spool import Spool, Taken
from radretrieve.archive.scanner import DEFAULT_POLICY, ScanPolicy
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_write_bytes, atomic_write_text
from radretrieve.foundation.lock import writer_lock
from radretrieve.foundation.signals import sigterm_unwinds
from radretrieve.models.protocol import Encoder
from radretrieve.outdir.archive_root import write_remote_root
from radretrieve.outdir.layout import ERROR_DIR, LISTEN_FILE, RECEIVED_ERRORS, SCAN_ERRORS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceiveOptions:
    """The node's settings besides the out dir and the model."""

    scp: ScpOptions  # listening, senders, bounds (pipelines.receive.scp)
    settle: float = 10.0  # seconds without a new instance after which a study is complete
    batch_studies: int = 64  # most studies indexed in one micro-batch (one shard)
    workers: int = 0  # reader processes, kept for the whole run (0: decode in the node's process)
    batch_size: int = 256  # slices per encoder call
    wait: float = 0.0  # seconds to wait for another writer of the out dir
    policy: ScanPolicy = DEFAULT_POLICY  # series selection and redaction, as for `index`
    index_every: float = 60.0  # while batches follow one another, seconds between index updates (at least)


@dataclass
class Totals:
    """The listener's totals over all its runs on this out dir (OUT/listen.json; counts only, no names)."""

    batches: int = 0
    studies_indexed: int = 0
    series_indexed: int = 0
    instances_indexed: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # rows written, by kind
    errors: dict[str, int] = field(default_factory=dict)  # failed items, by error type
    skipped_series: dict[str, int] = field(default_factory=dict)  # not selected, by reason
    failed_batches: int = 0  # batches whose indexing failed (left in the spool, retried)
    index_failures: int = 0  # batches indexed whose FAISS index update failed (caught up by a later update)
    received: dict[str, int] = field(default_factory=dict)  # the SCP's counters of earlier runs, summed

    @classmethod
    def load(cls, out_dir: Path) -> Totals:
        """The totals of earlier runs; zeros (with a warning) when listen.json is damaged: they are counts for
        people, and a count of the wrong type would stop every start of the node at its first status write."""
        path = Path(out_dir) / LISTEN_FILE
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))["totals"]
            if not isinstance(data, dict):
                raise TypeError("totals")
            totals = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
            if totals._whole():
                return totals
        except (OSError, ValueError, KeyError, TypeError):
            pass
        log.warning("%s: damaged totals; counting from zero (the shards and indexes are not affected)", path)
        return cls()

    def _whole(self) -> bool:
        """Every total a non-negative int, every breakdown a dict of them."""

        def count(value: object) -> bool:
            return type(value) is int and value >= 0  # not bool

        def whole(name: str) -> bool:
            mine = getattr(self, name)
            if isinstance(getattr(Totals(), name), dict):
                return isinstance(mine, dict) and all(isinstance(k, str) and count(v) for k, v in mine.items())
            return count(mine)

        return all(whole(name) for name in self.__dataclass_fields__)

    def add_batch(self, taken: Taken) -> None:
        """A batch indexed, its indexes updated and its files removed."""
        self.batches += 1
        self.studies_indexed += taken.studies
        self.series_indexed += taken.series
        self.instances_indexed += taken.instances

    def add_rows(self, summary: IndexSummary) -> None:
        """What a batch's job committed (counted at once: a retry of the batch finds those rows done)."""
        for mine, theirs in (
            (self.rows, summary.rows),
            (self.errors, summary.errors),
            (self.skipped_series, summary.skipped),
        ):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + int(v)

    def to_dict(self, counters: Counters) -> dict[str, Any]:
        now = counters.to_dict()
        received = {k: self.received.get(k, 0) + now.get(k, 0) for k in sorted(set(self.received) | set(now))}
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return data | {"received": received}


@dataclass(frozen=True)
class BatchReport:
    """One indexed micro-batch, for the caller's progress line and `--json` status line."""

    number: int  # batches of this run so far
    taken: Taken  # studies, series and instances indexed
    summary: IndexSummary  # the pipeline's summary of the batch
    waiting: tuple[int, int]  # studies still in the spool, of which still being sent
    received: tuple[int, int] = (0, 0)  # this run so far: instances stored, C-STOREs refused


class Node:
    """One run of the receiving node on one out dir (`run` holds the writer lock)."""

    def __init__(self, out_dir: Path, model: Encoder, options: ReceiveOptions) -> None:
        self.out_dir, self.model, self.options = Path(out_dir), model, options
        self.counters = Counters()
        self.totals = Totals()
        self.wake = threading.Event()
        self.port = 0
        self.started = ""
        self._hooks: tuple[Callable[[], Any], Callable[[BatchReport, Any], None]] = (dict, lambda report, infos: None)
        self._readers: Any = None  # the run's reader pool (None: decode in this process)
        self._index_due = False  # batches committed since the last index update
        self._indexed_at = time.monotonic()  # when the indexes were last updated

    def run(
        self,
        update_index: Callable[[], Any],
        on_batch: Callable[[BatchReport, Any], None],
        on_listening: Callable[[int], None],
    ) -> Totals:
        """Receive and index until SIGTERM or Ctrl-C; returns the totals. After each batch `update_index()`,
        then `on_batch(report, what update_index returned)` once the batch's files are gone."""
        self._hooks = (update_index, on_batch)
        with sigterm_unwinds(), writer_lock(self.out_dir, "radretrieve listen", wait=self.options.wait):
            open_out_dir(self.out_dir, self.model, overwrite=False, anonymise=True)
            spool = Spool(self.out_dir)
            found = spool.recover()
            self.totals = Totals.load(self.out_dir)
            self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            scp = ReceivingScp(spool, self.options.scp, self.counters, self.wake.set)
            self.port = scp.port
            try:
                self._write_status("running", spool)
                on_listening(self.port)
                if found:
                    log.info("%d study(ies) received before the restart: indexed once they settle", found)
                self._readers = start_readers(self.options.workers)
                self._loop(spool)
            except KeyboardInterrupt:
                log.info("stopping (Ctrl-C)")
            finally:
                scp.shutdown()  # no new association; open ones aborted (what they had acknowledged is on disk)
                if self._readers is not None:
                    self._readers.close()
                    self._readers = None
                self._write_status("stopped", spool)
        return self.totals

    def _loop(self, spool: Spool) -> None:
        number, shown = 0, (-1, -1)
        pending = spool.batch_pending()
        if pending is not None:
            log.info("indexing %d study(ies) a previous run had taken but not finished", pending.studies)
        while True:
            taken = pending or spool.take_ready(self.options.settle, self.options.batch_studies)
            pending = None
            if taken is None:
                if self._index_due:  # nothing to take now: the indexes catch up with what is committed
                    self._catch_up(number)
                waiting = spool.waiting()
                if waiting != shown and waiting[0]:
                    log.info("waiting: %d study(ies) in the spool, %d still being sent", *waiting)
                shown = waiting
                self.wake.wait(min(1.0, max(0.05, self.options.settle / 4)))
                self.wake.clear()
                continue
            number += 1
            if not self._index(spool, taken, number):
                time.sleep(min(30.0, max(1.0, self.options.settle)))  # a failed batch stays in batch/: retried
                pending = spool.batch_pending()

    def _index(self, spool: Spool, taken: Taken, number: int) -> bool:
        o = self.options
        log.info("indexing %d series of %d study(ies) (%d instances)", taken.series, taken.studies, taken.instances)
        settings = IndexOptions(
            workers=o.workers,
            batch_size=o.batch_size,
            studies_per_task=o.batch_studies,
            progress=False,
            policy=o.policy,
        )
        try:
            summary = index_opened(spool.batch, self.out_dir, self.model, settings, self._readers)
            _keep_scan_errors(self.out_dir)
            # the batch's files are removed below: no folder to draw previews from (as for a server's sources)
            write_remote_root(self.out_dir, f"pushed to {self.options.scp.aet} (radretrieve listen)")
            self.totals.add_rows(summary)
        except RadRetrieveError as exc:
            self.totals.failed_batches += 1
            log.error("batch %d not indexed (kept in the spool, retried): %s", number, exc)
            self._write_status("running", spool)
            return False
        self._index_due = True
        infos = self._catch_up(number) if self._index_now(spool) else {}
        spool.clear_batch()  # its rows are in committed shards (the index is updated, or will be)
        self.totals.add_batch(taken)
        self._write_status("running", spool)
        received = (self.counters.instances, self.counters.refused)
        self._hooks[1](BatchReport(number, taken, summary, spool.waiting(), received), infos)
        return True

    def _index_now(self, spool: Spool) -> bool:
        """Whether to update the indexes after this batch: no other batch is ready to be taken (the update would
        be the last for a while), or the last update is `index_every` seconds old."""
        overdue = time.monotonic() - self._indexed_at >= self.options.index_every
        return overdue or not spool.has_ready(self.options.settle)

    def _catch_up(self, number: int) -> dict[str, Any]:
        """The indexes updated with every committed batch (the update adds what they lack, however many)."""
        infos = self._update_index(number)
        self._index_due, self._indexed_at = False, time.monotonic()  # a failure waits for the next batch too
        return infos

    def _update_index(self, number: int) -> dict[str, Any]:
        """The FAISS indexes updated with what is committed. A failure here (a damaged index file or shard) is
        logged and the batch is still done: its rows are in committed shards, and keeping it would stop every
        later study behind it; the next batch's update (or `radretrieve build-index OUT`) catches up."""
        try:
            return self._hooks[0]()
        except RadRetrieveError as exc:
            self.totals.index_failures += 1
            log.error(
                "batch %d indexed, but the search index was not updated (tried again after the next "
                "batch; radretrieve build-index OUT repairs it now): %s",
                number,
                exc,
            )
            return {}

    def _write_status(self, state: str, spool: Spool) -> None:
        waiting, sending = spool.waiting()
        data = {
            "state": state,
            "started": self.started,
            "port": self.port,
            "aet": self.options.scp.aet,
            "settle_s": self.options.settle,
            "waiting_studies": waiting,
            "sending_studies": sending,
            "totals": self.totals.to_dict(self.counters),
        }
        atomic_write_text(self.out_dir / LISTEN_FILE, json.dumps(data, indent=1))


def _keep_scan_errors(out_dir: Path) -> None:
    """Fold the batch's scan-level records (rewritten by every scan) into errors/received.jsonl, once each, so
    that the skips and scan failures of earlier batches stay counted."""
    scan = out_dir / ERROR_DIR / SCAN_ERRORS
    if not scan.is_file():
        return
    kept = out_dir / ERROR_DIR / RECEIVED_ERRORS
    lines = kept.read_text(encoding="utf-8").splitlines() if kept.is_file() else []
    seen = set(lines)
    lines += [line for line in scan.read_text(encoding="utf-8").splitlines() if line.strip() and line not in seen]
    atomic_write_bytes(kept, "".join(line + "\n" for line in lines).encode())
    scan.unlink()
