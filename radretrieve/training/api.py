"""`train`: the two-stage RadCLIP recipe from data to a model directory that `load_model` reads.

OUT/ after a run:
    config.json, model.safetensors     the trained model (`load_model(OUT)`, `radretrieve index --model OUT`)
    provenance.json                    trained here: on what data (its name and counts), epochs, steps, seconds,
                                       from which model and its provenance kind (`training_provenance`)
    train_config.json                  the TrainConfig, data source and base model
    history.json, training.png         per-epoch loss and validation metrics, and their curves
    checkpoints/step-NNNNNNN/          for `resume=True` (see radretrieve.training.checkpoint)
A finished run resumed again returns at once (nothing left to do), so callers can use `resume=True` as a cache.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from radretrieve.archive.manifest import is_manifest
from radretrieve.foundation.config import config_hash
from radretrieve.foundation.errors import ConfigError
from radretrieve.foundation.fileio import atomic_write_bytes, remove_stale_temps
from radretrieve.foundation.lock import writer_lock
from radretrieve.models.provenance import Provenance, read_provenance
from radretrieve.models.radclip import RadCLIP
from radretrieve.models.reference import ModelSource
from radretrieve.training.checkpoint import (
    CHECKPOINTS,
    Progress,
    list_checkpoints,
    load_model_state,
    load_progress,
    restore_rng,
    save_checkpoint,
)
from radretrieve.training.config import TrainConfig
from radretrieve.training.data import PixelStore, decode_all, load_data
from radretrieve.training.loop import Interrupted, LoopContext, StepCallback, restore_best, run_stage
from radretrieve.training.plot import plot_history
from radretrieve.training.progress import EVERY_S
from radretrieve.training.stages import ImageStage, VolumeStage

__all__ = ["Interrupted", "TrainResult", "train"]
log = logging.getLogger("radretrieve.training")
FINISHED = 2  # Progress.stage once both stages are done


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    out: Path  # the model directory (also holds history, plot, checkpoints)
    model: RadCLIP  # the trained model, in eval mode
    history: tuple[dict[str, Any], ...]  # one record per epoch: stage, epoch, step, loss, validation metrics
    steps: int  # optimizer steps over both stages
    resumed_from: int | None  # step of the checkpoint the run resumed from (None = fresh start)
    plot: Path | None  # training.png, if any epoch ran
    seconds: float  # wall time of this call
    best: dict[str, dict[str, Any]] = field(default_factory=dict)  # keep_best: per stage, the epoch kept

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint

    def final_metrics(self, stage: str) -> dict[str, float]:
        """Validation metrics of the last epoch of `stage` ("2d" or "3d"); {} if it did not run."""
        rows = [r for r in self.history if r["stage"] == stage]
        return {k: v for k, v in rows[-1].items() if k not in ("stage", "epoch", "step")} if rows else {}

    def summary_lines(self) -> list[str]:
        lines = [f"model: {self.out} (fingerprint {self.fingerprint})", f"steps: {self.steps} in {self.seconds:.1f}s"]
        for stage in ("2d", "3d"):
            metrics = self.final_metrics(stage)
            if metrics:
                lines.append(f"stage {stage}: " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
            if stage in self.best:
                b = self.best[stage]
                lines.append(f"stage {stage}: kept the best epoch, {b['epoch']} ({b['metric']} {b['value']:.3f})")
        if self.plot is not None:
            lines.append(f"plot: {self.plot}")
        return lines


def train(
    cfg: TrainConfig,
    data: str | Path,
    out: str | Path,
    model: str | RadCLIP = "radclip-tiny",
    weights: str | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    stop_after_steps: int | None = None,
    on_step: StepCallback | None = None,
    progress_every_s: float = EVERY_S,
) -> TrainResult:
    """Train `model` (a registry name, model directory or open_clip name, with optional `weights`; or a
    loaded RadCLIP, which is trained in place) on `data` (a manifest or an archive folder) and write the
    model directory `out`. `resume` continues from the newest checkpoint in `out` (exactly: the same weights
    as an uninterrupted run); `stop_after_steps` stops after a checkpoint at that step (raises `Interrupted`).
    `on_step(stage, step, steps_in_stage, loss)` is called after every optimizer step; progress lines (epoch,
    step, loss, time left) are logged at most every `progress_every_s` seconds (radretrieve.training.progress)."""
    started = time.perf_counter()
    out, data = Path(out), Path(data)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    with writer_lock(out, "radretrieve train"):  # one trainer per model directory
        remove_stale_temps(out)  # a checkpoint folder half-written by a killed run
        _check_out(out, resume, overwrite)
        net = _load(model, weights, device)
        base = BaseModel(net.config.name, net.provenance.kind, net.fingerprint)
        run_hash = config_hash({"train": cfg.to_dict(), "data": str(data.resolve()), "base": net.fingerprint})
        devices = [net.device.index or 0] if net.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the caller's RNG state is left as it was
            torch.manual_seed(cfg.seed)
            progress, resumed_from, checkpoint = _start(cfg, net, out, run_hash, resume)
            counts = None
            if progress.stage < FINISHED:
                ctx = LoopContext(net, cfg, out, checkpoint, stop_after_steps, on_step, progress_every_s)
                counts = _run(cfg, net, data, out, progress, ctx)
        seconds = time.perf_counter() - started
        net.provenance = training_provenance(cfg, data, out, progress, base, counts, seconds)
        return _finish(cfg, net, data, out, progress, resumed_from, model, weights, seconds)


@dataclass(frozen=True)
class BaseModel:
    """The model a run started from, as its provenance record names it (no folder of this machine)."""

    name: str  # config name
    kind: str  # its provenance kind (untrained for a registry config)
    fingerprint: str  # of its weights before training


def training_provenance(
    cfg: TrainConfig,
    data: Path,
    out: Path,
    progress: Progress,
    base: BaseModel,
    counts: dict[str, int] | None,
    seconds: float,
) -> Provenance:
    """`trained`: on which kind of data (a manifest or an archive folder, never its name: a folder may be named
    after a patient, and the record reaches out dirs and API answers) and pair counts, epochs per stage, optimizer
    steps, seconds, and the base model with its provenance kind. A finished run resumed again keeps the counts
    and seconds it recorded the first time."""
    earlier = read_provenance(out).details  # {} when the folder has no record yet
    details = {
        "data": "manifest" if is_manifest(data) else "archive folder",
        "pairs": counts if counts is not None else earlier.get("pairs", {}),
        "epochs": {"2d": cfg.image_stage.epochs, "3d": cfg.volume_stage.epochs},
        "steps": progress.step,
        "seconds": round(seconds, 1) if counts is not None else earlier.get("seconds", round(seconds, 1)),
        "base": {"name": base.name, "kind": base.kind, "fingerprint": base.fingerprint},
    }
    return Provenance("trained", origin="radretrieve train", details=details)


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    if list_checkpoints(out) and not resume:
        if not overwrite:
            raise ConfigError(f"{out}: holds checkpoints of an earlier run; pass --resume to continue or --overwrite")
        shutil.rmtree(out / CHECKPOINTS)


def _load(model: str | RadCLIP, weights: str | None, device: str | None) -> RadCLIP:
    if isinstance(model, RadCLIP):
        return model.to(device) if device else model
    from radretrieve.models.loading import load_model

    return load_model(model, weights=weights, device=device, warn=False)  # random weights are a training start


def _start(
    cfg: TrainConfig, net: RadCLIP, out: Path, run_hash: str, resume: bool
) -> tuple[Progress, int | None, Path | None]:
    """Fresh progress, or the newest checkpoint's (model weights and RNG restored)."""
    checkpoints = list_checkpoints(out) if resume else []
    if not checkpoints:
        if resume:
            log.info("no checkpoint in %s: starting from scratch", out)
        if cfg.learn_temperature:
            with torch.no_grad():
                net.clip.logit_scale.fill_(math.log(1.0 / cfg.temperature))
        return Progress(run_hash), None, None
    path = checkpoints[-1]
    progress = load_progress(path, run_hash)
    load_model_state(path, net)
    restore_rng(path)
    log.info("resuming from %s (stage %d, epoch %d, step %d)", path.name, progress.stage, progress.epoch, progress.step)
    return progress, progress.step, path


