"""A damaged `predictions.parquet` is found as a damaged shard is (size, SHA-256, footer schema), reported in
one line, costs only the predictions (search and info go on) and is rebuilt by `classify`; a shard whose digest
matches but whose schema is wrong is one line naming it, and `index` re-runs its task."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from indexers import build_indexes
from pipelines.job import IndexOptions, index_archive
from radretrieve.application.classify import classify_index, resolve_templates
from radretrieve.cli.app import app
from radretrieve.evaluation.zeroshot import parse_tasks
from radretrieve.foundation.fileio import file_sha256
from radretrieve.outdir.catalog import Catalog
from radretrieve.outdir.manifest import read_manifest, write_manifest
from radretrieve.outdir.predictions import predictions_path, predictions_problem, read_record
from radretrieve.outdir.shards import iter_embeddings
from radretrieve.outdir.verify import DamagedFile
from radretrieve.testing.shards import SyntheticItems, write_out_dir

runner = CliRunner()
TASKS = ["organ=head,chest"]
WITH_PREDICTIONS = "item_id IN (SELECT item_id FROM predictions)"


@pytest.fixture(scope="module")
def classified(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("pred")
    archive, out = tmp / "archive", tmp / "out"
    rng = np.random.default_rng(1)
    for k in range(6):
        (archive / f"s{k}").mkdir(parents=True)
        Image.fromarray((rng.random((30, 36)) * 255).astype(np.uint8), mode="L").save(archive / f"s{k}" / "x.png")
    index_archive(archive, out, tiny_model, IndexOptions(workers=0, progress=False))
    build_indexes(out)
    classify_index(out, parse_tasks(TASKS), resolve_templates(None), model=tiny_model)
    return archive, out


def _copy(classified, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(classified[1], out)
    return out


def _damage(out: Path, how: str) -> None:
    path = predictions_path(out)
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":  # same size, magics intact: only the SHA-256 tells
        data[len(data) // 3] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "garbage":
        path.write_bytes(b"not parquet at all")
    else:  # a whole Parquet file whose digest is recorded, without the `label` column
        pq.write_table(pq.read_table(path).drop_columns(["label"]), path)
        record = {"file": path.name, "committed": [{"size": path.stat().st_size, "sha256": file_sha256(path)}]}
        (out / "predictions.json").write_text(json.dumps(record))


def _search(out: Path, *extra: str) -> list[dict]:
    res = runner.invoke(app, ["search", "--index", str(out), "an image", "-k", "6", "-f", "json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)[0]["hits"]


@pytest.mark.parametrize("how", ["truncate", "flip", "garbage", "schema"])
def test_a_damaged_predictions_file_costs_only_the_predictions(classified, tmp_path, caplog, how):
    out = _copy(classified, tmp_path)
    assert len(_search(out, "--where", WITH_PREDICTIONS)) == 6
    _damage(out, how)
    with caplog.at_level(logging.WARNING):
        assert len(_search(out)) == 6  # search goes on
    lines = [r.getMessage() for r in caplog.records if "predictions" in r.getMessage()]
    assert len(lines) == 1, lines  # said once
    assert lines[0].startswith(f"{predictions_path(out)}: damaged predictions file (") and "\n" not in lines[0]
    assert "classify --index" in lines[0]
    assert _search(out, "--where", WITH_PREDICTIONS) == []  # no predictions, no error
    res = runner.invoke(app, ["info", str(out)])
    assert res.exit_code == 0 and "rows by kind: image 6" in res.output
    # classify rebuilds it
    res = runner.invoke(app, ["classify", "--index", str(out), "--task", TASKS[0], "-f", "json"])
    assert res.exit_code == 0, res.output
    assert predictions_problem(out, full=True) is None
    assert len(_search(out, "--where", WITH_PREDICTIONS)) == 6


def test_a_rewrite_is_accepted_at_every_moment(classified, tmp_path, monkeypatch):
    """While the new file is renamed into place, the record accepts the old and the new file: a crash at any
    moment leaves a file its record accepts."""
    import radretrieve.outdir.predictions as predictions

    out = _copy(classified, tmp_path)
    old = (predictions_path(out).stat().st_size, file_sha256(predictions_path(out)))
    seen: list[tuple] = []
    write_record = predictions._write_record

    def spy(out_dir, committed):
        write_record(out_dir, committed)
        seen.append((predictions_problem(out, full=True), len(read_record(out))))

    monkeypatch.setattr(predictions, "_write_record", spy)
    res = runner.invoke(app, ["classify", "--index", str(out), "--task", "tone=dark,bright"])
    assert res.exit_code == 0, res.output
    assert seen == [(None, 2), (None, 1)]  # old file still in place and accepted; then the new one alone
    assert (predictions_path(out).stat().st_size, file_sha256(predictions_path(out))) != old


# -- shards: a digest that matches, a schema that does not -------------------------------------------------
DIM = 8


def _rewrite_shard(out: Path, change) -> Path:
    """Rewrite the first shard with `change(table)` and record its new size and digest (as if committed so)."""
    manifest = read_manifest(out)
    entry = manifest.shards[0]
    path = out / entry.file
    pq.write_table(change(pq.read_table(path)), path)
    fixed = type(entry)(entry.file, entry.task_id, entry.rows, entry.counts, path.stat().st_size, file_sha256(path))
    write_manifest(out, manifest.with_shard(fixed))
    return path


def _other_dim(table: pa.Table) -> pa.Table:
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(table.num_rows * 4, np.float32)), 4)
    return table.set_column(table.schema.get_field_index("embedding"), "embedding", vectors)


def _string_ids(table: pa.Table) -> pa.Table:
    return table.set_column(0, "item_id", pa.array([str(i) for i in table.column("item_id").to_pylist()]))


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda t: t.drop_columns(["modality"]), "column 'modality' is missing"),
        (_other_dim, "embeddings have 4 dimensions, the out dir's have 8"),
        (_string_ids, "column 'item_id' is string, expected int64"),
    ],
)
def test_a_shard_of_another_schema_is_one_line_naming_it(tmp_path, change, problem):
    write_out_dir(tmp_path, [SyntheticItems.random(10, DIM, seed=0, kinds=("volume", "report"))], DIM)
    path = _rewrite_shard(tmp_path, change)
    for read in (lambda: Catalog(tmp_path), lambda: list(iter_embeddings(tmp_path))):
        with pytest.raises(DamagedFile) as err:
            read()
        message = str(err.value)
        assert message.startswith(f"{path}: damaged shard: {problem}; rerun `radretrieve index`")
        assert "\n" not in message


def test_index_runs_the_task_of_a_shard_of_another_schema_again(classified, tmp_path, tiny_model):
    archive, _ = classified
    out = _copy(classified, tmp_path)
    before = Catalog(out).count("items")
    _rewrite_shard(out, lambda t: t.drop_columns(["description"]))
    summary = index_archive(archive, out, tiny_model, IndexOptions(workers=0, progress=False))
    assert summary.tasks == 1 and sum(summary.rows.values()) == before
    assert Catalog(out).count("items") == before
