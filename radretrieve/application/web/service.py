"""What the web service answers, as plain methods over one out dir, loaded once at start-up.

`WebService` wraps the CLI's `SearchService`, so a hit here is the hit `--format json` prints (same fields,
order and scores). What differs from the CLI, on purpose:

* study references are item ids or study keys only: a path is never read (no file access from a request);
* `where` (user SQL) can be turned off; `modality` / `body_part` are equality filters the server quotes itself,
  so the page's filters work either way;
* thumbnails are drawn only for item ids in the index, never for images flagged `burned_in` (unless the
  server runs with --show-burned-in);
* error messages name "the index" instead of the server's folder.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from indexers.fulltext import read_fulltext_json
from indexers.search import MODES, Hit
from radretrieve.application.contact_sheet import png_bytes, thumbnail
from radretrieve.application.info import collect_info
from radretrieve.application.search_service import (
    MAX_K,
    QueryResult,
    SearchService,
    check_k,
    check_mode,
    study_keywords,
)
from radretrieve.application.web.batching import TextBatcher
from radretrieve.application.web.config import ServeConfig
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.ids import is_item_id, parse_item_id
from radretrieve.models.provenance import untrained_banner
from radretrieve.outdir.anonymise import read_sources
from radretrieve.outdir.archive_root import archive_root
from radretrieve.outdir.catalog import VIEW_KINDS, parse_labels
from radretrieve.outdir.manifest import read_manifest

log = logging.getLogger(__name__)

BURNED_IN = "burned_in"  # the flag column (radretrieve.outdir.catalog.OPTIONAL_COLUMNS)


class ItemNotFound(RadRetrieveError):
    """An item id that is not in the index."""


class BadItemId(RadRetrieveError):
    """A route's item id that is not one spelled in ASCII digits (`1_000`, `+5`, `5.0`, `abc`): 422."""


_INTEGER = re.compile(r"-?[0-9]+")


def route_item_id(text: str) -> int:
    """The item id of a route's path segment, read by `parse_item_id` as everywhere else. An integer out of the
    id range (`-1`, 30 digits) is an unknown item (404); anything else that is no id is `BadItemId` (422)."""
    value = parse_item_id(text)
    if value is not None:
        return value
    if _INTEGER.fullmatch(text):
        raise ItemNotFound(f"item {int(text)} is not in the index")
    raise BadItemId("item_id: not an item id (ASCII digits only)")


class PreviewWithheld(RadRetrieveError):
    """The item may carry burned-in text (patient data): its pixels are never shown."""


class WhereDisabled(RadRetrieveError):
    """The server runs with --no-where."""


