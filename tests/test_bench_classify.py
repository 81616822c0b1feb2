"""`bench classify`: metrics and bootstrap CIs against scikit-learn, the linear probe against scikit-learn's
LogisticRegression, and the command end to end against `classify` on the same files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from typer.testing import CliRunner

from radretrieve.cli.app import app
from radretrieve.evaluation.classification import all_metrics, bootstrap_metrics
from radretrieve.evaluation.linear_probe import fit_linear_probe

runner = CliRunner()
LABELS = ("head", "chest", "abdomen", "pelvis")


def _sklearn_metrics(y, probs):
    pred = probs.argmax(axis=1)
    out = {
        "accuracy": accuracy_score(y, pred),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "macro_f1": f1_score(y, pred, average="macro"),
    }
    for k, label in enumerate(LABELS):
        pos = y == k
        out[f"auroc[{label}]"] = roc_auc_score(pos, probs[:, k]) if 0 < pos.sum() < len(y) else None
    return out


def test_metrics_and_cis_equal_sklearn():
    """37 items, 4 classes of which 'pelvis' never occurs (but is predicted), tied probabilities."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 37)
    probs = np.round(rng.dirichlet(np.ones(4), 37), 1)  # rounding makes ties
    probs[:, 1] += 1e-9 * np.arange(37)  # argmax ties broken the same way on both sides
    ours, ref = all_metrics(y, probs, LABELS), _sklearn_metrics(y, probs)
    assert ours.keys() == ref.keys() and ours["auroc[pelvis]"] is None
    for k, v in ref.items():
        assert ours[k] == (None if v is None else pytest.approx(v, abs=1e-12)), k
    est = bootstrap_metrics(y, probs, LABELS, n_bootstrap=30, confidence=0.9, seed=4)
    rng = np.random.default_rng(4)  # the same resamples, scored by scikit-learn
    boot = {k: [] for k in ref}
    for _ in range(30):
        idx = rng.integers(0, 37, 37)
        for k, v in _sklearn_metrics(y[idx], probs[idx]).items():
            if v is not None:
                boot[k].append(v)
    for k in ("accuracy", "balanced_accuracy", "macro_f1", "auroc[head]"):
        low, high = np.quantile(boot[k], [0.05, 0.95])
        assert (est[k].low, est[k].high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12)), k


def test_linear_probe_equals_sklearn_logistic_regression():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16))
    y = rng.integers(0, 3, 90)
    x = centres[y] + rng.normal(scale=1.5, size=(90, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for c in (1.0, 10.0):
        probe = fit_linear_probe(x, y, 3, c=c)
        ref = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x, y)
        np.testing.assert_allclose(probe.probabilities(x), ref.predict_proba(x), atol=1e-4)


def _manifest(tmp_path):
    rng = np.random.default_rng(2)
    rows = []
    for k in range(12):
        organ = ("head", "chest", "abdomen")[k % 3]
        name = f"img{k}.png"
        base = {"head": 60, "chest": 140, "abdomen": 220}[organ]
        img = np.clip(rng.normal(base, 30, (36, 44 + k)), 0, 255).astype(np.uint8)
        Image.fromarray(img, mode="L").save(tmp_path / name)
        rows.append({"path": name, "study": f"s{k}", "split": "test" if k >= 8 else "train", "organ": organ.upper()})
    with open(tmp_path / "m.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / "m.csv", rows


def test_bench_classify_end_to_end(tmp_path):
    manifest, rows = _manifest(tmp_path)
    task = "organ=head,chest,abdomen"
    out = tmp_path / "bench"
    args = ["bench", "classify", "--model", "radclip-tiny", "--data", str(manifest), "--task", task]
    res = runner.invoke(app, [*args, "--linear-probe", "--bootstrap", "20", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "zero-shot [organ]" in res.stdout and "linear-probe [organ]" in res.stdout
    assert "Chance accuracy (uniform guess): organ 0.333 (3 classes)" in res.stdout
    report = json.loads((out / "classify.json").read_text())
    for f in ("classify.md", "classify.png", "classify-confusion-organ-zero-shot.png"):
        assert (out / f).stat().st_size > 0, f
    assert (out / "classify-confusion-organ-linear-probe.png").read_bytes()[:4] == b"\x89PNG"
    zs = report["results"]["zero-shot [organ]"]
    assert zs["n_scored"] == 4 and report["results"]["linear-probe [organ]"]["n_train"] == 8
    # the same test files through `radretrieve classify`, scored by scikit-learn
    test_rows = [r for r in rows if r["split"] == "test"]
    files = [str(tmp_path / r["path"]) for r in test_rows]
    res = runner.invoke(app, ["classify", *files, "--model", "radclip-tiny", "--task", task, "-f", "json"])
    preds = {p["input"]: p["label"] for p in json.loads(res.stdout)}
    order = ["head", "chest", "abdomen"]
    y = [order.index(r["organ"].lower()) for r in test_rows]
    pred = [order.index(preds[f]) for f in files]
    res_all = runner.invoke(app, [*args, "--split", "test", "--bootstrap", "0", "--out", str(tmp_path / "b2")])
    assert res_all.exit_code == 0, res_all.output
    metrics = json.loads((tmp_path / "b2" / "classify.json").read_text())["results"]["zero-shot [organ]"]["metrics"]
    assert metrics["accuracy"]["value"] == pytest.approx(accuracy_score(y, pred))
    assert metrics["macro_f1"]["value"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert zs["metrics"]["accuracy"]["value"] == pytest.approx(accuracy_score(y, pred))
