"""The local engine: reader processes feeding one encoder; shards written as tasks complete.

Memory stays bounded by workers x prefetch decoded items plus one encoder batch: at most `window` decode
jobs are in flight, and results are consumed in submission order.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pipelines.plan import Task, WorkItem
from pipelines.stages import Decoded, EncodeBatcher, decode
from pipelines.tracker import Finish, StageTimes, TaskTracker


def _init_worker() -> None:
    """Readers are single-threaded (the encoder in the main process already uses every core's threads),
    and import the readers now, while the job is still scanning and planning, not on their first item."""
    import torch

    import radretrieve.archive  # noqa: F401 - warm-up: pydicom, nibabel, torch ops

    torch.set_num_threads(1)


def start_readers(workers: int) -> Any:
    """A pool of `workers` reader processes (None for 0), started early so their start-up is hidden.

    spawn, not fork: the parent holds torch thread pools that a forked child must not inherit.
    """
    if workers <= 0:
        return None
    return mp.get_context("spawn").Pool(workers, initializer=_init_worker)


def _decode_star(args: tuple[WorkItem, Path, Any]) -> Decoded:
    return decode(*args)


def run_local(
    tasks: Sequence[Task],
    root: Path,
    model: Any,
    batch_slices: int,
    workers: int,
    finish: Finish,
    on_item: Callable[[Decoded], None] = lambda d: None,
    pool: Any = None,
) -> StageTimes:
    """Decode, encode and finish every task; `finish(task, rows, failures)` writes its shard.

    `pool`: readers from `start_readers` (the caller closes it); without one, a pool of `workers` is made here.
    """
    times = StageTimes()
    batcher = EncodeBatcher(model, batch_slices)
    tracker = TaskTracker(model, finish, times)
    for decoded in _decoded_stream(tasks, root, model.config.preprocess, workers, tracker, pool):
        times.decode += decoded.seconds
        on_item(decoded)
        if decoded.failure is not None:
            tracker.add_failure(decoded.work.item_id, decoded.failure)
        else:
            tracker.add_rows(batcher.add(decoded))
    tracker.add_rows(batcher.flush())
    times.encode, times.slices = batcher.seconds, batcher.slices
    return times


def _decoded_stream(
    tasks: Sequence[Task], root: Path, preprocess: Any, workers: int, tracker: TaskTracker, pool: Any
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
    pool = start_readers(workers) if own else pool
    window = max(4, workers * 4)
    try:
        inflight: collections.deque = collections.deque()
        for args in jobs():
            inflight.append(pool.apply_async(_decode_star, (args,)))
            if len(inflight) >= window:
                yield inflight.popleft().get()
        while inflight:
            yield inflight.popleft().get()
    finally:
        if own:
            pool.terminate()
