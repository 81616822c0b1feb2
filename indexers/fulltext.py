"""The full-text (keyword) index of an out dir: a tantivy index beside the FAISS indexes, same contracts.

One document per shard row (items and reports alike), keyed by item id, holding the row's searchable text:
the report text (for an image or volume: its paired report), the description (study and series), the
modality, the body part and the label values. The shards hold that text already redacted (the scan's
de-identification runs before anything is written), and the index stores none of it: only the analysed terms
(indexers/analyzer.py) and the item id, so the index can show no text the catalog does not.

Layout: ``OUT/index/fulltext.NNNNN/`` (tantivy's own files), listed in index.json under the top-level key
``fulltext`` with every file's size and SHA-256 (`FulltextInfo`). Each build or add writes a new numbered
folder through `atomic_dir` (filled in a temp folder, renamed as a whole) and index.json then points at it; the
folder before it is kept one generation for readers that read the old index.json, older ones are removed.

* damaged (a listed file missing, of another size or digest) or of another analyzer version: rebuilt from
  every shard; a reader refuses it with one line naming the file and the repair;
* shards added since: an add hard-links the current folder's files into the new one (tantivy never rewrites a
  file, it only adds and unlinks) and indexes only the new shards' rows; BM25 statistics are per index, not
  per segment, so the result ranks exactly as a full rebuild does (tests/test_fulltext.py);
* a shard removed or rewritten: rebuilt.

The writer lock of the out dir is held by the caller (`indexers.build.build_indexes`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from indexers import analyzer, checks, rare
from indexers.checks import FileCheck, file_name
from indexers.errors import IndexMissing
from indexers.filtered import in_sorted
from indexers.meta import index_dir, shard_key
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_dir, fsync_dir
from radretrieve.outdir.layout import INDEX_JSON
from radretrieve.outdir.manifest import Manifest
from radretrieve.outdir.verify import DamagedFile

log = logging.getLogger(__name__)

KEY = "fulltext"  # top-level key of index.json
FOLDER_RE = re.compile(r"^fulltext\.(\d{5})$")
TEXT_COLUMNS = ("item_id", "kind", "text", "description", "modality", "body_part", "labels")
VIEW_OF_KIND = {"image": "items", "volume": "items", "report": "reports"}
# One pair of fields per view (`items_terms`, `items_words`, `reports_terms`, ...): a query reads only its view's
# fields, a pure disjunction that tantivy answers with block-max WAND, where a filter clause on a view field made it
# score every matching document (measured: 3.3x slower at 20k items); each view also keeps its own term statistics.
VIEWS = ("items", "reports")
WRITER_HEAP = 50_000_000  # bytes of tantivy's indexing buffer (one thread): flushed to a segment when full
BATCH_ROWS = 8192  # shard rows read per batch
_LOCK_FILES = (".tantivy-writer.lock", ".tantivy-meta.lock")  # tantivy's lock files: never part of the index


@dataclass(frozen=True)
class FulltextInfo:
    """The full-text index's entry in index.json."""

    folder: str  # folder under OUT/index/ (fulltext.NNNNN)
    count: int  # documents (rows of every kind)
    analyzer: str  # analyzer.ANALYZER_VERSION it was built with
    shards: tuple[Mapping[str, Any], ...]  # shard_key() of indexed shards
    checks: Mapping[str, FileCheck]  # file name inside `folder` -> size and SHA-256 at commit
    build_seconds: float  # wall time of the last build or add
    built_at: str  # ISO-8601 UTC time of the last write
    build: Mapping[str, Any] = field(default_factory=dict)  # what the last build did: mode, rows, shards
    views: Mapping[str, int] | None = None  # documents per view (None: an index built before they were counted)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "count": self.count,
            "analyzer": self.analyzer,
            "shards": [dict(s) for s in self.shards],
            "checks": {name: c.to_json() for name, c in self.checks.items()},
            "build_seconds": self.build_seconds,
            "built_at": self.built_at,
            "build": dict(self.build),
            **({"views": dict(self.views)} if self.views is not None else {}),
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> FulltextInfo:
        folder = file_name(data["folder"])
        if not FOLDER_RE.match(folder):
            raise ValueError(f"full-text folder {folder[:80]!r} is not fulltext.NNNNN")
        count = _count(data["count"])
        return FulltextInfo(
            folder,
            count,
            str(data["analyzer"]),
            tuple(data["shards"]),
            {file_name(name): FileCheck.from_json(c) for name, c in dict(data["checks"]).items()},
            float(data["build_seconds"]),
            str(data["built_at"]),
            dict(data.get("build") or {}),
            _views(data["views"], count) if data.get("views") is not None else None,
        )

    def path(self, out_dir: Path) -> Path:
        return index_dir(out_dir) / self.folder


