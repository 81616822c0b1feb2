"""Frozen, JSON-serialisable configs for models, the slice pooling adapter and preprocessing.

No torch import here: `radretrieve models` and `--help` read these without loading torch.
The hash of a config (`config_hash`) goes into every shard and index, so two artefacts built with
different preprocessing or models are never silently mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from radretrieve.foundation.errors import ConfigError

FORMAT_VERSION = 1
Pooling = Literal["attention", "mean", "max"]
# Preprocessing profiles (radretrieve.archive.preprocess): "radiology-3window" feeds three HU windows into the
# colour channels and pads to a square (models trained here); "clip" feeds grey replicated to RGB, resized on the
# shortest side and centre-cropped, as CLIP and open_clip's transforms do (pretrained weights).
Profile = Literal["radiology-3window", "clip"]
PROFILES: tuple[Profile, ...] = ("radiology-3window", "clip")
DEFAULT_PROFILE: Profile = "radiology-3window"
MAX_IMAGE_SIZE = 4096  # model input side in pixels: far above any CLIP (a hostile config could ask for 10^6)


@dataclass(frozen=True)
class AdapterConfig:
    """RadCLIP's slice pooling adapter: per-slice embeddings [S, D] -> one volume embedding [D]."""

    pooling: Pooling = "attention"  # "attention" (RadCLIP), or "mean"/"max" for ablations
    heads: int = 8  # attention heads; must divide the embedding dim
    layers: int = 1  # self-attention (transformer encoder) layers over the slice sequence
    max_slices: int = 64  # learnable positions; longer volumes get linearly interpolated positions
    mlp_ratio: float = 2.0  # hidden width of each layer's MLP, as a multiple of the embedding dim
    dropout: float = 0.0  # dropout inside the attention layers (training only)
    init_std: float = 0.02  # norm of the CLS correction at init (relative to a unit slice mean): ~ mean pooling


def _check_normalisation(mean: Any, std: Any) -> None:
    """Three finite means and three finite, positive stds: a zero std (a hostile or broken model config) would
    turn every embedding into NaN without an error."""
    try:
        ok = len(mean) == len(std) == 3 and all(math.isfinite(float(v)) for v in (*mean, *std))
        ok = ok and all(float(v) > 0 for v in std)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"mean and std must be 3 finite numbers each, std > 0; got mean {mean!r}, std {std!r}"[:300])


@dataclass(frozen=True)
class PreprocessConfig:
    """How pixels become model input. Hashed into every shard (see `config_hash`)."""

    image_size: int = 224  # square model input, pixels
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # CLIP normalisation mean (RGB)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)  # CLIP normalisation std (RGB)
    # CT: one Hounsfield window (centre, width) per RGB channel: brain, soft tissue, lung.
    ct_windows: tuple[tuple[float, float], ...] = ((40.0, 80.0), (40.0, 400.0), (-600.0, 1500.0))
    mr_percentiles: tuple[float, float] = (0.5, 99.5)  # MR: clip to these intensity percentiles, then min-max
    xray_percentiles: tuple[float, float] = (0.5, 99.5)  # X-ray and other 2D: percentile min-max
    n_slices: int = 32  # evenly spaced slices sampled from each volume
    slice_spacing_mm: float | None = None  # if set, resample along the slice axis to this spacing first
    profile: Profile = DEFAULT_PROFILE  # "radiology-3window" or "clip" (see PROFILES)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown preprocessing profile {self.profile!r} (choose from {', '.join(PROFILES)})")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8, got {self.image_size}")
        if len(self.ct_windows) != 3:
            raise ConfigError(f"ct_windows needs 3 (centre, width) pairs, got {len(self.ct_windows)}")
        if self.n_slices < 1:
            raise ConfigError(f"n_slices must be >= 1, got {self.n_slices}")
        if self.image_size > MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be <= {MAX_IMAGE_SIZE}, got {self.image_size}")
        _check_normalisation(self.mean, self.std)

    def canonical_dict(self) -> dict[str, Any]:
        """The form that is hashed. The default profile is left out so that hashes and fingerprints of configs
        made before profiles existed stay byte-identical (out dirs built then stay searchable)."""
        out = dataclasses.asdict(self)
        if out["profile"] == DEFAULT_PROFILE:
            del out["profile"]
        return out

    def with_profile(self, profile: str | None) -> PreprocessConfig:
        """This config under another profile (None: unchanged)."""
        return self if profile is None or profile == self.profile else dataclasses.replace(self, profile=profile)


@dataclass(frozen=True)
class ModelConfig:
    """A whole RadCLIP model: open_clip CLIP backbone + adapter + preprocessing defaults."""

    name: str  # registry name, or where the model came from
    clip: Mapping[str, Any]  # open_clip CLIP kwargs: embed_dim, vision_cfg, text_cfg, quick_gelu
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    seed: int = 0  # random init seed for registry models
    tokenizer: str = "clip-bpe"  # "clip-bpe" (open_clip's bundled BPE) or "hf-hub:..." / an open_clip model name
    description: str = ""  # one line for `radretrieve models`

    @property
    def embed_dim(self) -> int:
        return int(self.clip["embed_dim"])

    @property
    def context_length(self) -> int:
        return int(self.clip.get("text_cfg", {}).get("context_length", 77))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["clip"] = json.loads(json.dumps(self.clip))
        out["format_version"] = FORMAT_VERSION
        out["embed_dim"] = self.embed_dim
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        version = data.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(f"model config format_version {version} is not supported (expected {FORMAT_VERSION})")
        try:
            return cls(
                name=str(data["name"]),
                clip=dict(data["clip"]),
                adapter=AdapterConfig(**_tuples(data.get("adapter", {}))),
                preprocess=PreprocessConfig(**_tuples(data.get("preprocess", {}))),
                seed=int(data.get("seed", 0)),
                tokenizer=str(data.get("tokenizer", "clip-bpe")),
                description=str(data.get("description", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"invalid model config: {exc}") from exc

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _tuples(d: Mapping[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; frozen configs want tuples back (hashable, stable equality)."""
    return {
        k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
        for k, v in d.items()
    }


def canonical_json(obj: Any) -> str:
    """Sorted-key, compact JSON: the byte form that hashes are taken over."""
    if hasattr(obj, "canonical_dict") and not isinstance(obj, type):
        obj = obj.canonical_dict()
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=list)


def config_hash(obj: Any) -> str:
    """Short stable hash of a config (dataclass or mapping)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]
