"""Independent subprocesses of one test, run side by side: most of a `radretrieve` command's time is its start
(Python, torch, open_clip), spent on one core, and CI has two. Each command is still a real process with its
own output and exit code; only commands that do not depend on each other's effects belong in one call."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

SIDE_BY_SIDE = 2  # CI's cores: more would only queue for them

T = TypeVar("T")


def side_by_side(calls: list[Callable[[], T]]) -> list[T]:
    """Every call, two at a time; the results in the order of `calls`. All have ended when this returns (an
    exception is raised after the others have ended)."""
    with ThreadPoolExecutor(max_workers=SIDE_BY_SIDE) as pool:
        futures = [pool.submit(call) for call in calls]
    return [f.result() for f in futures]  # the `with` waited for all of them: a failure is raised here


def run_all(cmds: list[list[str]], **kwargs: Any) -> list[subprocess.CompletedProcess]:
    """`subprocess.run(cmd, capture_output=True, text=True, **kwargs)` for every command, side by side (a
    timeout kills its process, as `subprocess.run` does)."""
    kwargs = {"capture_output": True, "text": True, **kwargs}
    return side_by_side([functools.partial(subprocess.run, cmd, **kwargs) for cmd in cmds])
