"""OUT/predictions.parquet: zero-shot predictions of `radretrieve classify --index OUT`, one row per item and task.

Columns (`PREDICTION_COLUMNS`): item id, task, predicted label, its cosine score and probability, every class's
probability (JSON object label -> probability), the model fingerprint and the templates hash. The catalog
exposes the rows made with the out dir's current model as the view `predictions`, so `--where` can filter on
them (radretrieve.outdir.catalog). A new run of a task replaces that task's rows and keeps the other tasks';
the file is rewritten atomically each time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from radretrieve.foundation.fileio import atomic_path
from radretrieve.outdir.layout import PREDICTIONS_FILE

PREDICTION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("item_id", "BIGINT"),
    ("task", "VARCHAR"),
    ("label", "VARCHAR"),
    ("score", "FLOAT"),
    ("probability", "FLOAT"),
    ("probabilities", "VARCHAR"),
    ("model_fingerprint", "VARCHAR"),
    ("templates_hash", "VARCHAR"),
)
SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64()),  # the item's id (the FAISS id)
        pa.field("task", pa.string()),  # task name, e.g. "organ"
        pa.field("label", pa.string()),  # predicted class (highest probability)
        pa.field("score", pa.float32()),  # cosine similarity of the item to the predicted class embedding
        pa.field("probability", pa.float32()),  # softmax probability of the predicted class
        pa.field("probabilities", pa.string()),  # JSON {label: probability} over the task's classes
        pa.field("model_fingerprint", pa.string()),  # the model that made the prediction
        pa.field("templates_hash", pa.string()),  # the prompt templates that made the class embeddings
    ]
)


@dataclass(frozen=True)
class PredictionRows:
    """Predictions of one task for many items, row-aligned."""

    task: str
    item_ids: Sequence[int]
    labels: Sequence[str]
    scores: Sequence[float]
    probabilities: Sequence[float]
    all_probabilities: Sequence[str]  # JSON per row
    model_fingerprint: str
    templates_hash: str

    def table(self) -> pa.Table:
        n = len(self.item_ids)
        return pa.table(
            {
                "item_id": pa.array(self.item_ids, pa.int64()),
                "task": pa.array([self.task] * n, pa.string()),
                "label": pa.array(self.labels, pa.string()),
                "score": pa.array(self.scores, pa.float32()),
                "probability": pa.array(self.probabilities, pa.float32()),
                "probabilities": pa.array(self.all_probabilities, pa.string()),
                "model_fingerprint": pa.array([self.model_fingerprint] * n, pa.string()),
                "templates_hash": pa.array([self.templates_hash] * n, pa.string()),
            },
            schema=SCHEMA,
        )


def predictions_path(out_dir: Path) -> Path:
    return Path(out_dir) / PREDICTIONS_FILE


def write_predictions(out_dir: Path, runs: Sequence[PredictionRows]) -> Path:
    """Replace the rows of these runs' tasks in OUT/predictions.parquet (other tasks' rows stay); atomic."""
    path = predictions_path(out_dir)
    tasks = {run.task for run in runs}
    parts = [run.table() for run in runs]
    if path.is_file():
        old = pq.read_table(path, schema=SCHEMA)
        keep = [i for i, t in enumerate(old.column("task").to_pylist()) if t not in tasks]
        parts.insert(0, old.take(pa.array(keep, pa.int64())))
    table = pa.concat_tables(parts).sort_by([("task", "ascending"), ("item_id", "ascending")])
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
