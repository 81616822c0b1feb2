"""`radretrieve synth`: write a deterministic synthetic radiology archive (no torch import)."""

from __future__ import annotations

from pathlib import Path

import typer

from radretrieve.cli.output import say


def synth(
    out: Path = typer.Argument(..., help="Output folder (must be empty or absent)."),
    studies: int = typer.Option(100, "--studies", "-n", help="Number of studies to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes byte-identical files."),
    image_size: int = typer.Option(64, "--image-size", help="In-plane pixels of every slice and radiograph."),
    min_slices: int = typer.Option(16, "--min-slices", help="Fewest slices per CT/MR volume."),
    max_slices: int = typer.Option(48, "--max-slices", help="Most slices per CT/MR volume."),
    lesion_rate: float = typer.Option(0.7, "--lesion-rate", help="Fraction of studies with a lesion."),
) -> None:
    """Write DICOM CT series, NIfTI MR volumes, PNG/DICOM radiographs, reports and manifest.csv."""
    from radretrieve.synth.generate import synthesize

    summary = synthesize(
        out,
        studies,
        seed=seed,
        image_size=image_size,
        min_slices=min_slices,
        max_slices=max_slices,
        lesion_rate=lesion_rate,
    )
    say(summary.line())


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
