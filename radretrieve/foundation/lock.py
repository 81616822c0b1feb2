"""One writer per folder: an exclusive lock that every writing command holds on its out dir (or model dir).

The lock is `flock` on `FOLDER/.lock`, so the kernel drops it when the holder dies, however it dies: a lock
left by a killed process is simply free again, and the next writer takes it over (and says so). The file
also records the holder (pid, host, start time, command) so that a second writer can say who holds it.
Readers never take it: every file they read is written atomically and listed in a manifest only when whole.

The lock belongs to one thread. It is re-entrant within that thread: `radretrieve index` holds it and the
index build it runs at the end takes it again without waiting for itself. Another thread of the same process
(a service that writes, a library user with a thread pool) is a second writer like another process: it waits
for the lock or is refused with `Locked`, by the same `wait` rule. `flock` alone could not tell the threads of
one process apart when they share a descriptor, so a table of the locks this process holds, keyed by folder,
records the owning thread; the `flock` is taken only by the thread that finds the folder free in that table.
The table is per process: a forked child starts with it empty (`_forget_in_child`), so it is a second writer
too, not a re-entry of the lock its parent holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from radretrieve.foundation.errors import RadRetrieveError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
POLL_SECONDS = 0.5  # how often a waiting writer retries


class Locked(RadRetrieveError):
    """Another process is writing the folder."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a folder's lock, as recorded in its lock file."""

    pid: int
    host: str
    started: str  # ISO 8601, UTC
    command: str  # e.g. "radretrieve index"

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.started} ({self.command})"


@dataclass
class _Hold:
    """A lock this process holds (or one of its threads is taking): who, and how deep."""

    thread: int  # threading.get_ident() of the owning thread
    thread_name: str  # for the message a second thread gets
    command: str  # the owner's command
    fd: int = -1  # the flocked lock file; -1 while the owner is still taking the flock
    depth: int = 1  # nested `writer_lock` blocks of the owner


_held: dict[Path, _Hold] = {}  # folder -> the lock held by one thread of this process
_held_cond = threading.Condition()  # guards `_held`; notified whenever a lock is released


def _forget_in_child() -> None:
    """A forked child holds none of its parent's locks: the table is per process. Without this the child's
    thread (which has the forking thread's ident) would re-enter a lock its parent holds, without the flock,
    and write beside it. The child's copies of the lock descriptors are closed (the parent's flock stays: it
    is released only when the parent closes its own), so a child that outlives its parent holds nothing. A new
    condition: another thread of the parent may have held the old one's lock at the fork, and never frees it."""
    global _held, _held_cond
    for hold in _held.values():
        if hold.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(hold.fd)
    _held, _held_cond = {}, threading.Condition()


os.register_at_fork(after_in_child=_forget_in_child)


def _read_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"]), str(data["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record(fd: int, command: str) -> None:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": command})
    os.ftruncate(fd, 0)
    os.pwrite(fd, body.encode() + b"\n", 0)
    os.fsync(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _acquire(folder: Path, command: str, wait: float) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + max(0.0, wait)
    said = False
    while not _try_lock(fd):
        holder = _read_holder(path)
        who = holder.describe() if holder else "another process"
        if time.monotonic() >= deadline:
            os.close(fd)
            hint = " (pass --wait to wait for it)" if wait == 0 else f" (waited {wait:g} s)"
            raise Locked(f"{folder} is being written by {who}{hint}")
        if not said:
            log.info("%s is being written by %s; waiting", folder, who)
            said = True
        time.sleep(POLL_SECONDS)
    previous = _read_holder(path)
    if previous is not None and previous.pid != os.getpid():
        log.info("took over the lock of %s left by %s, which is no longer running", folder, previous.describe())
    _record(fd, command)
    return fd


@contextlib.contextmanager
def writer_lock(folder: Path, command: str | None = None, wait: float = 0.0) -> Iterator[Path]:
    """Hold the exclusive writer lock of `folder` (created if missing) for the `with` block.

    `wait`: seconds to wait for another writer, another process or another thread of this one (0: fail at once
    with `Locked`, naming the holder; `inf`: wait as long as it takes). Yields the folder.
    """
    key = Path(folder).resolve()
    command = command or "radretrieve"
    deadline = time.monotonic() + max(0.0, wait)
    if _enter(key, command, wait, deadline):
        try:
            fd = _acquire(key, command, max(0.0, deadline - time.monotonic()))  # what is left of `wait`
        except BaseException:
            _release(key)
            raise
        with _held_cond:
            _held[key].fd = fd
    try:
        yield key
    finally:
        _release(key)


def _enter(key: Path, command: str, wait: float, deadline: float) -> bool:
    """Count this thread in on `key`'s lock: True when it must take the flock itself, False when it already
    holds the lock (re-entry). Waits while another thread of this process holds it; `Locked` past `wait`."""
    me = threading.get_ident()
    said = False
    with _held_cond:
        while True:
            hold = _held.get(key)
            if hold is None:
                _held[key] = _Hold(me, threading.current_thread().name, command)
                return True
            if hold.thread == me:
                hold.depth += 1
                return False
            left = deadline - time.monotonic()
            who = f"thread {hold.thread_name!r} of this process (pid {os.getpid()}, {hold.command})"
            if left <= 0:
                hint = " (pass --wait to wait for it)" if wait == 0 else f" (waited {wait:g} s)"
                raise Locked(f"{key} is being written by {who}{hint}")
            if not said:
                log.info("%s is being written by %s; waiting", key, who)
                said = True
            _held_cond.wait(min(left, POLL_SECONDS))


def _release(key: Path) -> None:
    """Leave one level of this thread's lock on `key`; the last level releases the flock and wakes waiters."""
    with _held_cond:
        hold = _held.get(key)
        if hold is None:  # a forked child leaving a block its parent entered: the parent's lock, not its own
            return
        if hold.depth > 1:
            hold.depth -= 1
            return
        del _held[key]
        if hold.fd >= 0:
            os.ftruncate(hold.fd, 0)  # a clean exit leaves no holder record: only a killed holder's remains
            os.close(hold.fd)  # closing the descriptor releases the flock
        _held_cond.notify_all()


def holds_lock(folder: Path) -> bool:
    """Whether the calling thread holds `folder`'s writer lock."""
    with _held_cond:
        hold = _held.get(Path(folder).resolve())
        return hold is not None and hold.thread == threading.get_ident()


def current_holder(folder: Path) -> Holder | None:
    """The process recorded in `folder`'s lock file if it still holds the lock, else None."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read_holder(path)
    finally:
        os.close(fd)
