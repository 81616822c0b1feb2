"""Training data: image/volume-text examples from a manifest or an archive folder, split into train/val,
with decoded pixels cached in memory (float16, up to a budget) so small datasets are decoded once.

Splits: the data's own `split` (train, val; `test` is held out and never read) when it has a `val` split;
otherwise a seeded fraction of the studies (by a stable hash of the study key) becomes validation, so every
run, and every resume, sees the same split.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from radretrieve.archive import ArchiveError, Item, ScanResult, Study, read_item, scan
from radretrieve.foundation.config import PreprocessConfig
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.training.config import DataConfig, TextConfig
from radretrieve.training.progress import Ticker
from radretrieve.training.texts import candidate_texts, label_prompts, slice_texts, stable_hash, template_labels

log = logging.getLogger(__name__)


class TrainDataError(RadRetrieveError):
    """The data cannot be trained on (no pairs, no training split...)."""


@dataclass(frozen=True)
class Example:
    """One image or volume with the texts it may be paired with."""

    item: Item  # the scanned item (kind, files, labels)
    texts: tuple[str, ...]  # candidate texts; texts[0] is used for validation
    slice_texts: tuple[str, ...]  # texts for single slices of a volume used as 2D pairs
    labels: Mapping[str, str]  # template labels (item labels + region/modality from the scan)
    split: str  # "train" or "val"
    prompts: tuple[str, ...] = ()  # prompt-ensemble texts of its labels (TextConfig.prompt_tasks), mixed in

    @property
    def key(self) -> str:
        return self.item.item_key


@dataclass(frozen=True)
class TrainData:
    """Examples by split and kind, in scan order (stable across runs)."""

    root: Path  # archive root (the manifest's folder for a manifest)
    train_images: tuple[Example, ...]
    train_volumes: tuple[Example, ...]
    val_images: tuple[Example, ...]
    val_volumes: tuple[Example, ...]

    def counts(self) -> str:
        return (
            f"train {len(self.train_images)} images + {len(self.train_volumes)} volumes, "
            f"val {len(self.val_images)} images + {len(self.val_volumes)} volumes"
        )


def load_data(source: Path, text_cfg: TextConfig, data_cfg: DataConfig, seed: int) -> TrainData:
    """Scan `source` (manifest or archive folder) and build examples; items without any text are skipped."""
    result = scan(source)
    for err in result.errors[:5]:
        log.warning("skipped %s (%s: %s)", err.source, err.error_type, err.message)
    if len(result.errors) > 5:
        log.warning("... and %d more unreadable inputs", len(result.errors) - 5)
    examples = _examples(result, text_cfg)
    if not examples:
        raise TrainDataError(f"{source}: no item has a report, a caption or labels to build a text from")
    splits = _splits(result, examples, data_cfg.val_fraction, seed)
    by = {(s, k): [] for s in ("train", "val") for k in ("image", "volume")}  # type: dict[tuple[str, str], list]
    for ex in examples:
        split = splits.get(ex.item.study_key, "test")
        if split in ("train", "val"):
            by[(split, ex.item.kind)].append(Example(ex.item, ex.texts, ex.slice_texts, ex.labels, split, ex.prompts))
    data = TrainData(result.root, *(tuple(by[k]) for k in by))
    if not data.train_images and not data.train_volumes:
        raise TrainDataError(f"{source}: no training examples ({data.counts()})")
    return data


def _examples(result: ScanResult, text_cfg: TextConfig) -> list[Example]:
    out = []
    for study in result.studies:
        for item in study.items:
            labels = template_labels({**study.labels, **item.labels}, item.modality, item.body_part)
            texts = candidate_texts(text_cfg, item.text or study.report, labels)
            if texts:
                split = item.split or study.split
                prompts = label_prompts(text_cfg, labels)
                out.append(Example(item, texts, slice_texts(text_cfg, texts, labels), labels, split, prompts))
    return out


def _splits(result: ScanResult, examples: list[Example], val_fraction: float, seed: int) -> dict[str, str]:
    """Study key -> train / val / test."""
    used = {ex.item.study_key for ex in examples}
    given = {s.key: _study_split(s) for s in result.studies if s.key in used}
    if "val" in given.values():
        return {k: v if v in ("train", "val", "test") else "train" for k, v in given.items()}
    out = {}
    for key, split in given.items():
        if split == "test":
            out[key] = "test"
        else:
            draw = stable_hash("split", seed, key) / 2.0**64
            out[key] = "val" if draw < val_fraction else "train"
    return out


def _study_split(study: Study) -> str:
    return (study.split or next((i.split for i in study.items if i.split), "")).lower()


class PixelStore:
    """Decoded model input per item, float32 [S, 3, H, W]; kept as float16 while under `budget_mb`.

    float16 halves the memory and is far finer than the 8-12 bit sources; past the budget items are simply
    re-read each time (streaming), so large datasets work, only slower."""

    def __init__(self, root: Path, cfg: PreprocessConfig, budget_mb: int) -> None:
        self.root, self.cfg = root, cfg
        self.budget = budget_mb * 2**20
        self.used = 0
        self._cache: dict[str, Tensor] = {}

    def get(self, item: Item) -> Tensor:
        hit = self._cache.get(item.item_key)
        if hit is not None:
            return hit.float()
        # Always rounded through float16, so a cached and a streamed read of an item give the same input.
        pixels = torch.from_numpy(np.ascontiguousarray(read_item(item, self.root, self.cfg).pixels)).half()
        size = pixels.numel() * 2
        if self.used + size <= self.budget:
            self._cache[item.item_key] = pixels
            self.used += size
        return pixels.float()


def decode_all(data: TrainData, store: PixelStore) -> TrainData:
    """Decode every example once (filling the cache, in a fixed order); undecodable ones are dropped with a
    warning, so a few corrupt files in a real archive do not stop training midway."""

    fields = ("train_images", "train_volumes", "val_images", "val_volumes")
    ticker = Ticker("decoding", sum(len(getattr(data, f)) for f in fields))
    done = 0

    def readable(examples: tuple[Example, ...]) -> tuple[Example, ...]:
        nonlocal done
        kept = []
        for ex in examples:
            try:
                store.get(ex.item)
                kept.append(ex)
            except ArchiveError as exc:
                log.warning("dropped %s from training: %s", ex.item.source, exc)
            done += 1
            ticker.tick(done)
        return tuple(kept)

    return TrainData(data.root, *(readable(getattr(data, f)) for f in fields))
