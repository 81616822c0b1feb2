"""Parquet shard and out-dir manifest contract (DESIGN.md: Shards).

An out dir looks like::

    OUT/manifest.json            finished shards; readers trust only this file
    OUT/shards/part-NNNNN.parquet one per task, written to a temp name then renamed
    OUT/errors/part-NNNNN.jsonl   failed inputs of that task (source, stage, error type, message)

Every shard carries the model fingerprint, the preprocessing hash and the package version in its
schema metadata. Writes are atomic (temp file + fsync + rename), so a crash never leaves a torn shard.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from radretrieve.errors import FingerprintMismatch, RadRetrieveError

MANIFEST = "manifest.json"
SHARD_DIR = "shards"
ERROR_DIR = "errors"
KINDS = ("image", "volume", "report")
META_PREFIX = "radretrieve."


def shard_schema(dim: int, metadata: Mapping[str, str] | None = None, float16: bool = False) -> pa.Schema:
    """The shard schema for embeddings of dimension `dim` (float32 unless `float16`)."""
    value = pa.float16() if float16 else pa.float32()
    fields = [
        pa.field("item_id", pa.int64(), nullable=False),  # stable id (radretrieve.ids.item_id); FAISS id
        pa.field("kind", pa.string(), nullable=False),  # image | volume | report
        pa.field("study_key", pa.string()),  # StudyInstanceUID or manifest `study` or folder key
        pa.field("series_key", pa.string()),  # SeriesInstanceUID or source key
        pa.field("source", pa.string()),  # path relative to the archive root (';'-joined for multi-file)
        pa.field("modality", pa.string()),  # CT, MR, CR, DX, ... ("" if unknown)
        pa.field("body_part", pa.string()),  # BodyPartExamined or label ("" if unknown)
        pa.field("description", pa.string()),  # series/study description (allow-listed, non-identifying)
        pa.field("slice_count", pa.int32()),  # slices encoded (1 for 2D images, 0 for reports)
        pa.field("shape", pa.list_(pa.int32())),  # source voxel/pixel array shape
        pa.field("spacing", pa.list_(pa.float32())),  # voxel spacing in mm, same order as shape
        pa.field("text", pa.string()),  # report text paired with the item (reports: the report itself)
        pa.field("labels", pa.string()),  # JSON object of string labels from the manifest / synth ground truth
        pa.field("embedding", pa.list_(value, dim)),  # L2-normalised embedding
    ]
    meta = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
    return pa.schema(fields, metadata=meta)


def shard_metadata(fingerprint: str, preprocess_hash: str, dim: int) -> dict[str, str]:
    """Schema metadata written into every shard."""
    from radretrieve import __version__

    return {
        META_PREFIX + "fingerprint": fingerprint,
        META_PREFIX + "preprocess_hash": preprocess_hash,
        META_PREFIX + "version": __version__,
        META_PREFIX + "dim": str(dim),
    }


def _umask_mode() -> int:
    """0o666 minus the process umask: what a plain open() would give (mkstemp makes files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_shard(path: Path, table: pa.Table) -> None:
    """Write one shard atomically (temp name in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ShardEntry:
    """One finished shard in the manifest."""

    file: str  # relative to the out dir, e.g. "shards/part-00003.parquet"
    task_id: str  # stable id of the task that produced it
    rows: int  # rows in the shard
    counts: Mapping[str, int] = field(default_factory=dict)  # rows per kind


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`: what an out dir holds. Readers trust only the shards listed here."""

    fingerprint: str  # model fingerprint
    preprocess_hash: str  # preprocessing config hash
    dim: int  # embedding dimension
    model: Mapping[str, Any]  # how to load the model again: {"ref": name/path, "weights": ...}
    shards: tuple[ShardEntry, ...] = ()

    def to_json(self) -> str:
        data = {
            "format_version": 1,
            "fingerprint": self.fingerprint,
            "preprocess_hash": self.preprocess_hash,
            "dim": self.dim,
            "model": dict(self.model),
            "shards": [
                {"file": s.file, "task_id": s.task_id, "rows": s.rows, "counts": dict(s.counts)} for s in self.shards
            ],
        }
        return json.dumps(data, indent=1, sort_keys=True)

    def with_shard(self, entry: ShardEntry) -> "Manifest":
        kept = tuple(s for s in self.shards if s.task_id != entry.task_id)
        return Manifest(self.fingerprint, self.preprocess_hash, self.dim, self.model, kept + (entry,))

    @property
    def finished_tasks(self) -> frozenset[str]:
        return frozenset(s.task_id for s in self.shards)


def read_manifest(out_dir: Path) -> Manifest:
    """Read `OUT/manifest.json`; a one-line error if it is missing or unreadable."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise RadRetrieveError(f"{out_dir}: no {MANIFEST} (not a radretrieve out dir, or nothing indexed yet)")
    try:
        data = json.loads(path.read_text())
        shards = tuple(
            ShardEntry(s["file"], s["task_id"], int(s["rows"]), dict(s.get("counts", {}))) for s in data["shards"]
        )
        return Manifest(data["fingerprint"], data["preprocess_hash"], int(data["dim"]), data["model"], shards)
    except (ValueError, KeyError, TypeError) as exc:
        raise RadRetrieveError(f"{path}: unreadable manifest ({exc})") from exc


def write_manifest(out_dir: Path, manifest: Manifest) -> None:
    atomic_write_bytes(Path(out_dir) / MANIFEST, manifest.to_json().encode())


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
