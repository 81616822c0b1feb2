"""Preprocessing profiles: `clip` against open_clip's own transform and pydicom's windowing; `radiology-3window`
unchanged; which profile each model reference gets, and that it survives saving and out dirs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from radretrieve.archive import read_item, scan
from radretrieve.foundation.config import PreprocessConfig, config_hash
from radretrieve.foundation.errors import ConfigError
from radretrieve.models.registry import get_model_config
from tests.samples import needs, sample

VQA = ("vqa-rad", "images")
# Two real VQA-RAD JPEGs of different shapes (portrait and landscape after the shortest-side resize).
VQA_FILES = ("synpic100132.jpg", "synpic100176.jpg", "synpic100228.jpg")


def _open_clip_transform(tmp_path, size: int):
    """open_clip's inference transform from `create_model_and_transforms` for radclip-tiny's architecture
    (registered with open_clip from our registry config; random weights, nothing downloaded)."""
    import open_clip

    cfg = dict(get_model_config("radclip-tiny").clip)
    path = tmp_path / "rr-tiny-oc.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    _, _, transform = open_clip.create_model_and_transforms("rr-tiny-oc", pretrained=None, force_image_size=size)
    return transform


@needs(*VQA)
@pytest.mark.parametrize("size", [64, 224])
def test_clip_profile_equals_open_clip_transform_on_real_jpegs(tmp_path, size):
    transform = _open_clip_transform(tmp_path, size)
    cfg = PreprocessConfig(image_size=size, profile="clip")
    for name in VQA_FILES:
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        shutil.copy(sample(*VQA, name), folder / name)
        ours = read_item(scan(folder).items[0], folder, cfg).pixels
        with Image.open(sample(*VQA, name)) as img:
            ref = transform(img.convert("L")).numpy()  # grey, as the profile feeds it (replicated by open_clip)
        assert ours.shape == (1, 3, size, size) == (1, *ref.shape)
        np.testing.assert_allclose(ours[0], ref, atol=1e-4, rtol=0)


def test_clip_profile_equals_open_clip_transform_on_a_png(tmp_path):
    """An 8-bit PNG wider than tall with odd sizes (crop offsets round), values 0..255."""
    rng = np.random.default_rng(3)
    grey = (rng.random((77, 131)) * 255).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "x.png")
    transform = _open_clip_transform(tmp_path, 64)
    ours = read_item(scan(tmp_path).items[0], tmp_path, PreprocessConfig(image_size=64, profile="clip")).pixels
    ref = transform(Image.open(tmp_path / "x.png")).numpy()
    np.testing.assert_allclose(ours[0], ref, atol=1e-4, rtol=0)


def _ct_small(tmp_path, window: tuple[float, float] | None, body_part: str | None = None):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for name in ("WindowCenter", "WindowWidth", "BodyPartExamined"):
        if name in ds:
            delattr(ds, name)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if body_part is not None:
        ds.BodyPartExamined = body_part
    (tmp_path / "ct").mkdir()
    ds.save_as(tmp_path / "ct" / "slice.dcm")
    return ds


@pytest.mark.parametrize(
    ("window", "body_part", "expected"),
    [((60.0, 350.0), None, (60.0, 350.0)), (None, "CHEST", (-600.0, 1500.0)), (None, None, (40.0, 400.0))],
)
def test_clip_profile_ct_window_equals_pydicom(tmp_path, window, body_part, expected):
    """The one CT window applied: the file's own WindowCenter/Width, else the documented body-part default;
    checked against pydicom's rescale + LINEAR windowing (`apply_windowing`), mapped to [0, 1]."""
    import pydicom
    from pydicom.pixels import apply_windowing

    from radretrieve.archive.preprocess import clip_unit
    from radretrieve.archive.preprocess_clip import PixelHints
    from radretrieve.archive.volumes import load_item

    ds = _ct_small(tmp_path, window, body_part)
    item = scan(tmp_path / "ct").items[0]
    vol = load_item(item, tmp_path / "ct")
    assert vol.window == window
    size = 128  # CT_small is 128 x 128 with square pixels: no resampling, so the window is seen alone
    cfg = PreprocessConfig(image_size=size, profile="clip")
    hints = PixelHints(vol.window, item.body_part, vol.eight_bit)
    unit = clip_unit(vol.data, vol.spacing[1:], "ct", cfg, item.source, hints)
    ref_ds = pydicom.dcmread(tmp_path / "ct" / "slice.dcm")
    ref_ds.WindowCenter, ref_ds.WindowWidth = expected
    hu = ref_ds.pixel_array.astype(np.float64) * float(ref_ds.RescaleSlope) + float(ref_ds.RescaleIntercept)
    windowed = apply_windowing(hu, ref_ds)
    lo = -(2 ** (ref_ds.BitsStored - 1)) * float(ref_ds.RescaleSlope) + float(ref_ds.RescaleIntercept)
    hi = (2 ** (ref_ds.BitsStored - 1) - 1) * float(ref_ds.RescaleSlope) + float(ref_ds.RescaleIntercept)
    np.testing.assert_allclose(unit[0], (windowed - lo) / (hi - lo), atol=1e-5)
    # and the whole item: the same one window in all three channels, CLIP-normalised
    pixels = read_item(item, tmp_path / "ct", cfg).pixels
    for c in range(3):
        np.testing.assert_allclose(pixels[0, c], (unit[0] - cfg.mean[c]) / cfg.std[c], atol=1e-5)
    del ds


