"""The Ray engine: Ray Data with a CPU read stage and encoder actors that load the model once each.

The driver plans, encodes reports and writes shards + manifest exactly as the local engine does, so both
engines produce the same item ids and (within float tolerance) the same embeddings. `--ray-address`
joins an existing cluster; otherwise a local Ray is started on this machine's CPUs. GPU actors are used
when the cluster has GPUs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.plan import Task
from pipelines.stages import Failure, Row, decode
from pipelines.tracker import StageTimes, TaskTracker
from radretrieve.models.protocol import Encoder
from radretrieve.models.reference import ModelSource

log = logging.getLogger(__name__)


def _read_batch(batch: dict[str, np.ndarray], root: str, preprocess: Any) -> dict[str, Any]:
    """Ray map_batches UDF (CPU): decode + preprocess each work item of the batch."""
    out: dict[str, list] = {
        "i": [],
        "pixels": [],
        "shape": [],
        "spacing": [],
        "failure": [],
        "seconds": [],
        "is_volume": [],
    }
    for i, work, is_volume in zip(batch["i"], batch["work"], batch["is_volume"]):
        d = decode(work, Path(root), preprocess)
        out["i"].append(int(i))
        out["pixels"].append(d.pixels.reshape(-1) if d.pixels is not None else np.zeros(0, np.float32))
        out["shape"].append(json.dumps(list(d.shape)))
        out["spacing"].append(json.dumps(list(d.spacing)))
        out["failure"].append(d.failure.to_json() if d.failure else "")
        out["seconds"].append(d.seconds)
        out["is_volume"].append(bool(is_volume))
    return {k: (np.array(v, dtype=object) if k == "pixels" else np.array(v)) for k, v in out.items()}


class _EncoderActor:
    """Loads the model once per actor and encodes decoded batches (failed rows pass through)."""

    def __init__(self, source: ModelSource, fingerprint: str, batch_slices: int) -> None:
        from radretrieve.foundation.errors import FingerprintMismatch
        from radretrieve.models.loading import load_source

        self.model = load_source(source)
        if self.model.fingerprint != fingerprint:
            raise FingerprintMismatch(f"encoder actor loaded {source.spec} with another fingerprint")
        self.batch_slices = batch_slices
        self.side = self.model.image_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        dim = self.model.config.embed_dim
        emb = np.zeros((len(batch["i"]), dim), np.float32)
        counts = np.zeros(len(batch["i"]), np.int32)
        ok = [j for j, f in enumerate(batch["failure"]) if not f]
        if ok:
            import torch

            arrays = [
                torch.from_numpy(np.asarray(batch["pixels"][j], np.float32).reshape(-1, 3, self.side, self.side))
                for j in ok
            ]
            emb[ok] = self.model.encode_mixed(arrays, [bool(batch["is_volume"][j]) for j in ok]).numpy()
            counts[ok] = [a.shape[0] for a in arrays]
        keep = ("i", "shape", "spacing", "failure", "seconds")
        return {k: batch[k] for k in keep} | {"embedding": emb, "slice_count": counts}


def run_ray(tasks: Sequence[Task], root: Path, model: Encoder, options: Any, finish: Any, bar: Any) -> StageTimes:
    """Run all tasks on Ray Data; shards are written by the driver as tasks complete."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=options.ray_address,
            num_cpus=None if options.ray_address else max(1, options.workers),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    times = StageTimes()
    tracker = TaskTracker(model, finish, times)
    work = [w for t in tasks for w in t.work if w.item is not None]
    for task in tasks:
        tracker.register(task)
    if work:
        _stream(ray, work, root, model, options, tracker, times, bar)
    return times


def _stream(
    ray: Any, work: list, root: Path, model: Encoder, options: Any, tracker: TaskTracker, times: StageTimes, bar: Any
) -> None:
    source = model.source
    use_gpu = bool(ray.cluster_resources().get("GPU", 0))
    ds = ray.data.from_items([{"i": i, "work": w, "is_volume": w.item.kind == "volume"} for i, w in enumerate(work)])
    # Different CPU requests keep Ray from fusing the read stage into the encoder actor, so decoding runs
    # in parallel tasks while the actor encodes.
    ds = ds.map_batches(
        _read_batch, batch_size=8, num_cpus=0.5, fn_kwargs={"root": str(root), "preprocess": model.config.preprocess}
    )
    ds = ds.map_batches(
        _EncoderActor,
        batch_size=max(1, options.batch_size // 32),
        concurrency=1,
        num_cpus=1,
        num_gpus=1 if use_gpu else 0,
        fn_constructor_kwargs={
            "source": source,
            "fingerprint": model.fingerprint,
            "batch_slices": options.batch_size,
        },
    )

    for row in ds.iter_rows():
        w = work[int(row["i"])]
        times.decode += float(row["seconds"])
        bar.update(1)
        if row["failure"]:
            tracker.add_failure(w.item_id, Failure(**json.loads(row["failure"])))
            continue
        times.slices += int(row["slice_count"])
        shape, spacing = tuple(json.loads(row["shape"])), tuple(json.loads(row["spacing"]))
        tracker.add_rows([Row(w, np.asarray(row["embedding"], np.float32), shape, spacing, int(row["slice_count"]))])


__all__ = ["run_ray"]
