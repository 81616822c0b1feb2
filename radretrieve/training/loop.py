"""The optimisation loop shared by both stages: seeded epoch order, gradient accumulation, the LR schedule,
validation at each epoch end, and checkpoints every N optimizer steps.

Each epoch's order is a permutation drawn from a generator seeded by (seed, stage, epoch), so a resumed run
replays the same micro-batches without any saved RNG; the torch RNG state is still restored from the
checkpoint because dropout (if a config enables it) draws from it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from radretrieve.training.checkpoint import (
    Progress,
    best_dir,
    load_model_state,
    load_optimizer_state,
    save_best,
    save_checkpoint,
)
from radretrieve.training.config import StageConfig, TrainConfig
from radretrieve.training.objective import make_optimizer
from radretrieve.training.progress import EVERY_S, StageProgress
from radretrieve.training.texts import stable_hash

log = logging.getLogger("radretrieve.training")
# Called after every optimizer step: (stage name, step in stage, steps in stage, loss of the step).
StepCallback = Callable[[str, int, int, float], None]


class Stage(Protocol):
    name: str
    stage_cfg: StageConfig
    n_train: int

    def param_groups(self) -> list[dict]: ...
    def prepare(self) -> None: ...
    def loss(self, indices: Sequence[int], epoch: int) -> Tensor: ...
    def validate(self) -> dict[str, float]: ...


class Interrupted(Exception):
    """Raised after the checkpoint at `stop_after_steps` (simulated crash for tests, or a time budget)."""


@dataclass(frozen=True)
class LoopContext:
    """What the loop needs besides the stage."""

    model: nn.Module
    cfg: TrainConfig
    out: Path
    resume_from: Path | None  # checkpoint to take optimizer/schedule state from (same stage only)
    stop_after_steps: int | None  # stop (after a checkpoint) once this many optimizer steps are done
    on_step: StepCallback | None
    progress_every_s: float = EVERY_S  # seconds between progress lines (radretrieve.training.progress)


def micro_batches(n: int, batch_size: int, seed: int, stage: int, epoch: int) -> list[list[int]]:
    """Epoch order as micro-batches of `batch_size`; a last batch of one (no negatives) joins the one before."""
    gen = torch.Generator().manual_seed(stable_hash("order", seed, stage, epoch) % 2**63)
    order = torch.randperm(n, generator=gen).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        last = batches.pop()
        batches[-1] = batches[-1] + last
    return batches


def steps_per_epoch(n: int, cfg: StageConfig) -> int:
    return math.ceil(len(micro_batches(n, cfg.batch_size, 0, 0, 0)) / cfg.grad_accum)


def run_stage(stage: Stage, index: int, progress: Progress, ctx: LoopContext) -> None:
    """Train `stage` (stage number `index`) from `progress` to its last epoch, updating `progress` in place."""
    c = stage.stage_cfg
    per_epoch = steps_per_epoch(stage.n_train, c)
    total = per_epoch * c.epochs
    groups = stage.param_groups()
    params = [p for g in groups for p in g["params"]]
    optimizer, schedule = make_optimizer(groups, c, total)
    if ctx.resume_from is not None and progress.stage_step > 0:
        load_optimizer_state(ctx.resume_from, optimizer, schedule)
    log.info(  # before `prepare`, which may encode every volume once (minutes on a large archive)
        "stage %s: %d pairs, %d epochs x %d steps, %d trainable parameters",
        stage.name,
        stage.n_train,
        c.epochs,
        per_epoch,
        sum(p.numel() for p in params),
    )
    stage.prepare()
    meter = StageProgress(stage.name, c.epochs, per_epoch, progress.stage_step, ctx.progress_every_s)
    while progress.epoch < c.epochs:
        batches = micro_batches(stage.n_train, c.batch_size, ctx.cfg.seed, index, progress.epoch)
        steps = [batches[i : i + c.grad_accum] for i in range(0, len(batches), c.grad_accum)]
        for group in steps[progress.step_in_epoch :]:
            loss = _step(stage, group, progress.epoch, optimizer, schedule, params, c.max_grad_norm)
            progress.step += 1
            progress.stage_step += 1
            progress.step_in_epoch += 1
            progress.loss_sum += loss
            if ctx.on_step is not None:
                ctx.on_step(stage.name, progress.stage_step, total, loss)
            if progress.step_in_epoch == len(steps):
                _end_epoch(stage, progress, ctx, meter)
            else:
                meter.step(progress.epoch, progress.stage_step, loss)
            _maybe_checkpoint(progress, ctx, optimizer, schedule)
            if progress.step_in_epoch == 0:
                break  # the epoch is over (the slice is empty on the next pass anyway)


def _step(
    stage: Stage,
    group: list[list[int]],
    epoch: int,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    params: list[nn.Parameter],
    max_norm: float,
) -> float:
    """One optimizer step over `group` micro-batches; returns the mean micro-batch loss."""
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for indices in group:
        loss = stage.loss(indices, epoch) / len(group)
        loss.backward()
        total += float(loss.detach())
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    schedule.step()
    return total


def _end_epoch(stage: Stage, progress: Progress, ctx: LoopContext, meter: StageProgress) -> None:
    """Validate, report progress, append to the history, and move the counters to the next epoch."""
    metrics = stage.validate()
    record = {
        "stage": stage.name,
        "epoch": progress.epoch + 1,
        "step": progress.step,
        "loss": round(progress.loss_sum / max(1, progress.step_in_epoch), 6),
        **metrics,
    }
    progress.history.append(record)
    _track_best(stage.name, record, progress, ctx)
    meter.epoch_end(progress.epoch, progress.stage_step, record["loss"], metrics)
    progress.epoch += 1
    progress.step_in_epoch = 0
    progress.loss_sum = 0.0


def _track_best(name: str, record: dict, progress: Progress, ctx: LoopContext) -> None:
    """keep_best: save the weights when this epoch's validation metric beats the stage's best so far."""
    cfg = ctx.cfg.checkpoint
    if not cfg.keep_best or cfg.best_metric not in record:
        return
    best = progress.best.get(name)
    if best is not None and record[cfg.best_metric] <= best["value"]:
        return  # ties keep the earlier epoch
    entry = {"stage": name, "epoch": record["epoch"], "step": record["step"], "metric": cfg.best_metric}
    entry["value"] = record[cfg.best_metric]
    save_best(ctx.out, ctx.model, entry)
    progress.best[name] = entry


def restore_best(name: str, progress: Progress, ctx: LoopContext) -> None:
    """keep_best, at the end of stage `name`: put the weights of its best epoch back into the model."""
    best = progress.best.get(name)
    if not ctx.cfg.checkpoint.keep_best or best is None or best["step"] == progress.step:
        return  # the last epoch was the best: the weights are already those
    load_model_state(best_dir(ctx.out, name), ctx.model)
    log.info("stage %s: kept epoch %d (%s %.4f)", name, best["epoch"], best["metric"], best["value"])


def _maybe_checkpoint(
    progress: Progress, ctx: LoopContext, optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LambdaLR
) -> None:
    stop = ctx.stop_after_steps is not None and progress.step >= ctx.stop_after_steps
    if progress.step % ctx.cfg.checkpoint.every_steps == 0 or stop:
        path = save_checkpoint(ctx.out, ctx.model, progress, optimizer, schedule, ctx.cfg.checkpoint.keep)
        log.debug("checkpoint %s", path)
    if stop:
        raise Interrupted(f"stopped after {progress.step} steps as asked; rerun with resume to continue")
