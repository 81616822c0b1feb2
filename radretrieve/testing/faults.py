"""Fault injection for tests of crash handling: functions that kill the process that runs them.

They stand in for an out-of-memory kill or a decoder segfault (which take the process down without a Python
exception); being importable from the package, they can run in any worker process a test starts.
"""

from __future__ import annotations

import os
import time

POISON = 13  # the value that kills its process


def double_or_die(values: list[int]) -> list[int]:
    """2 * value for each value, after a short pause; exits the process at once for `POISON`."""
    out = []
    for value in values:
        if value == POISON:
            os._exit(9)
        time.sleep(0.01)
        out.append(2 * value)
    return out
