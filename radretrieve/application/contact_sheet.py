"""The HTML contact sheet of `--format html`: one self-contained file, viewable offline.

Thumbnails are embedded as base64 PNG data URIs and the CSS is inline, so the file opens from a USB
stick or an e-mail attachment with no server and no network. Every hit is one `<figure class="hit">`
with exactly one `<img class="thumb">` (volumes: a strip of a few sampled slices in one PNG; sources
that cannot be found: a grey "no preview" tile). All text is HTML-escaped. Only shard fields are shown,
and the shards hold no patient identifiers (docs/guide/patient-data.md). Images flagged `burned_in` (they may
carry text such as the patient's name in their pixels) are never drawn: their tile is the grey placeholder with
alt "withheld", unless `--show-burned-in` is given (the same contract as `radretrieve serve`).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexers.search import Hit
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.outdir.anonymise import read_sources
from radretrieve.outdir.manifest import read_manifest

log = logging.getLogger(__name__)

THUMB_HEIGHT = 128  # pixels; slices are scaled to this height, keeping their aspect ratio
THUMB_SLICES = 3  # slices sampled from a volume for its strip
GAP = 2  # pixels between the slices of a strip
TEXT_LIMIT = 2000  # characters of report text shown per hit

PreviewSource = Callable[[Hit], str]  # hit -> source path relative to the archive root ("" if none)
Withheld = Callable[[Hit], bool]  # hit -> its preview would draw an image flagged burned_in
WITHHELD_ALT = "withheld: may carry burned-in text"
BURNED_IN = "burned_in"  # the flag column (radretrieve.outdir.catalog.OPTIONAL_COLUMNS)

# Long unbroken values (a hashed study key, a deep path, one long token in a report) wrap anywhere inside the
# card, and the study key is cut with an ellipsis (its full text in the tooltip): nothing leaves its card.
_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;background:#f4f4f4;color:#222}
h1{font-size:18px;margin:0 0 4px;overflow-wrap:anywhere}
section.query{margin-bottom:24px}
.q{font-size:15px;background:#fff;border-left:4px solid #2a6fb0;padding:6px 10px;white-space:pre-wrap;
  overflow-wrap:anywhere}
.grid{display:flex;flex-wrap:wrap;gap:12px;margin-top:10px}
figure.hit{background:#fff;border:1px solid #ccc;border-radius:4px;margin:0;padding:8px;width:360px;max-width:100%;
  box-sizing:border-box;min-width:0}
figure.hit img{display:block;max-width:100%;background:#000;image-rendering:auto}
figcaption{font-size:12px;margin-top:6px;overflow-wrap:anywhere}
.meta b{color:#2a6fb0}
.key{display:inline-block;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;vertical-align:bottom}
.notice{background:#fff3cd;border:1px solid #c9a227;border-radius:4px;padding:8px 12px;font-weight:600}
.report{white-space:pre-wrap;color:#444;margin-top:4px;max-height:9em;overflow:auto}
"""


