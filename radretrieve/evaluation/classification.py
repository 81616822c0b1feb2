"""Classification metrics with bootstrap CIs: accuracy, balanced accuracy, macro F1, one-vs-rest AUROC per class.

Conventions follow scikit-learn's defaults (the tests compare against it):

- balanced accuracy: the mean recall over the classes that occur in the true labels;
- macro F1: the mean F1 over the classes that occur in the true or the predicted labels (F1 = 0 where a class
  is never predicted correctly);
- AUROC of class c: ranking of all items by P(c), positives = items of class c (ties get the average rank,
  i.e. count one half); undefined (None) when a resample has no positive or no negative.

Bootstrap: items resampled with replacement `n_bootstrap` times (seeded); the CI is the percentile interval.
Labels are int class indices into the task's class list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CORE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [C, C]: rows = true class, columns = predicted class."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (y_true, y_pred), 1)
    return out


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_true == y_pred))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    cm = confusion(y_true, y_pred, n_classes)
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    cm = confusion(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(np.mean(f1[present]))


def auroc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); None without both classes."""
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct score's first occurrence
    ranks = (first + (counts + 1) / 2.0)[inverse]  # 1-based average rank within each run of equal scores
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def all_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str]) -> dict[str, float | None]:
    """Every metric of one sample: the core ones, then `auroc[<class>]` per class."""
    y_pred = np.argmax(probs, axis=1)
    c = len(labels)
    out: dict[str, float | None] = {
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, c),
        "macro_f1": macro_f1(y_true, y_pred, c),
    }
    for k, label in enumerate(labels):
        out[f"auroc[{label}]"] = auroc(y_true == k, probs[:, k])
    return out


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the whole sample and its bootstrap percentile interval."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Estimate]:
    """`all_metrics` with percentile CIs over `n_bootstrap` item resamples (resamples where a metric is
    undefined are left out of that metric's interval)."""
    y_true, probs = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    point = all_metrics(y_true, probs, labels)
    if n_bootstrap <= 0:
        return {k: Estimate(v) for k, v in point.items()}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in point}
    n = len(y_true)
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        for k, v in all_metrics(y_true[idx], probs[idx], labels).items():
            if v is not None:
                samples[k].append(v)
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for k, v in point.items():
        vals = samples[k]
        if v is None or not vals:
            out[k] = Estimate(v)
        else:
            low, high = np.quantile(vals, [alpha, 1.0 - alpha])
            out[k] = Estimate(v, float(low), float(high))
    return out
