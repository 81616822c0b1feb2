"""An out dir remembers its model (docs/reference/formats.md): `search`, `reports` and `similar` need only
`--index DIR`.

`manifest.json["model"]` holds `{"scheme": ..., "ref": ..., "weights": ..., "fingerprint": ...}`
(`radretrieve.models.reference.ModelSource`): a registry name, an open_clip name + tag, an hf-hub id, or a
weights path for built-in and downloaded models; a locally trained model (loaded from a model directory) is
copied to `OUT/model/` and recorded as the path `"model"`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radretrieve.foundation.errors import FingerprintMismatch, RadRetrieveError
from radretrieve.models.protocol import Encoder
from radretrieve.models.reference import ModelSource
from radretrieve.outdir.layout import MODEL_DIR
from radretrieve.outdir.manifest import read_manifest


def model_reference(model: Encoder, out_dir: Path) -> dict[str, Any]:
    """How to load `model` again from `out_dir` (the manifest's "model" record).

    A model loaded from a directory is copied to OUT/model/ and recorded as the path "model", relative to
    the out dir, so the out dir keeps working when the training folder is moved or deleted."""
    source = model.source
    if source.scheme == "path":
        target = Path(out_dir) / MODEL_DIR
        if target.exists():
            shutil.rmtree(target)
        model.save(target)
        source = ModelSource("path", MODEL_DIR)
    elif source.weights and Path(source.weights).is_file():
        source = dataclasses.replace(source, weights=str(Path(source.weights).resolve()))
    return source.to_json() | {"fingerprint": model.fingerprint}


def source_of(out_dir: Path, record: Mapping[str, Any]) -> ModelSource:
    """The `ModelSource` of a manifest's "model" record (a path ref is relative to the out dir)."""
    if not record.get("ref"):
        raise RadRetrieveError(f"{out_dir}: manifest does not say which model built it; pass --model")
    source = ModelSource.from_json(record)
    if source.scheme == "path" and not Path(source.ref).is_absolute():
        source = dataclasses.replace(source, ref=str(Path(out_dir) / source.ref))
    return source


def load_model_for_out_dir(
    out_dir: Path, override: str | None = None, weights: str | None = None, device: str | None = None
) -> Encoder:
    """The model an out dir was built with; `override` must have the same fingerprint."""
    from radretrieve.models.loading import load_model, load_source

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise RadRetrieveError(f"{out_dir}: index directory not found")
    manifest = read_manifest(out_dir)
    if override is not None:  # with the out dir's preprocessing profile, if it was built with --preprocess
        profile = manifest.model.get("preprocess") if isinstance(manifest.model, Mapping) else None
        model = load_model(override, weights=weights, device=device, preprocess=profile)
    else:
        model = load_source(source_of(out_dir, manifest.model), device=device)
    if model.fingerprint != manifest.fingerprint:
        raise FingerprintMismatch(
            f"model fingerprint {model.fingerprint} differs from the index's {manifest.fingerprint} "
            f"({out_dir}); use the model the index was built with"
        )
    return model
