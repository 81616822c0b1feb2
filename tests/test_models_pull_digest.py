"""A weights file's sha256 is taken when a provenance record is written, not on every load: a search loads a
model of gigabytes (`load_model_for_out_dir` -> `load_source`) and never reads the record."""

from __future__ import annotations

import hashlib

import pytest
from safetensors.torch import save_file


@pytest.fixture()
def weights(tmp_path):
    from radretrieve.models.loading import load_model

    model = load_model("radclip-tiny", device="cpu", warn=False)
    path = tmp_path / "hand-copied.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_the_digest_is_taken_when_the_record_is_read_of_the_bytes_loaded(weights):
    from radretrieve.models.loading import load_model

    model = load_model("radclip-tiny", weights=str(weights), device="cpu", warn=False)
    assert model.provenance.digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()


def test_a_load_does_not_hash_the_weights_file(weights):
    """Replaced after the load: a digest taken at load would be the old file's; a lazy one is refused (None)."""
    from radretrieve.models.loading import load_model

    model = load_model("radclip-tiny", weights=str(weights), device="cpu", warn=False)
    weights.write_bytes(b"other bytes")
    record = model.provenance
    assert (record.kind, record.origin, record.digest) == ("imported", "hand-copied.safetensors", None)
