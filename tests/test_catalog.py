"""duckdb catalog: views over manifest-listed shards only, errors view, --where safety, id -> row, vectors."""

from __future__ import annotations

import time

import numpy as np
import pytest

from radretrieve.outdir.catalog import BadWhere, Catalog
from radretrieve.outdir.shards import write_shard
from radretrieve.testing.shards import SyntheticItems, write_errors, write_out_dir

DIM = 8


@pytest.fixture()
def out(tmp_path):
    items = SyntheticItems.random(30, DIM, seed=0, kinds=("volume", "image", "report"))
    more = SyntheticItems.random(12, DIM, seed=1, id_offset=5000, kinds=("volume",))
    write_out_dir(tmp_path, [items, more], DIM, float16=False)
    # a finished-looking shard that the manifest does not list: readers must ignore it
    write_shard(tmp_path / "shards" / "part-00099.parquet", more.table(DIM))
    return tmp_path, items, more


def test_views_cover_manifest_shards_only(out) -> None:
    path, items, more = out
    cat = Catalog(path)
    n_items = sum(k != "report" for k in items.kinds) + len(more.ids)
    assert cat.count("items") == n_items
    assert cat.count("reports") == items.kinds.count("report")
    assert cat.sql("SELECT count(*) FROM errors")[0][0] == 0  # no errors/ folder: empty view
    assert {r[0] for r in cat.sql("SELECT DISTINCT kind FROM items")} == {"volume", "image"}


def test_errors_view(tmp_path) -> None:
    write_out_dir(tmp_path, [SyntheticItems.random(3, DIM, seed=0)], DIM)
    write_errors(
        tmp_path,
        [
            {"source": "a.dcm", "stage": "read", "error_type": "ReadError", "message": "truncated", "extra": 1},
            {"source": "b.nii", "stage": "encode", "error_type": "ValueError", "message": "bad shape"},
        ],
    )
    rows = Catalog(tmp_path).sql("SELECT source, stage, error_type, message FROM errors ORDER BY source")
    assert rows == [("a.dcm", "read", "ReadError", "truncated"), ("b.nii", "encode", "ValueError", "bad shape")]


def test_empty_manifest_gives_empty_typed_views(tmp_path) -> None:
    write_out_dir(tmp_path, [], DIM)
    cat = Catalog(tmp_path)
    assert cat.count("items", "modality = 'CT'") == 0
    assert len(cat.candidates("reports")[0]) == 0


def test_where_filters_and_kind(out) -> None:
    path, items, more = out
    cat = Catalog(path)
    ids, studies = cat.candidates("items", "modality = 'CT' AND body_part <> 'KNEE'", kinds=("volume",))
    expect = sorted(
        int(i)
        for src in (items, more)
        for i, k, m, b in zip(src.ids, src.kinds, src.modalities, src.body_parts)
        if k == "volume" and m == "CT" and b != "KNEE"
    )
    assert ids.tolist() == expect and len(expect) > 0
    assert len(studies) == len(ids)


@pytest.mark.parametrize(
    "where, match",
    [
        ("modality = 'CT'; DROP VIEW items", "bad --where: Parser Error"),
        ("true); DROP VIEW items; SELECT (1", "one boolean expression"),
        ("no_such_column = 1", "bad --where: Binder Error"),
        ("modality = ", "bad --where: Parser Error"),
        ("   ", "empty"),
        ("source IN (SELECT * FROM read_csv('/etc/passwd'))", "bad --where"),
    ],
)
def test_bad_where_is_one_line(out, where: str, match: str) -> None:
    with pytest.raises(BadWhere, match=match) as err:
        Catalog(out[0]).candidates("items", where)
    assert "\n" not in str(err.value)


def test_metadata_queries_do_not_read_embeddings(out) -> None:
    cat = Catalog(out[0])
    plan = "\n".join(r[1] for r in cat.sql("EXPLAIN SELECT item_id, study_key FROM items WHERE modality = 'CT'"))
    assert "embedding" not in plan
    plan = "\n".join(r[1] for r in cat.sql("EXPLAIN SELECT item_id, embedding FROM _items_vectors"))
    assert "embedding" in plan  # the check above would see it if it were read


