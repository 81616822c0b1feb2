"""Text queries in tuning: the items index reaches the recall target for text-like queries that sit away from
the images (a modality gap), not only for image-like ones, and index.json records both recalls."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from indexers import BuildConfig, Searcher, build_indexes
from indexers.exact import exact_search, recall_at
from indexers.tune import QuerySet, measure_recall, tune_sets
from radretrieve.cli.app import app
from radretrieve.testing.shards import SyntheticItems, clustered_vectors, normalise, write_out_dir

DIM, N_ITEMS, N_REPORTS, N_FRESH = 32, 6000, 3000, 300
# text = image + a common offset + noise, renormalised: the offset pulls every text vector the same way out of
# the image clusters, so a text query's neighbours spread over more inverted lists than an image query's
# (measured here: image queries alone tune to nprobe 5, where text recall@10 is 0.889; both: nprobe 8)
OFFSET, NOISE = 2.0, 1.0


def text_like(images: np.ndarray, offset: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(images.shape) * (NOISE / np.sqrt(DIM))
    return normalise(images + OFFSET * offset + noise)


def gap_out_dir(tmp_path):
    vecs = clustered_vectors(N_ITEMS + N_REPORTS + N_FRESH, DIM, n_clusters=40, seed=1)
    offset = normalise(np.random.default_rng(2).standard_normal((1, DIM)))[0]
    items = SyntheticItems.random(N_ITEMS, DIM, seed=0, id_offset=10**6, kinds=("volume",), vectors=vecs[:N_ITEMS])
    reports = SyntheticItems.random(
        N_REPORTS,
        DIM,
        seed=1,
        id_offset=10**7,
        kinds=("report",),
        vectors=text_like(vecs[N_ITEMS : N_ITEMS + N_REPORTS], offset, seed=3),
    )
    write_out_dir(tmp_path, [items, reports], DIM)
    fresh_images = vecs[N_ITEMS + N_REPORTS :]  # never indexed
    return items, fresh_images, text_like(fresh_images, offset, seed=4)


def test_items_index_is_tuned_for_text_queries_too(tmp_path) -> None:
    items, fresh_images, fresh_text = gap_out_dir(tmp_path)
    info = build_indexes(tmp_path, BuildConfig(exact_threshold=1000, tune_queries=300), targets=("items",))["items"]
    assert info.plan.index_type == "ivf_flat"
    recorded = json.loads((tmp_path / "index" / "index.json").read_text())["indexes"]["items"]
    assert set(recorded["recall_by_query"]) == {"image", "text"}
    for query in ("image", "text"):
        entry = recorded["recall_by_query"][query]
        assert entry["recall_at_10"] >= 0.95 and entry["queries"] == 300, (query, entry)
    assert recorded["recall_at_10"] == min(r["recall_at_10"] for r in recorded["recall_by_query"].values())

    # fresh text-like queries through the searcher, against numpy brute force over the indexed vectors
    truth = exact_search(fresh_text, items.vectors, items.ids, 10)[1]
    hits = Searcher(tmp_path).search(fresh_text, 10)
    got = recall_at(np.array([[h.item_id for h in q] for q in hits]), truth)
    assert got >= 0.95, (got, info.params)

    # the data must be able to tell: params tuned on image queries alone fall short on text queries
    ann = Searcher(tmp_path).index("items")
    image_truth = exact_search(fresh_images, items.vectors, items.ids, 10)[1]
    image_only = tune_sets(ann, [QuerySet("image", fresh_images, image_truth)])
    assert measure_recall(ann, fresh_text, truth, image_only.params) < 0.95, image_only.params


def test_build_index_prints_and_json_report_both_recalls(tmp_path) -> None:
    vecs = clustered_vectors(60, DIM, n_clusters=3, seed=5)
    parts = [SyntheticItems.random(60, DIM, seed=0, kinds=("volume", "report"), vectors=vecs)]
    write_out_dir(tmp_path, parts, DIM)
    runner = CliRunner()
    result = runner.invoke(app, ["build-index", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "index items: flat, 30 vectors, recall@10 image 1.000, text 1.000" in result.output
    assert "index reports: flat, 30 vectors, recall@10 text 1.000, image 1.000" in result.output
    result = runner.invoke(app, ["build-index", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)["indexes"]["items"]
    assert items["index_type"] == "flat" and items["count"] == 30
    assert items["recall_by_query"] == {
        "image": {"recall_at_10": 1.0, "queries": 0},
        "text": {"recall_at_10": 1.0, "queries": 0},
    }
