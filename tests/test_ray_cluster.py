"""The Ray engine on a real multi-node cluster (two Ray nodes on this machine, started and stopped here):
the job joins it with --ray-address, runs encoders on both nodes, writes the local engine's rows, and loses
nothing when a worker process or a whole node dies mid-job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.job import IndexOptions, index_archive
from pipelines.ray_cluster.scan import Partition, folder_partitions
from radretrieve.outdir.manifest import read_manifest
from radretrieve.synth import synthesize
from radretrieve.testing.dicom import write_ct_series

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

CLI = [sys.executable, "-m", "radretrieve"]


def _log(folder: Path):
    """A file for a background job's stderr (a pipe nobody reads could fill up and stall the job)."""
    return open(folder / "job.stderr", "w")


def _tail(folder: Path) -> str:
    return (folder / "job.stderr").read_text()[-3000:]


# Ray's GCS declares a node that stopped answering dead after `failure_threshold` health checks (15 s and more
# by default); the node-crash test waits for that, so the cluster checks more often (still tolerant of a loaded
# machine: 5 misses of 2 s).
HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 2000,
    "health_check_failure_threshold": 5,
}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "_system_config": HEALTH_CHECKS})
    worker = c.add_node(num_cpus=2)
    c.wait_for_nodes()
    yield c, worker
    c.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arch") / "a"
    synthesize(root, studies=16, seed=8)
    write_ct_series(root / "cut" / "series", 3)  # one series whose pixels are truncated: fails at read
    victim = sorted((root / "cut" / "series").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-200])
    return root


@pytest.fixture(scope="module")
def local_rows(archive, tiny_model, tmp_path_factory) -> dict[int, dict]:
    out = tmp_path_factory.mktemp("local") / "o"
    # both engines keep paths: rows are compared by path-derived item ids (anonymised ids are keyed per out dir)
    index_archive(
        archive, out, tiny_model, IndexOptions(workers=0, studies_per_task=1, progress=False, anonymise_paths=False)
    )
    return _rows(out)


def _rows(out: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for entry in read_manifest(out).shards:
        for r in pq.read_table(out / entry.file).to_pylist():
            assert r["item_id"] not in rows, f"duplicate id {r['item_id']}"
            rows[r["item_id"]] = r
    return rows


def _same(a: dict[int, dict], b: dict[int, dict], atol: float = 1e-5) -> None:
    diff = {i: {k: v for k, v in (a.get(i) or b.get(i)).items() if k != "embedding"} for i in set(a) ^ set(b)}
    assert set(a) == set(b), diff
    for i in a:
        assert {k: v for k, v in a[i].items() if k != "embedding"} == {
            k: v for k, v in b[i].items() if k != "embedding"
        }
        np.testing.assert_allclose(a[i]["embedding"], b[i]["embedding"], rtol=0, atol=atol)


RUN = {"capture_output": True, "text": True, "timeout": 300}


def _cmd(archive: Path, out: Path, address: str) -> list[str]:
    ray_args = ["--engine", "ray", "--ray-address", address, "--encoders", "2", "--keep-paths"]  # as local_rows
    return [*CLI, "index", str(archive), "--out", str(out), *ray_args, "--studies-per-task", "1", "--no-index", "-q"]


def test_the_job_uses_encoders_on_both_nodes_and_equals_the_local_engine(cluster, archive, request, tmp_path):
    c, _ = cluster
    out = tmp_path / "o"
    with ThreadPoolExecutor(max_workers=1) as pool:  # the local engine's rows are made here meanwhile
        job = pool.submit(subprocess.run, [*_cmd(archive, out, c.address), "--json"], **RUN)
        local_rows = request.getfixturevalue("local_rows")
    proc = job.result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.splitlines()[0])
    assert summary["engine"] == "ray" and len(summary["cluster"]["nodes"]) == 2
    encoders = summary["cluster"]["encoders"]
    assert len({e["node"] for e in encoders}) == 2 and all(e["items"] > 0 for e in encoders)
    assert sum(e["items"] for e in encoders) == summary["items"]
    # each node's 2 CPUs go to its one encoder's torch threads (Ray alone would leave it OMP_NUM_THREADS=1)
    assert [e["threads"] for e in encoders] == [2, 2]
    _same(local_rows, _rows(out))
    errors = [json.loads(line) for p in (out / "errors").glob("t-*.jsonl") for line in p.read_text().splitlines()]
    assert [(e["source"], e["error_type"]) for e in errors] == [("cut/series", "CorruptFile")]
    info = subprocess.run([*CLI, "info", str(out)], capture_output=True, text=True, timeout=120).stdout
    assert "engine ray" in info and info.count("encoder ") == 2  # `info` shows the same job totals


