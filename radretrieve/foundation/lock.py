"""One writer per folder: an exclusive lock that every writing command holds on its out dir (or model dir).

The lock is `flock` on `FOLDER/.lock`, so the kernel drops it when the holder dies, however it dies: a lock
left by a killed process is simply free again, and the next writer takes it over (and says so). The file
also records the holder (pid, host, start time, command) so that a second writer can say who holds it.
Readers never take it: every file they read is written atomically and listed in a manifest only when whole.

The lock is re-entrant within a process (not a lock between threads): `radretrieve index` holds it and the
index build it runs at the end takes it again without waiting for itself.
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


_held: dict[Path, tuple[int, int]] = {}  # folder -> (fd, depth) for the locks this process holds
_held_guard = threading.Lock()


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

    `wait`: seconds to wait for another writer (0: fail at once with `Locked`, naming the holder; `inf`: wait
    as long as it takes). Yields the folder.
    """
    key = Path(folder).resolve()
    command = command or "radretrieve"
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            _held[key] = (held[0], held[1] + 1)
    if held is None:
        fd = _acquire(key, command, wait)
        with _held_guard:
            _held[key] = (fd, 1)
    try:
        yield key
    finally:
        with _held_guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                os.ftruncate(fd, 0)  # a clean exit leaves no holder record: only a killed holder's remains
                os.close(fd)  # closing the descriptor releases the flock


def holds_lock(folder: Path) -> bool:
    """Whether this process holds `folder`'s writer lock."""
    with _held_guard:
        return Path(folder).resolve() in _held


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
