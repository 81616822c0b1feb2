"""Turn a weights file (a `transformers.CLIPModel` or open_clip state dict) into a radretrieve model directory.

Shared by `models pull` (a file from the hub cache) and `models import` (a file copied by hand). The file is
read with `weights_only=True` or as safetensors (never unpickled). Where no config describes the weights, the
architecture is read from the tensor shapes: widths, layers, patch and image size, context length, vocabulary
and embedding size (heads = width // 64, as in OpenAI's CLIP). The MLP activation does not show in the shapes:
OpenAI's CLIP (and RadCLIP, fine-tuned from it) uses quick GELU, LAION's and most other open_clip checkpoints plain
GELU, and a wrong guess gives other embeddings without any error. So it comes from what the files say (an
`open_clip_config.json` or a transformers `config.json` beside the weights), else from the user (`--arch`,
`--quick-gelu` / `--no-quick-gelu`), else the import is refused (`activation`).
The directory is written into a temp folder beside its destination and renamed whole, so a failure leaves
nothing half-written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.foundation.config import ModelConfig
from radretrieve.foundation.errors import ModelLoadError
from radretrieve.models.provenance import Provenance, write_provenance
from radretrieve.models.published import FORMATS, Format

HEAD_WIDTH = 64  # OpenAI CLIP's attention head width; shapes do not show the head count
# The template for inferred configs: RadCLIP's adapter and the CLIP preprocessing of its published backbone.
TEMPLATE = "radclip-vit-l-14"
ADAPTER_NOTE = "slice pooling adapter at its seeded init (the release carries none): volumes pool untrained"


@dataclass(frozen=True)
class Installed:
    """What `install_weights` wrote."""

    directory: Path  # the model directory (pass it as --model)
    config: ModelConfig  # its config
    notes: tuple[str, ...]  # lines worth telling the user (architecture inferred, not the one expected)


def detect_format(state: Mapping[str, Any], path: Path) -> Format:
    """Which layout a state dict has; radretrieve's own (`clip.` keys) is refused: copy its model directory."""
    from radretrieve.models.hf_convert import is_hf_clip

    if is_hf_clip(state):
        return "hf-clip"
    text_tower = "token_embedding.weight" in state or any(k.startswith("text.") for k in state)  # CustomTextCLIP
    if text_tower and any(k.startswith("visual.") for k in state):
        return "open_clip"
    if any(k.startswith("clip.") for k in state):
        return "radretrieve"
    raise ModelLoadError(f"{path}: not a CLIP state dict ({', '.join(FORMATS[:2])}): no patch embedding found")


def open_clip_state(path: Path, fmt: Format | None) -> tuple[dict[str, Any], Format]:
    """The file's tensors under open_clip `CLIP` keys, and the format it had (checked against `fmt` if given)."""
    from radretrieve.models.hf_convert import hf_to_open_clip
    from radretrieve.models.loading import read_state_dict

    state = read_state_dict(path)
    found = detect_format(state, path)
    if found == "radretrieve":
        raise ModelLoadError(f"{path}: radretrieve weights: copy their model directory (config.json + weights)")
    if fmt is not None and fmt != found:
        raise ModelLoadError(f"{path}: a {found} state dict, not {fmt}")
    return (hf_to_open_clip(state) if found == "hf-clip" else dict(state)), found


