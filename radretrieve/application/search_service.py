"""What the `search`, `reports` and `similar` commands do, as plain functions over one out dir.

    service = SearchService(Path("out"))                       # the out dir's own model, loaded on first use
    results = service.search_text(["ct head bleed"], k=10, where="modality = 'CT'")
    similar = service.similar("s0-00003", k=10)               # item id, study key, or a path to encode
    service.close()

Queries become vectors here (text with the model's text tower, a path scanned and encoded on the fly,
a stored study from its shard embeddings); `indexers.search.Searcher` does the rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexers.errors import IndexMissing, SearchArgError, StudyNotFound
from indexers.fulltext import read_fulltext_json
from indexers.fusion import UNTRAINED_VECTOR_WEIGHT
from indexers.search import HIT_ROW_FIELDS, MODES, Hit, Searcher, StudyQuery
from radretrieve.foundation.errors import FingerprintMismatch, RadRetrieveError
from radretrieve.models.protocol import Encoder
from radretrieve.outdir.anonymise import read_sources
from radretrieve.outdir.where import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

log = logging.getLogger(__name__)

# what a query without a mode runs: hybrid where the out dir has a full-text index, else vector (an out dir
# indexed before there was one); docs/guide/hybrid-search.md says why (the evaluation table)
DEFAULT_MODE = "hybrid"
MAX_K = 10_000  # results per query; more is a mistake on the command line (the GPU limit, 2048, is lower)
JSON_FIELDS = ("rank", "score", "item_id", *HIT_ROW_FIELDS)  # docs/guide/search.md: Output


@dataclass(frozen=True)
class QueryResult:
    """One query and its ranked hits (the `--format json` output is a list of these)."""

    query: str  # the query text, or the study reference / path as given
    hits: tuple[Hit, ...]  # best first; `Hit.rank` is 1-based
    model: Mapping[str, Any] | None = None  # the out dir's model: name, trained, kind (`RecordedModel.to_json`)

    def to_json(self) -> dict[str, Any]:
        out = {"query": self.query, "hits": [hit_json(h) for h in self.hits]}
        return out | ({"model": dict(self.model)} if self.model is not None else {})


def hit_json(hit: Hit) -> dict[str, Any]:
    """The stable JSON fields of a hit (docs/guide/search.md: Output); keyword and hybrid hits also carry
    `evidence` (docs/guide/hybrid-search.md)."""
    d = {key: getattr(hit, key) for key in JSON_FIELDS}
    d.update(item_id=int(hit.item_id), score=float(hit.score), labels=dict(hit.labels))
    if hit.evidence is not None:
        d["evidence"] = hit.evidence.to_json()
    return d


def check_mode(mode: str | None) -> str | None:
    """vector | keyword | hybrid, or None (the default: `SearchService.mode`); checked before any model or
    index is loaded."""
    if mode is not None and mode not in MODES:
        raise SearchArgError(f"--mode {mode!r}: choose from {', '.join(MODES)}")
    return mode


def check_k(k: int) -> int:
    """k must be in [1, MAX_K]; checked before any model or index is loaded."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise SearchArgError(f"-k must be between 1 and {MAX_K}, got {k}")
    return k


def read_query_file(path: Path) -> list[str]:
    """Queries from a UTF-8 text file (or '-' for stdin), one per non-blank line."""
    import sys

    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise RadRetrieveError(f"--query-file {path}: cannot read ({reason})") from None
    queries = [line.strip() for line in text.splitlines() if line.strip()]
    if not queries:
        raise RadRetrieveError(f"--query-file {path}: no query text in the file")
    return queries


