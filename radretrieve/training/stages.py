"""The two RadCLIP training stages as objects the loop drives: which parameters train, the loss of one
micro-batch, and validation.

- `ImageStage` (2D): the image encoder learns from image-text pairs (2D images, plus single slices of the
  training volumes); the text encoder is frozen unless `train_text`.
- `VolumeStage` (3D): the slice pooling adapter learns from volume-text pairs. With the image encoder frozen
  (`image_lr == 0`, the default) the normalised slice embeddings of every volume are computed once and the
  adapter trains on that cache: an epoch then costs a few adapter passes instead of S image-encoder passes
  per volume, which is what makes this stage cheap.
Frozen text encoders are likewise run once over every distinct text of the stage (fixed order and chunks,
so a resumed run computes bit-identical embeddings).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radretrieve.training.augment import augment_batch
from radretrieve.training.config import ImageStageConfig, TrainConfig, VolumeStageConfig
from radretrieve.training.data import Example, PixelStore, TrainData
from radretrieve.training.objective import info_nce, logit_scale, param_groups
from radretrieve.training.progress import Ticker
from radretrieve.training.texts import choose, stable_hash
from radretrieve.training.validate import retrieval_metrics

CHUNK = 64  # items per no-grad encoder call when filling caches


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA ("auto" or "bf16"); plain fp32 on CPU, where results are bit-reproducible."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def text_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """The text tower of an open_clip CLIP: everything outside `visual` except the logit scale/bias."""
    for name, p in model.clip.named_parameters():
        if not name.startswith("visual.") and not name.startswith("logit_"):
            yield name, p


def text_train_mode(model: nn.Module) -> None:
    """Train mode on the text tower, whatever holds it: an open_clip CLIP's `transformer` (and its other
    non-visual modules), a CustomTextCLIP's `text` (BiomedCLIP's Hugging Face BERT)."""
    for name, module in model.clip.named_children():
        if name != "visual":
            module.train()


def freeze_all_but(model: nn.Module, trainable: Sequence[nn.Parameter]) -> None:
    keep = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


class _Stage:
    """Shared machinery: text embedding cache and the contrastive scale."""

    name = ""

    def __init__(self, model: nn.Module, data: TrainData, store: PixelStore, cfg: TrainConfig) -> None:
        self.model, self.data, self.store, self.cfg = model, data, store, cfg
        self.device = next(model.parameters()).device
        self._text_cache: dict[str, Tensor] = {}

    def scale(self) -> Tensor | float:
        return logit_scale(self.model, self.cfg.temperature, self.cfg.learn_temperature)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Normalised text embeddings float32 [B, D], with gradients (text encoder training)."""
        tokens = self.model.tokenizer(list(texts)).to(self.device)
        with autocast(self.device, self.cfg.precision):
            return F.normalize(self.model.clip.encode_text(tokens).float(), dim=-1)

    def cache_texts(self, texts: Sequence[str]) -> None:
        """Embed every distinct text once, in sorted order and fixed chunks (frozen text encoder)."""
        todo = sorted(set(texts) - set(self._text_cache))
        with torch.no_grad():
            for start in range(0, len(todo), CHUNK):
                chunk = todo[start : start + CHUNK]
                for text, emb in zip(chunk, self.encode_texts(chunk)):
                    self._text_cache[text] = emb

    def cached_texts(self, texts: Sequence[str]) -> Tensor:
        return torch.stack([self._text_cache[t] for t in texts])

    def encode_pixels(self, pixels: Tensor) -> Tensor:
        """Normalised image-tower embeddings float32 [N, D] of `pixels: float [N, 3, H, W]`."""
        with autocast(self.device, self.cfg.precision):
            return F.normalize(self.model.clip.encode_image(pixels.to(self.device)).float(), dim=-1)

    def with_scale(self, groups: list[dict], lr: float) -> list[dict]:
        if self.cfg.learn_temperature:
            groups += param_groups([("logit_scale", self.model.clip.logit_scale, lr)], 0.0)
        return groups


