"""Training: the recipe's loss, exact resume, frozen parameters, model round trip, the CLI (tiny model, CPU)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from radretrieve import load_model
from radretrieve.foundation.errors import ConfigError
from radretrieve.training import (
    CheckpointConfig,
    DataConfig,
    ImageStageConfig,
    TextConfig,
    TrainConfig,
    VolumeStageConfig,
    train,
)
from radretrieve.training.checkpoint import CheckpointError, list_checkpoints, load_model_state
from radretrieve.training.loop import Interrupted, micro_batches
from radretrieve.training.objective import info_nce, warmup_cosine
from radretrieve.training.texts import candidate_texts, render

# Small, fast recipe over a synthetic archive: both stages, gradient accumulation, frequent checkpoints.
RECIPE = TrainConfig(
    seed=3,
    text=TextConfig(source="mixed", templates=("{region} {modality}", "{region} {modality}, lesion {lesion}")),
    data=DataConfig(val_fraction=0.25, slices_per_volume=1),
    image_stage=ImageStageConfig(epochs=2, batch_size=4, grad_accum=2, lr=3e-4),
    volume_stage=VolumeStageConfig(epochs=2, batch_size=4),
    checkpoint=CheckpointConfig(every_steps=2, keep=50),
)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _text_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k.startswith("clip.") and not k.startswith("clip.visual.") and "logit" not in k]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radretrieve.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth"), 12, seed=1).manifest


@pytest.fixture(scope="module")
def full_run(archive: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run, shared by the resume, frozen-parameter and round-trip tests."""
    out = tmp_path_factory.mktemp("full")
    base = _state(load_model("radclip-tiny", device="cpu"))
    return train(RECIPE, archive, out, "radclip-tiny", device="cpu"), base


def test_info_nce_matches_clip_loss_and_groups_equal_texts() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    logits = 10 * a @ b.t()
    clip = (
        torch.nn.functional.cross_entropy(logits, torch.arange(5))
        + torch.nn.functional.cross_entropy(logits.t(), torch.arange(5))
    ) / 2
    assert torch.allclose(info_nce(a, b, 10.0), clip)
    assert torch.allclose(info_nce(a, b, 10.0, ["p", "q", "r", "s", "t"]), clip)
    # Rows 0 and 1 share a text: pairing row 0 with b[1] is then as good as with b[0].
    same = torch.stack([b[0], b[0], b[2], b[3], b[4]])
    assert info_nce(same, same, 50.0, ["x", "x", "r", "s", "t"]) < 1e-3
    assert info_nce(same, same, 50.0) > 0.25  # as negatives, the twin rows cost ln 2 each


def test_templates_schedule_and_batches() -> None:
    labels = {"region": "chest", "modality": "CT", "lesion": "present"}
    assert render("{region} {modality}, {finding}", labels) == "chest CT"
    assert render("{region} {modality}, lesion {lesion}, {position}", labels) == "chest CT, lesion present"
    cfg = TextConfig(source="mixed", templates=("{region} {modality}",))
    assert candidate_texts(cfg, "  A  report. ", labels) == ("A report.", "chest CT")
    assert candidate_texts(TextConfig(), "", {}) == ()
    assert warmup_cosine(0, 10, 2, 0.0) == 0.5 and warmup_cosine(1, 10, 2, 0.0) == 1.0
    assert math.isclose(warmup_cosine(10, 10, 2, 0.1), 0.1)
    batches = micro_batches(9, 4, seed=0, stage=0, epoch=0)
    assert [len(b) for b in batches] == [4, 5]  # a batch of one has no negatives: merged
    assert sorted(sum(batches, [])) == list(range(9))
    assert batches == micro_batches(9, 4, 0, 0, 0) != micro_batches(9, 4, 0, 0, 1)


def test_config_json_round_trip_and_validation() -> None:
    import json

    assert TrainConfig.from_dict(json.loads(json.dumps(RECIPE.to_dict()))) == RECIPE
    with pytest.raises(ConfigError):
        ImageStageConfig(batch_size=1)
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"image_stage": {"epochz": 3}})