class SearchService:
    """Text/study/path queries over one out dir. `model`: an override that must match the fingerprint."""

    def __init__(
        self,
        out_dir: Path,
        model: str | None = None,
        weights: str | None = None,
        device: str = "auto",
        where_timeout: float = DEFAULT_TIMEOUT_S,
        resident: bool = False,
        where_memory_mb: int = DEFAULT_MEMORY_MB,
        warn: bool = True,
    ) -> None:
        """`warn`: log the one warning line now if the out dir's model is untrained (the web service warns once
        for all its worker processes instead)."""
        from radretrieve.outdir.model_ref import recorded_model

        self.out_dir = Path(out_dir)
        self._default_mode: str | None = None  # `mode(None)`, decided on first use
        if not self.out_dir.is_dir():
            raise IndexMissing(f"--index {out_dir}: no such directory")
        self._model: Encoder | None = None
        self._real_sources: dict[int, str] | None = None
        self._flagged: frozenset[int] | None = None  # items flagged burned_in (read on first use)
        self._text: Any = None  # the text encoder, loaded on first use and kept (a server encodes many)
        if model is not None:  # load now: a mismatching override must fail before any search
            self._model = self._load_model(model, weights)
        fingerprint = self._model.fingerprint if self._model is not None else None
        # resident: a long-running service keeps look-ups in memory (indexers.search.Searcher)
        self.searcher = Searcher(
            self.out_dir,
            fingerprint=fingerprint,
            device=device,
            where_timeout=where_timeout,
            resident=resident,
            where_memory_mb=where_memory_mb,
        )
        self.recorded = recorded_model(self.out_dir)
        if warn:
            self.recorded.warn()

    @property
    def model_json(self) -> dict[str, Any]:
        """The out dir's model as every JSON result carries it: name, trained, kind, ...
        (docs/guide/model-state.md, "The JSON field")."""
        return self.recorded.to_json()

    def _load_model(self, override: str | None, weights: str | None) -> Any:
        from radretrieve.outdir.model_ref import load_model_for_out_dir

        return load_model_for_out_dir(self.out_dir, override, weights)

    @property
    def model(self) -> Any:
        """The out dir's model (or the checked override), loaded on first use."""
        if self._model is None:
            self._model = self._load_model(None, None)
            if self._model.fingerprint != self.searcher.fingerprint:
                raise FingerprintMismatch(
                    f"{self.out_dir}: the index was built with fingerprint {self.searcher.fingerprint}, the "
                    f"out dir's model has {self._model.fingerprint}; run `radretrieve build-index --rebuild`"
                )
        return self._model

    def text_encoder(self) -> Any:
        """The stored text tower of the out dir when it matches the index (fast start), else the model."""
        if self._text is None:
            fast = None
            if self._model is None:
                from radretrieve.outdir.text_tower import load_text_tower

                fast = load_text_tower(self.out_dir, self.searcher.fingerprint)
            self._text = fast if fast is not None else self.model
        return self._text

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Query texts -> float32[N, D], L2-normalised, in the index's space."""
        if not texts or any(not t.strip() for t in texts):
            raise RadRetrieveError("empty query text")
        return self.text_encoder().encode_text(list(texts)).numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        self.searcher.close()

    def mode(self, mode: str | None) -> str:
        """`mode`, or for None the default: DEFAULT_MODE where the out dir has a full-text index, else vector.
        The default is decided once, on first use (index.json is not read again for every query of a server;
        like /api/info, it is the out dir as the service first saw it)."""
        if mode is not None:
            return mode
        if self._default_mode is None:
            self._default_mode = DEFAULT_MODE if read_fulltext_json(self.out_dir) is not None else "vector"
        return self._default_mode

    # -- queries -----------------------------------------------------------------------------------------
    def search_text(
        self,
        texts: Sequence[str],
        k: int = 10,
        *,
        kind: str | None = None,
        where: str | None = None,
        mode: str | None = None,
    ) -> list[QueryResult]:
        """Text -> items (images and volumes), one result per text, found by `mode`: vector | keyword | hybrid
        (None: `default_mode`)."""
        check_k(k)
        mode = self.mode(check_mode(mode))
        if not texts or any(not t.strip() for t in texts):
            raise RadRetrieveError("empty query text")
        hits = self.text_hits(texts, None, k, mode=mode, kind=kind, where=where)
        return [QueryResult(t, tuple(h), self.model_json) for t, h in zip(texts, hits)]

    def text_hits(
        self,
        texts: Sequence[str],
        vectors: np.ndarray | None,
        k: int,
        *,
        mode: str,
        index: str = "items",
        kind: str | None = None,
        where: str | None = None,
    ) -> list[list[Hit]]:
        """The hits of `mode` for `texts` (keyword evidence) and `vectors` (float32[Q, D]; encoded from `texts`
        when None), filtered by `kind` and `where` first in every mode."""
        if mode == "keyword":
            return self.searcher.keyword(texts, k, index=index, kind=kind, where=where)
        vectors = self.encode_text(texts) if vectors is None else vectors
        if mode == "vector":
            return self.searcher.search(vectors, k, index=index, kind=kind, where=where)
        weight = 1.0 if self.recorded.provenance.trained else UNTRAINED_VECTOR_WEIGHT  # its vectors are noise
        return self.searcher.hybrid(texts, vectors, k, index=index, kind=kind, where=where, vector_weight=weight)

    def study_query(self, ref: str) -> StudyQuery:
        """An item id or study key from the catalog; else an existing path, encoded on the fly.

        A path is a new study: nothing is excluded for it, so a copy of an indexed file finds itself.
        """
        try:
            return self.searcher.resolve(ref)
        except StudyNotFound:
            path = Path(ref).expanduser()
            if not path.exists():
                raise StudyNotFound(
                    f"{ref!r} is not an item id, a study key in {self.out_dir}, or an existing file/folder"
                ) from None
        from radretrieve.application.query_path import encode_path

        encoded = encode_path(self.model, path)
        return StudyQuery("", (), encoded.vector)

    def similar(self, ref: str, k: int = 10, *, kind: str | None = None, where: str | None = None) -> QueryResult:
        """Study -> similar studies: one hit per study, the query's own study excluded."""
        check_k(k)
        query = self.study_query(ref)
        return QueryResult(ref, tuple(self.searcher.similar(query, k, kind=kind, where=where)), self.model_json)

    def reports(self, ref: str, k: int = 5, *, where: str | None = None, mode: str | None = None) -> QueryResult:
        """Study -> nearest reports. Keyword evidence (modes keyword, hybrid) is the study's own description,
        modality, body part and labels (`study_text`); a path encoded on the fly has none."""
        check_k(k)
        mode = self.mode(check_mode(mode))
        query = self.study_query(ref)
        if mode == "vector":
            return QueryResult(ref, tuple(self.searcher.reports_for(query, k, where=where)), self.model_json)
        text = self.study_text(query)
        if mode == "keyword" and not text.strip():
            raise SearchArgError(f"{ref!r}: no stored description, body part or labels to search reports by keyword")
        hits = self.text_hits([text], query.vector[None, :], k, mode=mode, index="reports", where=where)[0]
        return QueryResult(ref, tuple(hits), self.model_json)

    def study_text(self, query: StudyQuery) -> str:
        """The keyword query of a stored study: its items' description, modality, body part and label values
        (never their report text, which would find the study's own report and nothing else)."""
        return study_keywords(self.searcher, query)

    def preview_item(self, hit: Hit) -> tuple[int, str]:
        """(item id, source) of the image drawn for `hit`: its own, or for a report (which has none) its
        study's first item's; (-1, "") when there is none."""
        item_id, source = hit.item_id, hit.source
        if hit.kind == "report" or not source:
            if not hit.study_key:
                return -1, ""
            ids = self.searcher.catalog.study_items(hit.study_key, "items")
            rows = self.searcher.catalog.rows(ids[:1], "items")
            if not rows:
                return -1, ""
            item_id, source = next(iter(rows.items()))[0], next(iter(rows.values())).source
        return item_id, source

    def preview_source(self, hit: Hit) -> str:
        """The file to draw for `hit` (relative to the archive root, see `preview_item`); in an anonymised out
        dir the real path, from the out dir's source map."""
        item_id, source = self.preview_item(hit)
        return self.real_sources.get(item_id, source) if self.anonymised and source else source

    def preview_withheld(self, hit: Hit) -> bool:
        """Whether the image drawn for `hit` is flagged as possibly carrying burned-in text."""
        if self._flagged is None:
            from radretrieve.application.contact_sheet import flagged_ids

            self._flagged = flagged_ids(self.searcher.catalog)
        return self.preview_item(hit)[0] in self._flagged

    @property
    def anonymised(self) -> bool:
        return self.searcher.manifest_anonymised

    @property
    def real_sources(self) -> dict[int, str]:
        """item id -> real source of an anonymised out dir (read once)."""
        if self._real_sources is None:
            self._real_sources = read_sources(self.out_dir)
        return self._real_sources


def study_keywords(searcher: Searcher, query: StudyQuery) -> str:
    """`SearchService.study_text` over a searcher (the web service has no SearchService query path)."""
    from indexers.fulltext import searchable_text

    ids = np.asarray(query.item_ids, dtype=np.int64)
    rows = searcher.catalog.rows(ids, "items") or searcher.catalog.rows(ids, "reports")
    parts = []
    for row in rows.values():
        labels = json.dumps(dict(row.labels))
        parts.append(searchable_text(None, row.description, row.modality, row.body_part, labels))
    return "\n".join(dict.fromkeys(p for p in parts if p))
