"""The streaming build at scale: the IVF-PQ plan with an HNSW coarse quantizer on 20k vectors (recall vs
numpy brute force), batches bounded by the budget whatever the row count, and the plan rule at 10M/100M."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from indexers import BuildConfig, IndexInfo, Searcher, build_indexes, choose_plan
from indexers.build import batch_rows_for
from indexers.plan import HNSW_COARSE_MIN_NLIST
from indexers.store import StoreWriter, VectorStore
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.testing.shards import SyntheticItems, clustered_vectors, write_out_dir

N, DIM, NQ, SHARD = 20_000, 64, 200, 2_500  # 8 shards whose row groups (2,500 rows) exceed a batch
SMALL = BuildConfig(max_memory=4 << 20, coarse="hnsw", tune_queries=200)  # 4 MiB: IVF-PQ, 1,024-row batches


@pytest.fixture(scope="module")
def pq_build(tmp_path_factory):
    """20k clustered vectors in 8 shards built under a 4 MiB budget with an HNSW coarse quantizer."""
    vecs = clustered_vectors(N + NQ, DIM, n_clusters=80, seed=11)
    out = tmp_path_factory.mktemp("stream")
    parts = [
        SyntheticItems.random(SHARD, DIM, seed=i, id_offset=10**7 * (i + 1), vectors=vecs[i * SHARD : (i + 1) * SHARD])
        for i in range(N // SHARD)
    ]
    write_out_dir(out, parts, DIM)
    info = build_indexes(out, SMALL, targets=("items",))["items"]
    return out, info, vecs[:N], np.concatenate([p.ids for p in parts]), vecs[N:]


def test_hnsw_coarse_ivf_pq_recall_against_brute_force(pq_build) -> None:
    out, info, vecs, ids, queries = pq_build
    assert info.plan.index_type == "ivf_pq" and info.plan.coarse == "hnsw"
    assert info.plan.factory == f"IVF{info.plan.nlist}_HNSW32,PQ{info.plan.pq_m}" and info.store is not None
    truth = ids[np.argsort(-(queries @ vecs.T), axis=1)[:, :10]]  # numpy brute force over what was indexed
    searcher = Searcher(out)
    try:
        ann = searcher.index("items")
        _, found = ann.search(queries, 10)
    finally:
        searcher.close()
    assert ann.ntotal == N
    hits = [len(set(f.tolist()) & set(t.tolist())) / 10 for f, t in zip(found, truth)]
    assert np.mean(hits) >= 0.9, np.mean(hits)


def test_every_pass_reads_bounded_batches(pq_build) -> None:
    """What the build holds of the stream is one batch of `batch_rows` rows, fixed by the budget: the
    8 shards of 2,500 rows arrive as batches of at most 1,024 rows, so 20k rows never sit in one array."""
    out, info, *_ = pq_build
    recorded = json.loads((out / "index" / "index.json").read_text())["indexes"]["items"]["build"]
    assert recorded == dict(info.build)
    batch_rows = batch_rows_for(SMALL, DIM)
    assert recorded["batch_rows"] == batch_rows == 1024
    stream = recorded["stream"]
    assert stream["max_rows"] == batch_rows  # the largest batch: not a shard, not the archive
    per_pass = (N // SHARD) * math.ceil(SHARD / batch_rows)  # 8 shards x 3 batches
    assert stream["passes"] == 2 and stream["batches"] == 2 * per_pass  # training sample + fill
    assert stream["rows"] == 2 * N
    assert 0 < recorded["train_rows"] <= info.plan.train_size < N  # a sample, capped by the budget
    assert set(recorded["seconds"]) >= {"sample", "train", "hold_out", "add", "tune", "write"}


def test_batch_size_is_set_by_the_budget_not_the_row_count() -> None:
    for mm in (4 << 20, 1 << 30, 8 << 30):
        cfg = BuildConfig(max_memory=mm)
        rows = batch_rows_for(cfg, 512)
        assert 1024 <= rows <= 65536 and rows * 512 * 4 <= max(0.02 * mm, 1024 * 512 * 4)


def test_plan_at_10m_and_100m() -> None:
    """10M x 512 under 8 GiB: IVF-PQ codes in the budget, flat coarse (8192 lists: as fast as HNSW,
    measured); 100M: 16384 lists behind an HNSW coarse quantizer."""
    gib = 1 << 30
    ten = choose_plan(10_000_000, 512, 8 * gib)
    assert (ten.index_type, ten.nlist, ten.pq_m, ten.coarse) == ("ivf_pq", 8192, 64, "flat")
    assert ten.factory == "IVF8192,PQ64" and ten.index_bytes() <= 0.75 * 8 * gib
    hundred = choose_plan(100_000_000, 512, 8 * gib)
    assert hundred.nlist >= HNSW_COARSE_MIN_NLIST and hundred.coarse == "hnsw"
    assert hundred.factory == f"IVF{hundred.nlist}_HNSW32,PQ{hundred.pq_m}"
    assert hundred.index_bytes() <= 0.75 * 8 * gib
    assert choose_plan(30_000, 512, 8 * gib, index_type="ivf_flat", coarse="hnsw").factory.startswith("IVF")
    with pytest.raises(RadRetrieveError, match="coarse"):
        choose_plan(100_000, 512, coarse="ivf")


def test_index_json_without_coarse_reads_as_flat(pq_build) -> None:
    """Indexes written before the coarse field keep loading (and growing) as flat-coarse plans."""
    out, info, *_ = pq_build
    entry = json.loads((out / "index" / "index.json").read_text())["indexes"]["items"]
    for key in ("coarse", "build"):
        entry.pop(key)
    old = IndexInfo.from_json(entry)
    assert old.plan.coarse == "flat" and old.plan.factory == f"IVF{info.plan.nlist},PQ{info.plan.pq_m}"
    assert old.build == {}


def _rss_kib() -> int:
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0])


def test_store_writer_does_not_hold_the_store_in_memory(tmp_path) -> None:
    """The re-rank store is appended to its file, so its pages are page cache, not the build's RSS (a
    writable memmap kept every written page resident: 1 GB written -> 1,066 MB peak RSS, measured)."""
    rows, dim = 65536, 512  # 128 MiB of float32 per add
    block = np.ones((rows, dim), np.float32)
    writer = StoreWriter(tmp_path, "items", dim, "float32", 2 * rows)
    before = _rss_kib()
    for i in range(2):
        writer.add(np.arange(i * rows, (i + 1) * rows, dtype=np.int64), block)
    grown_mib = (_rss_kib() - before) / 1024
    info = writer.commit()
    assert grown_mib < 64, grown_mib  # 256 MiB written
    stored = VectorStore(tmp_path, info)
    assert len(stored) == 2 * rows and float(stored.take(np.array([rows + 5]))[0, 0]) == 1.0
