"""Model layer: registry, parameter counts, encoders, adapter behaviour, save/load, fingerprint."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from radretrieve.foundation.config import AdapterConfig
from radretrieve.foundation.errors import ConfigError, InputShapeError, ModelLoadError
from radretrieve.models.loading import init_model, load_model
from radretrieve.models.radclip import RadCLIP
from radretrieve.models.reference import ModelSource
from radretrieve.models.registry import count_parameters, get_model_config, list_models


def _vols(sizes, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, 3, size, size, generator=g) for s in sizes]


def test_registry_has_published_backbones():
    names = list_models()
    assert {"radclip-tiny", "radclip-vit-b-16", "radclip-vit-l-14"} <= set(names)
    large = get_model_config("radclip-vit-l-14")
    assert large.embed_dim == 768 and large.clip["vision_cfg"]["patch_size"] == 14
    assert large.preprocess.image_size == 224
    with pytest.raises(ConfigError, match="unknown model"):
        get_model_config("no-such-model")


@pytest.mark.parametrize("name", ["radclip-tiny", "radclip-vit-b-16", "radclip-vit-l-14"])
def test_parameter_count_matches_torch(name):
    cfg = get_model_config(name)
    with torch.device("meta"):
        model = RadCLIP(cfg)
    counted = count_parameters(cfg)
    assert counted.vision == sum(p.numel() for p in model.clip.visual.parameters())
    assert counted.adapter == sum(p.numel() for p in model.adapter.parameters())
    assert counted.total == sum(p.numel() for p in model.parameters())


def test_registry_init_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = init_model(get_model_config("radclip-tiny"))
    after = torch.rand(1)
    b = init_model(get_model_config("radclip-tiny"))
    assert torch.equal(before, after)
    assert a.fingerprint == b.fingerprint


def test_embeddings_are_normalised_float32(tiny_model):
    imgs = tiny_model.encode_images(_vols([5])[0])
    txt = tiny_model.encode_text(["axial CT of the head", "chest x-ray"])
    vols = tiny_model.encode_volumes(_vols([3, 9]))
    for e, n in ((imgs, 5), (txt, 2), (vols, 2)):
        assert e.dtype == torch.float32 and e.shape == (n, 128)
        assert torch.allclose(e.norm(dim=1), torch.ones(n), atol=1e-5)


def test_volume_padding_invariance(tiny_model):
    short, long1, long2 = _vols([4, 30, 17])
    alone = tiny_model.encode_volumes([short])
    batched = tiny_model.encode_volumes([long1, short, long2])
    assert torch.allclose(alone[0], batched[1], atol=1e-5)


@pytest.mark.parametrize("max_batch", [1, 7, 32])
def test_volume_batch_size_invariance(tiny_model, max_batch):
    vols = _vols([1, 6, 11])
    reference = tiny_model.encode_volumes(vols)
    model = RadCLIP(tiny_model.config, max_batch=max_batch)
    model.load_state_dict(tiny_model.state_dict())
    assert torch.allclose(model.encode_volumes(vols), reference, atol=1e-5)


def test_one_slice_volume_works(tiny_model):
    (one,) = _vols([1])
    out = tiny_model.encode_volumes([one])
    assert out.shape == (1, 128) and torch.isfinite(out).all()


def _with_pooling(model, pooling):
    cfg = model.config.replace(adapter=dataclasses.replace(model.config.adapter, pooling=pooling))
    return init_model(cfg)


def test_slice_order_matters_for_attention_only(tiny_model):
    (vol,) = _vols([12])
    rev = vol.flip(0)
    # an untrained adapter is ~mean pooling by design (its CLS correction starts at norm 0.02); a trained one
    # has a correction of the order of the mean: give the copy one that size so that the order can show
    trained_like = init_model(tiny_model.config)
    with torch.no_grad():
        trained_like.adapter.proj.weight.mul_(tiny_model.config.embed_dim)
    att = trained_like.encode_volumes([vol, rev])
    assert (att[0] - att[1]).abs().max() > 1e-4
    for pooling in ("mean", "max"):
        m = _with_pooling(tiny_model, pooling)
        out = m.encode_volumes([vol, rev])
        assert torch.allclose(out[0], out[1], atol=1e-5)


def test_mean_pooling_equals_manual_mean(tiny_model):
    m = _with_pooling(tiny_model, "mean")
    (vol,) = _vols([5])
    slices = m.encode_images(vol)
    expected = torch.nn.functional.normalize(slices.mean(0), dim=0)
    assert torch.allclose(m.encode_volumes([vol])[0], expected, atol=1e-5)


def test_positions_are_relative_to_each_volume(tiny_model):
    cfg = AdapterConfig(max_slices=8)
    m = init_model(tiny_model.config.replace(adapter=cfg))
    out = m.encode_volumes(_vols([20]))
    assert out.shape == (1, 128) and torch.isfinite(out).all()
    for length in (3, 20):  # relative positions: first and last slice always get the table's ends
        pos = m.adapter.positions(length)
        assert pos.shape == (length, 128)
        assert torch.allclose(pos[0], m.adapter.pos[0]) and torch.allclose(pos[-1], m.adapter.pos[-1])


def test_bad_shapes_are_clear_errors(tiny_model):
    with pytest.raises(InputShapeError, match=r"\(0, 3, 64, 64\)"):
        tiny_model.encode_volumes([torch.zeros(0, 3, 64, 64)])
    with pytest.raises(InputShapeError, match=r"\(2, 1, 64, 64\)"):
        tiny_model.encode_images(torch.zeros(2, 1, 64, 64))


def test_long_text_is_truncated_and_counted(tiny_model):
    before = tiny_model.tokenizer.truncated
    out = tiny_model.encode_text(["lesion " * 200, "short"])
    assert out.shape == (2, 128)
    assert tiny_model.tokenizer.truncated == before + 1


def test_save_load_round_trip_is_exact(tiny_model, tmp_path):
    vols, texts = _vols([3, 8]), ["head CT", "abdomen MR with lesion"]
    tiny_model.save(tmp_path / "m")
    again = load_model(str(tmp_path / "m"), device="cpu")
    assert again.fingerprint == tiny_model.fingerprint
    # an out dir built with it copies the dir, not the base name
    assert again.source == ModelSource("path", str(tmp_path / "m"))
    assert torch.equal(again.encode_volumes(vols), tiny_model.encode_volumes(vols))
    assert torch.equal(again.encode_text(texts), tiny_model.encode_text(texts))


def test_fingerprint_changes_with_weights_and_detects_corruption(tiny_model, tmp_path):
    other = init_model(tiny_model.config.replace(seed=1))
    assert other.fingerprint != tiny_model.fingerprint
    other.save(tmp_path / "m")
    cfg = (tmp_path / "m" / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(cfg.replace(other.fingerprint, "0" * 32))
    with pytest.raises(ModelLoadError, match="fingerprint"):
        load_model(str(tmp_path / "m"), device="cpu")


def test_weights_must_fit(tiny_model, tmp_path):
    from safetensors.torch import save_file

    save_file({"visual.conv1.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model("radclip-tiny", weights=str(tmp_path / "bad.safetensors"), device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="junk.pt"):
        load_model("radclip-tiny", weights=str(tmp_path / "junk.pt"), device="cpu")


def test_encode_mixed_equals_separate_calls(tiny_model):
    img_a, img_b = _vols([1, 1], seed=3)
    vol_a, vol_b = _vols([5, 13], seed=4)
    mixed = tiny_model.encode_mixed([vol_a, img_a, vol_b, img_b], [True, False, True, False])
    imgs = tiny_model.encode_images(torch.cat([img_a, img_b]))
    vols = tiny_model.encode_volumes([vol_a, vol_b])
    assert torch.allclose(mixed[[1, 3]], imgs, atol=1e-5)
    assert torch.allclose(mixed[[0, 2]], vols, atol=1e-5)
