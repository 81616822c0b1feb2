"""radretrieve: RadCLIP-based radiology retrieval.

Heavy modules (torch, open_clip) are imported lazily so `radretrieve --help` stays fast.
"""

from __future__ import annotations

from typing import Any

from radretrieve.foundation.version import __version__

__all__ = ["__version__", "load_model"]


def load_model(
    name_or_path: str,
    weights: str | None = None,
    device: str | None = None,
    preprocess: str | None = None,
    *,
    warn: bool = True,
) -> Any:
    """Load a RadCLIP model; see `radretrieve.models.loading.load_model` (`preprocess`: a profile override).
    `model.provenance` says where its weights came from; an untrained model logs one warning (`warn=False`: not)."""
    from radretrieve.models.loading import load_model as _load

    return _load(name_or_path, weights=weights, device=device, preprocess=preprocess, warn=warn)
