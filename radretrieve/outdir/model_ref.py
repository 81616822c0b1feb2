"""An out dir remembers its model (docs/reference/formats.md): `search`, `reports` and `similar` need only
`--index DIR`.

`manifest.json["model"]` holds `{"scheme": ..., "ref": ..., "weights": ..., "fingerprint": ...}`
(`radretrieve.models.reference.ModelSource`): a registry name, an open_clip name + tag, an hf-hub id, or a
weights path for built-in and downloaded models; a locally trained model (loaded from a model directory) is
copied to `OUT/model/` and recorded as the path `"model"`.

The record also names the model (`"name"`) and carries its provenance (`"provenance"`, see
`radretrieve.models.provenance`), so `search`, `similar`, `reports`, `serve` and `classify --index` know whether
the out dir's results mean anything without loading the model (`recorded_model`). A record written before
provenance existed is read by what its source says where that is decisive (a registry name without weights is
untrained; a copied model directory has its own `provenance.json`), else as unknown (no warning).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.foundation.errors import FingerprintMismatch, RadRetrieveError
from radretrieve.models.protocol import Encoder
from radretrieve.models.provenance import (
    UNKNOWN,
    Provenance,
    model_json,
    provenance_of_source,
    read_provenance,
    warn_if_untrained,
)
from radretrieve.models.reference import ModelSource
from radretrieve.outdir.layout import MANIFEST, MODEL_DIR
from radretrieve.outdir.manifest import Manifest, read_manifest


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
    record = source.to_json() | {"fingerprint": model.fingerprint, "name": model.config.name}
    return record | {"provenance": model.provenance.to_json()}


def source_of(out_dir: Path, record: Mapping[str, Any]) -> ModelSource:
    """The `ModelSource` of a manifest's "model" record (a path ref is relative to the out dir)."""
    if not record.get("ref"):
        raise RadRetrieveError(f"{out_dir}: manifest does not say which model built it; pass --model")
    source = ModelSource.from_json(record)
    if source.scheme == "path" and not Path(source.ref).is_absolute():
        source = dataclasses.replace(source, ref=str(Path(out_dir) / source.ref))
    return source


@dataclass(frozen=True)
class RecordedModel:
    """What an out dir's manifest says about its model: enough to tell the user whether results mean anything."""

    name: str  # the model's name (its config name; older records: the reference)
    provenance: Provenance  # where its weights came from
    fingerprint: str  # the model fingerprint of the out dir

    def to_json(self) -> dict[str, Any]:
        """The `"model"` object of JSON output and API answers (`radretrieve.models.provenance.model_json`)."""
        return model_json(self.name, self.provenance, self.fingerprint)

    def warn(self) -> bool:
        """The one warning line when the model is untrained (once per command run)."""
        return warn_if_untrained(self.name, self.provenance)


def recorded_model(out_dir: Path, manifest: Manifest | None = None) -> RecordedModel:
    """The model record of `out_dir`'s manifest, provenance included (derived for older records, see above)."""
    out_dir = Path(out_dir)
    manifest = manifest if manifest is not None else read_manifest(out_dir)
    record = manifest.model if isinstance(manifest.model, Mapping) else {}
    name = str(record.get("name") or record.get("ref") or "?")
    stored = record.get("provenance")
    if stored is not None:
        if not isinstance(stored, Mapping):
            raise RadRetrieveError(f"{out_dir / MANIFEST}: the model's provenance must be a JSON object")
        try:
            provenance = Provenance.from_json(stored)
        except RadRetrieveError as exc:
            raise RadRetrieveError(f"{out_dir / MANIFEST}: {exc}") from None
    else:
        provenance = _derived(out_dir, record)
    return RecordedModel(name, provenance, manifest.fingerprint)


def _derived(out_dir: Path, record: Mapping[str, Any]) -> Provenance:
    """The provenance of a record written before records had one: from its source where that is decisive."""
    try:
        source = source_of(out_dir, record)
    except RadRetrieveError:
        return UNKNOWN
    found = provenance_of_source(source, digest=False)
    if found is not None:
        return found
    try:
        return read_provenance(Path(source.ref))  # a copied model directory (OUT/model)
    except RadRetrieveError:
        return UNKNOWN


def load_model_for_out_dir(
    out_dir: Path, override: str | None = None, weights: str | None = None, device: str | None = None
) -> Encoder:
    """The model an out dir was built with; `override` must have the same fingerprint. An untrained one logs the
    one warning line (from the out dir's record: the model itself is loaded without a second)."""
    from radretrieve.models.loading import load_model, load_source

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise RadRetrieveError(f"{out_dir}: index directory not found")
    manifest = read_manifest(out_dir)
    recorded_model(out_dir, manifest).warn()
    if override is not None:  # with the out dir's preprocessing profile, if it was built with --preprocess
        profile = manifest.model.get("preprocess") if isinstance(manifest.model, Mapping) else None
        model = load_model(override, weights=weights, device=device, preprocess=profile, warn=False)
    else:
        model = load_source(source_of(out_dir, manifest.model), device=device, warn=False)
    if model.fingerprint != manifest.fingerprint:
        raise FingerprintMismatch(
            f"model fingerprint {model.fingerprint} differs from the index's {manifest.fingerprint} "
            f"({out_dir}); use the model the index was built with"
        )
    return model
