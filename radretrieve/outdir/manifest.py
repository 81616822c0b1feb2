"""`OUT/manifest.json`: the finished shards of an out dir, and how to load its model again.

Readers trust only the shards listed here: a shard file not in the manifest is an interrupted write.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_write_bytes
from radretrieve.outdir.layout import MANIFEST


@dataclass(frozen=True)
class ShardEntry:
    """One finished shard in the manifest."""

    file: str  # relative to the out dir, e.g. "shards/part-00003.parquet"
    task_id: str  # stable id of the task that produced it
    rows: int  # rows in the shard
    counts: Mapping[str, int] = field(default_factory=dict)  # rows per kind
    size: int = 0  # bytes of the file at commit (0: not recorded, out dirs written before 0.1.1)
    sha256: str = ""  # SHA-256 of the file at commit ("" : not recorded)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "task_id": self.task_id,
            "rows": self.rows,
            "counts": dict(self.counts),
            "size": self.size,
            "sha256": self.sha256,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> ShardEntry:
        counts = {str(k): int(v) for k, v in dict(data.get("counts", {})).items()}
        return ShardEntry(
            str(data["file"]),
            str(data["task_id"]),
            int(data["rows"]),
            counts,
            int(data.get("size", 0)),
            str(data.get("sha256", "")),
        )


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`: what an out dir holds. Readers trust only the shards listed here."""

    fingerprint: str  # model fingerprint
    preprocess_hash: str  # preprocessing config hash
    dim: int  # embedding dimension
    model: Mapping[str, Any]  # how to load the model again: {"ref": name/path, "weights": ...}
    shards: tuple[ShardEntry, ...] = ()
    anonymised: bool = False  # built with anonymised paths (the default): sources and path keys are keyed hashes

    def to_json(self) -> str:
        data = {
            "format_version": 1,
            "fingerprint": self.fingerprint,
            "preprocess_hash": self.preprocess_hash,
            "dim": self.dim,
            "model": dict(self.model),
            "shards": [s.to_json() for s in self.shards],
            "anonymised": self.anonymised,
        }
        return json.dumps(data, indent=1, sort_keys=True)

    def with_shard(self, entry: ShardEntry) -> Manifest:
        kept = tuple(s for s in self.shards if s.task_id != entry.task_id)
        return dataclasses.replace(self, shards=kept + (entry,))

    def without(self, files: set[str]) -> Manifest:
        """This manifest without the shards whose `file` is in `files` (damaged or missing ones)."""
        return dataclasses.replace(self, shards=tuple(s for s in self.shards if s.file not in files))

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
        shards = tuple(ShardEntry.from_json(s) for s in data["shards"])
        anonymised = bool(data.get("anonymised", False))
        return Manifest(
            data["fingerprint"], data["preprocess_hash"], int(data["dim"]), data["model"], shards, anonymised
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RadRetrieveError(f"{path}: unreadable manifest ({exc})") from exc


def write_manifest(out_dir: Path, manifest: Manifest) -> None:
    atomic_write_bytes(Path(out_dir) / MANIFEST, manifest.to_json().encode())