def _count(value: object) -> int:
    """A document count from index.json: a non-negative integer, or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"document count {str(value)[:40]!r} is not a non-negative integer")
    return value


def _views(value: object, count: int) -> dict[str, int]:
    """`views` from index.json: a count for each view, summing to the index's documents; or ValueError (a
    tampered share would switch the exact matches of hybrid search off, or make every word rare)."""
    if not isinstance(value, dict) or set(value) != set(VIEWS):
        raise ValueError(f"views must give a count for each of {', '.join(VIEWS)}")
    views = {view: _count(value[view]) for view in VIEWS}
    if sum(views.values()) != count:
        raise ValueError(f"views sum to {sum(views.values())}, not the index's {count} documents")
    return views


def read_fulltext_json(out_dir: Path) -> FulltextInfo | None:
    """The full-text entry of OUT/index/index.json; None when there is none (or no index.json)."""
    path = index_dir(out_dir) / INDEX_JSON
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text()).get(KEY)
        return None if entry is None else FulltextInfo.from_json(entry)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise RadRetrieveError(f"{path}: unreadable full-text entry ({exc}); rebuild with --rebuild") from exc


def problem(out_dir: Path, info: FulltextInfo, full: bool = True) -> tuple[Path, str] | None:
    """(the file, why) where the full-text folder is not what index.json committed, or None. `full`: hash every
    file (build, verify); else files up to checks.HASH_ON_OPEN_BYTES, larger ones by size."""
    folder = info.path(out_dir)
    if not folder.is_dir():
        return folder, "missing"
    for name, check in info.checks.items():
        found = checks.problem(folder / name, check, full)
        if found is not None:
            return folder / name, found
    extra = sorted(set(_listing(folder)) - set(info.checks))
    return (folder / extra[0], "a file index.json does not list") if extra else None


def damaged_line(out_dir: Path, found: tuple[Path, str]) -> str:
    """The one line naming a damaged full-text file and the repair."""
    return f"{found[0]}: damaged full-text index: {found[1]}; " + checks.REBUILD_HINT.format(out=out_dir)


def _listing(folder: Path) -> list[str]:
    """The index's files (tantivy's lock files left out: they come and go with readers and writers)."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in _LOCK_FILES)


# -- documents -------------------------------------------------------------------------------------------
def searchable_text(
    text: str | None, description: str | None, modality: str | None, body_part: str | None, labels: str | None
) -> str:
    """The text a row is found by: report, description, modality, body part and label values, one per line."""
    values: list[str] = []
    if labels:
        try:
            parsed = json.loads(labels)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            values = [str(v) for v in parsed.values() if v is not None and str(v).strip()]
    parts = [text, description, modality, body_part, *values]
    return "\n".join(p for p in parts if p)


