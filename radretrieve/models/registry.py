"""Named model configs (JSON files in `model_configs/`), listed and counted without importing torch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.foundation.config import ModelConfig
from radretrieve.foundation.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "model_configs"
_EXTRA: dict[str, ModelConfig] = {}  # configs added at run time with add_model_config (tests, plugins)


def list_models() -> list[str]:
    """Sorted registry names."""
    return sorted({p.stem for p in CONFIG_DIR.glob("*.json")} | set(_EXTRA))


def get_model_config(name: str) -> ModelConfig:
    """The frozen config of a registry model; `ConfigError` naming the known ones if unknown."""
    if name in _EXTRA:
        return _EXTRA[name]
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown model '{name}'; known: {', '.join(list_models())}")
    return ModelConfig.from_dict(json.loads(path.read_text()))


def add_model_config(config: ModelConfig) -> None:
    """Register a config under its name for this process (does not write into the package)."""
    _EXTRA[config.name] = config


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of a model, computed from its config alone."""

    vision: int
    text: int
    adapter: int

    @property
    def total(self) -> int:
        return self.vision + self.text + self.adapter + 1  # + logit_scale


def _blocks(width: int, layers: int, mlp_ratio: float) -> int:
    """Pre-norm transformer blocks: 2 LayerNorms, fused QKV + out projection, 2-layer MLP (all with biases)."""
    hidden = int(width * mlp_ratio)
    per = 4 * width + (3 * width * width + 3 * width) + (width * width + width)
    per += (width * hidden + hidden) + (hidden * width + width)
    return layers * per


def count_parameters(config: ModelConfig) -> ParamCount:
    """Parameter counts of open_clip's standard ViT + text transformer, and the slice pooling adapter."""
    clip: Mapping[str, Any] = config.clip
    dim = int(clip["embed_dim"])
    v, t = clip["vision_cfg"], clip["text_cfg"]
    vw, patch, size = int(v["width"]), int(v["patch_size"]), int(v["image_size"])
    grid = (size // patch) ** 2
    vision = 3 * patch * patch * vw + vw + (grid + 1) * vw + 2 * vw
    vision += _blocks(vw, int(v["layers"]), float(v.get("mlp_ratio", 4.0))) + 2 * vw + vw * dim
    tw = int(t["width"])
    text = int(t["vocab_size"]) * tw + int(t["context_length"]) * tw
    text += _blocks(tw, int(t["layers"]), float(t.get("mlp_ratio", 4.0))) + 2 * tw + tw * dim
    a = config.adapter
    adapter = 0
    if a.pooling == "attention":
        adapter = dim + a.max_slices * dim + _blocks(dim, a.layers, a.mlp_ratio) + 2 * dim + dim * dim + dim
    return ParamCount(vision=vision, text=text, adapter=adapter)
