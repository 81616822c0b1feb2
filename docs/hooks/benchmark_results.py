"""MkDocs hook: the benchmark results page, built from `benchmarks/results/*.json` at build time.

`docs/reference/benchmark-results.md` holds the marker `<!-- benchmark-results -->`; it is replaced by a
summary table (one row per results file, its headline as the suite's SUMMARY.md gives it), then one section per
file with its plot (a matplotlib PNG drawn here) and every number it holds. No figure is copied into prose by
hand: rerun a benchmark and rebuild the site.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
PAGE = "reference/benchmark-results.md"
PLOTS = "reference/benchmark-plots"
MARKER = "<!-- benchmark-results -->"
_state: dict[str, str] = {}


def _results() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            out.append((path.stem, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise PluginError(f"benchmarks/results/{path.name}: not readable JSON ({exc})") from exc
    return out


def _kind(name: str, data: Mapping[str, Any]) -> str:
    """The benchmark a file holds: its `benchmark` field, else its name up to the first '-' (search-1m)."""
    return str(data.get("benchmark") or name.split("-")[0])


# ---- plots: one function per benchmark kind, each returning a matplotlib figure ----


def _bar(labels: list[str], values: list[float], xlabel: str, title: str, log: bool = False):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 0.4 * len(labels) + 1.4))
    ax.barh(labels[::-1], values[::-1], color="tab:blue")
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:,.0f}" if v >= 1000 else f" {v:.3g}", va="center", fontsize="small")
    ax.margins(x=0.15)  # room for the value labels
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _plot_encode(d: Mapping[str, Any]):
    rows = d.get("results", [])
    labels = [f"{r['model']} images" for r in rows] + [f"{r['model']} volumes" for r in rows]
    values = [r["images_per_s"] for r in rows] + [r["volumes_per_s"] for r in rows]
    return _bar(labels, values, "per second (log scale)", "encoder throughput", log=True)


def _plot_search(d: Mapping[str, Any]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for run in d.get("runs", []):
        if run.get("qps_batched") and run.get("recall_at_10") is not None:
            ax.scatter(run["qps_batched"], run["recall_at_10"], s=40)
            ax.annotate(f" {run['factory']} ({run['n']:,})", (run["qps_batched"], run["recall_at_10"]), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.4, y=0.1)  # room for the labels
    ax.set_xlabel("queries per second, batched (log scale)")
    ax.set_ylabel("recall@10 against exact search")
    ax.set_title("search: recall against speed")
    fig.tight_layout()
    return fig


def _plot_serve(d: Mapping[str, Any]):
    labels, values = [], []
    for out_dir, res in d.get("results", {}).items():
        for ph in res.get("phases", []):
            labels.append(f"{out_dir}: {ph['phase']}")
            values.append(ph["p99_ms"])
    return _bar(labels, values, "p99 latency (ms)", "serve under 16 clients: p99 per phase")


def _plot_phi(d: Mapping[str, Any]):
    recall = d.get("recall", {})
    return _bar(list(recall), [float(v) for v in recall.values()], "recall", "identifiers removed, by kind")


def _plot_read(d: Mapping[str, Any]):
    read = d.get("read", {})
    return _bar(list(read), [v["slices_per_s"] for v in read.values()], "slices per second", "read per worker")


def _plot_train(d: Mapping[str, Any]):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for part in ("synthetic", "vqa_rad"):
        history = (d.get(part) or {}).get("history", [])
        points = [(i, h["mAP"]) for i, h in enumerate(history) if h.get("mAP") is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=part)
    ax.set_xlabel("validation (one per epoch, both stages)")
    ax.set_ylabel("validation mAP")
    ax.set_title("training: validation mAP per epoch")
    ax.legend()
    fig.tight_layout()
    return fig


def _plot_index(d: Mapping[str, Any]):
    labels, values = [], []
    for run in d.get("runs", []):
        n = run.get("studies")
        labels += [f"{n} studies: end to end", f"{n} studies: raw encoder"]
        values += [run["end_to_end"]["items_per_s"], run["raw_encoder"]["items_per_s"]]
        if "ray" in run:
            labels.append(f"{n} studies: Ray engine")
            values.append(run["ray"]["items_per_s"])
    return _bar(labels, values, "items per second", f"index ({d.get('model')})")


PLOTTERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "encode_throughput": _plot_encode,
    "search": _plot_search,
    "serve_load": _plot_serve,
    "phi_recall": _plot_phi,
    "read_throughput": _plot_read,
    "train_quality": _plot_train,
    "index_throughput": _plot_index,
    "index_throughput_ray": _plot_index,
}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buf.getvalue()


# ---- tables ----


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every scalar of a JSON value with its dotted path (list items by index)."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield from _leaves(sub, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _leaves(sub, f"{path}.{i}")
    else:
        yield path, value


def _fmt(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    else:
        text = str(value)
    return " ".join(text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").split())


def _machine(d: Mapping[str, Any]) -> str:
    m = d.get("machine") or {}
    return _fmt(", ".join(f"{k} {v}" for k, v in m.items())) or "not recorded"


def _section(name: str, d: Mapping[str, Any], plot: str | None) -> list[str]:
    when = _fmt(d.get("when", "not recorded"))  # every value from a results file is escaped: none is trusted HTML
    lines = [f"## {name}", "", f"`benchmarks/results/{name}.json` · run {when} · "]
    lines[-1] += f"machine: {_machine(d)}"
    if d.get("command"):
        command = _fmt(d["command"]).replace("`", "'")  # stays one code span
        lines += ["", f"Command: `{command}`"]
    if d.get("note"):
        lines += ["", f"Note: {_fmt(d['note'])}"]
    lines.append("")
    if plot:
        lines += [f"![{name}](benchmark-plots/{name}.png)", ""]
    rows = [(k, v) for k, v in _leaves(d) if not k.startswith(("machine.", "benchmark", "when", "note", "command"))]
    lines += [f'??? note "Every number in {name}.json ({len(rows)})"', ""]
    lines += ["    | field | value |", "    | --- | --- |"]
    lines += [f"    | `{k}` | {_fmt(v)} |" for k, v in rows] + [""]
    return lines


def _get(d: Mapping[str, Any], path: str) -> Any:
    for key in path.split("."):
        d = d.get(key) if isinstance(d, Mapping) else None
    return d


# The multi-million-vector runs side by side: (row label, dotted path in index_10m*.json).
INDEX_10M_ROWS = [
    ("vectors", "build.count"),
    ("build command", "build.command"),
    ("plan", "build.factory"),
    ("build wall s", "build.build_s"),
    ("build CPU s", "build.cpu_s"),
    ("peak RSS of the build, MB (VmHWM)", "build.peak_rss_mb"),
    (
        "of it anonymous / file-backed, MB (sampled)",
        ("build.peak_rss_anon_mb_sampled", "build.peak_rss_file_mb_sampled"),
    ),
    ("shards / index file / re-rank store, MB", ("build.shards_mb", "build.index_file_mb", "build.store_mb")),
    ("recall@10 tuned at build", "build.recall_at_10_tuning"),
    ("recall@10 fresh item-like / text-like queries", ("search.tuned.recall_item", "search.tuned.recall_text")),
    ("QPS batched item-like / text-like", ("search.tuned.qps_batched_item", "search.tuned.qps_batched_text")),
    (
        "QPS batched, first pass",
        ("search.tuned_first_pass.qps_batched_item", "search.tuned_first_pass.qps_batched_text"),
    ),
    ("single query: QPS, p50 ms, p99 ms", ("search.qps_single", "search.p50_ms", "search.p99_ms")),
    ("add one shard: wall s, peak RSS MB", ("add.build_s", "add.peak_rss_mb")),
]


def _index_10m_table(results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    runs = [(n, d) for n, d in results if _kind(n, d) == "index_10m"]
    if not runs:
        return []
    lines = ["## index_10m runs side by side", "", "| | " + " | ".join(f"`{n}`" for n, _ in runs) + " |"]
    lines.append("| --- " * (len(runs) + 1) + "|")
    for label, paths in INDEX_10M_ROWS:
        cells = []
        for _, d in runs:
            values = [_get(d, p) for p in ((paths,) if isinstance(paths, str) else paths)]
            cells.append(" / ".join(_fmt(v) if v is not None else "-" for v in values))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def render(files=None, config=None) -> tuple[str, dict[str, bytes]]:
    """The page's Markdown and its PNGs (by file name)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import matplotlib

    matplotlib.use("Agg")
    from benchmarks.summary import headline

    results = _results()
    lines = ["| results file | benchmark | run | headline |", "| --- | --- | --- | --- |"]
    lines += [f"| [{n}](#{n}) | {_kind(n, d)} | {_fmt(d.get('when', ''))} | {_fmt(headline(d))} |" for n, d in results]
    lines.append("")
    lines += _index_10m_table(results)
    pngs: dict[str, bytes] = {}
    for name, data in results:
        plotter = PLOTTERS.get(_kind(name, data))
        if plotter is not None:
            pngs[f"{name}.png"] = _png(plotter(data))
        lines += _section(name, data, f"{name}.png" if plotter else None)
    return "\n".join(lines), pngs


def on_files(files, config):
    text, pngs = render()
    _state["markdown"] = text
    for fname, content in pngs.items():
        files.append(File.generated(config, f"{PLOTS}/{fname}", content=content))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE}: the marker {MARKER} is missing")
    return markdown.replace(MARKER, _state["markdown"])
