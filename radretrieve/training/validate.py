"""Validation retrieval metrics (text -> image/volume) via `radretrieve.evaluation.metrics`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from radretrieve.evaluation.metrics import evaluate_embeddings, group_relevance


def retrieval_metrics(text_emb: Tensor, item_emb: Tensor, texts: Sequence[str], ks: Sequence[int]) -> dict[str, float]:
    """Text -> item retrieval where query i's relevant items are those whose text equals text i (so with
    template texts every same-text item counts, and with unique reports it is plain pair retrieval).

    text_emb: float32 [N, D] and item_emb: float32 [N, D], L2-normalised, row i of each from pair i."""
    relevance = group_relevance(list(texts), list(texts))
    result = evaluate_embeddings(
        text_emb.float().numpy(), item_emb.float().numpy(), relevance, ks=tuple(ks), n_bootstrap=0
    )
    keep = [f"recall@{k}" for k in ks] + ["mAP"]
    return {name: round(result.metrics[name].value, 6) for name in keep}
