"""RadCLIP's sanity check: a model trained here (`radretrieve.training.train`, radclip-tiny, a few epochs on
VQA-RAD's train split) classifies the organ of VQA-RAD's held-out test images zero-shot clearly above chance."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from radretrieve.cli.app import app
from tests.samples import needs, sample

runner = CliRunner()


@needs("vqa-rad", "vqa_rad.json")
def test_a_model_trained_here_classifies_organ_above_chance(tmp_path):
    from radretrieve.datasets.vqa_rad import convert_vqa_rad
    from radretrieve.training import DataConfig, ImageStageConfig, TextConfig, TrainConfig, VolumeStageConfig, train

    manifest = tmp_path / "vqa.csv"
    convert_vqa_rad(sample("vqa-rad"), manifest)
    cfg = TrainConfig(
        text=TextConfig(source="mixed", templates=("{organ} {modality}", "a {organ} image")),
        data=DataConfig(val_fraction=0.1),
        image_stage=ImageStageConfig(epochs=5, batch_size=32, lr=5e-4, train_text=True, text_lr=5e-4),
        volume_stage=VolumeStageConfig(epochs=0),
    )
    train(cfg, manifest, tmp_path / "model", "radclip-tiny", device="cpu")
    out = tmp_path / "bench"
    args = ["bench", "classify", "--model", str(tmp_path / "model"), "--data", str(manifest), "--split", "test"]
    res = runner.invoke(app, [*args, "--task", "organ=head,chest,abdomen", "--bootstrap", "200", "-o", str(out)])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "classify.json").read_text())["results"]["zero-shot [organ]"]
    acc = run["metrics"]["accuracy"]
    assert run["n_scored"] >= 50  # VQA-RAD's test split: ~63 images
    assert acc["low"] > 1 / 3 + 0.1, acc  # chance is 1/3; the whole 95% interval clearly above it
