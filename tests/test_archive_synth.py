"""The synthetic archive: determinism, scan agreement, ground truth visible in the files, slice-order-only position."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from radretrieve.archive import load_volume, read_item, scan
from radretrieve.foundation.config import PreprocessConfig
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.synth import synthesize
from radretrieve.synth.phantoms import LesionSpec, phantom_volume

N = 24  # enough studies for every modality at seed 0, small enough to stay fast


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "archive"
    synthesize(out, N, seed=0)
    return out


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(archive: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    summary = synthesize(again, N, seed=0)
    assert _digests(again) == _digests(archive)
    assert summary.studies == N and sum(summary.by_modality.values()) == N
    other = tmp_path / "other"
    synthesize(other, N, seed=1)
    assert _digests(other) != _digests(archive)


def test_folder_scan_equals_manifest_scan(archive: Path) -> None:
    folder, manifest = scan(archive), scan(archive / "manifest.csv")
    assert folder.errors == () and manifest.errors == ()
    assert len(folder.studies) == N and all(s.report for s in folder.studies)
    assert folder.items == manifest.items and folder.studies == manifest.studies
    assert [i.item_id for i in folder.items] == [i.item_id for i in scan(archive).items]  # stable across runs
    with open(archive / "manifest.csv", newline="") as fh:
        rows = {r["study"]: r for r in csv.DictReader(fh)}
    for study in folder.studies:
        row = rows[study.key]
        assert study.report == row["text"] and study.split == row["split"]
        assert dict(study.labels) == {
            k: row[k] for k in ("region", "modality", "lesion", "position", "side", "density", "size")
        }
    modalities = {i.modality for i in folder.items}
    assert {"CT", "MR"} <= modalities and modalities & {"XR", "DX", "CR"}
    assert {i.fmt for i in folder.items} == {"dicom", "nifti", "image"}


def test_dicom_names_are_shuffled_and_no_phi_leaks(archive: Path) -> None:
    series = [i for i in scan(archive).items if i.item_key.startswith("dicom-series:")]
    assert series and any(list(i.files) != sorted(i.files) for i in series)  # slice order != name order
    raw = b"".join((archive / f).read_bytes() for f in series[0].files[:1])
    assert b"SYNTHETIC^PHANTOM" in raw  # the files carry a (synthetic) patient name ...
    assert "SYNTHETIC^PHANTOM" not in repr(scan(archive)) and "SYNTH-0" not in repr(scan(archive))  # ... outputs do not


def _lesion_map(vol: np.ndarray) -> np.ndarray:
    """Per-voxel lesion evidence: |slice - median slice| smoothed 3x3, in units of the noise level."""
    diff = vol - np.median(vol, axis=0)
    noise = 1.4826 * np.median(np.abs(diff)) + 1e-6
    smooth = sum(np.roll(np.roll(diff, dy, 1), dx, 2) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    return np.abs(smooth) / (noise / 3.0)  # 3x3 averaging divides the noise by 3


def _lesion_slices(vol: np.ndarray) -> np.ndarray:
    """Slices with a blob well above noise: where the lesion is (anatomy is constant along Z)."""
    return np.nonzero((_lesion_map(vol) > 6.0).sum(axis=(1, 2)) >= 4)[0]


def test_reports_follow_ground_truth_visible_in_the_files(archive: Path) -> None:
    checked = 0
    for item in scan(archive).items:
        labels = item.labels
        if item.kind != "volume" or labels["lesion"] != "present":
            continue
        vol, _ = load_volume(item, archive)
        z = _lesion_slices(vol)
        third = {"lower": 0, "middle": 1, "upper": 2}[labels["position"]]
        assert z.size and np.all((z * 3) // vol.shape[0] == third), (item.source, z, vol.shape)
        _, cols = np.nonzero(_lesion_map(vol)[z].max(axis=0) > 6.0)
        left = cols.mean() > (vol.shape[2] - 1) / 2  # canonical X runs patient right -> left
        assert left == (labels["side"] == "left"), item.source
        assert f"{labels['position']} {labels['side']} {labels['region']}" in item.text  # the impression line
        assert labels["density"] in item.text.lower()
        checked += 1
    assert checked >= 3


def test_position_is_visible_only_through_slice_order() -> None:
    jitter = np.array([0.3, -0.2, 0.5])
    vols = {}
    for position in ("lower", "middle", "upper"):
        lesion = LesionSpec(position=position, side="left", density="hyper", size="large", offset_y=0.2)
        vols[position] = phantom_volume("chest", "CT", 30, 64, lesion, seed=5, jitter=jitter)
    as_set = {p: sorted(v[i].tobytes() for i in range(v.shape[0])) for p, v in vols.items()}
    assert as_set["lower"] == as_set["middle"] == as_set["upper"]  # the same slices ...
    assert not np.array_equal(vols["lower"], vols["upper"])  # ... in a different order


def test_synth_items_read_into_model_input(archive: Path) -> None:
    cfg = PreprocessConfig(image_size=32, n_slices=8)
    for item in scan(archive).items[:6]:
        dec = read_item(item, archive, cfg)
        assert dec.pixels.shape[1:] == (3, 32, 32) and np.isfinite(dec.pixels).all()
        assert dec.slice_count == (1 if item.kind == "image" else min(8, item.shape[0]))


def test_refuses_non_empty_output(archive: Path) -> None:
    with pytest.raises(RadRetrieveError, match="not an empty folder"):
        synthesize(archive, 2)


def test_cli_synth(tmp_path: Path) -> None:
    from radretrieve.cli.app import app

    result = CliRunner().invoke(app, ["synth", str(tmp_path / "cli"), "--studies", "3", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote 3 studies") and (tmp_path / "cli" / "manifest.csv").is_file()
    code = "import sys, radretrieve.cli.app; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # --help stays torch-free
