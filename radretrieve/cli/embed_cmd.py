"""`radretrieve embed PATH... [--text TEXT]...`: the vectors `index` would store, for scripts and checks by hand."""

from __future__ import annotations

from pathlib import Path

import typer

from radretrieve.cli.options import MODEL_HELP, PREPROCESS_HELP, WEIGHTS_HELP
from radretrieve.cli.output import say, say_json


def embed(
    paths: list[Path] | None = typer.Argument(None, help="Images, DICOM files or series folders, NIfTI volumes."),
    text: list[str] | None = typer.Option(None, "--text", "-t", help="A text to embed (repeatable)."),
    model: str = typer.Option("radclip-tiny", "--model", "-m", help=MODEL_HELP),
    weights: str | None = typer.Option(None, "--weights", "-w", help=WEIGHTS_HELP),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PREPROCESS_HELP),
    fmt: str = typer.Option("json", "--format", "-f", help="json (list of input, kind, embedding) | npy (--out)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file (default: JSON to stdout)."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda if present)."),
) -> None:
    """Embed files and texts with a model: L2-normalised vectors, the same that `radretrieve index` stores."""
    from collections import Counter

    from radretrieve.application.embed import check_output, embed_paths, embed_texts, write_embeddings
    from radretrieve.foundation.errors import RadRetrieveError
    from radretrieve.models.reference import parse_model_ref

    # every argument is checked before torch and the weights load (seconds), so a typo costs no wait
    if not paths and not text:
        raise RadRetrieveError("nothing to embed: give files/folders and/or --text TEXT")
    check_output(fmt, out)
    for path in paths or []:
        if not path.exists():
            raise RadRetrieveError(f"{path}: no such file or folder")
    parse_model_ref(model, weights)
    from radretrieve.models.loading import load_model

    m = load_model(model, weights=weights, device=device, preprocess=preprocess)
    embedded = embed_paths(m, paths or [])
    embeddings = embedded.embeddings + embed_texts(m, text or [])
    printed = write_embeddings(embeddings, fmt, out)
    if printed is not None:
        say_json(printed)
    else:
        say(f"wrote {len(embeddings)} embeddings ({m.config.embed_dim}-d) to {out}", err=True)
    if embedded.skipped:
        kinds = Counter(record.error_type for record in embedded.skipped)
        say(f"skipped {len(embedded.skipped)} unreadable input(s): {dict(sorted(kinds.items()))}", err=True)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
