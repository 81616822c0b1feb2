"""The local engine: reader processes feeding one encoder; shards written as tasks complete.

Decode jobs are submitted ahead of the encoder up to `PREFETCH_BATCHES` encoder batches' worth of slices, so
the readers keep decoding the next batch while the encoder runs (with a window of a few items instead, the
readers ran dry half-way through each encoder call). Memory stays bounded by that window plus one encoder
batch, whatever the archive's size; results are consumed in submission order. A reader that dies (OOM kill,
decoder crash) is replaced and its items retried (pipelines.readers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.plan import Task, WorkItem
from pipelines.readers import ReaderPool, Window, ordered_map
from pipelines.stages import Decoded, EncodeBatcher, Failure, decode, stat_digest
from pipelines.tracker import Finish, StageTimes, TaskTracker
from radretrieve.models.protocol import Encoder

PREFETCH_BATCHES = 2  # encoder batches of slices decoded or being decoded ahead of the encoder
CRASH_MESSAGE = "the reader process died decoding it, twice (out of memory, or a decoder crash)"


def start_readers(workers: int) -> ReaderPool | None:
    """A pool of `workers` reader processes (None for 0), started now so that their start-up (a new interpreter
    importing the decoders, about a second each) is hidden behind the caller's work: the executor would start
    them one at a time, on demand, as the scan submits its first header reads."""
    if workers <= 0:
        return None
    pool = ReaderPool(workers)
    for _ in range(workers):  # a job for each that finds no idle reader: each submit starts one more process
        pool.submit(os.getpid)
    return pool


def _decode_star(args: tuple[WorkItem, Path, Any]) -> Decoded:
    return decode(*args)


def worker_crashed(args: tuple[WorkItem, Path, Any]) -> Decoded:
    """The result for an item that killed its reader twice: a `WorkerCrashed` failure at the read stage."""
    work, root = args[0], args[1]
    message = f"{work.item.source}: {CRASH_MESSAGE}"
    fail = Failure(work.item_id, work.item.source, "read", "WorkerCrashed", message, stat_digest(root, work.item.files))
    return Decoded(work, None, failure=fail)


def run_local(
    tasks: Sequence[Task],
    root: Path,
    model: Encoder,
    batch_slices: int,
    workers: int,
    finish: Finish,
    on_item: Callable[[Decoded], None] = lambda d: None,
    pool: ReaderPool | None = None,
) -> StageTimes:
    """Decode, encode and finish every task; `finish(task, rows, failures)` writes its shard.

    `pool`: readers from `start_readers` (the caller closes it); without one, a pool of `workers` is made here.
    """
    times = StageTimes()
    window = SliceWindow(PREFETCH_BATCHES * batch_slices, max(4, workers * 4), model.config.preprocess.n_slices)
    was_training = model.training
    model.eval()  # once, up front: the encoder thread must not toggle train/eval under the caller
    batcher = EncodeBatcher(model, batch_slices)
    # a task's reports go to the encoder thread as the task opens: the readers decode its images meanwhile
    tracker = TaskTracker(model, finish, times, reports=batcher.add_reports)
    try:
        stream = _decoded_stream(tasks, root, model.config.preprocess, workers, tracker, pool, window)
        for decoded in _timed(stream, times):
            times.decode += decoded.seconds
            on_item(decoded)
            if decoded.failure is not None:
                tracker.add_failure(decoded.work.item_id, decoded.failure)
            else:
                tracker.add_rows(batcher.add(decoded))
        tracker.add_rows(batcher.flush())
    finally:
        batcher.close()
        model.train(was_training)
    times.encode, times.slices, times.text_encode = batcher.seconds, batcher.slices, batcher.text_seconds
    return times


def _timed(stream: Iterator[Decoded], times: StageTimes) -> Iterator[Decoded]:
    """`stream`, adding the time spent waiting for each next item to `times.decode_wait` (it includes the
    report and write work done on this thread while the next decode job is submitted)."""
    while True:
        start = time.perf_counter()
        try:
            decoded = next(stream)
        except StopIteration:
            return
        finally:
            times.decode_wait += time.perf_counter() - start
        yield decoded


@dataclass(frozen=True)
class SliceWindow:
    """How far decoding may run ahead: `slices` slices (estimated from the item kind) and at least `items`."""

    slices: int  # slice budget of the submitted-but-not-consumed items
    items: int  # items always allowed in flight, however large they are
    depth: int  # slices per volume at most (the preprocessing's depth): the estimate for a volume

    def cost(self, work: WorkItem) -> int:
        return 1 if work.item.kind == "image" else self.depth

    def full(self, n_items: int, n_slices: int) -> bool:
        return n_items >= self.items and n_slices >= self.slices


def _decoded_stream(
    tasks: Sequence[Task],
    root: Path,
    preprocess: Any,
    workers: int,
    tracker: TaskTracker,
    pool: ReaderPool | None,
    window: SliceWindow,
) -> Iterator[Decoded]:
    """Open each task in turn and yield its decoded items in order."""

    def jobs() -> Iterator[tuple[WorkItem, Path, Any]]:
        for task in tasks:
            tracker.register(task)
            yield from ((w, root, preprocess) for w in task.work if w.item is not None)

    if workers <= 0:
        for args in jobs():
            yield _decode_star(args)
        return
    own = pool is None
    pool = ReaderPool(workers) if own else pool
    try:
        limits = Window(window.slices, window.items)
        yield from ordered_map(pool, _decode_star, jobs(), limits, worker_crashed, lambda a: window.cost(a[0]))
    finally:
        if own:
            pool.close()
