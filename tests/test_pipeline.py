"""Bulk indexing: shards, schema, resume after kill -9, bad files, incremental adds, model mismatch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.job import IndexOptions, index_archive
from pipelines.plan import report_item_id
from radretrieve.archive import read_item, scan
from radretrieve.foundation.errors import FingerprintMismatch
from radretrieve.outdir.manifest import read_manifest
from radretrieve.outdir.shards import shard_schema
from radretrieve.synth import synthesize
from radretrieve.testing.dicom import write_ct_series

# These tests compare shards with `scan()`'s path-derived item ids and sources, so they keep paths (--keep-paths);
# the default, anonymised paths, is tested in test_phi_pipeline.py and test_archive_links.py.
QUIET = {"progress": False, "anonymise_paths": False}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arch") / "a"
    synthesize(root, studies=6, seed=0)
    return root


@pytest.fixture(scope="module")
def indexed(archive, tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out") / "o"
    index_archive(archive, out, tiny_model, IndexOptions(workers=0, studies_per_task=2, **QUIET))
    return out


def _rows(out: Path) -> dict:
    """item_id -> row dict over the manifest's shards (independent of the catalog)."""
    rows = {}
    for entry in read_manifest(out).shards:
        for r in pq.read_table(out / entry.file).to_pylist():
            assert r["item_id"] not in rows, f"duplicate id {r['item_id']}"
            rows[r["item_id"]] = r
    return rows


def _expected_ids(archive: Path) -> set[int]:
    result = scan(archive)
    ids = {it.item_id for it in result.items}
    return ids | {report_item_id(s.key) for s in result.studies if s.report}


def test_every_item_once_with_schema_and_metadata(archive, indexed, tiny_model):
    rows = _rows(indexed)
    assert set(rows) == _expected_ids(archive)
    manifest = read_manifest(indexed)
    assert len(manifest.shards) == 3  # 6 studies, 2 per task
    for entry in manifest.shards:
        schema = pq.read_schema(indexed / entry.file)
        assert schema.remove_metadata() == shard_schema(128)
        assert schema.metadata[b"radretrieve.fingerprint"].decode() == tiny_model.fingerprint
        assert b"radretrieve.preprocess_hash" in schema.metadata and b"radretrieve.version" in schema.metadata
    emb = np.array([r["embedding"] for r in rows.values()], dtype=np.float32)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_embeddings_equal_direct_encoding(archive, indexed, tiny_model):
    rows = _rows(indexed)
    result = scan(archive)
    vol = next(it for it in result.items if it.kind == "volume")
    pixels = read_item(vol, result.root, tiny_model.config.preprocess).pixels
    direct = tiny_model.encode_volumes([torch.from_numpy(pixels)])[0].numpy()
    assert np.allclose(rows[vol.item_id]["embedding"], direct, atol=1e-5)
    study = result.studies[0]
    text = tiny_model.encode_text([study.report])[0].numpy()
    assert np.allclose(rows[report_item_id(study.key)]["embedding"], text, atol=1e-5)
    assert rows[report_item_id(study.key)]["kind"] == "report"


def test_worker_processes_give_the_same_shards(archive, indexed, tiny_model, tmp_path):
    index_archive(archive, tmp_path / "o", tiny_model, IndexOptions(workers=2, studies_per_task=2, **QUIET))
    a, b = _rows(indexed), _rows(tmp_path / "o")
    assert set(a) == set(b)
    for i in a:
        assert np.allclose(a[i]["embedding"], b[i]["embedding"], atol=1e-5)


def test_rerun_is_a_no_op(archive, tiny_model, tmp_path):
    out = tmp_path / "o"
    index_archive(archive, out, tiny_model, IndexOptions(workers=0, **QUIET))
    before = read_manifest(out)
    summary = index_archive(archive, out, tiny_model, IndexOptions(workers=0, **QUIET))
    assert summary.tasks == 0 and read_manifest(out) == before


