"""PACS fetch speed without shortcuts: a DIMSE job retrieves each series once and writes no instance to disk,
keeps at most its memory bound, and equals the folder; the receiving node keeps its readers for its whole run,
updates its indexes once a burst of batches is over, and answers each C-STORE without waiting on a delayed ACK.

Against a real Orthanc (DICOM port, through a real TCP proxy that counts the retrievals) and real
`radretrieve listen` processes; skipped with one line without Orthanc (failed under RADRETRIEVE_REQUIRE_ORTHANC=1).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import pytest

from radretrieve.archive.dicomweb import Limits, Retry
from radretrieve.testing.orthanc import Orthanc, orthanc_missing
from radretrieve.testing.tcp_proxy import TcpProxy
from tests.test_dicomweb import _rows, _same_rows

FAST = {"tries": 2, "backoff_s": 0.01, "timeout_s": 10.0}
GET_UID = b"1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Q/R GET: proposed by the associations that retrieve
LONG, SHORT = 40, 6  # slices of the two CT series (the long one has more than the 32 sampled)


def _needs_orthanc() -> None:
    missing = orthanc_missing()
    if missing:
        if os.environ.get("RADRETRIEVE_REQUIRE_ORTHANC") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    from radretrieve.testing.dicom import write_ct_series

    root = tmp_path_factory.mktemp("archive")
    write_ct_series(root / "long", LONG, seed=11, attrs={"SeriesDescription": "long"})
    write_ct_series(root / "short", SHORT, seed=12, attrs={"SeriesDescription": "short"})
    return root


@pytest.fixture(scope="module")
def pacs(archive, tmp_path_factory):
    _needs_orthanc()
    with Orthanc(tmp_path_factory.mktemp("orthanc"), dicom=True, cache_mb=0) as server:
        server.upload_folder(archive)
        yield server


@pytest.fixture(scope="module")
def folder_rows(archive, tiny_model, tmp_path_factory):
    from pipelines.job import IndexOptions, index_archive

    out = tmp_path_factory.mktemp("folder") / "out"
    index_archive(archive, out, tiny_model, IndexOptions(workers=0, progress=False))
    return _rows(out)


def _source(url: str, **kwargs):
    from radretrieve.archive.dimse import parse_source

    return parse_source(url, **{"retry": Retry(**FAST), **kwargs})


def _index(source, out: Path, model):
    from pipelines.job import IndexOptions, index_archive

    return index_archive(source, out, model, IndexOptions(workers=0, progress=False))


def _series_uids(archive: Path) -> dict[str, bytes]:
    import pydicom

    return {
        name: pydicom.dcmread(next((archive / name).iterdir()), stop_before_pixels=True).SeriesInstanceUID.encode()
        for name in ("long", "short")
    }


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The process's temporary folder, empty and watched (every temporary file of the job would land there)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return folder


def test_a_dimse_job_retrieves_each_series_once_and_writes_no_instance(
    pacs, archive, folder_rows, tiny_model, tmp_path, scratch
):
    """Every instance arrives once (the scan's C-GET of its series; the read decodes what the scan kept), nothing
    is written to the temporary folder while instances arrive, and the rows equal the folder's."""
    seen: list[str] = []

    def watch(conn, upstream, data):
        if not upstream and GET_UID in conn.sent:  # instances on their way: the temporary folder is empty
            seen.extend(p.name for p in scratch.rglob("*"))

    with TcpProxy(pacs.dicom_port, watch) as proxy:
        summary = _index(_source(f"dimse://{pacs.aet}@127.0.0.1:{proxy.port}"), tmp_path / "out", tiny_model)
    assert summary.errors == {} and summary.series["fetched"] == 2, summary.series
    retrievals = [c for c in proxy.connections if GET_UID in c.sent]
    for name, uid in _series_uids(archive).items():
        assert len([c for c in retrievals if uid in c.sent]) == 1, name
    assert seen == [] and list(scratch.iterdir()) == []
    _same_rows(_rows(tmp_path / "out"), folder_rows)


def test_what_a_scan_keeps_is_bounded_and_a_read_retrieves_the_rest(pacs, archive, folder_rows, tiny_model, tmp_path):
    """With room for 10 instances per process, the 40-slice series' scan keeps 10 at most; its read retrieves
    the sampled slices it lacks (a second C-GET of that series), and the rows still equal the folder's."""
    from radretrieve.archive.dimse.memory import KEPT

    size = max(p.stat().st_size for p in (archive / "long").iterdir())
    limits = Limits(max_held_bytes=10 * size + size // 2)
    uid = _series_uids(archive)["long"]
    with TcpProxy(pacs.dicom_port) as proxy:
        source = _source(f"dimse://{pacs.aet}@127.0.0.1:{proxy.port}", limits=limits)
        from radretrieve.archive.dicomweb.listing import SeriesRef

        ref = next(r for r in source.list_series().refs if r.series_uid == uid.decode())
        scan = source.scan_series(ref)
        assert scan.error is None and len(scan.files) == LONG
        assert 0 < KEPT.used <= limits.max_held_bytes  # kept while it fit, then nothing more
        assert isinstance(ref, SeriesRef)
        KEPT.drop(source.display, ref.series_uid)
        KEPT.offer(source.display, "1.2.3.4", "1.2/1.2.3.4/1.2.3.4.5.dcm", b"x" * size, limits.max_held_bytes)
        summary = _index(source, tmp_path / "out", tiny_model)
        assert summary.errors == {} and KEPT.used <= limits.max_held_bytes
        assert KEPT.take(source.display, "1.2.3.4") == {}  # an earlier job's, never read: gone at the job's start
    assert len([c for c in proxy.connections if GET_UID in c.sent and uid in c.sent]) == 1 + 2  # scans, one read
    _same_rows(_rows(tmp_path / "out"), folder_rows)


def test_a_read_holds_at_most_two_answers_of_instances_in_memory(pacs, archive, tiny_model, tmp_path):
    """Each instance of the short series is below --max-response-mb, its six together above twice that: its
    scan (which holds none of them) passes, its read (nothing kept from the scan) fails at stage fetch instead of
    holding them all."""
    import json

    import pydicom

    size = max(p.stat().st_size for p in (archive / "short").iterdir())
    study = pydicom.dcmread(next((archive / "short").iterdir()), stop_before_pixels=True).StudyInstanceUID
    limits = Limits(max_response_bytes=int(size * 2.2))
    source = dataclasses.replace(
        _source(pacs.dimse_url, limits=limits, query=[f"StudyInstanceUID={study}"]), keep_scanned=False
    )
    summary = _index(source, tmp_path / "out", tiny_model)
    assert summary.errors == {"ResponseTooLarge": 1}, summary.errors
    (record,) = [json.loads(line) for p in (tmp_path / "out" / "errors").glob("*.jsonl") for line in p.open()]
    assert record["item_id"] is not None and record["stage"] == "fetch"  # the read's, not the scan's
    assert "the item's instances are larger than" in record["message"]


def test_kept_instances_stop_at_the_budget_and_a_read_takes_them_out():
    from radretrieve.archive.dimse.memory import KeptInstances

    kept = KeptInstances()
    assert kept.offer("n", "s1", "a", b"x" * 40, budget=100) and kept.offer("n", "s1", "b", b"y" * 40, budget=100)
    assert not kept.offer("n", "s2", "c", b"z" * 40, budget=100) and kept.used == 80
    assert kept.offer("n", "s1", "a", b"w" * 50, budget=100) and kept.used == 90  # a retry's copy replaces
    assert kept.take("other-node", "s1") == {} and kept.take("n", "s1") == {"a": b"w" * 50, "b": b"y" * 40}
    assert kept.used == 0 and kept.take("n", "s1") == {}
    assert kept.offer("n", "s2", "c", b"z" * 40, budget=100)
    kept.drop("n", "s2")
    assert kept.used == 0


# -- the receiving node -------------------------------------------------------------------------------------
def test_index_updates_wait_until_no_batch_is_ready_or_index_every_passed(tmp_path, tiny_model):
    """Two studies ready at once, one per batch: the FAISS update runs once, after the second (the first
    finds another batch ready); with `index_every` 0 (`--index-every 0`) it runs after each."""
    from pipelines.outdir_open import open_out_dir
    from pipelines.receive.node import Node, ReceiveOptions
    from pipelines.receive.scp import ScpOptions
    from pipelines.receive.spool import Spool
    from radretrieve.foundation.lock import writer_lock
    from radretrieve.testing.dicom import write_ct_series

    for every, expected in ((60.0, [2]), (0.0, [1, 2])):
        out = tmp_path / f"out-{every:g}"
        updates: list[int] = []
        with writer_lock(out, "test"):
            open_out_dir(out, tiny_model, overwrite=False, anonymise=True)
            spool = Spool(out)
            scp = ScpOptions(aet="RADRETRIEVE", port=0)
            options = ReceiveOptions(scp=scp, settle=0.1, batch_studies=1, index_every=every)
            node = Node(out, tiny_model, options)

            def update(node=node, updates=updates) -> dict:
                updates.append(node.totals.batches + 1)  # the batch being finished
                return {}

            node._hooks = (update, lambda report, infos: None)
            for seed in (5, 6):
                write_ct_series(spool.incoming / f"study-1.2.{seed}" / f"1.3.{seed}", 2, seed=seed)
            spool.recover()
            time.sleep(0.2)  # both settled
            for number in (1, 2):
                taken = spool.take_ready(settle=0.0, limit=1)
                assert taken is not None and node._index(spool, taken, number)
        assert updates == expected, every


def _readers_of(pid: int) -> set[int]:
    """The pids of a process's reader processes (spawned children; not multiprocessing's resource tracker)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.add(int(child))
            except OSError:
                pass  # gone meanwhile
    return found


def test_listen_keeps_its_reader_processes_across_batches(tmp_path):
    """`listen --workers 1`: the same reader process decodes the first and the second pushed study (a pool
    started per batch would be gone after the first and another one after the second)."""
    from radretrieve.testing.dicom import write_ct_series
    from tests.test_listen import Listener, _push

    write_ct_series(tmp_path / "a", 3, seed=7)
    write_ct_series(tmp_path / "b", 3, seed=8)
    with Listener(tmp_path / "out", "--workers", "1", "--no-index", settle=0.5) as node:
        node.started()
        assert _push(node.port, tmp_path / "a").returncode == 0
        node.batches(1)
        first = _readers_of(node.proc.pid)
        assert _push(node.port, tmp_path / "b").returncode == 0
        node.batches(2)
        second = _readers_of(node.proc.pid)
        assert first and first == second
        assert node.stop() == 143


def test_the_scp_answers_each_instance_without_waiting_for_a_delayed_ack(tmp_path, tiny_model):
    """40 instances over one association: a sender whose next request waits for our ACK of its last segment
    (Nagle's algorithm) would take ~40 ms per instance; answered at once, far less. The median instance is
    compared: the delay hits every instance, a busy machine's pauses only some (the mean once failed at 24 ms)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from pipelines.receive.scp import Counters, ReceivingScp, ScpOptions
    from pipelines.receive.spool import Spool
    from radretrieve.testing.dicom import write_ct_series

    write_ct_series(tmp_path / "ct", 40, seed=9)
    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted((tmp_path / "ct").iterdir())]
    scp = ReceivingScp(Spool(tmp_path / "out"), ScpOptions(aet="RADRETRIEVE", port=0), Counters(), lambda: None)
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage, str(datasets[0].file_meta.TransferSyntaxUID))
    try:
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="RADRETRIEVE")
        assert assoc.is_established
        seconds = []
        for ds in datasets:
            start = time.perf_counter()
            assert assoc.send_c_store(ds).Status == 0
            seconds.append(time.perf_counter() - start)
        assoc.release()
    finally:
        ae.shutdown()
        scp.shutdown()
    assert statistics.median(seconds) < 0.02, sorted(seconds)


