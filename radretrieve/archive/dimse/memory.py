"""Instances received over DIMSE held in memory, read by the folder code as if they were files.

pynetdicom hands each received instance over as bytes (`encoded_dataset`), so writing it to a temporary file
only to read it back costs a write, a read and an unlink per instance, and leaves a patient's headers on disk
for as long as it takes (or for good, when the process is killed). Here instead:

- `MemoryFile` is an instance's bytes as a file for the folder reader (`read_header`, `read_dicom`: the same
  code as for a folder): `stat()` gives its size, pydicom reads it as a file object.
- `MemoryFolder` is an item's instances by virtual path (`STUDY/SERIES/SOP.dcm`): `folder / rel` is a new
  `MemoryFile`, whose `stat()` raises FileNotFoundError for an instance not there, as a missing file does
  (`read_item` then asks for every file of a series that is not axial after all).
- `KeptInstances` keeps, within one process, instances that a series' header scan has retrieved anyway, so
  that reading the series' item takes its sampled slices from there instead of retrieving them a second time.
  It holds at most `Limits.max_held_bytes` (256 MiB by default) per process: once full it keeps no more (the
  series scanned later are retrieved again when read), so a 2,000-slice series or a 100,000-series job costs
  that much memory at most. A read takes its series' instances out (what it did not need goes too); a job's
  start clears what an earlier job in the same process kept and never read (series selection left out).
"""

from __future__ import annotations

import io
import os
import stat
import threading

_MODE = stat.S_IFREG | 0o600  # what `stat()` reports: a regular file (only its size is read)


class MemoryFile(io.BytesIO):
    """An instance's bytes, read like a file by the folder code (pydicom takes file objects)."""

    def __init__(self, data: bytes, name: str = "") -> None:
        super().__init__(data)
        self.name = name  # pydicom's messages name a file object by it (a virtual path, never a node's text)
        self._size = len(data)

    def stat(self) -> os.stat_result:
        self.seek(0)  # each reader of the "file" starts at its beginning
        return os.stat_result((_MODE, 0, 0, 1, 0, 0, self._size, 0, 0, 0))


class _Absent:
    """`folder / rel` for an instance the folder does not hold: it is missing, as a file would be."""

    def __init__(self, rel: str) -> None:
        self.rel = rel

    def stat(self) -> os.stat_result:
        raise FileNotFoundError(self.rel)


class MemoryFolder:
    """Instances by virtual path, as the root of an item's files (`read_item(item, folder, cfg)`)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def __truediv__(self, rel: str) -> MemoryFile | _Absent:
        data = self.files.get(rel)
        return _Absent(rel) if data is None else MemoryFile(data, rel)

    def __contains__(self, rel: str) -> bool:
        return rel in self.files

    def add(self, rel: str, data: bytes) -> None:
        self.files[rel] = data

    @property
    def size(self) -> int:
        return sum(len(d) for d in self.files.values())


class KeptInstances:
    """Instances a header scan retrieved, by series and virtual path, at most `budget` bytes in all."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], dict[str, bytes]] = {}  # (node, series UID) -> virtual path -> bytes
        self.used = 0
        self._lock = threading.Lock()  # a C-MOVE's instances arrive on the storage SCP's threads

    def drop(self, node: str, series: str) -> None:
        """Forget what an earlier scan of the series kept (a rescan or a retry keeps its own)."""
        with self._lock:
            self.used -= sum(len(d) for d in self._series.pop((node, series), {}).values())

    def offer(self, node: str, series: str, rel: str, data: bytes, budget: int) -> bool:
        """Keep `data` if it fits within `budget` bytes (all series together); whether it was kept."""
        with self._lock:
            before = len(self._series.get((node, series), {}).get(rel, b""))  # a retry's copy replaces it
            if self.used - before + len(data) > budget:
                return False
            self._series.setdefault((node, series), {})[rel] = data
            self.used += len(data) - before
            return True

    def clear(self) -> None:
        """Forget everything (a new job: what an earlier job's scans kept and never read, e.g. series that
        selection left out, goes)."""
        with self._lock:
            self._series.clear()
            self.used = 0

    def take(self, node: str, series: str) -> dict[str, bytes]:
        """The series' kept instances (virtual path -> bytes), no longer kept here."""
        with self._lock:
            kept = self._series.pop((node, series), {})
            self.used -= sum(len(d) for d in kept.values())
            return kept


KEPT = KeptInstances()  # this process's: scans and reads of one reader process (or of the job's, with no readers)
