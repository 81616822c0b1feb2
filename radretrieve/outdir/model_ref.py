"""An out dir remembers its model (DESIGN.md): `search`, `reports` and `similar` need only `--index DIR`.

`manifest.json["model"]` holds `{"ref": ..., "weights": ..., "fingerprint": ...}`: a registry name, an
open_clip name + tag or a weights path for built-in and downloaded models; for a locally trained model
(loaded from a model directory) the directory is copied to `OUT/model/` and `ref` is `"model"`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from radretrieve.foundation.errors import FingerprintMismatch, RadRetrieveError
from radretrieve.outdir.layout import MODEL_DIR
from radretrieve.outdir.manifest import read_manifest


def model_reference(model: Any, out_dir: Path, fingerprint: str | None = None) -> dict[str, Any]:
    """How to load `model` again from `out_dir`; copies a local model directory into the out dir.

    `fingerprint`: the model's, when the caller has it already (hashing a large model takes seconds)."""
    ref = str(model.source.get("ref") or model.config.name)
    weights = model.source.get("weights")
    if Path(ref).is_dir():
        target = Path(out_dir) / MODEL_DIR
        if target.exists():
            shutil.rmtree(target)
        model.save(target)
        ref, weights = MODEL_DIR, None
    elif weights and Path(weights).is_file():
        weights = str(Path(weights).resolve())
    return {"ref": ref, "weights": weights, "fingerprint": fingerprint or model.fingerprint}


def load_model_for_out_dir(
    out_dir: Path, override: str | None = None, weights: str | None = None, device: str | None = None
) -> Any:
    """The model an out dir was built with; `override` must have the same fingerprint."""
    from radretrieve.models.loading import load_model

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise RadRetrieveError(f"{out_dir}: index directory not found")
    manifest = read_manifest(out_dir)
    if override is not None:
        model = load_model(override, weights=weights, device=device)
    else:
        ref = manifest.model.get("ref")
        if not ref:
            raise RadRetrieveError(f"{out_dir}: manifest does not say which model built it; pass --model")
        path = out_dir / ref if ref == MODEL_DIR else ref
        model = load_model(str(path), weights=manifest.model.get("weights"), device=device)
    fingerprint = model.fingerprint  # hashes every weight: once
    if fingerprint != manifest.fingerprint:
        raise FingerprintMismatch(
            f"model fingerprint {fingerprint} differs from the index's {manifest.fingerprint} "
            f"({out_dir}); use the model the index was built with"
        )
    return model
