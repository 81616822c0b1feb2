"""The search API the CLI wraps: query vectors in, ranked hits with catalog fields out.

    searcher = Searcher(out_dir, fingerprint=model.fingerprint)
    hits = searcher.search(model.encode_text(["ct head bleed"]).numpy(), k=10, where="modality = 'CT'")
    similar = searcher.similar("1.2.840...")             # study -> similar studies (one per study)
    reports = searcher.reports_for("1234567890")         # study -> nearest reports

Everything takes query vectors float32[Q, D] (L2-normalised, the model's space), so the text encoder and
the on-the-fly image encoder live in the CLI, not here. Indexes and the catalog open lazily.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from indexers.analyzer import spans, text_terms
from indexers.ann import AnnIndex
from indexers.device import place, validate_search_args
from indexers.errors import IndexMissing, SearchArgError, StudyNotFound
from indexers.filtered import SMALL_CANDIDATES, Filter, Picked, ann_filtered, exact_over
from indexers.fulltext import KeywordIndex, open_keyword, searchable_text
from indexers.fusion import RRF_K, Fused, depth, rrf
from indexers.load import open_index, open_store, read_infos
from indexers.meta import IndexInfo, manifest_hash, target
from indexers.plan import SearchParams
from indexers.store import VectorStore
from radretrieve.foundation.ids import parse_item_id
from radretrieve.outdir.catalog import FETCH_CHUNK, Catalog
from radretrieve.outdir.manifest import read_manifest
from radretrieve.outdir.resident import ResidentCatalog
from radretrieve.outdir.shards import iter_embeddings
from radretrieve.outdir.where import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

log = logging.getLogger(__name__)


MODES = ("vector", "keyword", "hybrid")  # what finds the hits: the embedding, the full-text index, or both fused


@dataclass(frozen=True)
class Evidence:
    """What found a keyword or hybrid hit (absent from vector hits, whose output stays as it was)."""

    mode: str  # keyword | hybrid
    matched_terms: tuple[str, ...] = ()  # analysed query terms found in the hit's searchable text
    highlights: tuple[tuple[int, int], ...] = ()  # [start, end) character spans of matching words in `text`
    vector_rank: int | None = None  # 1-based rank in the vector list (hybrid; None: not in it)
    vector_score: float | None = None  # cosine with the query vector (hybrid)
    keyword_rank: int | None = None  # 1-based rank in the keyword list (None: not in it)
    keyword_score: float | None = None  # BM25 score
    fused_rank: int | None = None  # rank after fusion (hybrid; equals the hit's rank)
    exact_words: tuple[str, ...] = ()  # hybrid: the query words an exact match holds (ranked first for it)

    def to_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "matched_terms": list(self.matched_terms),
            "highlights": [list(h) for h in self.highlights],
            "vector_rank": self.vector_rank,
            "vector_score": self.vector_score,
            "keyword_rank": self.keyword_rank,
            "keyword_score": self.keyword_score,
            "fused_rank": self.fused_rank,
            "exact_words": list(self.exact_words),
        }


# Hit fields filled from the catalog row (the rest, item_id, score and rank, come from the search).
HIT_ROW_FIELDS = ("kind", "study_key", "source", "modality", "body_part", "description", "text", "labels")


@dataclass(frozen=True)
class Hit:
    """One search result (field names are the stable JSON output of the CLI)."""

    item_id: int  # stable item id (the FAISS id)
    score: float  # inner product with the query (cosine: vectors are L2-normalised)
    rank: int  # 1-based rank within the query's results
    kind: str = ""  # image | volume | report
    study_key: str = ""  # study the item belongs to
    source: str = ""  # path relative to the archive root
    modality: str = ""  # CT, MR, ...
    body_part: str = ""  # body part examined
    description: str = ""  # series/study description
    text: str = ""  # report text (for reports: the report)
    labels: Mapping[str, str] = field(default_factory=dict)  # labels from the dataset manifest
    evidence: Evidence | None = None  # keyword and hybrid modes: what found it (matched terms, both ranks)


@dataclass(frozen=True)
class StudyQuery:
    """A stored study (or item) resolved to a query vector."""

    study_key: str  # the study's key ("" if the item has none)
    item_ids: tuple[int, ...]  # items whose embeddings formed the vector
    vector: np.ndarray  # float32[D], L2-normalised (mean of the items' embeddings, renormalised)


class Searcher:
    """Search one out dir's indexes. Thread-safe: indexes open once under a lock, faiss searches read the
    shared index with per-call parameters, and the catalog gives each thread its own duckdb cursor."""

    def __init__(
        self,
        out_dir: Path,
        fingerprint: str | None = None,
        device: str = "auto",
        small_candidates: int = SMALL_CANDIDATES,
        where_timeout: float = DEFAULT_TIMEOUT_S,
        resident: bool = False,
        where_memory_mb: int = DEFAULT_MEMORY_MB,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.where_timeout = where_timeout  # seconds a --where filter may run in the catalog
        self.where_memory_mb = where_memory_mb  # the catalog's duckdb memory limit
        self.infos: dict[str, IndexInfo] = read_infos(self.out_dir, fingerprint)  # missing dir / fingerprint
        placement = place(device)
        self.device = placement.faiss  # "cpu" | "gpu" (faiss)
        self.torch_device = placement.torch  # exact search / re-ranking in torch (CUDA without faiss GPU)
        self.small_candidates = small_candidates  # filters with at most this many rows are scored exactly
        # A long-running process (the web service): display rows and study look-ups held in memory
        # (ResidentCatalog) and stored vectors read back from the index, instead of a Parquet scan each.
        self.resident = resident
        self._catalog: Catalog | None = None
        self._indexes: dict[str, AnnIndex] = {}
        self._reconstructable: set[str] = set()  # indexes whose vectors `vectors` may read back
        self._stores: dict[str, VectorStore | None] = {}
        self._keywords: KeywordIndex | None = None  # the full-text index, opened on the first keyword query
        self._view_rows: dict[str, int] = {}  # rows per catalog view, counted once (what a rare word is rare in)
        self._open_lock = threading.RLock()  # lazy opens happen once, whichever thread asks first
        self._warn_if_stale()

    @property
    def manifest_anonymised(self) -> bool:
        """Whether the out dir was built with --anonymise-paths (its sources are hashes)."""
        return read_manifest(self.out_dir).anonymised

    def _warn_if_stale(self) -> None:
        current = manifest_hash(read_manifest(self.out_dir))
        if any(info.manifest_hash != current for info in self.infos.values()):
            log.warning("%s: shards changed since the index was built; run `radretrieve build-index`", self.out_dir)

    @property
    def fingerprint(self) -> str:
        return next(iter(self.infos.values())).fingerprint if self.infos else ""

    @property
    def catalog(self) -> Catalog:
        with self._open_lock:
            if self._catalog is None:
                kind = ResidentCatalog if self.resident else Catalog
                self._catalog = kind(self.out_dir, where_timeout=self.where_timeout, memory_mb=self.where_memory_mb)
            return self._catalog

    def index(self, name: str) -> AnnIndex:
        """The loaded index `name` ("items" | "reports"), opened on first use."""
        with self._open_lock:
            return self._index(name)

    def _index(self, name: str) -> AnnIndex:
        if name not in self._indexes:
            info = self.infos.get(name)
            if info is None:
                raise IndexMissing(f"{self.out_dir}: no {name!r} index (run `radretrieve build-index {self.out_dir}`)")
            view = target(name).view
            # the catalog fetch is only the fallback for IVF-PQ indexes built without a re-rank store
            fetch = (lambda ids: self.catalog.vectors(ids, view)) if info.plan.index_type == "ivf_pq" else None
            # the re-rank store goes to the torch device only in a long-running process (see AnnIndex._to_torch)
            opened = open_index(self.out_dir, info, self.device, fetch, self.torch_device, torch_store=self.resident)
            if self.resident and opened.store is None and opened.enable_reconstruct():
                self._reconstructable.add(name)
            self._indexes[name] = opened
        return self._indexes[name]

    def vectors(self, ids: np.ndarray, name: str = "items") -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of `ids` in index `name`: (ids int64[m], float32[m, D]) ascending, m <= len(ids).

        From the memory-mapped re-rank store where the index has one (a page-cache read), else from the
        shards through the catalog (a Parquet scan).
        """
        with self._open_lock:
            if name not in self._stores:
                info = self.infos.get(name)
                self._stores[name] = open_store(self.out_dir, info) if info is not None else None
            store = self._stores[name]
        if store is not None:
            return store.fetch(ids)
        if self.resident and name in self.infos:
            self.index(name)  # opening it decides whether its vectors can be read back
        if name in self._reconstructable:
            want = np.unique(np.asarray(ids, dtype=np.int64))
            try:
                return want, self.index(name).reconstruct(want)
            except RuntimeError:  # an id the index lacks (shards added since the build): read the shards
                pass
        return self.catalog.vectors(ids, target(name).view)

    def _iter_vectors(self, ids: np.ndarray, name: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`vectors` in chunks of FETCH_CHUNK ids, for candidate sets too large to hold at once."""
        for start in range(0, len(ids), FETCH_CHUNK):
            yield self.vectors(ids[start : start + FETCH_CHUNK], name)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        self._indexes.clear()
        self._stores.clear()
        self._keywords = None
        self._view_rows.clear()
        self._reconstructable.clear()

    # -- core ----------------------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        index: str = "items",
        kind: str | None = None,
        where: str | None = None,
        params: SearchParams | None = None,
        dedupe_study: bool = False,
        exclude_ids: Sequence[int] = (),
        exclude_studies: Sequence[str] = (),
    ) -> list[list[Hit]]:
        """Top-k hits per query. queries: float32[Q, D] (or [D]), L2-normalised.

        `kind` (image | volume for items) and `where` (SQL over the catalog view) filter first; hits
        always satisfy them, and there are exactly k per query unless fewer rows pass. `dedupe_study`
        keeps the best hit per study; `exclude_*` drop ids/studies (e.g. the query's own study).
        """
        validate_search_args(k, params, self.device)
        q = self._check_queries(queries, index)
        tgt = target(index)
        flt = Filter(
            exclude_ids=frozenset(int(i) for i in exclude_ids),
            exclude_studies=frozenset(exclude_studies),
            dedupe_study=dedupe_study,
        )
        flt = self._filter(index, kind, where, flt)
        picked = self._run(q, k, flt, index, params)
        return self._hits(picked, tgt.view)

    def _filter(self, index: str, kind: str | None, where: str | None, base: Filter | None = None) -> Filter:
        """`base` narrowed to the rows of `kind` passing `where` (the catalog's candidates), when either is set."""
        tgt = target(index)
        kinds = self._kinds(tgt.kinds, kind)
        base = base if base is not None else Filter()
        if kinds == tgt.kinds and where is None:
            return base
        cand, studies = self.catalog.candidates(tgt.view, where, kinds)
        return Filter(cand, studies, base.exclude_ids, base.exclude_studies, base.dedupe_study)

    # -- keyword and hybrid --------------------------------------------------------------------------------
    @property
    def keywords(self) -> KeywordIndex:
        """The out dir's full-text index (indexers/fulltext.py), opened on first use."""
        with self._open_lock:
            if self._keywords is None:
                self._keywords = open_keyword(self.out_dir)
            return self._keywords

    def _documents(self, view: str) -> int:
        """Documents of a view in the full-text index: what a rare word's document frequency is a share of."""
        counted = self.keywords.info.views  # the full-text index's own count, as its document frequencies are
        if counted is not None:
            return int(counted.get(view, 0))
        with self._open_lock:  # an index built before it counted its views: the catalog's rows
            if view not in self._view_rows:
                self._view_rows[view] = self.catalog.count(view)
            return self._view_rows[view]

    def keyword(
        self,
        texts: Sequence[str],
        k: int = 10,
        *,
        index: str = "items",
        kind: str | None = None,
        where: str | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits per query text by BM25 over the full-text index, filtered by `kind` and `where` exactly as
        `search` is (before the cut to k). Each hit's `evidence` names the query terms it matched."""
        validate_search_args(k, None, self.device)
        view = target(index).view
        flt = self._filter(index, kind, where)
        out = []
        for text in texts:
            ranked, terms = self.keywords.search(text, view, k, flt.candidates)
            hits = self._hits([ranked], view)[0]
            out.append(
                [
                    _with_evidence(h, terms, Evidence("keyword", keyword_rank=h.rank, keyword_score=h.score))
                    for h in hits
                ]
            )
        return out

    def hybrid(
        self,
        texts: Sequence[str],
        queries: np.ndarray,
        k: int = 10,
        *,
        index: str = "items",
        kind: str | None = None,
        where: str | None = None,
        params: SearchParams | None = None,
        rrf_k: int = RRF_K,
        vector_weight: float = 1.0,
    ) -> list[list[Hit]]:
        """Top-k per query by reciprocal rank fusion (indexers/fusion.py) of the vector list of `queries[i]`
        (float32[Q, D]) and the keyword list of `texts[i]`, each `depth(k)` deep and both filtered first;
        `vector_weight`: fusion.UNTRAINED_VECTOR_WEIGHT for an untrained model."""
        validate_search_args(k, params, self.device)
        q = self._check_queries(queries, index)
        if len(texts) != len(q):
            raise SearchArgError(f"{len(texts)} query texts for {len(q)} query vectors")
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, int) or rrf_k < 1:
            raise SearchArgError(f"rrf_k must be an integer >= 1, got {rrf_k!r}")
        view, deep = target(index).view, depth(k)
        flt = self._filter(index, kind, where)
        vectors = self._run(q, deep, flt, index, params)
        out = []
        for text, by_vector in zip(texts, vectors):
            by_keyword, terms = self.keywords.search(text, view, deep, flt.candidates) if text.strip() else ([], ())
            exact, words = frozenset(), ()
            if by_keyword:  # the exact-match tier (indexers/rare.py): only where some item holds a query word
                ids = [i for i, _ in by_vector] + [i for i, _ in by_keyword]
                exact, words = self.keywords.exact_matches(text, view, ids, self._documents(view))
            fused = rrf(by_vector, by_keyword, k, rrf_k, vector_weight, exact)
            hits = self._hits([[(f.item_id, f.score) for f in fused]], view)[0]
            out.append([_with_evidence(h, terms, _fused_evidence(f, h.rank, words)) for h, f in zip(hits, fused)])
        return out

    def _run(self, q: np.ndarray, k: int, flt: Filter, name: str, params: SearchParams | None) -> list[Picked]:
        view = target(name).view
        lookup = lambda ids: self.catalog.study_keys(ids, view)  # noqa: E731
        if flt.candidates is not None and len(flt.candidates) <= self.small_candidates:
            batches = lambda: [self.vectors(flt.candidates, name)]  # noqa: E731
            return exact_over(q, k, flt, batches, len(flt.candidates), lookup)
        kinds = target(name).kinds

        def fallback(sub: np.ndarray) -> list[Picked]:
            if flt.candidates is None:  # everything: stream the shards
                n = self.index(name).ntotal
                return exact_over(sub, k, flt, lambda: iter_embeddings(self.out_dir, kinds), n, lookup)
            cands = flt.candidates
            return exact_over(sub, k, flt, lambda: self._iter_vectors(cands, name), len(cands), lookup)

        return ann_filtered(self.index(name), q, k, flt, params, lookup, fallback)

    def _hits(self, picked: list[Picked], view: str) -> list[list[Hit]]:
        rows = self.catalog.rows([i for p in picked for i, _ in p], view)
        out = []
        for p in picked:
            hits = []
            for rank, (item, score) in enumerate(p, start=1):
                r = rows.get(item)
                extra = {} if r is None else {f: getattr(r, f) for f in HIT_ROW_FIELDS}
                hits.append(Hit(item, score, rank, **extra))
            out.append(hits)
        return out

    def _check_queries(self, queries: np.ndarray, name: str) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        q = q[None, :] if q.ndim == 1 else q
        dim = self.infos[name].plan.dim if name in self.infos else q.shape[-1]
        if q.ndim != 2 or q.shape[1] != dim:
            raise SearchArgError(f"query vectors must be float32[Q, {dim}], got shape {tuple(np.shape(queries))}")
        return np.ascontiguousarray(q)

    @staticmethod
    def _kinds(allowed: tuple[str, ...], kind: str | None) -> tuple[str, ...]:
        if kind is None:
            return allowed
        if kind not in allowed:
            raise SearchArgError(f"--kind {kind!r}: choose from {', '.join(allowed)}")
        return (kind,)

    # -- study queries -------------------------------------------------------------------------------------
    def resolve(self, ref: str | int) -> StudyQuery:
        """A stored study as a query: `ref` is an item id (image/volume/report) or a study key."""
        ref_s = str(ref).strip()
        as_id = parse_item_id(ref_s)  # strict: a huge or non-ASCII number is a (missing) study key, not an error
        if as_id is not None:
            found = self.catalog.find_item(as_id)
            if found is not None:
                view, row = found
                return self._query_of(np.array([row.item_id], np.int64), view, row.study_key)
        ids = self.catalog.study_items(ref_s, "items")
        if len(ids):
            return self._query_of(ids, "items", ref_s)
        ids = self.catalog.study_items(ref_s, "reports")
        if len(ids):
            return self._query_of(ids, "reports", ref_s)
        raise StudyNotFound(f"{ref_s!r} is neither an item id nor a study key in {self.out_dir}")

    def _query_of(self, ids: np.ndarray, view: str, study_key: str) -> StudyQuery:
        got_ids, vecs = self.vectors(ids, view)  # view names are index names
        if len(got_ids) == 0:
            raise StudyNotFound(f"study {study_key!r}: no embeddings in the shards")
        # several series/images of one study: their mean direction stands for the study
        mean = vecs.mean(axis=0)
        mean /= max(float(np.linalg.norm(mean)), 1e-12)
        return StudyQuery(study_key, tuple(int(i) for i in got_ids), mean.astype(np.float32))

    def similar(
        self,
        ref: str | int | StudyQuery,
        k: int = 10,
        *,
        kind: str | None = None,
        where: str | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        """Study -> similar studies: one hit per study, the query's own study and items excluded."""
        query = ref if isinstance(ref, StudyQuery) else self.resolve(ref)
        exclude_studies = (query.study_key,) if query.study_key else ()
        return self.search(
            query.vector,
            k,
            kind=kind,
            where=where,
            params=params,
            dedupe_study=True,
            exclude_ids=query.item_ids,
            exclude_studies=exclude_studies,
        )[0]

    def reports_for(
        self,
        ref: str | int | StudyQuery | np.ndarray,
        k: int = 5,
        *,
        where: str | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        """Study -> nearest reports. `ref`: a stored study/item, or a query vector float32[D]."""
        vector = (
            ref if isinstance(ref, np.ndarray) else (ref if isinstance(ref, StudyQuery) else self.resolve(ref)).vector
        )
        return self.search(vector, k, index="reports", where=where, params=params)[0]


def _with_evidence(hit: Hit, terms: Sequence[str], evidence: Evidence) -> Hit:
    """`hit` with `evidence`, its matched terms (the query terms its searchable text holds) and the spans of its
    report text to highlight."""
    if terms:
        labels = json.dumps(dict(hit.labels))
        found = text_terms(searchable_text(hit.text, hit.description, hit.modality, hit.body_part, labels))
        matched = tuple(t for t in terms if t in found)
        marks = tuple((a, b) for a, b, _ in spans(hit.text, matched)) if matched else ()
        evidence = replace(evidence, matched_terms=matched, highlights=marks)
    return replace(hit, evidence=evidence)


def _fused_evidence(f: Fused, rank: int, words: tuple[str, ...]) -> Evidence:
    exact = words if f.exact else ()
    return Evidence("hybrid", (), (), f.vector_rank, f.vector_score, f.keyword_rank, f.keyword_score, rank, exact)