def test_a_dicomweb_read_gets_each_instance_as_soon_as_it_is_there(tmp_path):
    """The first instance is handed to the decoder while the second is still being fetched; an instance whose
    fetch failed raises that failure when the decoder reaches it; a name never fetched is missing."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from radretrieve.archive.dicomweb.fetch import Arriving
    from radretrieve.archive.records import ArchiveError

    second_may_finish = threading.Event()

    def fetch(name: str, wait: bool, fail: bool) -> None:
        if wait:
            assert second_may_finish.wait(30)
        if fail:
            raise ArchiveError("STUDY/SERIES/SOP.dcm", "the server sent another instance", "WrongInstance", "fetch")
        (tmp_path / name).write_bytes(b"DICM")

    with ThreadPoolExecutor(2) as pool:
        futures = {
            "000000.dcm": pool.submit(fetch, "000000.dcm", False, False),
            "000001.dcm": pool.submit(fetch, "000001.dcm", True, True),
        }
        folder = Arriving(tmp_path)
        folder.expect(futures)
        assert (folder / "000000.dcm").read_bytes() == b"DICM"
        assert not futures["000001.dcm"].done()  # decoding can start: the next instance is still on its way
        second_may_finish.set()
        with pytest.raises(ArchiveError, match="another instance"):
            folder / "000001.dcm"
    assert not (folder / "000002.dcm").exists()


def test_a_ray_scan_task_keeps_nothing_in_its_long_lived_worker(pacs, archive):
    """The body of the Ray scan task (run here, in this process, as a worker would): the series' headers are
    scanned, and nothing of them stays in the process's kept store, which no later job would clear."""
    from pipelines.ray_cluster.scan import scan_series_chunk
    from radretrieve.archive.dimse.memory import KEPT

    KEPT.clear()
    source = _source(pacs.dimse_url)
    refs = source.list_series().refs
    scans = scan_series_chunk(source, list(refs))
    assert [s.error for s in scans] == [None] * len(refs) and sum(len(s.files) for s in scans) == LONG + SHORT
    assert KEPT.used == 0 and all(KEPT.take(source.display, r.series_uid) == {} for r in refs)
