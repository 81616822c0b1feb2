"""DIMSE archives (dimse://AET@HOST:PORT) against a real Orthanc DICOM port (C-FIND, C-GET, C-MOVE): the same
items and embeddings as the same files in a folder, incremental sync, faults (rejected associations, a node
gone mid-transfer, a series that arrives incomplete) as `fetch` errors that a rerun completes, planted patient
data that reaches no output.

One Orthanc (Debian package orthanc) serves every test: started on free 127.0.0.1 ports with its DICOM port
and radretrieve's AE title registered as a modality; without it the tests skip with one line (they fail under
RADRETRIEVE_REQUIRE_ORTHANC=1, as in CI). Faults are made by a real TCP proxy in front of it
(`radretrieve.testing.tcp_proxy`) that acts when it sees a retrieval of the read phase (a C-GET at IMAGE level).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from radretrieve.archive.dicomweb import Retry
from radretrieve.testing.orthanc import Orthanc
from radretrieve.testing.tcp_proxy import TcpProxy
from tests.pacs_files import folder_rows as pacs_folder_rows
from tests.pacs_files import needs_orthanc, write_ct_archive
from tests.pacs_files import rows as _rows
from tests.pacs_files import same_rows as _same_rows

FAST = {"tries": 2, "backoff_s": 0.01, "timeout_s": 10.0}  # one retry, no long waits
GET_UID = b"1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Q/R GET: proposed by associations that retrieve
SELECTED = 4 + 4  # series indexed: two CT series, pydicom's CT and MR; the planted study's CT series, US, burned CT


@pytest.fixture(scope="module", autouse=True)
def _needs_orthanc():
    needs_orthanc()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from radretrieve.testing.dicom import write_planted_archive

    return write_planted_archive(tmp_path_factory.mktemp("planted") / "arch")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, planted) -> Path:
    """The files the PACS holds, as a folder: two CT series (32 of 40 slices sampled), pydicom's CT and RLE MR
    (sent as stored, not transcoded), and the planted studies' DICOM files (a PACS holds no sidecar files)."""
    root = write_ct_archive(tmp_path_factory.mktemp("archive"))
    for path in sorted(planted.root.rglob("*.dcm")):
        target = root / "planted" / path.relative_to(planted.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


@pytest.fixture(scope="module")
def pacs(archive, tmp_path_factory):
    with Orthanc(tmp_path_factory.mktemp("orthanc"), dicom=True, cache_mb=0) as server:
        server.upload_folder(archive)
        yield server


@pytest.fixture(scope="module")
def folder_rows(archive, tiny_model, tmp_path_factory) -> pa.Table:
    return pacs_folder_rows(archive, tiny_model, tmp_path_factory.mktemp("folder-out"))


def _source(url: str, **kwargs):
    from radretrieve.archive.dimse import parse_source

    return parse_source(url, **{"retry": Retry(**FAST), **kwargs})


def _reading(source):
    """`source` with every item read retrieved again (nothing kept from the scan): faults of the read phase."""
    import dataclasses

    return dataclasses.replace(source, keep_scanned=False)


def _via(proxy: TcpProxy, pacs: Orthanc) -> str:
    return f"dimse://{pacs.aet}@127.0.0.1:{proxy.port}"


def _index(source, out: Path, model, workers: int = 0, **options):
    from pipelines.job import IndexOptions, index_archive

    return index_archive(source, out, model, IndexOptions(workers=workers, progress=False, **options))


def _is_read(conn) -> bool:
    """A retrieval of the read phase: a C-GET (not a C-FIND) at IMAGE level (the scan retrieves SERIES)."""
    return GET_UID in conn.sent and b"IMAGE" in conn.sent


def _records(out: Path) -> list[dict]:
    """The failures recorded in `out` (not the series the selection left out)."""
    found = [json.loads(line) for p in sorted((out / "errors").glob("*.jsonl")) for line in p.read_text().splitlines()]
    return [r for r in found if r["stage"] != "select"]


@pytest.fixture(scope="module")
def dimse_run(pacs, tiny_model, tmp_path_factory):
    """One C-GET run over the whole PACS with two readers, their temporary files in a folder of its own."""
    scratch = tmp_path_factory.mktemp("scratch")
    out = tmp_path_factory.mktemp("dimse") / "out"
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(scratch), None  # the readers' temporary files go there
    try:
        summary = _index(_source(pacs.dimse_url), out, tiny_model, workers=2)
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
    return out, summary, scratch


def test_dimse_index_equals_folder_index_and_leaves_no_copy(pacs, dimse_run, folder_rows):
    out, summary, scratch = dimse_run
    _same_rows(_rows(out), folder_rows)
    assert summary.errors == {}
    assert summary.series["fetched"] == SELECTED and summary.series["failed"] == 0, summary.series
    assert list(scratch.iterdir()) == []  # no copy of a patient's instance left on disk
    assert json.loads((out / "archive.json").read_text()) == {"remote": pacs.dimse_url}


def test_c_move_equals_c_get(pacs, folder_rows, tiny_model, tmp_path):
    """C-MOVE to our own storage SCP on the port Orthanc knows for our AE title, two readers taking turns."""
    summary = _index(_source(pacs.dimse_url, move_port=pacs.move_port), tmp_path / "out", tiny_model, workers=2)
    assert summary.errors == {} and summary.series["fetched"] == SELECTED
    _same_rows(_rows(tmp_path / "out"), folder_rows)


def test_second_run_fetches_nothing_and_a_new_study_only_itself(pacs, dimse_run, folder_rows, tiny_model, tmp_path):
    """A rerun retrieves no indexed series (the series the selection left out are scanned again, as for
    DICOMweb: pipelines.sync), and a new study is the only one read."""
    from radretrieve.testing.dicom import write_ct_series

    out = tmp_path / "out"
    shutil.copytree(dimse_run[0], out)
    listed = dimse_run[1].series["listed"]
    indexed = _series_uids(folder_rows)
    rest = listed - SELECTED
    with TcpProxy(pacs.dicom_port) as proxy:
        source = _source(_via(proxy, pacs))
        again = _index(source, out, tiny_model)
        expected = {"listed": listed, "skipped": SELECTED, "fetched": 0, "failed": 0, "not_selected": rest}
        assert again.series == expected
        retrieved = [c for c in proxy.connections if GET_UID in c.sent]
        assert not [c for c in retrieved if _is_read(c) or any(s.encode() in c.sent for s in indexed)]
        _, series = write_ct_series(tmp_path / "new", 5, seed=3)
        ids = pacs.upload_folder(tmp_path / "new")
        try:
            before = len(proxy.connections)
            third = _index(source, out, tiny_model)
        finally:
            pacs.delete(ids)
        retrieved = [c for c in proxy.connections[before:] if GET_UID in c.sent]
    expected = {"listed": listed + 1, "skipped": SELECTED, "fetched": 1, "failed": 0, "not_selected": rest}
    assert third.series == expected
    # the new series alone is retrieved, once: its scan (its read decodes what the scan kept)
    assert len([c for c in retrieved if series.encode() in c.sent]) == 1
    assert not [c for c in retrieved if any(s.encode() in c.sent for s in indexed)]
    assert _rows(out).num_rows == _rows(dimse_run[0]).num_rows + 1


def test_a_node_that_cannot_be_listed_is_one_line_and_exit_1(pacs, tmp_path):
    """Wrong called AE title, our AE title unknown there, nothing listening: one line before the model loads."""
    from radretrieve.application.indexing import DicomWebOptions, DimseOptions, IndexOptions, prepare_index
    from radretrieve.foundation.errors import RadRetrieveError
    from radretrieve.testing.orthanc import free_port

    url = f"dimse://WRONG@127.0.0.1:{pacs.dicom_port}"
    cases = {
        (url, None): f"{url}: association rejected: the called AE title is not the node's",
        (pacs.dimse_url, "STRANGER"): f"{pacs.dimse_url}: association rejected: our calling AE title is not known",
        (f"dimse://PACS@127.0.0.1:{free_port()}", None): "cannot connect (nothing answers at that address and port)",
    }
    for (archive, calling), message in cases.items():
        options = IndexOptions(dicomweb=DicomWebOptions(retries=0), dimse=DimseOptions(calling_aet=calling))
        with pytest.raises(RadRetrieveError) as exc:
            prepare_index(archive, options)
        assert message in str(exc.value) and "\n" not in str(exc.value)
    cmd = [sys.executable, "-m", "radretrieve", "index", url, "--out", str(tmp_path / "out"), "-q", "--retries", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {url}: association rejected: the called AE title is not the node's: check the called AE title, "
        "and that the node knows ours (RADRETRIEVE, --calling-aet) with this host"
    ]
    assert not (tmp_path / "out").exists()


def test_rejected_at_fetch_is_a_fetch_error_then_rerun_completes(pacs, folder_rows, tiny_model, tmp_path):
    """Once the read phase starts, Orthanc no longer knows our AE title: the retrievals are refused (one
    `fetch` record per item, the job goes on to its end); once it knows it again, a rerun completes."""
    changed = []

    def forget_us(conn, upstream, data):
        if upstream and not changed and _is_read(conn):
            pacs.set_modality(aet="SOMEONE-ELSE")
            changed.append(conn.number)

    try:
        with TcpProxy(pacs.dicom_port, forget_us) as proxy:
            first = _index(_reading(_source(_via(proxy, pacs))), tmp_path / "out", tiny_model, studies_per_task=1)
    finally:
        pacs.set_modality()
    assert changed and first.series["failed"] == SELECTED and first.series["fetched"] == 0, first.series
    assert "AssociationRejected" in first.errors, first.errors
    records = _records(tmp_path / "out")
    assert len(records) == SELECTED and {r["stage"] for r in records} == {"fetch"}
    assert any("our calling AE title is not known there" in r["message"] for r in records)
    second = _index(_source(pacs.dimse_url), tmp_path / "out", tiny_model)
    assert second.errors == {} and second.series["fetched"] == SELECTED
    _same_rows(_rows(tmp_path / "out"), folder_rows)


def test_node_gone_mid_transfer_then_rerun_resumes_to_the_same_rows(pacs, folder_rows, tiny_model, tmp_path):
    """Orthanc is killed (SIGKILL) as it starts sending the instances of the second item read (the association
    established, the C-GET sent): that item and the rest are recorded as failed (stage fetch) and the job ends;
    once Orthanc is back, the rerun fetches only those."""
    reads: list[int] = []
    answers: dict[int, int] = {}

    def kill_mid_second_read(conn, upstream, data):
        if upstream and _is_read(conn) and conn.number not in reads:
            reads.append(conn.number)
        if not upstream and reads[1:2] == [conn.number]:
            answers[conn.number] = answers.get(conn.number, 0) + 1
            if answers[conn.number] > 1:  # after the association's acceptance: the instances
                pacs.kill()
                return False
        return None

    series = _series_uids(folder_rows)
    try:
        with TcpProxy(pacs.dicom_port, kill_mid_second_read) as proxy:
            first = _index(_reading(_source(_via(proxy, pacs))), tmp_path / "out", tiny_model, studies_per_task=1)
            done = _series_read(proxy, series)
    finally:
        pacs.start()
    assert first.series["fetched"] == 1 and first.series["failed"] == SELECTED - 1, first.series
    assert set(first.errors) <= {"AssociationAborted", "FetchFailed"}, first.errors
    records = _records(tmp_path / "out")
    assert len(records) == SELECTED - 1 and {r["stage"] for r in records} == {"fetch"}
    with TcpProxy(pacs.dicom_port) as proxy:
        second = _index(_reading(_source(_via(proxy, pacs))), tmp_path / "out", tiny_model, studies_per_task=1)
        again = _series_read(proxy, series)
    assert second.errors == {} and second.series["fetched"] == SELECTED - 1, second.series
    finished = done[:1]  # the first item read; the second was cut off
    assert len(again) == SELECTED - 1 and not set(again) & set(finished)  # the finished one not fetched again
    _same_rows(_rows(tmp_path / "out"), folder_rows)


def _series_uids(rows: pa.Table) -> set[str]:
    """The Series UIDs of the items (not the reports) of `rows`."""
    kinds, keys = rows.column("kind").to_pylist(), rows.column("series_key").to_pylist()
    return {key for kind, key in zip(kinds, keys) if kind != "report" and key}


def _series_read(proxy: TcpProxy, series: set[str]) -> list[str]:
    """The series of each read-phase retrieval through `proxy`, in order."""
    return [s for c in proxy.connections if _is_read(c) for s in series if s.encode() in c.sent]


def test_a_series_that_arrives_incomplete_is_a_fetch_error_then_rerun_completes(
    pacs, archive, folder_rows, tiny_model, tmp_path
):
    """Orthanc lists the 6 instances of a series, then can send only 5 (one stored file becomes unreadable as
    the series is retrieved; no retry in this run): the series is one `fetch` record (IncompleteSeries),
    never indexed with a slice missing; once the file is back, a rerun completes."""
    import pydicom

    victim = sorted((archive / "ct2").glob("*.dcm"))[2]
    series = pydicom.dcmread(victim, stop_before_pixels=True).SeriesInstanceUID.encode()
    stored = pacs.stored_file(pacs.upload([victim])[0])
    away = stored.with_name(stored.name + ".away")

    def lose_one(conn, upstream, data):
        if upstream and not away.exists() and GET_UID in conn.sent and series in conn.sent:
            stored.rename(away)  # after the C-FIND that listed it, before the C-GET that retrieves it

    try:
        with TcpProxy(pacs.dicom_port, lose_one) as proxy:
            source = _source(_via(proxy, pacs), retry=Retry(tries=1, timeout_s=10.0))
            first = _index(source, tmp_path / "out", tiny_model)
    finally:
        if away.exists():
            away.rename(stored)
    assert first.errors == {"IncompleteSeries": 1}, first.errors
    (record,) = _records(tmp_path / "out")
    assert record["stage"] == "fetch" and "of 6 instances did not arrive" in record["message"]
    second = _index(_source(pacs.dimse_url), tmp_path / "out", tiny_model)
    assert second.errors == {} and second.series["fetched"] == 1
    _same_rows(_rows(tmp_path / "out"), folder_rows)


def test_planted_patient_data_served_over_dimse_reaches_no_output(pacs, planted, tmp_path):
    """The planted PACS study (identifiers in every header, in SeriesDescriptions, in the SRs, in --reports
    texts) retrieved over DIMSE through the real CLI: the reports get through, redacted, and no planted
    identifier is in any output byte (stdout, debug log, shards, errors, info)."""
    from radretrieve.application.info import collect_info
    from tests.test_pacs_content import SCRUBBER, _leaks

    (tmp_path / "site_rules.py").write_text(SCRUBBER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    args = ["index", pacs.dimse_url, "--out", str(out), "--json", "--workers", "2", "--move-port", str(pacs.move_port)]
    args += ["--reports", str(planted.reports_csv), "--scrubber", "site_rules:scrub"]
    proc = subprocess.run(
        [sys.executable, "-m", "radretrieve", "--verbose", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[0])
    assert summary["skipped_series"] == planted.skipped and summary["errors"] == {}
    rows = [
        r for p in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(p).drop(["embedding"]).to_pylist()
    ]
    reports = " ".join(r["text"] for r in rows if r["kind"] == "report")
    for word in ("nodule", "Impression", "enhanced sr text", "ris report A", "ris report B"):
        assert word in reports, word  # every report form of a PACS got through
    assert "[REDACTED]" in reports and "[SITE]" in reports
    binary = {".parquet", ".faiss", ".npy", ".safetensors"}
    files = [
        p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file() and p.suffix not in binary
    ]
    blob = "\n".join([proc.stdout, proc.stderr, json.dumps(collect_info(out)), *files, repr(rows)])
    assert "CT CHEST [REDACTED]" in blob  # descriptions are kept, redacted
    assert _leaks(blob) == []


def test_a_c_find_answer_taken_by_another_thread_is_a_transient_failure_not_a_shorter_listing(pacs):
    """pynetdicom's reactor thread can take a C-FIND answer off the association's message queue and drop it (a
    race of its pause flag, seen as a listing one series short). `run_find` counts the answers as they are
    decoded: a listing that lost one fails (transient: the listing tries the study again) instead of being
    shorter. Here the association's queue hands its first answer to the test instead, as the reactor would."""
    import queue

    from radretrieve.archive.dimse.association import DimseFailed, open_association
    from radretrieve.archive.dimse.listing import CONTEXTS, _dataset, run_find, value_of

    class TakesTheFirst(queue.Queue):
        taken: list = []

        def get(self, block=True, timeout=None):
            item = super().get(block, timeout)
            if block and not self.taken:
                self.taken.append(item)  # never seen by the request that waits for it
                item = super().get(block, timeout)
            return item

    source = _source(pacs.dimse_url)
    query = _dataset("STUDY", {"StudyInstanceUID": ""})
    with open_association(source, CONTEXTS) as (assoc, watch):
        full = [value_of(i, "StudyInstanceUID") for i in run_find(assoc, watch, query, 1000)]
        assoc.dimse.msg_queue = thief = TakesTheFirst()
        with pytest.raises(DimseFailed) as failed:
            list(run_find(assoc, watch, query, 1000))
    assert len(full) >= 2 and len(set(full)) == len(full) and len(thief.taken) == 1
    assert failed.value.transient and "1 C-FIND answer(s) arrived but were lost on our side" in failed.value.reason


def test_bad_source_arguments_are_one_line_errors(tmp_path):
    from radretrieve.application.indexing import DicomWebOptions, DimseOptions, IndexOptions, prepare_index
    from radretrieve.archive.dimse import parse_source
    from radretrieve.foundation.errors import RadRetrieveError

    cases = {
        "dimse://pacs.example.org:104": "expected dimse://CALLED_AET@HOST:PORT",
        "dimse://PACS@pacs.example.org": "expected dimse://CALLED_AET@HOST:PORT",
        "dimse://PACS@pacs/x:104": "expected dimse://CALLED_AET@HOST:PORT",
        "dimse://PACS@pacs:0": "a port is 1 to 65535, got 0",
        "dimse://PACS@pacs:70000": "a port is 1 to 65535, got 70000",
        "dimse://@pacs:104": "the called AE title: an AE title cannot be empty",
        "dimse://A_TITLE_OF_17_CHA@pacs:104": "an AE title has at most 16 characters, got 17",
        "dimse://PA\\CS@pacs:104": "an AE title is printable ASCII without backslash",
        "dimse://PA\x1bCS@pacs:104": "an AE title is printable ASCII without backslash",
    }
    for url, message in cases.items():
        with pytest.raises(RadRetrieveError, match=message.replace("\\", "\\\\")):
            parse_source(url)
    with pytest.raises(RadRetrieveError, match="--calling-aet: an AE title is printable ASCII"):
        parse_source("dimse://PACS@pacs:104", calling_aet="OUR\tAE")
    with pytest.raises(RadRetrieveError, match="--move-port: a port is 1 to 65535"):
        parse_source("dimse://PACS@pacs:104", move_port=0)
    with pytest.raises(RadRetrieveError, match="--since '2024-13': expected a date"):
        parse_source("dimse://PACS@pacs:104", since="2024-13")
    source = parse_source("dimse://PACS@[::1]:11112", calling_aet="  RR  ")
    assert (source.display, source.calling_aet) == ("dimse://PACS@[::1]:11112", "RR")
    (tmp_path / "arch").mkdir()
    refused = {
        str(tmp_path / "arch"): (DimseOptions(calling_aet="RR"), "--calling-aet applies to DIMSE archives"),
        "dicomweb+http://127.0.0.1:9/dicom-web": (DimseOptions(move_port=11113), "--move-port applies to DIMSE"),
    }
    for archive, (dimse, message) in refused.items():
        with pytest.raises(RadRetrieveError, match=message):
            prepare_index(archive, IndexOptions(dimse=dimse))
    with pytest.raises(RadRetrieveError, match="--auth-file applies to DICOMweb archives"):
        prepare_index("dimse://PACS@pacs:104", IndexOptions(dicomweb=DicomWebOptions(auth_file=tmp_path / "a")))
    with pytest.raises(RadRetrieveError, match="--move-port needs --engine local"):
        prepare_index("dimse://PACS@pacs:104", IndexOptions(engine="ray", dimse=DimseOptions(move_port=11113)))


def test_an_instance_too_large_and_an_association_too_slow_are_fetch_errors(pacs, archive, tiny_model, tmp_path):
    """--max-response-mb bounds each instance as it arrives (pydicom's 39 KB CT_small against 20 KB), and
    --request-deadline each answer (Orthanc's answer held back by the proxy for longer): each is one
    `fetch` record for its series, the other series are indexed."""
    import time

    import pydicom

    from radretrieve.archive.dicomweb import Limits

    large, slow = (
        pydicom.dcmread(archive / name, stop_before_pixels=True) for name in ("CT_small.dcm", "MR_small_RLE.dcm")
    )
    only = [f"StudyInstanceUID={large.StudyInstanceUID}"]  # --query: one study each run
    small = _source(pacs.dimse_url, limits=Limits(max_response_bytes=20_000), query=only)
    start = time.monotonic()
    first = _index(small, tmp_path / "small", tiny_model)
    # the abort ends the C-GET at once (not after the 10 s DIMSE timeout of a C-GET still waiting for answers)
    assert time.monotonic() - start < FAST["timeout_s"]
    assert first.errors == {"ResponseTooLarge": 1} and first.series["listed"] == 1, first.errors
    (record,) = _records(tmp_path / "small")
    assert record["stage"] == "fetch" and "--max-response-mb" in record["message"]
    slow_series = slow.SeriesInstanceUID.encode()
    held: list[int] = []

    def hold_back(conn, upstream, data):
        if not upstream and not held and _is_read(conn) and slow_series in conn.sent and conn.received > 600:
            held.append(conn.number)
            time.sleep(4.5)  # past the 3 s deadline: the association is aborted meanwhile

    with TcpProxy(pacs.dicom_port, hold_back) as proxy:
        only = [f"StudyInstanceUID={slow.StudyInstanceUID}"]
        slow_source = _reading(_source(_via(proxy, pacs), limits=Limits(deadline_s=3.0), query=only))
        second = _index(slow_source, tmp_path / "slow", tiny_model)
    assert held and second.errors == {"DeadlineExceeded": 1} and second.series["listed"] == 1, second.errors
    (record,) = _records(tmp_path / "slow")
    assert record["stage"] == "fetch" and "--request-deadline" in record["message"]
    # the deadline bounds one answer, not a whole association: a steady node slower than it over a whole series
    # (6 instances, each a little late) is read in full
    steady = pydicom.dcmread(next((archive / "ct2").iterdir()), stop_before_pixels=True)
    pauses: list[int] = []

    def trickle(conn, upstream, data):
        if not upstream and GET_UID in conn.sent:  # every C-GET: the series' scan and the item's read
            pauses.append(conn.number)
            time.sleep(0.3)

    with TcpProxy(pacs.dicom_port, trickle) as proxy:
        only = [f"StudyInstanceUID={steady.StudyInstanceUID}"]
        third = _index(
            _source(_via(proxy, pacs), limits=Limits(deadline_s=1.0), query=only), tmp_path / "steady", tiny_model
        )
    assert len(pauses) * 0.3 > 2 * 1.0 and third.errors == {} and third.series["fetched"] == 1, third.errors
