"""`labels`: one text query per class, built from a prompt ensemble (`radretrieve.evaluation.prompts`), e.g.
"CT", "MRI" for the task `modality` or "chest", "head" for `organ`; the gallery items with that label are
relevant. Reported per class: precision@10 and @50, recall@10 and @50 (the share of the class's items in its
top k), plus their means over the classes.

The gallery of a task is every image/volume with a known value of that label ("" and "unknown" are left
out: such an item may well be a CT, and counting it as a miss would punish a right answer). The classes are
the label's values in that gallery. Chance at k is the class's share of the gallery (min(k, N)/k of it when
the gallery is smaller than k). CIs: a percentile bootstrap over gallery items (one query per class leaves
nothing else to resample): each resample draws N items with replacement and ranks the class queries on it.

`BenchOptions.modes` ranks the same queries in several search modes, one table each (docs/guide/hybrid-search.md):
keyword uses the class name (e.g. "kommerell diverticulum") as query text against each gallery item's text
(`Side.texts`: its report and description, never its labels); hybrid fuses that ranking
with the vector one. The scoring comes in as a `ModeScorer` (the ranking code lives in `indexers`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from radretrieve.evaluation.metrics import chance_precision, rank_block
from radretrieve.evaluation.prompts import Templates, class_embeddings, templates_hash
from radretrieve.evaluation.protocols.common import ProtocolTable, run_dict
from radretrieve.evaluation.retrieval import BenchOptions, Embedded, ModeScorer, Side
from radretrieve.foundation.errors import RadRetrieveError

LABEL_KS = (10, 50)
DEFAULT_TASKS = ("organ", "modality")
_MISSING = {"", "unknown", "none", "nan"}


def task_gallery(images: Side, task: str) -> tuple[np.ndarray, list[str]]:
    """Rows with a known value of `task` and those values."""
    rows, values = [], []
    for i, row in enumerate(images.labels):
        value = str(row.get(task, "")).strip()
        if value.lower() not in _MISSING:
            rows.append(i)
            values.append(value)
    return np.array(rows, dtype=np.int64), values


def precision_at(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """float [C, len(ks)]: precision@k per class query (pessimistic ties, as `metrics`)."""
    stats = rank_block(scores, relevant, ks)
    return stats.hits / np.asarray(ks, dtype=np.float64)[None, :]


def recall_at(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """float [C, len(ks)]: recall@k per class query, the share of its relevant items in the top k."""
    stats = rank_block(scores, relevant, ks)
    return stats.hits / np.maximum(relevant.sum(axis=1), 1)[:, None]


def _bootstrap(
    scores: np.ndarray, relevant: np.ndarray, options: BenchOptions, metric: Callable[..., np.ndarray] = precision_at
) -> np.ndarray | None:
    """float [B, C, len(ks)]: `metric` (precision@k, or recall@k) on gallery resamples (None without bootstrap)."""
    if options.n_bootstrap <= 0:
        return None
    rng = np.random.default_rng(options.seed)
    n = scores.shape[1]
    out = np.empty((options.n_bootstrap, scores.shape[0], len(LABEL_KS)))
    for b in range(options.n_bootstrap):
        idx = rng.integers(0, n, n)
        out[b] = metric(scores[:, idx], relevant[:, idx], LABEL_KS)
    return out


def _metric(value: float, boot: np.ndarray | None, confidence: float) -> dict[str, float | None]:
    if boot is None:
        return {"value": float(value), "low": None, "high": None}
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
    return {"value": float(value), "low": float(low), "high": float(high)}


def task_table(
    images: Side,
    task: str,
    encode_text: Callable[[Sequence[str]], Any],
    templates: Templates,
    options: BenchOptions,
    mode: str = "vector",
    scorer: ModeScorer | None = None,
) -> ProtocolTable:
    """One task's table in one search `mode`: vector ranks by the prompt ensemble's embedding; keyword and hybrid
    (through `scorer`) also by the class name as query text against each gallery item's own text."""
    rows, values = task_gallery(images, task)
    if rows.size == 0:
        raise RadRetrieveError(f"labels: no image or volume has a known {task!r} label")
    classes = sorted(set(values))
    queries = class_embeddings(encode_text, classes, templates, task=task)
    gallery = images.vectors[rows]
    scores = queries @ gallery.T
    if mode != "vector":
        if scorer is None or not images.texts:
            raise RadRetrieveError(f"labels: --mode {mode} needs the gallery's texts and a keyword scorer")
        scores = scorer(mode, scores, classes, [images.texts[int(r)] for r in rows])
    vals = np.array(values)
    relevant = vals[None, :] == np.array(classes)[:, None]  # [C, N]
    point = precision_at(scores, relevant, LABEL_KS)
    boot = _bootstrap(scores, relevant, options)
    recall = recall_at(scores, relevant, LABEL_KS)
    boot_r = _bootstrap(scores, relevant, options, recall_at)
    n_rel = relevant.sum(axis=1)
    runs: dict[str, Any] = {}
    for c, label in enumerate(classes):
        metrics = {
            f"P@{k}": _metric(point[c, j], None if boot is None else boot[:, c, j], options.confidence)
            for j, k in enumerate(LABEL_KS)
        }
        metrics |= {
            f"R@{k}": _metric(recall[c, j], None if boot_r is None else boot_r[:, c, j], options.confidence)
            for j, k in enumerate(LABEL_KS)
        }
        metrics["chance P@10"] = _metric(chance_precision(n_rel[c : c + 1], rows.size, 10), None, options.confidence)
        metrics["best possible P@10"] = _metric(min(int(n_rel[c]), 10) / 10, None, options.confidence)
        runs[f"{task}={label} ({int(n_rel[c])})"] = _run(metrics, rows.size, options)
    mean = {
        f"P@{k}": _metric(point[:, j].mean(), None if boot is None else boot[:, :, j].mean(axis=1), options.confidence)
        for j, k in enumerate(LABEL_KS)
    }
    mean |= {
        f"R@{k}": _metric(
            recall[:, j].mean(), None if boot_r is None else boot_r[:, :, j].mean(axis=1), options.confidence
        )
        for j, k in enumerate(LABEL_KS)
    }
    mean["chance P@10"] = _metric(chance_precision(n_rel, rows.size, 10), None, options.confidence)
    # a class with fewer than 10 items cannot reach P@10 = 1: read the scores against this ceiling too
    mean["best possible P@10"] = _metric(float(np.mean(np.minimum(n_rel, 10) / 10)), None, options.confidence)
    runs[f"{task}: mean over {len(classes)} classes"] = _run(mean, rows.size, options, n_queries=len(classes))
    return ProtocolTable(
        f"labels: {task}" + ("" if mode == "vector" else f" ({mode})"),
        images.unit(),
        int(rows.size),
        {f"P@{k}": chance_precision(n_rel, rows.size, k) for k in LABEL_KS},
        runs,
        (
            f"One query per class from {len(templates.for_task(task))} prompt templates ({templates.source}, hash "
            f"{templates_hash(templates)}); run names give each class's relevant count; chance = mean over classes.",
        ),
    )


