"""PNG of the training curves: loss per epoch and validation recall per epoch, one line per stage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radretrieve.foundation.fileio import atomic_path


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Write `path` (PNG); None when there is nothing to plot. matplotlib (Agg) is imported only here."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_rec) = plt.subplots(1, 2, figsize=(10, 4))
    stages = list(dict.fromkeys(r["stage"] for r in history))
    for stage in stages:
        rows = [(i + 1, r) for i, r in enumerate(history) if r["stage"] == stage]
        xs = [i for i, _ in rows]
        ax_loss.plot(xs, [r["loss"] for _, r in rows], marker="o", label=f"stage {stage}")
        for key in sorted({k for _, r in rows for k in r if k.startswith("recall@")}):
            ax_rec.plot(xs, [r.get(key, float("nan")) for _, r in rows], marker="o", label=f"{stage} {key}")
    ax_loss.set(title="training loss (InfoNCE)", xlabel="epoch (both stages in order)", ylabel="loss")
    ax_rec.set(
        title="validation text -> item recall", xlabel="epoch (both stages in order)", ylabel="recall", ylim=(0, 1.02)
    )
    for ax in (ax_loss, ax_rec):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path
