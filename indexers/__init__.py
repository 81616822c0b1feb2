"""FAISS index building, loading, searching and evaluating (CPU, and GPU where faiss sees one).

Public API (faiss is imported lazily inside the functions, so importing this package stays cheap)::

    build_indexes(out_dir, BuildConfig(...)) -> {"items": IndexInfo, "reports": IndexInfo}
    Searcher(out_dir, fingerprint=None, device="auto").search(queries, k, kind=, where=, params=, ...)
    choose_plan(count, dim, max_memory, exact_threshold, index_type) -> IndexPlan

OUT/index/ holds one .faiss file per target (volumes.faiss, reports.faiss), index.json, and for IVF-PQ
a re-rank store of memory-mapped segments, one per build or add (<target>.vectors.NNNNN.f32.npy or .f16.npy
+ <target>.vectors.NNNNN.ids.npy; indexers/store.py), and for every ANN index its tuning queries with their
exact neighbours (<target>.truth.npz; indexers/truth.py), which nightly adds update instead of recomputing.
Flat search and re-ranking run in torch where CUDA is present and faiss has no GPU (indexers/torch_exact.py).
Beside them, the full-text (keyword) index of every row's text, OUT/index/fulltext.NNNNN/ (indexers/fulltext.py,
its analysis in indexers/analyzer.py), which `Searcher.keyword` searches by BM25 and `Searcher.hybrid` fuses with
the vector list by reciprocal rank fusion (indexers/fusion.py).
"""

from __future__ import annotations

from indexers.build import BuildConfig, build_indexes
from indexers.errors import FingerprintMismatch, IndexMissing, SearchArgError, StaleIndex, StudyNotFound
from indexers.exact import exact_search, exact_search_stream, recall_at
from indexers.meta import IndexInfo, read_index_json
from indexers.plan import IndexPlan, SearchParams, choose_plan
from indexers.search import Hit, Searcher, StudyQuery

__all__ = [
    "BuildConfig",
    "FingerprintMismatch",
    "Hit",
    "IndexInfo",
    "IndexMissing",
    "IndexPlan",
    "SearchArgError",
    "SearchParams",
    "Searcher",
    "StaleIndex",
    "StudyNotFound",
    "StudyQuery",
    "build_indexes",
    "choose_plan",
    "exact_search",
    "exact_search_stream",
    "read_index_json",
    "recall_at",
]
