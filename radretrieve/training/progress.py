"""Progress lines of a training stage on the `radretrieve.training` logger: epoch, step, loss, time left.

Plain log lines, not a bar: they go wherever logging goes (stderr, a log file, a CI log) without carriage
returns, and a root logger at WARNING silences them (`radretrieve demo -q`). A line is written at the end of
the stage's first epoch (the first time-left estimate), at its last epoch, and otherwise whenever `every_s`
seconds have passed since the previous line, after a step or an epoch end, so a slow epoch is never silent
for long and a fast stage does not print one line per epoch. Epoch ends not shown at INFO go to DEBUG (`-v`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("radretrieve.training")
EVERY_S = 10.0  # seconds between progress lines within a stage (first and last epoch always shown)


def clock_text(seconds: float) -> str:
    """Seconds as H:MM:SS or M:SS."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class StageProgress:
    """Progress of one stage of one `train` call; `done` steps of the stage were done by an earlier (resumed)
    run, so the time left is estimated from the steps of this call only."""

    def __init__(
        self,
        stage: str,
        epochs: int,
        steps_per_epoch: int,
        done: int = 0,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage, self.epochs, self.total = stage, epochs, epochs * steps_per_epoch
        self.done, self.every_s, self.clock = done, every_s, clock
        self.started = self.last = clock()
        self.first_epoch_shown = False

    def step(self, epoch: int, step: int, loss: float) -> None:
        """After optimizer step `step` (1-based, in the stage) of epoch `epoch` (0-based)."""
        if self.clock() - self.last >= self.every_s:
            self._emit(logging.INFO, epoch, step, f"loss {loss:.4f}")

    def epoch_end(self, epoch: int, step: int, loss: float, metrics: Mapping[str, float]) -> None:
        """After epoch `epoch` (0-based) ended at step `step` with mean loss `loss` and validation `metrics`."""
        shown = " ".join(f"{k} {v:.3f}" for k, v in metrics.items()) or "(no validation pairs)"
        due = not self.first_epoch_shown or epoch + 1 == self.epochs or self.clock() - self.last >= self.every_s
        self.first_epoch_shown = True
        self._emit(logging.INFO if due else logging.DEBUG, epoch, step, f"loss {loss:.4f} val {shown}")

    def _emit(self, level: int, epoch: int, step: int, what: str) -> None:
        now = self.clock()
        elapsed = now - self.started
        ran = step - self.done
        if step >= self.total:
            left = "stage done"
        elif ran > 0:  # this call's pace: steps an earlier (resumed) run did took no time now
            left = f"about {clock_text(elapsed / ran * (self.total - step))} left"
        else:
            left = "time left unknown"
        if level >= logging.INFO:
            self.last = now
        log.log(
            level,
            "stage %s: epoch %d/%d step %d/%d %s; %s elapsed, %s",
            self.stage,
            epoch + 1,
            self.epochs,
            step,
            self.total,
            what,
            clock_text(elapsed),
            left,
        )


class Ticker:
    """Progress of a one-off pass before the steps (decoding the data, embedding every volume's slices): a
    line when `every_s` seconds have passed since the previous one, so a pass that takes minutes on a busy
    machine is not silent; a fast pass prints nothing."""

    def __init__(
        self, what: str, total: int, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what, self.total, self.every_s, self.clock = what, total, every_s, clock
        self.started = self.last = clock()

    def tick(self, done: int) -> None:
        """`done` of `total` finished."""
        now = self.clock()
        if now - self.last < self.every_s or done <= 0:
            return
        self.last = now
        elapsed = now - self.started
        left = clock_text(elapsed / done * (self.total - done))
        log.info("%s: %d/%d; %s elapsed, about %s left", self.what, done, self.total, clock_text(elapsed), left)
