"""`OUT/text_tower.safetensors`: the model's text tower, so `radretrieve search` starts without open_clip.

The file holds the tensors of `radretrieve.models.text_fast.text_tower_state`, with the model fingerprint and
a digest of the tensors in its safetensors metadata. `load_text_tower` returns a `FastTextEncoder` only for
the fingerprint asked for and only when the tensors match their digest; a damaged file (truncated, changed
tensors) is never used: search falls back to the full model with a warning, and `index` rewrites it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from radretrieve.foundation.fileio import atomic_path
from radretrieve.models.protocol import Encoder
from radretrieve.models.text_fast import FastTextEncoder, text_tower_state
from radretrieve.outdir.layout import TEXT_TOWER_FILE

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)
DIGEST_KEY = "tensors_sha256"


def text_tower_path(out_dir: Path) -> Path:
    return Path(out_dir) / TEXT_TOWER_FILE


def tensors_digest(state: Mapping[str, Tensor]) -> str:
    """SHA-256 over the tensors (name, dtype, shape, bytes), sorted by name."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _read(out_dir: Path) -> tuple[dict[str, Tensor], dict[str, str]] | None:
    """(tensors, metadata) of a whole, undamaged stored tower; None if missing or damaged (logged)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = text_tower_path(out_dir)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a truncated or garbled file
        log.warning("%s: damaged (%s); not used", path, type(exc).__name__)
        return None
    if meta.get(DIGEST_KEY) != tensors_digest(state):
        log.warning("%s: its tensors differ from the digest it was written with; not used", path)
        return None
    return state, meta


def save_text_tower(model: Encoder, out_dir: Path) -> Path | None:
    """Write the text tower unless an undamaged one of this model is there; None when the tower is unsupported."""
    from safetensors.torch import save_file

    path = text_tower_path(out_dir)
    stored = _read(out_dir)
    if stored is not None and stored[1].get("fingerprint") == model.fingerprint:
        return path
    got = text_tower_state(model)
    if got is None:
        return None
    state, meta = got
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta | {DIGEST_KEY: tensors_digest(state)})
    return path


def load_text_tower(out_dir: Path, fingerprint: str) -> FastTextEncoder | None:
    """The stored tower if it is undamaged and belongs to `fingerprint`, else None (the caller falls back)."""
    stored = _read(out_dir)
    if stored is None or stored[1].get("fingerprint") != fingerprint:
        return None
    state, meta = stored
    return FastTextEncoder(state, meta)
