"""Safety layers that nothing else protects, each tested on its own: the writer lock (per thread, and taken by
`build-index`), the duckdb lock-down of the catalog with every parse-tree check of filters turned off, and
resume encoding only the tasks that are not finished (counted at the encoder, not read off the final rows)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import radretrieve.outdir.catalog as catalog_module
from indexers import BuildConfig, build_indexes
from pipelines.job import IndexOptions, index_archive
from radretrieve.cli.app import app
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.lock import Locked, holds_lock, writer_lock
from radretrieve.outdir.catalog import BadWhere, Catalog
from radretrieve.outdir.manifest import read_manifest, write_manifest
from radretrieve.synth import synthesize
from radretrieve.testing.shards import SyntheticItems, write_out_dir
from tests.locks import hold_lock

DIM = 8


@pytest.fixture()
def out(tmp_path) -> Path:
    write_out_dir(tmp_path / "out", [SyntheticItems.random(20, DIM, seed=0, kinds=("volume", "report"))], DIM)
    return tmp_path / "out"


# -- the writer lock: one thread, not one process ------------------------------------------------------------
def test_a_second_thread_is_refused_or_waits(tmp_path):
    folder = tmp_path / "out"
    taken, release = threading.Event(), threading.Event()

    def first() -> None:
        with writer_lock(folder, "radretrieve index"):
            with writer_lock(folder, "radretrieve build-index"):  # re-entrant in its own thread
                taken.set()
                release.wait(30)

    owner = threading.Thread(target=first, name="indexer")
    owner.start()
    try:
        assert taken.wait(30)
        with pytest.raises(Locked) as err:  # wait 0: refused at once, naming the holder
            with writer_lock(folder, "radretrieve classify"):
                pass
        assert "thread 'indexer' of this process" in str(err.value) and "radretrieve index" in str(err.value)
        assert not holds_lock(folder)
        with pytest.raises(Locked, match="waited 0.3 s"):
            with writer_lock(folder, "radretrieve classify", wait=0.3):
                pass
        threading.Timer(0.5, release.set).start()
        start = time.monotonic()
        with writer_lock(folder, "radretrieve classify", wait=30):  # waits for the owner, then enters
            assert time.monotonic() - start >= 0.4 and holds_lock(folder)
            assert not owner.is_alive()
    finally:
        release.set()
        owner.join(30)


def test_two_threads_never_hold_the_lock_together(tmp_path):
    folder, inside, overlaps = tmp_path / "out", [0], []

    def writer() -> None:
        for _ in range(20):
            with writer_lock(folder, "radretrieve classify", wait=30):
                inside[0] += 1
                overlaps.append(inside[0])
                time.sleep(0.002)
                inside[0] -= 1

    threads = [threading.Thread(target=writer) for _ in range(4)]
    with writer_lock(folder, "radretrieve index"):  # the threads start while this one holds the lock
        inside[0] += 1
        for t in threads:
            t.start()
        time.sleep(0.2)
        inside[0] -= 1
    for t in threads:
        t.join(60)
    assert len(overlaps) == 80 and max(overlaps) == 1


# -- build-index takes the writer lock -----------------------------------------------------------------------
def test_build_index_refuses_or_waits_while_another_writer_holds_the_lock(out):
    holder = hold_lock(out)
    try:
        with pytest.raises(Locked, match=f"pid {holder.pid} .*radretrieve index"):
            build_indexes(out)
        res = CliRunner().invoke(app, ["build-index", str(out)])
        assert res.exit_code != 0 and isinstance(res.exception, Locked)
        assert not (out / "index").exists()  # nothing was written while the other writer held the out dir
        threading.Timer(1.0, holder.kill).start()
        start = time.monotonic()
        infos = build_indexes(out, BuildConfig(wait=60))
        assert time.monotonic() - start >= 0.9 and infos["items"].count == 10
    finally:
        holder.kill()
        holder.wait()


# -- the catalog's duckdb lock-down on its own ---------------------------------------------------------------
SECRET = "TOPSECRET-4711"


def _no_checks(con: Any, view: str, select: str, where: str | None, kinds: Any, tail: str = "") -> str:
    """Filters pasted as they are: no parse-tree check of the filter or of the composed statement."""
    return f"SELECT {select} FROM {view} WHERE ({where or 'true'}) {tail}"


@pytest.fixture()
def unchecked(out, tmp_path, monkeypatch) -> tuple[Catalog, Path]:
    monkeypatch.setattr(catalog_module, "filter_query", _no_checks)
    (out / "notes.csv").write_text(f"a\n{SECRET}\n")  # a non-shard file inside the out dir
    outside = tmp_path / "private.csv"
    outside.write_text(f"a\n{SECRET}\n")
    return Catalog(out), outside


@pytest.mark.parametrize(
    "attack",
    [
        "source IN (SELECT column0 FROM read_csv('/etc/passwd', header = false))",
        "source IN (SELECT a FROM read_csv('{outside}'))",
        "source IN (SELECT a FROM read_csv('{inside}'))",
        "source IN (SELECT a FROM '{outside}')",
        "(SELECT count(*) FROM read_text('{manifest}')) > 0",
        "source IN (SELECT file FROM glob('{tmp}/*'))",
        "true); COPY (SELECT 1) TO '{tmp}/copied.csv'; SELECT (1",
        "true); ATTACH '{tmp}/attached.duckdb'; SELECT (1",
    ],
)
def test_the_lock_down_alone_refuses_file_access_through_a_filter(unchecked, attack):
    cat, outside = unchecked
    tmp = outside.parent
    where = attack.format(
        outside=outside, inside=cat.out_dir / "notes.csv", manifest=cat.out_dir / "manifest.json", tmp=tmp
    )
    assert cat.count("items", "true") == 10  # the unchecked path works: only the lock-down stands in the way
    with pytest.raises(BadWhere, match="Permission Error") as err:
        cat.candidates("items", where)
    assert SECRET not in str(err.value)
    assert not (tmp / "copied.csv").exists() and not (tmp / "attached.duckdb").exists()


@pytest.mark.parametrize(
    "statement, refusal",
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
        ("COPY (SELECT 1) TO '{tmp}/copied.csv'", "Permission Error"),
        ("COPY items TO '{tmp}/copied.parquet'", "Permission Error"),
        ("ATTACH '{tmp}/attached.duckdb'", "Permission Error"),
        ("INSTALL '{tmp}/local.duckdb_extension'", "Permission Error"),  # a local file: no download is tried
        ("LOAD '{tmp}/local.duckdb_extension'", "Permission Error"),
        ("LOAD parquet", None),  # already loaded (the views use it): not a way out
        ("SET enable_external_access = true", "configuration has been locked"),
        ("SET allowed_paths = ['/']", "configuration has been locked"),
        ("SET lock_configuration = false", "configuration has been locked"),
        ("RESET enable_external_access", "configuration has been locked"),
    ],
)
def test_the_lock_down_alone_refuses_statements(unchecked, statement, refusal):
    """Statements run straight on the catalog's connection, where no parse-tree check exists at all."""
    cat, outside = unchecked
    tmp = outside.parent
    sql = statement.format(tmp=tmp)
    if refusal is None:
        cat.sql(sql)
    else:
        with pytest.raises(RadRetrieveError, match=refusal):
            cat.sql(sql)
    assert not any((tmp / name).exists() for name in ("copied.csv", "copied.parquet", "attached.duckdb"))
    assert cat.sql("SELECT count(*) FROM items")[0][0] == 10  # the views still read their shards


