"""A catalog for long-running processes (`radretrieve serve`): per-request lookups from memory.

`Catalog` answers every lookup with a duckdb query over the shards: right for a command that runs one query
(nothing to load first), but each query re-reads Parquet, several milliseconds per lookup on a 100k-item
out dir. `ResidentCatalog` reads the display columns of both views once, sorted by item id, and answers
`rows`, `study_keys`, `study_items` and `find_item` with array look-ups (the same values: the same
`coalesce`d columns, the same label parsing). Filters (`candidates`, `count`, `sql`) and `vectors` still run
on duckdb. Memory: the display columns (report text included) plus about 24 bytes per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from radretrieve.outdir.catalog import ROW_FIELDS, VIEW_KINDS, Catalog, ItemRow, parse_labels
from radretrieve.outdir.manifest import Manifest
from radretrieve.outdir.where import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class ResidentView:
    """The display rows of one view, in memory, sorted by item id."""

    ids: np.ndarray  # int64[n] item ids, ascending
    batches: tuple[pa.RecordBatch, ...]  # ROW_FIELDS columns aligned with `ids` (NULL strings as "")
    batch_start: np.ndarray  # int64[b + 1] the row position where each batch starts
    studies: np.ndarray  # object[s] distinct study keys, sorted
    by_study: np.ndarray  # int64[n] row positions ordered by (study, item id)
    study_start: np.ndarray  # int64[s + 1] where each study's rows start in `by_study`

    @staticmethod
    def from_table(table: pa.Table) -> ResidentView:
        ids = table.column("item_id").to_numpy().astype(np.int64, copy=False)
        keys = np.asarray(table.column("study_key").to_pylist(), dtype=object)
        studies, codes = np.unique(keys, return_inverse=True) if len(keys) else (np.empty(0, object), keys)
        codes = np.asarray(codes, dtype=np.int64)
        by_study = np.argsort(codes, kind="stable")  # stable: ascending ids within a study
        start = np.searchsorted(codes[by_study], np.arange(len(studies) + 1))
        # kept as the query's record batches: `Table.take` over a table of many chunks costs milliseconds
        # per call at 1M rows whatever the number of rows taken, and joining the chunks into one would copy
        # the report text (and overflow 32-bit string offsets past 2 GiB of it)
        batches = tuple(b for b in table.to_batches() if b.num_rows)
        bounds = np.cumsum([0, *(b.num_rows for b in batches)]).astype(np.int64)
        return ResidentView(ids, batches, bounds, studies, by_study.astype(np.int64), start.astype(np.int64))

    def take(self, pos: np.ndarray, columns: Sequence[str] | None = None) -> list[dict]:
        """The rows at positions `pos` (int64[m], ascending), as dicts of `columns` (default: all)."""
        rows: list[dict] = []
        which = np.searchsorted(self.batch_start, pos, side="right") - 1
        for b in np.unique(which):
            batch = self.batches[int(b)]
            if columns is not None:
                batch = batch.select(list(columns))
            local = pos[which == b] - self.batch_start[b]
            rows.extend(batch.take(pa.array(local, pa.int64())).to_pylist())
        return rows

    def positions(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found ids int64[m] ascending and unique, their row positions int64[m]) for the given ids."""
        want = np.unique(np.asarray(ids, dtype=np.int64))
        if len(self.ids) == 0 or len(want) == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, want), len(self.ids) - 1)
        hit = self.ids[pos] == want
        return want[hit], pos[hit]

    def study_rows(self, study_key: str) -> np.ndarray:
        """Row positions int64[r] of one study, in ascending item id order (empty if unknown)."""
        i = int(np.searchsorted(self.studies, study_key)) if len(self.studies) else 0
        if i >= len(self.studies) or self.studies[i] != study_key:
            return np.empty(0, np.int64)
        return self.by_study[self.study_start[i] : self.study_start[i + 1]]


class ResidentCatalog(Catalog):
    """`Catalog` with the id -> row and study -> ids look-ups served from memory (loaded at construction)."""

    def __init__(
        self,
        out_dir: Path,
        manifest: Manifest | None = None,
        where_timeout: float = DEFAULT_TIMEOUT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
    ) -> None:
        super().__init__(out_dir, manifest, where_timeout, memory_mb)
        cols = ", ".join(c if c == "item_id" else f"coalesce({c}, '') AS {c}" for c in ROW_FIELDS)
        self.resident = {
            view: ResidentView.from_table(self._arrow(f"SELECT {cols} FROM {view} ORDER BY item_id", []))
            for view in VIEW_KINDS
        }

    def rows(self, ids: Sequence[int] | np.ndarray, view: str = "items") -> dict[int, ItemRow]:
        rv = self.resident[self._view(view)]
        _, pos = rv.positions(ids)
        out: dict[int, ItemRow] = {}
        for r in rv.take(pos):
            fields = [r[f] for f in ROW_FIELDS[1:8]]
            out[int(r["item_id"])] = ItemRow(int(r["item_id"]), *fields, labels=parse_labels(r["labels"]))
        return out

    def study_keys(self, ids: Sequence[int] | np.ndarray, view: str = "items") -> dict[int, str]:
        rv = self.resident[self._view(view)]
        found, pos = rv.positions(ids)
        keys = [r["study_key"] for r in rv.take(pos, ["study_key"])]
        return dict(zip(found.tolist(), keys))

    def study_items(self, study_key: str, view: str = "items") -> np.ndarray:
        rv = self.resident[self._view(view)]
        return rv.ids[rv.study_rows(study_key)]
