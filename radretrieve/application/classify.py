"""`radretrieve classify`: zero-shot classification of an out dir's items (predictions stored for `--where`) or
of files that are not indexed (printed only). Scores and probabilities: radretrieve.evaluation.zeroshot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radretrieve.application.embed import embed_paths, encoder_json
from radretrieve.evaluation.prompts import Templates, load_templates, templates_hash
from radretrieve.evaluation.zeroshot import Task, TaskScores, classify_vectors, model_logit_scale
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
            sources = {i: row.source for i, row in cat.rows(got).items()}
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
    about = recorded_model(out_dir).to_json()  # as `search` says it: the out dir's record
    return _predictions(got.tolist(), [sources.get(int(i), "") for i in got], results, about)


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
