"""Searcher: filters and k honoured (both strategies), dedupe by study, study queries, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from indexers import (
    BuildConfig,
    FingerprintMismatch,
    IndexMissing,
    SearchArgError,
    Searcher,
    StudyNotFound,
    build_indexes,
)
from radretrieve.outdir.catalog import BadWhere
from radretrieve.testing.shards import SyntheticItems, clustered_vectors, write_out_dir

DIM = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3000 items (volume/image/report) in two shards; flat index so both filter strategies are exact."""
    out = tmp_path_factory.mktemp("corpus")
    vecs = clustered_vectors(3000, DIM, n_clusters=12, seed=7)
    kinds = ("volume", "image", "report")
    parts = [
        SyntheticItems.random(
            1500,
            DIM,
            seed=i,
            id_offset=1000 + 10**5 * i,
            kinds=kinds,
            per_study=4,
            vectors=vecs[i * 1500 : (i + 1) * 1500],
        )
        for i in range(2)
    ]
    write_out_dir(out, parts, DIM)
    build_indexes(out, BuildConfig())
    cols = {
        "ids": np.concatenate([p.ids for p in parts]),
        "vecs": vecs,
        "kind": np.array(sum((p.kinds for p in parts), ())),
        "study": np.array(sum((p.studies for p in parts), ())),
        "modality": np.array(sum((p.modalities for p in parts), ())),
        "body_part": np.array(sum((p.body_parts for p in parts), ())),
    }
    return out, cols


