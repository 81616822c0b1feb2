"""The torch exact backend (for GPUs without a faiss GPU build), run on the CPU against numpy brute force:
top-k ids and scores in float32, within float16 error in float16, flat indexes and IVF-PQ re-ranking."""

from __future__ import annotations

import numpy as np
import pytest

from indexers import BuildConfig, build_indexes
from indexers.device import Placement, place, torch_cuda
from indexers.load import open_index
from indexers.meta import read_index_json
from indexers.torch_exact import TorchExact
from radretrieve.testing.shards import SyntheticItems, clustered_vectors, normalise, write_out_dir

DIM = 16


def numpy_topk(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: a full argsort of every score."""
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


@pytest.mark.parametrize("n", [1, 11, 1000])
@pytest.mark.parametrize("k", [1, 5, 1003])
@pytest.mark.parametrize("chunk_rows", [3, None])
def test_torch_exact_equals_numpy(n: int, k: int, chunk_rows: int | None) -> None:
    rng = np.random.default_rng(n + k)
    vecs = normalise(rng.standard_normal((n, DIM)))
    ids = rng.permutation(10 * n)[:n].astype(np.int64) + 5  # ids are not positions
    queries = normalise(rng.standard_normal((7, DIM)))
    scores, got = TorchExact(vecs, ids, device="cpu").search(queries, k, chunk_rows=chunk_rows)
    ref_s, ref_i = numpy_topk(queries, vecs, ids, k)
    m = min(k, n)
    np.testing.assert_array_equal(got[:, :m], ref_i)  # random floats: no ties
    np.testing.assert_allclose(scores[:, :m], ref_s, rtol=1e-5, atol=1e-6)
    assert (got[:, m:] == -1).all() and np.isneginf(scores[:, m:]).all()  # padded past n, as faiss does


def test_torch_exact_float16_is_within_fp16_error() -> None:
    rng = np.random.default_rng(0)
    vecs = clustered_vectors(3000, 64, 20, seed=1)
    ids = np.arange(3000, dtype=np.int64) * 3
    queries = normalise(rng.standard_normal((50, 64)))
    scores, got = TorchExact(vecs, ids, device="cpu", dtype="float16").search(queries, 10, chunk_rows=700)
    ref_s, ref_i = numpy_topk(queries, vecs, ids, 10)
    by_id = dict(zip(ids.tolist(), vecs))
    exact = np.array([[by_id[i] @ q for i in row] for q, row in zip(queries, got)])
    np.testing.assert_allclose(scores, exact, atol=3e-3)  # its own hits, scored within fp16 error
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), ref_i.tolist())]) >= 0.97


def test_flat_index_on_torch_equals_numpy(tmp_path) -> None:
    items = SyntheticItems.random(500, DIM, seed=3, kinds=("volume",))
    write_out_dir(tmp_path, [items], DIM)
    info = build_indexes(tmp_path, targets=("items",))["items"]
    assert info.plan.index_type == "flat"
    ann = open_index(tmp_path, info, "cpu", None, torch_device="cpu")
    assert ann.exact_backend == "torch"
    queries = normalise(np.random.default_rng(1).standard_normal((9, DIM)))
    for k in (1, 10, 600):
        scores, got = ann.search(queries, k)
        ref_s, ref_i = numpy_topk(queries, items.vectors, items.ids, k)
        np.testing.assert_array_equal(got[:, :500], ref_i)
        np.testing.assert_allclose(scores[:, :500], ref_s, rtol=1e-5, atol=1e-6)


def test_ivf_pq_rerank_on_torch_equals_numpy_rerank(tmp_path) -> None:
    vecs = clustered_vectors(4000, 32, 30, seed=2)
    items = SyntheticItems.random(4000, 32, seed=0, kinds=("volume",), vectors=vecs)
    write_out_dir(tmp_path, [items], 32)
    build_indexes(tmp_path, BuildConfig(index_type="ivf_pq", tune_queries=100), targets=("items",))
    info = read_index_json(tmp_path)["items"]
    on_torch = open_index(tmp_path, info, "cpu", None, torch_device="cpu")
    on_numpy = open_index(tmp_path, info, "cpu", None)
    assert on_torch.exact_backend == "torch" and on_numpy.exact_backend == "faiss"
    queries = clustered_vectors(40, 32, 30, seed=7)
    t_scores, t_ids = on_torch.search(queries, 10)
    n_scores, n_ids = on_numpy.search(queries, 10)
    np.testing.assert_array_equal(t_ids, n_ids)
    np.testing.assert_allclose(t_scores, n_scores, rtol=1e-5, atol=1e-6)
    by_id = dict(zip(items.ids.tolist(), vecs))
    exact = np.array([[by_id[i] @ q for i in row] for q, row in zip(queries, t_ids)], np.float32)
    np.testing.assert_allclose(t_scores, exact, atol=1e-6)  # exact re-ranked scores (numpy reference)


def test_placement_rules() -> None:
    assert place("cpu") == Placement("cpu", None)  # asked for the CPU: no torch either
    if not torch_cuda():  # this CI: no CUDA, so nothing runs in torch by default
        assert place("auto") == Placement("cpu", None)


@pytest.mark.skipif(not torch_cuda(), reason="needs a CUDA device")
def test_on_cuda_searcher_uses_torch_where_faiss_has_no_gpu(tmp_path) -> None:
    """On a GPU machine: fp16 on CUDA within fp16 error of numpy, and chosen by `Searcher` when faiss sees
    no GPU (faiss-cpu next to a CUDA torch)."""
    from indexers import Searcher
    from indexers.device import num_gpus

    vecs = clustered_vectors(20_000, 64, 40, seed=4)
    ids = np.arange(20_000, dtype=np.int64) * 5 + 1
    queries = clustered_vectors(64, 64, 40, seed=5)
    scores, got = TorchExact(vecs, ids, device="cuda").search(queries, 10)
    ref_s, ref_i = numpy_topk(queries, vecs, ids, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), ref_i.tolist())]) >= 0.97
    np.testing.assert_allclose(scores, ref_s, atol=3e-3)
    items = SyntheticItems.random(2000, 64, seed=0, kinds=("volume",), vectors=vecs[:2000])
    write_out_dir(tmp_path, [items], 64)
    build_indexes(tmp_path, targets=("items",))
    searcher = Searcher(tmp_path)
    if num_gpus() == 0:
        assert searcher.torch_device == "cuda" and searcher.index("items").exact_backend == "torch"
    hits = searcher.search(queries, 10)
    ref = numpy_topk(queries, vecs[:2000], items.ids, 10)[1]
    assert np.mean([len({h.item_id for h in q} & set(r)) / 10 for q, r in zip(hits, ref.tolist())]) >= 0.97
