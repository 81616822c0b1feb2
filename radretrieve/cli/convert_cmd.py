"""`radretrieve convert DATASET SRC OUT_MANIFEST`: public data sets -> the manifest format
(docs/guide/archives.md: Manifests)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from radretrieve.cli.output import say

convert_app = typer.Typer(
    help="Convert a public data set into a manifest (path, text, study, split, labels).", no_args_is_help=True
)


@convert_app.command("vqa-rad")
def vqa_rad(
    src: Path = typer.Argument(..., help="VQA-RAD folder holding vqa_rad.json and images/."),
    out_manifest: Path = typer.Argument(..., help="Manifest CSV to write (paths relative to its folder)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the hash-based 70/10/20 train/val/test split."),
    absolute_paths: bool = typer.Option(False, "--absolute-paths", help="Write absolute image paths."),
) -> None:
    """VQA-RAD -> one manifest row per image: report-like text from its QA pairs, organ/modality/plane labels."""
    from radretrieve.datasets.vqa_rad import convert_vqa_rad
    from radretrieve.foundation.errors import RadRetrieveError

    try:
        images = convert_vqa_rad(src, out_manifest, seed=seed, absolute_paths=absolute_paths)
    except ValueError as exc:  # the converter's input errors name the file and the problem
        raise RadRetrieveError(str(exc)) from exc
    say(f"{out_manifest}: {len(images)} images")
    for label in ("organ", "modality"):
        counts = Counter(getattr(im, label) for im in images)
        say(f"  {label}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def register(app: typer.Typer) -> None:
    app.add_typer(convert_app, name="convert")
