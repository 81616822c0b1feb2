"""Damaged files in an out dir: detect them, say which and why in one line, let the writer repair them.

Every shard is committed with its size and SHA-256 in `manifest.json`. Readers check what is cheap on every
open (the file exists, has the recorded size, and ends with Parquet's footer magic); writers (`index`,
`build-index`) check the SHA-256 too. A damaged shard makes a reader stop with `DamagedFile` naming it; `index`
drops it from the manifest and re-runs its task.
"""

from __future__ import annotations

from pathlib import Path

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import file_sha256
from radretrieve.outdir.manifest import Manifest, ShardEntry

PARQUET_MAGIC = b"PAR1"
REPAIR_HINT = "rerun `radretrieve index` with the same archive to rebuild it"


class DamagedFile(RadRetrieveError):
    """A file listed in an out dir's manifest or index.json is missing or differs from what was committed."""


def size_problem(path: Path, expected_size: int) -> str | None:
    """Why `path` is not the file committed with `expected_size` bytes (0: unknown), or None."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if expected_size and size != expected_size:
        return f"{size} bytes, {expected_size} were committed"
    return None


def shard_problem(out_dir: Path, entry: ShardEntry, full: bool = False) -> str | None:
    """Why the shard of `entry` is damaged, or None. `full`: also compare its SHA-256 (reads the file)."""
    path = Path(out_dir) / entry.file
    problem = size_problem(path, entry.size)
    if problem is not None:
        return problem
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(max(0, path.stat().st_size - 4))
        tail = fh.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        return "not a whole Parquet file"
    if full and entry.sha256 and file_sha256(path) != entry.sha256:
        return "its SHA-256 differs from the one committed"
    return None


def damaged_shards(out_dir: Path, manifest: Manifest, full: bool = False) -> dict[str, str]:
    """{manifest file: problem} for every damaged or missing shard."""
    found = {}
    for entry in manifest.shards:
        problem = shard_problem(out_dir, entry, full)
        if problem is not None:
            found[entry.file] = problem
    return found


def check_shards(out_dir: Path, manifest: Manifest, full: bool = False) -> None:
    """Raise `DamagedFile` for the first damaged shard (one line, with the repair)."""
    found = damaged_shards(out_dir, manifest, full)
    if found:
        file, problem = next(iter(found.items()))
        also = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DamagedFile(f"{Path(out_dir) / file}: damaged shard: {problem}{also}; {REPAIR_HINT}")
