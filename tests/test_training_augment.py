"""Training options of issue 14: 2D augmentation (seeded, restored on resume), label-prompt text mixing, and
keeping the best validation epoch (tiny model, CPU, a 20-image PNG manifest)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from radretrieve import load_model
from radretrieve.evaluation.prompts import prompts_for
from radretrieve.foundation.errors import ConfigError
from radretrieve.training import (
    AugmentConfig,
    CheckpointConfig,
    DataConfig,
    ImageStageConfig,
    TextConfig,
    TrainConfig,
    VolumeStageConfig,
    train,
)
from radretrieve.training.augment import augment_batch
from radretrieve.training.checkpoint import list_checkpoints, load_model_state
from radretrieve.training.data import load_data
from radretrieve.training.loop import Interrupted
from radretrieve.training.texts import choose

ORGANS = ("chest", "head", "abdomen")
RECIPE = TrainConfig(
    seed=5,
    data=DataConfig(val_fraction=0.3),
    image_stage=ImageStageConfig(epochs=2, batch_size=4, lr=3e-4),
    volume_stage=VolumeStageConfig(epochs=0),
    checkpoint=CheckpointConfig(every_steps=3, keep=50),
    augment=AugmentConfig(enabled=True),
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("aug")
    rng = np.random.default_rng(0)
    with (root / "m.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "text", "organ", "modality", "split"])
        for i in range(20):
            img = rng.integers(0, 255, (48, 48), dtype=np.uint8)
            img[: 16 * (i % 3 + 1)] //= 3  # a class-dependent dark band: something to learn
            Image.fromarray(img).save(root / f"im{i}.png")
            split = "val" if i % 5 == 4 else "train"  # 16 + 4: four steps of 4 pairs per epoch
            w.writerow([f"im{i}.png", f"case {i}: finding {i % 5}", ORGANS[i % 3], ["CT", "unknown"][i % 2], split])
    return root / "m.csv"


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------ augment_batch
def test_augmentation_changes_the_batch_and_is_deterministic_per_seed():
    x = torch.rand(4, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    cfg = AugmentConfig(enabled=True)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.allclose(a, c) and not torch.allclose(a, x)
    assert torch.equal(augment_batch(x, AugmentConfig()), x)  # off by default


def test_identity_geometry_and_jitter_semantics():
    x = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    still = AugmentConfig(enabled=True, crop_scale=(1, 1), crop_ratio=(1, 1), rotation=0, brightness=0, contrast=0)
    torch.testing.assert_close(augment_batch(x, still), x, atol=1e-5, rtol=0)
    # contrast alone: the mean stays, the spread about it scales by a factor in [0.8, 1.2], equal in all channels
    jitter = AugmentConfig(enabled=True, crop_scale=(1, 1), crop_ratio=(1, 1), rotation=0, brightness=0, contrast=0.2)
    y = augment_batch(x, jitter, torch.Generator().manual_seed(3))
    for i in range(3):
        dx, dy = x[i] - x[i].mean(), y[i] - y[i].mean()
        factor = float((dy * dx).sum() / (dx * dx).sum())
        assert 0.8 <= factor <= 1.2 and abs(factor - 1) > 1e-3
        torch.testing.assert_close(dy, factor * dx, atol=1e-4, rtol=0)
        assert float(y[i].mean()) == pytest.approx(float(x[i].mean()), abs=1e-5)
    # a crop of a quarter of the area, no rotation: each output is a 2x zoom, so the values stay in range
    zoom = AugmentConfig(enabled=True, crop_scale=(0.25, 0.25), crop_ratio=(1, 1), rotation=0, brightness=0, contrast=0)
    z = augment_batch(x, zoom, torch.Generator().manual_seed(4))
    assert z.min() >= x.min() - 1e-6 and z.max() <= x.max() + 1e-6 and not torch.allclose(z, x)
    with pytest.raises(ConfigError):
        AugmentConfig(crop_scale=(0.5, 1.5))


# ------------------------------------------------------------------------------------------ prompts mixing
def test_label_prompts_are_mixed_into_the_texts(manifest: Path):
    text = TextConfig(prompt_tasks=("organ", "modality"), prompt_share=0.5)
    data = load_data(manifest, text, DataConfig(val_fraction=0.0), seed=0)
    ex = data.train_images[0]
    assert ex.prompts == tuple(dict.fromkeys(prompts_for("organ", "chest") + prompts_for("modality", "CT")))
    assert data.train_images[1].prompts == tuple(prompts_for("organ", "head"))  # modality unknown: no prompts
    draws = [choose(text, ex.texts, ex.prompts, 0, epoch, ex.key) for epoch in range(200)]
    share = sum(d in ex.prompts for d in draws) / len(draws)
    assert 0.35 < share < 0.65 and set(draws) & set(ex.texts)
    assert draws == [choose(text, ex.texts, ex.prompts, 0, epoch, ex.key) for epoch in range(200)]
    no_prompts = TextConfig(prompt_tasks=("organ",), prompt_share=0.0)
    assert all(choose(no_prompts, ex.texts, ex.prompts, 0, e, ex.key) in ex.texts for e in range(50))


# ------------------------------------------------------------------------------------------ training runs
@pytest.fixture(scope="module")
def augmented_run(manifest: Path, tmp_path_factory: pytest.TempPathFactory):
    return train(RECIPE, manifest, tmp_path_factory.mktemp("a"), "radclip-tiny", device="cpu")


def test_augmented_training_is_seeded_and_resumes_exactly(augmented_run, manifest: Path, tmp_path: Path):
    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):  # mid-run: the generator state must come back from the checkpoint
        train(RECIPE, manifest, out, "radclip-tiny", device="cpu", stop_after_steps=3)
    resumed = train(RECIPE, manifest, out, "radclip-tiny", device="cpu", resume=True)
    assert resumed.resumed_from == 3
    assert _same(_weights(augmented_run.model), _weights(resumed.model))
    assert resumed.history == augmented_run.history


def test_keep_best_restores_the_best_validation_epoch(manifest: Path, tmp_path: Path):
    # A high rate without warm-up: validation peaks before the last epoch. The checkpoints at each epoch end
    # (4 steps per epoch) hold that epoch's weights; the last one is replaced by the stage-end checkpoint.
    stage = ImageStageConfig(epochs=4, batch_size=4, lr=3e-3, warmup_fraction=0.0)
    cfg = RECIPE.replace(image_stage=stage, checkpoint=CheckpointConfig(every_steps=4, keep=100, keep_best=True))
    result = train(cfg, manifest, tmp_path / "best", "radclip-tiny", device="cpu")
    rows = [r for r in result.history if r["stage"] == "2d"]
    values = [r["mAP"] for r in rows]
    best = rows[int(np.argmax(values))]  # the first of the maxima
    assert best["epoch"] != rows[-1]["epoch"], values  # the test exercises a restore
    assert result.best["2d"]["epoch"] == best["epoch"] and result.best["2d"]["value"] == best["mAP"]
    at_best = [
        p for p in list_checkpoints(result.out) if json.loads((p / "state.json").read_text())["step"] == best["step"]
    ]
    ref = load_model("radclip-tiny", device="cpu")
    load_model_state(at_best[0], ref)
    saved = load_model(str(result.out), device="cpu")
    assert _same(_weights(ref), _weights(saved))  # the model directory holds the best epoch's weights
    # ... not the last epoch's (a tie with the best keeps the earlier epoch): the weights move every epoch,
    # as another epoch-end checkpoint shows
    other = [p for p in list_checkpoints(result.out) if p not in at_best and p.name != "step-0000016"][0]
    load_model_state(other, ref)
    assert not _same(_weights(ref), _weights(saved)) and (result.out / "best" / "2d" / "best.json").is_file()
    with pytest.raises(ConfigError):
        TrainConfig(checkpoint=CheckpointConfig(best_metric="recall@7"))


def test_training_batches_are_augmented_and_validation_batches_are_not(manifest: Path, tiny_model):
    from radretrieve.training.data import PixelStore, decode_all
    from radretrieve.training.stages import ImageStage

    cfg = RECIPE.replace(text=TextConfig(prompt_tasks=("organ",), prompt_share=1.0))
    data = load_data(manifest, cfg.text, cfg.data, cfg.seed)
    store = PixelStore(data.root, tiny_model.config.preprocess, 64)
    data = decode_all(data, store)
    entries = ImageStage(tiny_model, data, store, cfg).entries[:4]
    off = ImageStage(tiny_model, data, store, cfg.replace(augment=AugmentConfig()))
    on = ImageStage(tiny_model, data, store, cfg)
    raw, texts = off._batch(entries, epoch=0)
    torch.manual_seed(0)
    aug, aug_texts = on._batch(entries, epoch=0)
    torch.manual_seed(0)
    assert torch.equal(on._batch(entries, epoch=0)[0], aug)  # the run's seeded generator decides
    assert aug.shape == raw.shape and not torch.allclose(aug, raw) and aug_texts == texts
    assert all(t in ex.prompts for t, (ex, _) in zip(texts, entries))  # prompt_share 1: always a prompt
    val, _ = on._batch(entries, epoch=-1)
    assert torch.equal(val, off._batch(entries, epoch=-1)[0])  # validation: never augmented
