"""Index files are committed with their size and SHA-256 in index.json, and verified when opened.

A truncated `.faiss` file or a garbled id map must not give blank hits or a raw faiss error: `open_index`
checks the recorded size of every file of an index and the SHA-256 of each one up to `HASH_ON_OPEN_BYTES`
(larger ones: size only at open).

`build-index` hashes only the files it reads in full (the .faiss file, the stored truth); the re-rank store
segments an add leaves as they are get `quick_problem` (size, and the SHA-256 only where the modification
time differs from the committed one, e.g. after a copy). `radretrieve verify` hashes everything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.foundation.fileio import file_sha256
from radretrieve.outdir.verify import DamagedFile, size_problem

log = logging.getLogger(__name__)

HASH_ON_OPEN_BYTES = 1 << 30  # hashed on every open up to 1 GiB (~0.9 s at 1.2 GB/s); larger: size only
REBUILD_HINT = "run `radretrieve build-index {out} --rebuild`"


def file_name(value: object) -> str:
    """A file name recorded in index.json, checked to stay under OUT/index/: a plain name, no folder part. The
    builder reads, hashes and removes the files it names (an old stored truth or store segment), so a crafted
    "../../x" or "/x" would reach a file anywhere; a `ValueError` makes read_index_json call it unreadable."""
    if not isinstance(value, str) or value in ("", ".", "..") or any(c in value for c in "/\\\0"):
        raise ValueError(f"index file name {str(value)[:80]!r} is not a plain file name")
    return value


@dataclass(frozen=True)
class FileCheck:
    """What one index file was committed as."""

    size: int  # bytes
    sha256: str  # hex digest
    mtime_ns: int = 0  # modification time when committed (0: not recorded, older index)

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256, "mtime_ns": self.mtime_ns}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> FileCheck:
        return FileCheck(int(data["size"]), str(data["sha256"]), int(data.get("mtime_ns", 0)))


def record(folder: Path, names: Iterable[str]) -> dict[str, FileCheck]:
    """{file name: FileCheck} of files under `folder`, as they are now (just written)."""
    out = {}
    for name in names:
        st = (folder / name).stat()
        out[name] = FileCheck(st.st_size, file_sha256(folder / name), st.st_mtime_ns)
    return out


def problem(path: Path, check: FileCheck | None, full: bool) -> str | None:
    """Why `path` is not the committed file, or None. Without a recorded check (older index): None."""
    if check is None:
        return None
    found = size_problem(path, check.size)
    if found is not None:
        return found
    if (full or check.size <= HASH_ON_OPEN_BYTES) and file_sha256(path) != check.sha256:
        return "its SHA-256 differs from the one committed"
    return None


def quick_problem(path: Path, check: FileCheck | None) -> str | None:
    """`problem` without reading a file that still has its committed size and modification time: what an
    add checks of the files it does not read. A changed mtime (a copied out dir) costs a hash, not a rebuild."""
    if check is None:
        return None
    found = size_problem(path, check.size)
    if found is not None or (check.mtime_ns and path.stat().st_mtime_ns == check.mtime_ns):
        return found
    return problem(path, check, full=True)


def verify(folder: Path, checks: Mapping[str, FileCheck], names: Iterable[str], out_dir: Path, full: bool) -> None:
    """Raise `DamagedFile` (one line, with the repair) for the first of `names` that fails its check."""
    for name in names:
        found = problem(folder / name, checks.get(name), full)
        if found is not None:
            hint = REBUILD_HINT.format(out=out_dir)
            raise DamagedFile(f"{folder / name}: damaged index file: {found}; {hint}")


def failing(
    folder: Path, checks: Mapping[str, FileCheck], names: Iterable[str], quick: Iterable[str] = ()
) -> str | None:
    """The first problem among `names` (hashed: files the caller reads in full) and `quick` (size and
    mtime: files it leaves as they are), or None."""
    for name in names:
        found = problem(folder / name, checks.get(name), full=True)
        if found is not None:
            return f"{name}: {found}"
    for name in quick:
        found = quick_problem(folder / name, checks.get(name))
        if found is not None:
            return f"{name}: {found}"
    return None
