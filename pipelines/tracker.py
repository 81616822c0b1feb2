"""Tracks open tasks across engines: a task's shard is written once all its items are encoded or failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipelines.plan import Task, WorkItem
from pipelines.stages import Failure, Row, encode_reports
from radretrieve.models.protocol import Encoder

Finish = Callable[[Task, list[Row], list[Failure]], None]
Reports = Callable[[list[WorkItem]], list[Row]]  # encodes a task's report items: their rows now, or later


@dataclass
class StageTimes:
    """Seconds per stage, summed (decode is summed over workers, so it can exceed wall time)."""

    decode: float = 0.0  # reading and preprocessing, summed over the readers
    encode: float = 0.0  # the image encoder
    write: float = 0.0  # shards written (on the caller's thread)
    slices: int = 0  # slices encoded
    text_encode: float = 0.0  # the text encoder (reports)
    decode_wait: float = 0.0  # the caller waiting for the readers' next item (decoding not hidden)

    def to_dict(self) -> dict[str, float]:
        """Seconds per stage, as `IndexSummary.stage_seconds` (job.json) records them."""
        out = {"decode": self.decode, "encode": self.encode, "write": self.write}
        return out | {"text_encode": self.text_encode, "decode_wait": self.decode_wait}


@dataclass
class _Open:
    task: Task
    left: int  # report, image and volume items not yet encoded or failed
    rows: list[Row] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


class TaskTracker:
    """Collects rows and failures per task and calls `finish` as soon as a task is complete.

    `reports`: how a task's report items are encoded; by default at once, on the caller's thread (the local
    engine passes its `EncodeBatcher.add_reports`, which encodes them on the encoder thread)."""

    def __init__(self, model: Encoder, finish: Finish, times: StageTimes, reports: Reports | None = None) -> None:
        self.model, self.finish, self.times = model, finish, times
        self.reports = reports if reports is not None else self._encode_now
        self.open: dict[str, _Open] = {}
        self.owner: dict[int, str] = {}

    def register(self, task: Task) -> None:
        """Open a task; its rows come as its reports and images are encoded."""
        reports = [w for w in task.work if w.item is None]
        images = [w for w in task.work if w.item is not None]
        self.open[task.task_id] = _Open(task, len(images) + len(reports))
        self.owner.update((w.item_id, task.task_id) for w in images + reports)
        self.add_rows(self.reports(reports))

    def _encode_now(self, work: list[WorkItem]) -> list[Row]:
        start = time.perf_counter()
        rows = encode_reports(self.model, work)
        self.times.text_encode += time.perf_counter() - start
        return rows

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