# -- PACS sources on the cluster: each server kind is one parameter of `pacs_source`, on the module's cluster ------
PASSWORD = "pw-Ray7-secret"  # the PACS account's password: it must reach the workers and no output
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """A real Orthanc holding three CT studies (one series of 40 slices: the readers fetch the 32 they decode),
    pydicom's RLE MR, and its JPEG-LS image (no decoder installed: fails at read, where the stored transfer
    syntax shows), behind HTTP basic auth."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from radretrieve.testing.orthanc import Orthanc
    from tests.pacs_files import needs_orthanc

    needs_orthanc()
    files = tmp_path_factory.mktemp("pacs-files")
    for seed, n in ((1, 40), (2, 6), (3, 3)):
        write_ct_series(files / f"ct{seed}", n, seed=seed)
    (files / "mr.dcm").write_bytes(Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes())
    jpeg_ls = pydicom.dcmread(get_testdata_file("JPEGLSNearLossless_16.dcm"))  # Orthanc needs these UIDs
    jpeg_ls.StudyInstanceUID, jpeg_ls.SeriesInstanceUID = generate_uid(), generate_uid()
    jpeg_ls.SOPClassUID = jpeg_ls.file_meta.MediaStorageSOPClassUID = CT_IMAGE  # selected as an image, not a capture
    jpeg_ls.save_as(files / "jpeg-ls.dcm")
    with Orthanc(tmp_path_factory.mktemp("orthanc"), users={"radiology": PASSWORD}, dicom=True) as server:
        server.upload_folder(files)
        yield server


@pytest.fixture(params=["dicomweb", "dimse"])
def pacs_source(request, pacs):
    """(archive argument of `radretrieve index`, environment of the job, the same source in this process): the
    same Orthanc over DICOMweb (with its password) and over DIMSE (C-FIND, C-GET)."""
    from radretrieve.archive.dicomweb import AUTH_ENV, Retry, parse_auth, parse_source

    retry = Retry(tries=2, backoff_s=0.1)
    if request.param == "dimse":
        from radretrieve.archive.dimse import parse_source as parse_dimse

        return pacs.dimse_url, dict(os.environ), parse_dimse(pacs.dimse_url, retry=retry)
    secret = f"basic radiology:{PASSWORD}"
    source = parse_source(pacs.dicomweb_url, auth=parse_auth(secret, AUTH_ENV), retry=retry)
    return pacs.dicomweb_url, {**os.environ, AUTH_ENV: secret}, source


def test_a_pacs_source_on_both_nodes_equals_the_local_engine_and_syncs_by_series(
    cluster, pacs_source, tiny_model, tmp_path
):
    """`--engine ray` with a PACS: the driver lists, the workers of both nodes scan and fetch their own series;
    the rows equal the local engine's on the same server, the failed series is counted, a rerun fetches
    nothing, and the password is in no output, out dir file or Ray log."""
    c, _ = cluster
    archive, env, source = pacs_source
    local = tmp_path / "local"
    out = tmp_path / "ray"
    ray_args = ["--engine", "ray", "--ray-address", c.address, "--encoders", "2", "--studies-per-task", "1"]
    cmd = [*CLI, "--verbose", "index", archive, "--out", str(out), *ray_args, "--no-index", "--json"]
    index_archive(source, local, tiny_model, IndexOptions(workers=0, studies_per_task=1, progress=False))
    runs = [subprocess.run(cmd, **RUN, env=env) for _ in range(3)]
    assert all(p.returncode == 0 for p in runs), runs[-1].stderr[-3000:]
    first, second, third = (json.loads(p.stdout.splitlines()[0]) for p in runs)
    assert first["engine"] == "ray" and len({e["node"] for e in first["cluster"]["encoders"]}) == 2
    assert first["series"] == {"listed": 5, "skipped": 0, "fetched": 4, "failed": 1, "not_selected": 0}
    assert first["errors"] == {"MissingDecoder": 1}
    assert second["series"] == {"listed": 5, "skipped": 5, "fetched": 0, "failed": 0, "not_selected": 0}
    # a series that failed for good stays failed and recorded however many runs skip it (DIMSE: at its scan)
    assert third["series"] == second["series"] and _errors(out) == _errors(local)
    _same(_rows(local), _rows(out), atol=1e-6)
    assert _errors(out) == _errors(local)
    session = Path(c.head_node.get_session_dir_path())
    shown = [p.stdout + p.stderr for p in runs] + [repr(source)]
    files = [f for f in [*out.rglob("*"), *session.rglob("*")] if f.is_file() and not f.is_symlink()]
    shown += [f.read_bytes().decode("utf-8", "replace") for f in files]
    assert not [text for text in shown if PASSWORD in text]


def test_a_pacs_series_that_kills_its_workers_fails_alone(cluster, pacs_source, tiny_model):
    """The reader tasks of a server source fetch on the workers; a chunk whose items include one that kills
    every worker reading it (an OOM kill, a decoder crash) is retried, then split: only that series fails
    (`WorkerCrashed`), the others are fetched and decoded, in order."""
    from pipelines.plan import make_plan
    from pipelines.ray_cluster.decode import gather, submit_chunks
    from pipelines.scan import scan_remote
    from radretrieve.testing.faults import DyingArchive

    c, _ = cluster
    _, _, source = pacs_source
    scanned, _ = scan_remote(source, None, set())
    works = [w for t in make_plan(scanned.studies, set(), 100) for w in t.work if w.item is not None]
    # the 40-slice CT series (not the first in plan order: the JPEG-LS study's UIDs are random, so it may sort first)
    poison = max(works, key=lambda w: len(w.item.files)).item.series_key
    dying = DyingArchive(source, poison)
    preprocess = tiny_model.config.preprocess
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    try:
        [(chunk, ref)] = submit_chunks(ray, works, dying, preprocess, len(works))
        got = gather(ray, chunk, ref, dying, preprocess)
    finally:
        ray.shutdown()
    assert [d.work.item_id for d in got] == [w.item_id for w in works]
    failed = {d.work.item.series_key: d.failure.error_type for d in got if d.failure is not None}
    assert failed.pop(poison) == "WorkerCrashed"
    # the JPEG-LS image fails as without the crash: at read over DICOMweb (its metadata does not show the stored
    # syntax), at the header scan over DIMSE (the retrieved file does), so it is no item there
    dicomweb = "dicomweb" in source.display
    assert list(failed.values()) == (["MissingDecoder"] if dicomweb else [])
    assert all(d.pixels is not None for d in got if d.failure is None) and len(got) == (5 if dicomweb else 4)


def _errors(out: Path) -> list[tuple[str, str, str]]:
    lines = [line for p in (out / "errors").glob("*.jsonl") for line in p.read_text().splitlines()]
    return sorted((e["source"], e["stage"], e["error_type"]) for e in map(json.loads, lines))


def _wait_for_shards(out: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "manifest.json").is_file() and len(read_manifest(out).shards) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} shards before the job ended: {proc.poll()}")


def _ray_workers(name: bytes) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(name):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_a_killed_encoder_process_costs_only_its_task(cluster, archive, local_rows, tmp_path):
    c, _ = cluster
    out = tmp_path / "o"
    job = subprocess.Popen(_cmd(archive, out, c.address), stdout=subprocess.DEVNULL, stderr=_log(tmp_path), text=True)
    _wait_for_shards(out, 2, job)
    actors = _ray_workers(b"ray::EncoderActor")
    assert actors, "no encoder actor processes found"
    os.kill(actors[0], signal.SIGKILL)
    assert job.wait(timeout=600) == 0, _tail(tmp_path)
    _same(local_rows, _rows(out))


def test_removing_a_node_mid_job_still_ends_with_every_row_once(cluster, archive, local_rows, tmp_path):
    """A node shut down (its raylet tells the cluster it leaves): Ray fails its actors' calls at once."""
    c, worker = cluster
    out = tmp_path / "o"
    job = subprocess.Popen(_cmd(archive, out, c.address), stdout=subprocess.DEVNULL, stderr=_log(tmp_path), text=True)
    try:
        _wait_for_shards(out, 2, job)
        c.remove_node(worker)  # the second machine goes away, with its encoder and reader workers
        assert job.wait(timeout=600) == 0, _tail(tmp_path)
    finally:
        if job.poll() is None:
            job.kill()
    _same(local_rows, _rows(out))


