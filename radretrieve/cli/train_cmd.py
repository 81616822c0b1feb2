"""`radretrieve train --data MANIFEST_OR_ARCHIVE --model BASE --out DIR`: thin wrapper over
`radretrieve.training.train` (torch is imported only when the command runs)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radretrieve.cli.options import MODEL_RULES, PREPROCESS_HELP
from radretrieve.cli.output import say


def train(
    data: Path = typer.Option(..., "--data", "-d", help="Manifest (CSV/Parquet/JSONL) or archive folder with reports."),
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write (also checkpoints, history, plot)."),
    model: str = typer.Option("radclip-tiny", "--model", "-m", help="Base model. " + MODEL_RULES),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Base weights file or pretrained tag."),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PREPROCESS_HELP + " The trained model keeps it."),
    config: Path | None = typer.Option(None, "--config", help="TrainConfig JSON (partial); flags below override it."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard checkpoints of an earlier run in --out."),
    epochs_2d: int | None = typer.Option(None, "--epochs-2d", help="Epochs of the 2D (image encoder) stage."),
    epochs_3d: int | None = typer.Option(None, "--epochs-3d", help="Epochs of the 3D (adapter) stage."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Pairs per micro-batch (both stages)."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    lr: float | None = typer.Option(None, "--lr", help="Image encoder learning rate (2D stage)."),
    adapter_lr: float | None = typer.Option(None, "--adapter-lr", help="Adapter learning rate (3D stage)."),
    image_lr_3d: float | None = typer.Option(
        None, "--image-lr-3d", help="Image encoder LR in the 3D stage (0 = frozen, cached)."
    ),
    unfreeze_text: bool = typer.Option(False, "--unfreeze-text", help="Train the text encoder too (2D stage)."),
    text_lr: float | None = typer.Option(None, "--text-lr", help="Text encoder learning rate with --unfreeze-text."),
    temperature: float | None = typer.Option(None, "--temperature", help="InfoNCE temperature (RadCLIP: 0.07)."),
    learn_temperature: bool = typer.Option(False, "--learn-temperature", help="Learn the temperature."),
    text: str | None = typer.Option(None, "--text", help="Text source: report | template | mixed."),
    template: list[str] | None = typer.Option(
        None, "--template", help="Label template, e.g. '{region} {modality}, {finding}' (repeatable)."
    ),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", help="Optimizer steps between checkpoints."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of data order, splits and choices."),
    augment: bool = typer.Option(
        False, "--augment", help="2D-stage augmentation: random resized crop, small rotation, intensity/contrast."
    ),
    prompt_task: list[str] | None = typer.Option(
        None, "--prompt-task", help="Mix this label's prompt-ensemble texts into the training texts (repeatable)."
    ),
    keep_best: bool = typer.Option(
        False, "--keep-best", help="Keep each stage's best epoch by validation retrieval (mAP), not the last."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda if present)."),
) -> None:
    """Fine-tune RadCLIP in two stages (image encoder on 2D pairs, then the slice pooling adapter on volumes)."""
    from radretrieve.foundation.errors import RadRetrieveError
    from radretrieve.training import TrainConfig
    from radretrieve.training.api import train as run_train

    if not data.exists():
        raise RadRetrieveError(f"{data}: data not found (a manifest file or an archive folder)")
    base = json.loads(config.read_text()) if config is not None else {}
    cfg = TrainConfig.from_dict(_overrides(base, locals()))
    start: object = model
    if preprocess is not None:  # a loaded model with the profile applied; the trained model directory keeps it
        from radretrieve.models.loading import load_model

        start = load_model(model, weights=weights, device=device, preprocess=preprocess)
    result = run_train(cfg, data, out, start, weights, resume=resume, overwrite=overwrite, device=device)
    for line in result.summary_lines():
        say(line)


def _overrides(base: dict, args: dict) -> dict:
    """Merge the command-line flags that were given into a (partial) TrainConfig dict."""
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}

    def put(section: str | None, key: str, value: object) -> None:
        if value is None:
            return
        if section is None:
            cfg[key] = value
        else:
            cfg.setdefault(section, {})[key] = value

    both = ("image_stage", "volume_stage")
    put("image_stage", "epochs", args["epochs_2d"])
    put("volume_stage", "epochs", args["epochs_3d"])
    for section in both:
        put(section, "batch_size", args["batch_size"])
        put(section, "grad_accum", args["grad_accum"])
    put("image_stage", "lr", args["lr"])
    put("volume_stage", "lr", args["adapter_lr"])
    put("volume_stage", "image_lr", args["image_lr_3d"])
    put("image_stage", "train_text", True if args["unfreeze_text"] else None)
    put("image_stage", "text_lr", args["text_lr"])
    put(None, "temperature", args["temperature"])
    put(None, "learn_temperature", True if args["learn_temperature"] else None)
    put("text", "source", args["text"])
    put("text", "templates", tuple(args["template"]) if args["template"] else None)
    put("checkpoint", "every_steps", args["checkpoint_every"])
    put(None, "seed", args["seed"])
    put("augment", "enabled", True if args["augment"] else None)
    put("text", "prompt_tasks", tuple(args["prompt_task"]) if args["prompt_task"] else None)
    put("checkpoint", "keep_best", True if args["keep_best"] else None)
    return cfg


def register(app: typer.Typer) -> None:
    app.command("train")(train)
