"""NIfTI, 2D images, manifests and preprocessing, checked against nibabel/PIL reading the same files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from radretrieve.archive import ArchiveError, load_volume, read_item, scan
from radretrieve.archive.manifest import ManifestError
from radretrieve.archive.preprocess import slice_positions
from radretrieve.archive.scanner import ScanPolicy
from radretrieve.foundation.config import PreprocessConfig
from tests.samples import needs, sample

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
COLIN = sample("mri-t1-brain", "colin27_t1.nii.gz")
VQA_IMAGES = sample("vqa-rad", "images")


def _canonical(path: Path) -> np.ndarray:
    """Reference: nibabel's closest canonical (RAS) array as [Z (S), Y (P), X (L)]."""
    data = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    if data.ndim == 4:
        data = data[..., 0]
    return np.flip(data, (0, 1)).transpose(2, 1, 0).astype(np.float32)


def _unnormalise(pixels: np.ndarray, cfg: PreprocessConfig, c: int = 0) -> np.ndarray:
    return pixels[:, c] * cfg.std[c] + cfg.mean[c]


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz"])
def test_nibabel_test_files_match_nibabel(tmp_path: Path, name: str) -> None:
    shutil.copy(NIB_DATA / name, tmp_path / name)
    result = scan(tmp_path)
    assert result.errors == () and len(result.items) == 1
    item = result.items[0]
    assert item.item_key == f"file:{name}" and item.kind == "volume" and item.fmt == "nifti"
    vol, spacing = load_volume(item, tmp_path)
    ref = _canonical(tmp_path / name)
    np.testing.assert_array_equal(vol, ref)
    assert item.shape == ref.shape
    zooms = nib.as_closest_canonical(nib.load(tmp_path / name)).header.get_zooms()[:3]
    assert spacing == pytest.approx(tuple(float(z) for z in zooms[::-1]))
    if nib.load(tmp_path / name).ndim == 4:
        assert [n.error_type for n in result.notes] == ["FirstVolume"]


@needs("mri-t1-brain", "colin27_t1.nii.gz")
def test_colin27_mr_percentile_normalisation(tmp_path: Path) -> None:
    os.symlink(COLIN, tmp_path / "colin.nii.gz")  # read the shared file in place, never copied into the repo
    item = scan(tmp_path, policy=ScanPolicy(follow_links=True)).items[0]  # the link leaves tmp_path on purpose
    ref = _canonical(COLIN)  # [181, 217, 181], 1 mm
    cfg = PreprocessConfig(image_size=217, n_slices=6)  # the longest side is 217: no resize
    dec = read_item(item, tmp_path, cfg)
    assert dec.pixels.shape == (6, 3, 217, 217) and dec.shape == ref.shape and dec.slice_count == 6
    idx = slice_positions(ref.shape[0], 6).astype(int)
    assert list(idx) == [15, 45, 75, 105, 135, 165]
    got = _unnormalise(dec.pixels, cfg)[:, :, 18:199]  # X padded from 181 to 217: 18 columns each side
    lo, hi = np.percentile(ref[idx], [0.5, 99.5])
    expected = np.clip((ref[idx] - lo) / (hi - lo), 0, 1)
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.999
    assert np.abs(got - expected).max() < 0.05  # percentiles are estimated on a subsample
    pad = _unnormalise(dec.pixels, cfg)[:, :, :18]
    np.testing.assert_allclose(pad, 0.0, atol=1e-5)  # black padding, anatomy not cropped


@needs("vqa-rad", "images")
def test_vqa_rad_jpegs_scan_and_read(tmp_path: Path) -> None:
    result = scan(VQA_IMAGES)
    assert result.errors == () and len(result.items) == len(list(VQA_IMAGES.glob("*.jpg")))
    assert all(i.kind == "image" and i.fmt == "image" and i.item_key == f"file:{i.source}" for i in result.items)
    cfg = PreprocessConfig(image_size=64)
    for item in result.items[:4]:
        dec = read_item(item, VQA_IMAGES, cfg)
        with Image.open(VQA_IMAGES / item.source) as img:
            grey = np.asarray(img.convert("L"), dtype=np.float32)
        assert dec.shape == grey.shape and dec.pixels.shape == (1, 3, 64, 64)
        small = np.asarray(Image.fromarray(grey).resize(_fit(grey.shape, 64), Image.BILINEAR), dtype=np.float32)
        got = _crop(_unnormalise(dec.pixels, cfg)[0], small.shape)
        assert np.corrcoef(got.ravel(), small.ravel())[0, 1] > 0.97
        np.testing.assert_allclose(
            dec.pixels[0, 0] * cfg.std[0] + cfg.mean[0], dec.pixels[0, 2] * cfg.std[2] + cfg.mean[2], atol=1e-5
        )


def _fit(shape: tuple[int, ...], size: int) -> tuple[int, int]:
    scale = size / max(shape)
    return (min(size, round(shape[1] * scale)), min(size, round(shape[0] * scale)))  # PIL wants (w, h)


