"""Fault injection for tests of crash handling: functions that kill the process that runs them.

They stand in for an out-of-memory kill or a decoder segfault (which take the process down without a Python
exception); being importable from the package, they can run in any worker process a test starts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class DyingArchive:
    """A server source (any `radretrieve.archive.records.RemoteArchive`) whose items of one series kill the
    process that reads them, as an out-of-memory kill or a decoder crash would; everything else is the real
    source's. For crash tests of the engines with a PACS source."""

    inner: Any  # the real source
    poison_series: str  # the Series UID whose items kill their reader

    @property
    def display(self) -> str:
        return str(self.inner.display)

    def read_item(self, item: Any, cfg: Any) -> Any:
        if item.series_key == self.poison_series:
            os._exit(9)
        return self.inner.read_item(item, cfg)

    def list_series(self) -> Any:
        return self.inner.list_series()

    def scan_series(self, ref: Any) -> Any:
        return self.inner.scan_series(ref)

    def assemble(self, scans: Any, log_paths: bool, policy: Any, listing_errors: Any) -> Any:
        return self.inner.assemble(scans, log_paths, policy, listing_errors)

    def remove_stale(self) -> None:
        self.inner.remove_stale()
