"""The IVF-PQ re-rank store: its rows are the shard vectors, it grows with incremental adds, it is what
re-ranking reads (not the catalog), and scores re-ranked from it are exact (float32) or within fp16."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from indexers import BuildConfig, Searcher, build_indexes
from indexers.ann import RERANK_BLOCK_ROWS
from indexers.errors import StaleIndex
from indexers.meta import read_index_json
from indexers.plan import SearchParams
from indexers.store import StoreInfo, VectorStore, resolve_dtype
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.testing.shards import SyntheticItems, append_shard, clustered_vectors, write_out_dir

DIM = 32
PQ = BuildConfig(index_type="ivf_pq", tune_queries=100)


def part(i: int, vecs: np.ndarray) -> SyntheticItems:
    # volumes and reports interleaved: the items store must hold exactly the volume rows
    return SyntheticItems.random(
        len(vecs), DIM, seed=i, id_offset=10**6 * (i + 1), kinds=("volume", "report"), vectors=vecs
    )


def volumes(parts: list[SyntheticItems]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.concatenate([p.ids[np.array(p.kinds) == "volume"] for p in parts])
    vecs = np.concatenate([p.vectors[np.array(p.kinds) == "volume"] for p in parts])
    return ids, vecs


def store_of(out) -> VectorStore:
    info = read_index_json(out)["items"]
    assert info.store is not None and info.store.count == info.count
    return VectorStore(out / "index", info.store)


def assert_store_equals(store: VectorStore, ids: np.ndarray, vecs: np.ndarray, dtype=np.float32) -> None:
    assert len(store) == len(ids) and store.dtype == dtype
    got_ids, got = store.fetch(ids[::-1])  # any order in, ascending out
    order = np.argsort(ids)
    np.testing.assert_array_equal(got_ids, ids[order])
    np.testing.assert_array_equal(got, vecs[order].astype(dtype).astype(np.float32))  # bit-exact
    assert (store.rows_of(np.array([-1, 5, ids.max() + 1])) == -1).all()  # absent ids


def test_store_rows_equal_shard_vectors_and_grow_incrementally(tmp_path) -> None:
    vecs = clustered_vectors(5000, DIM, 30, seed=1)
    parts = [part(0, vecs[:2000]), part(1, vecs[2000:4000])]
    write_out_dir(tmp_path, parts, DIM)
    first = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert first.store is not None and first.store.vectors == "items.vectors.00000.f32.npy"
    recorded = json.loads((tmp_path / "index" / "index.json").read_text())["indexes"]["items"]["store"]
    assert recorded == {
        "dtype": "float32",
        "count": 2000,
        "segments": [{"vectors": "items.vectors.00000.f32.npy", "ids": "items.vectors.00000.ids.npy", "count": 2000}],
    }
    assert_store_equals(store_of(tmp_path), *volumes(parts))
    parts.append(part(2, vecs[4000:]))
    append_shard(tmp_path, parts[-1], "task-00002")
    grown = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert grown.plan == first.plan and grown.count == 2500  # appended, not rebuilt
    assert_store_equals(store_of(tmp_path), *volumes(parts))
    assert not list((tmp_path / "index").glob(".*.tmp"))  # no temp files left behind


def test_rerank_reads_the_store_and_scores_are_exact(tmp_path) -> None:
    vecs = clustered_vectors(4000, DIM, 30, seed=2)
    items = part(0, vecs)
    write_out_dir(tmp_path, [items], DIM)
    info = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert info.params.rerank > 1 and info.recall_at_10 >= 0.95
    searcher = Searcher(tmp_path)
    ann = searcher.index("items")
    assert ann.store is not None and ann.fetch is None  # no duckdb scans at query time
    ids, vol = volumes([items])
    queries = clustered_vectors(20, DIM, 30, seed=2)  # fresh vectors of the same mixture
    scores, found = ann.search(queries, 10)
    by_id = dict(zip(ids.tolist(), vol))
    exact = np.array([[by_id[i] @ q for i in row] for q, row in zip(queries, found)], np.float32)
    np.testing.assert_allclose(scores, exact, rtol=0, atol=1e-6)
    # enough queries x candidates for several re-rank blocks (run on worker threads) agree with one-by-one
    many = clustered_vectors(80, DIM, 30, seed=7)
    params = SearchParams(nprobe=4, rerank=64)  # 80 x 640 candidates > RERANK_BLOCK_ROWS
    assert len(many) * 10 * params.rerank > RERANK_BLOCK_ROWS
    batch_s, batch_i = ann.search(many, 10, params)
    for q, row_s, row_i in zip(many, batch_s, batch_i):
        one_s, one_i = ann.search(q[None], 10, params)
        np.testing.assert_array_equal(one_i[0], row_i)
        np.testing.assert_allclose(row_s, [by_id[i] @ q for i in row_i], rtol=0, atol=1e-6)
    # the exact-scored small-filter path reads the store too, and agrees with the catalog
    got_ids, got = searcher.vectors(ids[:50])
    cat_ids, cat = searcher.catalog.vectors(ids[:50], "items")
    np.testing.assert_array_equal(got_ids, cat_ids)
    np.testing.assert_array_equal(got, cat)


def test_float16_store_is_within_fp16_tolerance(tmp_path) -> None:
    vecs = clustered_vectors(4000, DIM, 20, seed=3)
    items = part(0, vecs)
    write_out_dir(tmp_path, [items], DIM)
    cfg = BuildConfig(index_type="ivf_pq", tune_queries=100, store_dtype="float16")
    info = build_indexes(tmp_path, cfg, targets=("items",))["items"]
    assert info.store is not None and info.store.dtype == "float16" and info.store.vectors.endswith(".f16.npy")
    ids, vol = volumes([items])
    assert_store_equals(store_of(tmp_path), ids, vol, np.float16)
    queries = vol[:10]
    hits = Searcher(tmp_path).search(queries, 5)
    by_id = dict(zip(ids.tolist(), vol))
    for q, qhits in zip(queries, hits):
        np.testing.assert_allclose([h.score for h in qhits], [by_id[h.item_id] @ q for h in qhits], atol=2e-3)


def test_auto_dtype_follows_the_shards(tmp_path) -> None:
    assert resolve_dtype("auto", {"float16"}) == "float16"  # lossless for fp16 shards
    assert resolve_dtype("auto", {"float16", "float32"}) == "float32"
    with pytest.raises(RadRetrieveError, match="store dtype"):
        resolve_dtype("int8", {"float32"})
    vecs = clustered_vectors(4000, DIM, 10, seed=4)
    items = part(0, vecs)
    write_out_dir(tmp_path, [items], DIM, float16=True)
    info = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert info.store is not None and info.store.dtype == "float16"
    assert_store_equals(store_of(tmp_path), *volumes([items]), np.float16)


def test_store_length_mismatch_is_stale_and_rebuilt(tmp_path) -> None:
    vecs = clustered_vectors(4000, DIM, 10, seed=5)
    write_out_dir(tmp_path, [part(0, vecs)], DIM)
    info = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert info.store is not None
    [seg] = info.store.segments
    with pytest.raises(StaleIndex, match="rebuild"):
        VectorStore(tmp_path / "index", StoreInfo("float32", info.count + 1, (replace(seg, count=info.count + 1),)))
    (tmp_path / "index" / info.store.ids).unlink()  # as if a crash hit between the store's two renames
    again = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert (tmp_path / "index" / info.store.ids).is_file()  # rebuilt, not kept with a broken store
    assert len(store_of(tmp_path)) == again.count


def mapped_rss_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_a_store_that_does_not_keep_pages_leaves_nothing_resident(tmp_path) -> None:
    # a build's tuning reads rows all over a 10M store: kept, its mapped pages would count in the build's RSS
    vecs = clustered_vectors(4000, DIM, 10, seed=6)
    write_out_dir(tmp_path, [part(0, vecs)], DIM)
    info = build_indexes(tmp_path, PQ, targets=("items",))["items"]
    assert info.store is not None
    path = (tmp_path / "index" / info.store.vectors).resolve()
    every_row = np.arange(info.count)
    dropped = VectorStore(tmp_path / "index", info.store, keep_pages=False)
    got = dropped.take(every_row[::-1])
    assert mapped_rss_kib(path) == 0  # read through the page cache, never mapped
    kept = VectorStore(tmp_path / "index", info.store)
    np.testing.assert_array_equal(got, kept.take(every_row[::-1]))
    assert mapped_rss_kib(path) >= info.count * DIM * 4 // 1024 - 8  # the mapped gather: the whole file
