"""The local engine: reader processes feeding one encoder; shards written as tasks complete.

Decode jobs are submitted ahead of the encoder up to `PREFETCH_BATCHES` encoder batches' worth of slices, so
the readers keep decoding the next batch while the encoder runs (with a window of a few items instead, the
readers ran dry half-way through each encoder call). Memory stays bounded by that window plus one encoder
batch, whatever the archive's size; results are consumed in submission order.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.plan import Task, WorkItem
from pipelines.stages import Decoded, EncodeBatcher, decode
from pipelines.tracker import Finish, StageTimes, TaskTracker
from radretrieve.models.protocol import Encoder

PREFETCH_BATCHES = 2  # encoder batches of slices decoded or being decoded ahead of the encoder
READER_NICENESS = 10  # added to the readers' nice value (radclip-tiny, 2 cores: 1.81 -> 1.91 cores busy)


def _init_worker() -> None:
    """Import the readers now, while the job is still scanning and planning, not on their first item.

    Readers never import torch (preprocessing is numpy and Pillow): that would cost each one about 0.5 GB.
    They run at a lower priority than the encoder: they work ahead of it anyway (see PREFETCH_BATCHES),
    and a reader that preempts one of the encoder's intra-op threads stalls the whole thread team.
    """
    import os

    os.nice(READER_NICENESS)
    import radretrieve.archive  # noqa: F401 - warm-up: pydicom, nibabel


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
    model: Encoder,
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
    tracker = TaskTracker(model, finish, times)
    window = Window(PREFETCH_BATCHES * batch_slices, max(4, workers * 4), model.config.preprocess.n_slices)
    was_training = model.training
    model.eval()  # once, up front: the encoder thread must not toggle train/eval under the caller
    batcher = EncodeBatcher(model, batch_slices)
    try:
        for decoded in _decoded_stream(tasks, root, model.config.preprocess, workers, tracker, pool, window):
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
    times.encode, times.slices = batcher.seconds, batcher.slices
    return times


@dataclass(frozen=True)
class Window:
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
    pool: Any,
    window: Window,
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
    try:
        inflight: collections.deque = collections.deque()  # (async result, estimated slices)
        slices = 0
        for args in jobs():
            inflight.append((pool.apply_async(_decode_star, (args,)), window.cost(args[0])))
            slices += inflight[-1][1]
            while window.full(len(inflight), slices):
                result, cost = inflight.popleft()
                slices -= cost
                yield result.get()
        while inflight:
            yield inflight.popleft()[0].get()
    finally:
        if own:
            pool.terminate()
