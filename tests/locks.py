"""A second process that holds an out dir's writer lock, for the tests of `radretrieve.foundation.lock`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLD = (
    "import sys, time\n"
    "from radretrieve.foundation.lock import writer_lock\n"
    "with writer_lock(sys.argv[1], 'radretrieve index'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(60)\n"
)


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that takes `folder`'s writer lock (as `radretrieve index`) and keeps it for a minute;
    returns once it holds it. The caller kills it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if line != "held":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the lock holder did not start: {line!r}")
    return proc
