"""Encoder actors: each loads the model once, then turns whole tasks into shards on the node it runs on.

`run(job)` receives a task, the references of its reader tasks' chunks, and what it needs to write: it
gathers the chunks one at a time (so its memory holds one chunk and one encoder batch), encodes slices of
many volumes per batch like the local engine, encodes the task's reports, and writes the task's errors file
and shard atomically into the shared out dir. It returns what it wrote; the driver lists it in the manifest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.plan import Task
from pipelines.ray_cluster.decode import gather
from pipelines.stages import Decoded, Failure, Row, encode_reports
from pipelines.writer import Written, write_task
from radretrieve.archive.records import RemoteArchive
from radretrieve.foundation.errors import FingerprintMismatch
from radretrieve.models.reference import ModelSource
from radretrieve.outdir.manifest import Manifest


@dataclass(frozen=True)
class TaskJob:
    """Everything an encoder actor needs to run one task."""

    task: Task  # the studies' items and reports
    chunks: Sequence[tuple]  # [(works, object ref of their reader task)], in order
    root: str | RemoteArchive  # the archive root as every node sees it, or a server (its readers fetch)
    out_dir: str  # the out dir, as every node sees it
    manifest: Manifest  # fingerprint, preprocessing hash and dim of the shards to write
    real_sources: Mapping[int, str] = field(default_factory=dict)  # --anonymise-paths: item id -> real source


@dataclass(frozen=True)
class TaskDone:
    """What an actor reports for a task."""

    written: Written  # the shard and errors it wrote
    node: str  # the node it ran on (NodeInfo.name form)
    items: int  # images and volumes encoded (failures not counted)
    slices: int  # slices encoded
    decode_seconds: float  # summed over the task's reader tasks
    encode_seconds: float  # in this actor
    threads: int  # torch intra-op threads the actor encoded on
    nice: int  # the actor process's niceness (Ray's default for workers is 15)


class EncoderActor:
    """A model on one node (a GPU where the cluster has them); made a Ray actor by the engine."""

    def __init__(
        self, source: ModelSource, fingerprint: str, batch_slices: int, device: str | None = None, threads: int = 0
    ) -> None:
        import ray
        import torch

        from radretrieve.models.loading import load_source
        from radretrieve.models.open_clip_import import import_lean

        import_lean()  # an actor's process is ours: open_clip without transformers where the model needs none

        # Ray sets OMP_NUM_THREADS to the actor's num_cpus (1), so torch would encode on one thread while
        # the local engine's encoder uses every core; `threads` (0: the cores this process may run on)
        # gives the actor the intra-op threads the local engine has (never more than the cores it may run on)
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(min(threads, cores) if threads else cores)
        self.model = load_source(source, device=device, warn=False)  # the driver warned once for the job
        if self.model.fingerprint != fingerprint:
            raise FingerprintMismatch(f"encoder actor loaded {source.spec} with another fingerprint")
        self.batch_slices = batch_slices
        ctx = ray.get_runtime_context()
        self.node = f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
        self.items_done = 0  # over the actor's life, for the job summary

    def where(self) -> str:
        return self.node

    def run(self, job: TaskJob) -> TaskDone:
        import ray
        import torch

        preprocess = self.model.config.preprocess
        rows: list[Row] = encode_reports(self.model, [w for w in job.task.work if w.item is None])
        failures: list[Failure] = []
        pending: list[Decoded] = []
        decode_s = encode_s = 0.0
        slices = items = 0
        for works, ref in job.chunks:
            for d in gather(ray, works, ref, job.root, preprocess):
                decode_s += d.seconds
                if d.failure is not None:
                    failures.append(d.failure)
                    continue
                pending.append(d)
                if sum(p.pixels.shape[0] for p in pending) >= self.batch_slices:
                    encode_s += self._encode(pending, rows)
                    slices, items, pending = slices + sum(p.pixels.shape[0] for p in pending), items + len(pending), []
        if pending:
            encode_s += self._encode(pending, rows)
            slices, items = slices + sum(p.pixels.shape[0] for p in pending), items + len(pending)
        written = write_task(Path(job.out_dir), job.manifest, job.task, rows, failures, job.real_sources)
        self.items_done += items
        return TaskDone(written, self.node, items, slices, decode_s, encode_s, torch.get_num_threads(), os.nice(0))

    def _encode(self, batch: list[Decoded], rows: list[Row]) -> float:
        import torch

        start = time.perf_counter()
        arrays = [torch.from_numpy(np.ascontiguousarray(d.pixels)) for d in batch]
        emb = self.model.encode_mixed(arrays, [d.work.item.kind == "volume" for d in batch]).numpy()
        rows.extend(Row(d.work, emb[i], d.shape, d.spacing, d.pixels.shape[0]) for i, d in enumerate(batch))
        return time.perf_counter() - start