def brute(q: np.ndarray, cols: dict, mask: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    ids, vecs = cols["ids"][mask], cols["vecs"][mask]
    s = vecs @ q
    order = np.argsort(-s, kind="stable")[:k]
    return ids[order].tolist(), s[order].tolist()


QUERIES = clustered_vectors(5, DIM, n_clusters=12, seed=7)  # same mixture as the corpus


@pytest.mark.parametrize("small_candidates", [20_000, 0])  # exact-subset strategy / ANN over-fetch strategy
@pytest.mark.parametrize(
    "where, kind, k",
    [
        ("modality = 'CT'", None, 10),
        ("modality = 'MR' AND body_part = 'HEAD'", "volume", 25),
        ("body_part = 'KNEE' AND modality = 'CR' AND item_id % 9 = 0", None, 40),  # very selective: k > matches
    ],
)
def test_filters_and_k_are_honoured(corpus, small_candidates: int, where: str, kind: str | None, k: int) -> None:
    out, cols = corpus
    searcher = Searcher(out, small_candidates=small_candidates)
    clause = {
        "modality = 'CT'": lambda: cols["modality"] == "CT",
        "modality = 'MR' AND body_part = 'HEAD'": lambda: (cols["modality"] == "MR") & (cols["body_part"] == "HEAD"),
    }.get(where, lambda: (cols["body_part"] == "KNEE") & (cols["modality"] == "CR") & (cols["ids"] % 9 == 0))()
    kinds = (kind,) if kind else ("volume", "image")
    mask = clause & np.isin(cols["kind"], kinds)
    for q, hits in zip(QUERIES, searcher.search(QUERIES, k, kind=kind, where=where)):
        assert len(hits) == min(k, int(mask.sum()))
        assert all(h.kind in kinds for h in hits)
        ref_ids, ref_scores = brute(q, cols, mask, k)
        assert [h.item_id for h in hits] == ref_ids
        np.testing.assert_allclose([h.score for h in hits], ref_scores, rtol=1e-5, atol=1e-6)
        if "modality = 'CT'" in where:
            assert all(h.modality == "CT" for h in hits)


@pytest.mark.parametrize("small_candidates", [20_000, 0])
def test_similar_dedupes_by_study_and_excludes_query(corpus, small_candidates: int) -> None:
    out, cols = corpus
    searcher = Searcher(out, small_candidates=small_candidates)
    study = cols["study"][np.flatnonzero(cols["kind"] == "volume")[5]]
    hits = searcher.similar(study, k=8)
    assert len(hits) == 8
    studies = [h.study_key for h in hits]
    assert len(set(studies)) == 8 and study not in studies
    # reference: mean vector of the study's image/volume items, best item per other study
    own = (cols["study"] == study) & (cols["kind"] != "report")
    qv = cols["vecs"][own].mean(axis=0)
    qv /= np.linalg.norm(qv)
    mask = (cols["kind"] != "report") & (cols["study"] != study)
    scores = cols["vecs"][mask] @ qv
    best: dict[str, float] = {}
    for s, sc in zip(cols["study"][mask], scores):
        best[s] = max(best.get(s, -2.0), float(sc))
    ref = sorted(best.items(), key=lambda t: -t[1])[:8]
    assert studies == [s for s, _ in ref]
    np.testing.assert_allclose([h.score for h in hits], [v for _, v in ref], rtol=1e-5, atol=1e-6)


def test_dedupe_option_on_text_search(corpus) -> None:
    out, _ = corpus
    hits = Searcher(out).search(QUERIES, 15, dedupe_study=True, where="modality <> 'MR'")
    for qhits in hits:
        assert len(qhits) == 15 and len({h.study_key for h in qhits}) == 15


def test_resolve_and_reports(corpus) -> None:
    out, cols = corpus
    searcher = Searcher(out)
    vol = int(cols["ids"][cols["kind"] == "volume"][0])
    by_id = searcher.resolve(str(vol))
    assert by_id.item_ids == (vol,)
    np.testing.assert_allclose(by_id.vector, cols["vecs"][cols["ids"] == vol][0], rtol=1e-6)
    by_study = searcher.resolve(by_id.study_key)
    assert vol in by_study.item_ids and abs(np.linalg.norm(by_study.vector) - 1) < 1e-5
    reports = searcher.reports_for(str(vol), k=5)
    mask = cols["kind"] == "report"
    assert [h.item_id for h in reports] == brute(by_id.vector, cols, mask, 5)[0]
    assert all(h.kind == "report" and h.text.startswith("report of") for h in reports)
    with pytest.raises(StudyNotFound):
        searcher.resolve("no-such-study")


def test_errors_are_one_line(corpus, tmp_path) -> None:
    out, _ = corpus
    with pytest.raises(IndexMissing):
        Searcher(tmp_path / "nowhere")
    write_out_dir(tmp_path, [SyntheticItems.random(5, DIM, seed=0)], DIM)
    with pytest.raises(IndexMissing, match="build-index"):
        Searcher(tmp_path)  # out dir without index/
    with pytest.raises(FingerprintMismatch, match="fingerprint"):
        Searcher(out, fingerprint="another-model")
    searcher = Searcher(out, fingerprint="test-fingerprint")
    for call, err in [
        (lambda: searcher.search(QUERIES, 0), SearchArgError),
        (lambda: searcher.search(QUERIES, 5, where="nosuch = 1"), BadWhere),
        (lambda: searcher.search(QUERIES, 5, where="1=1; SELECT 1"), BadWhere),
        (lambda: searcher.search(QUERIES[:, :5], 5), SearchArgError),
        (lambda: searcher.search(QUERIES, 5, kind="report"), SearchArgError),
    ]:
        with pytest.raises(err) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("max_fetch", [16_384, 64])  # 64: the over-fetch gives up early -> exact fallback
def test_overfetch_grows_until_k_hits(tmp_path, monkeypatch, max_fetch: int) -> None:
    """Candidates the ANN ranks last: the over-fetch must grow (or fall back), never return short."""
    import indexers.filtered as filtered
    from indexers.ann import AnnIndex

    monkeypatch.setattr(filtered, "MAX_ANN_FETCH", max_fetch)
    dim, n = 8, 5000
    vecs = clustered_vectors(n, dim, n_clusters=4, seed=1)
    items = SyntheticItems.random(n, dim, seed=0, kinds=("volume",), vectors=vecs)
    write_out_dir(tmp_path, [items], dim)
    build_indexes(tmp_path, BuildConfig(), targets=("items",))
    q = vecs[:1]
    far = items.ids[np.argsort(vecs @ q[0])[:60]]  # the 60 items least similar to the query
    where = f"item_id IN ({', '.join(str(i) for i in far)})"
    calls: list[int] = []
    real = AnnIndex.search
    monkeypatch.setattr(AnnIndex, "search", lambda self, x, k, p=None: (calls.append(k), real(self, x, k, p))[1])
    hits = Searcher(tmp_path, small_candidates=0).search(q, 20, where=where)[0]
    mask = np.isin(items.ids, far)
    ref = items.ids[mask][np.argsort(-(vecs[mask] @ q[0]), kind="stable")[:20]]
    assert [h.item_id for h in hits] == ref.tolist()
    if max_fetch > 64:
        assert len(calls) >= 2 and calls == sorted(calls)  # it grew round by round
    else:
        assert calls == [64]  # one capped round, then the exact fallback over the candidates
