"""Damaged files in an out dir: detect them, say which and why in one line, let the writer repair them.

Every shard is committed with its size and SHA-256 in `manifest.json`. Readers check what is cheap on every
open (the file exists, has the recorded size, ends with Parquet's footer magic, and its footer's schema is a
shard's with the out dir's embedding dimension); writers (`index`, `build-index`) check the SHA-256 too. A
damaged shard makes a reader stop with `DamagedFile` naming it; `index` drops it from the manifest and re-runs
its task. Zero-shot predictions get the same checks (radretrieve.outdir.predictions), but a damaged
predictions file only costs the predictions: readers go on without them and `classify` rewrites it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import file_sha256
from radretrieve.outdir.manifest import Manifest, ShardEntry
from radretrieve.outdir.schema import shard_schema_problem

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


def parquet_problem(path: Path, size: int, sha256: str, full: bool = False) -> str | None:
    """Why `path` is not the whole Parquet file committed with `size` bytes and `sha256` ("" / 0: unknown),
    or None. `full`: also compare the SHA-256 (reads the file); otherwise only the size and both magics."""
    problem = size_problem(path, size)
    if problem is not None:
        return problem
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(max(0, path.stat().st_size - 4))
        tail = fh.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        return "not a whole Parquet file"
    if full and sha256 and file_sha256(path) != sha256:
        return "its SHA-256 differs from the one committed"
    return None


def footer_schema(path: Path) -> tuple[pa.Schema | None, str | None]:
    """(the Arrow schema in a Parquet file's footer, None) or (None, why it cannot be read); reads no rows."""
    try:
        return pq.read_schema(path), None
    except (OSError, pa.ArrowException) as exc:
        return None, f"unreadable Parquet footer ({type(exc).__name__})"


def shard_problem(out_dir: Path, entry: ShardEntry, full: bool = False, dim: int | None = None) -> str | None:
    """Why the shard of `entry` is damaged, or None. `full`: also compare its SHA-256 (reads the file).
    `dim`: also check its footer's schema against a shard of an out dir with `dim`-dimensional embeddings
    (a shard whose digest matches can still be the wrong file: a column missing, another dimension)."""
    return _check_shard(out_dir, entry, full, dim)[1]


def _check_shard(out_dir: Path, entry: ShardEntry, full: bool, dim: int | None) -> tuple[pa.Schema | None, str | None]:
    path = Path(out_dir) / entry.file
    problem = parquet_problem(path, entry.size, entry.sha256, full)
    if problem is not None or dim is None:
        return None, problem
    schema, problem = footer_schema(path)
    return schema, (problem if schema is None else shard_schema_problem(schema, dim))


def damaged_shards(out_dir: Path, manifest: Manifest, full: bool = False) -> dict[str, str]:
    """{manifest file: problem} for every damaged or missing shard (schemas checked against the manifest's dim)."""
    return _check_all(out_dir, manifest, full)[1]


def _check_all(out_dir: Path, manifest: Manifest, full: bool) -> tuple[list[pa.Schema], dict[str, str]]:
    schemas, found = [], {}
    for entry in manifest.shards:
        schema, problem = _check_shard(out_dir, entry, full, manifest.dim)
        if problem is not None:
            found[entry.file] = problem
        elif schema is not None:
            schemas.append(schema)
    return schemas, found


def check_shards(out_dir: Path, manifest: Manifest, full: bool = False) -> list[pa.Schema]:
    """Raise `DamagedFile` for the first damaged shard (one line, with the repair); else the shards' footer
    schemas, in manifest order (the catalog learns their optional columns from them: no second footer read)."""
    schemas, found = _check_all(out_dir, manifest, full)
    if found:
        file, problem = next(iter(found.items()))
        also = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DamagedFile(f"{Path(out_dir) / file}: damaged shard: {problem}{also}; {REPAIR_HINT}")
    return schemas