class PngCache:
    """Recently drawn thumbnails (item id -> PNG bytes), least recently used dropped past `budget` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._data: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: int) -> bytes | None:
        with self._lock:
            png = self._data.get(key)
            if png is not None:
                self._data.move_to_end(key)
            return png

    def put(self, key: int, png: bytes) -> None:
        with self._lock:
            if key in self._data or len(png) > self.budget:
                return
            self._data[key] = png
            self._bytes += len(png)
            while self._bytes > self.budget:
                _, old = self._data.popitem(last=False)
                self._bytes -= len(old)


def limit_threads(n: int) -> None:
    """torch's and faiss's intra-op threads per call (ServeConfig.threads)."""
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class WebService:
    """The model's text tower, the indexes and the catalog of one out dir, ready before the first request."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.out_dir = Path(config.out_dir)
        limit_threads(config.threads)
        # the untrained-model warning is `serve`'s, once for all worker processes (radretrieve.application.web.app)
        self.search = SearchService(self.out_dir, resident=True, where_memory_mb=config.where_memory_mb, warn=False)
        self.searcher = self.search.searcher
        self.catalog = self.searcher.catalog
        for name in self.searcher.infos:  # open every index now, not on the first request
            self.searcher.index(name)
        if read_fulltext_json(self.out_dir) is not None:  # and the keyword index (out dirs built before it lack it)
            _ = self.searcher.keywords
        self.search.text_encoder()
        self.batcher = TextBatcher(self.search.encode_text, config.max_text_batch)
        self.batcher.encode("warm up")  # the first encoder call pays for lazy set-up
        self.root = archive_root(self.out_dir)
        self.columns = {view: self.catalog.columns(view) for view in VIEW_KINDS}
        # pixels never shown: the items flagged as possibly carrying burned-in text
        self.withheld = frozenset() if config.show_burned_in else self._flagged_ids()
        self.real_sources = read_sources(self.out_dir) if read_manifest(self.out_dir).anonymised else {}
        if config.show_burned_in:
            log.warning("--show-burned-in: images flagged as possibly carrying burned-in text are shown")
        self.model = self.search.model_json  # as in the CLI's JSON output
        self.info = self._public_info()
        self.options = self._options()
        self.thumbs = PngCache(config.thumbnail_cache_bytes)
        log.info(
            "serving %s: %d items, %d reports, %d withheld (burned-in text)",
            self.out_dir.name,
            self._count("items"),
            self._count("reports"),
            len(self.withheld),
        )

    def _count(self, index: str) -> int:
        info = self.searcher.infos.get(index)
        return info.count if info is not None else 0

    def close(self) -> None:
        self.batcher.close()
        self.search.close()

    # -- start-up ----------------------------------------------------------------------------------------
    def _flagged_ids(self) -> frozenset[int]:
        """Items flagged as possibly carrying burned-in text (none when the shards have no such column)."""
        if BURNED_IN not in self.columns["items"]:
            return frozenset()
        # NULL (a shard written before the flag existed) counts as unflagged, as in an out dir without the column
        return frozenset(int(r[0]) for r in self.catalog.sql(f"SELECT item_id FROM items WHERE {BURNED_IN}"))

    def _public_info(self) -> dict[str, Any]:
        """`radretrieve info`, without the server's folders: the out dir by name, a weights file by name."""
        info = collect_info(self.out_dir)
        info["out_dir"] = self.out_dir.name
        model = dict(info.get("model") or {})
        if model.get("weights"):
            model["weights"] = Path(str(model["weights"])).name
        info["model"] = model
        return info

    def _page_model(self) -> dict[str, Any]:
        """The model as the page's options carry it: for an untrained one also the sentence the page shows as its
        banner (`notice`), so the page says what the server knows instead of judging for itself."""
        recorded = self.search.recorded
        return self.model | ({} if recorded.provenance.trained else {"notice": untrained_banner(recorded.name)})

    def _options(self) -> dict[str, Any]:
        """What the page's filter controls offer."""

        def distinct(column: str) -> list[str]:
            rows = self.catalog.sql(
                f"SELECT DISTINCT {column} FROM items WHERE coalesce({column}, '') <> '' ORDER BY 1"
            )
            return [r[0] for r in rows]

        return {
            "kinds": list(VIEW_KINDS["items"]),
            "modalities": distinct("modality"),
            "body_parts": distinct("body_part"),
            "where": self.config.allow_where,
            "max_k": MAX_K,
            "modes": list(MODES),
            "mode": self.search.mode(None),
            "model": self._page_model(),
        }

    def health(self) -> dict[str, Any]:
        stats = self.batcher.stats
        return {
            "status": "ready",
            "items": self._count("items"),
            "reports": self._count("reports"),
            "fingerprint": self.searcher.fingerprint,
            "model": self.model,
            "text_encoder": {"texts": stats.texts, "calls": stats.calls, "largest_batch": stats.largest},
        }

    # -- queries -----------------------------------------------------------------------------------------
    def _where(self, where: str | None, modality: str | None, body_part: str | None) -> str | None:
        """The catalog filter: the user's SQL (if allowed) AND the server-quoted equality filters."""
        parts = []
        if where is not None and where.strip():
            if not self.config.allow_where:
                raise WhereDisabled("where filters are turned off on this server (--no-where)")
            parts.append(f"({where.strip()})")  # the whole filter is checked by the catalog (outdir.where)
        for column, value in (("modality", modality), ("body_part", body_part)):
            if value:
                parts.append(f"{column} = {_quote(value)}")
        return " AND ".join(parts) or None

    def search_text(
        self,
        q: str,
        k: int = 10,
        kind: str | None = None,
        where: str | None = None,
        modality: str | None = None,
        body_part: str | None = None,
        mode: str | None = None,
    ) -> dict[str, Any]:
        """Text -> images and volumes: `{"query", "hits"}` as in `radretrieve search --format json --mode MODE`."""
        check_k(k)
        mode = self.search.mode(check_mode(mode))
        if not q.strip():
            raise RadRetrieveError("empty query text")
        flt = self._where(where, modality, body_part)
        vector = self.batcher.encode(q) if mode != "keyword" else None
        hits = self.search.text_hits([q], vector, k, mode=mode, kind=kind or None, where=flt)[0]
        return QueryResult(q, tuple(hits), self.model).to_json()

    def similar(
        self,
        study: str,
        k: int = 10,
        kind: str | None = None,
        where: str | None = None,
        modality: str | None = None,
        body_part: str | None = None,
    ) -> dict[str, Any]:
        """Study -> similar studies, as `radretrieve similar --format json`."""
        check_k(k)
        flt = self._where(where, modality, body_part)
        query = self.searcher.resolve(study)  # item id or study key only: never a path
        hits: list[Hit] = self.searcher.similar(query, k, kind=kind or None, where=flt)
        return QueryResult(study, tuple(hits), self.model).to_json()

    def reports(self, study: str, k: int = 5, where: str | None = None, mode: str | None = None) -> dict[str, Any]:
        """Study -> nearest reports, as `radretrieve reports --format json --mode MODE`."""
        check_k(k)
        mode = self.search.mode(check_mode(mode))
        flt = self._where(where, None, None)
        query = self.searcher.resolve(study)  # item id or study key only: never a path
        if mode == "vector":
            return QueryResult(study, tuple(self.searcher.reports_for(query, k, where=flt)), self.model).to_json()
        text = study_keywords(self.searcher, query)
        if mode == "keyword" and not text.strip():
            raise RadRetrieveError(f"{study!r}: no stored description, body part or labels to search reports by")
        hits = self.search.text_hits([text], query.vector[None, :], k, mode=mode, index="reports", where=flt)[0]
        return QueryResult(study, tuple(hits), self.model).to_json()

    # -- items and thumbnails ----------------------------------------------------------------------------
    def item(self, item_id: int) -> dict[str, Any]:
        """The catalog row of an item or report (every view column; `labels` parsed; no embedding)."""
        self._check_id(item_id)
        for view in VIEW_KINDS:
            cols = self.columns[view]
            rows = self.catalog.sql(f"SELECT {', '.join(cols)} FROM {view} WHERE item_id = ?", [int(item_id)])
            if rows:
                row = dict(zip(cols, rows[0]))
                row["labels"] = parse_labels(row.get("labels"))
                return row
        raise ItemNotFound(f"item {item_id} is not in the index")

    def thumbnail_png(self, item_id: int) -> bytes:
        """The windowed thumbnail of an indexed item (volumes: three sampled slices) as PNG bytes.

        A report is drawn as its study's first unflagged image or volume; a source that cannot be read gives
        the grey "no preview" tile. Flagged items raise `PreviewWithheld`.
        """
        self._check_id(item_id)
        cached = self.thumbs.get(int(item_id))
        if cached is not None:
            return cached
        found = self.catalog.find_item(int(item_id))
        if found is None:
            raise ItemNotFound(f"item {item_id} is not in the index")
        if int(item_id) in self.withheld:
            raise PreviewWithheld(f"item {item_id} may carry burned-in text: no preview")
        view, row = found
        shown, source = (row.item_id, row.source) if view == "items" else self._study_source(row.study_key)
        # an out dir built with --anonymise-paths stores hashes: its source map has the real path
        image, _ = thumbnail(self.root, self.real_sources.get(shown, source))
        png = png_bytes(image)
        self.thumbs.put(int(item_id), png)
        return png

    @staticmethod
    def _check_id(item_id: int) -> None:
        """An integer outside the id range is an unknown item (404), not a crash in the int64 look-ups."""
        if not is_item_id(item_id):
            raise ItemNotFound(f"item {item_id} is not in the index")

    def _study_source(self, study_key: str) -> tuple[int, str]:
        """(item id, source) of a study's first unflagged image or volume; (0, "") if none."""
        if not study_key:
            return 0, ""
        ids = [int(i) for i in self.catalog.study_items(study_key, "items") if int(i) not in self.withheld]
        rows = self.catalog.rows(ids[:1], "items")
        return (ids[0], rows[ids[0]].source) if rows else (0, "")

    def public_message(self, exc: Exception) -> str:
        """The one-line message of `exc`, with the server's folder replaced by "the index"."""
        text = " ".join(str(exc).split())
        folders = {str(self.out_dir.resolve()), str(self.out_dir.absolute())}
        for folder in sorted(folders, key=len, reverse=True):  # a relative name is left alone: it is no path
            text = text.replace(folder, "the index")
        return text
