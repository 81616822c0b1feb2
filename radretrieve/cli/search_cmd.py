"""`build-index`, `search`, `reports`, `similar`: thin commands over `radretrieve.application.search_service`.

Everything heavy (torch, faiss, duckdb) is imported inside the commands, so `radretrieve --help` stays fast.
Results go to stdout (or `--out FILE`); logs and the "wrote FILE" note go to stderr.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from radretrieve.cli.options import MODEL_RULES
from radretrieve.cli.output import say, say_as, say_json

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

INDEX_OPT = typer.Option(..., "--index", "-i", help="Out dir with shards and index/ (from `radretrieve index`).")
FORMAT_HELP = "table | json | html (html: a self-contained contact sheet with thumbnails; use with --out)."
MODEL_HELP = "Override the out dir's model (must have the same fingerprint). " + MODEL_RULES
ARCHIVE_HELP = "Archive root for thumbnails (default: the root recorded in OUT/archive.json)."
# Options shared by search, reports and similar (Typer reads each default's OptionInfo; reuse is safe).
FORMAT_OPT = typer.Option("table", "--format", "-f", help=FORMAT_HELP)
OUT_OPT = typer.Option(None, "--out", "-o", help="Write the output here instead of stdout.")
MODEL_OPT = typer.Option(None, "--model", "-m", help=MODEL_HELP)
WEIGHTS_OPT = typer.Option(None, "--weights", "-w", help="Weights for --model.")
ARCHIVE_OPT = typer.Option(None, "--archive", help=ARCHIVE_HELP)
WHERE_TIMEOUT_OPT = typer.Option(5.0, "--where-timeout", help="Seconds a --where filter may run (then it stops).")
MODE_OPT = typer.Option(
    None,
    "--mode",
    help="vector (embeddings) | keyword (full-text, BM25) | hybrid (both, reciprocal rank fusion). "
    "Default: hybrid where the out dir has a full-text index, else vector.",
    show_default=False,
)
SHOW_BURNED_IN_OPT = typer.Option(
    False, "--show-burned-in", help="html: also draw images flagged as possibly carrying burned-in text (patient data)."
)


def parse_size(text: str) -> int:
    """'4G', '512MiB', '1.5g', '1000000' -> bytes."""
    from radretrieve.foundation.errors import RadRetrieveError

    m = _SIZE.match(text)
    if m is None or float(m.group(1)) <= 0:
        raise RadRetrieveError(f"--max-memory {text!r}: give a size such as 4G, 512M or a byte count")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def build_index(
    out_dir: Path = typer.Argument(..., help="Out dir written by `radretrieve index`."),
    max_memory: str = typer.Option("4G", "--max-memory", help="Memory budget for the index and the build (e.g. 4G)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build from scratch instead of adding new shards."),
    wait: float = typer.Option(0.0, "--wait", help="Seconds to wait for another job writing the out dir."),
    as_json: bool = typer.Option(False, "--json", help="Print each index's type, count and recalls as JSON."),
) -> None:
    """Build or update the FAISS indexes (items, reports) of an out dir; incremental unless --rebuild."""
    from indexers.build import BuildConfig, build_indexes
    from indexers.errors import IndexMissing

    if not out_dir.is_dir():
        raise IndexMissing(f"{out_dir}: no such directory")
    infos = build_indexes(out_dir, BuildConfig(max_memory=parse_size(max_memory), rebuild=rebuild, wait=wait))
    echo_indexes(infos, as_json)


def echo_indexes(infos: dict[str, Any], as_json: bool = False) -> None:
    """One line per index (type, count, recall@10 per query type), or one JSON object."""
    import json

    if as_json:
        keys = ("index_type", "factory", "count", "search_params", "recall_at_10", "recall_by_query", "build_seconds")
        say_json(json.dumps({"indexes": {n: {k: i.to_json()[k] for k in keys} for n, i in infos.items()}}))
        return
    for name, info in infos.items():
        recalls = ", ".join(
            f"{query} {r.recall_at_10:.3f}" + (f" ({r.queries} queries)" if r.queries else "")
            for query, r in info.recall_by_query.items()
        )
        say(
            f"index {name}: {info.plan.index_type}, {info.count} vectors, recall@10 "
            + (recalls or f"{info.recall_at_10:.3f}")
        )


@dataclass(frozen=True)
class Run:
    """What every query command shares: which out dir and model, and where the output goes."""

    index: Path  # out dir
    model: str | None  # override model (fingerprint-checked), None: the out dir's own
    weights: str | None  # weights for the override
    fmt: str  # table | json | html
    out: Path | None  # output file, None: stdout
    archive: Path | None  # archive root for thumbnails, None: OUT/archive.json
    where_timeout: float = 5.0  # seconds a --where filter may run
    show_burned_in: bool = False  # html: draw images flagged burned_in too

    def check(self, k: int) -> None:
        """Argument errors first: before a model or an index is loaded."""
        from radretrieve.application.render import check_format, check_out_path
        from radretrieve.application.search_service import check_k

        check_k(k)
        check_format(self.fmt)
        if self.out is not None:
            check_out_path(self.out, self.index)

    def __call__(self, title: str, query: Callable[[Any], list]) -> None:
        """Open the service, run `query(service) -> [QueryResult]`, write the results."""
        from radretrieve.application.render import render_results, write_output
        from radretrieve.application.search_service import SearchService

        service = SearchService(self.index, self.model, self.weights, where_timeout=self.where_timeout)
        try:
            text = render_results(self.fmt, query(service), title, service, self.archive, self.show_burned_in)
        finally:
            service.close()
        if write_output(text, self.out, self.index):
            say(f"wrote {self.out}", err=True)
        else:
            say_as(text, self.fmt, nl=False)


def search(
    text: str | None = typer.Argument(None, help="What to look for, e.g. 'ct abdomen hypodense lesion'."),
    index: Path = INDEX_OPT,
    k: int = typer.Option(10, "-k", help="Results per query (1 to 10000)."),
    where: str | None = typer.Option(None, "--where", help="SQL filter on the items view: \"modality = 'CT'\"."),
    kind: str | None = typer.Option(None, "--kind", help="volume | image"),
    fmt: str = FORMAT_OPT,
    out: Path | None = OUT_OPT,
    query_file: Path | None = typer.Option(None, "--query-file", help="Queries, one per line ('-': stdin)."),
    model: str | None = MODEL_OPT,
    weights: str | None = WEIGHTS_OPT,
    archive: Path | None = ARCHIVE_OPT,
    where_timeout: float = WHERE_TIMEOUT_OPT,
    show_burned_in: bool = SHOW_BURNED_IN_OPT,
    mode: str | None = MODE_OPT,
) -> None:
    """Text -> studies: the images and volumes nearest to the query text (or matching its words: --mode)."""
    from radretrieve.application.search_service import check_mode, read_query_file
    from radretrieve.foundation.errors import RadRetrieveError

    run = Run(index, model, weights, fmt, out, archive, where_timeout, show_burned_in)
    run.check(k)
    check_mode(mode)
    texts = ([text] if text else []) + (read_query_file(query_file) if query_file is not None else [])
    if not texts:
        raise RadRetrieveError("give the query TEXT or --query-file FILE")
    run("radretrieve search", lambda service: service.search_text(texts, k, kind=kind, where=where, mode=mode))


STUDY_HELP = "Item id, study key/UID, or a DICOM file, series folder, NIfTI or image to encode on the fly."


def reports(
    study: str = typer.Argument(..., help=STUDY_HELP),
    index: Path = INDEX_OPT,
    k: int = typer.Option(5, "-k", help="Reports to return (1 to 10000)."),
    where: str | None = typer.Option(None, "--where", help="SQL filter on the reports view."),
    fmt: str = FORMAT_OPT,
    out: Path | None = OUT_OPT,
    model: str | None = MODEL_OPT,
    weights: str | None = WEIGHTS_OPT,
    archive: Path | None = ARCHIVE_OPT,
    where_timeout: float = WHERE_TIMEOUT_OPT,
    show_burned_in: bool = SHOW_BURNED_IN_OPT,
    mode: str | None = MODE_OPT,
) -> None:
    """Study -> the nearest reports (keyword evidence: the study's description, body part and labels; --mode)."""
    from radretrieve.application.search_service import check_mode

    run = Run(index, model, weights, fmt, out, archive, where_timeout, show_burned_in)
    run.check(k)
    check_mode(mode)
    run("radretrieve reports", lambda service: [service.reports(study, k, where=where, mode=mode)])


def similar(
    study: str = typer.Argument(..., help=STUDY_HELP),
    index: Path = INDEX_OPT,
    k: int = typer.Option(10, "-k", help="Studies to return (1 to 10000)."),
    where: str | None = typer.Option(None, "--where", help="SQL filter on the items view."),
    kind: str | None = typer.Option(None, "--kind", help="volume | image"),
    fmt: str = FORMAT_OPT,
    out: Path | None = OUT_OPT,
    model: str | None = MODEL_OPT,
    weights: str | None = WEIGHTS_OPT,
    archive: Path | None = ARCHIVE_OPT,
    where_timeout: float = WHERE_TIMEOUT_OPT,
    show_burned_in: bool = SHOW_BURNED_IN_OPT,
) -> None:
    """Study -> similar studies: one hit per study, the query's own study left out."""
    run = Run(index, model, weights, fmt, out, archive, where_timeout, show_burned_in)
    run.check(k)
    run("radretrieve similar", lambda service: [service.similar(study, k, kind=kind, where=where)])


def register(app: typer.Typer) -> None:
    app.command("build-index")(build_index)
    app.command("search")(search)
    app.command("reports")(reports)
    app.command("similar")(similar)
