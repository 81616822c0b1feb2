"""Headers whose geometry is NaN, inf or degenerate (a NIfTI affine or voxel size, a DICOM pixel spacing) are
one recorded error per file, at scan and at read, while the job goes on; `embed` and path queries skip a bad
file as `index` does instead of stopping."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from pipelines.job import IndexOptions, index_archive
from radretrieve.application.query_path import encode_path
from radretrieve.archive import read_item, scan
from radretrieve.archive.records import ArchiveError
from radretrieve.testing.dicom import write_ct_series
from tests.procs import run_all

# file name -> (header field, value): each makes nibabel's orientation SVD fail or return NaN axes
BAD_NIFTI = {
    "nan_affine.nii": ("srow_x", [np.nan, 0.0, 0.0, 0.0]),
    "inf_affine.nii": ("srow_y", [0.0, np.inf, 0.0, 0.0]),
    "zero_affine.nii": ("srow_z", [0.0, 0.0, 0.0, 0.0]),  # degenerate: no orientation for the third axis
    "nan_zooms.nii": ("pixdim", [1.0, np.nan, np.inf, 1.0, 1.0, 1.0, 1.0, 1.0]),
}


def _nifti(path: Path, field: str | None = None, value: list[float] | None = None) -> None:
    """A small NIfTI with a valid sform; `field` is then overwritten in the raw header (nibabel refuses to
    build an image from a NaN affine, but reads such a file)."""
    img = nib.Nifti1Image(np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4), np.eye(4))
    img.header.set_sform(np.eye(4), code=1)
    nib.save(img, path)
    if field is None:
        return
    raw = bytearray(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw)))
    header[field] = value
    buf = io.BytesIO()
    header.write_to(buf)
    raw[:348] = buf.getvalue()[:348]
    path.write_bytes(bytes(raw))


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((24, 30)) * 255).astype(np.uint8), mode="L").save(path)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("geometry") / "a"
    _png(root / "good" / "x.png")
    _nifti(root / "good" / "t1.nii")
    for name, (field, value) in BAD_NIFTI.items():
        _nifti(root / name, field, value)
    write_ct_series(root / "zero_spacing" / "s", 3, attrs={"PixelSpacing": [0, 0]})  # a degenerate DICOM affine
    return root


def test_bad_geometry_is_one_error_per_file_and_the_job_goes_on(archive, tmp_path, tiny_model):
    out = tmp_path / "out"
    summary = index_archive(
        archive, out, tiny_model, IndexOptions(workers=0, progress=False, anonymise_paths=False)
    )  # sources below are paths
    assert summary.errors == {"BadGeometry": len(BAD_NIFTI) + 1}
    assert sum(summary.rows.values()) == 2  # the good PNG and the good NIfTI
    records = [json.loads(line) for line in (out / "errors" / "scan.jsonl").read_text().splitlines()]
    assert sorted(r["source"] for r in records) == sorted([*BAD_NIFTI, "zero_spacing/s"])
    for r in records:
        assert (r["stage"], r["error_type"]) == ("scan", "BadGeometry")
        assert r["message"].startswith(r["source"] + ": ") and "\n" not in r["message"]


@pytest.mark.parametrize("name", sorted(BAD_NIFTI))
def test_read_refuses_a_bad_geometry_too(tmp_path, tiny_model, name):
    """A file that was fine at scan and changed before its read (the read stage checks on its own)."""
    _nifti(tmp_path / "v.nii")
    [item] = scan(tmp_path).items
    field, value = BAD_NIFTI[name]
    _nifti(tmp_path / "v.nii", field, value)
    with pytest.raises(ArchiveError) as err:
        read_item(item, tmp_path, tiny_model.config.preprocess)
    assert (err.value.error_type, err.value.path, err.value.stage) == ("BadGeometry", "v.nii", "read")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """A folder with a good image, a NIfTI that fails at scan and one that fails at read."""
    folder = tmp_path_factory.mktemp("mixed") / "f"
    _png(folder / "ok.png")
    _nifti(folder / "nan.nii", *BAD_NIFTI["nan_affine.nii"])  # fails at scan
    _nifti(folder / "cut.nii")  # its header scans, its data is cut short: fails at read
    (folder / "cut.nii").write_bytes((folder / "cut.nii").read_bytes()[:400])
    return folder


def test_embed_skips_and_reports_bad_files_in_a_folder(archive, mixed):
    cmd = [sys.executable, "-m", "radretrieve", "embed"]
    res, unreadable = run_all([[*cmd, str(mixed)], [*cmd, str(archive / "nan_affine.nii")]], timeout=300)
    assert res.returncode == 0, res.stderr
    assert [row["input"] for row in json.loads(res.stdout)] == [str(mixed / "ok.png")]
    assert "nan.nii: header affine holds NaN or inf values" in res.stderr
    assert "cut.nii" in res.stderr and "skipped 2 unreadable input(s)" in res.stderr
    # nothing readable at all: one line naming the path and the first problem
    assert unreadable.returncode == 1 and unreadable.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nan_affine.nii: no readable DICOM, NIfTI or image found" in unreadable.stderr


def test_a_path_query_skips_a_bad_file(mixed, tiny_model):
    encoded = encode_path(tiny_model, mixed)  # `similar FOLDER` / `reports FOLDER`
    assert len(encoded.item_ids) == 1 and encoded.vectors.shape == (1, tiny_model.config.embed_dim)
