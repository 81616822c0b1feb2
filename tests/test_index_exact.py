"""Exact search (streamed top-k and the built flat index) against numpy brute force, awkward sizes."""

from __future__ import annotations

import numpy as np
import pytest

from indexers import BuildConfig, Searcher, build_indexes, exact_search, exact_search_stream, recall_at
from radretrieve.testing.shards import SyntheticItems, normalise, write_out_dir

DIM = 16


def numpy_topk(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: full argsort of all scores (ties: ascending id via a stable sort on id order)."""
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


@pytest.mark.parametrize("n", [1, 11, 1000])
@pytest.mark.parametrize("k", [1, 5, 1003])
def test_stream_topk_equals_numpy(n: int, k: int) -> None:
    rng = np.random.default_rng(n + k)
    vecs = normalise(rng.standard_normal((n, DIM)))
    ids = rng.permutation(10 * n)[:n].astype(np.int64) + 5  # ids are not positions
    queries = normalise(rng.standard_normal((7, DIM)))
    # awkward batches: sizes 3, 3, 3, ... as in open_clip's chunked retrieval test
    batches = [(ids[i : i + 3], vecs[i : i + 3]) for i in range(0, n, 3)]
    scores, got = exact_search_stream(queries, batches, k)
    ref_s, ref_i = numpy_topk(queries, vecs, ids, k)
    m = min(k, n)
    np.testing.assert_array_equal(got[:, :m], ref_i)
    np.testing.assert_allclose(scores[:, :m], ref_s, rtol=1e-5, atol=1e-6)
    assert (got[:, m:] == -1).all() and np.isneginf(scores[:, m:]).all()  # padding past n, as faiss does
    one_shot = exact_search(queries, vecs, ids, k)[1]
    np.testing.assert_array_equal(one_shot, got)


@pytest.mark.parametrize("n", [1, 11, 1000])
def test_flat_index_search_equals_numpy(tmp_path, n: int) -> None:
    items = SyntheticItems.random(n, DIM, seed=n, kinds=("volume",))
    write_out_dir(tmp_path, [items], DIM)
    infos = build_indexes(tmp_path, BuildConfig())
    assert infos["items"].plan.index_type == "flat" and infos["items"].count == n
    queries = normalise(np.random.default_rng(1).standard_normal((4, DIM)))
    searcher = Searcher(tmp_path)
    for k in (1, 10, n + 5):
        hits = searcher.search(queries, k)
        ref_s, ref_i = numpy_topk(queries, items.vectors, items.ids, k)
        for row, qhits in enumerate(hits):
            assert len(qhits) == min(k, n)  # k > n: fewer hits, never -1 ids
            assert [h.item_id for h in qhits] == ref_i[row].tolist()
            np.testing.assert_allclose([h.score for h in qhits], ref_s[row], rtol=1e-5, atol=1e-6)
            assert [h.rank for h in qhits] == list(range(1, len(qhits) + 1))
    searcher.close()


def test_empty_reports_index_gives_no_hits(tmp_path) -> None:
    write_out_dir(tmp_path, [SyntheticItems.random(11, DIM, seed=0, kinds=("image",))], DIM)
    infos = build_indexes(tmp_path)
    assert infos["reports"].count == 0
    hits = Searcher(tmp_path).search(normalise(np.ones((2, DIM))), 3, index="reports")
    assert hits == [[], []]


def test_recall_at_counts_overlap() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, -1, -1]])
    found = np.array([[4, 3, 9, 8], [6, 7, -1, -1]])
    assert recall_at(found, truth, 4) == pytest.approx((2 / 4 + 1 / 2) / 2)
