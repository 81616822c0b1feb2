"""Incremental builds: new shards are added without rebuilding and match a rebuild; type changes rebuild."""

from __future__ import annotations

import json
import shutil

import numpy as np

from indexers import BuildConfig, Searcher, build_indexes
from radretrieve.outdir.manifest import read_manifest, write_manifest
from radretrieve.testing.shards import SyntheticItems, append_shard, clustered_vectors, write_out_dir

DIM = 16


def part(i: int, n: int = 400, vectors: np.ndarray | None = None) -> SyntheticItems:
    return SyntheticItems.random(n, DIM, seed=i, id_offset=10**5 * (i + 1), kinds=("volume", "report"), vectors=vectors)


def ids_and_scores(out, queries, k=15):
    hits = Searcher(out).search(queries, k)
    return [[h.item_id for h in q] for q in hits], [[h.score for h in q] for q in hits]


def test_incremental_add_equals_rebuild(tmp_path) -> None:
    inc, full = tmp_path / "inc", tmp_path / "full"
    write_out_dir(inc, [part(0), part(1)], DIM)
    first = build_indexes(inc)
    faiss_mtime = (inc / "index" / "volumes.faiss").stat().st_mtime_ns
    assert build_indexes(inc)["items"].built_at == first["items"].built_at  # nothing new: kept as is
    assert (inc / "index" / "volumes.faiss").stat().st_mtime_ns == faiss_mtime
    append_shard(inc, part(2), "task-00002")
    grown = build_indexes(inc)
    assert grown["items"].count == first["items"].count + 200 and grown["reports"].count == 600
    assert len(grown["items"].shards) == 3
    shutil.copytree(inc, full, ignore=shutil.ignore_patterns("index"))
    rebuilt = build_indexes(full)
    queries = clustered_vectors(6, DIM, 3, seed=9)
    assert ids_and_scores(inc, queries) == ids_and_scores(full, queries)
    assert grown["items"].plan.factory == rebuilt["items"].plan.factory
    assert grown["items"].plan.count == 400 and rebuilt["items"].plan.count == 600  # grown, not re-planned


def test_ivf_incremental_add_keeps_training_and_finds_new(tmp_path) -> None:
    vecs = clustered_vectors(9000, DIM, 30, seed=4)
    write_out_dir(tmp_path, [part(0, 4000, vecs[:4000]), part(1, 4000, vecs[4000:8000])], DIM)
    cfg = BuildConfig(exact_threshold=1000, tune_queries=100)
    first = build_indexes(tmp_path, cfg, targets=("items",))["items"]
    assert first.plan.index_type == "ivf_flat"
    new = part(2, 1000, vecs[8000:])
    append_shard(tmp_path, new, "task-00002")
    grown = build_indexes(tmp_path, cfg, targets=("items",))["items"]
    assert grown.plan == first.plan and grown.count == first.count + 500  # added, not re-planned
    assert grown.recall_at_10 >= 0.95  # re-measured after the add
    new_vol = new.ids[np.array(new.kinds) == "volume"]
    hits = Searcher(tmp_path).search(vecs[8000:][np.array(new.kinds) == "volume"][:20], 1)
    assert [h[0].item_id for h in hits] == new_vol[:20].tolist()  # new items are their own nearest


def test_type_change_and_replaced_shard_rebuild(tmp_path) -> None:
    write_out_dir(tmp_path, [part(0, 2400)], DIM)
    cfg = BuildConfig(exact_threshold=1500, tune_queries=100)
    assert build_indexes(tmp_path, cfg)["items"].plan.index_type == "flat"  # 1200 items
    append_shard(tmp_path, part(1, 2400), "task-00001")
    grown = build_indexes(tmp_path, cfg)["items"]
    assert grown.plan.index_type == "ivf_flat" and grown.count == 2400  # flat outgrew: rebuilt
    # a task re-run with other rows replaces its shard: the old vectors must leave the index
    manifest = read_manifest(tmp_path)
    write_manifest(
        tmp_path,
        manifest.__class__(
            manifest.fingerprint, manifest.preprocess_hash, manifest.dim, manifest.model, manifest.shards[1:]
        ),
    )
    smaller = build_indexes(tmp_path, cfg)["items"]
    assert smaller.count == 1200 and smaller.plan.index_type == "flat"
    recorded = json.loads((tmp_path / "index" / "index.json").read_text())
    assert [s["task_id"] for s in recorded["indexes"]["items"]["shards"]] == ["task-00001"]


def test_faiss_file_ahead_of_index_json_is_rebuilt_not_double_added(tmp_path) -> None:
    write_out_dir(tmp_path, [part(0), part(1)], DIM)
    build_indexes(tmp_path)
    old_json = (tmp_path / "index" / "index.json").read_bytes()
    append_shard(tmp_path, part(2), "task-00002")
    build_indexes(tmp_path)
    (tmp_path / "index" / "index.json").write_bytes(old_json)  # as if the build died between the two writes
    again = build_indexes(tmp_path)["items"]
    assert again.count == 600  # 3 shards x 200 volumes, none twice
    hits = Searcher(tmp_path).search(clustered_vectors(3, DIM, 2, seed=1), 50)
    assert all(len({h.item_id for h in q}) == 50 for q in hits)


def test_add_without_new_rows_of_a_kind_keeps_its_tuned_params(tmp_path) -> None:
    """A new shard with only reports adds nothing to the items index: its tuned nprobe must stay (it once
    fell back to the default of one probe, with nothing to re-tune on)."""
    vecs = clustered_vectors(4000, DIM, 30, seed=4)
    write_out_dir(tmp_path, [part(0, 4000, vecs)], DIM)
    cfg = BuildConfig(exact_threshold=1000, tune_queries=100)
    first = build_indexes(tmp_path, cfg, targets=("items",))["items"]
    assert first.plan.index_type == "ivf_flat" and (first.params.nprobe or 1) > 1
    reports_only = SyntheticItems.random(50, DIM, seed=9, id_offset=9 * 10**6, kinds=("report",))
    append_shard(tmp_path, reports_only, "task-00001")
    again = build_indexes(tmp_path, cfg, targets=("items",))["items"]
    assert len(again.shards) == 2 and again.count == first.count  # the shard is recorded, no rows added
    assert again.params == first.params and again.recall_by_query == first.recall_by_query
