"""Synthetic out dirs for tests: shards + manifest written with the real `radretrieve.shards` contract.

Reusable by any test that needs shards without running the encoder::

    from tests.shard_fixtures import SyntheticItems, clustered_vectors, write_out_dir
    items = SyntheticItems.random(n=100, dim=16, seed=0)
    manifest = write_out_dir(tmp_path, [items])            # one shard per SyntheticItems
    manifest = append_shard(tmp_path, more_items, "t2")    # incremental: one more shard
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from radretrieve.outdir.layout import SHARD_DIR
from radretrieve.outdir.manifest import Manifest, ShardEntry, read_manifest, write_manifest
from radretrieve.outdir.shards import shard_metadata, shard_schema, write_shard

FINGERPRINT = "test-fingerprint"
MODALITIES = ("CT", "MR", "CR")
BODY_PARTS = ("HEAD", "CHEST", "ABDOMEN", "KNEE")


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of float32[n, D] scaled to unit L2 norm."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def clustered_vectors(n: int, dim: int, n_clusters: int, seed: int, spread: float = 0.35) -> np.ndarray:
    """float32[n, dim] unit vectors from a Gaussian mixture on the sphere (uneven cluster sizes).

    Real embeddings are clustered (modality, body part, finding), which is what IVF/HNSW exploit and
    what makes recall tuning meaningful; uniform noise would not be.
    """
    rng = np.random.default_rng(seed)
    centres = normalise(rng.standard_normal((n_clusters, dim)))
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    assign = rng.choice(n_clusters, size=n, p=weights)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * (spread / np.sqrt(dim))
    return normalise(centres[assign] + noise)


@dataclass(frozen=True)
class SyntheticItems:
    """Columns of one synthetic shard (equal lengths)."""

    ids: np.ndarray  # int64[n] item ids (unique, non-negative)
    vectors: np.ndarray  # float32[n, D] unit embeddings
    kinds: tuple[str, ...]  # per row: image | volume | report
    studies: tuple[str, ...]  # per row: study key
    modalities: tuple[str, ...]  # per row: modality
    body_parts: tuple[str, ...]  # per row: body part
    burned_in: tuple[bool, ...] | None = None  # per row: may carry burned-in text; None: no such column

    @staticmethod
    def random(
        n: int,
        dim: int,
        seed: int,
        id_offset: int = 1000,
        kinds: tuple[str, ...] = ("volume", "image"),
        per_study: int = 3,
        vectors: np.ndarray | None = None,
    ) -> SyntheticItems:
        """n rows with ids id_offset + 7*i (not positions), `per_study` consecutive rows per study."""
        rng = np.random.default_rng(seed)
        vecs = normalise(rng.standard_normal((n, dim))) if vectors is None else vectors
        ids = (id_offset + 7 * np.arange(n)).astype(np.int64)
        return SyntheticItems(
            ids=ids,
            vectors=vecs,
            kinds=tuple(kinds[i % len(kinds)] for i in range(n)),
            studies=tuple(f"study-{(id_offset + i) // per_study}" for i in range(n)),
            modalities=tuple(MODALITIES[int(v)] for v in rng.integers(0, len(MODALITIES), n)),
            body_parts=tuple(BODY_PARTS[int(v)] for v in rng.integers(0, len(BODY_PARTS), n)),
        )

    def table(self, dim: int, fingerprint: str = FINGERPRINT, float16: bool = False) -> pa.Table:
        n = len(self.ids)
        schema = shard_schema(dim, shard_metadata(fingerprint, "pp-test", dim), float16=float16)
        flat = pa.array(self.vectors.astype(np.float16 if float16 else np.float32).reshape(-1))
        cols = {
            "item_id": pa.array(self.ids, pa.int64()),
            "kind": pa.array(self.kinds),
            "study_key": pa.array(self.studies),
            "series_key": pa.array([f"series-{i}" for i in self.ids]),
            "source": pa.array([f"src/{i}.nii.gz" for i in self.ids]),
            "modality": pa.array(self.modalities),
            "body_part": pa.array(self.body_parts),
            "description": pa.array([f"{m} {b}" for m, b in zip(self.modalities, self.body_parts)]),
            "slice_count": pa.array([0 if k == "report" else 8 for k in self.kinds], pa.int32()),
            "shape": pa.array([[8, 32, 32]] * n, pa.list_(pa.int32())),
            "spacing": pa.array([[1.0, 1.0, 1.0]] * n, pa.list_(pa.float32())),
            "text": pa.array([f"report of {s}" for s in self.studies]),
            "labels": pa.array([json.dumps({"modality": m}) for m in self.modalities]),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
        if self.burned_in is not None:  # the optional flag column (radretrieve.outdir.catalog.OPTIONAL_COLUMNS)
            cols["burned_in"] = pa.array(self.burned_in, pa.bool_())
        else:  # a shard written before the flag existed
            schema = schema.remove(schema.get_field_index("burned_in"))
        return pa.table({name: cols[name] for name in schema.names}, schema=schema)


def _entry(items: SyntheticItems, task_id: str, file: str) -> ShardEntry:
    counts: dict[str, int] = {}
    for k in items.kinds:
        counts[k] = counts.get(k, 0) + 1
    return ShardEntry(file, task_id, len(items.ids), counts)


def write_out_dir(
    out_dir: Path, parts: list[SyntheticItems], dim: int, fingerprint: str = FINGERPRINT, float16: bool = False
) -> Manifest:
    """A fresh out dir with one shard per element of `parts`; returns the manifest written."""
    manifest = Manifest(fingerprint, "pp-test", dim, {"ref": "radclip-tiny"})
    write_manifest(out_dir, manifest)
    for i, items in enumerate(parts):
        manifest = append_shard(out_dir, items, f"task-{i:05d}", float16=float16)
    return manifest


def append_shard(out_dir: Path, items: SyntheticItems, task_id: str, float16: bool = False) -> Manifest:
    """Write one more shard and list it in the manifest (what a finished pipeline task does)."""
    manifest = read_manifest(out_dir)
    file = f"{SHARD_DIR}/part-{len(manifest.shards):05d}.parquet"
    write_shard(Path(out_dir) / file, items.table(manifest.dim, manifest.fingerprint, float16))
    manifest = manifest.with_shard(_entry(items, task_id, file))
    write_manifest(out_dir, manifest)
    return manifest


def write_errors(out_dir: Path, records: list[dict[str, str]], name: str = "part-00000.jsonl") -> None:
    """Error records as a pipeline task writes them (one JSON object per line)."""
    path = Path(out_dir) / "errors" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
