"""Zero-shot classification: image/volume embeddings against prompt-ensemble class embeddings.

For a task (e.g. ``organ=head,chest,abdomen``) each class gets an embedding from its prompt ensemble
(radretrieve.evaluation.prompts.class_embeddings); an item's score for a class is the cosine similarity of the
two (both L2-normalised), and its probabilities are a softmax over the classes of ``logit_scale * score``, with
the model's own logit scale (CLIP's learnt inverse temperature, capped at 100 as CLIP caps it). The
prediction is the class of highest score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radretrieve.evaluation.prompts import Templates, class_embeddings
from radretrieve.foundation.errors import ConfigError

MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100 in training


@dataclass(frozen=True)
class Task:
    """A classification task: a name and its classes, in the order given."""

    name: str  # e.g. "organ"; also the label column benchmarks compare against
    labels: tuple[str, ...]  # e.g. ("head", "chest", "abdomen")


def parse_task(text: str) -> Task:
    """``"organ=head,chest,abdomen"`` -> Task("organ", ("head", "chest", "abdomen")); errors say what to write."""
    name, sep, rest = str(text).partition("=")
    labels = tuple(dict.fromkeys(x.strip() for x in rest.split(",") if x.strip()))
    if not sep or not name.strip() or not name.strip().isidentifier():
        raise ConfigError(f"--task {text!r}: write NAME=CLASS,CLASS,... e.g. organ=head,chest,abdomen")
    if len(labels) < 2:
        raise ConfigError(f"--task {text!r}: a task needs at least two classes")
    return Task(name.strip(), labels)


def true_class(labels: Mapping[str, str], task: Task) -> int | None:
    """The index of an item's known class for `task`: its label named like the task (`organ` for
    ``organ=head,chest,abdomen``), matched to the classes case-insensitively; None without one."""
    value = str(labels.get(task.name, "")).strip().lower()
    for k, label in enumerate(task.labels):
        if label.lower() == value:
            return k
    return None


def parse_tasks(texts: Sequence[str]) -> tuple[Task, ...]:
    tasks = tuple(parse_task(t) for t in texts)
    if not tasks:
        raise ConfigError("give at least one --task NAME=CLASS,CLASS,... e.g. --task organ=head,chest,abdomen")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"--task names must differ, got {', '.join(names)}")
    return tasks


def model_logit_scale(model: Any) -> float:
    """exp(logit_scale) of a RadCLIP / open_clip model, capped at MAX_LOGIT_SCALE."""
    raw = getattr(getattr(model, "clip", model), "logit_scale", None)
    if raw is None:
        raise ConfigError("the model has no logit_scale (temperature) for zero-shot probabilities")
    value = raw.detach() if hasattr(raw, "detach") else raw
    return min(MAX_LOGIT_SCALE, math.exp(float(value)))


@dataclass(frozen=True)
class TaskScores:
    """Zero-shot result of one task on N items."""

    task: Task
    scores: np.ndarray  # float32 [N, C]: cosine similarity to each class embedding
    probabilities: np.ndarray  # float32 [N, C]: softmax of logit_scale * scores over the classes

    @property
    def predicted(self) -> np.ndarray:
        """int64 [N]: index of the predicted class."""
        return np.argmax(self.scores, axis=1).astype(np.int64)

    def predicted_labels(self) -> list[str]:
        return [self.task.labels[i] for i in self.predicted]

    def probabilities_json(self) -> list[str]:
        """Per item, JSON {label: probability} (rounded to 6 decimals)."""
        labels = self.task.labels
        return [json.dumps({lab: round(float(p), 6) for lab, p in zip(labels, row)}) for row in self.probabilities]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float [N, C] (shifted by the row maximum: no overflow)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def score_task(vectors: np.ndarray, classes: np.ndarray, task: Task, logit_scale: float) -> TaskScores:
    """Items float32 [N, D] (L2-normalised) against class embeddings float32 [C, D] (L2-normalised)."""
    scores = (np.asarray(vectors, np.float32) @ np.asarray(classes, np.float32).T).astype(np.float32)
    return TaskScores(task, scores, softmax(np.float64(logit_scale) * scores.astype(np.float64)))


def classify_vectors(
    encode_text: Callable[[Sequence[str]], Any],
    vectors: np.ndarray,
    tasks: Sequence[Task],
    templates: Templates | None,
    logit_scale: float,
) -> list[TaskScores]:
    """Every task on the same items: class embeddings from `encode_text`, then `score_task`."""
    out = []
    for task in tasks:
        classes = class_embeddings(encode_text, task.labels, templates, task=task.name)
        out.append(score_task(vectors, classes, task, logit_scale))
    return out
