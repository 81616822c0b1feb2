"""A hostile DICOMweb server against the reader's memory and disk (issue 20): large answers cost the reader
a bounded amount of memory whatever their number, a reader killed mid-fetch leaves no patient data behind
the next run's start, and a malformed Content-Length is refused with its connection closed.

The servers are real (threads on 127.0.0.1, or a raw socket); the reader is a real subprocess running the
reader's fetch (`radretrieve.archive.dicomweb.fetch`), with TMPDIR set to the test's folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from radretrieve.testing.dicomweb_server import BOUNDARY, DicomWebServer, Reply

MiB = 1 << 20
ANSWER = 8 * MiB  # each answer of the memory test
LIMIT = 64 * MiB  # its --max-response-mb: the item's 16 answers fit its disk budget (2 x 64 MiB)
STUDY, SERIES = "1.2.826.0.7.1", "1.2.826.0.7.2"

# The reader: fetches the instances of one series (each answer up to LIMIT) as `read_remote_item` does, and
# prints how much its peak resident memory (VmHWM) grew during the fetch, in bytes.
READER = """
import sys
from radretrieve.archive.dicomweb import Limits, Retry, parse_source
from radretrieve.archive.dicomweb import fetch
from radretrieve.archive.dicomweb.scratch import private_folder
from radretrieve.archive.records import Item

url, limit, rels = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
source = parse_source(url, retry=Retry(tries=1), limits=Limits(max_response_bytes=limit, deadline_s=60))
item = Item(1, "k", "volume", "study", "series", "study/series", tuple(rels), "dicom")

def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024

def run(names):
    with private_folder() as root:
        try:
            fetch._fetch(source, item, {name: rels[int(name[:6])] for name in names}, names, root)
        except Exception as exc:
            print(type(exc).__name__, getattr(exc, "reason", ""), file=sys.stderr, flush=True)

names = [f"{k:06d}.dcm" for k in range(len(rels))]
run(names[:1])  # warm up: imports, the connection pool, a thread pool
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from the current RSS
before = status("VmHWM")
run(names)
print(status("VmHWM") - before, flush=True)
"""


def _reader(url: str, rels: list[str], env: dict[str, str], limit: int = LIMIT) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", READER, url, str(limit), *rels],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    """The reader's output once it has ended; killed if it runs past two minutes (never left running)."""
    try:
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _env(tmpdir: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmpdir)}


def _multipart(size: int) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head + b"\0" * (size - len(head) - len(tail)) + tail


MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_large_answers_cost_the_reader_a_bounded_amount_of_memory(tmp_path):
    """16 instances of 8 MiB each, fetched 4 at a time: the reader's peak memory grows by less than one answer
    (each is written to disk as it arrives, never held whole, copied or parsed in memory). Holding 4 answers
    with their copies would take 4 x 8 MiB x 2 or more."""
    body = _multipart(ANSWER - 1024)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with DicomWebServer((), lambda path, query: Reply(body=body, content_type=MULTIPART)) as server:
        rels = [f"{STUDY}/{SERIES}/{STUDY}.{k + 1}.dcm" for k in range(16)]
        proc = _reader(server.dicomweb_url, rels, _env(scratch))
        out, err = _finish(proc)
        fetched = len(server.paths("/instances/"))
    assert proc.returncode == 0, err[-2000:]
    growth = int(out.split()[-1])
    assert fetched == 17  # the warm-up and 16 answers: all of them were read
    print(f"peak RSS growth fetching 16 answers of 8 MiB, 4 at a time: {growth / MiB:.1f} MiB")
    assert growth < ANSWER, f"peak RSS grew by {growth / MiB:.1f} MiB fetching 16 answers of 8 MiB"
    assert list(scratch.iterdir()) == []


