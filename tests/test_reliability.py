"""Nothing lost, nothing hung: one writer per out dir, dead readers, shard names, damaged shards, retries."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.job import IndexOptions, index_archive
from pipelines.plan import report_item_id
from pipelines.readers import ReaderPool, Window, ordered_map
from radretrieve.archive import scan
from radretrieve.foundation.lock import Locked, current_holder, writer_lock
from radretrieve.outdir.catalog import Catalog
from radretrieve.outdir.manifest import read_manifest
from radretrieve.outdir.verify import DamagedFile
from radretrieve.synth import synthesize
from radretrieve.testing.dicom import write_ct_series
from tests.locks import hold_lock

# These tests compare shards with `scan()`'s path-derived item ids and sources, so they keep paths (--keep-paths);
# the default, anonymised paths, is tested in test_phi_pipeline.py and test_archive_links.py.
QUIET = {"progress": False, "anonymise_paths": False}
CLI = [sys.executable, "-m", "radretrieve"]


def _log(folder: Path):
    """A file for a background job's stderr (a pipe nobody reads could fill up and stall the job)."""
    return open(folder / "job.stderr", "w")


def _tail(folder: Path) -> str:
    return (folder / "job.stderr").read_text()[-3000:]


def _rows(out: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for entry in read_manifest(out).shards:
        for r in pq.read_table(out / entry.file).to_pylist():
            assert r["item_id"] not in rows, f"duplicate id {r['item_id']}"
            rows[r["item_id"]] = r
    return rows


def _expected(root: Path) -> set[int]:
    result = scan(root)
    return {it.item_id for it in result.items} | {report_item_id(s.key) for s in result.studies if s.report}


def _wait_for(predicate, seconds: float = 300.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("arch")
    synthesize(base / "a", studies=6, seed=4)
    synthesize(base / "b", studies=6, seed=5)
    return base / "a", base / "b"


# -- one writer per out dir ------------------------------------------------------------------------------
def test_a_second_writer_stops_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path / "out")
    try:
        with pytest.raises(Locked) as info:
            with writer_lock(tmp_path / "out", "radretrieve build-index"):
                pass
        message = str(info.value)
        assert f"pid {holder.pid}" in message and "radretrieve index" in message and "since" in message
        assert "\n" not in message
        assert current_holder(tmp_path / "out").pid == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_writer_is_taken_over(tmp_path, caplog):
    proc = hold_lock(tmp_path / "out")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert current_holder(tmp_path / "out") is None  # the kernel dropped the dead process's lock
    with caplog.at_level(logging.INFO, logger="radretrieve.foundation.lock"):
        with writer_lock(tmp_path / "out", "radretrieve index"):
            assert current_holder(tmp_path / "out").pid == os.getpid()
    assert any("took over" in r.getMessage() and str(proc.pid) in r.getMessage() for r in caplog.records)


def test_two_jobs_on_one_out_dir_lose_nothing(archives, tiny_model, tmp_path):
    """A second `index` while the first runs stops naming the first; run after it, it adds its rows (shard
    names come from task ids, so two inputs cannot overwrite each other's shards)."""
    a, b = archives
    out = tmp_path / "out"
    cmd = [*CLI, "index", str(a), "--out", str(out), "--workers", "0", "--studies-per-task", "1", "--no-index", "-q"]
    cmd += ["--keep-paths"]  # compared with scan()'s path-derived ids, as QUIET does for index_archive
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=_log(tmp_path), text=True)
    _wait_for(lambda: (out / "manifest.json").is_file() and current_holder(out) is not None)
    os.kill(first.pid, signal.SIGSTOP)  # the first job, frozen mid-run with the lock held
    try:
        cmd_b = [*CLI, "index", str(b), "--out", str(out), "--workers", "0", "--no-index", "-q"]  # stops at the lock
        second = subprocess.run(cmd_b, capture_output=True, text=True, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 1 and second.stderr.strip().startswith("error: "), second.stderr
    assert f"pid {first.pid}" in second.stderr and "radretrieve index" in second.stderr
    assert first.wait(timeout=600) == 0, _tail(tmp_path)
    index_archive(b, out, tiny_model, IndexOptions(workers=0, studies_per_task=1, **QUIET))
    assert set(_rows(out)) == _expected(a) | _expected(b)
    assert len({s.file for s in read_manifest(out).shards}) == len(read_manifest(out).shards)


# -- dead readers ----------------------------------------------------------------------------------------
def poison(x: int) -> int:
    """Kills its process for the value 13 (an OOM kill or a decoder segfault would look the same)."""
    if x == 13:
        os._exit(9)
    time.sleep(0.01)
    return x * 2


def double(x: int) -> int:
    time.sleep(0.01)
    return x * 2


def test_a_worker_killed_by_an_item_is_noticed_and_only_that_item_fails(no_leftover_process):
    pool = ReaderPool(2)
    try:
        start = time.monotonic()
        got = list(ordered_map(pool, poison, range(30), Window(budget=6, min_items=4), crashed=lambda x: -x))
        assert time.monotonic() - start < 120  # noticed at once, not after a (300 s) task timeout
    finally:
        pool.close()
    assert got == [-13 if x == 13 else 2 * x for x in range(30)]  # every item once, in order
    assert pool.restarts == 2  # the batch crash, then the lone retry that pinned it on item 13


def dies_mid_result(x: int) -> int:
    """For 13: writes the start of a result message into the executor's result pipe, as a reader killed
    while it sends a large decoded volume leaves it, and dies; other values come back doubled."""
    if x == 13:
        frame = sys._getframe()
        while frame.f_code.co_name != "_process_worker":  # the executor's worker loop holds the result queue
            frame = frame.f_back
        fd = frame.f_locals["result_queue"]._writer.fileno()
        os.write(fd, (1 << 20).to_bytes(4, "big", signed=True) + bytes(100))  # a 1 MiB message, 100 B of it
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return x * 2


def test_a_reader_killed_in_the_middle_of_a_result_costs_only_its_item(no_leftover_process):
    """The executor waits forever for the rest of that message and never breaks the pool; the consumer
    notices the dead reader itself, starts afresh, and the stuck executor thread is ended (the interpreter
    joins those threads at exit, so a stuck one would hang the job's exit)."""
    import threading

    pool = ReaderPool(2, stall_seconds=2.0)
    done: dict[str, list] = {}

    def consume() -> None:
        done["got"] = list(ordered_map(pool, dies_mid_result, range(30), Window(6, 4), crashed=lambda x: -x))

    consumer = threading.Thread(target=consume, daemon=True)  # a daemon, so that a hang fails the test
    try:
        consumer.start()
        consumer.join(120)
        assert not consumer.is_alive(), "the consumer still waits on the stuck pool"
    finally:
        pool.close()
    got = done["got"]
    assert got == [-13 if x == 13 else 2 * x for x in range(30)]  # every item once, in order
    assert pool.restarts == 2  # the stuck pool, then the lone retry that pinned it on item 13
    stuck = [t for t in threading.enumerate() if "ExecutorManagerThread" in type(t).__name__ and t.is_alive()]
    assert stuck == []


def _children(parent: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:  # a thread that ended meanwhile
            continue
    return kids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _reader_pids(parent: int) -> list[int]:
    return [pid for pid in _children(parent) if b"spawn_main" in _cmdline(pid)]


def _running(pid: int) -> bool:
    """Is `pid` a live process (not gone, not a zombie waiting to be reaped)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def no_leftover_process():
    """Fails the test if a process it started (a reader, a job) still runs when it ends. multiprocessing's
    resource tracker is left out: it serves the whole test session and ends with it."""
    before = set(_children(os.getpid()))
    yield
    deadline = time.time() + 10
    while True:
        new = set(_children(os.getpid())) - before
        left = [p for p in new if _running(p) and b"resource_tracker" not in _cmdline(p)]
        if not left or time.time() > deadline:
            break
        time.sleep(0.1)
    assert not left, f"processes left running: {[(p, _cmdline(p)[:120]) for p in left]}"


def _kill_and_wait_broken(pool: ReaderPool):
    """Kill one reader while nobody waits on a result, and return once the pool has noticed."""
    os.kill(pool.pids()[0], signal.SIGKILL)
    _wait_for(lambda: bool(pool._executor._broken), 30)


def test_a_reader_killed_while_the_consumer_is_busy_costs_nothing(no_leftover_process):
    """The kill lands between two results (the consumer was encoding, not waiting): the broken pool shows at
    the next submit, not at a result. Every item comes back once, in order, none blamed."""
    pool = ReaderPool(2)

    def items():
        for x in range(40):
            if x == 12:
                _kill_and_wait_broken(pool)
            yield x

    try:
        got = list(ordered_map(pool, double, items(), Window(budget=4, min_items=4), crashed=lambda x: -x - 1000))
    finally:
        pool.close()
    assert got == [2 * x for x in range(40)]
    assert pool.restarts == 1


def test_closing_a_pool_leaves_no_reader(no_leftover_process):
    pool = ReaderPool(2)
    assert list(ordered_map(pool, double, range(8), Window(2, 2), crashed=lambda x: -x)) == [2 * x for x in range(8)]
    readers = pool.pids()
    assert len(readers) == 2
    pool.close()
    assert not [p for p in readers if Path(f"/proc/{p}").exists()]  # killed and reaped by close, not later


@pytest.fixture(scope="module")
def archive60(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("a60") / "a"
    synthesize(root, studies=60, seed=6)
    return root


def _index_cmd(root: Path, out: Path) -> list[str]:
    # --keep-paths: the rows are compared with scan()'s path-derived ids
    options = ["--workers", "2", "--studies-per-task", "4", "--no-index", "-q", "--keep-paths"]
    return [*CLI, "index", str(root), "--out", str(out), *options]


def test_killing_a_reader_mid_job_costs_nothing(archive60, tmp_path, no_leftover_process):
    """A reader SIGKILLed once two shards exist (the OOM killer's choice): its items run again, the job ends
    with exit 0 and the rows of an uninterrupted run, and no reader outlives it."""
    out = tmp_path / "out"
    start = time.monotonic()
    job = subprocess.Popen(_index_cmd(archive60, out), stdout=subprocess.DEVNULL, stderr=_log(tmp_path), text=True)
    try:
        _wait_for(lambda: (out / "manifest.json").is_file() and len(read_manifest(out).shards) >= 2)
        readers = _reader_pids(job.pid)
        assert len(readers) == 2, readers
        os.kill(readers[0], signal.SIGKILL)
        assert job.wait(timeout=300) == 0, _tail(tmp_path)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert time.monotonic() - start < 300
    assert len(read_manifest(out).shards) == 15 and set(_rows(out)) == _expected(archive60)  # _rows: no duplicates
    assert not list((out / "errors").glob("t-*.jsonl"))  # the retry succeeded: no item was blamed
    assert "a reader process died" in _tail(tmp_path)  # the kill landed mid-job


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_job_leaves_no_reader_running(archive60, tmp_path, sig, no_leftover_process):
    """SIGKILL runs no cleanup in the job: its readers notice their parent is gone and exit. SIGTERM unwinds
    the job as Ctrl-C does (exit 143), killing and reaping its readers on the way out."""
    out = tmp_path / "out"
    job = subprocess.Popen(_index_cmd(archive60, out), stdout=subprocess.DEVNULL, stderr=_log(tmp_path), text=True)
    try:
        _wait_for(lambda: len(_reader_pids(job.pid)) == 2 and (out / "manifest.json").is_file())
        readers = _reader_pids(job.pid)
        os.kill(job.pid, sig)
        assert job.wait(timeout=60) == (-signal.SIGKILL if sig == signal.SIGKILL else 143), _tail(tmp_path)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_running(p) for p in readers):
        time.sleep(0.1)
    left = [p for p in readers if _running(p)]
    for pid in left:  # no longer children of anyone here: stop them before failing
        os.kill(pid, signal.SIGKILL)
    assert not left, "readers outlived their job"


# -- damaged shards --------------------------------------------------------------------------------------
def test_a_damaged_shard_is_named_and_its_task_runs_again(archives, tiny_model, tmp_path):
    a, _ = archives
    out = tmp_path / "out"
    index_archive(a, out, tiny_model, IndexOptions(workers=0, studies_per_task=2, **QUIET))
    before = _rows(out)
    entries = read_manifest(out).shards
    victim, others = out / entries[1].file, [out / e.file for e in entries if e.file != entries[1].file]
    stats = {p: p.stat().st_mtime_ns for p in others}
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated, as a full disk or a killed copy leaves it
    with pytest.raises(DamagedFile) as info:
        Catalog(out)
    assert str(victim) in str(info.value) and "radretrieve index" in str(info.value) and "\n" not in str(info.value)
    for args in (["info", str(out)], ["build-index", str(out), "--rebuild"]):
        proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and victim.name in proc.stderr
    summary = index_archive(a, out, tiny_model, IndexOptions(workers=0, studies_per_task=2, **QUIET))
    assert summary.tasks == 1
    after = _rows(out)
    assert set(after) == set(before)
    assert {p: p.stat().st_mtime_ns for p in others} == stats  # the good shards were not rewritten


def test_a_missing_or_bit_flipped_shard_is_repaired_by_index(archives, tiny_model, tmp_path):
    a, _ = archives
    out = tmp_path / "out"
    index_archive(a, out, tiny_model, IndexOptions(workers=0, studies_per_task=2, **QUIET))
    entries = read_manifest(out).shards
    (out / entries[0].file).unlink()
    flipped = out / entries[2].file
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, same footer: only the checksum can tell
    flipped.write_bytes(bytes(data))
    summary = index_archive(a, out, tiny_model, IndexOptions(workers=0, studies_per_task=2, **QUIET))
    assert summary.tasks == 2 and set(_rows(out)) == _expected(a)


def test_temp_files_of_a_killed_write_are_removed_by_the_next_writer(archives, tiny_model, tmp_path):
    a, _ = archives
    out = tmp_path / "out"
    index_archive(a, out, tiny_model, IndexOptions(workers=0, **QUIET))
    planted = [out / ".manifest.json.999999-0badc0de.tmp", out / "errors" / ".x.jsonl.999999-0badc0de.tmp"]
    (out / "errors").mkdir(exist_ok=True)
    for p in planted:
        p.write_bytes(b"torn")
    index_archive(a, out, tiny_model, IndexOptions(workers=0, **QUIET))
    assert not any(p.exists() for p in planted)


# -- failed inputs: recorded once, retried when they change -----------------------------------------------
def test_a_corrected_input_is_indexed_on_the_next_run(tiny_model, tmp_path):
    root = tmp_path / "a"
    write_ct_series(root / "good", 3)
    write_ct_series(root / "fixme", 3, seed=1)
    victim = sorted((root / "fixme").iterdir())[1]
    good_bytes = victim.read_bytes()
    victim.write_bytes(good_bytes[:-200])  # fails at read
    out = tmp_path / "out"
    first = index_archive(root, out, tiny_model, IndexOptions(workers=0, **QUIET))
    assert first.errors == {"CorruptFile": 1}
    again = index_archive(root, out, tiny_model, IndexOptions(workers=0, **QUIET))
    assert again.tasks == 0  # unchanged: not retried
    retried = index_archive(root, out, tiny_model, IndexOptions(workers=0, retry_errors=True, **QUIET))
    assert retried.tasks == 1 and retried.errors == {"CorruptFile": 1}  # --retry-errors: tried, failed again
    errors = [json.loads(line) for p in (out / "errors").glob("t-*.jsonl") for line in p.read_text().splitlines()]
    assert len(errors) == 1  # recorded once, not once per run
    victim.write_bytes(good_bytes)  # the file is replaced by a good copy
    fixed = index_archive(root, out, tiny_model, IndexOptions(workers=0, **QUIET))
    assert fixed.tasks == 1 and not fixed.errors
    assert set(_rows(out)) == _expected(root)
    assert not [line for p in (out / "errors").glob("t-*.jsonl") for line in p.read_text().splitlines()]
