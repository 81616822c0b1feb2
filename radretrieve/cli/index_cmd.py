"""`radretrieve index ARCHIVE --out DIR`: the bulk indexing job (thin wrapper over `pipelines.job`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radretrieve.cli.options import MODEL_HELP, PREPROCESS_HELP


def index(
    archive: Path = typer.Argument(..., help="Archive folder, or a manifest (CSV/Parquet/JSONL)."),
    out: Path = typer.Option(..., "--out", "-o", help="Out dir: shards/, errors/, manifest.json, index/."),
    model: str = typer.Option("radclip-tiny", "--model", "-m", help=MODEL_HELP),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Weights file or pretrained tag."),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PREPROCESS_HELP),
    workers: int = typer.Option(2, "--workers", help="Reader processes (0: decode in the main process)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Slices per encoder call."),
    studies_per_task: int = typer.Option(64, "--studies-per-task", help="Studies per task (= per shard)."),
    engine: str = typer.Option("local", "--engine", help="local | ray"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Join this Ray cluster (engine ray)."),
    encoders: int = typer.Option(
        0, "--encoders", help="Engine ray without GPUs: CPU encoder actors (default: one per node)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda if present)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Rebuild an out dir made with another model or preprocessing."
    ),
    anonymise_paths: bool = typer.Option(
        False,
        "--anonymise-paths",
        help="Store and show keyed hashes instead of file and folder names (names can carry patient data).",
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Retry every recorded failure (failures whose files changed always are)."
    ),
    wait: float = typer.Option(
        0.0, "--wait", help="Seconds to wait for another job writing --out (default: stop at once naming it)."
    ),
    no_index: bool = typer.Option(False, "--no-index", help="Do not build the FAISS index at the end."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Embed an archive into Parquet shards (resumable: rerun to continue after a crash), then build the index."""
    from pipelines.job import IndexOptions, index_archive
    from radretrieve.foundation.errors import RadRetrieveError
    from radretrieve.models.loading import load_model

    if engine not in ("local", "ray"):
        raise RadRetrieveError(f"--engine must be local or ray, got {engine!r}")
    if not archive.exists():
        raise RadRetrieveError(f"{archive}: archive not found")
    m = load_model(model, weights=weights, device=device, preprocess=preprocess)
    opts = IndexOptions(
        workers=workers,
        batch_size=batch_size,
        studies_per_task=studies_per_task,
        engine=engine,
        overwrite=overwrite,
        retry_errors=retry_errors,
        anonymise_paths=anonymise_paths,
        wait=wait,
        progress=not quiet,
        ray_address=ray_address,
        encoders=encoders,
    )  # type: ignore[arg-type]
    summary = index_archive(archive, out, m, opts)
    if as_json:
        typer.echo(json.dumps(summary.to_dict()))
    else:
        for line in summary.lines():
            typer.echo(line)
    if not no_index:
        _build_index(out, quiet or as_json)


def _build_index(out: Path, quiet: bool) -> None:
    """Build or update the FAISS indexes of the out dir (incremental when only new shards were added)."""
    from indexers.build import build_indexes

    infos = build_indexes(out)
    if quiet:
        return
    for name, info in infos.items():
        typer.echo(f"index {name}: {info.plan.index_type}, {info.count} vectors, recall@10 {info.recall_at_10:.3f}")


def register(app: typer.Typer) -> None:
    app.command("index")(index)
