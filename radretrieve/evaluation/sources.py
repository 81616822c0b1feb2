"""Where `radretrieve bench retrieval` gets its embeddings: an out dir, or a model run over a manifest.

Both give the same `Embedded` layout, so ``radretrieve index M.csv --out D`` followed by
``bench retrieval --index D`` measures what ``bench retrieval --model ... --data M.csv`` measures:

- texts: one per study, the study's report (the distinct item texts joined, as `radretrieve index`
  writes report rows); studies without text give no query;
- images: one per image or volume item;
- labels: the manifest's label columns (plus ``modality`` / ``body_part`` where the label set lacks them).

Benchmark sets are small (thousands of items), so everything is held in memory; the metric code still
scores the queries in chunks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radretrieve.evaluation.retrieval import Embedded, Side
from radretrieve.foundation.errors import RadRetrieveError, ReadError
from radretrieve.models.protocol import Encoder

log = logging.getLogger(__name__)

# Metadata read for every row of an out dir; embeddings are fetched separately by id.
_META_SQL = (
    "SELECT item_id, coalesce(study_key, ''), coalesce(modality, ''), coalesce(body_part, ''), "
    "coalesce(labels, ''), coalesce(kind, ''), coalesce(text, ''), coalesce(description, '') "
    "FROM {view} ORDER BY item_id"
)


def _merge_labels(raw: str, modality: str, body_part: str) -> dict[str, str]:
    """The labels JSON of a shard row, with the modality / body-part columns as fallback labels."""
    labels = {k: v for k, v in (("modality", modality), ("body_part", body_part)) if v}
    if raw:
        try:
            data = json.loads(raw)
        except ValueError:
            data = {}
        if isinstance(data, dict):
            labels |= {str(k): str(v) for k, v in data.items()}
    return labels


def _split_mask(labels: Sequence[Mapping[str, str]], split: str | None, where: str) -> np.ndarray:
    if split is None:
        return np.ones(len(labels), dtype=bool)
    if not any("split" in row for row in labels):
        raise RadRetrieveError(
            f"--split {split}: the {where} records no split (out dirs keep manifest labels, and `split` is not "
            "one); leave out --split, or benchmark the manifest with --model ... --data"
        )
    return np.array([row.get("split") == split for row in labels], dtype=bool)


def _ordered(texts: Side, images: Side) -> tuple[Side, Side]:
    """Rows in a canonical order (images by item id, texts by their study's first image id), so both sources
    give the same query order and thus the same bootstrap resamples and CIs for the same data. Texts are not
    ordered by study key: an out dir stores manifest `study` values as keyed hashes, the manifest has them raw."""
    images = images.subset(sorted(range(len(images)), key=lambda i: int(images.ids[i])))
    first: dict[str, int] = {}
    for key, item in zip(images.study_keys, images.ids):
        first.setdefault(key, int(item))  # the smallest: images are sorted by id
    last = np.iinfo(np.int64).max  # a study without an image: after the others, by key
    keys = [(first.get(texts.study_keys[i], last), texts.study_keys[i], int(texts.ids[i])) for i in range(len(texts))]
    return texts.subset(sorted(range(len(texts)), key=keys.__getitem__)), images


def _index_side(cat: Any, view: str, split: str | None) -> Side:
    rows = cat.sql(_META_SQL.format(view=view))
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    labels = [_merge_labels(r[4], r[2], r[3]) for r in rows]
    keep = _split_mask(labels, split, "out dir")
    got_ids, vectors = cat.vectors(ids[keep], view)
    if not np.array_equal(got_ids, ids[keep]):  # ids are unique per view; vectors() returns them sorted
        raise RadRetrieveError(f"{view}: {len(ids[keep]) - len(got_ids)} rows have no readable embedding")
    kept = np.flatnonzero(keep)
    return Side(
        got_ids,
        vectors,
        tuple(rows[i][1] for i in kept),
        tuple(labels[i] for i in kept),
        tuple(rows[i][5] or ("report" if view == "reports" else "") for i in kept),
        # what keyword search finds a row by, labels left out (they are the benchmark's ground truth)
        # (modality and body part are left out too: they stand in for labels where a row has none)
        tuple("\n".join(p for p in (rows[i][6], rows[i][7]) if p) for i in kept),
    )


def embeddings_from_index(out_dir: Path, split: str | None = None) -> Embedded:
    """Report rows (texts) and image/volume rows (images) of an out dir written by `radretrieve index`."""
    from radretrieve.outdir.catalog import Catalog
    from radretrieve.outdir.layout import MANIFEST

    out_dir = Path(out_dir)
    if not (out_dir / MANIFEST).is_file():
        raise RadRetrieveError(f"{out_dir}: no {MANIFEST}; point --index at an out dir written by `radretrieve index`")
    cat = Catalog(out_dir)
    try:
        texts, images = _ordered(_index_side(cat, "reports", split), _index_side(cat, "items", split))
    finally:
        cat.close()
    m = cat.manifest
    meta = {
        "source": "index",
        "index": out_dir.name,
        "model": dict(m.model),
        "fingerprint": m.fingerprint,
        "split": split or "all",
    }
    return Embedded(texts, images, meta)


def _item_labels(item: Any) -> dict[str, str]:
    base = {k: v for k, v in (("modality", item.modality), ("body_part", item.body_part)) if v}
    return base | dict(item.labels)


def _study_labels(study: Any) -> dict[str, str]:
    """As a report row gets them: the study's first modality / body part, then the merged item labels."""
    base = {}
    for attr in ("modality", "body_part"):
        value = next((getattr(it, attr) for it in study.items if getattr(it, attr)), "")
        if value:
            base[attr] = value
    return base | dict(study.labels)


def _encode_items(model: Encoder, items: Sequence[Any], root: Path, batch_slices: int) -> tuple[list[int], np.ndarray]:
    """Read and encode items, ``batch_slices`` slices per encoder call. Unreadable items are skipped and
    logged (a benchmark on the rest is still useful; the count goes into the report's meta)."""
    import torch

    kept: list[int] = []
    chunks: list[np.ndarray] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if pending:
            arrays = [torch.from_numpy(p) for _, p in pending]
            flags = [items[i].kind == "volume" for i, _ in pending]
            chunks.append(model.encode_mixed(arrays, flags).numpy())
            kept.extend(i for i, _ in pending)
            pending.clear()

    for i, item in enumerate(items):
        try:
            pixels = _read_pixels(item, root, model)
        except ReadError as exc:
            log.warning("skipped %s: %s", item.source, exc.reason)
            continue
        pending.append((i, pixels))
        if sum(p.shape[0] for _, p in pending) >= batch_slices:
            flush()
    flush()
    dim = int(model.config.embed_dim)
    return kept, np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)