def iter_documents(out_dir: Path, files: list[str]) -> Iterator[tuple[int, str, str]]:
    """(item id, view, searchable text) of every row of the shard `files`, in order."""
    import pyarrow.parquet as pq

    for file in files:
        pf = pq.ParquetFile(Path(out_dir) / file)
        columns = [c for c in TEXT_COLUMNS if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(BATCH_ROWS, columns=columns):
            cols = {c: batch.column(c).to_pylist() for c in columns}
            empty = [None] * batch.num_rows
            parts = [cols.get(c, empty) for c in ("text", "description", "modality", "body_part", "labels")]
            for item_id, kind, *fields in zip(cols["item_id"], cols["kind"], *parts):
                view = VIEW_OF_KIND.get(kind)
                if view is not None:
                    yield int(item_id), view, searchable_text(*fields)


def schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("item_id", stored=False, indexed=True, fast=True)
    for view in VIEWS:
        builder.add_text_field(f"{view}_terms", stored=False, tokenizer_name=analyzer.TERMS, index_option="freq")
        builder.add_text_field(f"{view}_words", stored=False, tokenizer_name=analyzer.WORDS, index_option="freq")
    return builder.build()


# -- build -----------------------------------------------------------------------------------------------
def _mode(out_dir: Path, existing: FulltextInfo | None, manifest: Manifest, rebuild: bool) -> str:
    """'rebuild', 'add' (new shards only) or 'keep'."""
    if rebuild or existing is None:
        return "rebuild"
    if existing.analyzer != analyzer.ANALYZER_VERSION:
        log.warning(
            "full-text index: built with analyzer %s, now %s; rebuilding it",
            existing.analyzer,
            analyzer.ANALYZER_VERSION,
        )
        return "rebuild"
    current = {json.dumps(shard_key(s), sort_keys=True) for s in manifest.shards}
    indexed = {json.dumps(dict(s), sort_keys=True) for s in existing.shards}
    if not indexed <= current:  # a shard removed or rewritten: its old rows are in the index
        return "rebuild"
    damaged = problem(out_dir, existing, full=True)
    if damaged is not None:
        log.warning("full-text index: %s: %s; rebuilding it", damaged[0].name, damaged[1])
        return "rebuild"
    return "keep" if indexed == current else "add"


def build_fulltext(
    out_dir: Path,
    manifest: Manifest,
    existing: FulltextInfo | None,
    rebuild: bool = False,
    verify: Any = None,
) -> FulltextInfo:
    """Build or grow the full-text index; returns its index.json entry (the caller writes index.json).

    `verify(files)`: hashes the shard files about to be read (indexers.build.verify_shards), or None."""
    start = time.perf_counter()
    out_dir = Path(out_dir)
    mode = _mode(out_dir, existing, manifest, rebuild)
    if mode == "keep" and existing is not None:
        return existing
    known = {s["file"] for s in existing.shards} if (mode == "add" and existing is not None) else set()
    files = [s.file for s in manifest.shards if s.file not in known]
    if verify is not None:
        verify(set(files))
    folder = index_dir(out_dir) / f"fulltext.{_next_number(index_dir(out_dir)):05d}"
    with atomic_dir(folder) as tmp:
        if mode == "add" and existing is not None:
            _link_files(existing.path(out_dir), tmp)
        added_views = _index_rows(tmp, out_dir, files)
        for lock in _LOCK_FILES:
            (tmp / lock).unlink(missing_ok=True)
    added = sum(added_views.values())
    count = (existing.count if mode == "add" and existing is not None else 0) + added
    views = _views_after(mode, existing, added_views)
    _drop_old(index_dir(out_dir), keep={folder.name} | ({existing.folder} if existing is not None else set()))
    log.info("full-text index: %s, %d rows added from %d shards, %d documents", mode, added, len(files), count)
    return FulltextInfo(
        folder.name,
        count,
        analyzer.ANALYZER_VERSION,
        tuple(shard_key(s) for s in manifest.shards),
        checks.record(folder, _listing(folder)),
        round(time.perf_counter() - start, 3),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
        {"mode": mode, "rows_added": added, "shards_added": len(files)},
        views,
    )


def _views_after(mode: str, existing: FulltextInfo | None, added: Mapping[str, int]) -> dict[str, int] | None:
    """Documents per view after a build: the rows added, plus the existing index's for an add (None when the
    existing index never counted them: the searcher then counts the catalog's rows)."""
    if mode != "add" or existing is None:
        return {view: int(added.get(view, 0)) for view in VIEWS}
    if existing.views is None:
        return None
    return {view: int(existing.views.get(view, 0)) + int(added.get(view, 0)) for view in VIEWS}


def _index_rows(folder: Path, out_dir: Path, files: list[str]) -> dict[str, int]:
    """Add the rows of `files` to the tantivy index in `folder` (created when empty); returns rows added per
    view."""
    import tantivy

    index = tantivy.Index(schema(), path=str(folder), reuse=True)
    analyzer.register(index)
    writer = index.writer(heap_size=WRITER_HEAP, num_threads=1)
    added = dict.fromkeys(VIEWS, 0)
    try:
        for item_id, view, text in iter_documents(out_dir, files):
            fields = {f"{view}_terms": text, f"{view}_words": text}
            writer.add_document(tantivy.Document(item_id=item_id, **fields))
            added[view] += 1
        writer.commit()
        writer.wait_merging_threads()  # merges finish and obsolete files go before the folder is listed
    except BaseException:
        writer.rollback()
        raise
    return added


def _link_files(src: Path, dst: Path) -> None:
    """The files of the current index in the new folder: hard links (tantivy never rewrites a file), or copies
    where the file system has no hard links."""
    for name in _listing(src):
        try:
            os.link(src / name, dst / name)
        except OSError:
            shutil.copy2(src / name, dst / name)


def _next_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.glob("fulltext.*") if (m := FOLDER_RE.match(p.name))]
    return max(numbers, default=-1) + 1


