"""`radretrieve train --data MANIFEST_OR_ARCHIVE --model BASE --out DIR`: thin wrapper over
`radretrieve.application.training` (torch is imported only when the command runs)."""

from __future__ import annotations

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
    from radretrieve.application.training import TrainOptions, run_training

    options = TrainOptions(
        model=model,
        weights=weights,
        preprocess=preprocess,
        config=config,
        resume=resume,
        overwrite=overwrite,
        epochs_2d=epochs_2d,
        epochs_3d=epochs_3d,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        adapter_lr=adapter_lr,
        image_lr_3d=image_lr_3d,
        unfreeze_text=unfreeze_text,
        text_lr=text_lr,
        temperature=temperature,
        learn_temperature=learn_temperature,
        text=text,
        templates=tuple(template or ()),
        checkpoint_every=checkpoint_every,
        seed=seed,
        augment=augment,
        prompt_tasks=tuple(prompt_task or ()),
        keep_best=keep_best,
        device=device,
    )
    for line in run_training(data, out, options).summary_lines():
        say(line)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
