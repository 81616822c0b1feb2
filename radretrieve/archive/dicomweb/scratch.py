"""The temporary files of a DICOMweb scan or fetch: one private folder per series or item, files named by
number, never by anything the server sent.

A server's UIDs are checked where they enter (`uids`), and still no path is built from them: the files of
one folder are `000000.dcm`, `000001.dcm`, ... in the order of the caller's list, each path is checked to be
directly inside the folder, and each file is created new (never through a planted link). The folder
(`tempfile.TemporaryDirectory`: mode 0700, under the system temporary folder or TMPDIR) is removed with
everything in it when the `with` block ends, however it ends.

A process killed inside the block (SIGKILL, the OOM killer) cannot remove its folder, and the files in it are
whole DICOM instances with their patient headers. So each folder is named after its process
(`radretrieve-dicomweb-PID-...`), and `remove_stale` (run at the start of every DICOMweb job and by each
process before it makes its first folder) removes the folders of this user whose process is gone: no
scratch copy outlives a killed job past the start of the next job or reader.

These are scratch copies read back at once and never outputs, so they are not written through
`radretrieve.foundation.fileio` (its fsync and rename per file would only slow the fetch).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from radretrieve.foundation.errors import RadRetrieveError

PREFIX = "radretrieve-dicomweb-"


class NotConfined(RadRetrieveError):
    """A temporary path that is not directly inside its private folder (a bug: names are ours)."""


_OWNED = re.compile(re.escape(PREFIX) + r"([0-9]{1,10})-")  # a scratch folder and the process that made it


@contextlib.contextmanager
def private_folder() -> Iterator[Path]:
    """A new private temporary folder, removed with its files when the block ends."""
    _remove_stale_once()
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-") as tmp:
        yield Path(tmp).resolve()


def remove_stale() -> int:
    """Remove the scratch folders (in the temporary folder) of this user's processes that are gone; how many."""
    removed = 0
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return 0  # no temporary folder to read: nothing of ours there either
    for entry in entries:
        found = _OWNED.match(entry.name)
        if found is None or _alive(int(found.group(1))):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue  # another user's folder (or not a folder): not ours to remove
        except OSError:
            continue  # removed meanwhile by another process
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


@functools.cache
def _remove_stale_once() -> None:
    remove_stale()


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (a pid reused by another process keeps its folder until that one ends)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def open_new(folder: Path, name: str) -> BinaryIO:
    """A file `name` directly inside `folder`, opened to be written from its start (created, or emptied for a
    retry; never through a link)."""
    path = confined(folder, name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o600), "wb")


def local_name(n: int) -> str:
    """The name of the `n`-th temporary file of a folder."""
    return f"{int(n):06d}.dcm"


def confined(folder: Path, name: str) -> Path:
    """`folder / name`, checked to be a file directly inside `folder` (raises NotConfined otherwise)."""
    path = folder / name
    if path.parent != folder or path.name != name or name in ("", ".", "..") or os.sep in name:
        raise NotConfined(f"{name!r}: not a file name inside the temporary folder {folder}")
    return path


def write_new(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` to a new file `name` directly inside `folder` (never over an existing file or a link)."""
    path = confined(folder, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path
