"""What `radretrieve train` does, over one typed option object (the CLI and the Python API build the same
`TrainOptions`): a partial TrainConfig file merged with the options that were given, then
`radretrieve.training.api.train`. torch is imported only when the run starts.

    result = run_training(Path("manifest.csv"), Path("model_out"), TrainOptions(epochs_2d=2, epochs_3d=1))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radretrieve.foundation.errors import RadRetrieveError

if TYPE_CHECKING:
    from radretrieve.training import TrainConfig
    from radretrieve.training.api import TrainResult


@dataclass(frozen=True)
class TrainOptions:
    """Everything `radretrieve train` takes besides --data and --out; None: the TrainConfig's value."""

    model: str = "radclip-tiny"  # base model: registry name, model directory, open_clip name or hf-hub: id
    weights: str | None = None  # base weights file or pretrained tag
    preprocess: str | None = None  # preprocessing profile override; the trained model keeps it
    config: Path | None = None  # TrainConfig JSON (partial); the options below override it
    resume: bool = False  # continue from the newest checkpoint in the out dir
    overwrite: bool = False  # discard checkpoints of an earlier run in the out dir
    epochs_2d: int | None = None  # epochs of the 2D (image encoder) stage
    epochs_3d: int | None = None  # epochs of the 3D (adapter) stage
    batch_size: int | None = None  # pairs per micro-batch (both stages)
    grad_accum: int | None = None  # micro-batches per optimizer step (both stages)
    lr: float | None = None  # image encoder learning rate (2D stage)
    adapter_lr: float | None = None  # adapter learning rate (3D stage)
    image_lr_3d: float | None = None  # image encoder learning rate in the 3D stage (0: frozen, cached)
    unfreeze_text: bool = False  # train the text encoder too (2D stage)
    text_lr: float | None = None  # text encoder learning rate with unfreeze_text
    temperature: float | None = None  # InfoNCE temperature
    learn_temperature: bool = False  # learn the temperature
    text: str | None = None  # text source: report | template | mixed
    templates: tuple[str, ...] = ()  # label templates, e.g. '{region} {modality}, {finding}'
    checkpoint_every: int | None = None  # optimizer steps between checkpoints
    seed: int | None = None  # seed of data order, splits and choices
    augment: bool = False  # 2D-stage augmentation
    prompt_tasks: tuple[str, ...] = ()  # labels whose prompt-ensemble texts are mixed into the training texts
    keep_best: bool = False  # keep each stage's best epoch by validation mAP, not the last
    device: str | None = None  # cpu | cuda (None: cuda if present)


def train_config(options: TrainOptions) -> TrainConfig:
    """The TrainConfig of the options: the --config file (if any) with every given option put over it."""
    from radretrieve.training import TrainConfig

    base: dict[str, Any] = {}
    if options.config is not None:
        try:
            base = json.loads(Path(options.config).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise RadRetrieveError(f"--config {options.config}: cannot read a JSON object ({reason})") from None
        if not isinstance(base, dict):
            raise RadRetrieveError(f"--config {options.config}: not a JSON object")
    return TrainConfig.from_dict(overrides(base, options))


def overrides(base: dict[str, Any], o: TrainOptions) -> dict[str, Any]:
    """Merge the options that were given (not None, flags that are on) into a (partial) TrainConfig dict."""
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}

    def put(section: str | None, key: str, value: object) -> None:
        if value is None:
            return
        if section is None:
            cfg[key] = value
        else:
            cfg.setdefault(section, {})[key] = value

    put("image_stage", "epochs", o.epochs_2d)
    put("volume_stage", "epochs", o.epochs_3d)
    for section in ("image_stage", "volume_stage"):
        put(section, "batch_size", o.batch_size)
        put(section, "grad_accum", o.grad_accum)
    put("image_stage", "lr", o.lr)
    put("volume_stage", "lr", o.adapter_lr)
    put("volume_stage", "image_lr", o.image_lr_3d)
    put("image_stage", "train_text", True if o.unfreeze_text else None)
    put("image_stage", "text_lr", o.text_lr)
    put(None, "temperature", o.temperature)
    put(None, "learn_temperature", True if o.learn_temperature else None)
    put("text", "source", o.text)
    put("text", "templates", tuple(o.templates) if o.templates else None)
    put("checkpoint", "every_steps", o.checkpoint_every)
    put(None, "seed", o.seed)
    put("augment", "enabled", True if o.augment else None)
    put("text", "prompt_tasks", tuple(o.prompt_tasks) if o.prompt_tasks else None)
    put("checkpoint", "keep_best", True if o.keep_best else None)
    return cfg


def run_training(data: Path, out: Path, options: TrainOptions = TrainOptions()) -> TrainResult:
    """Fine-tune the base model on `data` (a manifest or an archive folder) into the model directory `out`."""
    if not Path(data).exists():
        raise RadRetrieveError(f"{data}: data not found (a manifest file or an archive folder)")
    cfg = train_config(options)
    from radretrieve.models.reference import parse_model_ref

    parse_model_ref(options.model, options.weights)  # a bad name fails before torch loads
    from radretrieve.training.api import train

    start: object = options.model
    if options.preprocess is not None:  # a loaded model with the profile applied; the trained model keeps it
        from radretrieve.models.loading import load_model

        start = load_model(  # not warned about: training is what gives untrained weights meaning
            options.model, weights=options.weights, device=options.device, preprocess=options.preprocess, warn=False
        )
    return train(
        cfg,
        data,
        out,
        start,  # type: ignore[arg-type]  # a name or a loaded RadCLIP
        options.weights,
        resume=options.resume,
        overwrite=options.overwrite,
        device=options.device,
    )