def test_radiology_3window_is_the_default_and_hashes_as_before():
    """Configs made before profiles existed hash the same (shards and fingerprints stay valid)."""
    cfg = PreprocessConfig()
    assert cfg.profile == "radiology-3window"
    # the hashes of the default config and of radclip-tiny's before profiles existed (golden values)
    assert config_hash(cfg) == "74377e6cbeb852ab"
    assert config_hash(get_model_config("radclip-tiny").preprocess) == "f9ba86a7f1331e0f"
    assert "profile" not in cfg.canonical_dict()
    assert config_hash(cfg.with_profile("clip")) != config_hash(cfg)
    with pytest.raises(ConfigError, match="unknown preprocessing profile 'sepia'"):
        PreprocessConfig(profile="sepia")


def test_pretrained_references_default_to_clip_and_tiny_keeps_its_own():
    from radretrieve.models.loading import _wrap_open_clip_config

    assert get_model_config("radclip-vit-l-14").preprocess.profile == "clip"
    assert get_model_config("radclip-tiny").preprocess.profile == "radiology-3window"
    import open_clip

    wrapped = _wrap_open_clip_config("ViT-B-16", open_clip.get_model_config("ViT-B-16"), {})
    assert wrapped.preprocess.profile == "clip"


def test_a_profile_override_is_kept_by_saved_models_and_references(tmp_path, tiny_model):
    from radretrieve import load_model
    from radretrieve.models.reference import ModelSource

    clip_tiny = load_model("radclip-tiny", device="cpu", preprocess="clip")
    assert clip_tiny.config.preprocess.profile == "clip"
    assert clip_tiny.fingerprint != tiny_model.fingerprint  # other input, other embeddings
    again = ModelSource.from_json(clip_tiny.source.to_json())
    assert again.preprocess == "clip"
    clip_tiny.save(tmp_path / "m")
    reloaded = load_model(str(tmp_path / "m"), device="cpu")
    assert reloaded.config.preprocess.profile == "clip" and reloaded.fingerprint == clip_tiny.fingerprint


def _two_pngs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for k in range(2):
        Image.fromarray((rng.random((40, 56)) * 255).astype(np.uint8), mode="L").save(folder / f"x{k}.png")
    return folder


def test_index_preprocess_is_stored_and_a_change_is_refused(tmp_path):
    from typer.testing import CliRunner

    from radretrieve.cli.app import app
    from radretrieve.outdir.manifest import read_manifest

    archive, out = _two_pngs(tmp_path / "a"), tmp_path / "out"
    runner = CliRunner()
    base = ["index", str(archive), "--out", str(out), "--workers", "0", "--no-index", "-q"]
    res = runner.invoke(app, [*base, "--preprocess", "clip"])
    assert res.exit_code == 0, res.output
    manifest = read_manifest(out)
    clip_cfg = get_model_config("radclip-tiny").preprocess.with_profile("clip")
    assert manifest.preprocess_hash == config_hash(clip_cfg)
    assert manifest.model["preprocess"] == "clip"
    res = runner.invoke(app, base)  # the model's own profile (radiology-3window): refused
    assert res.exit_code != 0 and "another preprocessing (--preprocess)" in str(res.exception)
    res = runner.invoke(app, [*base, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert read_manifest(out).preprocess_hash == config_hash(get_model_config("radclip-tiny").preprocess)


def test_train_keeps_the_preprocess_it_was_trained_with(tmp_path):
    from typer.testing import CliRunner

    from radretrieve.cli.app import app

    folder = _two_pngs(tmp_path / "d")
    (folder / "m.csv").write_text("path,text\nx0.png,a dark image\nx1.png,a bright image\n")
    out = tmp_path / "model"
    args = ["train", "--data", str(folder / "m.csv"), "--out", str(out), "--epochs-2d", "1", "--epochs-3d", "0"]
    res = CliRunner().invoke(app, [*args, "--batch-size", "2", "--preprocess", "clip"])
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["preprocess"]["profile"] == "clip"
