"""The suite's outputs: ``suite.json`` (every entry), ``SUMMARY.md`` (one row per benchmark with its headline
numbers and the machine) and ``suite.png`` (wall time per benchmark, coloured by outcome)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.suite import SuiteEntry, entry_dict
from radretrieve.foundation.fileio import atomic_path, atomic_write_text

# Leaf names worth showing first in a headline: rates, recall/precision, ratios.
_PREFERRED = re.compile(r"per_s|qps|recall|precision|map|mrr|ratio|speedup", re.IGNORECASE)
_SKIP_KEYS = {"benchmark", "when", "machine", "meta", "low", "high", "n_bootstrap", "seed", "confidence"}
HEADLINE_ITEMS = 4
COLOURS = {"ok": "tab:green", "failed": "tab:red", "timeout": "tab:orange", "skipped": "tab:gray"}


def _leaves(data: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], float]]:
    """Numeric leaves of a JSON value, depth first, with their key paths (list items as their index)."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            if str(key) not in _SKIP_KEYS:
                yield from _leaves(value, (*path, str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _leaves(value, (*path, str(i)))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        yield path, float(data)


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _retrieval_headline(results: Mapping[str, Any]) -> str:
    """bench_report payloads: recall@1 and mAP of each run."""
    parts = []
    for run, data in results.items():
        metrics = data.get("metrics", {})
        shown = [
            f"{m} {_fmt(metrics[m]['value'])}"
            for m in ("recall@1", "mAP")
            if metrics.get(m, {}).get("value") is not None
        ]
        parts.append(f"{run}: " + ", ".join(shown))
    return "; ".join(parts)


def headline(payload: Mapping[str, Any]) -> str:
    """A few numbers that say what a benchmark found: rates and precision first, then whatever comes first."""
    results = payload.get("results")
    if (
        isinstance(results, Mapping)
        and results
        and all(isinstance(v, Mapping) and "metrics" in v for v in results.values())
    ):
        return _retrieval_headline(results)
    if isinstance(payload.get("headline"), str):  # a benchmark may say it itself
        return payload["headline"]
    leaves = list(_leaves(payload))
    chosen = [leaf for leaf in leaves if _PREFERRED.search(leaf[0][-1])] or leaves
    return ", ".join(f"{'.'.join(p[-2:])} {_fmt(v)}" for p, v in chosen[:HEADLINE_ITEMS])


def _machine_line(machine: Mapping[str, Any]) -> str:
    gpu = machine.get("gpu") or "no GPU"
    return (
        f"{machine.get('cpus')} CPUs ({machine.get('machine')}), {gpu}, Python {machine.get('python')}, "
        f"torch {machine.get('torch', '-')}"
    )


def markdown(entries: Sequence[SuiteEntry], machine: Mapping[str, Any], quick: bool, when: str) -> str:
    """The SUMMARY.md table."""
    mode = "quick" if quick else "full"
    lines = [
        "# Benchmark summary",
        "",
        f"Run {when} ({mode} sizes) on {_machine_line(machine)}.",
        "",
        "| benchmark | what | status | seconds | headline |",
        "|---|---|---|---|---|",
    ]
    for e in entries:
        text = headline(e.payload) if e.status == "ok" else e.reason
        text = text.replace("|", "\\|").replace("\n", " ")
        seconds = f"{e.seconds:.1f}" if e.status != "skipped" else "-"
        lines.append(f"| {e.name} | {e.what} | {e.status} | {seconds} | {text} |")
    lines += ["", "Each benchmark's numbers: `NAME.json` beside this file; its output: `logs/NAME.log`."]
    return "\n".join(lines) + "\n"


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def plot(entries: Sequence[SuiteEntry], path: Path) -> Path | None:
    """Horizontal bars of wall time per benchmark; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(entries) + 1.2))
    try:
        names = [e.name for e in entries][::-1]
        secs = [e.seconds for e in entries][::-1]
        ax.barh(names, secs, color=[COLOURS[e.status] for e in entries][::-1])
        for y, e in enumerate(entries[::-1]):
            ax.text(e.seconds, y, f" {e.status}", va="center", fontsize="small")
        ax.set_xlabel("wall time (s)")
        ax.set_title("benchmark suite")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path


def write_outputs(
    entries: Sequence[SuiteEntry], results: Path, machine: Mapping[str, Any], quick: bool
) -> dict[str, Path]:
    """suite.json, SUMMARY.md and suite.png in ``results``; returns their paths by kind."""
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    payload = {
        "benchmark": "suite",
        "when": when,
        "machine": dict(machine),
        "quick": quick,
        "entries": [entry_dict(e) for e in entries],
    }
    paths = {"json": results / "suite.json", "markdown": results / "SUMMARY.md"}
    _atomic_text(paths["json"], json.dumps(payload, indent=1) + "\n")
    _atomic_text(paths["markdown"], markdown(entries, machine, quick, when))
    png = plot(entries, results / "suite.png")
    if png is not None:
        paths["png"] = png
    return paths
