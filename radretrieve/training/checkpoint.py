"""Checkpoints that resume exactly and never unpickle.

A checkpoint is a folder `OUT/checkpoints/step-NNNNNNN/`:
- `model.safetensors`: every tensor of the model (frozen ones included, so it is self-contained);
- `optimizer.pt`, `schedule.pt`, `rng.pt`: `torch.save` of state dicts / the torch RNG state, read back with
  `torch.load(weights_only=True)` (tensors, numbers, strings, lists, tuples, dicts only: no code);
- `state.json`: stage, epoch, step, the running epoch loss, the history so far and the config hash.
The data order needs no saved state: each epoch's shuffle is a function of (seed, stage, epoch).
A checkpoint is written to a temporary folder and renamed, so a crash never leaves half of one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_dir

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"


class CheckpointError(RadRetrieveError):
    """A checkpoint is missing, unreadable or from another recipe."""


@dataclass
class Progress:
    """Where training stands (JSON in every checkpoint)."""

    config_hash: str  # TrainConfig hash + data + base model: a resume must match it
    stage: int = 0  # 0 = 2D stage, 1 = 3D stage, 2 = finished
    epoch: int = 0  # current epoch within the stage
    step_in_epoch: int = 0  # optimizer steps done in the current epoch
    step: int = 0  # optimizer steps done in the whole run (both stages)
    stage_step: int = 0  # optimizer steps done in the current stage (drives the LR schedule)
    loss_sum: float = 0.0  # sum of step losses in the current epoch (for the epoch mean)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    # keep_best: per stage name, the best validation epoch so far ({"epoch", "step", "metric", "value"});
    # its weights are in OUT/best/STAGE/model.safetensors
    best: dict[str, dict[str, Any]] = field(default_factory=dict)


def checkpoint_dir(out: Path, step: int) -> Path:
    return Path(out) / CHECKPOINTS / f"step-{step:07d}"


def save_checkpoint(
    out: Path, model: nn.Module, progress: Progress, optimizer: Any | None, schedule: Any | None, keep: int
) -> Path:
    """Write a checkpoint for `progress.step` atomically, then delete all but the newest `keep`."""
    from safetensors.torch import save_file

    final = checkpoint_dir(out, progress.step)
    with atomic_dir(final) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(schedule.state_dict(), tmp / "schedule.pt")
        torch.save({"cpu": torch.get_rng_state()} | _cuda_rng(), tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(asdict(progress), indent=1))
    for old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old)
    return final


def _cuda_rng() -> dict[str, torch.Tensor]:
    return {"cuda": torch.cuda.get_rng_state()} if torch.cuda.is_available() else {}


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_FILE).is_file()
    )


def load_progress(path: Path, config_hash: str) -> Progress:
    """The checkpoint's progress; a different recipe is an error rather than a silent mix."""
    data = json.loads((path / STATE_FILE).read_text())
    progress = Progress(**data)
    if progress.config_hash != config_hash:
        raise CheckpointError(
            f"{path}: made with another recipe, data or base model (config hash {progress.config_hash}, "
            f"now {config_hash}); use the same settings or a new --out"
        )
    return progress


BEST = "best"


def best_dir(out: Path, stage: str) -> Path:
    return Path(out) / BEST / stage


def save_best(out: Path, model: nn.Module, record: dict[str, Any]) -> Path:
    """Write the weights of a stage's best epoch so far (atomically, replacing the previous best)."""
    from safetensors.torch import save_file

    final = best_dir(out, record["stage"])
    if final.exists():
        shutil.rmtree(final)
    with atomic_dir(final) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "best.json").write_text(json.dumps(record, indent=1))
    return final


def load_model_state(path: Path, model: nn.Module) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=True)


def load_optimizer_state(path: Path, optimizer: Any, schedule: Any) -> None:
    """Restore optimizer and schedule (weights_only: plain data, nothing unpickled)."""
    if not (path / "optimizer.pt").is_file():
        return  # a stage-end checkpoint: the next stage starts a fresh optimizer
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    schedule.load_state_dict(torch.load(path / "schedule.pt", map_location="cpu", weights_only=True))


def restore_rng(path: Path) -> None:
    state = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
