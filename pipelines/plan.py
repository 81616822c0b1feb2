"""Plan an archive into tasks: sorted, stable, and only for what is not done yet.

A task is a group of whole studies (a study's series, images and report land in the same task, hence the
same shard). Items already in a finished shard, or already recorded as failed (pipelines.failures), are
"done" and are not planned again: a rerun after a crash, or after new studies were added, produces shards
for the rest only, with no duplicates and no gaps. Task ids hash the item ids they hold, so the same
remaining work gives the same tasks (and shard names) on every run, and different work never collides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from radretrieve.foundation.ids import item_id
from radretrieve.outdir.layout import MANIFEST
from radretrieve.outdir.manifest import read_manifest


def report_item_id(study_key: str) -> int:
    """Item id of a study's report (its own row in the reports table)."""
    return item_id(f"report:{study_key}")


@dataclass(frozen=True)
class WorkItem:
    """One image/volume to decode and encode (the archive `Item`), or a report (`item` is None)."""

    item_id: int  # stable id; FAISS id
    study: Any  # radretrieve.archive.Study the item belongs to
    item: Any | None  # radretrieve.archive.Item, or None for the study's report


@dataclass(frozen=True)
class Task:
    """A unit of work: whole studies, written as one shard."""

    task_id: str  # hash of the item ids it holds: the same remaining work gets the same id on every run
    work: tuple[WorkItem, ...]  # items in stable order, reports last

    @property
    def shard_name(self) -> str:
        """shards/part-<task id>.parquet: names cannot collide across runs with different work."""
        return f"part-{self.task_id}.parquet"

    @property
    def n_images(self) -> int:
        return sum(1 for w in self.work if w.item is not None)


def indexed_ids(out_dir: Path) -> set[int]:
    """Ids in the finished shards listed in the manifest."""
    out_dir = Path(out_dir)
    done: set[int] = set()
    if (out_dir / MANIFEST).is_file():
        for entry in read_manifest(out_dir).shards:
            done.update(pq.read_table(out_dir / entry.file, columns=["item_id"]).column(0).to_pylist())
    return done


def study_work(study: Any, done: set[int]) -> list[WorkItem]:
    """What is left to do for one study."""
    work = [WorkItem(it.item_id, study, it) for it in study.items if it.item_id not in done]
    if study.report and report_item_id(study.key) not in done:
        work.append(WorkItem(report_item_id(study.key), study, None))
    return work


def make_plan(studies: Sequence[Any], done: set[int], studies_per_task: int) -> list[Task]:
    """Tasks of up to `studies_per_task` studies, in study-key order, for the work not yet done."""
    if studies_per_task < 1:
        raise ValueError(f"studies_per_task must be >= 1, got {studies_per_task}")
    pending = [(s.key, study_work(s, done)) for s in sorted(studies, key=lambda s: s.key)]
    pending = [(k, w) for k, w in pending if w]
    tasks = []
    for start in range(0, len(pending), studies_per_task):
        work = tuple(w for _, ws in pending[start : start + studies_per_task] for w in ws)
        tasks.append(Task(_task_id(w.item_id for w in work), work))
    return tasks


def _task_id(item_ids: Iterable[int]) -> str:
    """Hash of the item ids (not the study keys: a study that gains a series later is new work, and its task
    must not take the name, or the manifest entry, of the task that indexed the study's first series)."""
    return "t-" + hashlib.sha1(",".join(str(i) for i in sorted(item_ids)).encode()).hexdigest()[:16]
