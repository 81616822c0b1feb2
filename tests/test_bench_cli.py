"""`radretrieve bench retrieval` and `radretrieve convert vqa-rad` end to end, checked against hand-computed
values and against an independent per-query reference (plain python + scikit-learn) on the same embeddings."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from radretrieve.cli.app import app
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.testing.shards import SyntheticItems, normalise, write_out_dir
from tests.samples import needs, sample

VQA_RAD = sample("vqa-rad")
needs_vqa = needs("vqa-rad", "vqa_rad.json")
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def report(out: Path, name: str = "retrieval") -> dict:
    return json.loads((out / f"{name}.json").read_text())["results"]


def values(run: dict) -> dict[str, float]:
    return {m: e["value"] for m, e in run["metrics"].items()}


def reference(sim: np.ndarray, relevant: np.ndarray, ks=(1, 5, 10)) -> dict[str, float] | None:
    """Metrics from their definitions, one query at a time: rank_i = #{j : s_j >= s_i}."""
    rows = []
    for s, r in zip(sim.tolist(), relevant.tolist()):
        rel = [x for x, ok in zip(s, r) if ok]
        if not rel:
            continue
        ranks = sorted(sum(1 for y in s if y >= x) for x in rel)
        row = {f"recall@{k}": float(ranks[0] <= k) for k in ks}
        row |= {f"precision@{k}": sum(q <= k for q in ranks) / k for k in ks}
        row["mAP"] = sum(sum(q2 <= q for q2 in ranks) / q for q in ranks) / len(ranks)
        row["MRR"] = 1.0 / ranks[0]
        row["median_rank"] = ranks[0]
        rows.append(row)
    if not rows:
        return None
    out = {m: statistics.fmean(r[m] for r in rows) for m in rows[0]}
    out["median_rank"] = statistics.median(r["median_rank"] for r in rows)
    return out


# ---------------------------------------------------------------- --index, hand-computed
def hand_items() -> SyntheticItems:
    """4 studies A-D, one image and one report each (dim 4). Images are the axes e1..e4; reports are
    A=e1, B=e1 (its image e2 scores 0, tied with two others), C=e3, D=(e1+e4)/sqrt2 (tie of two)."""
    eye = np.eye(4, dtype=np.float32)
    d = normalise(np.array([[1, 0, 0, 1]], dtype=np.float32))[0]
    vectors = np.stack([eye[0], eye[1], eye[2], eye[3], eye[0], eye[0], eye[2], d])
    studies = ("A", "B", "C", "D") * 2
    return SyntheticItems(
        ids=np.arange(10, 18, dtype=np.int64),
        vectors=vectors,
        kinds=("image",) * 4 + ("report",) * 4,
        studies=studies,
        modalities=("CT", "CT", "MR", "MR") * 2,
        body_parts=("HEAD",) * 8,
    )


