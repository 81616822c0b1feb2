"""RadCLIP's slice pooling adapter: per-slice embeddings of a volume -> one volume embedding.

Attention pooling: a learned query (CLS) token is prepended to the slice sequence, a learnable
positional encoding of slice position is added (relative position: the table of `max_slices` positions
is linearly interpolated to each volume's own slice count, so the first and last slices of every volume
get the table's ends and "upper third" means the same whatever the slice count), and multi-head self-attention
layers mix the sequence; the CLS output is projected and added to the masked mean of the slices, then L2-normalised. The
residual mean keeps an untrained adapter close to mean pooling (small projection at init), so a
pretrained CLIP gives sensible volume embeddings before the adapter is trained. `mean` and `max`
pooling (no parameters) exist for ablations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radretrieve.foundation.config import AdapterConfig
from radretrieve.foundation.errors import ConfigError, InputShapeError


class SlicePoolingAdapter(nn.Module):
    """Pool `x: float [B, S, D]` with `pad_mask: bool [B, S]` (True = padding) into `float [B, D]`."""

    def __init__(self, dim: int, cfg: AdapterConfig) -> None:
        super().__init__()
        self.dim, self.cfg = dim, cfg
        if cfg.pooling not in ("attention", "mean", "max"):
            raise ConfigError(f"adapter pooling must be attention, mean or max, got {cfg.pooling!r}")
        if cfg.pooling != "attention":
            return
        if dim % cfg.heads:
            raise ConfigError(f"adapter heads ({cfg.heads}) must divide the embedding dim ({dim})")
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(cfg.max_slices, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, cfg.heads, int(dim * cfg.mlp_ratio), cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # enable_nested_tensor=False: the nested fast path drops padded positions differently in eval
        # mode, which would make a volume's embedding depend on what it was batched with.
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)
        # The CLS correction starts at norm ~init_std: its input is layer-normed (norm ~sqrt(dim)), so weights
        # of std init_std / dim give outputs of norm ~init_std, against a slice mean of norm up to 1. (Weights of
        # std init_std gave a correction of norm ~init_std * dim, 2.6 for dim 128: far from mean pooling.)
        nn.init.normal_(self.proj.weight, std=cfg.init_std / dim)
        nn.init.zeros_(self.proj.bias)

    def positions(self, length: int) -> Tensor:
        """Positional encodings [length, D]: the table resampled to `length` slices (relative position)."""
        if length == self.cfg.max_slices:
            return self.pos
        grid = self.pos.t().unsqueeze(0)  # [1, D, max_slices]
        return F.interpolate(grid, size=length, mode="linear", align_corners=True)[0].t()

    def _position_grid(self, lengths: Tensor, width: int) -> Tensor:
        """[B, width, D]: each volume's own positions, zero over its padding."""
        out = self.pos.new_zeros(len(lengths), width, self.dim)
        for n in lengths.unique().tolist():
            out[lengths == n, :n] = self.positions(int(n))
        return out

    def forward(self, x: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise InputShapeError(f"adapter expects [B, S, {self.dim}] slice embeddings, got {tuple(x.shape)}")
        if pad_mask is None:
            pad_mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        keep = (~pad_mask).unsqueeze(-1).to(x.dtype)
        mean = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        if self.cfg.pooling == "mean":
            return F.normalize(mean, dim=-1)
        if self.cfg.pooling == "max":
            return F.normalize(x.masked_fill(pad_mask.unsqueeze(-1), float("-inf")).amax(1), dim=-1)
        seq = x + self._position_grid((~pad_mask).sum(1), x.shape[1]).to(x.dtype)
        cls = self.cls.to(x.dtype).expand(x.shape[0], 1, -1)
        seq = torch.cat([cls, seq], dim=1)
        mask = torch.cat([torch.zeros_like(pad_mask[:, :1]), pad_mask], dim=1)
        out = self.encoder(seq, src_key_padding_mask=mask)[:, 0]
        return F.normalize(mean + self.proj(self.norm(out)), dim=-1)
