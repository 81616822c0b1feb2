"""What every protocol shares: its result table (with gallery size, unit and chance level), chance levels of
random rankings, percentile bootstrap CIs of per-query values, and the report files.

A table's runs use the layout of `RetrievalResult.to_dict()` ("metrics" of value/low/high, n_queries,
n_scored, n_gallery...), so `radretrieve.evaluation.report.markdown_table` renders them as it renders
`standard` runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radretrieve.evaluation.report import ReportFiles, format_value, markdown_table, plot_runs
from radretrieve.foundation.fileio import atomic_path, atomic_write_text


@dataclass(frozen=True)
class ProtocolTable:
    """One table of a protocol's report: runs over one gallery."""

    title: str  # e.g. "ct-rate: report -> volume"
    unit: str  # what one gallery row is: study, series, volume, image...
    n_gallery: int  # gallery size N (per pool for `pools`)
    chance: Mapping[str, float]  # metric -> its expected value under a random ranking
    runs: Mapping[str, Mapping[str, Any]]  # run name -> RetrievalResult.to_dict()-shaped dict
    notes: tuple[str, ...] = ()  # extra lines printed under the table (references, conventions)

    def summary_line(self) -> str:
        chance = ", ".join(f"{m} {format_value(m, v)}" for m, v in self.chance.items())
        return f"N = {self.n_gallery} (unit ranked: {self.unit}); chance: {chance or '-'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "unit": self.unit,
            "n_gallery": self.n_gallery,
            "chance": {k: (None if math.isnan(v) else float(v)) for k, v in self.chance.items()},
            "runs": {k: dict(v) for k, v in self.runs.items()},
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class ProtocolReport:
    """A protocol's tables plus where the embeddings came from."""

    protocol: str
    tables: tuple[ProtocolTable, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        parts = []
        for table in self.tables:
            text = markdown_table(table.runs, table.title)
            parts.append(text + "\n" + "\n".join((table.summary_line(), *table.notes)) + "\n")
        return "\n".join(parts)


def estimates(
    values: np.ndarray, names: Sequence[str], n_bootstrap: int, seed: int, confidence: float
) -> dict[str, dict[str, float | None]]:
    """Means of per-query values float [n, M] with percentile bootstrap CIs (resampling the n rows)."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), len(names))
    point = values.mean(axis=0)
    low = high = [None] * len(names)
    if n_bootstrap > 0 and len(values) > 0:
        rng = np.random.default_rng(seed)
        boot = np.stack([values[rng.integers(0, len(values), len(values))].mean(axis=0) for _ in range(n_bootstrap)])
        alpha = (1.0 - confidence) / 2.0
        lo, hi = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)], axis=0)
        low, high = [float(x) for x in lo], [float(x) for x in hi]
    return {n: {"value": float(point[i]), "low": low[i], "high": high[i]} for i, n in enumerate(names)}


def run_dict(
    metrics: Mapping[str, Mapping[str, float | None]],
    n_queries: int,
    n_scored: int,
    n_gallery: int,
    n_bootstrap: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    """A run in `RetrievalResult.to_dict()` layout."""
    return {
        "metrics": dict(metrics),
        "n_queries": n_queries,
        "n_scored": n_scored,
        "n_gallery": n_gallery,
        "confidence": confidence,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "ties": "pessimistic",
    }


def write_protocol_report(report: ProtocolReport, out_dir: Path, name: str, plot: bool = True) -> ReportFiles:
    """``out_dir/{name}.json`` (every number), ``.md`` (the tables, as printed) and ``.png``; each atomic."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "protocol": report.protocol,
        "meta": dict(report.meta),
        "tables": [t.to_dict() for t in report.tables],
    }
    json_path = atomic_write_text(out_dir / f"{name}.json", json.dumps(payload, indent=1, allow_nan=False) + "\n")
    md_path = atomic_write_text(out_dir / f"{name}.md", report.markdown())
    png_path = None
    if plot:
        runs = {f"{t.title}: {run}": data for t in report.tables for run, data in t.runs.items()}
        png_path = out_dir / f"{name}.png"
        with atomic_path(png_path) as tmp:
            plot_runs(runs, tmp, f"bench retrieval --protocol {report.protocol}")
    return ReportFiles(Path(json_path), Path(md_path), png_path)