def test_a_node_that_crashes_mid_job_costs_only_its_tasks(cluster, archive, local_rows, tmp_path):
    """A node that dies without a word (power cut, raylet OOM-killed: every process SIGKILLed): the driver's
    calls to its encoder fail with ActorUnavailableError long before Ray's health checks declare the node
    dead, so for a while the driver counts CPUs the cluster no longer has. The node here has one CPU, its
    encoder's, so a replacement started on that stale count lands on the head's last free CPU, the one the
    reader tasks need: every encoder then waits for chunks that cannot run (the hang of issue 20)."""
    c, worker = cluster
    if worker in c.worker_nodes:  # the test above shuts the 2-CPU node down; it may not have run
        c.remove_node(worker)
    victim = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    out = tmp_path / "o"
    stdout = open(tmp_path / "job.stdout", "w")
    job = subprocess.Popen([*_cmd(archive, out, c.address), "--json"], stdout=stdout, stderr=_log(tmp_path), text=True)
    try:
        _wait_for_shards(out, 2, job)
        c.remove_node(victim, allow_graceful=False)  # SIGKILL: the GCS learns of it from missed health checks
        killed = time.monotonic()
        assert job.wait(timeout=180) == 0, _tail(tmp_path)
        recovery = time.monotonic() - killed
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    lines = (tmp_path / "job.stdout").read_text().splitlines()  # Ray writes the lost raylet's last words here too
    summary = json.loads(next(line for line in lines if line.startswith('{"studies"')))
    assert summary["cluster"]["task_runs_lost"] >= 1, _tail(tmp_path)  # the kill landed on work in flight
    assert recovery < 120, recovery  # health checks (~10 s here) plus the remaining tasks on one encoder
    _same(local_rows, _rows(out))  # every row once, as the local engine writes them


