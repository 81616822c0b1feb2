"""`radretrieve classify`: prompt-ensemble zero-shot scores and probabilities against a hand computation in
numpy; predictions stored in the out dir (read back with pyarrow) and filtered on by `search --where`."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from radretrieve.cli.app import app

runner = CliRunner()
CLASSES = ("head", "chest", "abdomen")
TEMPLATES = ["a {class} image", "radiograph of the {class}", "{organ} scan"]


def _archive(root, n: int = 8):
    rng = np.random.default_rng(5)
    for k in range(n):  # one study per folder: search hits are then distinct items
        (root / f"s{k}").mkdir(parents=True)
        img = (rng.random((40 + 3 * k, 52)) * 255 * (k + 1) / n).astype(np.uint8)
        Image.fromarray(img, mode="L").save(root / f"s{k}" / "x.png")
    return root


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classify")
    archive, out = _archive(tmp / "archive"), tmp / "out"
    res = runner.invoke(app, ["index", str(archive), "--out", str(out), "--workers", "0", "-q"])
    assert res.exit_code == 0, res.output
    templates = tmp / "templates.json"
    templates.write_text(json.dumps({"organ": TEMPLATES}))
    return archive, out, templates


def _hand(model, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class embedding = mean of the normalised prompt embeddings, normalised; cosine; softmax at exp(logit_scale)."""
    classes = []
    for c in CLASSES:
        prompts = [f"a {c} image", f"radiograph of the {c}", f"{c} scan"]
        emb = np.stack([model.encode_text([p]).numpy()[0] for p in prompts]).astype(np.float64)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        mean = emb.mean(axis=0)
        classes.append(mean / np.linalg.norm(mean))
    scores = vectors.astype(np.float64) @ np.stack(classes).T
    logits = float(np.exp(model.clip.logit_scale.item())) * scores
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return scores, probs / probs.sum(axis=1, keepdims=True)


def test_files_zero_shot_equals_a_hand_computation(indexed, tiny_model):
    archive, _, templates = indexed
    files = [archive / f"s{k}" / "x.png" for k in range(3)]
    task = "organ=" + ",".join(CLASSES)
    res = runner.invoke(
        app,
        [
            "classify",
            *map(str, files),
            "--model",
            "radclip-tiny",
            "--task",
            task,
            "--templates",
            str(templates),
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    vectors = np.stack([json.loads(runner.invoke(app, ["embed", str(f)]).stdout)[0]["embedding"] for f in files])
    scores, probs = _hand(tiny_model, vectors)
    assert [r["input"] for r in rows] == [str(f) for f in files]
    for n, row in enumerate(rows):
        best = int(np.argmax(scores[n]))
        assert row["label"] == CLASSES[best] and row["task"] == "organ"
        assert row["score"] == pytest.approx(scores[n, best], abs=1e-5)
        np.testing.assert_allclose([row["probabilities"][c] for c in CLASSES], probs[n], atol=1e-5)
        assert row["probability"] == pytest.approx(probs[n, best], abs=1e-5)


def test_index_predictions_are_stored_and_filter_search(indexed):
    from radretrieve.evaluation.prompts import load_templates, templates_hash
    from radretrieve.outdir.manifest import read_manifest

    _, out, templates = indexed
    task = "organ=" + ",".join(CLASSES)
    res = runner.invoke(
        app, ["classify", "--index", str(out), "--task", task, "--templates", str(templates), "-f", "json"]
    )
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(table) == len(printed) == 8
    manifest = read_manifest(out)
    assert {r["model_fingerprint"] for r in table} == {manifest.fingerprint}
    assert {r["templates_hash"] for r in table} == {templates_hash(load_templates(templates))}
    by_id = {r["item_id"]: r for r in table}
    for row in printed:
        stored = by_id[row["item_id"]]
        assert stored["label"] == row["label"] and stored["probability"] == pytest.approx(row["probability"], abs=1e-6)
        assert json.loads(stored["probabilities"]) == pytest.approx(row["probabilities"], abs=1e-6)
    # a second task keeps the first one's rows
    res = runner.invoke(app, ["classify", "--index", str(out), "--task", "tone=dark,bright", "--where", "item_id > 0"])
    assert res.exit_code == 0, res.output
    assert {r["task"] for r in pq.read_table(out / "predictions.parquet").to_pylist()} == {"organ", "tone"}
    # --where on the predictions view, end to end: the label predicted most, above the median probability
    label = max(CLASSES, key=lambda c: sum(r["label"] == c for r in table))
    probs = sorted(r["probability"] for r in table if r["label"] == label)
    cut = probs[len(probs) // 2]
    expected = {r["item_id"] for r in table if r["label"] == label and r["probability"] >= cut}
    where = (
        "item_id IN (SELECT item_id FROM predictions WHERE task = 'organ' "
        f"AND label = '{label}' AND probability >= {cut!r})"
    )
    res = runner.invoke(app, ["search", "--index", str(out), "an image", "-k", "50", "--where", where, "-f", "json"])
    assert res.exit_code == 0, res.output
    hits = {h["item_id"] for h in json.loads(res.stdout)[0]["hits"]}
    assert hits == expected and 0 < len(expected) < 8


def test_classify_errors_are_one_line(indexed):
    _, out, _ = indexed
    res = runner.invoke(app, ["classify", "--index", str(out), "--task", "organ=head"])
    assert res.exit_code != 0 and "at least two classes" in str(res.exception)
    res = runner.invoke(app, ["classify", "--index", str(out), "--task", "organ=a,b", "--model", "radclip-tiny"])
    assert res.exit_code != 0 and "--index uses the out dir's model" in str(res.exception)