def slice_strip(slices: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 [H, W] slices -> one uint8 [THUMB_HEIGHT, W'] strip, side by side with a black gap."""
    from PIL import Image

    parts = []
    for s in slices:
        img = Image.fromarray(np.ascontiguousarray(s, dtype=np.uint8))
        width = max(1, round(img.width * THUMB_HEIGHT / max(img.height, 1)))
        parts.append(np.asarray(img.resize((width, THUMB_HEIGHT), Image.BILINEAR)))
        parts.append(np.zeros((THUMB_HEIGHT, GAP), np.uint8))
    return np.concatenate(parts[:-1], axis=1) if parts else placeholder()


def placeholder() -> np.ndarray:
    """A grey tile with a darker cross, for hits whose source cannot be read (no text: no fonts needed)."""
    tile = np.full((THUMB_HEIGHT, THUMB_HEIGHT), 200, np.uint8)
    idx = np.arange(THUMB_HEIGHT)
    tile[idx, idx] = tile[idx, THUMB_HEIGHT - 1 - idx] = 120
    return tile


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 [H, W] -> the bytes of a greyscale PNG file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def png_data_uri(image: np.ndarray) -> str:
    """uint8 [H, W] -> 'data:image/png;base64,...'."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def thumbnail(root: Path | None, source: str, n: int = THUMB_SLICES) -> tuple[np.ndarray, bool]:
    """(image uint8 [H, W], found): the windowed slice strip of `source` under `root`, or the placeholder."""
    if root is None or not source:
        return placeholder(), False
    from radretrieve.application.query_path import item_at
    from radretrieve.archive import thumbnail_slices

    try:
        found = item_at(root, source)
        if found is None:
            log.warning("no preview for an item: not found under the archive root")
            return placeholder(), False
        item, item_root = found
        return slice_strip(thumbnail_slices(item, item_root, n=n)), True
    except (RadRetrieveError, OSError, ValueError) as exc:  # a preview must never sink the whole sheet
        # `source` may be the real path of an anonymised out dir: the log names the problem, not the file
        log.warning("no preview for an item: %s", type(exc).__name__)
        return placeholder(), False


def _figure(hit: Hit, image: np.ndarray, found: bool, withheld: bool = False) -> str:
    e = html.escape
    text = hit.text if len(hit.text) <= TEXT_LIMIT else hit.text[:TEXT_LIMIT] + "…"
    alt = WITHHELD_ALT if withheld else "preview" if found else "no preview"
    meta = (
        f"<b>#{hit.rank}</b> score {hit.score:.4f} · {e(hit.kind)} · {e(hit.modality or '?')}"
        f" {e(hit.body_part)}<br>study {_key(hit.study_key)}"
        + (f"<br>{e(hit.description)}" if hit.description else "")
        + (f"<br><small>{e(hit.source)}</small>" if hit.source else "")
    )
    report = f'<div class="report">{e(text)}</div>' if text else ""
    return (
        f'<figure class="hit" data-rank="{hit.rank}" data-item-id="{hit.item_id}">'
        f'<img class="thumb" alt="{alt}" src="{png_data_uri(image)}">'
        f'<figcaption><div class="meta">{meta}</div>{report}</figcaption></figure>'
    )


def _key(key: str) -> str:
    """A study key on one line, cut with an ellipsis when longer than the card; the whole key in `title`
    (the tooltip) and in the text (find in page, copy)."""
    return f'<span class="key" title="{html.escape(key)}">{html.escape(key)}</span>'


def render(
    results: Sequence[tuple[str, Sequence[Hit]]],
    title: str,
    root: Path | None,
    source_of: PreviewSource,
    withheld: Withheld | None = None,
    notice: str | None = None,
) -> str:
    """The contact sheet for `results` ((query, hits) pairs) as one HTML document string; `withheld` hits
    get the placeholder, their source is not even read. `notice`: a banner above the results (an untrained
    model: `sheet_notice`)."""
    e = html.escape
    sections = []
    for query, hits in results:
        figures = [
            _figure(h, placeholder(), False, True)
            if withheld and withheld(h)
            else _figure(h, *thumbnail(root, source_of(h)))
            for h in hits
        ]
        body = "".join(figures) if figures else "<p>No results.</p>"
        sections.append(
            f'<section class="query"><div class="q">{e(query)}</div>'
            f'<p>{len(hits)} result(s)</p><div class="grid">{body}</div></section>'
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{e(title)}</h1>"
        + (f'<p class="notice" role="alert">{e(notice)}</p>' if notice else "")
        + f"{''.join(sections)}</body></html>\n"
    )


def write_contact_sheet(
    path: Path,
    out_dir: Path,
    query: str,
    hits: Sequence[Hit],
    archive: Path | None = None,
    title: str = "radretrieve search",
    show_burned_in: bool = False,
) -> Path:
    """Write the sheet of one query's hits to `path` (atomically); sources are read from the out dir's
    archive root (OUT/archive.json) or `archive`. Returns `path`."""
    from radretrieve.foundation.fileio import atomic_write_bytes
    from radretrieve.outdir.archive_root import archive_root
    from radretrieve.outdir.catalog import Catalog

    root = archive_root(Path(out_dir), archive)
    real = read_sources(out_dir) if read_manifest(out_dir).anonymised else {}
    flagged: frozenset[int] = frozenset()
    if not show_burned_in:
        cat = Catalog(Path(out_dir))
        try:
            flagged = flagged_ids(cat)
        finally:
            cat.close()
    source_of = lambda h: real.get(h.item_id, h.source)  # noqa: E731
    sheet = render([(query, hits)], title, root, source_of, lambda h: h.item_id in flagged, sheet_notice(out_dir))
    atomic_write_bytes(Path(path), sheet.encode("utf-8"))
    return Path(path)


def sheet_notice(out_dir: Path) -> str | None:
    """The banner of a sheet whose hits came from an untrained model (as the web page shows it); None else."""
    from radretrieve.models.provenance import untrained_banner
    from radretrieve.outdir.model_ref import recorded_model

    recorded = recorded_model(Path(out_dir))
    return None if recorded.provenance.trained else untrained_banner(recorded.name)


def flagged_ids(catalog: Any) -> frozenset[int]:
    """Ids of the images flagged `burned_in` in a catalog (none when its shards have no such column; NULL, a
    shard written before the flag existed, counts as unflagged)."""
    if BURNED_IN not in catalog.columns("items"):
        return frozenset()
    return frozenset(int(r[0]) for r in catalog.sql(f"SELECT item_id FROM items WHERE {BURNED_IN}"))