def _drop_old(folder: Path, keep: set[str]) -> None:
    """Remove full-text folders other than `keep` (the new one and the one before it, which a reader that read the
    old index.json may still open)."""
    removed = False
    for path in folder.glob("fulltext.*"):
        if FOLDER_RE.match(path.name) and path.name not in keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed = True
    if removed:
        fsync_dir(folder)


# -- search ----------------------------------------------------------------------------------------------
class KeywordIndex:
    """The opened full-text index of one out dir. Thread-safe: tantivy searchers are."""

    def __init__(self, out_dir: Path, info: FulltextInfo) -> None:
        import tantivy

        self.info = info
        found = problem(out_dir, info, full=False)
        if found is not None:
            raise DamagedFile(damaged_line(out_dir, found))
        index = tantivy.Index.open(str(info.path(out_dir)))
        analyzer.register(index)
        self._schema = index.schema
        self._searcher = index.searcher()

    def query(self, text: str, view: str) -> tuple[Any, tuple[str, ...]]:
        """(tantivy query, the analysed query terms) for `text` within `view`: any term in either field (OR),
        scored by BM25. The text is analysed here, never parsed as query syntax."""
        import tantivy

        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}")
        terms = analyzer.query_terms(text)
        should = [
            (tantivy.Occur.Should, tantivy.Query.term_query(self._schema, f"{view}_{f}", t))
            for f, name in (("terms", analyzer.TERMS), ("words", analyzer.WORDS))
            for t in terms[name]
        ]
        every = tuple(dict.fromkeys(t for ts in terms.values() for t in ts))
        if not should:
            return tantivy.Query.empty_query(), every
        return tantivy.Query.boolean_query(should), every

    def search(
        self, text: str, view: str, k: int, candidates: np.ndarray | None = None
    ) -> tuple[list[tuple[int, float]], tuple[str, ...]]:
        """([(item id, BM25 score)] best first, ties by item id; the analysed query terms). `candidates` (sorted
        int64 ids): only those rows, however deep the keyword list must be read to find k of them."""
        query, terms = self.query(text, view)
        if not terms:
            return [], terms
        docs = max(self._searcher.num_docs, 1)  # tantivy allocates its top-k heap for the limit asked
        limit = min(max(k, 16) if candidates is None else max(4 * k, 64), docs)
        while True:
            result = self._searcher.search(query, limit, count=True)
            ids = self._searcher.fast_field_values("item_id", [addr for _, addr in result.hits])
            pairs = [(int(i), float(s)) for (s, _), i in zip(result.hits, ids)]
            if candidates is not None:
                keep = in_sorted(np.fromiter((p[0] for p in pairs), np.int64, len(pairs)), candidates)
                pairs = [p for p, ok in zip(pairs, keep) if ok]
            if len(pairs) >= k or len(result.hits) >= result.count:
                break
            limit = min(limit * 8, result.count)
        pairs.sort(key=lambda p: (-p[1], p[0]))
        return pairs[:k], terms

    def exact_matches(
        self, text: str, view: str, ids: Iterable[int], documents: int
    ) -> tuple[frozenset[int], tuple[str, ...]]:
        """(the ids among `ids` that match `text` exactly in `view`, the words they hold); `documents`: how many
        rows the view has (indexers/rare.py)."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}")
        field = f"{view}_words"
        words = rare.exact_words(self._searcher, field, analyzer.query_terms(text)[analyzer.WORDS], documents)
        found = rare.holding_all(self._searcher, self._schema, field, "item_id", words, ids)
        return found, words


def open_keyword(out_dir: Path) -> KeywordIndex:
    """The out dir's full-text index; `IndexMissing` (with the command that builds it) when there is none."""
    info = read_fulltext_json(out_dir)
    if info is None:
        raise IndexMissing(
            f"{out_dir}: no full-text index for keyword search (run `radretrieve build-index {out_dir}`)"
        )
    return KeywordIndex(Path(out_dir), info)
