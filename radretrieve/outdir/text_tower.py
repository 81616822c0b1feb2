"""`OUT/text_tower.safetensors`: the model's text tower, so `radretrieve search` starts without open_clip.

The file holds the tensors of `radretrieve.models.text_fast.text_tower_state` with the model fingerprint in
its safetensors metadata; `load_text_tower` returns a `FastTextEncoder` only for the fingerprint asked for.
"""

from __future__ import annotations

from pathlib import Path

from radretrieve.foundation.fileio import atomic_path
from radretrieve.models.protocol import Encoder
from radretrieve.models.text_fast import FastTextEncoder, text_tower_state
from radretrieve.outdir.layout import TEXT_TOWER_FILE


def text_tower_path(out_dir: Path) -> Path:
    return Path(out_dir) / TEXT_TOWER_FILE


def stored_fingerprint(out_dir: Path) -> str | None:
    """The fingerprint recorded in the stored text tower, or None if there is none."""
    from safetensors import safe_open

    path = text_tower_path(out_dir)
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as fh:
        return (fh.metadata() or {}).get("fingerprint")


def save_text_tower(model: Encoder, out_dir: Path) -> Path | None:
    """Write the text tower unless it is there for this model already; None when the tower is unsupported."""
    from safetensors.torch import save_file

    path = text_tower_path(out_dir)
    if stored_fingerprint(out_dir) == model.fingerprint:
        return path
    got = text_tower_state(model)
    if got is None:
        return None
    state, meta = got
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def load_text_tower(out_dir: Path, fingerprint: str) -> FastTextEncoder | None:
    """The stored tower if it exists and belongs to `fingerprint`, else None."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = text_tower_path(out_dir)
    if stored_fingerprint(out_dir) != fingerprint:
        return None
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return FastTextEncoder(load_file(str(path)), meta)