def _private_mounts_work() -> bool:
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _private_mounts_work(), reason="needs unshare -m (a private mount namespace)")
def test_an_out_dir_a_node_cannot_see_is_refused(cluster, archive, tmp_path):
    """A third node whose file system does not have the out dir's folder (an empty tmpfs mounted over it in a
    private mount namespace, as a machine without the NFS mount would be): the job stops with one line."""
    c, _ = cluster
    shared = tmp_path / "shared"
    shared.mkdir()
    ray_bin = Path(sys.executable).parent / "ray"
    # the blind node carries a resource of its own, so that waiting for it is waiting for this very node
    start = f"{ray_bin} start --address={c.address} --num-cpus=1 --resources='{{\"{BLIND}\": 1}}' --block"
    node = f"mount -t tmpfs tmpfs {shared} && exec {start}"
    isolated = ["unshare", "-m", "--propagation", "private", "sh", "-c", node]
    log = tmp_path / "blind.log"
    with open(log, "w") as out:
        blind = subprocess.Popen(isolated, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_exactly_the_cluster_and(c, blind, log)
        proc = subprocess.run(_cmd(archive, shared / "out", c.address), capture_output=True, text=True, timeout=180)
        assert proc.returncode == 1, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "not visible from node" in last and "NFS" in last
    finally:
        blind.send_signal(signal.SIGTERM)
        blind.wait(timeout=60)


BLIND = "blind_node"  # the custom resource of the node that cannot see the out dir


def _wait_for_exactly_the_cluster_and(c, blind: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Until the alive nodes are the test cluster's own (head and workers) plus the blind node.

    Not a count of alive nodes: a node SIGKILLed by an earlier test (the node-crash test) stays alive to
    Ray until its health checks fail, so a count taken before the blind node starts may include it, and
    then the dead node going and the blind node coming leave the count as it was (the test waited 120 s
    for a node that had joined). Waiting for that node to be declared dead also keeps the job's out-dir
    probe from being sent to it."""
    known = {n.node_id for n in c.list_all_nodes()}
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    alive: dict[str, dict] = {}
    try:
        deadline = time.monotonic() + timeout  # a node joins slowly on a busy 2-core machine
        while time.monotonic() < deadline:
            assert blind.poll() is None, f"the blind node exited ({blind.returncode}): {log.read_text()[-2000:]}"
            alive = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
            blinds = {node for node, res in alive.items() if res.get(BLIND)}
            if len(blinds) == 1 and set(alive) - blinds == known:
                return
            time.sleep(0.5)
    finally:
        ray.shutdown()
    others = sorted(node[:8] for node in set(alive) - known)
    raise AssertionError(f"after {timeout:.0f} s: alive nodes beyond the cluster's own: {others}; {log.read_text()}")


def test_folder_partitions_cover_every_file_once(tmp_path):
    for rel in ("a/1.png", "a/b/2.png", "a/b/c/3.png", "d/4.png", "5.png", "e/f/6.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    from pipelines.ray_cluster.scan import _files

    for target in (1, 2, 5, 50):
        parts = folder_partitions(tmp_path, target)
        files = sorted(f for p in parts for f in _files(tmp_path, p))
        assert files == ["5.png", "a/1.png", "a/b/2.png", "a/b/c/3.png", "d/4.png", "e/f/6.png"]
        assert target == 1 or len(parts) > 1
    assert Partition("", True) in folder_partitions(tmp_path, 1)


def test_a_chunk_that_kills_its_workers_is_split_and_only_the_poison_item_fails(cluster):
    """Ray's side of dead readers: the chunk task dies on every retry; alone, only the poison item does."""
    from pipelines.ray_cluster.decode import CHUNK_RETRIES, gather_chunk
    from radretrieve.testing.faults import POISON, double_or_die

    c, _ = cluster
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    try:
        chunk = ray.remote(num_cpus=1, max_retries=CHUNK_RETRIES)(double_or_die)
        values = [1, 2, POISON, 4]
        got = gather_chunk(ray, values, chunk.remote(values), double_or_die, lambda v: -v)
    finally:
        ray.shutdown()
    assert got == [2, 4, -POISON, 8]
