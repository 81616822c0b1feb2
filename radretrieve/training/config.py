"""Frozen training configs: one dataclass per part (texts, data, each stage, checkpoints), each field commented.

No torch import here, so the CLI can build and print a config without loading torch. `TrainConfig.to_dict`
/ `from_dict` round-trip through JSON; its hash (`config_hash`) is stored in every checkpoint so `--resume`
refuses to continue a run with a different recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from radretrieve.foundation.config import config_hash
from radretrieve.foundation.errors import ConfigError

TextSource = Literal["report", "template", "mixed"]
Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class TextConfig:
    """Where the text of each image/volume comes from."""

    # "report": the item's text or its study's report (a template when there is none); "template": texts built
    # from labels only; "mixed": the report and every template, one picked per item and epoch (augmentation).
    source: TextSource = "report"
    # Python format strings over an item's labels (plus `region`/`body_part` and `modality` from the scan);
    # a missing label renders empty and stray commas/spaces are tidied. RadCLIP's texts: "REGION MODALITY, LABEL".
    templates: tuple[str, ...] = ("{region} {modality}, {finding}",)
    # Texts of volume slices used as 2D pairs (a slice cannot show where along the volume a lesion lies, so
    # these leave out position); empty = the volume's own texts.
    slice_templates: tuple[str, ...] = ("{region} {modality}",)
    # Label names (e.g. "organ", "modality") whose prompt ensembles (radretrieve.evaluation.prompts, the
    # built-in templates) are mixed into an item's texts: "a CT of the chest", "chest X-ray"... for an item
    # labelled organ=chest. The texts zero-shot classification and `bench --protocol labels` query with.
    prompt_tasks: tuple[str, ...] = ()
    # With `prompt_tasks`: the share of (item, epoch) draws that take a prompt rather than one of the texts
    # above (a fixed hash of seed, epoch and item decides, like every text choice).
    prompt_share: float = 0.5

    def __post_init__(self) -> None:
        if self.source not in ("report", "template", "mixed"):
            raise ConfigError(f"text source must be report, template or mixed, got {self.source!r}")
        if self.source != "report" and not self.templates:
            raise ConfigError(f"text source {self.source!r} needs at least one template")
        if not 0.0 <= self.prompt_share <= 1.0:
            raise ConfigError(f"prompt_share must be in [0, 1], got {self.prompt_share}")


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes to each 2D-stage training image, drawn from the run's seeded torch generator (restored
    from checkpoints, so a resumed run draws the same). Validation images are never changed, and the 3D
    stage is not augmented: with a frozen image encoder it trains on slice embeddings computed once."""

    enabled: bool = False  # off by default: existing recipes and their results stay as they were
    crop_scale: tuple[float, float] = (0.6, 1.0)  # random resized crop: share of the image area kept
    crop_ratio: tuple[float, float] = (0.75, 1.333)  # ... and its aspect-ratio range (log-uniform)
    rotation: float = 10.0  # degrees: rotated by uniform(-rotation, rotation); edges repeat the border
    brightness: float = 0.1  # intensity jitter: + uniform(-b, b) x the image's value range
    contrast: float = 0.2  # contrast jitter: scaled about the image mean by uniform(1 - c, 1 + c)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        rlo, rhi = self.crop_ratio
        if not 0.0 < lo <= hi <= 1.0 or not 0.0 < rlo <= rhi:
            raise ConfigError("augment: crop_scale must lie in (0, 1] and crop_ratio be > 0, low <= high")
        if self.rotation < 0 or self.brightness < 0 or not 0.0 <= self.contrast < 1.0:
            raise ConfigError("augment: rotation and brightness must be >= 0, contrast in [0, 1)")


@dataclass(frozen=True)
class DataConfig:
    """Splits and pixel caching."""

    val_fraction: float = 0.1  # studies held out for validation (seeded) when the data has no `val` split
    cache_mb: int = 1024  # decoded pixels kept in memory as float16 up to this budget; the rest is re-read
    slices_per_volume: int = 2  # 2D stage: slices of each training volume added as image-text pairs per epoch

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.cache_mb < 0 or self.slices_per_volume < 0:
            raise ConfigError("cache_mb and slices_per_volume must be >= 0")


@dataclass(frozen=True)
class StageConfig:
    """Optimisation of one stage: AdamW with a linear warm-up then a cosine decay, per optimizer step."""

    epochs: int = 10  # passes over the stage's training pairs; 0 skips the stage
    batch_size: int = 32  # pairs per micro-batch: the in-batch negatives of InfoNCE
    grad_accum: int = 1  # micro-batches per optimizer step (each micro-batch has its own negatives)
    lr: float = 1e-4  # peak learning rate of the stage's main module
    weight_decay: float = 0.1  # AdamW decay on weight matrices (not on biases, norms, embeddings, scales)
    warmup_fraction: float = 0.1  # fraction of the stage's optimizer steps spent warming up linearly from 0
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of the peak learning rate
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 2 or self.grad_accum < 1:
            raise ConfigError(
                f"{type(self).__name__}: epochs must be >= 0, batch_size >= 2 (InfoNCE needs negatives), "
                f"grad_accum >= 1; got {self.epochs}, {self.batch_size}, {self.grad_accum}"
            )
        if self.lr <= 0 or not 0.0 <= self.warmup_fraction <= 1.0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{type(self).__name__}: lr must be > 0, warmup_fraction and min_lr_ratio in [0, 1]")