# -- resume: finished tasks are not encoded again ------------------------------------------------------------
class CountingEncoder:
    """The real encoder, counting the images and volumes it is asked to encode."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.items = 0

    def encode_mixed(self, arrays: Any, is_volume: Any) -> Any:
        self.items += len(arrays)
        return self._model.encode_mixed(arrays, is_volume)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


def test_a_rerun_encodes_only_the_tasks_that_did_not_finish(tmp_path, tiny_model):
    root, out = tmp_path / "a", tmp_path / "o"
    synthesize(root, studies=5, seed=6, min_slices=15, max_slices=16)
    options = IndexOptions(workers=0, studies_per_task=1, progress=False)
    first = CountingEncoder(tiny_model)
    total = index_archive(root, out, first, options)
    n_items = sum(v for k, v in total.rows.items() if k != "report")
    assert first.items == n_items and total.tasks == 5
    # a crash before the last two tasks were committed: their shards are not in the manifest
    manifest = read_manifest(out)
    lost = manifest.shards[-2:]
    write_manifest(out, manifest.without({s.file for s in lost}))
    for entry in lost:
        (out / entry.file).unlink()
    rerun = CountingEncoder(tiny_model)
    summary = index_archive(root, out, rerun, options)
    lost_items = sum(n for s in lost for k, n in s.counts.items() if k != "report")
    assert rerun.items == lost_items and 0 < lost_items < n_items  # the finished tasks were not encoded again
    assert summary.tasks == 2 and summary.to_dict()["items"] == lost_items
    again = CountingEncoder(tiny_model)
    assert index_archive(root, out, again, options).tasks == 0 and again.items == 0
    assert sum(s.rows for s in read_manifest(out).shards) == sum(total.rows.values())