def test_other_model_is_refused_unless_overwrite(archive, indexed, tmp_path):
    from radretrieve.models.loading import init_model
    from radretrieve.models.registry import get_model_config

    other = init_model(get_model_config("radclip-tiny").replace(seed=5))
    out = tmp_path / "o"
    shutil.copytree(indexed, out)
    with pytest.raises(FingerprintMismatch, match="--overwrite"):
        index_archive(archive, out, other, IndexOptions(workers=0, **QUIET))
    index_archive(archive, out, other, IndexOptions(workers=0, overwrite=True, **QUIET))
    assert read_manifest(out).fingerprint == other.fingerprint
    assert set(_rows(out)) == _expected_ids(archive)


@pytest.mark.parametrize("workers", [0, 2])  # 2: headers are scanned and items decoded in reader processes
def test_bad_files_go_to_errors_and_the_rest_is_indexed(archive, tiny_model, tmp_path, workers):
    from radretrieve.outdir.catalog import Catalog

    root = tmp_path / "a"
    shutil.copytree(archive, root)
    (root / "s0-00000" / "junk.dcm").write_bytes(os.urandom(2048))
    (root / "s0-00001" / "empty.png").write_bytes(b"")
    (root / "s0-00002" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "o"
    summary = index_archive(root, out, tiny_model, IndexOptions(workers=workers, **QUIET))
    assert set(_rows(out)) == _expected_ids(archive)  # every good item is there
    cat = Catalog(out)
    errors = cat.sql("SELECT source, error_type FROM errors ORDER BY source")
    sources = [s for s, _ in errors]
    assert any(s.endswith("junk.dcm") for s in sources)
    assert any(s.endswith("empty.png") for s in sources)
    assert any(s.endswith("broken.nii.gz") for s in sources)
    assert sum(summary.errors.values()) == len(errors) >= 3
    # a rerun does not record the same failures twice
    index_archive(root, out, tiny_model, IndexOptions(workers=workers, **QUIET))
    assert len(Catalog(out).sql("SELECT * FROM errors")) == len(errors)


def test_new_studies_are_added_incrementally(archive, indexed, tiny_model, tmp_path):
    root = tmp_path / "a"
    shutil.copytree(archive, root)
    out = tmp_path / "o"
    shutil.copytree(indexed, out)
    before = {s.file for s in read_manifest(out).shards}
    synthesize(tmp_path / "more", studies=3, seed=1)
    shutil.copytree(tmp_path / "more", root / "batch2")
    (root / "batch2" / "manifest.csv").unlink()
    index_archive(root, out, tiny_model, IndexOptions(workers=0, studies_per_task=2, **QUIET))
    manifest = read_manifest(out)
    new_files = [s.file for s in manifest.shards if s.file not in before]
    new_ids = {r for f in new_files for r in pq.read_table(out / f, columns=["item_id"]).column(0).to_pylist()}
    assert new_ids == _expected_ids(root) - _expected_ids(archive)
    assert set(_rows(out)) == _expected_ids(root)


def _errors(out: Path) -> list[tuple[str, str, str]]:
    """(source, stage, error type) of every error record, sorted; duplicates kept (they would be a bug)."""
    recs = [json.loads(line) for p in (out / "errors").glob("*.jsonl") for line in p.read_text().splitlines()]
    return sorted((r["source"], r["stage"], r["error_type"]) for r in recs)


def _assert_same_rows(a: dict, b: dict) -> None:
    """Every row equal: ids and metadata exactly, embeddings to float tolerance (batching differs)."""
    assert set(a) == set(b)
    for i, row in a.items():
        other = b[i]
        assert {k: v for k, v in row.items() if k != "embedding"} == {
            k: v for k, v in other.items() if k != "embedding"
        }
        assert np.allclose(row["embedding"], other["embedding"], atol=1e-5), i


def _kill_at_shards(proc: subprocess.Popen, out: Path, shards: int) -> bool:
    """SIGKILL `proc` once `out` lists `shards` shards; False if it ended first."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "manifest.json").is_file() and len(read_manifest(out).shards) >= shards:
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    return True


def test_kill_mid_job_then_resume_matches_uninterrupted(tmp_path, tiny_model):
    root = tmp_path / "a"
    synthesize(root, studies=16, seed=2)
    (root / "s2-00003" / "junk.dcm").write_bytes(os.urandom(2048))  # bad files: errors are part of the result
    (root / "s2-00009" / "empty.png").write_bytes(b"")
    ref = tmp_path / "ref"
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "radretrieve", "index", str(root), "--out", str(out), "--workers", "2"]
    cmd += ["--studies-per-task", "1", "--no-index", "-q", "--keep-paths"]  # as `ref`: QUIET keeps paths
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the uninterrupted reference is indexed here while the job starts (independent out dirs); a thread
        # kills the job once 3 shards exist
        with ThreadPoolExecutor(max_workers=1) as pool:
            killed = pool.submit(_kill_at_shards, proc, out, 3)
            index_archive(root, ref, tiny_model, IndexOptions(workers=0, studies_per_task=1, **QUIET))
        assert killed.result(), "job finished before it could be killed"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    partial = len(read_manifest(out).shards)
    assert 3 <= partial < 16
    # what a kill inside a shard write leaves: a temp file and an unlisted shard
    (out / "shards" / ".part-t-0000.parquet.999999-0badc0de.tmp").write_bytes(b"torn")
    (out / "shards" / "part-t-unlisted.parquet").write_bytes(b"PAR1 not listed")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    _assert_same_rows(_rows(ref), _rows(out))  # _rows raises on duplicate ids
    assert _errors(out) == _errors(ref) and len(_errors(ref)) == 2
    assert len(read_manifest(out).shards) == len(read_manifest(ref).shards)
    listed = sorted(Path(s.file).name for s in read_manifest(out).shards)
    assert sorted(p.name for p in (out / "shards").iterdir()) == listed  # orphans and temp files are gone


@pytest.fixture(scope="module")
def cut_archive(archive, tmp_path_factory) -> Path:
    """The synthetic archive plus a DICOM series whose pixels are truncated: its headers scan, it fails at read."""
    root = tmp_path_factory.mktemp("cut") / "a"
    shutil.copytree(archive, root)
    write_ct_series(root / "cut-study" / "series", 3)
    victim = sorted((root / "cut-study" / "series").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-200])
    return root


def _index_twice(root: Path, out: Path, model, options: IndexOptions) -> tuple:
    first = index_archive(root, out, model, options)
    errors = _errors(out)
    second = index_archive(root, out, model, options)
    return first, errors, second


def _assert_read_failure_recorded_once(first, errors, second, out) -> None:
    assert [e for e in errors if e[1] == "read"] == [("cut-study/series", "read", "CorruptFile")]
    assert first.errors["CorruptFile"] == 1
    assert second.tasks == 0 and sum(second.errors.values()) == 0  # not retried: nothing planned again
    assert _errors(out) == errors


@pytest.mark.parametrize("workers", [0, 2])
def test_a_read_failure_is_recorded_once_and_not_retried(cut_archive, tiny_model, tmp_path, workers):
    out = tmp_path / "o"
    runs = _index_twice(cut_archive, out, tiny_model, IndexOptions(workers=workers, studies_per_task=2, **QUIET))
    _assert_read_failure_recorded_once(*runs, out)


def test_ray_engine_equals_local(cut_archive, tiny_model, tmp_path):
    """A local Ray on 2 CPUs writes the same rows and errors as the local engine, and records a read failure
    once without retrying it."""
    import ray

    local, out = tmp_path / "local", tmp_path / "ray"
    index_archive(cut_archive, local, tiny_model, IndexOptions(workers=0, studies_per_task=2, **QUIET))
    try:
        options = IndexOptions(workers=2, studies_per_task=2, engine="ray", **QUIET)
        runs = _index_twice(cut_archive, out, tiny_model, options)
    finally:
        ray.shutdown()
    _assert_same_rows(_rows(local), _rows(out))
    assert _errors(out) == _errors(local)
    _assert_read_failure_recorded_once(*runs, out)
    # the local Ray: the encoder at nice 0 (Ray's default is 15) with the local engine's torch threads
    [encoder] = runs[0].cluster["encoders"]
    assert (encoder["nice"], encoder["threads"]) == (os.nice(0), min(3, len(os.sched_getaffinity(0))))
