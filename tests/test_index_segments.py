"""The segmented re-rank store: an incremental IVF-PQ add writes one new segment and leaves the old segment
files as they were (same inode, mtime and SHA-256), and search re-ranks across segments to the same exact
results as a full rebuild (and numpy brute force)."""

from __future__ import annotations

import json
import shutil

import numpy as np

from indexers import BuildConfig, Searcher, SearchParams, build_indexes
from indexers.load import open_index
from indexers.meta import read_index_json
from indexers.store import StoreInfo, VectorStore
from radretrieve.foundation.fileio import file_sha256
from radretrieve.testing.shards import SyntheticItems, append_shard, clustered_vectors, write_out_dir

DIM = 32
PQ = BuildConfig(index_type="ivf_pq", tune_queries=100)


def part(i: int, vecs: np.ndarray) -> SyntheticItems:
    return SyntheticItems.random(len(vecs), DIM, seed=i, id_offset=10**6 * (i + 1), kinds=("volume",), vectors=vecs)


def file_state(path) -> tuple[int, int, str]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, file_sha256(path)


def test_incremental_add_writes_a_segment_and_reranks_across_segments(tmp_path) -> None:
    inc, full = tmp_path / "inc", tmp_path / "full"
    vecs = clustered_vectors(3500, DIM, 30, seed=6)
    parts = [part(0, vecs[:2500]), part(1, vecs[2500:])]
    write_out_dir(inc, parts[:1], DIM)
    first = build_indexes(inc, PQ, targets=("items",))["items"]
    assert first.store is not None and len(first.store.segments) == 1
    old_files = {name: file_state(inc / "index" / name) for name in first.store.files}

    append_shard(inc, parts[1], "task-00001")
    grown = build_indexes(inc, PQ, targets=("items",))["items"]
    assert grown.plan == first.plan and grown.count == 3500  # an add, not a rebuild
    assert grown.store is not None and grown.store.segments[0] == first.store.segments[0]
    assert [s.count for s in grown.store.segments] == [2500, 1000]
    for name, state in old_files.items():  # the old segment was neither rewritten nor renamed over
        assert file_state(inc / "index" / name) == state, name
        assert grown.checks[name] == first.checks[name]
    recorded = json.loads((inc / "index" / "index.json").read_text())["indexes"]["items"]
    assert [s["count"] for s in recorded["store"]["segments"]] == [2500, 1000]
    assert set(grown.store.files) <= set(recorded["checks"])  # every segment file is checked at open

    shutil.copytree(inc, full, ignore=shutil.ignore_patterns("index"))
    rebuilt = build_indexes(full, PQ, targets=("items",))["items"]
    assert rebuilt.store is not None and len(rebuilt.store.segments) == 1

    ids = np.concatenate([p.ids for p in parts])
    queries = clustered_vectors(25, DIM, 30, seed=8)
    scores = queries @ vecs.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    ref_ids, ref_scores = ids[order], np.take_along_axis(scores, order, axis=1)
    # every list probed and every vector a candidate: the re-ranked results are exact for both indexes
    everything = SearchParams(nprobe=first.plan.nlist, rerank=400)
    for out in (inc, full):
        info = read_index_json(out)["items"]
        for torch_device in (None, "cpu"):  # numpy re-ranking, and the torch backend over the segments
            got_s, got_i = open_index(out, info, "cpu", None, torch_device).search(queries, 10, everything)
            np.testing.assert_array_equal(got_i, ref_ids)
            np.testing.assert_allclose(got_s, ref_scores, rtol=0, atol=1e-6)
    got_ids, got = Searcher(inc).vectors(ids[2490:2510])  # ten rows from each segment
    np.testing.assert_array_equal(got_ids, ids[2490:2510])
    np.testing.assert_array_equal(got, vecs[2490:2510])


def test_a_store_from_before_segments_reads_as_one_segment(tmp_path) -> None:
    vecs = clustered_vectors(50, 8, 3, seed=1)
    ids = np.arange(50, dtype=np.int64)[::-1] * 3  # added in descending id order
    np.save(tmp_path / "items.vectors.f32.npy", vecs)
    order = np.argsort(ids)
    np.save(tmp_path / "items.vectors.ids.npy", np.stack([ids[order], order]))
    legacy = {"vectors": "items.vectors.f32.npy", "ids": "items.vectors.ids.npy", "dtype": "float32", "count": 50}
    info = StoreInfo.from_json(legacy)
    assert info is not None and info.files == ("items.vectors.f32.npy", "items.vectors.ids.npy")
    got_ids, got = VectorStore(tmp_path, info).fetch(np.array([3, 147, 999]))
    np.testing.assert_array_equal(got_ids, [3, 147])
    np.testing.assert_array_equal(got, vecs[[48, 0]])
