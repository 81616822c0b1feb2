"""Parquet shards (docs/reference/formats.md): schema, metadata, atomic write, streaming reads of embeddings.

One shard per task under OUT/shards/; every shard carries the model fingerprint, the preprocessing hash
and the package version in its schema metadata. Writes go through radretrieve.foundation.fileio, so a
crash never leaves a torn shard under its final name.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from radretrieve.foundation.errors import FingerprintMismatch
from radretrieve.foundation.fileio import atomic_path
from radretrieve.foundation.version import __version__
from radretrieve.outdir.manifest import read_manifest
from radretrieve.outdir.schema import shard_schema
from radretrieve.outdir.verify import REPAIR_HINT, DamagedFile, shard_problem

KINDS = ("image", "volume", "report")
META_PREFIX = "radretrieve."
__all__ = ["KINDS", "check_fingerprint", "iter_embeddings", "shard_metadata", "shard_schema", "write_shard"]


def shard_metadata(fingerprint: str, preprocess_hash: str, dim: int) -> dict[str, str]:
    """Schema metadata written into every shard."""
    return {
        META_PREFIX + "fingerprint": fingerprint,
        META_PREFIX + "preprocess_hash": preprocess_hash,
        META_PREFIX + "version": __version__,
        META_PREFIX + "dim": str(dim),
    }


def write_shard(path: Path, table: pa.Table) -> None:
    """Write one shard atomically (radretrieve.foundation.fileio)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def shard_paths(out_dir: Path) -> list[Path]:
    """Paths of the finished shards, in manifest order."""
    return [Path(out_dir) / s.file for s in read_manifest(out_dir).shards]


def check_fingerprint(path: Path, expected: str) -> None:
    """Raise `FingerprintMismatch` if the shard at `path` was written by another model."""
    meta = pq.read_schema(path).metadata or {}
    got = meta.get((META_PREFIX + "fingerprint").encode(), b"").decode()
    if got != expected:
        raise FingerprintMismatch(f"{path}: shard fingerprint {got or '(none)'} differs from {expected}")


def iter_embeddings(
    out_dir: Path,
    kinds: tuple[str, ...] = ("image", "volume"),
    batch_rows: int = 65536,
    files: Collection[str] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream (ids int64[n], vectors float32[n, D]) of the given kinds from the finished shards.

    Memory is bounded by `batch_rows` rows at a time, whatever the archive size. `files` (manifest
    `file` values) restricts the stream to those shards, e.g. the ones an index does not hold yet.
    """
    manifest = read_manifest(out_dir)
    for entry in manifest.shards:
        if files is not None and entry.file not in files:
            continue
        path = Path(out_dir) / entry.file
        problem = shard_problem(out_dir, entry, dim=manifest.dim)
        if problem is not None:
            raise DamagedFile(f"{path}: damaged shard: {problem}; {REPAIR_HINT}")
        check_fingerprint(path, manifest.fingerprint)
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=["item_id", "kind", "embedding"]):
            mask = np.isin(batch.column("kind").to_numpy(zero_copy_only=False), kinds)
            if not mask.any():
                continue
            ids = batch.column("item_id").to_numpy()[mask]
            emb = batch.column("embedding")
            flat = emb.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            vecs = flat.reshape(len(emb), manifest.dim)[mask]
            yield ids.astype(np.int64, copy=False), np.ascontiguousarray(vecs)
