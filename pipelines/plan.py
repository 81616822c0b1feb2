"""Plan an archive into tasks: sorted, stable, and only for what is not done yet.

A task is a group of whole studies (a study's series, images and report land in the same task, hence the
same shard). Items already in a finished shard, or already recorded as failed, are "done" and are not
planned again: a rerun after a crash, or after new studies were added, produces shards for the rest only,
with no duplicates and no gaps. Task ids hash the study keys they hold, so the same remaining work gives the
same tasks on every run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from radretrieve.foundation.ids import item_id
from radretrieve.outdir.layout import ERROR_DIR
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

    task_id: str  # hash of the study keys it holds
    seq: int  # shard number: shards/part-{seq:05d}.parquet
    work: tuple[WorkItem, ...]  # items in stable order, reports last

    @property
    def shard_name(self) -> str:
        return f"part-{self.seq:05d}.parquet"

    @property
    def n_images(self) -> int:
        return sum(1 for w in self.work if w.item is not None)


def done_item_ids(out_dir: Path) -> set[int]:
    """Ids in finished shards (manifest) plus ids recorded as failed in errors/*.jsonl."""
    out_dir = Path(out_dir)
    done: set[int] = set()
    if (out_dir / "manifest.json").is_file():
        for entry in read_manifest(out_dir).shards:
            done.update(pq.read_table(out_dir / entry.file, columns=["item_id"]).column(0).to_pylist())
    for path in sorted((out_dir / ERROR_DIR).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("item_id") is not None:
                done.add(int(rec["item_id"]))
    return done


def study_work(study: Any, done: set[int]) -> list[WorkItem]:
    """What is left to do for one study."""
    work = [WorkItem(it.item_id, study, it) for it in study.items if it.item_id not in done]
    if study.report and report_item_id(study.key) not in done:
        work.append(WorkItem(report_item_id(study.key), study, None))
    return work


def make_plan(studies: Sequence[Any], done: set[int], studies_per_task: int, first_seq: int) -> list[Task]:
    """Tasks of up to `studies_per_task` studies, in study-key order, for the work not yet done."""
    if studies_per_task < 1:
        raise ValueError(f"studies_per_task must be >= 1, got {studies_per_task}")
    pending = [(s.key, study_work(s, done)) for s in sorted(studies, key=lambda s: s.key)]
    pending = [(k, w) for k, w in pending if w]
    tasks = []
    for n, start in enumerate(range(0, len(pending), studies_per_task)):
        chunk = pending[start : start + studies_per_task]
        tasks.append(Task(_task_id(k for k, _ in chunk), first_seq + n, tuple(w for _, ws in chunk for w in ws)))
    return tasks


def _task_id(keys: Iterable[str]) -> str:
    return "t-" + hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]