def _run(metrics: dict[str, Any], n_gallery: int, options: BenchOptions, n_queries: int = 1) -> dict[str, Any]:
    return run_dict(metrics, n_queries, n_queries, n_gallery, options.n_bootstrap, options.seed, options.confidence) | {
        "ci_over": "gallery items"
    }


def label_tasks(images: Side, options: BenchOptions) -> tuple[str, ...]:
    have = images.label_keys()
    if options.label_sets:
        tasks = tuple(dict.fromkeys(k for keys in options.label_sets for k in keys))
        absent = [t for t in tasks if t not in have]
        if absent:
            raise RadRetrieveError(f"--labels: {absent} not found on the images; labels present: {sorted(have)}")
        return tasks
    tasks = tuple(t for t in DEFAULT_TASKS if t in have)
    if not tasks:
        raise RadRetrieveError(
            f"labels: no organ/modality labels on the images; name tasks with --labels ({sorted(have)})"
        )
    return tasks


def labels_tables(
    emb: Embedded,
    options: BenchOptions,
    encode_text: Callable[[Sequence[str]], Any],
    templates: Templates | Sequence[str] | None = None,
    scorer: ModeScorer | None = None,
) -> list[ProtocolTable]:
    if templates is None:
        templates = Templates()
    elif not isinstance(templates, Templates):  # a plain list: the ensemble of every task
        templates = Templates(by_task={"*": tuple(templates)}, source="given list")
    tables = []
    for task in label_tasks(emb.images, options):
        if not task_gallery(emb.images, task)[1]:
            continue  # a task whose values are all unknown (VQA-RAD modality on some splits): nothing to rank
        for mode in options.modes:
            tables.append(task_table(emb.images, task, encode_text, templates, options, mode, scorer))
    if not tables:
        raise RadRetrieveError("labels: no task has an image with a known label")
    return tables