def _run(cfg: TrainConfig, net: RadCLIP, data: Path, out: Path, progress: Progress, ctx: LoopContext) -> dict[str, int]:
    """Both stages (those not done yet); returns the pair counts by split and kind (the provenance record's)."""
    examples = load_data(data, cfg.text, cfg.data, cfg.seed)
    counts = {
        "train_images": len(examples.train_images),
        "train_volumes": len(examples.train_volumes),
        "val_images": len(examples.val_images),
        "val_volumes": len(examples.val_volumes),
    }
    store = PixelStore(examples.root, net.config.preprocess, cfg.data.cache_mb)
    log.info("data: %s; decoding once", examples.counts())
    examples = decode_all(examples, store)
    log.info("decoded: %s (%.0f MB cached as float16)", examples.counts(), store.used / 2**20)
    for index, stage_cls in enumerate((ImageStage, VolumeStage)):
        if progress.stage > index:
            continue
        stage = stage_cls(net, examples, store, cfg)
        reason = _skip_reason(stage)
        if reason:
            log.info("stage %s skipped: %s", stage.name, reason)
        else:
            run_stage(stage, index, progress, ctx)
            restore_best(stage.name, progress, ctx)
        progress.stage, progress.epoch, progress.step_in_epoch, progress.stage_step = index + 1, 0, 0, 0
        progress.loss_sum = 0.0
        save_checkpoint(out, net, progress, None, None, cfg.checkpoint.keep)
    return counts


