"""Tracks open tasks across engines: a task's shard is written once all its items are encoded or failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.plan import Task
from pipelines.stages import Failure, Row, encode_reports
from radretrieve.models.protocol import Encoder

Finish = Callable[[Task, list[Row], list[Failure]], None]


@dataclass
class StageTimes:
    """Seconds per stage, summed (decode is summed over workers, so it can exceed wall time)."""

    decode: float = 0.0
    encode: float = 0.0
    write: float = 0.0
    slices: int = 0


@dataclass
class _Open:
    task: Task
    left: int  # image/volume items not yet encoded or failed
    rows: list[Row] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


class TaskTracker:
    """Collects rows and failures per task and calls `finish` as soon as a task is complete."""

    def __init__(self, model: Encoder, finish: Finish, times: StageTimes) -> None:
        self.model, self.finish, self.times = model, finish, times
        self.open: dict[str, _Open] = {}
        self.owner: dict[int, str] = {}

    def register(self, task: Task) -> None:
        """Open a task; its reports are encoded now (text is cheap), its images as they arrive."""
        images = [w for w in task.work if w.item is not None]
        reports = encode_reports(self.model, [w for w in task.work if w.item is None])
        self.open[task.task_id] = _Open(task, len(images), reports)
        self.owner.update((w.item_id, task.task_id) for w in images)
        self.finish_ready()

    def add_rows(self, rows: list[Row]) -> None:
        for row in rows:
            state = self.open[self.owner.pop(row.work.item_id)]
            state.rows.append(row)
            state.left -= 1
        self.finish_ready()

    def add_failure(self, item_id: int, failure: Failure) -> None:
        state = self.open[self.owner.pop(item_id)]
        state.failures.append(failure)
        state.left -= 1
        self.finish_ready()

    def finish_ready(self) -> None:
        for task_id in [t for t, s in self.open.items() if s.left == 0]:
            state = self.open.pop(task_id)
            start = time.perf_counter()
            self.finish(state.task, state.rows, state.failures)
            self.times.write += time.perf_counter() - start
