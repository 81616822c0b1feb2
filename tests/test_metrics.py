"""Retrieval metrics against independent references: scikit-learn and a plain-python brute force."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    coverage_error,
    label_ranking_average_precision_score,
    top_k_accuracy_score,
)

from radretrieve.evaluation import metrics
from radretrieve.evaluation.metrics import (
    evaluate,
    evaluate_embeddings,
    evaluate_similarity,
    group_relevance,
    label_relevance,
    matrix_relevance,
    pair_relevance,
    per_query_stats,
    rank_block,
)

KS = (1, 5, 10, 20)  # 20 > N for the 11-item cases


def brute_force(sim: np.ndarray, mask: np.ndarray, ks=KS) -> dict[str, float]:
    """Reference written without numpy tricks: per query, per relevant item, count items scoring >= it."""
    per: dict[str, list[float]] = {}
    for row, rel in zip(sim.tolist(), mask.tolist()):
        rel_scores = [s for s, r in zip(row, rel) if r]
        if not rel_scores:
            continue
        ranks = sorted(sum(1 for t in row if t >= s) for s in rel_scores)
        for k in ks:
            per.setdefault(f"recall@{k}", []).append(1.0 if ranks[0] <= k else 0.0)
            per.setdefault(f"precision@{k}", []).append(sum(1 for r in ranks if r <= k) / k)
        ap = sum(sum(1 for r2 in ranks if r2 <= r) / r for r in ranks) / len(ranks)
        per.setdefault("mAP", []).append(ap)
        per.setdefault("MRR", []).append(1.0 / ranks[0])
        per.setdefault("median_rank", []).append(float(ranks[0]))
    out = {name: sum(v) / len(v) for name, v in per.items()}
    out["median_rank"] = statistics.median(per["median_rank"])
    return out


def values(result) -> dict[str, float]:
    return {name: e.value for name, e in result.metrics.items()}


def assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-9), name


def tie_heavy(rng: np.random.Generator, q: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    sim = rng.integers(0, 3, size=(q, n)).astype(np.float32)  # three distinct scores: ties everywhere
    mask = rng.random((q, n)) < 0.3
    mask[0] = False  # a query with no relevant item
    mask[1] = True  # a query where everything is relevant
    return sim, mask


@pytest.mark.parametrize("chunk", [1, 3, 11, 1000])
def test_pairs_random_scores_match_sklearn(chunk: int) -> None:
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((11, 11)).astype(np.float32)
    gt = rng.permutation(11)
    res = evaluate_similarity(sim, pair_relevance(gt, 11), ks=KS, chunk_size=chunk, n_bootstrap=0)
    labels = np.arange(11)
    for k in KS:
        want = 1.0 if k >= 11 else top_k_accuracy_score(gt, sim, k=k, labels=labels)
        assert res.metrics[f"recall@{k}"].value == pytest.approx(want)
    onehot = np.eye(11, dtype=int)[gt]
    ranks = [coverage_error(onehot[i : i + 1], sim[i : i + 1]) for i in range(11)]
    assert res.metrics["MRR"].value == pytest.approx(np.mean(1.0 / np.array(ranks)))
    assert res.metrics["median_rank"].value == pytest.approx(np.median(ranks))
    # With one relevant item, AP is the reciprocal rank; sklearn's AP must agree.
    aps = [average_precision_score(onehot[i], sim[i]) for i in range(11)]
    assert res.metrics["mAP"].value == pytest.approx(np.mean(aps))
    assert_close(values(res), brute_force(sim, onehot.astype(bool)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tie_heavy_matches_sklearn_and_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim, mask = tie_heavy(rng, 11, 11)
    stats = per_query_stats(lambda a, b: sim[a:b], 11, matrix_relevance(mask), KS, chunk_size=3)
    scored = mask.any(axis=1)
    sk_ap = [average_precision_score(mask[i], sim[i]) for i in np.flatnonzero(scored)]
    np.testing.assert_allclose(stats.ap[scored], sk_ap)
    lrap = label_ranking_average_precision_score(mask[scored], sim[scored])
    assert stats.ap[scored].mean() == pytest.approx(lrap)
    res = evaluate_similarity(sim, matrix_relevance(mask), ks=KS, chunk_size=3, n_bootstrap=0)
    assert res.n_scored == int(scored.sum()) and res.n_queries == 11
    assert_close(values(res), brute_force(sim, mask))


def test_single_relevant_tied_ranks_match_coverage_error() -> None:
    rng = np.random.default_rng(4)
    sim = rng.integers(0, 2, size=(11, 11)).astype(np.float32)
    gt = rng.integers(0, 11, size=11)
    stats = per_query_stats(lambda a, b: sim[a:b], 11, pair_relevance(gt, 11), KS, chunk_size=3)
    onehot = np.eye(11, dtype=int)[gt]
    want = [coverage_error(onehot[i : i + 1], sim[i : i + 1]) for i in range(11)]
    np.testing.assert_array_equal(stats.first_rank, want)


@pytest.mark.parametrize("density", [0.1, 0.6])  # 0.6: > FEW_RELEVANT relevant per row -> sort path
def test_bigger_random_case_and_chunk_invariance(density: float) -> None:
    rng = np.random.default_rng(5)
    sim = np.round(rng.standard_normal((37, 53)), 1).astype(np.float32)  # rounding -> some ties
    mask = rng.random((37, 53)) < density
    assert (mask.sum(axis=1).max() > metrics.FEW_RELEVANT) == (density > 0.5)
    want = brute_force(sim, mask)
    for chunk in (1, 4, 37):
        res = evaluate_similarity(sim, matrix_relevance(mask), ks=KS, chunk_size=chunk, n_bootstrap=0)
        assert_close(values(res), want)


@pytest.mark.parametrize("seed", [10, 11])
def test_count_and_sort_methods_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sim, mask = tie_heavy(rng, 11, 11)
    mask[2:6] = False
    mask[2:6, rng.integers(0, 11, size=4)] = True  # a few single-relevant rows among many-relevant ones
    by_count = rank_block(sim, mask, KS, method="count")
    by_sort = rank_block(sim, mask, KS, method="sort")
    for name in ("n_relevant", "first_rank", "hits", "ap"):
        np.testing.assert_allclose(getattr(by_count, name), getattr(by_sort, name), err_msg=name)
    scored = mask.any(axis=1)
    want = [average_precision_score(m, s) for m, s in zip(mask[scored], sim[scored])]
    np.testing.assert_allclose(by_count.ap[scored], want)


def test_all_scores_equal_is_pessimistic() -> None:
    sim = np.zeros((3, 11), dtype=np.float32)
    res = evaluate_similarity(sim, pair_relevance(np.array([0, 5, 10]), 11), ks=KS, n_bootstrap=0)
    assert res.metrics["recall@1"].value == 0.0 and res.metrics["recall@10"].value == 0.0
    assert res.metrics["recall@20"].value == 1.0
    assert res.metrics["median_rank"].value == 11
    assert res.metrics["mAP"].value == pytest.approx(1 / 11)


def test_k_larger_than_gallery() -> None:
    sim = np.random.default_rng(6).standard_normal((4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0], [0, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=bool)
    res = evaluate_similarity(sim, matrix_relevance(mask), ks=(10,), n_bootstrap=0)
    assert res.metrics["recall@10"].value == 1.0
    # Missing slots count as misses: P@10 = relevant / 10.
    assert res.metrics["precision@10"].value == pytest.approx(np.mean([2, 1, 3, 1]) / 10)


def test_queries_without_relevant_items_are_left_out() -> None:
    sim = np.eye(5, dtype=np.float32)
    gt = np.array([0, 1, -1, 3, -1])
    res = evaluate_similarity(sim, pair_relevance(gt, 5), n_bootstrap=0)
    assert (res.n_queries, res.n_scored, res.n_gallery) == (5, 3, 5)
    assert res.metrics["recall@1"].value == 1.0 and res.metrics["MRR"].value == 1.0
    with pytest.raises(ValueError, match="no query has a relevant"):
        evaluate_similarity(sim, pair_relevance(np.full(5, -1), 5))


def test_group_and_label_relevance_match_explicit_masks() -> None:
    rng = np.random.default_rng(7)
    sim = rng.standard_normal((11, 11)).astype(np.float32)
    studies: list = [f"s{i % 4}" for i in range(11)]
    studies[10] = float("nan")  # an empty CSV cell read by pandas: matches nothing
    mask = np.array([[a == b and isinstance(a, str) for b in studies] for a in studies])
    got = evaluate_similarity(sim, group_relevance(studies, studies), ks=KS, chunk_size=3, n_bootstrap=0)
    assert_close(values(got), brute_force(sim, mask))

    organ = ["head", "chest", "abdomen", "head", "chest", "head", "head", "chest", "abdomen", "head", "chest"]
    modality = ["CT", "MRI", "CT", "unknown", "X-ray", "CT", "MRI", "X-ray", "CT", "CT", "MRI"]
    lab = {"organ": organ, "modality": modality}
    rel = label_relevance(lab, lab, keys=("organ", "modality"))
    want_mask = np.array(
        [
            [organ[i] == organ[j] and modality[i] == modality[j] and modality[i] != "unknown" for j in range(11)]
            for i in range(11)
        ]
    )
    np.testing.assert_array_equal(rel.block(0, 11), want_mask)
    res = evaluate_similarity(sim, rel, ks=KS, chunk_size=3, n_bootstrap=0)
    assert res.n_scored == 10  # the "unknown" query matches nothing, not even itself
    assert_close(values(res), brute_force(sim, want_mask))


def test_embeddings_and_callable_paths_chunk_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    q_emb = rng.standard_normal((11, 4)).astype(np.float32)
    g_emb = rng.standard_normal((13, 4)).astype(np.float32)
    gt = rng.integers(0, 13, size=11)
    rel = pair_relevance(gt, 13)
    full = evaluate_similarity(q_emb @ g_emb.T, rel, ks=KS, n_bootstrap=50)
    via_emb = evaluate_embeddings(q_emb, g_emb, rel, ks=KS, chunk_size=3, n_bootstrap=50)
    assert full.to_dict() == via_emb.to_dict()
    calls: list[tuple[int, int]] = []

    def score_fn(a: int, b: int) -> np.ndarray:
        calls.append((a, b))
        return q_emb[a:b] @ g_emb.T

    evaluate(score_fn, 11, 13, rel, chunk_size=3, n_bootstrap=0)
    assert calls == [(0, 3), (3, 6), (6, 9), (9, 11)]
    calls.clear()
    monkeypatch.setattr(metrics, "CHUNK_SCORES", 40)  # default chunk: about 40 scores -> 3 queries of 13
    evaluate(score_fn, 11, 13, rel, n_bootstrap=0)
    assert calls == [(0, 3), (3, 6), (6, 9), (9, 11)]


def test_bootstrap_is_seeded_and_sensible() -> None:
    rng = np.random.default_rng(9)
    n = 400
    sim = rng.standard_normal((n, 2)).astype(np.float32)  # random: R@1 about 0.5
    gt = np.zeros(n, dtype=np.int64)
    a = evaluate_similarity(sim, pair_relevance(gt, 2), ks=(1,), n_bootstrap=500, seed=3)
    b = evaluate_similarity(sim, pair_relevance(gt, 2), ks=(1,), n_bootstrap=500, seed=3)
    assert a.to_dict() == b.to_dict()
    r1 = a.metrics["recall@1"]
    assert r1.low <= r1.value <= r1.high
    half_width = 1.96 * math.sqrt(r1.value * (1 - r1.value) / n)  # normal approximation
    assert (r1.high - r1.low) / 2 == pytest.approx(half_width, rel=0.2)
    med = a.metrics["median_rank"]
    assert med.low in (1.0, 1.5, 2.0) and med.high in (1.0, 1.5, 2.0)


def test_to_dict_is_json_and_none_without_bootstrap() -> None:
    sim = np.eye(3, dtype=np.float32)
    res = evaluate_similarity(sim, pair_relevance(np.arange(3), 3), n_bootstrap=0)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["ties"] == "pessimistic"
    assert d["metrics"]["recall@1"] == {"value": 1.0, "low": None, "high": None}
    assert list(d["metrics"]) == [
        "recall@1",
        "recall@5",
        "recall@10",
        "precision@1",
        "precision@5",
        "precision@10",
        "mAP",
        "MRR",
        "median_rank",
    ]


def test_bad_inputs_raise_value_error() -> None:
    sim = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_similarity(np.full((2, 3), np.nan, dtype=np.float32), pair_relevance(np.array([0, 1]), 3))
    with pytest.raises(ValueError, match="gt values"):
        pair_relevance(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_similarity(sim, pair_relevance(np.array([0, 1]), 3), chunk_size=0)
    with pytest.raises(ValueError, match="shape"):
        evaluate_similarity(sim, matrix_relevance(np.zeros((2, 4), dtype=bool)))
    with pytest.raises(ValueError, match="lack the key"):
        label_relevance({"organ": ["a"]}, {"organ": ["a"]}, keys=("organ", "modality"))
    with pytest.raises(ValueError, match="different lengths"):
        label_relevance({"organ": ["a"], "modality": []}, {"organ": [], "modality": []}, keys=("organ", "modality"))
    with pytest.raises(ValueError, match="k must be"):
        evaluate_similarity(sim, pair_relevance(np.array([0, 1]), 3), ks=(0,))
