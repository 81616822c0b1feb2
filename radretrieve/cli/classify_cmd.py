"""`radretrieve classify`: zero-shot classification of an out dir (`--index`, predictions stored for `--where`)
or of files given on the command line (`PATH... --model M`)."""

from __future__ import annotations

from pathlib import Path

import typer

from radretrieve.cli.options import MODEL_RULES, PREPROCESS_HELP, WEIGHTS_HELP
from radretrieve.cli.output import say, say_as

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
    from radretrieve.application.classify import FORMATS, ClassifyOptions, render_predictions, run_classify
    from radretrieve.foundation.errors import RadRetrieveError

    if fmt not in FORMATS:
        raise RadRetrieveError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    options = ClassifyOptions(tuple(task), templates, where, model, weights, preprocess, device)
    result = run_classify(paths or [], index, options)
    say_as(render_predictions(result.predictions, fmt), fmt)
    for line in result.summary_lines():  # stderr: stdout stays the table or the JSON list
        say(line, err=True)


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
