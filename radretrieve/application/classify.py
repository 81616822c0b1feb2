"""`radretrieve classify`: zero-shot classification of an out dir's items (predictions stored for `--where`) or
of files that are not indexed (printed only). Scores and probabilities: radretrieve.evaluation.zeroshot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from radretrieve.application.embed import embed_paths, encoder_json
from radretrieve.evaluation.prompts import Templates, load_templates, templates_hash
from radretrieve.evaluation.zeroshot import (
    Task,
    TaskScores,
    classify_vectors,
    model_logit_scale,
    parse_tasks,
    true_class,
)
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.lock import writer_lock
from radretrieve.foundation.terminal import printable
from radretrieve.models.protocol import Encoder
from radretrieve.outdir.predictions import PredictionRows, write_predictions

FORMATS = ("table", "json")


@dataclass(frozen=True)
class Prediction:
    """One item's prediction for one task."""

    item_id: int | None  # the item id (None for files that are not indexed)
    input: str  # source path in the out dir, or the file given
    task: str
    label: str  # predicted class
    score: float  # cosine similarity to the predicted class embedding
    probability: float  # softmax probability of the predicted class
    probabilities: dict[str, float]  # every class
    model: Mapping[str, Any] | None = None  # the model that scored it: name, trained, kind (`encoder_json`)

    def to_json(self) -> dict:
        out = {
            "item_id": self.item_id,
            "input": self.input,
            "task": self.task,
            "label": self.label,
            "score": round(self.score, 6),
            "probability": round(self.probability, 6),
            "probabilities": self.probabilities,
        }
        return out | ({"model": dict(self.model)} if self.model is not None else {})


def resolve_templates(path: Path | None) -> Templates:
    return Templates() if path is None else load_templates(path)


def _predictions(
    ids: Sequence[int | None],
    inputs: Sequence[str],
    results: Sequence[TaskScores],
    model: Mapping[str, Any] | None = None,
) -> list[Prediction]:
    out = []
    for res in results:
        labels, probs = res.task.labels, res.probabilities
        for n, (pred, item_id, name) in enumerate(zip(res.predicted, ids, inputs)):
            out.append(
                Prediction(
                    item_id,
                    name,
                    res.task.name,
                    labels[pred],
                    float(res.scores[n, pred]),
                    float(probs[n, pred]),
                    {lab: round(float(p), 6) for lab, p in zip(labels, probs[n])},
                    model,
                )
            )
    return out


def classify_paths(
    model: Encoder, paths: Sequence[Path], tasks: Sequence[Task], templates: Templates
) -> list[Prediction]:
    """Files that are not indexed: read and encode them as `index` would, then classify."""
    embedded = embed_paths(model, paths).embeddings
    vectors = np.stack([e.embedding for e in embedded])
    results = classify_vectors(model.encode_text, vectors, tasks, templates, model_logit_scale(model))
    return _predictions([None] * len(embedded), [e.input for e in embedded], results, encoder_json(model))


def classify_index(
    out_dir: Path, tasks: Sequence[Task], templates: Templates, where: str | None = None, model: Encoder | None = None
) -> list[Prediction]:
    """Classify the items (images and volumes) of an out dir passing `where`, and store the predictions in
    OUT/predictions.parquet (the catalog's `predictions` view). Holds the out dir's writer lock."""
    return _classify_index(out_dir, tasks, templates, where, model)[0]


def _classify_index(
    out_dir: Path, tasks: Sequence[Task], templates: Templates, where: str | None, model: Encoder | None
) -> tuple[list[Prediction], dict[int, Mapping[str, str]]]:
    """`classify_index`, plus each classified item's labels (item id -> manifest/synthetic labels)."""
    from radretrieve.outdir.catalog import Catalog
    from radretrieve.outdir.model_ref import load_model_for_out_dir, recorded_model

    out_dir = Path(out_dir)
    with writer_lock(out_dir, "radretrieve classify"):
        model = model or load_model_for_out_dir(out_dir)
        cat = Catalog(out_dir)
        try:
            ids, _ = cat.candidates("items", where)
            if len(ids) == 0:
                raise RadRetrieveError(
                    f"{out_dir}: no images or volumes to classify" + (" pass --where" if where else "")
                )
            got, vectors = cat.vectors(ids)
            rows = cat.rows(got)
        finally:
            cat.close()
        results = classify_vectors(model.encode_text, vectors, tasks, templates, model_logit_scale(model))
        thash = templates_hash(templates)
        runs = [
            PredictionRows(
                res.task.name,
                got.tolist(),
                res.predicted_labels(),
                [float(res.scores[n, p]) for n, p in enumerate(res.predicted)],
                [float(res.probabilities[n, p]) for n, p in enumerate(res.predicted)],
                res.probabilities_json(),
                model.fingerprint,
                thash,
            )
            for res in results
        ]
        write_predictions(out_dir, runs)
    sources = [rows[int(i)].source if int(i) in rows else "" for i in got]
    labels = {int(i): rows[int(i)].labels for i in got if int(i) in rows}
    about = recorded_model(out_dir).to_json()  # as `search` says it: the out dir's record
    return _predictions(got.tolist(), sources, results, about), labels


