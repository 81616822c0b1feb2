"""A text-only encoder for fast CLI start-up: `radretrieve search` without building the whole model.

`radretrieve index` stores the text tower's weights in the out dir (`radretrieve.outdir.text_tower`, with the
model's fingerprint in its metadata). `FastTextEncoder` computes open_clip's `CLIP.encode_text` from them in plain
torch, with open_clip's bundled BPE tokenizer loaded on its own, so a text search does not import open_clip
(and with it torchvision, timm and transformers), which costs seconds. A parity test checks it against
the full model; a fingerprint mismatch or a non-standard text tower falls back to the full model.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from radretrieve.models.radclip import RadCLIP

MAX_BYTES = 300 * 2**20  # larger text towers (ViT-L's is ~500 MB) are not duplicated into every out dir
log = logging.getLogger(__name__)
_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


@lru_cache(maxsize=1)
def bpe_module() -> ModuleType:
    """open_clip's tokenizer module, loaded from its file without running `open_clip/__init__.py`."""
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ImportError("open_clip is not installed")
    path = Path(spec.origin).parent / "tokenizer.py"
    mod_spec = importlib.util.spec_from_file_location("radretrieve._clip_bpe", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def supports_fast_text(model: RadCLIP) -> bool:
    """Only open_clip's standard text transformer with the bundled BPE is reimplemented here."""
    t = model.config.clip.get("text_cfg", {})
    custom = {"hf_model_name", "pool_type", "ls_init_value", "embed_cls", "pad_id", "no_causal_mask", "output_tokens"}
    return model.config.tokenizer == "clip-bpe" and not (custom & set(t)) and hasattr(model.clip, "token_embedding")


def text_tower_state(model: RadCLIP) -> tuple[dict[str, Tensor], dict[str, str]] | None:
    """The text tower's tensors and the metadata `FastTextEncoder` needs (fingerprint included), or None when
    the tower is not the standard one or is too large to duplicate into an out dir."""
    if not supports_fast_text(model):
        return None
    state = {
        k: v.detach().cpu().contiguous() for k, v in model.clip.state_dict().items() if k.startswith(_TEXT_PREFIXES)
    }
    if sum(v.numel() * v.element_size() for v in state.values()) > MAX_BYTES:
        return None
    t = model.config.clip["text_cfg"]
    meta = {
        "fingerprint": model.fingerprint,
        "heads": str(int(t.get("heads", 8))),
        "quick_gelu": json.dumps(bool(model.config.clip.get("quick_gelu", False))),
        "context_length": str(model.config.context_length),
    }
    return state, meta


class FastTextEncoder:
    """`encode_text` of a stored text tower; see module docstring."""

    def __init__(self, state: dict[str, Tensor], meta: dict[str, str]) -> None:
        self.w, self.heads = state, int(meta["heads"])
        self.quick_gelu = json.loads(meta["quick_gelu"])
        self.context_length = int(meta["context_length"])
        self.fingerprint = meta["fingerprint"]
        self.layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
        self._bpe = bpe_module().SimpleTokenizer(context_length=self.context_length)
        self.truncated = 0  # texts cut to the context length so far

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Token ids long [N, context_length], truncated like `radretrieve.models.text.ClipTokenizer`."""
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        sot, eot = self._bpe.sot_token_id, self._bpe.eot_token_id
        for i, text in enumerate(texts):
            tokens = [sot] + self._bpe.encode(text) + [eot]
            if len(tokens) > self.context_length:
                self.truncated += 1
                if self.truncated == 1:  # as the full model's tokenizer does: once per encoder
                    log.warning("text longer than %d tokens truncated", self.context_length)
                tokens = tokens[: self.context_length - 1] + [eot]
            out[i, : len(tokens)] = torch.tensor(tokens)
        return out

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Texts -> float32 [N, D], L2-normalised."""
        tokens = self.tokenize(list(texts))
        w = self.w
        x = w["token_embedding.weight"][tokens] + w["positional_embedding"]
        n = x.shape[1]
        causal = torch.full((n, n), float("-inf")).triu(1)
        for i in range(self.layers):
            x = self._block(x, f"transformer.resblocks.{i}.", causal)
        x = F.layer_norm(x, x.shape[-1:], w["ln_final.weight"], w["ln_final.bias"])
        pooled = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]  # the <eot> token has the largest id
        return F.normalize(pooled @ w["text_projection"], dim=-1)

    def _block(self, x: Tensor, p: str, mask: Tensor) -> Tensor:
        w, (b, n, d) = self.w, x.shape
        h = F.layer_norm(x, (d,), w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        q, k, v = F.linear(h, w[p + "attn.in_proj_weight"], w[p + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, n, d)
        x = x + F.linear(a, w[p + "attn.out_proj.weight"], w[p + "attn.out_proj.bias"])
        h = F.layer_norm(x, (d,), w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = F.linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h) if self.quick_gelu else F.gelu(h)
        return x + F.linear(h, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
