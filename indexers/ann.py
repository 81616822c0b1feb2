"""One loaded index: CPU copy, optional GPU copy, per-call search params, exact re-ranking for IVF-PQ.

Re-ranking reads the candidates' full vectors from the memory-mapped re-rank store (indexers/store.py);
indexes built before the store existed fall back to a fetch function (duckdb over the shards, slow).

`AnnIndex.search` is the single place that talks to a faiss index at query time. Search params are
turned into a fresh faiss `SearchParameters*` object per call (never written onto the shared index), so
concurrent callers with different params cannot disturb each other.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from indexers.device import fits_gpu, to_gpu, validate_search_args
from indexers.plan import IndexPlan, SearchParams
from indexers.store import VectorStore

if TYPE_CHECKING:
    from indexers.torch_exact import TorchExact, TorchTable

# fetch(ids int64[n]) -> (ids int64[m], vectors float32[m, D]) for m <= n found ids, ascending
VectorFetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
RERANK_BLOCK_ROWS = 32768  # candidate vectors gathered at once; bounds the float32 [queries, k', D] block


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    # keyed by pid: a forked child inherits the parent's executor without its threads, and would hang on it
    return ThreadPoolExecutor(workers, thread_name_prefix="rerank")


def _rerank_pool() -> ThreadPoolExecutor:
    """Worker threads for re-ranking blocks, as many as faiss's OpenMP threads (the caller's setting)."""
    import faiss

    return _pool(max(1, faiss.omp_get_max_threads()), os.getpid())


def faiss_params(plan: IndexPlan, params: SearchParams, k: int, exclude: Any = None) -> Any:
    """A fresh faiss SearchParameters object for this call (None for flat without `exclude`).

    `exclude`: a faiss IDSelector of ids to leave out of the results (`excluding`); the caller keeps it
    alive for the search (faiss holds a bare pointer)."""
    import faiss

    extra = {"sel": exclude} if exclude is not None else {}
    if plan.index_type in ("ivf_flat", "ivf_pq"):
        nprobe = min(params.nprobe or 1, plan.nlist)
        return faiss.SearchParametersIVF(nprobe=nprobe, **extra)
    if plan.index_type == "hnsw":
        # efSearch below k would silently return fewer than k results
        return faiss.SearchParametersHNSW(efSearch=max(params.ef_search or 16, k), **extra)
    return faiss.SearchParameters(**extra) if extra else None


def excluding(ids: np.ndarray | None) -> Any:
    """A faiss selector of every id but `ids` int64[m] (None when there are none): measuring recall on stored
    tuning queries that are in the index (indexers/truth.py) without them finding themselves."""
    import faiss

    if ids is None or len(ids) == 0:
        return None
    batch = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
    selector = faiss.IDSelectorNot(batch)
    selector.referenced = batch  # the Not selector holds a bare pointer to the batch
    return selector


class AnnIndex:
    """A faiss index (ids = item ids) with its plan, tuned params and device placement."""

    def __init__(
        self,
        index: Any,
        plan: IndexPlan,
        params: SearchParams,
        device: str = "cpu",
        fetch: VectorFetch | None = None,
        store: VectorStore | None = None,
        torch_device: str | None = None,
        torch_store: bool = True,
    ) -> None:
        self.cpu = index  # faiss.Index on CPU, as read from disk
        self.plan = plan
        self.params = params  # tuned defaults; per-call params override field by field
        self.device = device  # "cpu" | "gpu" (already resolved)
        self.fetch = fetch  # shard vectors by id, for IVF-PQ re-ranking without a store (older indexes)
        self.store = store  # memory-mapped vectors for IVF-PQ re-ranking (preferred over `fetch`)
        self.gpu: Any | None = None
        self._gpu_ids: np.ndarray | None = None  # flat on GPU: position -> item id
        # torch (indexers/torch_exact.py) for flat search and re-ranking where faiss has no GPU
        self.torch_device = torch_device if device != "gpu" else None
        self._torch_flat: TorchExact | None = None
        self._torch_store: TorchTable | None = None
        if device == "gpu" and index.ntotal > 0:
            self._to_gpu()
        elif self.torch_device is not None and index.ntotal > 0:
            self._to_torch(self.torch_device, torch_store)

    def _to_torch(self, device: str, with_store: bool) -> None:
        """Flat: the index's vectors (already in RAM) to the device. IVF-PQ: the re-rank store, only when
        `with_store` (a long-running process): uploading reads the whole store from disk, which a one-off
        search, re-ranking a few hundred paged-in rows per query on the CPU, never does."""
        from indexers.torch_exact import TorchTable, fits_device, flat_backend

        if self.plan.index_type == "flat":
            self._torch_flat = flat_backend(self.cpu, device)
        elif self.plan.index_type == "ivf_pq" and self.store is not None and with_store:
            if fits_device(len(self.store), self.plan.dim, device):
                self._torch_store = TorchTable(self.store.parts(), device)

    @property
    def exact_backend(self) -> str:
        """What runs flat search / re-ranking: "torch", else "faiss" (faiss search, numpy re-ranking)."""
        return "torch" if self._torch_flat is not None or self._torch_store is not None else "faiss"

    def _to_gpu(self) -> None:
        import faiss

        if self.plan.index_type == "flat":
            # the IDMap2 wrapper is not clonable to GPU everywhere: move the inner flat, map ids here
            self.gpu = to_gpu(faiss.downcast_index(self.cpu.index), "flat")
            self._gpu_ids = faiss.vector_to_array(self.cpu.id_map).astype(np.int64)
        else:
            self.gpu = to_gpu(self.cpu, self.plan.index_type)

    @property
    def ntotal(self) -> int:
        return int(self.cpu.ntotal)

    def enable_reconstruct(self) -> bool:
        """Prepare `reconstruct` (call before the index is shared between threads); False where the index
        holds no exact vectors (IVF-PQ: its re-rank store has them)."""
        import faiss

        if self.plan.index_type == "ivf_flat":
            # id -> (list, offset) table: a few bytes per vector, built once
            faiss.extract_index_ivf(self.cpu).set_direct_map_type(faiss.DirectMap.Hashtable)
            return True
        return self.plan.index_type in ("flat", "hnsw")  # IDMap2 wrappers keep their id -> row map

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors float32[n, D] of item ids int64[n] (after `enable_reconstruct`); raises
        RuntimeError for an id the index does not hold."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return np.empty((0, self.plan.dim), np.float32)
        return np.asarray(self.cpu.reconstruct_batch(ids), dtype=np.float32)

    def search(
        self, queries: np.ndarray, k: int, params: SearchParams | None = None, exclude: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product.

        queries: float32[Q, D]. Returns (scores float32[Q, k], ids int64[Q, k]); rows with fewer than k
        results are padded with score -inf and id -1 (callers drop them). `exclude` (a selector from
        `excluding`, for tuning) leaves ids out; such a search runs on the CPU copy.
        """
        p = self.params.merged(params)
        # GPU limits are the caller's to enforce on user input (Searcher); internal requests beyond them
        # (a grown over-fetch) quietly run on the CPU copy instead
        validate_search_args(k, p, "cpu")
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.ntotal == 0 or len(q) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        can = self.store is not None or self.fetch is not None
        rerank = self.plan.index_type == "ivf_pq" and p.rerank > 1 and can
        fetch_k = min(k * p.rerank if rerank else k, self.ntotal)
        scores, ids = self._raw_search(q, fetch_k, p) if exclude is None else self._cpu_search(q, fetch_k, p, exclude)
        if rerank:
            scores, ids = self._rerank(q, ids, k)
        return _pad(scores, ids, k)

    def _raw_search(self, q: np.ndarray, k: int, p: SearchParams) -> tuple[np.ndarray, np.ndarray]:
        if self._torch_flat is not None:
            return self._torch_flat.search(q, k)
        fp = faiss_params(self.plan, p, k)
        if self.gpu is not None and fits_gpu(k, p):
            scores, pos = self.gpu.search(q, k, params=fp) if fp is not None else self.gpu.search(q, k)
            if self._gpu_ids is None:
                return scores, pos
            return scores, np.where(pos >= 0, self._gpu_ids[np.maximum(pos, 0)], -1)
        # CPU: the default, and the fallback for requests beyond the GPU limits
        return self._cpu_search(q, k, p)

    def _cpu_search(self, q: np.ndarray, k: int, p: SearchParams, exclude: Any = None) -> tuple[np.ndarray, np.ndarray]:
        fp = faiss_params(self.plan, p, k, exclude)
        if fp is None:
            return self.cpu.search(q, k)
        return self.cpu.search(q, k, params=fp)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for candidate ids int64[Q, k'] from the stored vectors; best k per query."""
        rows, take = self._candidate_rows(cand)
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        kk = min(k, cand.shape[1])
        step = max(1, RERANK_BLOCK_ROWS // max(cand.shape[1], 1))

        def block(start: int) -> None:
            sl = slice(start, start + step)
            valid = rows[sl] >= 0
            if self._torch_store is not None:  # gathered and scored on the torch device
                scores = self._torch_store.score_rows(q[sl], rows[sl])
            else:
                vecs = take(rows[sl])  # float32[b, k', D] gather
                scores = np.matmul(vecs, q[sl, :, None])[..., 0]
            scores[~valid] = -np.inf
            ids = np.where(valid, cand[sl], -1)
            order = np.lexsort((ids, -scores), axis=1)[:, :kk]  # descending score, then ascending id
            out_s[sl, :kk] = np.take_along_axis(scores, order, axis=1)
            out_i[sl, :kk] = np.take_along_axis(ids, order, axis=1)

        starts = range(0, len(q), step)
        if len(starts) > 1 and self._torch_store is None:
            # numpy's gather and matmul release the GIL: blocks run on faiss's thread count (the re-rank
            # gather was most of a batched IVF-PQ search, on one core)
            list(_rerank_pool().map(block, starts))
        else:
            for start in starts:
                block(start)
        return out_s, np.where(np.isfinite(out_s), out_i, -1)

    def _candidate_rows(self, cand: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """(rows int64[Q, k'] with -1 for absent ids, take(rows) -> float32[..., D]) for candidate ids."""
        if self.store is not None:
            rows = self.store.rows_of(cand)
            return np.where(cand >= 0, rows, -1), self.store.take
        have_ids, have_vecs = self.fetch(np.unique(cand[cand >= 0])) if self.fetch else (np.empty(0, np.int64), None)
        if len(have_ids) == 0:
            zero = np.zeros((1, self.plan.dim), np.float32)
            return np.full(cand.shape, -1, np.int64), lambda rows: zero[np.zeros(rows.shape, np.int64)]
        pos = np.minimum(np.searchsorted(have_ids, cand), len(have_ids) - 1)
        rows = np.where((cand >= 0) & (have_ids[pos] == cand), pos, -1)
        return rows, lambda r: np.asarray(have_vecs[np.maximum(r, 0)], dtype=np.float32)


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad/trim to [Q, k], with -1 ids forced to -inf scores (faiss pads with -3.4e38 or -inf)."""
    q, have = ids.shape
    out_s = np.full((q, k), -np.inf, np.float32)
    out_i = np.full((q, k), -1, np.int64)
    out_s[:, : min(have, k)] = scores[:, :k]
    out_i[:, : min(have, k)] = ids[:, :k]
    out_s[out_i < 0] = -np.inf
    return out_s, out_i
