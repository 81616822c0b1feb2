"""The one way radretrieve writes a file: temp file in the same folder, fsync, rename, folder fsync.

Every artefact (shards, manifests, error records, indexes, vector stores, model directories, reports,
plots) goes through `atomic_write_bytes` or `atomic_path`, so that:

- a reader never sees a half-written file: the final name appears only by `os.replace`, which is atomic
  on POSIX file systems, and the temp file sits in the same folder (a rename never crosses devices);
- a crash right after the rename keeps the file: the data is fsynced before the rename, and the folder
  after it (the rename itself is a folder entry);
- every file gets the same mode, the one a plain `open()` would give under the process umask. The umask is
  read once, at import, and never changed afterwards: flipping it per write (as `os.umask` forces) races
  with files created meanwhile by other threads;
- a temp file left by a kill is recognisable (`is_temp`) and carries its writer's pid, so the next writer
  can remove it (`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

from radretrieve.foundation.errors import WriteFailed

TMP_SUFFIX = ".tmp"
# .<final name>.<pid>-<random>.tmp: hidden, per writer, and parseable back to the writer's pid
_TEMP_RE = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")
_UMASK_LOCK = threading.Lock()


def _read_umask() -> int:
    """The process umask, without changing it where Linux reports it (/proc/self/status, kernel >= 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it; done once, at import
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()  # the mode of every file radretrieve writes


def temp_path(path: Path) -> Path:
    """A fresh temp name beside `path`: `.NAME.PID-RANDOM.tmp`."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


def is_temp(path: Path) -> bool:
    """True for a temp file made by `temp_path` (by any process)."""
    return _TEMP_RE.match(Path(path).name) is not None


def temp_owner(path: Path) -> int | None:
    """The pid of the process that made temp file `path`, or None if it is not one of ours."""
    m = _TEMP_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp path to write `path` through, for libraries that write by file name.

        with atomic_path(out / "part-00001.parquet") as tmp:
            pq.write_table(table, tmp)

    On a clean exit the temp file is fsynced, given `FILE_MODE`, renamed to `path` and the folder fsynced;
    on any exception (a full disk, Ctrl-C) it is removed and `path` is left as it was.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        commit(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) or _disk_full(exc):
            raise write_failed(path, exc) from exc
        raise


def _disk_full(exc: BaseException) -> bool:
    """A full disk, also when a library (pyarrow, safetensors, faiss) reports it in its own exception type."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


def write_failed(path: Path, exc: BaseException) -> WriteFailed:
    """One line naming the file; a full disk says so, whatever library raised it."""
    if _disk_full(exc):
        return WriteFailed(f"{path}: no space left on the device (free space, or write to another --out)")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return WriteFailed(f"{path}: cannot write ({reason})")


def commit(tmp: Path, path: Path) -> Path:
    """Publish a finished temp file (from `temp_path`, same folder) as `path`: fsync, mode, rename, folder fsync.

    For writers that fill a temp file over a long time (a memory-mapped store); others use `atomic_path`."""
    _fsync_file(tmp)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temp folder to fill and then rename to `path` as a whole (e.g. a training checkpoint).

    On a clean exit every file inside is fsynced and given `FILE_MODE`, an existing `path` is replaced,
    and the parent folder is fsynced; on an exception the temp folder is removed.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.mkdir()
    try:
        yield tmp
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            _fsync_file(file)
            os.chmod(file, FILE_MODE)
        fsync_dir(tmp)
        old = temp_path(path) if path.exists() else None
        if old is not None:
            os.replace(path, old)  # a folder cannot replace a non-empty folder in one rename
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see module docstring); returns `path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as fh:
            fh.write(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    """`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file, read in blocks (the checksum recorded when an artefact is committed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_temps(
    folder: Path, recursive: bool = True, only_dead: bool = False, of: str | None = None
) -> list[Path]:
    """Remove temp files under `folder` left by killed writers; returns what was removed.

    A caller that holds the folder's writer lock knows no other writer is active and removes them all;
    `only_dead` keeps temps whose writer process is still alive (for folders without a lock). `of`: only the
    temps of that one name (a folder shared with files that are not ours).
    """
    import glob
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    pattern = f".{glob.escape(of)}.*{TMP_SUFFIX}" if of is not None else f".*{TMP_SUFFIX}"
    found = folder.rglob(pattern) if recursive else folder.glob(pattern)
    for path in sorted(found, key=lambda p: len(p.parts)):  # outer temp folders before what they hold
        owner = temp_owner(path)
        if owner is None or (only_dead and _alive(owner)) or not path.exists():
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
