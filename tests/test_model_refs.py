"""Model references resolve by explicit rules; the fingerprint is computed once and follows weight changes."""

from __future__ import annotations

import logging

import pytest
import torch

from radretrieve import load_model
from radretrieve.foundation.errors import ConfigError
from radretrieve.models.loading import init_model
from radretrieve.models.protocol import Encoder, TextEncoder
from radretrieve.models.radclip import RadCLIP
from radretrieve.models.reference import ModelSource, parse_model_ref
from radretrieve.models.registry import get_model_config


def test_a_folder_named_like_a_registry_model_does_not_shadow_it(tmp_path, monkeypatch, caplog):
    other = init_model(get_model_config("radclip-tiny").replace(seed=7))
    other.save(tmp_path / "radclip-tiny")  # a folder in the working directory with a registry model's name
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        registry = load_model("radclip-tiny", device="cpu")
    assert registry.source == ModelSource("registry", "radclip-tiny")
    assert registry.fingerprint == init_model(get_model_config("radclip-tiny")).fingerprint
    assert any("./radclip-tiny" in r.getMessage() for r in caplog.records)  # says how to load the folder
    folder = load_model("./radclip-tiny", device="cpu")
    assert folder.source.scheme == "path" and folder.fingerprint == other.fingerprint


@pytest.mark.parametrize(
    ("text", "scheme", "ref"),
    [
        ("radclip-tiny", "registry", "radclip-tiny"),
        ("registry:radclip-tiny", "registry", "radclip-tiny"),
        ("ViT-B-16", "open_clip", "ViT-B-16"),
        ("open_clip:ViT-B-16", "open_clip", "ViT-B-16"),
        ("hf-hub:org/repo", "hf-hub", "hf-hub:org/repo"),
        ("runs/my-model", "path", "runs/my-model"),
        ("path:radclip-tiny", "path", "radclip-tiny"),
    ],
)
def test_reference_schemes(text, scheme, ref):
    source = parse_model_ref(text)
    assert (source.scheme, source.ref) == (scheme, ref)
    assert parse_model_ref(source.spec) == source  # the explicit form reads back to the same source


def test_an_unknown_reference_names_the_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="registry:NAME.*hf-hub"):
        parse_model_ref("no-such-model")


def test_a_bare_folder_name_that_is_nothing_else_is_a_path(tmp_path, monkeypatch):
    init_model(get_model_config("radclip-tiny")).save(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    assert parse_model_ref("mine") == ModelSource("path", "mine")


def test_sources_round_trip_through_json():
    source = ModelSource("registry", "radclip-tiny", "w.safetensors")
    assert ModelSource.from_json(source.to_json()) == source
    # older out dirs recorded no scheme: the rules decide
    assert ModelSource.from_json({"ref": "radclip-tiny", "weights": None}) == ModelSource("registry", "radclip-tiny")


def test_fingerprint_is_hashed_once_until_the_weights_change(monkeypatch):
    model = init_model(get_model_config("radclip-tiny"))
    calls = []
    real = RadCLIP._hash_weights
    monkeypatch.setattr(RadCLIP, "_hash_weights", lambda self: calls.append(1) or real(self))
    first = model.fingerprint
    assert model.fingerprint == first and len(calls) == 1  # the second access is the cached value

    with torch.no_grad():
        model.adapter.proj.weight.add_(1e-3)  # in place, as an optimizer step does
    stepped = model.fingerprint
    assert stepped != first and len(calls) == 2

    model.load_state_dict(init_model(get_model_config("radclip-tiny")).state_dict())
    assert model.fingerprint == first and len(calls) == 3  # load_state_dict copies in place: noticed too

    model.config = model.config.replace(adapter=model.config.adapter.__class__(pooling="mean"))
    assert model.fingerprint != first  # the config is part of it


def test_fingerprint_follows_an_optimizer_step():
    model = init_model(get_model_config("radclip-tiny"))
    before = model.fingerprint
    opt = torch.optim.SGD(model.adapter.parameters(), lr=0.1)
    x = torch.randn(2, 4, model.config.embed_dim)
    model.adapter(x, torch.zeros(2, 4, dtype=torch.bool)).sum().backward()
    opt.step()
    assert model.fingerprint != before


def test_the_model_is_an_encoder(tiny_model):
    assert isinstance(tiny_model, Encoder) and isinstance(tiny_model, TextEncoder)
