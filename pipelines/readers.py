"""Reader processes that survive a lost worker: an OOM kill or a decoder crash costs one retry, never a hang.

`ReaderPool` wraps a `ProcessPoolExecutor` (spawn). The executor notices a dead worker at once (it waits on
every worker's process sentinel), fails every pending future with `BrokenProcessPool` and refuses new work
with the same error. `ordered_map` meets the broken pool wherever it shows (a result, or the next submit:
which one depends on whether the consumer was waiting when the worker died), starts a fresh pool and runs
each item that was in flight and unfinished once more, alone, so that a crash can be blamed on one item;
results that were already back are kept, and items the broken pool refused are submitted again as usual.
An item whose lone retry kills a worker too (the second death it was present for) gets the caller's
`crashed(item)` result instead (a `WorkerCrashed` error record), and the map goes on: every item costs at
most two runs, whatever dies.

One death the executor never notices: a reader killed while it writes a result leaves half a message in the
result pipe, and the executor's thread waits for the rest forever. A waiting consumer therefore checks the
readers itself; one dead for `STALL_SECONDS` with the pool not broken means this, and the pool starts afresh
as above (the stuck thread is ended too: the interpreter joins it at exit).

Readers never outlive the job: `close` kills and reaps them (the job calls it on every exit path, Ctrl-C and
SIGTERM included), and each reader exits by itself when its parent is gone, even a parent killed with
SIGKILL that ran no cleanup (a reader would otherwise wait on its task queue forever).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
READER_NICENESS = 10  # added to the readers' nice value (radclip-tiny, 2 cores: 1.81 -> 1.91 cores busy)
PARENT_POLL_SECONDS = 0.5  # how often a reader checks its parent where the kernel cannot tell it (no pidfd)
REAP_SECONDS = 10.0  # how long `close` waits for a killed reader to be gone
# A reader killed while it writes a result leaves half a message in the executor's result pipe: the executor's
# thread then waits for the rest forever and never declares the pool broken. The job checks its readers itself
# while it waits: one dead this long without the executor noticing means the pool is stuck (it notices in ms).
STALL_SECONDS = 10.0
WATCH_SECONDS = 0.5  # how often a waiting consumer checks for such a reader
UNSTICK_SECONDS = 10.0  # how long to feed a stuck executor thread before giving up on it


def _init_worker(parent: int, log_level: int = logging.WARNING) -> None:
    """Tie the reader to its parent, then import the readers now, while the job is still scanning and
    planning, not on their first item.

    Readers never import torch (preprocessing is numpy and Pillow): that would cost each one about 0.5 GB.
    They run at a lower priority than the encoder: they work ahead of it anyway, and a reader that preempts
    one of the encoder's intra-op threads stalls the whole thread team.
    """
    import signal

    # Ctrl-C goes to the whole process group: the parent alone decides, and kills its readers as it unwinds
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a spawned reader starts with no logging set up: without this, a decoder's warnings (pydicom's UserWarnings)
    # and its log records reach the terminal raw, unescaped, and past the parent's level (-q)
    from radretrieve.foundation.terminal import configure_logging

    configure_logging(log_level)
    _exit_with_parent(parent)
    os.nice(READER_NICENESS)
    import radretrieve.archive  # noqa: F401 - warm-up: pydicom, nibabel


def _exit_with_parent(parent: int) -> None:
    """Exit this process as soon as `parent` has exited, on a daemon thread.

    Not PR_SET_PDEATHSIG: the kernel sends that when the *thread* that started the child exits, and the
    executor starts readers from whichever thread submits. A pidfd wakes the watcher when the parent exits;
    where there is none, it polls its parent pid (a reparented child sees another one)."""

    def watch() -> None:
        try:
            import select

            fd = os.pidfd_open(parent)
            if os.getppid() == parent:  # opened before the parent went (else the pid may be someone else's)
                select.select([fd], [], [])
        except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll
            import time

            while os.getppid() == parent:
                time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class ReaderPool:
    """`workers` reader processes (spawn: the parent holds torch thread pools a forked child must not
    inherit), restarted as a whole when one of them dies. A context manager: leaving it closes the pool."""

    def __init__(self, workers: int, stall_seconds: float = STALL_SECONDS) -> None:
        if workers < 1:
            raise ValueError(f"a reader pool needs at least one worker, got {workers}")
        self.workers = workers
        self.stall_seconds = stall_seconds
        self.restarts = 0  # how many times a dead worker forced a fresh pool
        self._executor = self._new()
        self._dead_since: float | None = None  # when `stalled` first saw a dead reader in this executor

    def _new(self) -> ProcessPoolExecutor:
        ctx = mp.get_context("spawn")
        return ProcessPoolExecutor(
            self.workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(), logging.getLogger().level)
        )

    def submit(self, fn: Callable[..., R], *args: Any) -> Future:
        """`fn(*args)` in a reader; raises `BrokenProcessPool` once a reader of this pool has died."""
        return self._executor.submit(fn, *args)

    def restart(self) -> None:
        """Drop the broken executor (its survivors are killed and reaped) and start a fresh one."""
        self._kill(self._executor)
        self._executor = self._new()
        self._dead_since = None
        self.restarts += 1

    def stalled(self) -> bool:
        """Has a reader of this pool been dead for `stall_seconds` without the executor breaking the pool?"""
        procs = list((self._executor._processes or {}).values())
        if not any(proc.exitcode is not None for proc in procs):
            return False
        now = time.monotonic()
        if self._dead_since is None:
            self._dead_since = now
        return now - self._dead_since >= self.stall_seconds

    def pids(self) -> list[int]:
        """Pids of the live worker processes (for tests and diagnostics)."""
        return [p.pid for p in list((self._executor._processes or {}).values()) if p.is_alive()]

    def close(self) -> None:
        """Kill the readers and reap them: none is left when this returns."""
        self._kill(self._executor)

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _kill(executor: ProcessPoolExecutor) -> None:
        procs = list((executor._processes or {}).values())
        thread, results = executor._executor_manager_thread, executor._result_queue  # shutdown drops both
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        executor.shutdown(wait=False, cancel_futures=True)
        for proc in procs:  # the executor's own thread reaps them too: whoever comes first, they are gone
            proc.join(REAP_SECONDS)
            if _still_running(proc):
                log.warning("reader process %d did not exit %.0f s after SIGKILL", proc.pid, REAP_SECONDS)
        _unstick(thread, results)


def _still_running(proc: Any) -> bool:
    """Is `proc` still running? Not `is_alive()` alone: when the executor's thread reaped the process first,
    this thread's `waitpid` fails with ECHILD before that thread has recorded the exit code, and multiprocessing
    then reports the dead process as alive (CI printed a false "did not exit" warning so)."""
    if proc.exitcode is not None:
        return False
    try:
        pid, _ = os.waitpid(proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped already, by the executor's thread
        return False
    return pid == 0


def _unstick(thread: threading.Thread | None, results: Any) -> None:
    """End an executor thread stuck on half a message of a killed reader (see STALL_SECONDS).

    Every reader is dead by now, but the parent holds the pipe's write end too, so no end-of-file comes. Zeros
    fill the missing bytes: the message then fails to unpickle, the thread declares the pool broken and ends,
    and the interpreter, which joins executor threads at exit, can exit. The executor is discarded anyway."""
    if thread is None or results is None or not thread.is_alive():
        return
    thread.join(WATCH_SECONDS)
    if not thread.is_alive():
        return
    fd = results._writer.fileno()
    os.set_blocking(fd, False)
    deadline = time.monotonic() + UNSTICK_SECONDS
    while thread.is_alive() and time.monotonic() < deadline:
        try:
            os.write(fd, bytes(1 << 16))
        except BlockingIOError:
            pass
        thread.join(0.01)
    if thread.is_alive():
        log.warning("a reader pool's executor thread is still waiting on a dead reader")


@dataclass(frozen=True)
class Window:
    """How far submission may run ahead of consumption: `budget` cost units, and at least `min_items` items."""

    budget: int  # cost units submitted but not yet consumed
    min_items: int  # items always allowed in flight, however costly

    def full(self, n_items: int, cost: int) -> bool:
        return n_items >= self.min_items and cost >= self.budget


@dataclass
class _Job(Generic[T]):
    """One item of `ordered_map` between its submission and its result."""

    item: T
    cost: int
    future: Future | None = None  # None: the pool was broken when it was submitted (it never ran)


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
    inflight: collections.deque[_Job] = collections.deque()  # oldest first
    for item in items:
        job = _Job(item, cost(item))
        _send(pool, fn, job)
        inflight.append(job)
        while inflight and window.full(len(inflight), sum(j.cost for j in inflight)):
            yield _take(pool, fn, inflight, crashed)
    while inflight:
        yield _take(pool, fn, inflight, crashed)


def _send(pool: ReaderPool, fn: Callable[[T], R], job: _Job) -> None:
    try:
        job.future = pool.submit(fn, job.item)
    except BrokenProcessPool:
        job.future = None  # a reader died since the last result: recovered when this job's turn comes


def _take(pool: ReaderPool, fn: Callable[[T], R], inflight: collections.deque, crashed: Callable[[T], R]) -> R:
    """The oldest job's result, after recovering from a broken pool as often as it takes (each recovery
    finishes at least the lost jobs, so this ends)."""
    while True:
        job = inflight[0]
        if job.future is not None:
            try:
                result = job.future.result(timeout=WATCH_SECONDS)
                inflight.popleft()
                return result
            except FuturesTimeout:
                if not pool.stalled():
                    continue
                log.warning("a reader died in the middle of sending a result; the reader pool starts afresh")
            except BrokenProcessPool:
                pass
        _recover(pool, fn, inflight, crashed)


def _lost(future: Future | None) -> bool:
    """Was this job in the broken pool without a result (running or queued when a reader died)?"""
    if future is None:
        return False
    if not future.done() or future.cancelled():
        return True
    return isinstance(future.exception(), BrokenProcessPool)


def _recover(pool: ReaderPool, fn: Callable[[T], R], inflight: collections.deque, crashed: Callable[[T], R]) -> None:
    """A fresh pool; each lost job runs again alone (its result or `crashed`), the refused ones are resent."""
    lost = [job for job in inflight if _lost(job.future)]
    log.warning("a reader process died; retrying the %d item(s) it may have held, one at a time", len(lost))
    pool.restart()
    for job in lost:
        done: Future = Future()
        done.set_result(run_alone(pool, fn, job.item, crashed))
        job.future = done
    for job in inflight:
        if job.future is None:
            _send(pool, fn, job)


def run_alone(pool: ReaderPool, fn: Callable[[T], R], item: T, crashed: Callable[[T], R]) -> R:
    """`fn(item)` with nothing else in flight; `crashed(item)` if it kills its worker."""
    future = pool.submit(fn, item)
    while True:
        try:
            return future.result(timeout=WATCH_SECONDS)
        except FuturesTimeout:
            if not pool.stalled():
                continue
        except BrokenProcessPool:
            pass
        pool.restart()
        return crashed(item)
