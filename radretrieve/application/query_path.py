"""Files and folders outside the index: scan them, encode them on the fly, find an indexed source again.

`reports` and `similar` accept a path (a DICOM file, a series or study folder, a NIfTI volume, an image)
as the query study; `encode_path` turns it into one query vector with the index's model. The HTML contact
sheet needs an `Item` for a hit's `source` to draw thumbnails; `item_at` rebuilds it from the file system.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radretrieve.archive import Item, ScanResult, read_item, scan
from radretrieve.archive.records import ArchiveError, ErrorRecord
from radretrieve.foundation.errors import RadRetrieveError, ReadError
from radretrieve.models.protocol import Encoder

log = logging.getLogger(__name__)

ITEMS_PER_BATCH = 16  # items per encoder call: bounds memory for a large query folder


@dataclass(frozen=True)
class EncodedPath:
    """A path encoded with a model: one row per readable item, plus their mean as the study vector."""

    path: Path  # the file or folder given
    item_ids: tuple[int, ...]  # ids of the items found (keys relative to the path's folder)
    vectors: np.ndarray  # float32[N, D], L2-normalised, one per item
    vector: np.ndarray  # float32[D], L2-normalised mean of `vectors` (the query)


def scan_path(path: Path) -> ScanResult:
    """Scan one file, folder or manifest (headers only). A single file is scanned on its own, its folder as root.

    Without the default series selection: a path asked for by name (a query, or an indexed source found again
    for its thumbnail, which `--include` may have kept) is read whatever its kind."""
    from radretrieve.archive.manifest import is_manifest
    from radretrieve.archive.scanner import Collector, ScanPolicy, assemble, collect_files
    from radretrieve.archive.selection import SelectionRules

    policy = ScanPolicy(selection=SelectionRules(defaults=False))
    path = Path(path)
    if path.is_dir() or is_manifest(path):
        return scan(path, policy=policy)
    if not path.is_file():
        raise ReadError(str(path), "no such file or folder", "scan")
    # Scanning the parent folder would pull in its other files; collect just this one. A file named by the user
    # is read even where it is a link (they chose it); links inside a folder follow the archive rule.
    col = Collector(policy=dataclasses.replace(policy, follow_links=True))
    collect_files(path.parent, [path.name], col)
    return assemble(path.parent, col)


def encode_path(model: Encoder, path: Path) -> EncodedPath:
    """Read and encode every readable image/volume under `path` with `model` (its own preprocessing)."""
    result = scan_path(path)
    encoded = encode_items(model, result)
    if not encoded.items:
        raise nothing_readable(path, encoded.skipped)
    vectors = encoded.vectors
    mean = vectors.mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-12)  # several items of one study: their mean direction
    ids = tuple(item.item_id for item in encoded.items)
    return EncodedPath(Path(path), ids, vectors, mean.astype(np.float32))


@dataclass(frozen=True)
class EncodedItems:
    """The readable items of a scan, encoded; those that could not be scanned or read, as `index` records them."""

    items: tuple[Item, ...]  # encoded, in scan order
    vectors: np.ndarray  # float32 [len(items), D], L2-normalised
    skipped: tuple[ErrorRecord, ...]  # scan errors, then read errors, one per file or series


def encode_items(model: Encoder, result: ScanResult) -> EncodedItems:
    """Read and encode every item of `result` in batches. A file that cannot be scanned or read is skipped with
    a warning and a record, never the end of the command: one bad file in a folder costs only itself, as in
    `index` (same `read_item`, same failure classes)."""
    import torch

    cfg = model.config.preprocess
    kept: list[Item] = []
    skipped = [e for e in result.errors if e.stage != "select"]  # logged by the scan; not selected is no failure
    chunks = [np.zeros((0, model.config.embed_dim), np.float32)]
    for start in range(0, len(result.items), ITEMS_PER_BATCH):
        batch, arrays = [], []
        for item in result.items[start : start + ITEMS_PER_BATCH]:
            try:
                arrays.append(torch.from_numpy(read_item(item, result.root, cfg).pixels))
                batch.append(item)
            except Exception as exc:  # noqa: BLE001 - a decoder failure costs one item, as in `index`
                skipped.append(_read_failure(item, exc))
        if batch:
            chunks.append(model.encode_mixed(arrays, [item.kind == "volume" for item in batch]).numpy())
            kept.extend(batch)
    vectors = np.concatenate(chunks).astype(np.float32, copy=False)
    return EncodedItems(tuple(kept), vectors, tuple(skipped))


def _read_failure(item: Item, exc: Exception) -> ErrorRecord:
    if isinstance(exc, ArchiveError):
        record = ErrorRecord.from_error(exc)
    elif isinstance(exc, ReadError):
        record = ErrorRecord(exc.path, exc.stage, type(exc).__name__, str(exc))
    else:
        record = ErrorRecord(item.source, "read", type(exc).__name__, f"{item.source}: {exc}")
    log.warning("skipped %s", record.message)
    return record


def nothing_readable(path: Path, skipped: Sequence[ErrorRecord]) -> RadRetrieveError:
    """The error for a path none of whose files could be read: names the path and the first problem."""
    why = f" ({skipped[0].message})" if skipped else ""
    return RadRetrieveError(f"{path}: no readable DICOM, NIfTI or image found{why}")


def _on_disk(root: Path, source: str) -> str:
    """The real name of a stored source: a name that was not UTF-8 is stored in its shown form
    (radretrieve.foundation.names); a file that exists under the stored name itself wins."""
    from radretrieve.foundation.names import real_name

    return ";".join(rel if os.path.lexists(root / rel) else real_name(rel) for rel in source.split(";"))


def item_at(root: Path, source: str) -> tuple[Item, Path] | None:
    """The item stored as `source` (relative to `root`) and the root to read it from; None if gone, or if the
    source now leads outside the archive root through a link (radretrieve.archive.links): a preview never draws
    pixels from outside it, whatever the out dir's shards or source map say.

    `source` is a file, a DICOM series folder, or image files of one volume joined by ';'.
    """
    from radretrieve.archive.links import leaves_root
    from radretrieve.archive.scanner import Collector, ScanPolicy, assemble, collect_files, scan_image_stack
    from radretrieve.archive.selection import SelectionRules

    root = Path(root)
    source = _on_disk(root, source)
    rels = source.split(";")
    if any(leaves_root(root, rel) for rel in rels):
        log.warning("no preview for an item whose file leads outside the archive root")
        return None
    if len(rels) > 1:
        if not all((root / rel).is_file() for rel in rels):
            return None
        return scan_image_stack(rels), root
    full = root / source
    if not full.exists():
        return None
    if full.is_dir():
        result = scan_path(full)  # a series folder: its files may not lead out of it either
    else:
        col = Collector(policy=ScanPolicy(selection=SelectionRules(defaults=False)))
        collect_files(root, [source], col)  # relative to the archive root: the same check as at indexing
        result = assemble(root, col)
    if not result.items:
        return None
    # A series folder may hold stray files; the series itself is the item with the most files.
    item = max(result.items, key=lambda i: len(i.files))
    return item, result.root
