"""Report writer: JSON, Markdown and PNG are written and carry the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radretrieve.evaluation.metrics import evaluate_similarity, pair_relevance
from radretrieve.evaluation.report import load_results, write_report


def _results() -> dict:
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((30, 30)).astype(np.float32) + 2 * np.eye(30, dtype=np.float32)
    rel = pair_relevance(np.arange(30), 30)
    return {
        "text->image": evaluate_similarity(sim, rel, n_bootstrap=200, seed=1),
        "image->text": evaluate_similarity(sim.T.copy(), rel, n_bootstrap=0).to_dict(),
    }


def test_write_report_files_and_numbers(tmp_path: Path) -> None:
    results = _results()
    files = write_report(results, tmp_path / "out", title="Synthetic", meta={"model": "tiny"})
    assert files.json.is_file() and files.markdown.is_file() and files.png is not None
    assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in files.json.parent.iterdir()) == ["retrieval.json", "retrieval.md", "retrieval.png"]

    payload = json.loads(files.json.read_text())
    assert payload["meta"] == {"model": "tiny"}
    assert payload["results"]["text->image"] == results["text->image"].to_dict()
    assert load_results(files.json)["image->text"] == results["image->text"]

    md = files.markdown.read_text()
    assert md.startswith("# Synthetic")
    t2i = results["text->image"].metrics
    r1 = t2i["recall@1"]
    assert f"{r1.value:.3f} [{r1.low:.3f}, {r1.high:.3f}]" in md
    assert f"{t2i['median_rank'].value:.1f}" in md
    i2t_map = results["image->text"]["metrics"]["mAP"]["value"]
    assert "| image->text |" in md and f"{i2t_map:.3f}" in md
    assert "30 (30)" in md and "95% bootstrap" in md


def test_write_report_without_plot_and_bad_input(tmp_path: Path) -> None:
    files = write_report({"a": _results()["image->text"]}, tmp_path, name="x", plot=False)
    assert files.png is None and not (tmp_path / "x.png").exists()
    with pytest.raises(ValueError, match="no 'metrics'"):
        write_report({"a": {"value": 1}}, tmp_path)
    with pytest.raises(ValueError, match="no results"):
        write_report({}, tmp_path)
