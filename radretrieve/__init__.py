"""radretrieve: RadCLIP-based radiology retrieval.

Heavy modules (torch, open_clip) are imported lazily so `radretrieve --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from radretrieve.foundation.version import __version__

__all__ = ["__version__", "load_model", "open"]

if TYPE_CHECKING:
    from radretrieve.application.outdir_api import OutDir


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


def open(  # radretrieve.open(OUT), as a notebook reads it; the builtin is untouched elsewhere
    path: str | Path,
    *,
    model: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    where_timeout: float = 5.0,
) -> OutDir:
    """Open an out dir (written by `radretrieve index`) for search, similar, reports, classify and its items;
    see `radretrieve.application.outdir_api.OutDir`. Use it as a context manager, or call `close()`."""
    from radretrieve.application.outdir_api import OutDir

    return OutDir(path, model=model, weights=weights, device=device, where_timeout=where_timeout)
