"""`radretrieve classify`: zero-shot classification of an out dir (`--index`, predictions stored for `--where`)
or of files given on the command line (`PATH... --model M`)."""

from __future__ import annotations

from pathlib import Path

import typer

from radretrieve.cli.options import MODEL_RULES, PREPROCESS_HELP, WEIGHTS_HELP
from radretrieve.cli.output import say_as

TASK_HELP = "NAME=CLASS,CLASS,... e.g. organ=head,chest,abdomen (repeatable: one run per task)."
TEMPLATES_HELP = "Prompt templates file (JSON list or task -> list, or text: one per line); default: built-in."


def classify(
    paths: list[Path] | None = typer.Argument(None, help="Files/folders to classify (not indexed; needs --model)."),
    index: Path | None = typer.Option(None, "--index", "-i", help="Out dir: classify its images and volumes."),
    task: list[str] = typer.Option(..., "--task", "-t", help=TASK_HELP),
    templates: Path | None = typer.Option(None, "--templates", help=TEMPLATES_HELP),
    where: str | None = typer.Option(None, "--where", help="--index: classify only the items passing this filter."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model for PATHs. " + MODEL_RULES),
    weights: str | None = typer.Option(None, "--weights", "-w", help=WEIGHTS_HELP),
    preprocess: str | None = typer.Option(None, "--preprocess", help="PATHs: " + PREPROCESS_HELP),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json"),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda if present)."),
) -> None:
    """Zero-shot classification with prompt ensembles: cosine scores, softmax probabilities at the model's
    temperature. With --index the predictions go into OUT/predictions.parquet, the `predictions` view of --where."""
    from radretrieve.application.classify import (
        FORMATS,
        classify_index,
        classify_paths,
        render_predictions,
        resolve_templates,
    )
    from radretrieve.evaluation.zeroshot import parse_tasks
    from radretrieve.foundation.errors import RadRetrieveError

    if fmt not in FORMATS:
        raise RadRetrieveError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    tasks, tpl = parse_tasks(task), resolve_templates(templates)
    if (index is None) == (not paths):
        raise RadRetrieveError("give either --index OUT, or files/folders with --model M (not both)")
    if index is not None:
        if model is not None or weights is not None or preprocess is not None:
            raise RadRetrieveError("--model/--weights/--preprocess go with files; --index uses the out dir's model")
        if not index.is_dir():
            raise RadRetrieveError(f"{index}: index directory not found")
        from radretrieve.outdir.model_ref import load_model_for_out_dir

        preds = classify_index(index, tasks, tpl, where, load_model_for_out_dir(index, device=device))
    else:
        if where is not None:
            raise RadRetrieveError("--where goes with --index (it filters an out dir's items)")
        if model is None:
            raise RadRetrieveError("files need --model (e.g. --model radclip-tiny)")
        for path in paths or []:
            if not path.exists():
                raise RadRetrieveError(f"{path}: no such file or folder")
        from radretrieve.models.loading import load_model

        m = load_model(model, weights=weights, device=device, preprocess=preprocess)
        preds = classify_paths(m, paths or [], tasks, tpl)
    say_as(render_predictions(preds, fmt), fmt)


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
