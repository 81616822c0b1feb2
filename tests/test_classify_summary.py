"""`radretrieve classify --index OUT` prints the accuracy per task (and the chance level) on stderr when the
items carry a label named like the task; checked against scikit-learn's accuracy_score on the labels read
from the shards with pyarrow and the predicted classes read back from the command's JSON output."""

from __future__ import annotations

import json
import re
import shutil

import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

from radretrieve.cli.app import app

runner = CliRunner()
TASKS = {"region": ("head", "chest", "abdomen"), "modality": ("ct", "MR", "XR", "US")}  # "ct": any case matches


@pytest.fixture()
def out_copy(serve_env, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(serve_env["out"], copy)
    return copy


def _labels(out_dir) -> dict[int, dict]:
    """item id -> labels, from the shards the manifest lists (pyarrow, not the catalog)."""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    rows = {}
    for shard in manifest["shards"]:
        for row in pq.read_table(out_dir / shard["file"], columns=["item_id", "kind", "labels"]).to_pylist():
            if row["kind"] != "report":
                rows[row["item_id"]] = json.loads(row["labels"] or "{}")
    return rows


def test_classify_index_prints_accuracy_per_task(out_copy):
    args = ["classify", "--index", str(out_copy), "-f", "json", "--task", "tone=dark,bright"]
    for name, classes in TASKS.items():
        args += ["--task", f"{name}={','.join(classes)}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    predictions = json.loads(res.stdout)  # stdout stays the JSON list; the summary is on stderr
    labels = _labels(out_copy)
    lines = res.stderr.splitlines()
    for name, classes in TASKS.items():
        lower = {c.lower(): c for c in classes}
        scored = [p for p in predictions if p["task"] == name and labels[p["item_id"]].get(name, "").lower() in lower]
        truth = [lower[labels[p["item_id"]][name].lower()] for p in scored]
        expected = accuracy_score(truth, [p["label"] for p in scored])
        line = next(x for x in lines if x.startswith(f"{name}: accuracy"))
        found = re.search(r"accuracy (\d\.\d{3}) \((\d+) of (\d+) labelled items; chance (\d\.\d{3})", line)
        assert found, line
        assert float(found.group(1)) == pytest.approx(expected, abs=5e-4)
        assert int(found.group(3)) == len(scored) == len(labels)  # every synthetic item has both labels
        assert float(found.group(4)) == pytest.approx(1 / len(classes), abs=5e-4)
    no_label = f"tone: {len(labels)} items classified; none has a 'tone' label among dark, bright, so no accuracy"
    assert [x for x in lines if x.startswith("tone:")] == [no_label]


def test_the_table_output_keeps_the_summary_off_stdout(out_copy):
    res = runner.invoke(app, ["classify", "--index", str(out_copy), "--task", "region=head,chest,abdomen"])
    assert res.exit_code == 0, res.output
    assert "accuracy" not in res.stdout and res.stdout.splitlines()[0].split()[:3] == ["item", "task", "label"]
    assert any(line.startswith("region: accuracy") for line in res.stderr.splitlines()), res.stderr
