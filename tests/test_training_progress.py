"""Training progress lines: epoch, step, loss and time left, by time and at epoch ends, as plain log lines
(no carriage returns) that `radretrieve train` writes to stderr."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from radretrieve.training.progress import StageProgress, Ticker, clock_text

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_clock_text() -> None:
    assert [clock_text(s) for s in (0, 9.6, 75, 3600 + 62)] == ["0:00", "0:10", "1:15", "1:01:02"]


def test_lines_at_first_and_last_epoch_and_every_interval(caplog) -> None:
    clock = FakeClock()
    meter = StageProgress("2d", epochs=3, steps_per_epoch=4, every_s=10, clock=clock)
    caplog.set_level(logging.DEBUG, logger="radretrieve.training")

    def at(t: float, step: int, epoch: int, end: bool = False) -> None:
        clock.now = t
        if end:
            meter.epoch_end(epoch, step, 1.0, {"recall@1": 0.5})
        else:
            meter.step(epoch, step, 2.0)

    for step, t in ((1, 2), (2, 4), (3, 6)):
        at(t, step, 0)  # under 10 s since the start: quiet
    at(8, 4, 0, end=True)  # the first epoch end: always (2 s a step, 8 steps left)
    at(10, 5, 1)
    at(19, 6, 1)  # 11 s after the last line: shown (19 s for 6 steps, 6 left)
    at(20, 7, 1)
    at(22, 8, 1, end=True)  # an epoch end 3 s after the last line: DEBUG only
    for step, t in ((9, 23), (10, 24), (11, 25)):
        at(t, step, 2)
    at(26, 12, 2, end=True)  # the last epoch: always
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info == [
        "stage 2d: epoch 1/3 step 4/12 loss 1.0000 val recall@1 0.500; 0:08 elapsed, about 0:16 left",
        "stage 2d: epoch 2/3 step 6/12 loss 2.0000; 0:19 elapsed, about 0:19 left",
        "stage 2d: epoch 3/3 step 12/12 loss 1.0000 val recall@1 0.500; 0:26 elapsed, stage done",
    ]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug == ["stage 2d: epoch 2/3 step 8/12 loss 1.0000 val recall@1 0.500; 0:22 elapsed, about 0:11 left"]


def test_a_resumed_stage_estimates_from_its_own_steps(caplog) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="radretrieve.training")
    meter = StageProgress("3d", epochs=10, steps_per_epoch=10, done=50, every_s=10, clock=clock)
    clock.now = 30.0
    meter.step(5, 55, 0.5)  # 5 steps in 30 s: 45 left take 4:30 (not 45 * 30 / 55)
    line = "stage 3d: epoch 6/10 step 55/100 loss 0.5000; 0:30 elapsed, about 4:30 left"
    assert caplog.records[-1].getMessage() == line


def test_a_long_pass_before_the_steps_reports_every_interval(caplog) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="radretrieve.training")
    ticker = Ticker("decoding", 100, every_s=10, clock=clock)
    for done in range(1, 101):
        clock.now = done * 0.5  # 0.5 s an item: a line every 20 items
        ticker.tick(done)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == [
        "decoding: 20/100; 0:10 elapsed, about 0:40 left",
        "decoding: 40/100; 0:20 elapsed, about 0:30 left",
    ]
    assert len(lines) == 5


def test_cli_train_prints_progress_lines_without_carriage_returns(tmp_path: Path) -> None:
    from radretrieve.synth import synthesize

    archive = synthesize(tmp_path / "synth", 12, seed=1).manifest
    args = ["--data", str(archive), "--out", str(tmp_path / "model"), "--epochs-2d", "2", "--epochs-3d", "2"]
    args += ["--batch-size", "4", "--device", "cpu", "--text", "template", "--template", "{region} {modality}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "radretrieve", "train", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr  # stderr is a pipe here: lines, never a redrawn bar
    for stage in ("2d", "3d"):
        first = rf"stage {stage}: epoch 1/2 step \d+/(\d+) loss \d+\.\d+ val .*; \d+:\d\d elapsed, about \d+:\d\d left"
        assert re.search(first, proc.stderr), proc.stderr[-3000:]
        last = rf"stage {stage}: epoch 2/2 step (\d+)/\1 loss \d+\.\d+ val .*; \d+:\d\d elapsed, stage done"
        assert re.search(last, proc.stderr), proc.stderr[-3000:]
