"""duckdb catalog over an out dir: metadata filters first, then id -> row lookup for result display.

Views (docs/guide/search.md: Filters), over exactly the shards listed in manifest.json:

* ``items``   image and volume rows, every shard column except ``embedding``;
* ``reports`` report rows, same columns;
* ``errors``  failed inputs from ``OUT/errors/*.jsonl`` (source, stage, error_type, message); empty if none;
* ``predictions`` zero-shot predictions from ``OUT/predictions.parquet`` (radretrieve.outdir.predictions) made
  with the out dir's current model (rows of another fingerprint are left out); empty if none, and empty with one
  warning if the file is damaged (radretrieve.outdir.predictions: the predictions are lost, never the search).
  A filter uses it through a subquery, e.g. ``item_id IN (SELECT item_id FROM predictions WHERE label = 'chest')``.

Metadata queries never read embeddings: the views leave the column out, and duckdb reads Parquet column
by column. Vectors come only from `Catalog.vectors*`, which read ``embedding`` with an explicit
``::FLOAT[D]`` cast (duckdb 2.x reads the fixed-size list as a variable list otherwise).

The connection is in-memory, confined to the out dir (external access off, config locked), so a user's
``--where`` fragment can read the views but no other file. Queries run on a cursor per thread, so one
Catalog can serve several threads at once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.outdir.layout import ERROR_DIR
from radretrieve.outdir.manifest import Manifest, read_manifest
from radretrieve.outdir.predictions import (
    PREDICTION_COLUMNS,
    damaged_predictions_line,
    predictions_path,
    predictions_problem,
)
from radretrieve.outdir.verify import check_shards
from radretrieve.outdir.where import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    MAX_THREADS,
    BadWhere,
    error_kind,
    filter_query,
    one_line,
)

log = logging.getLogger(__name__)

# Columns of the items/reports views, with their duckdb types for the empty-view case.
META_COLUMNS: tuple[tuple[str, str], ...] = (
    ("item_id", "BIGINT"),
    ("kind", "VARCHAR"),
    ("study_key", "VARCHAR"),
    ("series_key", "VARCHAR"),
    ("source", "VARCHAR"),
    ("modality", "VARCHAR"),
    ("body_part", "VARCHAR"),
    ("description", "VARCHAR"),
    ("slice_count", "INTEGER"),
    ("shape", "INTEGER[]"),
    ("spacing", "FLOAT[]"),
    ("text", "VARCHAR"),
    ("labels", "VARCHAR"),
)
# Columns newer shards may have and older ones lack. A column is in the views when any listed shard has it
# (NULL in rows of shards without it), so readers ask `Catalog.columns(view)` before relying on one.
OPTIONAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("burned_in", "BOOLEAN"),  # the image may carry burned-in text (patient data): never thumbnailed
)
ERROR_COLUMNS = ("source", "stage", "error_type", "message")
VIEW_KINDS: Mapping[str, tuple[str, ...]] = {"items": ("image", "volume"), "reports": ("report",)}
ROW_FIELDS = ("item_id", "kind", "study_key", "source", "modality", "body_part", "description", "text", "labels")
FETCH_CHUNK = 50_000  # ids per vector fetch; bounds the id list parameter and the result
# An id list as a query parameter. Registering a pyarrow table instead made duckdb import pandas
# (~0.4 s of every `radretrieve search` cold start, measured) for a list of ten ids.
IDS_PARAM = "(SELECT unnest(?::BIGINT[]))"


@dataclass(frozen=True)
class ItemRow:
    """Display fields of one item/report row."""

    item_id: int  # stable item id (the FAISS id)
    kind: str  # image | volume | report
    study_key: str  # study the item belongs to ("" if unknown)
    source: str  # path relative to the archive root
    modality: str  # CT, MR, ... ("" if unknown)
    body_part: str  # body part ("" if unknown)
    description: str  # series/study description
    text: str  # paired report text (reports: the report)
    labels: Mapping[str, str] = field(default_factory=dict)  # manifest/synthetic labels


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Catalog:
    """duckdb views over one out dir's finished shards."""

    def __init__(
        self,
        out_dir: Path,
        manifest: Manifest | None = None,
        where_timeout: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
    ) -> None:
        import duckdb

        self.out_dir = Path(out_dir).resolve()
        self.manifest = manifest or read_manifest(self.out_dir)
        # a truncated shard, or one of another schema: one line naming it, not an Arrow or duckdb error
        schemas = check_shards(self.out_dir, self.manifest)
        self._duckdb = duckdb
        self.con = duckdb.connect()
        self._local = threading.local()  # one cursor per thread: a duckdb connection is not thread-safe
        self._cursors: list = []  # every cursor made, closed with the catalog
        self._cursor_lock = threading.Lock()
        self.where_timeout = where_timeout  # seconds a --where filter may run
        self.memory_mb = memory_mb  # duckdb's memory limit for this connection (--where-memory-mb)
        files = [str(self.out_dir / s.file) for s in self.manifest.shards]
        error_files = sorted(str(p) for p in (self.out_dir / ERROR_DIR).glob("*.jsonl"))
        self._create_views(files, error_files, {name for schema in schemas for name in schema.names})
        predictions = self._create_predictions_view()
        self._lock_down(files + error_files + predictions)

    # -- setup -------------------------------------------------------------------------------------------
    def _create_views(self, files: list[str], error_files: list[str], shard_columns: set[str]) -> None:
        # OPTIONAL_COLUMNS that at least one shard has (from the footers read by check_shards)
        optional = tuple(col for col in OPTIONAL_COLUMNS if col[0] in shard_columns)
        self._columns = tuple(name for name, _ in META_COLUMNS + optional)
        names = ", ".join(self._columns)
        if files:
            # union_by_name: shards written before an optional column existed read it as NULL
            union = ", union_by_name = true" if optional else ""
            src = f"read_parquet([{', '.join(_sql_str(f) for f in files)}]{union})"
            for view, kinds in VIEW_KINDS.items():
                cond = f"kind IN ({', '.join(_sql_str(k) for k in kinds)})"
                self.con.execute(f"CREATE VIEW {view} AS SELECT {names} FROM {src} WHERE {cond}")
                cast = f"embedding::FLOAT[{self.manifest.dim}] AS embedding"
                self.con.execute(f"CREATE VIEW _{view}_vectors AS SELECT item_id, {cast} FROM {src} WHERE {cond}")
        else:
            typed = ", ".join(f"NULL::{t} AS {n}" for n, t in META_COLUMNS)
            for view in VIEW_KINDS:
                self.con.execute(f"CREATE VIEW {view} AS SELECT {typed} WHERE false")
                vec = f"NULL::BIGINT AS item_id, NULL::FLOAT[{self.manifest.dim}] AS embedding"
                self.con.execute(f"CREATE VIEW _{view}_vectors AS SELECT {vec} WHERE false")
        if error_files:
            cols = "{" + ", ".join(f"{_sql_str(c)}: 'VARCHAR'" for c in ERROR_COLUMNS) + "}"
            lst = ", ".join(_sql_str(f) for f in error_files)
            self.con.execute(
                f"CREATE VIEW errors AS SELECT {', '.join(ERROR_COLUMNS)} FROM "
                f"read_json([{lst}], format='newline_delimited', columns={cols}, ignore_errors=true)"
            )
        else:
            self.con.execute(
                f"CREATE VIEW errors AS SELECT {', '.join(f'NULL::VARCHAR AS {c}' for c in ERROR_COLUMNS)} WHERE false"
            )

    def _create_predictions_view(self) -> list[str]:
        """The `predictions` view (empty when there is no predictions file); returns the files it reads."""
        path = predictions_path(self.out_dir)
        names = ", ".join(name for name, _ in PREDICTION_COLUMNS)
        # A damaged predictions file costs the predictions only, never the search: one line, then none.
        self.predictions_problem = predictions_problem(self.out_dir)
        if self.predictions_problem is not None:
            log.warning("%s", damaged_predictions_line(self.out_dir, self.predictions_problem))
        elif path.is_file():
            self.con.execute(
                f"CREATE VIEW predictions AS SELECT {names} FROM read_parquet({_sql_str(str(path))}) "
                f"WHERE model_fingerprint = {_sql_str(self.manifest.fingerprint)}"
            )
            return [str(path)]
        typed = ", ".join(f"NULL::{t} AS {n}" for n, t in PREDICTION_COLUMNS)
        self.con.execute(f"CREATE VIEW predictions AS SELECT {typed} WHERE false")
        return []

    def columns(self, view: str = "items") -> tuple[str, ...]:
        """Column names of the `items` / `reports` view (META_COLUMNS, then the optional ones present)."""
        self._view(view)
        return self._columns

    def _lock_down(self, files: list[str]) -> None:
        # The views keep reading exactly these files; nothing else can be opened, not even other files of
        # the out dir (index.json, the manifest) or a temp folder, and the settings cannot be turned back.
        # Filters are checked on their parse tree too (radretrieve.outdir.where).
        # Memory: what duckdb allocates through its buffer manager (joins, sorts, aggregates) stays under the
        # limit, and a query past it fails (OutOfMemoryException: a one-line 400). Values a function builds are
        # not counted, so the filter check refuses the functions that build large ones (radretrieve.outdir.where).
        self.con.execute(f"SET memory_limit = '{int(self.memory_mb)}MB'")
        self.con.execute(f"SET threads = {min(MAX_THREADS, os.cpu_count() or 1)}")
        self.con.execute("SET allowed_paths = ?", [files])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def close(self) -> None:
        with self._cursor_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        self.con.close()

    def _con(self) -> Any:
        """This thread's cursor on the catalog's database (same views and settings as `con`)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self.con.cursor()
            self._local.cursor = cur
            with self._cursor_lock:
                self._cursors.append(cur)
        return cur

    # -- metadata ----------------------------------------------------------------------------------------
    def sql(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read query over the views; duckdb errors become one-line `RadRetrieveError`s."""
        try:
            return self._con().execute(query, params or []).fetchall()
        except self._duckdb.Error as exc:
            raise RadRetrieveError(f"catalog query failed: {one_line(str(exc))}") from exc

    def _filter_query(
        self, view: str, select: str, where: str | None, kinds: Sequence[str] | None, tail: str = ""
    ) -> str:
        """The query for rows of `view` of `kinds` passing `where` (radretrieve.outdir.where: it only narrows)."""
        return filter_query(self._con(), self._view(view), select, where, tuple(kinds or ()), tail)

    def candidates(
        self, view: str = "items", where: str | None = None, kinds: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows passing the filter: (item ids int64[n] sorted ascending, study keys object[n]).

        `where` is a user SQL boolean expression over the view's columns, applied to the rows of `kinds` in a
        subquery it cannot reach (radretrieve.outdir.where.filter_query: a filter only narrows); errors become
        one-line `BadWhere`.
        """
        cols = "item_id, coalesce(study_key, '') AS study_key"
        query = self._filter_query(view, cols, where, kinds, "ORDER BY item_id")
        cols = self._timed(lambda con: con.execute(query).fetchnumpy())
        ids = np.asarray(cols["item_id"], dtype=np.int64)
        return ids, np.asarray(cols["study_key"], dtype=object)

    def count(self, view: str = "items", where: str | None = None, kinds: Sequence[str] | None = None) -> int:
        query = self._filter_query(view, "count(*)", where, kinds)
        return int(self._timed(lambda con: con.execute(query).fetchone()[0]))

    def _timed(self, run: Any) -> Any:
        """`run(cursor)` for a filter query, interrupted after `where_timeout` seconds; one-line `BadWhere`."""
        con = self._con()
        timer = threading.Timer(self.where_timeout, con.interrupt)
        timer.start()
        try:
            return run(con)
        except self._duckdb.InterruptException as exc:
            raise BadWhere(
                f"bad --where: the filter ran longer than {self.where_timeout:g} s (--where-timeout)"
            ) from exc
        except (self._duckdb.BinderException, self._duckdb.ParserException, self._duckdb.CatalogException) as exc:
            raise BadWhere(f"bad --where: {one_line(str(exc))}") from exc  # about the filter's text (a column name)
        except self._duckdb.Error as exc:
            raise BadWhere(f"bad --where: {error_kind(exc)}") from exc  # its message may quote a row's value
        finally:
            timer.cancel()

    def rows(self, ids: Sequence[int] | np.ndarray, view: str = "items") -> dict[int, ItemRow]:
        """id -> display row for the given ids (ids not in the view are absent)."""
        out: dict[int, ItemRow] = {}
        cols = ", ".join(f"coalesce({c}, '')" if c not in ("item_id",) else c for c in ROW_FIELDS)
        for chunk in self._id_chunks(ids):
            found = self.sql(f"SELECT {cols} FROM {self._view(view)} WHERE item_id IN {IDS_PARAM}", [chunk.tolist()])
            for r in found:
                out[int(r[0])] = ItemRow(int(r[0]), *r[1:8], labels=parse_labels(r[8]))
        return out

    def table(self, view: str = "items", where: str | None = None) -> pa.Table:
        """Every row of `view` passing `where` (a `--where` filter, checked and timed as for search), with the
        view's columns (no embeddings), in item-id order."""
        query = self._filter_query(view, "*", where, None, "ORDER BY item_id")
        return self._timed(lambda con: con.sql(query).to_arrow_table())

    def study_keys(self, ids: Sequence[int] | np.ndarray, view: str = "items") -> dict[int, str]:
        """id -> study key ("" if unknown) for the given ids; reads no embeddings."""
        out: dict[int, str] = {}
        for chunk in self._id_chunks(ids):
            found = self.sql(
                f"SELECT item_id, coalesce(study_key, '') FROM {self._view(view)} WHERE item_id IN {IDS_PARAM}",
                [chunk.tolist()],
            )
            out.update((int(i), s) for i, s in found)
        return out

    def study_items(self, study_key: str, view: str = "items") -> np.ndarray:
        """Item ids int64[n] of one study in `view` (sorted)."""
        rows = self.sql(f"SELECT item_id FROM {self._view(view)} WHERE study_key = ? ORDER BY item_id", [study_key])
        return np.array([r[0] for r in rows], dtype=np.int64)

    def find_item(self, item_id: int) -> tuple[str, ItemRow] | None:
        """(view, row) of an item id in items or reports, or None."""
        for view in VIEW_KINDS:
            row = self.rows([item_id], view).get(int(item_id))
            if row is not None:
                return view, row
        return None

    # -- vectors -----------------------------------------------------------------------------------------
    def vectors(self, ids: Sequence[int] | np.ndarray, view: str = "items") -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of the given ids: (ids int64[m], float32[m, D]) in ascending id order; m <= len(ids)."""
        got_ids: list[np.ndarray] = []
        got_vecs: list[np.ndarray] = []
        for chunk in self._id_chunks(ids):
            table = self._arrow(
                f"SELECT item_id, embedding FROM _{self._view(view)}_vectors WHERE item_id IN {IDS_PARAM} "
                "ORDER BY item_id",
                [chunk.tolist()],
            )
            i, v = _table_vectors(table, self.manifest.dim)
            got_ids.append(i)
            got_vecs.append(v)
        if not got_ids:
            return np.empty(0, np.int64), np.empty((0, self.manifest.dim), np.float32)
        ids_out = np.concatenate(got_ids)
        order = np.argsort(ids_out, kind="stable")
        return ids_out[order], np.concatenate(got_vecs)[order]

    def iter_vectors(self, ids: np.ndarray, view: str = "items") -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`vectors` in chunks of FETCH_CHUNK ids, for candidate sets too large to hold at once."""
        for chunk in self._id_chunks(ids):
            yield self.vectors(chunk, view)

    # -- helpers -----------------------------------------------------------------------------------------
    def _view(self, view: str) -> str:
        if view not in VIEW_KINDS:
            raise RadRetrieveError(f"unknown catalog view {view!r}")
        return view

    def _id_chunks(self, ids: Sequence[int] | np.ndarray) -> Iterator[np.ndarray]:
        arr = np.unique(np.asarray(ids, dtype=np.int64))
        for start in range(0, len(arr), FETCH_CHUNK):
            yield arr[start : start + FETCH_CHUNK]

    def _arrow(self, query: str, params: Sequence[Any]) -> pa.Table:
        try:
            # relation API: the DB-API cursor's arrow export copies the rows once more (and warns)
            return self._con().sql(query, params=list(params)).to_arrow_table()
        except self._duckdb.Error as exc:
            raise RadRetrieveError(f"catalog query failed: {one_line(str(exc))}") from exc


def _table_vectors(table: pa.Table, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = table.column("item_id").to_numpy().astype(np.int64, copy=False)
    emb = table.column("embedding").combine_chunks()
    if len(emb) == 0:
        return ids, np.empty((0, dim), np.float32)
    # flatten() (unlike .values) honours a sliced array's offset
    flat = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return ids, np.ascontiguousarray(flat.reshape(len(emb), dim))


def parse_labels(raw: str | None) -> dict[str, str]:
    """The labels column (a JSON object) as a str -> str dict; {} when empty or not an object."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