def test_index_hand_computed_values(tmp_path: Path) -> None:
    write_out_dir(tmp_path / "idx", [hand_items()], dim=4)
    out = tmp_path / "bench"
    result = invoke("bench", "retrieval", "--index", str(tmp_path / "idx"), "--out", str(out), "--bootstrap", "200")
    assert "| text->image |" in result.stdout
    runs = report(out)
    # Pessimistic ranks of the relevant item: text->image [1, 4, 1, 2]; image->text [2, 4, 1, 1].
    for run in ("text->image", "image->text"):
        got = values(runs[run])
        assert got["recall@1"] == pytest.approx(0.5) and got["recall@5"] == pytest.approx(1.0)
        assert got["precision@1"] == pytest.approx(0.5) and got["precision@5"] == pytest.approx(0.2)
        assert got["MRR"] == pytest.approx(0.6875) and got["mAP"] == pytest.approx(0.6875)
        assert got["median_rank"] == pytest.approx(1.5)
    # Only modality is labelled (no organ): the default set shrinks to it. Per report, relevant images have
    # ranks A,B: {1, 4}; C: {1, 4}; D: {2, 4} -> AP 0.75, 0.75, 0.75, 0.5; top-1 hits 1, 1, 1, 0.
    label_run = values(runs["text->image [modality]"])
    assert label_run["mAP"] == pytest.approx(0.6875)
    assert label_run["precision@1"] == pytest.approx(0.75)
    assert label_run["recall@5"] == pytest.approx(1.0)
    for run in runs.values():
        est = run["metrics"]["MRR"]
        assert est["low"] <= est["value"] <= est["high"]
    assert (out / "retrieval.md").read_text().startswith("# Cross-modal retrieval")
    assert (out / "retrieval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_index_random_matches_reference_and_sklearn(tmp_path: Path) -> None:
    """A bigger out dir in two shards (ids not positions, several items per study) against the reference."""
    parts = [
        SyntheticItems.random(n=60, dim=8, seed=s, id_offset=off, kinds=("image", "report", "volume"), per_study=3)
        for s, off in ((1, 999), (2, 5001))
    ]
    write_out_dir(tmp_path / "idx", parts, dim=8)
    out = tmp_path / "bench"
    invoke(
        "bench",
        "retrieval",
        "--index",
        str(tmp_path / "idx"),
        "--out",
        str(out),
        "--bootstrap",
        "0",
        "--labels",
        "modality",
        "--no-plot",
    )
    runs = report(out)
    assert not (out / "retrieval.png").exists()

    def side(kinds: set[str]) -> tuple[np.ndarray, list[str], list[str]]:
        rows = [
            (i, p.vectors[i], p.studies[i], p.modalities[i]) for p in parts for i in range(60) if p.kinds[i] in kinds
        ]
        return np.stack([r[1] for r in rows]), [r[2] for r in rows], [r[3] for r in rows]

    tv, ts, tm = side({"report"})
    iv, is_, im = side({"image", "volume"})
    cases = {
        "text->image": (tv @ iv.T, np.equal.outer(ts, is_)),
        "image->text": (iv @ tv.T, np.equal.outer(is_, ts)),
        "text->image [modality]": (tv @ iv.T, np.equal.outer(tm, im)),
        "image->text [modality]": (iv @ tv.T, np.equal.outer(im, tm)),
    }
    assert set(runs) == set(cases)
    for name, (sim, rel) in cases.items():
        want = reference(sim, rel)
        got = values(runs[name])
        assert got == pytest.approx(want, abs=1e-9), name
        aps = [average_precision_score(r, s) for s, r in zip(sim, rel) if r.any()]
        assert got["mAP"] == pytest.approx(float(np.mean(aps)), abs=1e-9), name


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    write_out_dir(tmp_path / "idx", [hand_items()], dim=4)
    idx = str(tmp_path / "idx")
    cases = [
        (["--index", idx, "--data", idx], "either --index"),
        (["--index", idx, "--split", "test"], "records no split"),
        (["--index", idx, "--labels", "organ"], "['organ'] not found"),
        (["--index", idx, "--k", "0,5"], ">= 1"),
        (["--index", str(tmp_path)], "no manifest.json"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["bench", "retrieval", *args, "--out", str(tmp_path / "o")])
        assert isinstance(result.exception, RadRetrieveError), args
        assert message in str(result.exception), (args, str(result.exception))


def test_bench_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom radretrieve.cli.app import app\n"
        "try:\n    app(['bench', 'retrieval', '--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    app(['convert', 'vqa-rad', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'faiss', 'matplotlib') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--labels" in proc.stdout and "--absolute-paths" in proc.stdout
    assert proc.stdout.rstrip().endswith("HEAVY="), proc.stdout[-300:]


# ---------------------------------------------------------------- --model on VQA-RAD
@pytest.fixture(scope="module")
def vqa_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted manifest cut to 20 images: 14 with a known modality (label runs) and 6 without."""
    folder = tmp_path_factory.mktemp("vqa")
    full = folder / "vqa_rad.csv"
    result = invoke("convert", "vqa-rad", str(VQA_RAD), str(full))
    assert "314 images" in result.stdout
    with full.open(newline="") as f:
        rows = list(csv.DictReader(f))
    known = [r for r in rows if r["modality"] != "unknown"][:14]
    unknown = [r for r in rows if r["modality"] == "unknown"][:6]
    subset = folder / "subset.csv"
    with subset.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(known + unknown)
    return subset


def encode_independently(manifest: Path, model) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Text and image embeddings of the manifest rows, in row order, plus the rows."""
    import torch

    from radretrieve.archive import read_item
    from radretrieve.evaluation.sources import scan_archive

    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    items = {it.study_key: it for it in scan_archive(manifest).items}
    pixels = [read_item(items[r["study"]], manifest.parent, model.config.preprocess).pixels for r in rows]
    images = model.encode_images(torch.from_numpy(np.concatenate(pixels))).numpy()
    texts = model.encode_text([r["text"] for r in rows]).numpy()
    return texts, images, rows


@needs_vqa
def test_model_on_vqa_rad_matches_reference(vqa_subset: Path, tmp_path: Path, tiny_model) -> None:
    out = tmp_path / "bench"
    invoke(
        "bench",
        "retrieval",
        "--model",
        "radclip-tiny",
        "--data",
        str(vqa_subset),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--bootstrap",
        "300",
    )
    payload = json.loads((out / "retrieval.json").read_text())
    assert payload["meta"]["read_errors"] == 0 and payload["meta"]["n_images"] == 20
    runs = payload["results"]
    assert set(runs) == {"text->image", "image->text", "text->image [organ+modality]", "image->text [organ+modality]"}
    for name, run in runs.items():
        for metric, est in run["metrics"].items():
            hi = 20 if metric == "median_rank" else 1
            assert 0 <= est["low"] <= est["value"] <= est["high"] <= hi, (name, metric, est)
    assert (out / "retrieval.png").stat().st_size > 1000

    texts, images, rows = encode_independently(vqa_subset, tiny_model)
    study = [r["study"] for r in rows]
    both = [(r["organ"], r["modality"]) if r["modality"] != "unknown" else None for r in rows]
    pair = np.equal.outer(study, study)
    label = np.array([[a is not None and a == b for b in both] for a in both])
    cases = {
        "text->image": (texts @ images.T, pair),
        "image->text": (images @ texts.T, pair),
        "text->image [organ+modality]": (texts @ images.T, label),
        "image->text [organ+modality]": (images @ texts.T, label),
    }
    for name, (sim, rel) in cases.items():
        assert values(runs[name]) == pytest.approx(reference(sim, rel), abs=1e-6), name
    assert runs["text->image [organ+modality]"]["n_scored"] == 14


@needs_vqa
def test_index_and_model_sources_agree(vqa_subset: Path, tmp_path: Path) -> None:
    """`index` + `bench --index` reports exactly what `bench --model --data` reports (CIs included)."""
    # The real `radretrieve index` in its own process, as a user runs it.
    cmd = [
        sys.executable,
        "-m",
        "radretrieve",
        "index",
        str(vqa_subset),
        "--out",
        str(tmp_path / "idx"),
        "--workers",
        "0",
        "--no-index",
        "--quiet",
        "--device",
        "cpu",
        "--keep-paths",  # item ids from paths, as the manifest scan gives them (anonymised ones are keyed hashes)
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    invoke("bench", "retrieval", "--index", str(tmp_path / "idx"), "--out", str(tmp_path / "a"), "--no-plot")
    invoke(
        "bench",
        "retrieval",
        "--model",
        "radclip-tiny",
        "--data",
        str(vqa_subset),
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "b"),
        "--no-plot",
    )
    a, b = report(tmp_path / "a"), report(tmp_path / "b")
    assert set(a) == set(b)
    for name in a:
        for metric, est in a[name]["metrics"].items():
            assert est == pytest.approx(b[name]["metrics"][metric], abs=1e-6), (name, metric)


@needs_vqa
def test_split_filter_and_convert_errors(vqa_subset: Path, tmp_path: Path) -> None:
    with vqa_subset.open(newline="") as f:
        n_test = sum(r["split"] == "test" for r in csv.DictReader(f))
    out = tmp_path / "bench"
    invoke(
        "bench",
        "retrieval",
        "--model",
        "radclip-tiny",
        "--data",
        str(vqa_subset),
        "--device",
        "cpu",
        "--split",
        "test",
        "--out",
        str(out),
        "--no-plot",
        "--labels",
        "none",
        "--bootstrap",
        "0",
    )
    runs = report(out)
    assert set(runs) == {"text->image", "image->text"}
    assert runs["text->image"]["n_queries"] == runs["text->image"]["n_gallery"] == n_test > 0
    bad = runner.invoke(app, ["convert", "vqa-rad", str(tmp_path), str(tmp_path / "m.csv")])
    assert isinstance(bad.exception, RadRetrieveError) and "vqa_rad.json" in str(bad.exception)
