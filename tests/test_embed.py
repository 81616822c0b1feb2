"""`radretrieve embed`: the vectors of files equal the shard vectors `radretrieve index` stores for the same
files (PNG, a DICOM CT series folder, a NIfTI volume), under both preprocessing profiles; texts equal the text
tower's; JSON and .npy outputs; one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from radretrieve.cli.app import app
from radretrieve.testing.dicom import write_ct_series

runner = CliRunner()


def _archive(root):
    import nibabel as nib

    rng = np.random.default_rng(0)
    (root / "xr").mkdir(parents=True)
    Image.fromarray((rng.random((48, 70)) * 255).astype(np.uint8), mode="L").save(root / "xr" / "chest.png")
    write_ct_series(root / "ct" / "series", 6, size=24, attrs={"WindowCenter": 50, "WindowWidth": 300})
    vol = (rng.random((20, 22, 9)) * 800).astype(np.int16)
    (root / "mr").mkdir()
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.2, 3.0, 1.0])), root / "mr" / "t1.nii.gz")
    return root


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return _archive(tmp_path_factory.mktemp("embed") / "archive")


def _shard_vectors(out):
    from radretrieve.outdir.anonymise import read_sources
    from radretrieve.outdir.catalog import Catalog

    cat = Catalog(out)
    try:
        rows = cat.sql("SELECT item_id, source FROM items")
        ids, vecs = cat.vectors([r[0] for r in rows])
        by_id = dict(zip(ids.tolist(), vecs))
        real = read_sources(out)  # anonymised paths (the default): the private map names the files
        return {real[i]: by_id[i] for i, _ in rows}
    finally:
        cat.close()


@pytest.mark.parametrize("profile", [None, "clip"])
def test_embed_equals_the_vectors_index_stores(archive, tmp_path, profile):
    extra = ["--preprocess", profile] if profile else []
    out = tmp_path / "out"
    res = runner.invoke(app, ["index", str(archive), "--out", str(out), "--workers", "0", "--no-index", "-q", *extra])
    assert res.exit_code == 0, res.output
    stored = _shard_vectors(out)
    from radretrieve.outdir.model_ref import load_model_for_out_dir

    for override in (None, "radclip-tiny"):  # the out dir's own record, and --model: both get its profile
        reloaded = load_model_for_out_dir(out, override, device="cpu")
        assert reloaded.config.preprocess.profile == (profile or "radiology-3window")
    assert sorted(stored) == ["ct/series", "mr/t1.nii.gz", "xr/chest.png"]
    paths = [archive / src for src in sorted(stored)]
    res = runner.invoke(app, ["embed", *map(str, paths), "--text", "chest x-ray", *extra])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["input"] for r in rows] == [*map(str, paths), "chest x-ray"]
    assert [r["kind"] for r in rows] == ["volume", "volume", "image", "text"]
    for row, src in zip(rows, sorted(stored)):
        np.testing.assert_allclose(np.asarray(row["embedding"]), stored[src], atol=2e-5)
    from radretrieve import load_model

    text = load_model("radclip-tiny", device="cpu").encode_text(["chest x-ray"]).numpy()[0]
    np.testing.assert_allclose(np.asarray(rows[-1]["embedding"]), text, atol=1e-6)


def test_embed_npy_and_errors(archive, tmp_path):
    target = tmp_path / "e.npy"
    res = runner.invoke(
        app, ["embed", str(archive / "xr" / "chest.png"), "--text", "a", "-f", "npy", "-o", str(target)]
    )
    assert res.exit_code == 0, res.output
    arr = np.load(target)
    assert arr.shape == (2, 128) and arr.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    res = runner.invoke(app, ["embed", "--text", "a", "-f", "npy"])
    assert res.exit_code != 0 and "give --out FILE.npy" in str(res.exception)
    res = runner.invoke(app, ["embed", str(tmp_path / "missing.png")])
    assert res.exit_code != 0 and "missing.png: no such file or folder" in str(res.exception)
