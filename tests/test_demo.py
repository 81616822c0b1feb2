"""`radretrieve demo` end to end on a small synthetic archive (offline, CPU), and its cache on a rerun."""

from __future__ import annotations

import logging
import re

from typer.testing import CliRunner

from radretrieve.cli.app import app


def test_demo_runs_end_to_end_and_reuses_its_work(tmp_path, caplog):
    work = tmp_path / "demo"
    args = ["demo", "--dir", str(work), "--studies", "30", "--workers", "0"]
    with caplog.at_level(logging.INFO):
        first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    # training is not silent: progress lines (epoch, step, loss, time left) for both stages
    progress = [r.getMessage() for r in caplog.records if r.name == "radretrieve.training"]
    for stage in ("2d", "3d"):
        assert any(re.match(rf"stage {stage}: epoch 1/\d+ step \d+/\d+ loss .* left$", m) for m in progress), progress
    assert "\r" not in first.stderr  # no redrawn bar when stderr is not a terminal (here: CliRunner's buffer)
    scores = [float(x) for x in re.findall(r"P@5 (\d\.\d\d) \(best possible", first.stdout)]
    assert len(scores) >= 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert "study -> reports" in first.stdout
    sheet = (work / "contact_sheet.html").read_text()
    assert sheet.count('<figure class="hit"') == 5  # k = 5 hits of the first query, one thumbnail each
    assert (work / "model" / "model.safetensors").is_file() and (work / "index" / "index" / "index.json").is_file()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "already" in second.stderr  # the archive is reused, and training resumes a finished run at once
    assert second.stdout == first.stdout  # same model, same index, same answers
    caplog.clear()
    with caplog.at_level(logging.INFO):  # restores the root level that -q lowers
        quiet = CliRunner().invoke(app, [*args, "-q"])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == first.stdout and quiet.stderr == ""  # results only
    assert not [r for r in caplog.records if r.levelno < logging.WARNING and r.name.startswith("radretrieve")]
