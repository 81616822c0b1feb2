"""`radretrieve fetch-data DIR`: download the sample data that tests and benchmarks read, with checksums."""

from __future__ import annotations

from pathlib import Path

import typer

from radretrieve.cli.output import say


def fetch_data(
    dest: Path = typer.Argument(..., help="Folder to fill (then: export RADRETRIEVE_DATA=DIR)."),
    only: list[str] | None = typer.Option(None, "--only", help="Just this sample (repeatable): vqa-rad, ct-head, ..."),
    list_only: bool = typer.Option(False, "--list", help="List the samples with their sources and licences."),
) -> None:
    """Download each sample from its public source, verify SHA-256 digests, write it atomically under DIR."""
    from radretrieve.datasets.samples import SAMPLES, fetch_samples

    if list_only:
        for s in SAMPLES:
            say(f"{s.folder}: {s.what}\n  source: {s.source}\n  licence: {s.licence}\n  url: {s.url}")
        return
    for folder in fetch_samples(dest, tuple(only or ())):
        say(f"{folder}: ok")


def register(app: typer.Typer) -> None:
    app.command("fetch-data")(fetch_data)
