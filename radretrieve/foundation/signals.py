"""SIGTERM as a Python exit: `finally` blocks and context managers run, the exit code is still the shell's.

Under the default action SIGTERM (`kill`, a scheduler's stop) ends the process at once and no cleanup runs
(reader processes are left, a temporary folder stays). The handler here raises `SystemExit(128 + SIGTERM)`,
143, the code a shell reports for a process stopped by SIGTERM. `radretrieve serve` installs it for good
(`exit_through_python_on_sigterm`), a bulk job for its run (`sigterm_unwinds`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

TERMINATED = 128 + signal.SIGTERM  # exit status of a process stopped by SIGTERM (the shell's convention)


def raise_exit(signum: int, _frame: object) -> None:
    """A signal handler: unwind through Python with the shell's code for the signal (128 + its number)."""
    raise SystemExit(128 + signum)


def exit_through_python_on_sigterm() -> bool:
    """Make SIGTERM raise SystemExit(143) from now on; False (nothing done) off the main thread, the only one
    that may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGTERM, raise_exit)
    return True


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Within the block SIGTERM raises SystemExit(143), then the default action is back. Only where the block
    runs on the main thread with the default SIGTERM action (a handler of the caller's stays)."""
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL or not exit_through_python_on_sigterm():
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
