"""Exact inner-product search and re-ranking in torch, for GPUs that faiss cannot use.

faiss GPU wheels are built for one CUDA version and are often missing where a GPU is; torch ships its own
CUDA. So where CUDA is present but faiss sees no GPU (indexers/device.py decides), flat indexes are
searched and IVF-PQ candidates re-ranked here: the vectors live on the device (float16 on CUDA, half the
memory and bandwidth at ~1e-3 score error; float32 on the CPU, where tests run it against numpy).

A search scores a block of queries against a chunk of database rows at a time (one matmul), keeps each
chunk's top-k (torch.topk) and merges it into a running top-k, so the [queries, rows] score block stays
bounded whatever the database size. Positions are mapped to item ids as the flat index's id map does.
Ties are broken by whatever torch.topk returns (not by id, unlike indexers/exact.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUERY_BATCH = 1024  # queries scored at once
SCORE_BLOCK = 1 << 28  # score-block elements per matmul (512 MiB in float16)
UPLOAD_ROWS = 1 << 18  # rows copied to the device at once (a memory-mapped store is never loaded whole)
DEVICE_SHARE = 0.5  # at most this share of the device's free memory goes to one table


def torch_dtype(device: str, dtype: str | None = None) -> Any:
    """float16 on CUDA, float32 elsewhere, unless `dtype` ("float16" | "float32") says otherwise."""
    import torch

    name = dtype or ("float16" if device.startswith("cuda") else "float32")
    return {"float16": torch.float16, "float32": torch.float32}[name]


def fits_device(rows: int, dim: int, device: str, dtype: str | None = None) -> bool:
    """Whether a [rows, dim] table fits in DEVICE_SHARE of the device's free memory (always on the CPU)."""
    import torch

    if not device.startswith("cuda"):
        return True
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return rows * dim * torch_dtype(device, dtype).itemsize <= DEVICE_SHARE * free


class TorchTable:
    """Vectors float[n, D] (any array-like: numpy, memory-mapped, or several such parts) on a torch device."""

    def __init__(self, parts: list[Any], device: str = "cuda", dtype: str | None = None) -> None:
        import torch

        self.device = torch.device(device)
        self.dtype = torch_dtype(device, dtype)
        rows = sum(len(p) for p in parts)
        dim = parts[0].shape[1] if parts else 0
        self.vectors = torch.empty((rows, dim), dtype=self.dtype, device=self.device)  # [n, D]
        filled = 0
        for part in parts:  # chunked: a memory-mapped part is paged in a slice at a time
            for start in range(0, len(part), UPLOAD_ROWS):
                block = np.array(part[start : start + UPLOAD_ROWS], dtype=np.float32)  # a copy: memmaps are read-only
                self.vectors[filled : filled + len(block)] = torch.from_numpy(block).to(self.device, self.dtype)
                filled += len(block)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def _queries(self, queries: np.ndarray) -> Any:
        import torch

        q = np.ascontiguousarray(queries, dtype=np.float32)
        return torch.from_numpy(q).to(self.device, self.dtype)

    def topk(self, queries: np.ndarray, k: int, chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k positions. queries float32[Q, D] -> (scores float32[Q, k], positions int64[Q, k]),
        sorted by descending score, padded with -inf / -1 where k > n. `chunk_rows` overrides the
        database rows scored per matmul (tests use awkward small chunks)."""
        import torch

        nq, n = len(queries), len(self)
        out_s = np.full((nq, k), -np.inf, np.float32)
        out_p = np.full((nq, k), -1, np.int64)
        if n == 0 or nq == 0:
            return out_s, out_p
        q_all = self._queries(queries)
        kk = min(k, n)
        with torch.inference_mode():
            for qs in range(0, nq, QUERY_BATCH):
                q = q_all[qs : qs + QUERY_BATCH]
                chunk = chunk_rows or max(kk, SCORE_BLOCK // len(q))
                best_s = torch.full((len(q), 0), -torch.inf, dtype=torch.float32, device=self.device)
                best_p = torch.zeros((len(q), 0), dtype=torch.int64, device=self.device)
                for start in range(0, n, chunk):
                    scores = q @ self.vectors[start : start + chunk].T  # [b, chunk] in the table's dtype
                    s, p = scores.topk(min(kk, scores.shape[1]), dim=1)
                    s = s.float()
                    best_s, pick = torch.cat([best_s, s], dim=1).topk(min(kk, best_s.shape[1] + s.shape[1]), dim=1)
                    best_p = torch.cat([best_p, p + start], dim=1).gather(1, pick)
                out_s[qs : qs + len(q), :kk] = best_s.cpu().numpy()
                out_p[qs : qs + len(q), :kk] = best_p.cpu().numpy()
        return out_s, out_p

    def score_rows(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact scores float32[Q, m] of each query with its candidate rows int64[Q, m] (-1: -inf)."""
        import torch

        out = np.full(rows.shape, -np.inf, np.float32)
        if rows.size == 0 or len(self) == 0:
            return out
        q_all = self._queries(queries)
        step = max(1, SCORE_BLOCK // max(rows.shape[1] * self.vectors.shape[1], 1))
        with torch.inference_mode():
            for qs in range(0, len(rows), step):
                r = torch.from_numpy(np.ascontiguousarray(rows[qs : qs + step])).to(self.device)
                vecs = self.vectors[r.clamp(min=0)]  # [b, m, D] gathered on the device
                s = torch.bmm(vecs, q_all[qs : qs + step, :, None])[:, :, 0].float()
                s[r < 0] = -torch.inf
                out[qs : qs + len(r)] = s.cpu().numpy()
        return out


class TorchExact:
    """An exact index on a torch device: vectors float[n, D] with item ids int64[n] (the flat index's id map)."""

    def __init__(self, vectors: Any, ids: np.ndarray, device: str = "cuda", dtype: str | None = None) -> None:
        self.table = TorchTable([vectors], device, dtype)
        self.ids = np.asarray(ids, dtype=np.int64)  # position -> item id
        if len(self.ids) != len(self.table):
            raise ValueError(f"{len(self.ids)} ids for {len(self.table)} vectors")

    def search(self, queries: np.ndarray, k: int, chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product. queries float32[Q, D] -> (scores float32[Q, k], ids int64[Q, k]),
        padded with -inf / -1 where k > n, as faiss does."""
        scores, pos = self.table.topk(queries, k, chunk_rows)
        return scores, np.where(pos >= 0, self.ids[np.maximum(pos, 0)], -1)


def flat_backend(index: Any, device: str) -> TorchExact | None:
    """A TorchExact copy of an `IDMap2,Flat` faiss index, or None if it does not fit the device."""
    import faiss

    inner = faiss.downcast_index(index.index)
    n, d = int(inner.ntotal), int(inner.d)
    if n == 0 or not fits_device(n, d, device):
        return None
    vectors = faiss.rev_swig_ptr(inner.get_xb(), n * d).reshape(n, d)  # a view of the index's own floats
    return TorchExact(vectors, faiss.vector_to_array(index.id_map), device)
