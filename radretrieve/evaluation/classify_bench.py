"""`radretrieve bench classify`: zero-shot (and `--linear-probe`) classification of a labelled manifest.

Ground truth is the manifest's label column named like the task (`--task organ=head,chest,abdomen` reads
`organ`), matched to the classes case-insensitively; items without the label or with a value outside the
classes are not scored (counted in the report). Zero-shot scores the chosen split (all items by default); the
linear probe fits on the `train` split's embeddings and scores the chosen split (default `test`).

Files as `bench retrieval` writes them (radretrieve.evaluation.report): NAME.json, NAME.md, NAME.png (metric
bars with CIs), plus one confusion-matrix PNG per run, NAME-confusion-<task>-<method>.png.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radretrieve.evaluation.classification import bootstrap_metrics, confusion
from radretrieve.evaluation.linear_probe import fit_linear_probe
from radretrieve.evaluation.prompts import Templates, templates_hash
from radretrieve.evaluation.report import ReportFiles, write_report
from radretrieve.evaluation.retrieval import Side
from radretrieve.evaluation.zeroshot import Task, classify_vectors, model_logit_scale, true_class
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path, atomic_write_text
from radretrieve.models.protocol import Encoder


@dataclass(frozen=True)
class ClassifyBenchOptions:
    """Settings of one classification benchmark."""

    n_bootstrap: int = 1000  # item resamples for the CIs (0 = none)
    confidence: float = 0.95  # CI level
    seed: int = 0  # bootstrap RNG seed
    probe_c: float = 1.0  # inverse L2 strength of the linear probe (scikit-learn's C)


@dataclass(frozen=True)
class ClassifyBenchResult:
    """What a run wrote."""

    runs: dict[str, dict[str, Any]]  # run name -> metrics, counts, confusion matrix
    files: ReportFiles  # JSON, Markdown, metric PNG
    confusion_pngs: tuple[Path, ...]  # one per run (empty with plot=False)


def targets(side: Side, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a known class int64 [n], their class index int64 [n]) for `task` on `side`'s labels."""
    rows, classes = [], []
    for i, labels in enumerate(side.labels):
        k = true_class(labels, task)
        if k is not None:
            rows.append(i)
            classes.append(k)
    return np.array(rows, dtype=np.int64), np.array(classes, dtype=np.int64)


def run_result(
    y: np.ndarray, probs: np.ndarray, task: Task, n_items: int, options: ClassifyBenchOptions
) -> dict[str, Any]:
    """Metrics with CIs, counts and the confusion matrix, in the dict form `write_report` takes."""
    estimates = bootstrap_metrics(y, probs, task.labels, options.n_bootstrap, options.confidence, options.seed)
    cm = confusion(y, np.argmax(probs, axis=1), len(task.labels))
    return {
        "metrics": {k: e.to_dict() for k, e in estimates.items()},
        "n_queries": n_items,  # items of the split
        "n_scored": int(len(y)),  # items with a known class
        "n_gallery": len(task.labels),  # classes
        "n_bootstrap": options.n_bootstrap,
        "confidence": options.confidence,
        "seed": options.seed,
        "ties": "equal probabilities: the first class",
        "chance_accuracy": 1.0 / len(task.labels),
        "confusion": {"labels": list(task.labels), "matrix": cm.tolist()},
    }


def _scored(side: Side, task: Task, what: str) -> tuple[np.ndarray, np.ndarray]:
    rows, y = targets(side, task)
    if len(rows) == 0:
        raise RadRetrieveError(
            f"{what}: no item has a '{task.name}' label among {', '.join(task.labels)} (labels present: "
            f"{sorted(side.label_keys()) or 'none'})"
        )
    return rows, y


def zero_shot_run(
    model: Encoder, side: Side, task: Task, templates: Templates | None, options: ClassifyBenchOptions
) -> dict[str, Any]:
    rows, y = _scored(side, task, "zero-shot")
    scores = classify_vectors(model.encode_text, side.vectors[rows], [task], templates, model_logit_scale(model))[0]
    return run_result(y, scores.probabilities.astype(np.float64), task, len(side), options)


def probe_run(train: Side, test: Side, task: Task, options: ClassifyBenchOptions) -> dict[str, Any]:
    train_rows, train_y = _scored(train, task, "linear probe (train split)")
    rows, y = _scored(test, task, "linear probe (evaluated split)")
    probe = fit_linear_probe(train.vectors[train_rows], train_y, len(task.labels), options.probe_c)
    result = run_result(y, probe.probabilities(test.vectors[rows]), task, len(test), options)
    return result | {"n_train": int(len(train_y))}


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> Path:
    """A confusion-matrix heat map with counts (rows: true class, columns: predicted), written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # no display on benchmark machines; must precede pyplot
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix)
    size = 1.2 + 0.7 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    try:
        im = ax.imshow(cm, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize="small")
        top = cm.max() if cm.size else 0
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path


def _add_chance_note(markdown: Path, tasks: Sequence[Task]) -> None:
    """Say what the table's columns count and what chance is, under the table (rewritten atomically)."""
    chance = "; ".join(f"{t.name} {1 / len(t.labels):.3f} ({len(t.labels)} classes)" for t in tasks)
    note = (
        f"\nChance accuracy (uniform guess): {chance}. `queries (scored)`: items of the split (with a known "
        "class); `gallery`: classes.\n"
    )
    atomic_write_text(markdown, markdown.read_text(encoding="utf-8") + note)


def bench_classify(
    model: Encoder,
    sides: dict[str, Side],
    tasks: Sequence[Task],
    out_dir: Path,
    *,
    templates: Templates | None = None,
    options: ClassifyBenchOptions = ClassifyBenchOptions(),
    meta: dict[str, Any] | None = None,
    name: str = "classify",
    plot: bool = True,
) -> ClassifyBenchResult:
    """Runs per task: `zero-shot [task]` on ``sides["eval"]``, and `linear-probe [task]` when ``sides`` has
    "train" too. Writes NAME.json/.md/.png and the confusion PNGs under `out_dir`."""
    runs: dict[str, dict[str, Any]] = {}
    for task in tasks:
        runs[f"zero-shot [{task.name}]"] = zero_shot_run(model, sides["eval"], task, templates, options)
        if "train" in sides:
            runs[f"linear-probe [{task.name}]"] = probe_run(sides["train"], sides["eval"], task, options)
    info = dict(meta or {}) | {
        "templates_hash": templates_hash(templates or Templates()),
        "logit_scale": model_logit_scale(model),
        "tasks": {t.name: list(t.labels) for t in tasks},
    }
    out_dir = Path(out_dir)
    files = write_report(runs, out_dir, name=name, title="Zero-shot classification", meta=info, plot=plot)
    _add_chance_note(files.markdown, tasks)
    pngs = []
    if plot:
        for run, data in runs.items():
            method, task_name = run.split(" [")[0], run.split("[")[1].rstrip("]")
            path = out_dir / f"{name}-confusion-{task_name}-{method}.png"
            pngs.append(plot_confusion(data["confusion"]["matrix"], data["confusion"]["labels"], path, run))
    return ClassifyBenchResult(runs, files, tuple(pngs))
