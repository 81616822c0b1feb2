"""The contrastive objective and its optimizer: symmetric InfoNCE, AdamW, warm-up + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from radretrieve.training.config import StageConfig

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on the learnable scale (temperature >= 0.01)


def info_nce(a: Tensor, b: Tensor, scale: Tensor | float, texts: Sequence[str] | None = None) -> Tensor:
    """Symmetric InfoNCE between L2-normalised `a: float [B, D]` and `b: float [B, D]` (row i pairs with row i).

    With `texts`, pairs whose texts are equal are all positives of each other: the loss of row i is
    -log(sum of softmax probability over its positives), which is 0 once all mass is on them. Template texts
    repeat within a batch, and treating a same-text pair as a negative would push apart exactly the items
    a query should find together. With all texts distinct this is CLIP's loss."""
    logits = scale * (a.float() @ b.float().t())
    if texts is None:
        positive = torch.eye(len(a), dtype=torch.bool, device=a.device)
    else:
        codes = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        ids = torch.tensor([codes[t] for t in texts], device=a.device)
        positive = ids[:, None] == ids[None, :]

    def one_way(lg: Tensor, pos: Tensor) -> Tensor:
        return (lg.logsumexp(dim=1) - lg.masked_fill(~pos, float("-inf")).logsumexp(dim=1)).mean()

    return (one_way(logits, positive) + one_way(logits.t(), positive.t())) / 2


def no_decay(name: str, param: Tensor) -> bool:
    """Biases, norms, embeddings, positional/class tokens and scales are not weight-decayed (as in CLIP)."""
    return param.ndim < 2 or any(s in name for s in ("embedding", "ln_", "norm", "logit_scale", "cls", "pos"))


Named = nn.Module | nn.Parameter | Sequence[tuple[str, nn.Parameter]]


def param_groups(modules: Iterable[tuple[str, Named, float]], weight_decay: float) -> list[dict]:
    """AdamW groups from (name, module / parameter / named parameters, peak lr): one decayed and one
    not-decayed group each."""
    groups = []
    for name, module, lr in modules:
        if isinstance(module, nn.Parameter):
            named = [(name, module)]
        else:
            named = list(module.named_parameters()) if isinstance(module, nn.Module) else list(module)
        decay = [p for n, p in named if not no_decay(n, p)]
        rest = [p for n, p in named if no_decay(n, p)]
        groups += [
            {"params": ps, "lr": lr, "weight_decay": wd, "name": f"{name}{tag}"}
            for ps, wd, tag in ((decay, weight_decay, ""), (rest, 0.0, "/no_decay"))
            if ps
        ]
    return groups


def warmup_cosine(step: int, total: int, warmup: int, floor: float) -> float:
    """LR multiplier at optimizer step `step` (0-based): linear warm-up to 1, then cosine down to `floor`."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    groups: list[dict], cfg: StageConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (CLIP's betas and eps) and a per-step warm-up + cosine schedule over `total_steps`."""
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6)
    warmup = int(round(cfg.warmup_fraction * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total_steps, warmup, cfg.min_lr_ratio)
    )
    return optimizer, schedule


def logit_scale(model: nn.Module, temperature: float, learnable: bool) -> Tensor | float:
    """1 / temperature: fixed, or the CLIP model's learnable logit scale (exp, capped at `MAX_LOGIT_SCALE`)."""
    if learnable:
        return model.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
    return 1.0 / temperature
