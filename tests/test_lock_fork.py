"""The writer lock's bookkeeping is per process (radretrieve.foundation.lock): a child forked inside a
`writer_lock` block is a second writer, not a re-entry of its parent's lock, and keeps no copy of the lock
once its parent lets go. A real fork."""

from __future__ import annotations

import os
import warnings

from radretrieve.foundation.lock import Locked, current_holder, writer_lock


def _fork_child(body) -> int:
    """Fork; the child runs `body()` and exits with its return code (2 on any exception). Returns the pid."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads in the test process
        pid = os.fork()
    if pid == 0:
        code = 2
        try:
            code = body()
        finally:
            os._exit(code)
    return pid


def test_a_forked_child_does_not_enter_its_parents_lock(tmp_path):
    folder = tmp_path / "out"
    tried_r, tried_w = os.pipe()
    go_r, go_w = os.pipe()

    def child() -> int:
        os.close(go_w)
        os.close(tried_r)
        try:
            with writer_lock(folder):
                os.write(tried_w, b"E")  # entered a lock its parent holds
        except Locked:
            os.write(tried_w, b"L")
        os.read(go_r, 1)  # wait, alive, until the parent has let go and checked
        return 0

    with writer_lock(folder):
        pid = _fork_child(child)
        os.close(go_r)
        os.close(tried_w)
        tried = os.read(tried_r, 1)  # the child tried while the parent holds the lock
        os.close(tried_r)
    try:
        assert tried == b"L"
        # The parent let go while the child still runs: the child kept no copy of the lock.
        assert current_holder(folder) is None
        with writer_lock(folder):
            pass
    finally:
        os.write(go_w, b"x")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _fork_in_block(folder) -> int:
    """Fork inside a `writer_lock` block; the child leaves the block as the parent would, then exits with 0
    (2 if leaving raised). Returns the child's pid in the parent, after the parent waited for it in the block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            with writer_lock(folder):
                pid = os.fork()
                if pid != 0:
                    _, status = os.waitpid(pid, 0)  # the child has left the block and exited
                    assert os.waitstatus_to_exitcode(status) == 0
                    holder = current_holder(folder)  # the child released nothing of the parent's
                    assert holder is not None and holder.pid == os.getpid()
        except BaseException:
            if pid == 0:
                os._exit(2)
            raise
    if pid == 0:
        os._exit(0)
    return pid


def test_a_forked_child_may_leave_the_block_it_was_forked_in(tmp_path):
    folder = tmp_path / "out"
    _fork_in_block(folder)
    assert current_holder(folder) is None