def test_rows_and_vectors_by_id(tmp_path) -> None:
    items = SyntheticItems.random(20, DIM, seed=4, kinds=("volume", "report"))
    write_out_dir(tmp_path, [items], DIM, float16=True)  # float16 shards read back as float32
    cat = Catalog(tmp_path)
    want = items.ids[[0, 2, 4]]
    rows = cat.rows(list(want) + [123456789], "items")
    assert sorted(rows) == sorted(want.tolist())  # unknown id: absent, not an error
    r = rows[int(items.ids[2])]
    assert (r.kind, r.study_key, r.modality, r.labels["modality"]) == (
        "volume",
        items.studies[2],
        items.modalities[2],
        items.modalities[2],
    )
    got_ids, vecs = cat.vectors(want[::-1], "items")
    assert got_ids.tolist() == sorted(want.tolist()) and vecs.dtype == np.float32
    ref = items.vectors[[0, 2, 4]].astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(vecs, ref)
    assert cat.vectors(want, "reports")[0].size == 0  # volumes are not in the reports view
    assert cat.study_items(items.studies[0], "items").tolist() == [int(items.ids[0])]


# -- confinement: a filter reads the catalog's views and nothing else ------------------------------------
SECRET = "TOPSECRET-4711"


@pytest.fixture()
def planted(out, tmp_path_factory):
    """The out dir with a non-shard file inside it and a file outside it, both holding SECRET."""
    path = out[0]
    (path / "notes.csv").write_text(f"a,b\n{SECRET},1\n")
    outside = tmp_path_factory.mktemp("outside") / "private.csv"
    outside.write_text(f"a,b\n{SECRET},2\n")
    return path, outside


@pytest.mark.parametrize(
    "attack",
    [
        "source IN (SELECT a FROM read_csv('{inside}'))",  # a non-shard file inside the out dir
        "source IN (SELECT a FROM read_csv('{outside}'))",  # a file outside it
        "source IN (SELECT a FROM '{inside}')",  # the same, as a path-like table name
        "(SELECT count(*) FROM read_text('{manifest}')) > 0",  # out dir metadata
        "true) UNION ALL SELECT item_id FROM read_csv('{outside}', columns={{'item_id': 'BIGINT'}}) --",
        "true) UNION ALL SELECT 1 --",  # escaping the parentheses at all
        "true) ORDER BY (SELECT 1",
        "current_setting('allowed_paths') IS NOT NULL",
        "source IN (SELECT file FROM glob('{root}/*'))",
    ],
)
def test_a_filter_cannot_read_files_or_escape(planted, attack: str) -> None:
    path, outside = planted
    where = attack.format(inside=path / "notes.csv", outside=outside, manifest=path / "manifest.json", root=path)
    with pytest.raises(BadWhere) as err:
        Catalog(path).candidates("items", where)
    message = str(err.value)
    assert message.startswith("bad --where: ") and "\n" not in message
    assert SECRET not in message


def test_errors_never_echo_data(out) -> None:
    cat = Catalog(out[0])
    with pytest.raises(BadWhere) as err:  # duckdb would quote the study key it could not convert
        cat.candidates("items", "CAST(study_key AS INTEGER) = 1")
    assert "study-" not in str(err.value) and "Conversion Error" in str(err.value)


def test_semicolons_inside_literals_are_fine(out) -> None:
    cat = Catalog(out[0])
    assert len(cat.candidates("items", "description <> 'a;b' AND modality IN ('CT', 'x;y')")[0]) > 0


def test_subqueries_over_the_views_are_allowed(out) -> None:
    cat = Catalog(out[0])
    ids, _ = cat.candidates("items", "study_key IN (SELECT study_key FROM reports)")
    assert len(ids) > 0


def test_a_slow_filter_stops_at_the_time_limit(out) -> None:
    cat = Catalog(out[0], where_timeout=0.5)
    rows = "sum(hash(a.item_id + b.item_id + c.item_id + d.item_id + e.item_id + f.item_id))"
    slow = f"(SELECT {rows} FROM items a, items b, items c, items d, items e, items f) < 0"  # 40^6 rows
    start = time.monotonic()
    with pytest.raises(BadWhere, match="longer than 0.5 s"):
        cat.candidates("items", slow)
    assert time.monotonic() - start < 10
