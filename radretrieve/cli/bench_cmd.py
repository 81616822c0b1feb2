"""`radretrieve bench retrieval` and `radretrieve bench all`: thin commands over `radretrieve.evaluation.retrieval`
and the `benchmarks` suite. Heavy modules are imported inside the commands (`--help` stays torch-free)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from radretrieve.cli.options import MODEL_RULES, PREPROCESS_HELP
from radretrieve.cli.output import say

bench_app = typer.Typer(
    help="Measure retrieval (bench retrieval), zero-shot classification (bench classify) or run the suite (bench all).",
    no_args_is_help=True,
)


def _parse_ks(text: str) -> tuple[int, ...]:
    from radretrieve.foundation.errors import RadRetrieveError

    try:
        ks = tuple(sorted({int(k) for k in text.split(",") if k.strip()}))
    except ValueError as exc:
        raise RadRetrieveError(f"--k {text!r}: give depths separated by commas, e.g. 1,5,10") from exc
    if not ks or ks[0] < 1:
        raise RadRetrieveError(f"--k {text!r}: every depth must be >= 1")
    return ks


def _load_embeddings(
    index: Path | None,
    model: str | None,
    weights: str | None,
    data: Path | None,
    split: str | None,
    batch_size: int,
    device: str | None,
    preprocess: str | None = None,
):
    from radretrieve.foundation.errors import RadRetrieveError

    if (index is None) == (data is None):
        raise RadRetrieveError("give either --index DIR, or --model M --data MANIFEST (not both)")
    if index is not None:
        if model is not None or weights is not None or preprocess is not None:
            raise RadRetrieveError(
                "--model/--weights/--preprocess go with --data; an out dir already holds its embeddings"
            )
        from radretrieve.evaluation.sources import embeddings_from_index

        return embeddings_from_index(index, split), None
    if model is None:
        raise RadRetrieveError("--data needs --model (e.g. --model radclip-tiny)")
    if not data.exists():
        raise RadRetrieveError(f"{data}: manifest not found")
    from radretrieve import load_model
    from radretrieve.evaluation.sources import embeddings_from_model

    encoder = load_model(model, weights=weights, device=device, preprocess=preprocess)
    return embeddings_from_model(encoder, data, split, batch_size), encoder


def _text_encoder(index: Path | None, encoder):
    """The text tower for prompt queries (`--protocol labels`): the --model, else the out dir's own."""
    if encoder is not None:
        return encoder.encode_text
    from radretrieve.evaluation.sources import text_encoder_for_index

    return text_encoder_for_index(index).encode_text


def _mode_scorer(modes: tuple[str, ...], index: Path | None, encoder):
    """The keyword and hybrid ranking of `indexers` for the evaluation (None when only vectors are ranked), with
    the vector list weighted as the search service weighs it for this model (untrained: less)."""
    if modes == ("vector",):
        return None
    import functools

    from indexers.fusion import UNTRAINED_VECTOR_WEIGHT
    from indexers.memory import mode_scores

    if encoder is not None:
        trained = encoder.provenance.trained
    else:
        from radretrieve.outdir.model_ref import recorded_model

        trained = recorded_model(index).provenance.trained
    return functools.partial(mode_scores, vector_weight=1.0 if trained else UNTRAINED_VECTOR_WEIGHT)