class ImageStage(_Stage):
    """Stage 1: image encoder on 2D pairs (2D images and `slices_per_volume` slices of each volume)."""

    name = "2d"

    def __init__(self, model: nn.Module, data: TrainData, store: PixelStore, cfg: TrainConfig) -> None:
        super().__init__(model, data, store, cfg)
        self.stage_cfg: ImageStageConfig = cfg.image_stage
        k = cfg.data.slices_per_volume
        # (example, slot): slot -1 = a 2D image, slot j >= 0 = the j-th slice drawn from a volume this epoch
        self.entries = [(ex, -1) for ex in data.train_images] + [(ex, j) for ex in data.train_volumes for j in range(k)]
        self.val_entries = [(ex, -1) for ex in data.val_images] + [(ex, 0) for ex in data.val_volumes]

    @property
    def n_train(self) -> int:
        return len(self.entries)

    def param_groups(self) -> list[dict]:
        c = self.stage_cfg
        modules = [("visual", self.model.clip.visual, c.lr)]
        if c.train_text:
            text = [
                (n, p) for n, p in text_parameters(self.model) if c.train_token_embedding or "token_embedding" not in n
            ]
            modules.append(("text", text, c.text_lr))
        groups = self.with_scale(param_groups(modules, c.weight_decay), c.lr)
        freeze_all_but(self.model, [p for g in groups for p in g["params"]])
        return groups

    def set_modes(self) -> None:
        """Train mode only on the modules that train (matters for dropout; frozen towers stay in eval)."""
        self.model.eval()
        self.model.clip.visual.train()
        if self.stage_cfg.train_text:
            text_train_mode(self.model)

    def prepare(self) -> None:
        self.set_modes()
        if not self.stage_cfg.train_text:
            entries = self.entries + self.val_entries
            self.cache_texts([t for ex, j in entries for t in self._texts(ex, j) + ex.prompts])

    def _texts(self, ex: Example, slot: int) -> tuple[str, ...]:
        return ex.texts if slot < 0 else ex.slice_texts

    def _pixels(self, ex: Example, slot: int, epoch: int) -> Tensor:
        pixels = self.store.get(ex.item)
        if slot < 0:
            return pixels[0]
        if epoch < 0:  # validation: the middle slice
            return pixels[pixels.shape[0] // 2]
        return pixels[stable_hash(self.cfg.seed, epoch, ex.key, slot) % pixels.shape[0]]

    def _batch(self, entries: Sequence[tuple[Example, int]], epoch: int) -> tuple[Tensor, list[str]]:
        pixels = torch.stack([self._pixels(ex, j, epoch) for ex, j in entries])
        if epoch < 0:
            texts = [self._texts(ex, j)[0] for ex, j in entries]
        else:
            seed = self.cfg.seed
            texts = [
                choose(self.cfg.text, self._texts(ex, j), ex.prompts, seed, epoch, f"{ex.key}#{j}") for ex, j in entries
            ]
            pixels = augment_batch(pixels, self.cfg.augment)  # training batches only; draws the run's RNG
        return pixels, texts

    def loss(self, indices: Sequence[int], epoch: int) -> Tensor:
        pixels, texts = self._batch([self.entries[i] for i in indices], epoch)
        image = self.encode_pixels(pixels)
        text = self.encode_texts(texts) if self.stage_cfg.train_text else self.cached_texts(texts).to(self.device)
        return info_nce(image, text, self.scale(), texts)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if len(self.val_entries) < 2:
            return {}
        self.model.eval()
        images, texts = [], []
        for start in range(0, len(self.val_entries), CHUNK):
            pixels, chunk_texts = self._batch(self.val_entries[start : start + CHUNK], -1)
            images.append(self.encode_pixels(pixels).cpu())
            texts += chunk_texts
        text_emb = torch.cat([self.encode_texts(texts[s : s + CHUNK]).cpu() for s in range(0, len(texts), CHUNK)])
        self.set_modes()
        return retrieval_metrics(text_emb, torch.cat(images), texts, self.cfg.eval_ks)


class VolumeStage(_Stage):
    """Stage 2: slice pooling adapter on volume-text pairs (image encoder frozen, or at `image_lr`)."""

    name = "3d"

    def __init__(self, model: nn.Module, data: TrainData, store: PixelStore, cfg: TrainConfig) -> None:
        super().__init__(model, data, store, cfg)
        self.stage_cfg: VolumeStageConfig = cfg.volume_stage
        self.entries = list(data.train_volumes)
        self.val_entries = list(data.val_volumes)
        self.cached = self.stage_cfg.image_lr == 0
        self._slices: dict[str, Tensor] = {}  # item key -> normalised slice embeddings float32 [S, D]

    @property
    def n_train(self) -> int:
        return len(self.entries)

    def has_parameters(self) -> bool:
        return any(True for _ in self.model.adapter.parameters()) or not self.cached or self.stage_cfg.train_text

    def param_groups(self) -> list[dict]:
        c = self.stage_cfg
        modules = [("adapter", self.model.adapter, c.lr)]
        if not self.cached:
            modules.append(("visual", self.model.clip.visual, c.image_lr))
        if c.train_text:
            modules.append(
                ("text", [(n, p) for n, p in text_parameters(self.model) if "token_embedding" not in n], c.text_lr)
            )
        groups = self.with_scale(param_groups(modules, c.weight_decay), c.lr)
        freeze_all_but(self.model, [p for g in groups for p in g["params"]])
        return groups

    def set_modes(self) -> None:
        self.model.eval()
        self.model.adapter.train()
        if not self.cached:
            self.model.clip.visual.train()
        if self.stage_cfg.train_text:
            text_train_mode(self.model)

    def prepare(self) -> None:
        """Fill the text cache and, with a frozen image encoder, the slice-embedding cache (once)."""
        self.model.eval()
        if not self.stage_cfg.train_text:
            self.cache_texts([t for ex in self.entries + self.val_entries for t in ex.texts + ex.prompts])
        if self.cached:
            volumes = self.entries + self.val_entries
            ticker = Ticker(f"stage {self.name}: embedding the slices of each volume once", len(volumes))
            with torch.no_grad():
                for done, ex in enumerate(volumes, 1):
                    pixels = self.store.get(ex.item)
                    self._slices[ex.key] = torch.cat([self.encode_pixels(c) for c in torch.split(pixels, CHUNK)])
                    ticker.tick(done)
        self.set_modes()

    def _volumes(self, entries: Sequence[Example]) -> Tensor:
        """Volume embeddings float32 [B, D] through the adapter (with gradients)."""
        if self.cached:
            slices = [self._slices[ex.key] for ex in entries]
        else:
            slices = [self.encode_pixels(self.store.get(ex.item)) for ex in entries]
        with autocast(self.device, self.cfg.precision):
            return self.model.pool(torch.cat(slices), [s.shape[0] for s in slices]).float()

    def loss(self, indices: Sequence[int], epoch: int) -> Tensor:
        entries = [self.entries[i] for i in indices]
        texts = [choose(self.cfg.text, ex.texts, ex.prompts, self.cfg.seed, epoch, ex.key) for ex in entries]
        return info_nce(self._volumes(entries), self._text_embeddings(texts), self.scale(), texts)

    def _text_embeddings(self, texts: Sequence[str]) -> Tensor:
        if self.stage_cfg.train_text:
            return self.encode_texts(texts)
        return self.cached_texts(texts).to(self.device)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if len(self.val_entries) < 2:
            return {}
        self.model.eval()
        volumes = torch.cat(
            [self._volumes(self.val_entries[s : s + CHUNK]).cpu() for s in range(0, len(self.val_entries), CHUNK)]
        )
        texts = [ex.texts[0] for ex in self.val_entries]
        text_emb = torch.cat([self._text_embeddings(texts[s : s + CHUNK]).cpu() for s in range(0, len(texts), CHUNK)])
        self.set_modes()
        return retrieval_metrics(text_emb, volumes, texts, self.cfg.eval_ks)