def _layers(state: Mapping[str, Any], prefix: str, path: Path) -> int:
    """The number of blocks under `prefix`: numbered 0..n-1 without a gap (one stray high number would
    otherwise describe a model of that many layers, built before the tensors are compared)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.ln_1\.weight$")
    found = sorted({int(m.group(1)) for k in state if (m := pattern.match(k))})
    if found != list(range(len(found))):
        raise ModelLoadError(f"{path}: the blocks {prefix}N are not numbered 0..n-1 without a gap")
    return len(found)


def infer_clip_config(state: Mapping[str, Any], path: Path, quick_gelu: bool) -> dict[str, Any]:
    """open_clip `CLIP` kwargs read from an open_clip-keyed state dict's shapes (ViT image tower only)."""
    try:
        conv = state["visual.conv1.weight"]  # [width, 3, patch, patch]
        vpos = state["visual.positional_embedding"]  # [grid * grid + 1, width]
        proj = state["visual.proj"]  # [width, embed_dim]
        tok = state["token_embedding.weight"]  # [vocab, text width]
        tpos = state["positional_embedding"]  # [context length, text width]
        vfc = state["visual.transformer.resblocks.0.mlp.c_fc.weight"]  # [hidden, width]
        tfc = state["transformer.resblocks.0.mlp.c_fc.weight"]
    except KeyError as exc:
        raise ModelLoadError(f"{path}: not a ViT CLIP state dict (no {exc.args[0]})") from exc
    vwidth, patch, twidth = int(conv.shape[0]), int(conv.shape[-1]), int(tok.shape[1])
    grid = math.isqrt(int(vpos.shape[0]) - 1)
    if grid * grid != int(vpos.shape[0]) - 1 or vwidth % HEAD_WIDTH or twidth % HEAD_WIDTH:
        raise ModelLoadError(f"{path}: tensor shapes are not those of a square-image CLIP ViT with 64-wide heads")
    vision = {
        "image_size": grid * patch,
        "layers": _layers(state, "visual.transformer.resblocks.", path),
        "width": vwidth,
    }
    vision |= {"patch_size": patch, "mlp_ratio": int(vfc.shape[0]) / vwidth}
    text = {"context_length": int(tpos.shape[0]), "vocab_size": int(tok.shape[0]), "width": twidth}
    text |= {"heads": twidth // HEAD_WIDTH, "layers": _layers(state, "transformer.resblocks.", path)}
    text |= {"mlp_ratio": int(tfc.shape[0]) / twidth}
    for cfg in (vision, text):
        if cfg["mlp_ratio"] == 4.0:
            del cfg["mlp_ratio"]  # open_clip's default: written as the registry configs write it
    return {"embed_dim": int(proj.shape[1]), "quick_gelu": quick_gelu, "vision_cfg": vision, "text_cfg": text}


def config_from_shapes(
    state: Mapping[str, Any], path: Path, name: str, description: str, expected: str | None, quick_gelu: bool
) -> tuple[ModelConfig, tuple[str, ...]]:
    """The config for weights described by nothing but their shapes and `quick_gelu`; the registry config
    `expected` when the shapes are its architecture, else the inferred one with a note saying so."""
    from radretrieve.models.registry import get_model_config

    clip = infer_clip_config(state, path, quick_gelu)
    if expected is not None:
        want = get_model_config(expected)
        if _same_clip(want.clip, clip):
            return want.replace(name=name, description=description), ()
    template = get_model_config(TEMPLATE).to_dict()
    template["preprocess"] = dict(template["preprocess"]) | {"image_size": clip["vision_cfg"]["image_size"]}
    cfg = ModelConfig.from_dict(template | {"name": name, "description": description, "clip": clip})
    v, t = clip["vision_cfg"], clip["text_cfg"]
    shape = f"ViT width {v['width']} x {v['layers']} layers, patch {v['patch_size']}, {v['image_size']} px"
    shape += f"; text width {t['width']} x {t['layers']}; {clip['embed_dim']}-d"
    note = f"{path.name}: not the {expected} architecture the catalog expects; converted as its shapes show"
    return cfg, (f"{note} ({shape})",) if expected else ()


def _same_clip(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal architectures: the registry's explicit defaults (mlp_ratio 4, head_width 64) count as given."""

    def norm(c: Mapping[str, Any]) -> dict[str, Any]:
        v = {"mlp_ratio": 4.0, "head_width": 64} | dict(c["vision_cfg"])
        t = {"mlp_ratio": 4.0} | dict(c["text_cfg"])
        return {"embed_dim": int(c["embed_dim"]), "v": v, "t": t, "quick_gelu": bool(c.get("quick_gelu"))}

    return norm(a) == norm(b)


def install_weights(
    state: Mapping[str, Any],
    path: Path,
    config: ModelConfig,
    dest: Path,
    provenance: Provenance,
    text_files: Mapping[str, Path] | None = None,
) -> Installed:
    """Load open_clip-keyed `state` (from `path`) into a model of `config`, strictly, and write the model
    directory `dest` (replacing one there) with `provenance`; nothing is left at `dest` on failure.
    `text_files`: a Hugging Face text tower's config and tokenizer files ({name in the folder: file}), copied
    into the directory's `TEXT_DIR` first: the model is built from them."""
    import torch

    from radretrieve.foundation.fileio import atomic_dir, atomic_write_bytes
    from radretrieve.models.loading import _load_strict, check_fits, init_model
    from radretrieve.models.radclip import TEXT_DIR
    from radretrieve.models.reference import ModelSource

    with atomic_dir(dest) as tmp:
        for name, file in (text_files or {}).items():
            atomic_write_bytes(tmp / TEXT_DIR / name, Path(file).read_bytes())
        text_dir = tmp / TEXT_DIR if text_files else None
        with torch.device("meta"):  # a config that does not fit the file (a hostile one: 48 layers 4096 wide)
            shape = init_model(config, ModelSource("path", str(dest)), text_dir)  # is refused before allocating
        check_fits(shape.clip, _as_open_clip_loads(state, shape.clip), path)
        model = init_model(config, ModelSource("path", str(dest)), text_dir)
        _load_strict(model.clip, _as_open_clip_loads(state, model.clip), path)
        model.save(tmp)
        write_provenance(tmp, provenance)  # after save: this record is the one that stays
    return Installed(dest, config, ())


# An open_clip checkpoint's Hugging Face text tower saved by transformers before 4.31 holds this buffer, which
# newer transformers no longer keep in the state dict (open_clip's `load_checkpoint` drops it the same way).
POSITION_IDS = "text.transformer.embeddings.position_ids"


def _as_open_clip_loads(state: Mapping[str, Any], clip: Any) -> Mapping[str, Any]:
    """`state` with the two fixes open_clip applies when it loads a checkpoint: the stale position ids buffer
    dropped, a scalar or 1-element `logit_scale` shaped as the model's."""
    own = clip.state_dict()
    state = {k: v for k, v in state.items() if k != POSITION_IDS or k in own}
    scale = state.get("logit_scale")
    if scale is not None and "logit_scale" in own and scale.numel() == 1 and scale.ndim != own["logit_scale"].ndim:
        state["logit_scale"] = scale.reshape(own["logit_scale"].shape)
    return state


def open_clip_config(name: str, clip_cfg: Mapping[str, Any], pre: Mapping[str, Any], description: str) -> ModelConfig:
    """The config of an open_clip model (a built-in name or an hf-hub repo's `open_clip_config.json`)."""
    from radretrieve.models.loading import _wrap_open_clip_config
    from radretrieve.models.text import HF_TEXT

    cfg = _wrap_open_clip_config(name, dict(clip_cfg), pre)
    text = clip_cfg.get("text_cfg", {})
    if "hf_model_name" in text:  # the tower's tokenizer files are kept in the model directory
        cfg = cfg.replace(tokenizer=HF_TEXT)
    elif "hf_tokenizer_name" not in text:
        cfg = cfg.replace(tokenizer="clip-bpe")  # open_clip's bundled BPE: nothing to fetch when loading
    return cfg.replace(description=description)


ACTIVATION_HINT = (
    "pass --no-quick-gelu (GELU: LAION and most open_clip checkpoints) or --quick-gelu (OpenAI's CLIP), "
    "or --arch NAME (an open_clip model name such as ViT-B-16 or ViT-B-16-quickgelu)"
)


def activation_said(path: Path) -> bool | None:
    """Whether the files say the weights use quick GELU: an open_clip `open_clip_config.json` (its `model_cfg`;
    no `quick_gelu` there is open_clip's default, GELU) or a transformers `config.json` (`hidden_act` of both
    towers) beside the weights file; None when neither says."""
    import json

    for sidecar in ("open_clip_config.json", "config.json"):
        file = path.parent / sidecar
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{file}: not JSON ({type(exc).__name__})") from exc
        if not isinstance(data, dict):
            continue
        if sidecar == "open_clip_config.json" and isinstance(data.get("model_cfg"), dict):
            return bool(data["model_cfg"].get("quick_gelu", False))
        acts = {(data.get(t) or {}).get("hidden_act") for t in ("text_config", "vision_config")}
        if sidecar == "config.json" and len(acts) == 1 and acts <= {"quick_gelu", "gelu"}:
            return acts == {"quick_gelu"}
    return None


def activation(path: Path, given: bool | None) -> bool | None:
    """The activation to convert `path` with: what the files say, else what the user gave (they must agree);
    None when neither says (the caller decides whether anything else is known, else refuses)."""
    said = activation_said(path)
    if said is not None and given is not None and said != given:
        what = "quick GELU" if said else "GELU"
        raise ModelLoadError(f"{path}: the config beside it says {what}, which contradicts the option given")
    return said if said is not None else given


def arch_config(arch: str, description: str, quick_gelu: bool | None) -> ModelConfig:
    """The config of open_clip's built-in architecture `arch` (its activation included: `-quickgelu` names)."""
    import open_clip

    clip_cfg = open_clip.get_model_config(arch)
    if clip_cfg is None or "hf_model_name" in clip_cfg.get("text_cfg", {}):
        raise ModelLoadError(f"--arch {arch}: not an open_clip CLIP architecture (see open_clip.list_models())")
    if quick_gelu is not None and bool(clip_cfg.get("quick_gelu", False)) != quick_gelu:
        raise ModelLoadError(f"--arch {arch}: its activation contradicts --quick-gelu / --no-quick-gelu or the config")
    return open_clip_config(arch, clip_cfg, {}, description)
