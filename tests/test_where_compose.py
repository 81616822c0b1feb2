"""A `--where` filter can only narrow: composed with `--kind` it never undoes it (`false) OR (true` once did,
by operator precedence, when the filter was pasted after `kind IN (...) AND`), and comments, semicolons and
unbalanced parentheses are refused. Each of the two layers (the subquery composition, the check of the
composed statement's tree) is tested on its own as well as together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import radretrieve.outdir.where as where_module
from indexers import build_indexes
from pipelines.job import IndexOptions, index_archive
from radretrieve.cli.app import app
from radretrieve.outdir.catalog import BadWhere, Catalog
from radretrieve.synth import synthesize
from radretrieve.testing.shards import SyntheticItems, write_out_dir

DIM = 8
# Filters that try to widen the result beyond `--kind`: each must be refused or stay inside the kind.
WIDEN = [
    "false) OR (true",
    "false)) OR ((true",
    "kind = 'none') OR (kind <> 'none'",
    "false) OR kind IN ('image', 'volume') OR (false",
    "false) OR (true --",
    "false) OR (true /* x */",
    "false) /* ) OR (true */ OR (true",
    "false) OR (true; SELECT 1",
    "false); SELECT item_id FROM items WHERE (true",
    "false) OR (true)) --",
    "(false) OR (true",
    "false) OR (true))",
    "true) UNION ALL SELECT item_id, study_key FROM items --",
]


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("where")
    write_out_dir(path, [SyntheticItems.random(30, DIM, seed=0, kinds=("volume", "image", "report"))], DIM)
    return path


def _kinds(cat: Catalog, ids) -> set[str]:
    rows = cat.rows(ids, "items")
    return {rows[int(i)].kind for i in ids}


def _only_volumes(cat: Catalog, where: str) -> bool:
    """True when the filter is refused or returns volumes only (and count agrees)."""
    try:
        ids, _ = cat.candidates("items", where, kinds=("volume",))
        count = cat.count("items", where, kinds=("volume",))
    except BadWhere as err:
        assert str(err).startswith("bad --where: ") and "\n" not in str(err)
        return True
    return _kinds(cat, ids) <= {"volume"} and count == len(ids)


@pytest.mark.parametrize("where", WIDEN)
def test_a_filter_cannot_undo_kind(out, where):
    cat = Catalog(out)
    assert cat.count("items", kinds=("image",)) > 0  # there is something to leak
    assert _only_volumes(cat, where)


def test_a_filter_still_narrows(out):
    cat = Catalog(out)
    volumes = cat.count("items", kinds=("volume",))
    assert cat.count("items", "true", kinds=("volume",)) == volumes > 0
    assert cat.count("items", "false", kinds=("volume",)) == 0
    assert cat.count("items", "(kind = 'image') OR (kind = 'volume')", kinds=("volume",)) == volumes


@pytest.mark.parametrize("where", ["false) OR (true", "false) OR kind IN ('image', 'volume') OR (false"])
def test_the_composition_alone_keeps_kind(out, monkeypatch, where):
    """With every parse-tree check off, the kind restriction in its subquery still holds."""
    monkeypatch.setattr(where_module, "check_where", lambda con, view, frag: frag.strip())
    monkeypatch.setattr(where_module, "_shape", lambda node: None)
    cat = Catalog(out)
    ids, _ = cat.candidates("items", where, kinds=("volume",))
    assert len(ids) > 0 and _kinds(cat, ids) == {"volume"}


@pytest.mark.parametrize(
    "where", ["true) UNION ALL SELECT 1, '' --", "true) ORDER BY 1 --", "true) LIMIT 1 --", "true) GROUP BY ALL --"]
)
def test_the_composed_tree_check_alone_refuses_a_changed_query(out, monkeypatch, where):
    """With the filter's own check off, the check of the composed statement refuses a filter that changes it."""
    monkeypatch.setattr(where_module, "check_where", lambda con, view, frag: frag.strip())
    with pytest.raises(BadWhere, match="changed the query around it"):
        Catalog(out).candidates("items", where, kinds=("volume",))


def test_search_kind_is_not_undone_from_the_command_line(tmp_path, tiny_model):
    archive, index = tmp_path / "a", tmp_path / "o"
    synthesize(archive, studies=4, seed=3, modality_weights=(0.5, 0.0, 0.5), min_slices=15, max_slices=16)
    index_archive(archive, index, tiny_model, IndexOptions(workers=0, progress=False))
    build_indexes(index)
    runner = CliRunner()

    def kinds(*extra: str) -> set[str]:
        res = runner.invoke(app, ["search", "--index", str(index), "scan", "-k", "50", "-f", "json", *extra])
        assert res.exit_code == 0, res.output
        return {h["kind"] for h in json.loads(res.stdout)[0]["hits"]}

    assert kinds() == {"volume", "image"}
    assert kinds("--kind", "volume", "--where", "true") == {"volume"}
    for where in WIDEN:
        res = runner.invoke(
            app,
            ["search", "--index", str(index), "scan", "-k", "50", "-f", "json", "--kind", "volume", "--where", where],
        )
        if res.exit_code == 0:
            hits = json.loads(res.stdout)[0]["hits"]
            assert hits and {h["kind"] for h in hits} <= {"volume"}, where  # narrowed to volumes, not to nothing
        else:
            assert "bad --where: " in str(res.exception), where
