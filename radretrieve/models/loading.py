"""`load_model`: one entry point for every source of RadCLIP weights.

1. a registry name (`radclip-tiny`, ...): random init from the config's fixed seed;
2. an open_clip model name with a pretrained tag (`load_model("ViT-B-16", weights="openai")`) or an
   `hf-hub:org/repo` id: downloaded when online, one clear error line when offline;
3. a radretrieve model directory (`config.json` + `model.safetensors`);
4. `weights=` an open_clip checkpoint file (`.safetensors`, or `.pt/.bin` read with `weights_only=True`);
5. `weights=` a Hugging Face `CLIPModel` state dict such as RadCLIP's `RadCLIP.pth`, converted on load.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from radretrieve.foundation.config import ModelConfig
from radretrieve.foundation.errors import ConfigError, ModelLoadError
from radretrieve.models.hf_convert import hf_to_open_clip, is_hf_clip
from radretrieve.models.radclip import CONFIG_FILE, WEIGHTS_FILE, RadCLIP
from radretrieve.models.registry import get_model_config, list_models

log = logging.getLogger(__name__)
OFFLINE_HINT = (
    "no network? download it once on a connected machine (it is cached under ~/.cache/huggingface) "
    "or pass a local file with --weights"
)


def load_model(name_or_path: str, weights: str | None = None, device: str | None = None) -> RadCLIP:
    """Load a RadCLIP model from a registry name, open_clip name/tag, hf-hub id or model directory."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = Path(name_or_path)
    if path.is_dir():
        model = load_model_dir(path)
    elif name_or_path in list_models():
        model = init_model(get_model_config(name_or_path))
    elif name_or_path.startswith("hf-hub:") or _is_open_clip_name(name_or_path):
        model = _from_open_clip(name_or_path, weights)
        weights = None  # the tag/hub weights are already in
    else:
        raise ConfigError(
            f"unknown model '{name_or_path}': not a model directory, a registry name ({', '.join(list_models())}), "
            "an open_clip model name or an hf-hub: id"
        )
    if weights is not None:
        load_weights(model, Path(weights))
        model.source = {"ref": name_or_path, "weights": str(weights)}
    return model.to(device).eval()


def init_model(cfg: ModelConfig) -> RadCLIP:
    """A randomly initialised model; the same seed gives the same weights, without touching global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return RadCLIP(cfg)


def load_model_dir(directory: Path) -> RadCLIP:
    """Load a model directory written by `RadCLIP.save`; the stored fingerprint is verified."""
    from safetensors.torch import load_file

    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise ModelLoadError(f"{directory}: not a model directory (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    meta = json.loads(cfg_path.read_text())
    model = init_model(ModelConfig.from_dict(meta))
    _load_strict(model, load_file(str(w_path)), w_path)
    expected = meta.get("fingerprint")
    if expected and model.fingerprint != expected:
        raise ModelLoadError(f"{directory}: weights do not match the fingerprint in {CONFIG_FILE} (corrupt copy?)")
    # the directory itself is the reference (its config.json "source" only says what it was trained from)
    model.source = {"ref": str(directory), "weights": None}
    return model


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors from a `.safetensors` file or a `torch.save` file (weights_only: never unpickles code)."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: expected a state dict of tensors")
    return {_strip_prefix(k): v for k, v in obj.items()}


def load_weights(model: RadCLIP, path: Path) -> None:
    """Load a radretrieve, open_clip or Hugging Face CLIPModel state dict into `model` (strict)."""
    state = read_state_dict(path)
    if any(k.startswith("clip.") for k in state):
        _load_strict(model, state, path)
    elif is_hf_clip(state):
        _load_strict(model.clip, hf_to_open_clip(state), path)
    else:
        _load_strict(model.clip, state, path)


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _load_strict(module: torch.nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise ModelLoadError(f"{path}: weights do not fit this model ({detail})")
    module.load_state_dict(state, strict=True)


def _is_open_clip_name(name: str) -> bool:
    import open_clip

    return name in open_clip.list_models()


def _from_open_clip(name: str, tag: str | None) -> RadCLIP:
    """Build from open_clip's config for `name`; with a pretrained tag / hf-hub id, download the weights."""
    import open_clip

    try:
        clip_cfg = open_clip.get_model_config(name)
        pre = open_clip.get_pretrained_cfg(name, tag) if tag and not name.startswith("hf-hub:") else {}
        reference = (
            open_clip.create_model(name, pretrained=tag, weights_only=True) if (tag or "hf-hub:" in name) else None
        )
    except Exception as exc:
        if isinstance(exc, RuntimeError) and "not a known tag" in str(exc):
            raise ModelLoadError(f"'{tag}' is not a pretrained tag of {name}: see open_clip.list_pretrained()") from exc
        raise ModelLoadError(f"could not download {name}{' (' + tag + ')' if tag else ''}: {OFFLINE_HINT}") from exc
    if clip_cfg is None:
        raise ModelLoadError(f"{name}: open_clip has no config for it")
    if pre.get("quick_gelu"):
        clip_cfg["quick_gelu"] = True
    cfg = _wrap_open_clip_config(name, clip_cfg, pre)
    model = init_model(cfg)
    if reference is not None:
        _load_strict(model.clip, reference.state_dict(), Path(name))
    model.source = {"ref": name, "weights": tag}
    return model


def _wrap_open_clip_config(name: str, clip_cfg: dict, pre: Mapping) -> ModelConfig:
    from radretrieve.foundation.config import PreprocessConfig

    size = clip_cfg["vision_cfg"].get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    prep = {"image_size": int(size)}
    if pre.get("mean") and pre.get("std"):
        prep |= {"mean": tuple(pre["mean"]), "std": tuple(pre["std"])}
    tokenizer = (
        name if "hf_tokenizer_name" in clip_cfg.get("text_cfg", {}) or name.startswith("hf-hub:") else "clip-bpe"
    )
    return ModelConfig(name=name, clip=clip_cfg, preprocess=PreprocessConfig(**prep), tokenizer=tokenizer)