@bench_app.command("retrieval")
def retrieval(
    index: Path | None = typer.Option(None, "--index", "-i", help="Out dir written by `radretrieve index`."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model to encode --data with. " + MODEL_RULES),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Weights file or pretrained tag for --model."),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PREPROCESS_HELP),
    data: Path | None = typer.Option(None, "--data", "-d", help="Manifest (CSV/Parquet/JSONL) or archive folder."),
    out: Path = typer.Option(Path("bench-results"), "--out", "-o", help="Folder for NAME.json, NAME.md, NAME.png."),
    labels: list[str] | None = typer.Option(
        None,
        "--labels",
        help="Label set for label-aware runs, e.g. organ,modality (repeatable; 'none' = off). "
        "Default: organ,modality where the data has them.",
    ),
    split: str | None = typer.Option(None, "--split", help="Only studies of this split (train, val, test)."),
    k: str = typer.Option("1,5,10", "--k", help="Depths of recall@k and precision@k."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs (0 = none)."),
    confidence: float = typer.Option(0.95, "--confidence", help="CI level."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    batch_size: int = typer.Option(64, "--batch-size", help="Slices per encoder call (--model)."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (--model; default cuda if present)."),
    name: str = typer.Option("retrieval", "--name", help="Base name of the report files."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Skip the PNG."),
    protocol: str = typer.Option(
        "standard",
        "--protocol",
        help="standard | ct-rate (CT-CLIP: report->volume R@5/10/50/100, volume->volume MAP@1/5/10/50) | pools "
        "(Merlin: R@1/@8 in pools of 128 studies) | labels (one prompt query per class, P@10/@50).",
    ),
    templates: Path | None = typer.Option(
        None, "--templates", help="Prompt templates file (JSON or text) for --protocol labels."
    ),
    pool_size: int = typer.Option(128, "--pool-size", help="Studies per pool (--protocol pools)."),
    pools: int = typer.Option(10, "--pools", help="Seeded pool partitions averaged (--protocol pools)."),
    mode: str = typer.Option(
        "vector",
        "--mode",
        help="vector | keyword | hybrid | all (--protocol labels: one table per mode; keyword queries are the "
        "class names against each item's report and description).",
    ),
) -> None:
    """Text -> image and image -> text retrieval metrics (Recall@k, P@k, mAP, MRR, median rank, bootstrap CIs)."""
    from radretrieve.evaluation.prompts import load_templates
    from radretrieve.evaluation.protocols import PROTOCOLS, PoolOptions, run_protocol
    from radretrieve.evaluation.retrieval import BenchOptions, parse_label_sets
    from radretrieve.foundation.errors import RadRetrieveError

    if protocol not in PROTOCOLS:
        raise RadRetrieveError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    modes = ("vector", "keyword", "hybrid") if mode == "all" else (mode,)
    if any(m not in ("vector", "keyword", "hybrid") for m in modes):
        raise RadRetrieveError(f"--mode {mode!r}: choose from vector, keyword, hybrid, all")
    options = BenchOptions(
        ks=_parse_ks(k),
        label_sets=parse_label_sets(labels),
        n_bootstrap=bootstrap,
        confidence=confidence,
        seed=seed,
        modes=modes,
    )
    tpl = load_templates(templates) if templates is not None else None
    emb, encoder = _load_embeddings(index, model, weights, data, split, batch_size, device, preprocess)
    encode_text = _text_encoder(index, encoder) if protocol == "labels" else None
    files = run_protocol(
        protocol,
        emb,
        out,
        options,
        name=name,
        plot=not no_plot,
        encode_text=encode_text,
        templates=tpl,
        pools=PoolOptions(pool_size=pool_size, partitions=pools),
        scorer=_mode_scorer(modes, index, encoder),
    )
    say(files.markdown.read_text(encoding="utf-8"), nl=False)
    written = [p for p in (files.json, files.markdown, files.png) if p is not None]
    say("wrote " + ", ".join(str(p) for p in written), err=True)


@bench_app.command("classify")
def classify(
    model: str = typer.Option(..., "--model", "-m", help="Model to encode --data with. " + MODEL_RULES),
    data: Path = typer.Option(..., "--data", "-d", help="Manifest with a label column named like each task."),
    task: list[str] = typer.Option(..., "--task", "-t", help="NAME=CLASS,CLASS,... e.g. organ=head,chest,abdomen."),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Weights file or pretrained tag for --model."),
    preprocess: str | None = typer.Option(None, "--preprocess", help=PREPROCESS_HELP),
    split: str | None = typer.Option(
        None, "--split", help="Split to score (default: all items; with --linear-probe: test)."
    ),
    linear_probe: bool = typer.Option(
        False, "--linear-probe", help="Also fit a logistic regression on the train split and score --split."
    ),
    probe_c: float = typer.Option(1.0, "--probe-c", help="Inverse L2 strength of the linear probe (C)."),
    templates: Path | None = typer.Option(None, "--templates", help="Prompt templates file (default: built-in)."),
    out: Path = typer.Option(Path("bench-results"), "--out", "-o", help="Folder for the report files."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the CIs (0 = none)."),
    confidence: float = typer.Option(0.95, "--confidence", help="CI level."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    batch_size: int = typer.Option(64, "--batch-size", help="Slices per encoder call."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default cuda if present)."),
    name: str = typer.Option("classify", "--name", help="Base name of the report files."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Skip the PNGs."),
) -> None:
    """Zero-shot classification accuracy, balanced accuracy, macro F1 and per-class AUROC (bootstrap CIs);
    --linear-probe adds RadCLIP's linear-probe evaluation."""
    from radretrieve import load_model
    from radretrieve.application.classify import resolve_templates
    from radretrieve.evaluation.classify_bench import ClassifyBenchOptions, bench_classify
    from radretrieve.evaluation.sources import embeddings_from_model
    from radretrieve.evaluation.zeroshot import parse_tasks
    from radretrieve.foundation.errors import RadRetrieveError

    tasks, tpl = parse_tasks(task), resolve_templates(templates)
    if not data.exists():
        raise RadRetrieveError(f"{data}: manifest not found")
    encoder = load_model(model, weights=weights, device=device, preprocess=preprocess)
    eval_split = split or ("test" if linear_probe else None)
    evaluated = embeddings_from_model(encoder, data, eval_split, batch_size)
    sides = {"eval": evaluated.images}
    if linear_probe:
        sides["train"] = embeddings_from_model(encoder, data, "train", batch_size).images
    options = ClassifyBenchOptions(n_bootstrap=bootstrap, confidence=confidence, seed=seed, probe_c=probe_c)
    meta = dict(evaluated.meta) | {"preprocess": encoder.config.preprocess.profile}
    result = bench_classify(
        encoder, sides, tasks, out, templates=tpl, options=options, meta=meta, name=name, plot=not no_plot
    )
    say(result.files.markdown.read_text(encoding="utf-8"), nl=False)
    written = [p for p in (result.files.json, result.files.markdown, result.files.png) if p is not None]
    say("wrote " + ", ".join(str(p) for p in [*written, *result.confusion_pngs]), err=True)


def suite_dir() -> Path:
    """The `benchmarks` folder of a source checkout (it is not part of the installed package)."""
    import radretrieve

    return Path(radretrieve.__file__).resolve().parents[1] / "benchmarks"


@bench_app.command("all", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run_all(
    ctx: typer.Context,
    quick: bool = typer.Option(False, "--quick", help="Small sizes: minutes on a laptop CPU."),
    only: list[str] | None = typer.Option(None, "--only", help="Run just this benchmark (repeatable)."),
    results: Path | None = typer.Option(None, "--results", help="Results folder (default benchmarks/results)."),
    list_only: bool = typer.Option(False, "--list", help="List the benchmarks and whether each can run."),
) -> None:
    """Run the benchmark suite (`python -m benchmarks`): each benchmark in its own process; failures are recorded."""
    from radretrieve.foundation.errors import RadRetrieveError

    folder = suite_dir()
    if not (folder / "__main__.py").is_file():
        raise RadRetrieveError("bench all needs a source checkout: the benchmarks/ folder is not installed")
    args = [sys.executable, "-m", "benchmarks"] + (["--quick"] if quick else []) + (["--list"] if list_only else [])
    args += [a for name in only or [] for a in ("--only", name)]
    args += ["--results", str(results.resolve())] if results is not None else []
    code = subprocess.run(args + list(ctx.args), cwd=folder.parent).returncode
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
