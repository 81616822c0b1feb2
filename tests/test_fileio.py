"""The one file writer: atomic, same mode everywhere (also from concurrent threads), temp files recoverable."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexers import BuildConfig, build_indexes
from radretrieve.foundation import fileio
from radretrieve.foundation.fileio import (
    FILE_MODE,
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    is_temp,
    remove_stale_temps,
    temp_path,
)
from radretrieve.testing.shards import SyntheticItems, clustered_vectors, write_out_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_mode_is_what_open_would_give():
    mask = os.umask(0o022)
    os.umask(mask)
    assert FILE_MODE == 0o666 & ~mask


def test_files_written_from_two_threads_all_get_the_same_mode(tmp_path):
    """mkstemp makes 0600 files; the old per-write umask flip raced with other threads. Both writers here
    (bytes, and a library writing by name) run at once, 200 files each."""
    errors: list[BaseException] = []

    def by_bytes() -> None:
        for i in range(200):
            atomic_write_bytes(tmp_path / f"b{i}.bin", b"x" * i)

    def by_name() -> None:
        table = pa.table({"x": np.arange(10)})
        for i in range(200):
            with atomic_path(tmp_path / f"n{i}.parquet") as tmp:
                pq.write_table(table, tmp)

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (by_bytes, by_name)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    files = sorted(tmp_path.iterdir())
    assert len(files) == 400 and not any(is_temp(f) for f in files)
    assert {_mode(f) for f in files} == {FILE_MODE}


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_a_folder_is_replaced_as_a_whole(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_dir(final) as tmp:
        (tmp / "a").write_bytes(b"1")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "a").write_bytes(b"2")
            raise RuntimeError("killed")
    assert (final / "a").read_bytes() == b"1" and _mode(final / "a") == FILE_MODE
    with atomic_dir(final) as tmp:
        (tmp / "b").write_bytes(b"3")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_stale_temps_of_dead_writers_are_removed(tmp_path, monkeypatch):
    live = temp_path(tmp_path / "mine.parquet")  # this process: alive
    live.write_bytes(b"")
    dead = tmp_path / "sub" / ".x.parquet.999999999-0badc0de.tmp"  # a pid that cannot exist
    dead.parent.mkdir()
    dead.write_bytes(b"")
    other = tmp_path / ".notours.tmp"  # not made by temp_path: never touched
    other.write_bytes(b"")
    assert remove_stale_temps(tmp_path, only_dead=True) == [dead]
    assert live.exists() and other.exists()
    assert remove_stale_temps(tmp_path) == [live]  # a lock holder removes every writer's temps
    assert other.exists()


def test_shards_indexes_and_stores_share_one_mode(tmp_path):
    dim = 16
    vecs = clustered_vectors(3000, dim, n_clusters=20, seed=1)
    write_out_dir(tmp_path, [SyntheticItems.random(3000, dim, seed=0, kinds=("volume",), vectors=vecs)], dim)
    build_indexes(tmp_path, BuildConfig(index_type="ivf_pq", tune_queries=100), targets=("items",))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in files}
    assert {".parquet", ".faiss", ".npy", ".json"} <= suffixes
    assert {p.name: _mode(p) for p in files} == {p.name: FILE_MODE for p in files}
    assert fileio.FILE_MODE == FILE_MODE