def test_a_reader_killed_mid_fetch_leaves_no_scratch_after_the_next_start(tmp_path):
    """A reader SIGKILLed while an instance trickles in (three others, whole DICOM files with patient headers,
    are on disk): its private folder is left, and the next DICOMweb job removes it at its start; the folder of
    a live process is kept."""
    from pipelines.scan import scan_remote
    from radretrieve.archive.dicomweb import Retry, parse_source
    from radretrieve.archive.dicomweb.scratch import PREFIX
    from radretrieve.testing.dicom import write_ct_series

    study, series = write_ct_series(tmp_path / "pacs", 4, attrs={"PatientName": "Doe^Jane"})
    files = sorted((tmp_path / "pacs").glob("*.dcm"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()

    with DicomWebServer(files) as server:
        sops = sorted(k[2] for k in server.instances)
        slow = server.instance(study, series, sops[2])
        server.override = lambda path, query: (
            Reply(body=slow.body, content_type=slow.content_type, trickle_s=0.5, max_s=30)
            if path.endswith(f"/instances/{sops[2]}")
            else None
        )
        rels = [f"{study}/{series}/{sop}.dcm" for sop in sops]
        proc = _reader(server.dicomweb_url, rels, _env(scratch))
        try:
            left = _wait_for_files(scratch, proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert left, "the reader never wrote its scratch files"
        live = scratch / f"{PREFIX}{os.getpid()}-live"  # a folder of a process still running: not stale
        live.mkdir()
        source = parse_source(server.dicomweb_url, retry=Retry(tries=1))
        _with_tmpdir(scratch, lambda: scan_remote(source, None, set()))
    assert [p.name for p in scratch.iterdir()] == [live.name]


def _wait_for_files(scratch: Path, proc: subprocess.Popen, timeout: float = 60.0) -> list[Path]:
    """The scratch files of the reader once the three instances sent at once are on disk."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        files = [f for f in scratch.glob("*/*") if f.stat().st_size >= 512]
        if len(files) >= 3:
            return files
        time.sleep(0.1)
    return []


def _with_tmpdir(folder: Path, fn):
    import tempfile

    saved_env, saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), None
    try:
        return fn()
    finally:
        tempfile.tempdir = saved
        if saved_env is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved_env


def test_a_malformed_content_length_is_refused_and_its_connection_closed():
    """`Content-Length: 1²` (0xB2, a digit to `str.isdigit`, not to `int`): the answer is refused as one
    `Refused` line, not a ValueError, and the connection is closed at once (the server sees it end)."""
    from radretrieve.archive.dicomweb import Limits, Retry, parse_source
    from radretrieve.archive.dicomweb.client import FetchFailed, client_for, with_retries

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ended: list[float] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 1\xb2\r\n\r\n[]")
            conn.settimeout(10)
            start = time.monotonic()
            try:
                conn.recv(1)  # b"": the client closed the connection
            except OSError:
                pass
            ended.append(time.monotonic() - start)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    source = parse_source(f"dicomweb+http://127.0.0.1:{port}/dw", retry=Retry(tries=1), limits=Limits(deadline_s=20))
    try:
        with pytest.raises(FetchFailed) as caught:
            with_retries(lambda: client_for(source).search_for_studies(), source.retry)
        thread.join(15)
    finally:
        listener.close()
    assert caught.value.reason == "malformed Content-Length header" and caught.value.error_type == "FetchRefused"
    assert ended and ended[0] < 5, ended


def test_the_part_is_taken_out_of_its_multipart_body_whatever_the_chunks():
    """The instance's bytes, exactly, however the body is cut into chunks (a boundary split across two); an
    answer with two parts, none, or cut before its closing boundary is refused."""
    import io

    from radretrieve.archive.dicomweb.multipart import MalformedMultipart, PartWriter

    part = b"DICM\r\n--not-the-boundary\r\n" + bytes(range(256)) * 4
    body = b"preamble\r\n" + f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    body += part + f"\r\n--{BOUNDARY}--\r\nepilogue".encode()

    def split(data: bytes, step: int) -> bytes:
        out = io.BytesIO()
        writer = PartWriter(out)
        writer.begin({"content-type": MULTIPART})
        for i in range(0, len(data), step):
            writer.write(data[i : i + step])
        writer.finish()
        return out.getvalue()

    assert {step: split(body, step) == part for step in (1, 2, 3, 5, 17, 64, 4096)} == dict.fromkeys(
        (1, 2, 3, 5, 17, 64, 4096), True
    )
    two = f"--{BOUNDARY}\r\n\r\nA\r\n--{BOUNDARY}\r\n\r\nB\r\n--{BOUNDARY}--".encode()
    for bad in (two, f"--{BOUNDARY}--\r\n".encode(), body[: len(body) // 2]):
        with pytest.raises(MalformedMultipart):
            split(bad, 7)


def test_answers_held_in_memory_have_their_own_bound_and_error_answers_of_instances_are_not_read(tmp_path):
    """Series metadata (parsed in memory) over `max_held_bytes` is refused although --max-response-mb allows
    it; an instance request answered 500 with a 64 MiB body costs its status only (the body is not read)."""
    from radretrieve.archive.dicomweb import Limits, Retry, parse_source
    from radretrieve.archive.dicomweb.listing import SeriesRef
    from radretrieve.archive.dicomweb.scan import scan_series

    def override(path: str, query: dict[str, str]) -> Reply | None:
        if path.endswith("/metadata"):
            return Reply(body=b"[" + b" " * (3 * MiB) + b"]")
        if "/instances/" in path:
            return Reply(status=500, content_type="text/plain", stream_bytes=64 * MiB)
        return None

    limits = Limits(max_response_bytes=ANSWER, max_held_bytes=MiB)
    with DicomWebServer((), override) as server:
        source = parse_source(server.dicomweb_url, retry=Retry(tries=1), limits=limits)
        scanned = scan_series(source, SeriesRef(STUDY, SERIES, "CT"))
        proc = _reader(server.dicomweb_url, [f"{STUDY}/{SERIES}/{STUDY}.1.dcm"], _env(tmp_path))
        _, err = _finish(proc)
        time.sleep(0.5)  # the server's writes end once the client has closed the connection
        sent = max(v for k, v in server.sent.items() if "/instances/" in k)
    assert scanned.error is not None and scanned.error.error_type == "ResponseTooLarge"
    assert "answer larger than 1 MiB (declared; the most an answer held in memory may take)" in scanned.error.message
    assert "HTTP 500" in err, err[-2000:]
    assert sent < 16 * MiB, sent  # socket buffers, not the 64 MiB


def test_bounds_from_the_index_options_are_checked_in_one_place():
    from radretrieve.archive.dicomweb import Limits
    from radretrieve.foundation.errors import RadRetrieveError

    assert Limits.from_options(8, 10, 2.5) == Limits(8 * MiB, 10, 2.5)
    for mb in (0.0, -1.0, float("nan")):
        with pytest.raises(RadRetrieveError, match="--max-response-mb must be > 0"):
            Limits.from_options(mb, 10, 2.5)


def test_an_instance_file_is_never_opened_through_a_planted_link(tmp_path):
    """Instance files are opened to be rewritten on a retry (not `O_EXCL`), yet never through a link."""
    from radretrieve.archive.dicomweb.scratch import open_new, private_folder

    with private_folder() as folder:
        (folder / "000001.dcm").symlink_to(tmp_path / "target")
        with pytest.raises(OSError):
            open_new(folder, "000001.dcm")
        with open_new(folder, "000002.dcm") as fh:
            fh.write(b"first try, longer")
        with open_new(folder, "000002.dcm") as fh:
            fh.write(b"retry")
        assert (folder / "000002.dcm").read_bytes() == b"retry"
    assert not (tmp_path / "target").exists()


def test_the_instances_of_one_item_share_a_disk_budget(tmp_path):
    """Six slices of 2 MiB under --max-response-mb 3: each answer is within the bound, but the item's
    instances stop at 2 x 3 MiB on disk, with one `ResponseTooLarge` line."""
    from radretrieve.archive.dicomweb import Limits, Retry, fetch, parse_source
    from radretrieve.archive.dicomweb.scratch import private_folder
    from radretrieve.archive.records import ArchiveError, Item
    from radretrieve.testing.dicom import write_ct_series

    study, series = write_ct_series(tmp_path / "pacs", 6, size=1024)
    with DicomWebServer(sorted((tmp_path / "pacs").glob("*.dcm"))) as server:
        rels = [f"{study}/{series}/{key[2]}.dcm" for key in sorted(server.instances)]
        item = Item(1, "k", "volume", study, series, f"{study}/{series}", tuple(rels), "dicom")
        names = {f"{k:06d}.dcm": rel for k, rel in enumerate(rels)}
        source = parse_source(server.dicomweb_url, retry=Retry(tries=1), limits=Limits(max_response_bytes=3 * MiB))
        with private_folder() as root, pytest.raises(ArchiveError) as caught:
            fetch._fetch(source, item, names, list(names), root)
    assert caught.value.error_type == "ResponseTooLarge" and caught.value.stage == "fetch"
    assert "the item's instances are larger than 6 MiB (2 x --max-response-mb)" in caught.value.reason