def _skip_reason(stage: ImageStage | VolumeStage) -> str:
    if stage.stage_cfg.epochs == 0:
        return "0 epochs"
    if stage.n_train < 2:
        return f"{stage.n_train} training pairs (InfoNCE needs at least 2)"
    if isinstance(stage, VolumeStage) and not stage.has_parameters():
        return f"the {stage.model.config.adapter.pooling} pooling adapter has no parameters"
    return ""


def _finish(
    cfg: TrainConfig,
    net: RadCLIP,
    data: Path,
    out: Path,
    progress: Progress,
    resumed_from: int | None,
    base: str | RadCLIP,
    weights: str | None,
    seconds: float,
) -> TrainResult:
    """Write the model directory, history, config and plot."""
    base_name = base if isinstance(base, str) else base.source.spec
    net.config = net.config.replace(
        name=f"{net.config.name}-finetuned" if not net.config.name.endswith("-finetuned") else net.config.name,
        description=f"fine-tuned from {base_name} by radretrieve train",
    )
    # A directory source makes index out dirs copy this model (radretrieve.outdir.model_ref), not reload a
    # registry name: the trained weights are what `radretrieve index --model OUT` must use.
    net.source = ModelSource("path", str(out.resolve()))
    for p in net.parameters():
        p.requires_grad_(True)  # as loaded: the stages froze parts of it
    net.eval().save(out)  # with provenance.json (`training_provenance`, attached by `train`)
    history = tuple(progress.history)
    atomic_write_bytes(out / "history.json", json.dumps(list(history), indent=1).encode())
    meta = {"config": cfg.to_dict(), "data": str(data), "base": base_name, "weights": weights, "steps": progress.step}
    meta["best"] = progress.best  # keep_best: the epoch kept per stage
    atomic_write_bytes(out / "train_config.json", json.dumps(meta, indent=1).encode())
    plot = plot_history(history, out / "training.png")
    return TrainResult(out, net, history, progress.step, resumed_from, plot, seconds, dict(progress.best))
