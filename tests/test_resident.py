"""Resident look-ups (what `radretrieve serve` runs on) give exactly what the per-query duckdb ones give.

`Searcher(..., resident=True)` keeps display rows and study look-ups in memory (`ResidentCatalog`) and reads
stored vectors back from the index (flat, HNSW, IVF-Flat) instead of scanning Parquet. For every index type,
text-like vector queries, `similar` and `reports` (with filters, kinds and dedupe) must return the same hits
as a plain Searcher, and vectors must equal the shards' own. Shards are written in shuffled id order, as real
(hashed) ids are.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from indexers import BuildConfig, Searcher, build_indexes
from radretrieve.outdir.catalog import Catalog
from radretrieve.outdir.resident import ResidentCatalog
from radretrieve.testing.shards import SyntheticItems, append_shard, clustered_vectors, write_out_dir

DIM = 16
N = 6300  # IVF indexes train on at least 2,000 vectors: 4,200 items, 2,100 reports


def shuffled(items: SyntheticItems, seed: int) -> SyntheticItems:
    order = np.random.default_rng(seed).permutation(len(items.ids))
    pick = lambda t: tuple(t[i] for i in order)  # noqa: E731
    return dataclasses.replace(
        items,
        ids=items.ids[order],
        vectors=items.vectors[order],
        kinds=pick(items.kinds),
        studies=pick(items.studies),
        modalities=pick(items.modalities),
        body_parts=pick(items.body_parts),
    )


@pytest.fixture(scope="module", params=["flat", "ivf_flat", "hnsw", "ivf_pq"])
def out(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"resident-{request.param}")
    vecs = clustered_vectors(N, DIM, n_clusters=10, seed=5)
    parts = [
        shuffled(
            SyntheticItems.random(
                N // 2,
                DIM,
                seed=i,
                id_offset=10**6 * (i + 1),
                kinds=("volume", "image", "report"),
                vectors=vecs[i * N // 2 : (i + 1) * N // 2],
            ),
            seed=i,
        )
        for i in range(2)
    ]
    write_out_dir(out, parts, DIM)
    build_indexes(out, BuildConfig(index_type=request.param))
    return out


QUERIES = [
    {},
    {"where": "modality = 'CT'"},
    {"kind": "volume"},
    {"where": "body_part IN ('HEAD', 'KNEE')", "kind": "image"},
]


def test_resident_searcher_gives_the_same_hits(out):
    plain, resident = Searcher(out), Searcher(out, resident=True)
    try:
        assert isinstance(resident.catalog, ResidentCatalog) and type(plain.catalog) is Catalog
        studies = sorted({r[0] for r in plain.catalog.sql("SELECT study_key FROM items")})[::401]
        items = [r[0] for r in plain.catalog.sql("SELECT item_id FROM items ORDER BY item_id")][::1009]
        reports = [r[0] for r in plain.catalog.sql("SELECT item_id FROM reports ORDER BY item_id")][::1051]
        queries = clustered_vectors(3, DIM, n_clusters=3, seed=11)
        for q in queries:
            for extra in QUERIES:
                assert plain.search(q, 7, **extra) == resident.search(q, 7, **extra)
        for ref in [*studies, *map(str, items), *map(str, reports)]:
            assert plain.resolve(ref).item_ids == resident.resolve(ref).item_ids
            np.testing.assert_array_equal(plain.resolve(ref).vector, resident.resolve(ref).vector)
            for extra in QUERIES:
                assert plain.similar(ref, 6, **extra) == resident.similar(ref, 6, **extra)
            assert plain.reports_for(ref, 4) == resident.reports_for(ref, 4)
            assert plain.reports_for(ref, 4, where="modality <> 'MR'") == resident.reports_for(
                ref, 4, where="modality <> 'MR'"
            )
    finally:
        plain.close()
        resident.close()


def test_resident_lookups_equal_the_catalogs(out):
    cat, res = Catalog(out), ResidentCatalog(out)
    try:
        for view in ("items", "reports"):
            ids = [r[0] for r in cat.sql(f"SELECT item_id FROM {view}")]
            sample = [*ids[::53], 42, -7]  # two ids that are in no view
            assert res.rows(sample, view) == cat.rows(sample, view)
            assert res.study_keys(sample, view) == cat.study_keys(sample, view)
            for study in sorted({r[0] for r in cat.sql(f"SELECT study_key FROM {view}")})[::29] + ["no-such"]:
                np.testing.assert_array_equal(res.study_items(study, view), cat.study_items(study, view))
        assert res.find_item(ids[0]) == cat.find_item(ids[0]) and res.find_item(42) is None
    finally:
        cat.close()
        res.close()


def test_vectors_read_back_from_the_index_are_the_shards(out):
    plain, resident = Searcher(out), Searcher(out, resident=True)
    try:
        ids = np.array([r[0] for r in plain.catalog.sql("SELECT item_id FROM items")][::17] + [42], np.int64)
        want_ids, want = plain.catalog.vectors(ids, "items")
        got_ids, got = resident.vectors(ids, "items")
        np.testing.assert_array_equal(got_ids, want_ids)  # 42 is dropped by both
        np.testing.assert_array_equal(got, want)
        if plain.infos["items"].plan.index_type != "ivf_pq":  # IVF-PQ has its store; the others read back
            assert "items" in resident._reconstructable
    finally:
        plain.close()
        resident.close()


def test_a_stale_index_falls_back_to_the_shards(tmp_path):
    """Shards added after the build: their ids are not in the index, their vectors still come back."""
    vecs = clustered_vectors(2500, DIM, n_clusters=4, seed=1)
    write_out_dir(tmp_path, [SyntheticItems.random(2400, DIM, seed=0, vectors=vecs[:2400])], DIM)
    build_indexes(tmp_path, BuildConfig(exact_threshold=0))  # IVF-Flat for the items (no reports)
    new = SyntheticItems.random(100, DIM, seed=1, id_offset=10**6, vectors=vecs[2400:])
    append_shard(tmp_path, new, "late")
    resident = Searcher(tmp_path, resident=True)
    try:
        got_ids, got = resident.vectors(new.ids[:5], "items")
        np.testing.assert_array_equal(got_ids, new.ids[:5])
        np.testing.assert_allclose(got, new.vectors[:5], rtol=1e-6)
    finally:
        resident.close()


def test_rows_taken_across_the_batches_of_a_view_are_the_tables():
    """A view read from many shards arrives in several record batches; `take` looks rows up batch by batch
    (pyarrow's `Table.take` over many chunks costs milliseconds a call) and must give pyarrow's rows."""
    import pyarrow as pa

    from radretrieve.outdir.resident import ResidentView

    n = 1000
    table = pa.table(
        {
            "item_id": np.arange(n, dtype=np.int64),
            "study_key": [f"s{i // 3}" for i in range(n)],
            "x": [f"t{i}" for i in range(n)],
        }
    )
    chunked = pa.Table.from_batches(table.to_batches(max_chunksize=97))
    rv = ResidentView.from_table(chunked)
    assert len(rv.batches) > 5
    rng = np.random.default_rng(3)
    for pos in (np.array([0, 96, 97, n - 1]), np.unique(rng.integers(0, n, 40)), np.arange(n), np.empty(0, np.int64)):
        assert rv.take(pos) == table.take(pa.array(pos, pa.int64())).to_pylist()
        assert rv.take(pos, ["x"]) == table.select(["x"]).take(pa.array(pos, pa.int64())).to_pylist()