def _read_pixels(item: Any, root: Path, model: Encoder) -> np.ndarray:
    from radretrieve.archive import read_item

    return read_item(item, root, model.config.preprocess).pixels


def scan_archive(path: Path) -> Any:
    """`radretrieve.archive.scan(path)` (kept as a seam for the tests)."""
    from radretrieve.archive import scan

    return scan(path)


def _scan(manifest: Path, split: str | None) -> tuple[Any, list[Any]]:
    result = scan_archive(Path(manifest))
    for err in result.errors:
        log.warning("scan skipped %s: %s", err.source, err.message)
    if split is not None and not any(s.split for s in result.studies):
        raise RadRetrieveError(f"--split {split}: {Path(manifest).name} has no split column (leave out --split)")
    studies = [s for s in result.studies if split is None or s.split == split]
    return result, studies


def embeddings_from_model(model: Encoder, manifest: Path, split: str | None = None, batch_slices: int = 64) -> Embedded:
    """Encode a manifest (or archive folder) with ``model``: a `radretrieve.load_model` result."""
    result, studies = _scan(manifest, split)
    items = [it for s in studies for it in s.items]
    if not items:
        raise RadRetrieveError(f"{Path(manifest).name}: no items to benchmark (split {split or 'all'})")
    log.info("encoding %d items of %d studies", len(items), len(studies))
    kept, img_vecs = _encode_items(model, items, result.root, batch_slices)
    reports = [s for s in studies if s.report]
    txt_vecs = model.encode_text([s.report for s in reports]).numpy().astype(np.float32)
    # Report rows have no item id of their own here; their position stands in (ids are only labels).
    texts = Side(
        np.arange(len(reports), dtype=np.int64),
        txt_vecs,
        tuple(s.key for s in reports),
        tuple(_study_labels(s) for s in reports),
        ("report",) * len(reports),
    )
    images = Side(
        np.array([items[i].item_id for i in kept], dtype=np.int64),
        img_vecs.astype(np.float32),
        tuple(items[i].study_key for i in kept),
        tuple(_item_labels(items[i]) for i in kept),
        tuple(items[i].kind for i in kept),
        tuple("\n".join(p for p in (items[i].text, items[i].description) if p) for i in kept),  # as _index_side
    )
    meta = {
        "source": "model",
        "model": model.source.to_json(),
        "fingerprint": model.fingerprint,
        "data": Path(manifest).name,
        "split": split or "all",
        "read_errors": len(items) - len(kept),
        "scan_errors": len(result.errors),
    }
    return Embedded(*_ordered(texts, images), meta)


def text_encoder_for_index(out_dir: Path) -> Any:
    """The text tower an out dir was indexed with (its stored copy when present, else its model)."""
    from radretrieve.outdir.manifest import read_manifest
    from radretrieve.outdir.model_ref import load_model_for_out_dir
    from radretrieve.outdir.text_tower import load_text_tower

    fast = load_text_tower(Path(out_dir), read_manifest(Path(out_dir)).fingerprint)
    return fast if fast is not None else load_model_for_out_dir(Path(out_dir))


__all__ = ["embeddings_from_index", "embeddings_from_model", "scan_archive", "text_encoder_for_index"]