@dataclass(frozen=True)
class ImageStageConfig(StageConfig):
    """Stage 1 (2D): fine-tune the image encoder on image-text pairs; the text encoder is frozen as in RadCLIP."""

    train_text: bool = False  # also train the text encoder (needed for a random-init text tower such as radclip-tiny)
    text_lr: float = 1e-5  # peak learning rate of the text encoder when `train_text`
    # With `train_text`, also train the token embedding table: most rows never occur in a fine-tuning set, and
    # for small models the table is most of the text tower (85% of radclip-tiny's), so by default it stays fixed.
    train_token_embedding: bool = False


@dataclass(frozen=True)
class VolumeStageConfig(StageConfig):
    """Stage 2 (3D): train the slice pooling adapter on volume-text pairs; the text encoder is frozen by default.

    With `image_lr == 0` the image encoder is frozen, so each volume's slice embeddings are computed once and
    the adapter trains on the cache (orders of magnitude faster); a frozen text encoder is cached likewise."""

    lr: float = 1e-3  # the adapter is small and starts near mean pooling: a higher rate than the encoders
    weight_decay: float = 0.01  # light decay: the adapter has few parameters
    image_lr: float = 0.0  # > 0: also fine-tune the image encoder at this (low) rate; no embedding cache then
    # Also train the text encoder (without its token table): volume texts such as lesion position never occur
    # in the 2D stage, so a random-init text tower (radclip-tiny) has not learned those words yet.
    train_text: bool = False
    text_lr: float = 1e-4  # peak learning rate of the text encoder when `train_text`


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints under OUT/checkpoints/step-NNNNNNN (safetensors + weights-only torch files + JSON)."""

    every_steps: int = 100  # optimizer steps between checkpoints (one is also written at the end of each stage)
    keep: int = 2  # newest checkpoints kept; older ones are deleted
    # Keep the best epoch: the weights of each stage's epoch with the highest validation `best_metric` are
    # saved under OUT/best/STAGE/ and restored when the stage ends (so the 3D stage starts from the best 2D
    # encoder, and the model directory holds the best weights). Off: the last epoch's weights are kept.
    keep_best: bool = False
    best_metric: str = "mAP"  # a validation metric of the history: mAP or recall@K for K in eval_ks

    def __post_init__(self) -> None:
        if self.every_steps < 1 or self.keep < 1:
            raise ConfigError("checkpoint every_steps and keep must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """The whole two-stage RadCLIP recipe."""

    seed: int = 0  # data order, splits, text and slice choices all derive from (seed, stage, epoch)
    temperature: float = 0.07  # InfoNCE temperature (RadCLIP: 0.07); the initial value when learnable
    learn_temperature: bool = False  # train the CLIP logit scale (capped at 100) instead of fixing it
    precision: Precision = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU
    eval_ks: tuple[int, ...] = (1, 5)  # validation recall@k depths logged each epoch
    text: TextConfig = field(default_factory=TextConfig)
    data: DataConfig = field(default_factory=DataConfig)
    image_stage: ImageStageConfig = field(default_factory=ImageStageConfig)
    volume_stage: VolumeStageConfig = field(default_factory=VolumeStageConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # 2D-stage image augmentation

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        metric = self.checkpoint.best_metric
        if metric != "mAP" and metric not in {f"recall@{k}" for k in self.eval_ks}:
            raise ConfigError(f"best_metric {metric!r}: choose mAP or recall@K with K in eval_ks {self.eval_ks}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a (possibly partial) dict, e.g. a JSON file; unknown keys are an error."""
        parts = {
            "text": TextConfig,
            "data": DataConfig,
            "image_stage": ImageStageConfig,
            "volume_stage": VolumeStageConfig,
            "checkpoint": CheckpointConfig,
            "augment": AugmentConfig,
        }
        try:
            kwargs = {k: _tuples(v) for k, v in data.items() if k not in parts}
            for name, sub in parts.items():
                if name in data:
                    kwargs[name] = sub(**{k: _tuples(v) for k, v in dict(data[name]).items()})
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid training config: {exc}") from exc

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def hash(self) -> str:
        return config_hash(self.to_dict())


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples, so a config read from a file equals (and hashes like) the original."""
    return tuple(value) if isinstance(value, list) else value
