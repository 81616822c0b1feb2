"""Write retrieval benchmark results as JSON, a Markdown table and a PNG bar chart with CI error bars.

Input: a mapping of a run name (e.g. "text->image", "image->text (organ+modality)") to a
`radretrieve.evaluation.metrics.RetrievalResult` or its ``to_dict()`` form. matplotlib is imported only when a plot is
written, with the Agg backend, so the module works on machines without a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.evaluation.metrics import RetrievalResult
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path

# Metrics whose values are ranks (not fractions in [0, 1]): formatted differently and kept off the chart.
RANK_METRICS = frozenset({"median_rank"})


@dataclass(frozen=True)
class ReportFiles:
    """Where a report was written."""

    json: Path  # every number, including CIs and run settings
    markdown: Path  # one row per run, one column per metric: "value [low, high]"
    png: Path | None  # bar chart of the [0, 1] metrics with CI error bars; None when plot=False


def _as_dict(result: RetrievalResult | Mapping[str, Any], name: str) -> dict[str, Any]:
    data = result.to_dict() if isinstance(result, RetrievalResult) else dict(result)
    if not isinstance(data.get("metrics"), Mapping):
        raise ValueError(f"result {name!r} has no 'metrics' mapping; pass a RetrievalResult or its to_dict()")
    return data


def _metric_names(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Metric columns in first-seen order across runs (runs may use different k)."""
    names: dict[str, None] = {}
    for data in runs.values():
        names.update(dict.fromkeys(data["metrics"]))
    return list(names)


def format_value(metric: str, value: float | None) -> str:
    """Cell text for one number: 3 decimals for fractions, 1 for ranks, "-" for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.1f}" if metric in RANK_METRICS else f"{value:.3f}"


def markdown_table(runs: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    """A Markdown table: rows = runs, columns = metrics ("value [low, high]") plus query/gallery counts."""
    names = _metric_names(runs)
    header = ["run", *names, "queries (scored)", "gallery"]
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run, data in runs.items():
        cells = [run]
        for metric in names:
            est = data["metrics"].get(metric)
            if est is None:
                cells.append("-")
                continue
            cell = format_value(metric, est.get("value"))
            if est.get("low") is not None and est.get("high") is not None:
                cell += f" [{format_value(metric, est['low'])}, {format_value(metric, est['high'])}]"
            cells.append(cell)
        cells += [f"{data.get('n_queries', '-')} ({data.get('n_scored', '-')})", str(data.get("n_gallery", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(runs.values()))
    if first.get("n_bootstrap"):
        lines += [
            "",
            f"Brackets: {first['confidence']:.0%} bootstrap percentile interval over queries "
            f"({first['n_bootstrap']} resamples, seed {first['seed']}); tie convention: {first['ties']}.",
        ]
    return "\n".join(lines) + "\n"


def plot_runs(runs: Mapping[str, Mapping[str, Any]], path: Path, title: str | None = None) -> None:
    """Grouped bar chart: one group per [0, 1] metric, one bar per run, CI as error bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on benchmark machines; must precede pyplot
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RadRetrieveError("the PNG plot needs matplotlib: pip install matplotlib (or plot=False)") from exc
    names = [n for n in _metric_names(runs) if n not in RANK_METRICS]
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.0))
    try:
        for i, (run, data) in enumerate(runs.items()):
            xs, ys, err = [], [], [[], []]
            for j, metric in enumerate(names):
                est = data["metrics"].get(metric)
                if est is None or est.get("value") is None:
                    continue
                xs.append(j + (i - (len(runs) - 1) / 2) * width)
                ys.append(est["value"])
                low, high = est.get("low"), est.get("high")
                err[0].append(0.0 if low is None else max(0.0, est["value"] - low))
                err[1].append(0.0 if high is None else max(0.0, high - est["value"]))
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=run)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel("score")
        if title:
            ax.set_title(title)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)


def _write_atomic(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_report(
    results: Mapping[str, RetrievalResult | Mapping[str, Any]],
    out_dir: Path,
    *,
    name: str = "retrieval",
    title: str | None = None,
    meta: Mapping[str, Any] | None = None,
    plot: bool = True,
    notes: Sequence[str] = (),
) -> ReportFiles:
    """Write ``out_dir/{name}.json``, ``{name}.md`` and (if ``plot``) ``{name}.png``; each file atomically.

    ``meta`` (model, data set, machine...) is stored in the JSON next to the results; ``notes`` (e.g. gallery
    size and chance level per run) are lines printed under the Markdown table."""
    if not results:
        raise ValueError("no results to report")
    runs = {run: _as_dict(result, run) for run, result in results.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"title": title, "meta": dict(meta or {}), "results": runs}
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    text = json.dumps(payload, indent=1, allow_nan=False)
    _write_atomic(json_path, lambda p: p.write_text(text + "\n", encoding="utf-8"))
    table = markdown_table(runs, title)
    if notes:
        table += "\n" + "\n".join(notes) + "\n"
    _write_atomic(md_path, lambda p: p.write_text(table, encoding="utf-8"))
    png_path = None
    if plot:
        png_path = out_dir / f"{name}.png"
        _write_atomic(png_path, lambda p: plot_runs(runs, p, title))
    return ReportFiles(json_path, md_path, png_path)


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    """Read the ``results`` of a JSON report back (e.g. to merge runs into one table)."""
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(payload, Mapping) or not isinstance(payload.get("results"), Mapping):
        raise ValueError(f"{path} is not a retrieval report (no 'results' mapping)")
    return {run: _as_dict(data, run) for run, data in payload["results"].items()}


__all__ = ["ReportFiles", "format_value", "load_results", "markdown_table", "plot_runs", "write_report"]
