"""The temporary files of a DICOMweb scan or fetch: one private folder per series or item, files named by
number, never by anything the server sent.

A server's UIDs are checked where they enter (`uids`), and still no path is built from them: the files of
one folder are `000000.dcm`, `000001.dcm`, ... in the order of the caller's list, each path is checked to be
directly inside the folder, and each file is created new (`O_EXCL`: never an existing file or a planted
link). The folder (`tempfile.TemporaryDirectory`: mode 0700, under the system temporary folder or TMPDIR)
is removed with everything in it when the `with` block ends, however it ends.

These are scratch copies read back at once and never outputs, so they are not written through
`radretrieve.foundation.fileio` (its fsync and rename per file would only slow the fetch).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from radretrieve.foundation.errors import RadRetrieveError

PREFIX = "radretrieve-dicomweb-"


class NotConfined(RadRetrieveError):
    """A temporary path that is not directly inside its private folder (a bug: names are ours)."""


@contextlib.contextmanager
def private_folder() -> Iterator[Path]:
    """A new private temporary folder, removed with its files when the block ends."""
    with tempfile.TemporaryDirectory(prefix=PREFIX) as tmp:
        yield Path(tmp).resolve()


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