def _png_manifest(root: Path, n: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    with (root / "m.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "text", "split"])
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(root / f"im{i}.png")
            w.writerow([f"im{i}.png", f"finding number {i} in the {['left', 'right'][i % 2]} lung", "train"])
    return root / "m.csv"


def test_overfitting_8_pairs_drives_the_loss_near_zero(tmp_path: Path) -> None:
    manifest = _png_manifest(tmp_path, 8)
    cfg = TrainConfig(
        data=DataConfig(val_fraction=0.0),
        image_stage=ImageStageConfig(
            epochs=18, batch_size=8, lr=1e-3, warmup_fraction=0.0, train_text=True, text_lr=1e-3
        ),
        volume_stage=VolumeStageConfig(epochs=0),
    )
    result = train(cfg, manifest, tmp_path / "out", "radclip-tiny", device="cpu")
    losses = [r["loss"] for r in result.history]
    assert losses[0] > 1.5  # ln(8) ~ 2.08 at the start
    assert losses[-1] < 0.1, losses  # one batch of all 8 pairs per epoch, so this is the whole-set loss


def test_frozen_parameters_stay_bit_identical(full_run) -> None:
    result, base = full_run
    final = _state(result.model)
    stage_ends = [p for p in list_checkpoints(result.out) if '"stage": 1' in (p / "state.json").read_text()]
    model = load_model("radclip-tiny", device="cpu")
    load_model_state(stage_ends[0], model)
    after_2d = _state(model)
    for k in _text_keys(base):  # text encoder: frozen in both stages
        assert torch.equal(final[k], base[k]), k
    visual = [k for k in base if k.startswith("clip.visual.")]
    adapter = [k for k in base if k.startswith("adapter.")]
    assert any(not torch.equal(after_2d[k], base[k]) for k in visual)  # the 2D stage trained it
    for k in visual + adapter:
        assert torch.equal(after_2d[k], base[k]) or k in visual, k  # adapter untouched in stage 1
    for k in visual:  # image encoder: frozen in the 3D stage
        assert torch.equal(final[k], after_2d[k]), k
    assert any(not torch.equal(final[k], after_2d[k]) for k in adapter)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(full_run, archive: Path, tmp_path: Path) -> None:
    result, _ = full_run
    out = tmp_path / "resumed"
    # Stop inside the 2D stage (mid-epoch, with gradient accumulation), then inside the 3D stage.
    for stop in (3, result.steps - 1):
        with pytest.raises(Interrupted):
            train(RECIPE, archive, out, "radclip-tiny", device="cpu", resume=True, stop_after_steps=stop)
    resumed = train(RECIPE, archive, out, "radclip-tiny", device="cpu", resume=True)
    assert resumed.resumed_from == result.steps - 1 and resumed.steps == result.steps
    expected, got = _state(result.model), _state(resumed.model)
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    assert resumed.history == result.history
    with pytest.raises(CheckpointError):  # another recipe must not continue these checkpoints
        train(RECIPE.replace(seed=4), archive, out, "radclip-tiny", device="cpu", resume=True)
    with pytest.raises(ConfigError):  # neither resume nor overwrite: refuse to clobber
        train(RECIPE, archive, out, "radclip-tiny", device="cpu")


def test_saved_model_round_trips_through_load_model(full_run) -> None:
    result, _ = full_run
    loaded = load_model(str(result.out), device="cpu")
    assert loaded.fingerprint == result.fingerprint
    assert loaded.source.scheme == "path" and Path(loaded.source.ref).resolve() == result.out.resolve()
    vols = [torch.randn(5, 3, 64, 64), torch.randn(3, 3, 64, 64)]
    assert torch.equal(loaded.encode_volumes(vols), result.model.encode_volumes(vols))
    assert (result.out / "training.png").stat().st_size > 1000
    assert {r["stage"] for r in result.history} == {"2d", "3d"}
    assert all("recall@5" in r for r in result.history if r["stage"] == "2d")  # 1 val volume: no 3D metrics


def test_cli_train_end_to_end(archive: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from radretrieve.cli.app import app

    out = tmp_path / "cli"
    args = [
        "train",
        "--data",
        str(archive.parent),
        "--out",
        str(out),
        "--epochs-2d",
        "1",
        "--epochs-3d",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--text",
        "template",
        "--template",
        "{region} {modality}",
    ]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    assert "fingerprint" in run.stdout
    assert load_model(str(out), device="cpu").fingerprint in run.stdout


# Several optimizer steps per 2D epoch, checkpoints every 3 steps: a kill lands between two checkpoints.
KILL_RECIPE = RECIPE.replace(
    image_stage=ImageStageConfig(epochs=6, batch_size=2, grad_accum=1, lr=3e-4),
    volume_stage=VolumeStageConfig(epochs=1, batch_size=4),
    checkpoint=CheckpointConfig(every_steps=3, keep=50),
)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_a_hard_kill_between_checkpoints_resumes_to_the_same_weights(archive: Path, tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    (tmp_path / "cfg.json").write_text(json.dumps(KILL_RECIPE.to_dict()))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "radretrieve", "train", "--data", str(archive), "--out", str(out)]
    cmd += ["--config", str(tmp_path / "cfg.json"), "--device", "cpu"]
    # The reference runs in this process: the CLI runs get its thread count, so float sums are taken in one order.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def kill_at_first_checkpoint() -> bool:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not list_checkpoints(out):
            time.sleep(0.005)
        if proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        return True

    try:
        # the reference trains here (in the main thread: torch's thread settings are its own) while the CLI run
        # starts; a thread kills that run at its first checkpoint
        with ThreadPoolExecutor(max_workers=1) as pool:
            killed = pool.submit(kill_at_first_checkpoint)
            reference = train(KILL_RECIPE, archive, tmp_path / "ref", "radclip-tiny", device="cpu")
        assert killed.result(), "training finished before it could be killed"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    ends = [0] + [r["step"] for r in reference.history if r["stage"] == "2d"]
    per_epoch = [b - a for a, b in zip(ends, ends[1:])]
    assert min(per_epoch) >= 3, per_epoch  # several steps per epoch: the kill can land mid-epoch
    last = list_checkpoints(out)[-1]
    state = json.loads((last / "state.json").read_text())
    assert state["stage"] == 0 and state["step"] % 3 == 0  # killed inside the 2D stage, after a periodic checkpoint
    resume = [*cmd, "--resume"]
    subprocess.run(resume, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, timeout=600)
    expected, got = _weights(reference.out), _weights(out)
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
