"""Linear probe: multinomial logistic regression on frozen embeddings (RadCLIP's second evaluation).

The objective is scikit-learn's `LogisticRegression(C=c)` default (multinomial, L2): minimise
``c * sum_i cross_entropy_i + ||W||^2 / 2`` over weights W [C, D] and an unpenalised bias [C], solved to
convergence with full-batch L-BFGS in float64 (convex: the optimum is unique, so the fit does not depend on
the solver). Done in torch, which is here anyway, so scikit-learn stays a test-only dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radretrieve.foundation.errors import ConfigError


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe: probabilities = softmax(x @ weight.T + bias)."""

    weight: np.ndarray  # float64 [C, D]
    bias: np.ndarray  # float64 [C]

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """float64 [N, C] for embeddings float [N, D]."""
        logits = np.asarray(x, np.float64) @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def fit_linear_probe(x: np.ndarray, y: np.ndarray, n_classes: int, c: float = 1.0, max_iter: int = 1000) -> LinearProbe:
    """Fit on embeddings float [N, D] with int class indices y [N] in [0, n_classes)."""
    import torch

    if c <= 0:
        raise ConfigError(f"linear probe C must be > 0, got {c}")
    if len(np.unique(y)) < 2:
        raise ConfigError("the linear probe needs at least two classes in the training split")
    xt = torch.as_tensor(np.asarray(x, np.float64))
    yt = torch.as_tensor(np.asarray(y, np.int64))
    w = torch.zeros(n_classes, xt.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        ce = torch.nn.functional.cross_entropy(xt @ w.T + b, yt, reduction="sum")
        loss = c * ce + 0.5 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LinearProbe(w.detach().numpy().copy(), b.detach().numpy().copy())
