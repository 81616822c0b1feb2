"""`radretrieve verify OUT`: hash every shard and index file (thin over `radretrieve.application.verify`)."""

from __future__ import annotations

from pathlib import Path

import typer

from radretrieve.cli.output import error_line, say


def verify(out_dir: Path = typer.Argument(..., help="An out dir written by `radretrieve index`.")) -> None:
    """Check every shard and index file against its committed SHA-256; exit 1 with one line per damaged file."""
    from radretrieve.application.verify import verify_out_dir

    report = verify_out_dir(out_dir)
    for line in report.damaged:
        error_line(line)  # one line each, control characters escaped (names come from the disk)
    if not report.ok:
        raise typer.Exit(1)
    say(f"{out_dir}: {report.shards} shard(s) and {report.index_files} index file(s) match what was committed")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
