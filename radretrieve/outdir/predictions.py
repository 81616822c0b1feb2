"""OUT/predictions.parquet: zero-shot predictions of `radretrieve classify --index OUT`, one row per item and task.

Columns (`PREDICTION_COLUMNS`): item id, task, predicted label, its cosine score and probability, every class's
probability (JSON object label -> probability), the model fingerprint and the templates hash. The catalog
exposes the rows made with the out dir's current model as the view `predictions`, so `--where` can filter on
them (radretrieve.outdir.catalog). A new run of a task replaces that task's rows and keeps the other tasks';
the file is rewritten atomically each time, and its size and SHA-256 recorded in OUT/predictions.json, so that
a damaged file is found as a damaged shard is (radretrieve.outdir.verify). A damaged predictions file costs only
the predictions: the catalog leaves them out with one warning, and the next `classify` rewrites the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from radretrieve.foundation.fileio import atomic_path, atomic_write_text, file_sha256
from radretrieve.outdir.layout import PREDICTIONS_FILE, PREDICTIONS_RECORD
from radretrieve.outdir.schema import schema_problem
from radretrieve.outdir.verify import footer_schema, parquet_problem

log = logging.getLogger(__name__)
HASH_ON_OPEN_BYTES = 64 << 20  # readers hash a predictions file up to this size (~0.1 s), as index files are

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


@dataclass(frozen=True)
class Committed:
    """Size and SHA-256 of a predictions file as written (OUT/predictions.json lists those a reader accepts)."""

    size: int  # bytes
    sha256: str  # hex digest

    @staticmethod
    def of(path: Path) -> Committed:
        return Committed(path.stat().st_size, file_sha256(path))


def _record_path(out_dir: Path) -> Path:
    return Path(out_dir) / PREDICTIONS_RECORD


def read_record(out_dir: Path) -> tuple[Committed, ...] | None:
    """The committed versions of the predictions file, or None when no record was written (older out dirs).
    An unreadable record is an empty tuple: no file matches it."""
    path = _record_path(out_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return tuple(Committed(int(c["size"]), str(c["sha256"])) for c in data["committed"])
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def _write_record(out_dir: Path, committed: Sequence[Committed]) -> None:
    data = {"file": PREDICTIONS_FILE, "committed": [{"size": c.size, "sha256": c.sha256} for c in committed]}
    atomic_write_text(_record_path(out_dir), json.dumps(data, indent=1, sort_keys=True) + "\n")


def predictions_problem(out_dir: Path, full: bool = False) -> str | None:
    """Why OUT/predictions.parquet is damaged, or None (None too when there is none). As for shards: its size
    and Parquet magics always, its footer's schema, and its SHA-256 when `full` (writers) or when the file is
    at most HASH_ON_OPEN_BYTES (readers too: a flipped byte inside would otherwise surface in a query)."""
    path = predictions_path(out_dir)
    record = read_record(out_dir)
    if not path.exists():
        return "missing" if record else None
    full = full or path.stat().st_size <= HASH_ON_OPEN_BYTES
    if record is None:  # written before records existed: what can be checked without one
        problem = parquet_problem(path, 0, "", False)
    else:
        found = [parquet_problem(path, c.size, c.sha256, full) for c in record]
        found = found or [f"{PREDICTIONS_RECORD} is unreadable"]
        problem = None if None in found else found[0]
    if problem is not None:
        return problem
    schema, problem = footer_schema(path)
    return problem if schema is None else schema_problem(schema, SCHEMA)


def damaged_predictions_line(out_dir: Path, problem: str) -> str:
    """The one line that reports a damaged predictions file and its repair."""
    return (
        f"{predictions_path(out_dir)}: damaged predictions file ({problem}); going on without zero-shot "
        f"predictions; `radretrieve classify --index {out_dir}` rebuilds it"
    )


def write_predictions(out_dir: Path, runs: Sequence[PredictionRows]) -> Path:
    """Replace the rows of these runs' tasks in OUT/predictions.parquet (other tasks' rows stay); atomic.

    A damaged file (checked in full, SHA-256 included) is not read: it is replaced by this run's rows (the
    catalog opened before this has warned about it). The record of accepted versions lists the old and the new
    file while the new one is renamed into place, so that a crash at any moment leaves a file it accepts."""
    path = predictions_path(out_dir)
    tasks = {run.task for run in runs}
    parts = [run.table() for run in runs]
    problem = predictions_problem(out_dir, full=True)
    old: list[Committed] = []
    if problem is not None:  # the catalog has already said so; the rows of other tasks are lost with the file
        log.info("%s: damaged (%s): rewritten with the tasks of this run only", path, problem)
    elif path.is_file():
        old_table = pq.read_table(path, schema=SCHEMA)
        keep = [i for i, t in enumerate(old_table.column("task").to_pylist()) if t not in tasks]
        parts.insert(0, old_table.take(pa.array(keep, pa.int64())))
        old.append(Committed.of(path))
    table = pa.concat_tables(parts).sort_by([("task", "ascending"), ("item_id", "ascending")])
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
        new = Committed.of(tmp)
        _write_record(out_dir, [*old, new])
    _write_record(out_dir, [new])
    return path
