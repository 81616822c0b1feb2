"""Reader processes that survive a lost worker: an OOM kill or a decoder crash costs one retry, never a hang.

`ReaderPool` wraps a `ProcessPoolExecutor` (spawn). The executor notices a dead worker at once (it waits on
every worker's process sentinel) and fails every pending future with `BrokenProcessPool`; `ordered_map` then
starts a fresh pool and retries each item that was in flight once, alone, so that a crash can be blamed on
one item. An item whose lone retry kills a worker too (the second death it was present for) gets the
caller's `crashed(item)` result instead (a `WorkerCrashed` error record), and the map goes on.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
READER_NICENESS = 10  # added to the readers' nice value (radclip-tiny, 2 cores: 1.81 -> 1.91 cores busy)


def _init_worker() -> None:
    """Import the readers now, while the job is still scanning and planning, not on their first item.

    Readers never import torch (preprocessing is numpy and Pillow): that would cost each one about 0.5 GB.
    They run at a lower priority than the encoder: they work ahead of it anyway, and a reader that preempts
    one of the encoder's intra-op threads stalls the whole thread team.
    """
    import os

    os.nice(READER_NICENESS)
    import radretrieve.archive  # noqa: F401 - warm-up: pydicom, nibabel


class ReaderPool:
    """`workers` reader processes (spawn: the parent holds torch thread pools a forked child must not
    inherit), restarted as a whole when one of them dies."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a reader pool needs at least one worker, got {workers}")
        self.workers = workers
        self.restarts = 0  # how many times a dead worker forced a fresh pool
        self._executor = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)

    def submit(self, fn: Callable[..., R], *args: Any) -> Future:
        return self._executor.submit(fn, *args)

    def restart(self) -> None:
        """Drop the broken executor (its survivors are killed) and start a fresh one."""
        self._kill(self._executor)
        self._executor = self._new()
        self.restarts += 1

    def pids(self) -> list[int]:
        """Pids of the live worker processes (for tests and diagnostics)."""
        return [p.pid for p in (self._executor._processes or {}).values() if p.is_alive()]

    def close(self) -> None:
        self._kill(self._executor)

    @staticmethod
    def _kill(executor: ProcessPoolExecutor) -> None:
        for proc in list((executor._processes or {}).values()):
            if proc.is_alive():
                proc.kill()
        executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Window:
    """How far submission may run ahead of consumption: `budget` cost units, and at least `min_items` items."""

    budget: int  # cost units submitted but not yet consumed
    min_items: int  # items always allowed in flight, however costly

    def full(self, n_items: int, cost: int) -> bool:
        return n_items >= self.min_items and cost >= self.budget


def ordered_map(
    pool: ReaderPool,
    fn: Callable[[T], R],
    items: Iterable[T],
    window: Window,
    crashed: Callable[[T], R],
    cost: Callable[[T], int] = lambda item: 1,
) -> Iterator[R]:
    """`fn(item)` for each item, computed in `pool`, yielded in input order, at most `window` ahead.

    A worker's death does not lose an item: see the module docstring. `fn` must be a picklable top-level
    function (or a functools.partial of one)."""
    inflight: collections.deque = collections.deque()  # (item, future, cost), oldest first
    for item in items:
        inflight.append((item, pool.submit(fn, item), cost(item)))
        while inflight and window.full(len(inflight), sum(c for _, _, c in inflight)):
            yield from _take(pool, fn, inflight, crashed)
    while inflight:
        yield from _take(pool, fn, inflight, crashed)


def _take(
    pool: ReaderPool, fn: Callable[[T], R], inflight: collections.deque, crashed: Callable[[T], R]
) -> Iterator[R]:
    item, future, _ = inflight.popleft()
    try:
        yield future.result()
        return
    except BrokenProcessPool:
        pass
    suspects = [item] + [other for other, _, _ in inflight]
    inflight.clear()
    log.warning("a reader process died; retrying the %d item(s) it may have held, one at a time", len(suspects))
    pool.restart()
    for suspect in suspects:
        yield run_alone(pool, fn, suspect, crashed)


def run_alone(pool: ReaderPool, fn: Callable[[T], R], item: T, crashed: Callable[[T], R]) -> R:
    """`fn(item)` with nothing else in flight; `crashed(item)` if it kills its worker."""
    try:
        return pool.submit(fn, item).result()
    except BrokenProcessPool:
        pool.restart()
        return crashed(item)
