"""Render query results for the terminal (`table`), programs (`json`) and people (`html` contact sheet)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from indexers.search import Hit
from radretrieve.application.search_service import QueryResult, SearchService
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.lock import LOCK_FILE
from radretrieve.foundation.terminal import printable
from radretrieve.outdir.layout import OWNED

FORMATS = ("table", "json", "html")
TABLE_COLUMNS = ("rank", "score", "study", "modality", "description", "path")
CELL_LIMIT = 48  # characters per table cell; the full text is in the JSON and HTML output


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise RadRetrieveError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    return fmt


def _cell(value: str) -> str:
    one_line = " ".join(printable(str(value)).split())  # reports span lines; a table row must not
    return one_line if len(one_line) <= CELL_LIMIT else one_line[: CELL_LIMIT - 1] + "…"


def to_table(results: Sequence[QueryResult]) -> str:
    """Aligned plain-text columns; a `query:` line above each result when there are several queries."""
    lines: list[str] = []
    for result in results:
        if len(results) > 1:
            lines.append(f"query: {_cell(result.query)}")
        found_by = any(h.evidence is not None for h in result.hits)  # keyword and hybrid modes
        rows = [TABLE_COLUMNS + (("found by",) if found_by else ())] + [
            (
                str(h.rank),
                f"{h.score:.4f}",
                _cell(h.study_key),
                _cell(h.modality),
                _cell(h.description or h.text),
                _cell(h.source),
            )  # reports have no description: show their text
            + ((_evidence_cell(h),) if found_by else ())
            for h in result.hits
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
        if not result.hits:
            lines.append("(no results)")
        if len(results) > 1:
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _evidence_cell(hit: Hit) -> str:
    """ "exact, vector #3, keyword #1: chiari malform" (an exact match of a specific query, the ranks in each
    list, the query terms the hit matched)."""
    ev = hit.evidence
    if ev is None:
        return ""
    ranks = [f"{name} #{rank}" for name, rank in (("vector", ev.vector_rank), ("keyword", ev.keyword_rank)) if rank]
    ranks = ["exact", *ranks] if ev.exact_words else ranks
    terms = " ".join(ev.matched_terms)
    return _cell(", ".join(ranks) + (f": {terms}" if terms else ""))


def to_json(results: Sequence[QueryResult]) -> str:
    """`[{"query": ..., "hits": [{rank, score, item_id, kind, study_key, source, ...}]}]`.

    The format: docs/guide/search.md (Output)."""
    return json.dumps([r.to_json() for r in results], indent=1, ensure_ascii=False) + "\n"


def to_html(
    results: Sequence[QueryResult],
    title: str,
    service: SearchService,
    archive: Path | None,
    show_burned_in: bool = False,
) -> str:
    """The contact sheet (radretrieve.application.contact_sheet), thumbnails read from the archive root;
    images flagged burned_in are withheld unless `show_burned_in`."""
    from radretrieve.application.contact_sheet import render, sheet_notice
    from radretrieve.outdir.archive_root import archive_root

    root = archive_root(service.out_dir, archive)
    withheld = None if show_burned_in else service.preview_withheld
    notice = sheet_notice(service.out_dir)
    return render([(r.query, r.hits) for r in results], title, root, service.preview_source, withheld, notice)


def render_results(
    fmt: str,
    results: Sequence[QueryResult],
    title: str,
    service: SearchService,
    archive: Path | None = None,
    show_burned_in: bool = False,
) -> str:
    if fmt == "json":
        return to_json(results)
    if fmt == "html":
        return to_html(results, title, service, archive, show_burned_in)
    return to_table(results)


def check_out_path(out: Path, out_dir: Path) -> None:
    """Refuse an `--out` that would overwrite a file the out dir owns (manifest, shards, index, ...)."""
    target, root = Path(out).resolve(), Path(out_dir).resolve()
    try:
        rel = target.relative_to(root)
    except ValueError:
        return
    if rel.parts and rel.parts[0] in (*OWNED, LOCK_FILE):
        raise RadRetrieveError(f"--out {out}: refusing to overwrite {rel.as_posix()}, a file of the out dir {out_dir}")


def write_output(text: str, out: Path | None, out_dir: Path | None = None) -> bool:
    """Write to `out` atomically and return True, or return False (the caller prints to stdout)."""
    if out is None:
        return False
    from radretrieve.foundation.fileio import atomic_write_bytes

    if out_dir is not None:
        check_out_path(out, out_dir)
    try:
        atomic_write_bytes(Path(out), text.encode("utf-8"))
    except OSError as exc:
        raise RadRetrieveError(f"--out {out}: cannot write ({exc.strerror or type(exc).__name__})") from None
    return True
