"""Convert a Hugging Face `transformers.CLIPModel` state dict into open_clip's `CLIP` layout.

The RadCLIP authors published their ViT-L/14 weights as a `CLIPModel` state dict (`RadCLIP.pth`).
Mapping (HF -> open_clip), per tower: q/k/v projections are concatenated into `attn.in_proj_*`;
`layer_norm1/2` -> `ln_1/2`; `mlp.fc1/fc2` -> `mlp.c_fc/c_proj`; the projections are stored transposed
(`visual_projection.weight.T` -> `visual.proj`, `text_projection.weight.T` -> `text_projection`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from radretrieve.foundation.errors import ModelLoadError

HF_MARKER = "vision_model.embeddings.patch_embedding.weight"
_LAYER = re.compile(r"^(text_model|vision_model)\.encoder\.layers\.(\d+)\.(.+)$")
_LAYER_MAP = {
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
_DIRECT = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: HF's spelling
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_IGNORED = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")


def is_hf_clip(state: Mapping[str, Tensor]) -> bool:
    return HF_MARKER in state


def hf_to_open_clip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map an HF `CLIPModel` state dict to open_clip `CLIP` keys; raises on keys it does not know."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, int, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        if key in _IGNORED:
            continue
        if key in _DIRECT:
            out[_DIRECT[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif m := _LAYER.match(key):
            _map_layer(m.group(1), int(m.group(2)), m.group(3), value, out, qkv)
        else:
            raise ModelLoadError(f"unexpected key in Hugging Face CLIP state dict: {key}")
    for (tower, idx, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise ModelLoadError(f"layer {idx} of {tower} lacks q/k/v {kind}s (has {sorted(parts)})")
        out[f"{_prefix(tower)}{idx}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _prefix(tower: str) -> str:
    return "visual.transformer.resblocks." if tower == "vision_model" else "transformer.resblocks."


def _map_layer(tower: str, idx: int, rest: str, value: Tensor, out: dict, qkv: dict) -> None:
    if rest in _LAYER_MAP:
        out[f"{_prefix(tower)}{idx}.{_LAYER_MAP[rest]}"] = value
        return
    m = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
    if not m:
        raise ModelLoadError(f"unexpected key in Hugging Face CLIP state dict: {tower}.encoder.layers.{idx}.{rest}")
    qkv.setdefault((tower, idx, m.group(2)), {})[m.group(1)] = value
