"""Optional shard columns (`burned_in`): in the catalog's views when a shard has them, NULL in older shards."""

from __future__ import annotations

import dataclasses

from radretrieve.outdir.catalog import META_COLUMNS, Catalog
from radretrieve.testing.shards import SyntheticItems, append_shard, write_out_dir

DIM = 8


def test_views_without_the_column_are_unchanged(tmp_path):
    write_out_dir(tmp_path, [SyntheticItems.random(6, DIM, seed=0)], DIM)
    cat = Catalog(tmp_path)
    assert cat.columns("items") == tuple(name for name, _ in META_COLUMNS)
    assert [r[0] for r in cat.sql("SELECT column_name FROM (DESCRIBE items)")] == list(cat.columns("items"))


def test_burned_in_is_read_and_older_shards_read_as_null(tmp_path):
    old = SyntheticItems.random(6, DIM, seed=0)
    new = SyntheticItems.random(6, DIM, seed=1, id_offset=5000)
    new = dataclasses.replace(new, burned_in=(True, False, True, False, False, True))
    write_out_dir(tmp_path, [old], DIM)
    append_shard(tmp_path, new, "task-new")
    cat = Catalog(tmp_path)
    assert cat.columns("items")[-1] == "burned_in" and cat.columns("reports")[-1] == "burned_in"
    got = dict(cat.sql("SELECT item_id, burned_in FROM items"))
    assert {i: got[int(i)] for i in old.ids} == {int(i): None for i in old.ids}
    assert {int(i): got[int(i)] for i in new.ids} == {int(i): f for i, f in zip(new.ids, new.burned_in)}
    ids, _ = cat.candidates("items", "burned_in")
    assert sorted(ids.tolist()) == sorted(int(i) for i, f in zip(new.ids, new.burned_in) if f)
    assert cat.count("items") == 12  # union by name: no row lost or doubled