@dataclass(frozen=True)
class TaskAccuracy:
    """How often one task's predictions match the items' own labels (the label named like the task)."""

    task: Task
    items: int  # items classified
    labelled: int  # of those, items with a known class (their label is one of the task's classes)
    correct: int  # of those, items whose predicted class is their label

    @property
    def accuracy(self) -> float | None:
        """correct / labelled; None when no item has a known class."""
        return self.correct / self.labelled if self.labelled else None

    @property
    def chance(self) -> float:
        """The accuracy of a uniform random guess: 1 / number of classes."""
        return 1.0 / len(self.task.labels)

    def line(self) -> str:
        name, n_classes = self.task.name, len(self.task.labels)
        if self.accuracy is None:
            return (
                f"{name}: {self.items} items classified; none has a '{name}' label among "
                f"{', '.join(self.task.labels)}, so no accuracy"
            )
        unscored = self.items - self.labelled
        return (
            f"{name}: accuracy {self.accuracy:.3f} ({self.correct} of {self.labelled} labelled items; chance "
            f"{self.chance:.3f}, {n_classes} classes)"
            + (f"; {unscored} items without a known '{name}' label not scored" if unscored else "")
        )


def task_accuracies(
    predictions: Sequence[Prediction], labels: Mapping[int, Mapping[str, str]], tasks: Sequence[Task]
) -> tuple[TaskAccuracy, ...]:
    """Per task: the predictions of items with a known class (`radretrieve.evaluation.zeroshot.true_class`,
    as `bench classify` reads ground truth) against that class."""
    out = []
    for task in tasks:
        mine = [p for p in predictions if p.task == task.name]
        known = [(p, true_class(labels.get(p.item_id or 0, {}), task)) for p in mine]
        scored = [(p, k) for p, k in known if k is not None]
        correct = sum(p.label == task.labels[k] for p, k in scored)
        out.append(TaskAccuracy(task, len(mine), len(scored), correct))
    return tuple(out)


@dataclass(frozen=True)
class ClassifyOptions:
    """Everything `radretrieve classify` takes besides the PATHs and --index (the CLI's defaults)."""

    tasks: tuple[str, ...] = ()  # NAME=CLASS,CLASS,... one run per task
    templates: Path | None = None  # prompt templates file (None: the built-in ones)
    where: str | None = None  # --index: classify only the items passing this filter
    model: str | None = None  # PATHs: the model (an out dir uses its own)
    weights: str | None = None  # PATHs: weights for the model
    preprocess: str | None = None  # PATHs: preprocessing profile override
    device: str | None = None  # cpu | cuda (None: cuda if present)


@dataclass(frozen=True)
class ClassifyResult:
    """The predictions (one per item and task) and, for an out dir, the accuracy per task."""

    predictions: tuple[Prediction, ...]
    accuracy: tuple[TaskAccuracy, ...] = ()  # empty for files that are not indexed (they carry no labels)

    def summary_lines(self) -> list[str]:
        return [a.line() for a in self.accuracy]


def check_classify(paths: Sequence[Path], index: Path | None, options: ClassifyOptions) -> tuple[Task, ...]:
    """Argument errors before any model loads; the parsed tasks."""
    tasks = parse_tasks(options.tasks)
    if (index is None) == (not paths):
        raise RadRetrieveError("give either --index OUT, or files/folders with --model M (not both)")
    if index is not None:
        if options.model is not None or options.weights is not None or options.preprocess is not None:
            raise RadRetrieveError("--model/--weights/--preprocess go with files; --index uses the out dir's model")
        if not Path(index).is_dir():
            raise RadRetrieveError(f"{index}: index directory not found")
        return tasks
    if options.where is not None:
        raise RadRetrieveError("--where goes with --index (it filters an out dir's items)")
    if options.model is None:
        raise RadRetrieveError("files need --model (e.g. --model radclip-tiny)")
    from radretrieve.models.reference import parse_model_ref

    parse_model_ref(options.model, options.weights)  # a bad name fails before torch loads
    for path in paths:
        if not Path(path).exists():
            raise RadRetrieveError(f"{path}: no such file or folder")
    return tasks


def run_classify(
    paths: Sequence[Path], index: Path | None, options: ClassifyOptions, model: Encoder | None = None
) -> ClassifyResult:
    """Classify an out dir's items (`index`; predictions stored, accuracy where the items have labels) or
    files that are not indexed (`paths`, with `options.model`). `model`: an already loaded out-dir model."""
    tasks = check_classify(paths, index, options)
    templates = resolve_templates(options.templates)
    if index is not None:
        if model is None:
            from radretrieve.outdir.model_ref import load_model_for_out_dir

            model = load_model_for_out_dir(index, device=options.device)
        preds, labels = _classify_index(index, tasks, templates, options.where, model)
        return ClassifyResult(tuple(preds), task_accuracies(preds, labels, tasks))
    from radretrieve.models.loading import load_model

    name = cast(str, options.model)  # check_classify: files come with a model
    m = load_model(name, weights=options.weights, device=options.device, preprocess=options.preprocess)
    return ClassifyResult(tuple(classify_paths(m, list(paths), tasks, templates)))


def render_predictions(predictions: Sequence[Prediction], fmt: str) -> str:
    """A table (item, input, task, label, probability, score) or a JSON list."""
    if fmt not in FORMATS:
        raise RadRetrieveError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps([p.to_json() for p in predictions])
    header = ("item", "task", "label", "probability", "score", "input")
    rows = [
        (str(p.item_id if p.item_id is not None else "-"), p.task, p.label, f"{p.probability:.3f}", f"{p.score:.3f}")
        + (" ".join(printable(p.input).split()),)
        for p in predictions
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