def _crop(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    top, left = (img.shape[0] - shape[0]) // 2, (img.shape[1] - shape[1]) // 2
    return img[top : top + shape[0], left : left + shape[1]]


def test_bad_images_and_volumes(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "constant.png")
    nan = np.ones((8, 8, 4), np.float32)
    nan[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg" * 10)
    (tmp_path / "garbage.nii").write_bytes(os.urandom(500))
    good = np.random.default_rng(1).integers(0, 255, (128, 128), dtype=np.uint8)  # incompressible: data > header
    Image.fromarray(good).save(tmp_path / "good.png")
    raw = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(raw[: len(raw) // 2])
    result = scan(tmp_path)
    assert {e.source: e.error_type for e in result.errors} == {
        "empty.png": "EmptyFile",
        "empty.nii.gz": "EmptyFile",
        "garbage.jpg": "CorruptFile",
        "garbage.nii": "CorruptFile",
    }
    outcome = {}
    for item in result.items:
        try:
            read_item(item, tmp_path, PreprocessConfig(image_size=16))
            outcome[item.source] = "ok"
        except ArchiveError as exc:
            outcome[item.source] = exc.error_type
            assert item.source in str(exc)
    assert outcome == {
        "constant.png": "ConstantImage",
        "nan.nii.gz": "NaNImage",
        "good.png": "ok",
        "truncated.png": "CorruptFile",
    }


def _make_sources(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.fromarray(rng.integers(0, 255, (12, 10), dtype=np.uint8)).save(root / name)
    nib.save(nib.Nifti1Image(rng.normal(size=(6, 6, 5)).astype(np.float32), np.eye(4)), root / "v.nii.gz")


def _rows() -> list[dict[str, str]]:
    return [
        {"path": "a.png", "text": "Chest X-ray, normal.", "study": "S1", "split": "train", "region": "chest"},
        {"path": "b.png;c.png;d.png", "text": "A stack.", "study": "S1", "split": "train", "region": "chest"},
        {"path": "v.nii.gz", "text": "MR brain.", "study": "S2", "split": "test", "region": "head"},
        {"path": "missing.png", "text": "", "study": "S3", "split": "", "region": ""},
    ]


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_manifest_formats(tmp_path: Path, fmt: str) -> None:
    _make_sources(tmp_path)
    rows = _rows()
    path = tmp_path / f"manifest.{fmt}"
    if fmt == "csv":
        lines = ["path,text,study,split,region"] + [",".join(f'"{r[k]}"' for k in r) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = scan(path)
    assert result.root == tmp_path
    assert [(e.source, e.error_type) for e in result.errors] == [("missing.png", "MissingFile")]
    assert [s.key for s in result.studies] == ["S1", "S2"]
    s1 = result.studies[0]
    assert (
        s1.report == "Chest X-ray, normal.\n\nA stack."
        and s1.split == "train"
        and dict(s1.labels) == {"region": "chest"}
    )
    stack = next(i for i in result.items if i.kind == "volume" and i.fmt == "image")
    assert stack.item_key == "files:b.png;c.png;d.png" and stack.files == ("b.png", "c.png", "d.png")
    vol, _ = load_volume(stack, tmp_path)
    np.testing.assert_array_equal(vol[2], np.asarray(Image.open(tmp_path / "d.png"), dtype=np.float32))
    nifti = next(i for i in result.items if i.fmt == "nifti")
    assert nifti.text == "MR brain." and nifti.body_part == "head" and nifti.split == "test"
    folder_ids = {i.item_key: i.item_id for i in scan(tmp_path).items}
    assert all(folder_ids[i.item_key] == i.item_id for i in result.items if i.kind == "image" or i.fmt == "nifti")


def test_manifest_without_path_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,text\na.png,x\n")
    with pytest.raises(ManifestError, match="'path' column"):
        scan(tmp_path / "m.csv")


def test_sidecar_reports(tmp_path: Path) -> None:
    _make_sources(tmp_path)
    (tmp_path / "a.txt").write_text("Plain text report.\n")
    (tmp_path / "v.json").write_text(
        json.dumps({"text": "JSON report.", "labels": {"finding": "none"}, "split": "val"})
    )
    (tmp_path / "b.json").write_text("{broken")
    result = scan(tmp_path)
    by_source = {i.source: i for i in result.items}
    assert by_source["a.png"].text == "Plain text report."
    assert by_source["v.nii.gz"].text == "JSON report." and dict(by_source["v.nii.gz"].labels) == {"finding": "none"}
    assert by_source["v.nii.gz"].split == "val" and by_source["c.png"].text == ""
    assert [(e.source, e.error_type) for e in result.errors] == [("b.json", "CorruptSidecar")]


def test_slice_sampling_and_aspect() -> None:
    assert list(slice_positions(100, 4)) == [12, 37, 62, 87]  # centres of 4 equal bins
    assert list(slice_positions(3, 32)) == [0, 1, 2]  # fewer slices than asked: all of them
    assert list(slice_positions(11, 32, dz=2.0, spacing_mm=4.0)) == [0, 2, 4, 6, 8, 10]


def test_anisotropic_pixels_keep_physical_aspect(tmp_path: Path) -> None:
    data = np.zeros((40, 20, 3), np.float32)  # X 40 x 1 mm, Y 20 x 2 mm: a 40 x 40 mm square
    data[10:30, 5:15] = 1.0  # a 20 x 20 mm square in the middle
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0])), tmp_path / "aniso.nii.gz")
    cfg = PreprocessConfig(image_size=40, n_slices=1)
    dec = read_item(scan(tmp_path).items[0], tmp_path, cfg)
    img = _unnormalise(dec.pixels, cfg)[0]
    assert img.shape == (40, 40)
    rows, cols = np.nonzero(img > 0.5)
    assert 18 <= np.ptp(rows) + 1 <= 22 and 18 <= np.ptp(cols) + 1 <= 22  # still a square: no stretching


def test_scan_stays_a_function_after_submodule_imports() -> None:
    import importlib

    import radretrieve.archive as archive

    for name in ("scanner", "manifest", "read", "volumes", "preprocess"):
        importlib.import_module(f"radretrieve.archive.{name}")
    assert callable(archive.scan) and callable(archive.read_item)
