"""A reader reaped by the executor's own thread before `ReaderPool` looks is gone, not "still running"."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from pipelines.readers import _still_running


def test_a_killed_reader_another_thread_reaped_counts_as_gone():
    proc = mp.get_context("spawn").Process(target=time.sleep, args=(60,))
    proc.start()
    try:
        assert _still_running(proc)  # alive: waitpid says so without reaping it
        proc.kill()
        os.waitpid(proc.pid, 0)  # the executor's thread got there first: multiprocessing has no exit code yet
        assert proc.exitcode is None
        assert not _still_running(proc)
    finally:
        if proc.exitcode is None:
            try:
                os.kill(proc.pid, 9)
            except ProcessLookupError:
                pass
