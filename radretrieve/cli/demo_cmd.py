"""`radretrieve demo`: synthesise -> train -> index -> query -> score -> contact sheet, offline."""

from __future__ import annotations

from pathlib import Path

import typer

from radretrieve.cli.output import say


def demo(
    workdir: Path = typer.Option(Path("radretrieve-demo"), "--dir", help="Where the demo writes everything."),
    studies: int = typer.Option(300, "--studies", help="Synthetic studies to make."),
    seed: int = typer.Option(0, "--seed", help="Synthesis and training seed."),
    k: int = typer.Option(5, "-k", help="Hits per query (precision@k)."),
    workers: int = typer.Option(2, "--workers", help="Reader processes while indexing."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No steps, progress or INFO log lines on stderr: warnings and errors only."
    ),
) -> None:
    """Run the whole system on a synthetic archive: train radclip-tiny, index, search, score, contact sheet."""
    import logging

    from radretrieve.application.demo import DemoOptions, run_demo

    if quiet:  # the root logger: training progress, the index build and captured library warnings alike
        logging.getLogger().setLevel(logging.WARNING)
    opts = DemoOptions(workdir, studies, seed, k, workers, progress=not quiet)
    result = run_demo(opts, (lambda msg: None) if quiet else (lambda msg: say(msg, err=True)))
    say(f"\ntext -> studies (precision@{k} against the ground-truth labels):")
    for s in result["queries"]:
        say(f"  P@{k} {s.precision:.2f} (best possible {s.best:.2f})  {s.text!r}")
        for h in s.hits:
            labels = ", ".join(f"{key}={h.labels.get(key, '')}" for key in s.labels)
            say(f"      {h.rank}. {h.score:.3f} {h.study_key:<10} {h.kind:<6} {labels}")
    say(f"  mean P@{k}: {result['mean_precision']:.2f} (best possible {result['mean_best']:.2f})")
    say(f"\nstudy -> reports (is the study's own report in the top {k}?):")
    for study, found, hits in result["reports"]:
        top = hits[0].text[:90] if hits else ""
        say(f"  {study:<10} {'yes' if found else 'no ':<3}  top: {top}")
    if result["contact_sheet"] is not None:
        say(f"\ncontact sheet: {result['contact_sheet']}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
