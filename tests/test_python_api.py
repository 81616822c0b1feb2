"""The Python API (`radretrieve.open(OUT)`): the same hits as the CLI's JSON on the same out dir, the items table
against a duckdb read of the shards the manifest lists, classify against the CLI, and the context manager.

The out dir is the session's `serve_env` (8 synthetic studies, radclip-tiny overfitted on them: tests/serve_env.py);
tests that write predictions work on a copy of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import duckdb
import pytest
from typer.testing import CliRunner

import radretrieve
from radretrieve.cli.app import app
from radretrieve.foundation.errors import RadRetrieveError

runner = CliRunner()
REGION = {"region": ["head", "chest", "abdomen"]}


@pytest.fixture(scope="module")
def out(serve_env):
    with radretrieve.open(serve_env["out"]) as opened:
        yield opened


@pytest.fixture()
def out_copy(serve_env, tmp_path):
    """A copy of the session's out dir, for tests that write into it (predictions)."""
    copy = tmp_path / "out"
    shutil.copytree(serve_env["out"], copy)
    return copy


def _cli_json(*args: str) -> list[dict]:
    res = runner.invoke(app, [*args, "--format", "json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _assert_same_hits(mine, cli: list[dict]) -> None:
    """The same items in the same order with the same scores (the JSON's floats, to 1e-6)."""
    assert len(cli) > 0
    assert [h.item_id for h in mine] == [h["item_id"] for h in cli]
    assert [h.score for h in mine] == pytest.approx([h["score"] for h in cli], abs=1e-6)
    assert mine.to_json() == [{**h, "score": m["score"]} for h, m in zip(cli, mine.to_json())]


def _shard_rows(out_dir, kinds=("image", "volume")) -> list[tuple]:
    """Rows of the shards listed in manifest.json, read with duckdb itself (not the catalog)."""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    files = [str(out_dir / s["file"]) for s in manifest["shards"]]
    kind_list = ", ".join(f"'{k}'" for k in kinds)
    return duckdb.sql(
        f"SELECT item_id, kind, study_key, source, modality, labels FROM read_parquet({files!r}) "
        f"WHERE kind IN ({kind_list}) ORDER BY item_id"
    ).fetchall()


def test_importing_radretrieve_loads_no_torch():
    code = "import sys, radretrieve; print(callable(radretrieve.open), 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]


def test_search_similar_and_reports_give_the_cli_hits(out, serve_env):
    index = ["--index", str(serve_env["out"])]
    for text, where, kind in [("ct head lesion", None, None), ("chest radiograph", "modality <> 'CT'", "image")]:
        mine = out.search(text, k=5, where=where, kind=kind)
        args = ["search", text, *index, "-k", "5", *(["--where", where] if where else [])]
        cli = _cli_json(*args, *(["--kind", kind] if kind else []))[0]["hits"]
        _assert_same_hits(mine, cli)
    item = out.items().column("item_id")[0].as_py()
    study = out.items().column("study_key")[3].as_py()
    for mine, cli in [
        (out.similar(item, k=4), _cli_json("similar", str(item), *index, "-k", "4")[0]["hits"]),
        (out.reports(study, k=3), _cli_json("reports", study, *index, "-k", "3")[0]["hits"]),
    ]:
        _assert_same_hits(mine, cli)
    frame = mine.to_pandas()
    assert list(frame["item_id"]) == [h["item_id"] for h in cli] and "study_key" in frame.columns


def test_items_are_the_shards_the_manifest_lists(out, serve_env):
    expected = _shard_rows(serve_env["out"])
    table = out.items()
    cols = ["item_id", "kind", "study_key", "source", "modality", "labels"]
    assert list(zip(*(table.column(c).to_pylist() for c in cols))) == expected
    assert "embedding" not in table.column_names
    assert len(out.report_items()) == len(_shard_rows(serve_env["out"], ("report",))) > 0
    ct = out.items(where="modality = 'CT'")
    assert ct.column("item_id").to_pylist() == [r[0] for r in expected if r[4] == "CT"] and len(ct) > 0
    frame = out.items_df()
    assert list(frame["item_id"]) == [r[0] for r in expected]
    assert [json.loads(v) for v in frame["labels"]] == [json.loads(r[5]) for r in expected]


def test_an_items_filter_is_checked_as_a_search_filter_is(out, serve_env):
    """`where` goes through the catalog's filter check: it can only narrow the view and cannot read a file, not
    even one of the out dir."""
    from radretrieve.outdir.where import BadWhere

    manifest = serve_env["out"] / "manifest.json"
    for where in [
        f"item_id IN (SELECT 1 FROM read_text('{manifest}'))",  # a file, even of the out dir
        "true) UNION ALL SELECT * FROM reports WHERE (true",  # rows of another view
        "item_id > 0; DROP VIEW items",  # a second statement
        "(SELECT count(*) FROM duckdb_settings()) > 0",  # a table function
        "item_id IN (SELECT item_id FROM _items_vectors)",  # a table that is not one of the views
        "length(repeat('x', 100000000)) > 0",  # a value built past the memory limit's reach
    ]:
        with pytest.raises(BadWhere):
            out.items(where=where)
    assert len(out.items()) == len(_shard_rows(serve_env["out"]))  # the views are intact


def test_classify_gives_the_cli_predictions(out_copy):
    with radretrieve.open(out_copy) as opened:
        result = opened.classify(REGION)
    mine = {(p.item_id, p.task): p for p in result.predictions}
    cli = _cli_json("classify", "--index", str(out_copy), "--task", "region=head,chest,abdomen")
    assert len(cli) == len(mine) == len(_shard_rows(out_copy))
    for row in cli:
        p = mine[(row["item_id"], row["task"])]
        assert p.label == row["label"] and p.probability == pytest.approx(row["probability"], abs=1e-6)
    assert [a.task.name for a in result.accuracy] == ["region"] and result.accuracy[0].labelled > 0


def test_the_context_manager_closes_the_catalog_and_the_object(serve_env):
    with radretrieve.open(serve_env["out"]) as opened:
        assert len(opened.search("ct", k=2)) == 2
        con = opened.service.searcher.catalog.con
        con.execute("SELECT 1")  # open while the block runs
    with pytest.raises(duckdb.ConnectionException):
        con.execute("SELECT 1")
    with pytest.raises(RadRetrieveError, match="closed"):
        opened.search("ct")


def test_open_names_a_folder_that_is_not_an_out_dir(tmp_path):
    (tmp_path / "arch").mkdir()
    with pytest.raises(RadRetrieveError) as err:
        radretrieve.open(tmp_path / "arch")
    assert "not an out dir" in str(err.value) and "radretrieve index ARCHIVE --out" in str(err.value)
    assert "\n" not in str(err.value)
