"""A broken or hostile DICOMweb server (issue 20): crafted UIDs never become paths or URLs, and every answer is
bounded (size, entries per query, a deadline per request, no redirect elsewhere). Each violation costs one
`fetch` line in errors/ for its study or series and the job goes on; in the study listing itself, one line
and exit 1. The servers are real (`radretrieve.testing.dicomweb_server`, threads on 127.0.0.1), the job the
real `index` (the application function, or the CLI in a subprocess for the exit code).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from radretrieve.testing.dicomweb_server import DicomWebServer, Reply, json_reply, redirect, uid_entry

STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"
FAST = {"tries": 3, "backoff_s": 0.01, "timeout_s": 10.0}
MiB = 1 << 20


def _series(root: Path, name: str, n: int = 3) -> tuple[str, str, list[Path]]:
    from radretrieve.testing.dicom import write_ct_series

    study, series = write_ct_series(root / name, n, seed=len(name), attrs={"SeriesDescription": f"CT {name}"})
    return study, series, sorted((root / name).glob("*.dcm"))


@pytest.fixture(scope="module")
def pacs_files(tmp_path_factory) -> dict[str, tuple[str, str, list[Path]]]:
    """Small CT series, each in its own study: one honest, the others served with one attack each."""
    root = tmp_path_factory.mktemp("pacs-files")
    names = ("honest", "sop", "big", "stream", "slow", "moved", "endless", "swapped")
    return {name: _series(root, name) for name in names}


def _source(url: str, **limits):
    from radretrieve.archive.dicomweb import Limits, Retry, parse_source

    return parse_source(url, retry=Retry(**FAST), limits=Limits(**limits))


def _index(source, out: Path, model, workers: int = 0):
    from pipelines.job import IndexOptions, index_archive

    return index_archive(source, out, model, IndexOptions(workers=workers, progress=False))


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((out / "errors").glob("*.jsonl")) for line in p.read_text().splitlines()]


def _rows(out: Path) -> list[dict]:
    tables = [pq.read_table(p, columns=["source"]) for p in sorted((out / "shards").glob("*.parquet"))]
    return [row for table in tables for row in table.to_pylist()]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture()
def scratch(tmp_path, monkeypatch) -> Path:
    """The temporary folder of the job (TMPDIR), inside the test's own folder."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return folder


CRAFTED = [
    "../../../../escaped",  # traversal
    "/etc/escaped",  # an absolute path
    "1.2.3/../../escaped",  # digits, then traversal
    "1.2.3?limit=1",  # a query string in a URL
    "1.2.\u0663",  # a non-ASCII digit (ARABIC-INDIC THREE)
    "1." + "2" * 64,  # too long
    "1.02.3",  # a leading zero
    "",  # empty
    12345,  # not a string
]


def test_crafted_uids_in_listings_are_one_error_line_each_and_reach_no_request(pacs_files, tiny_model, tmp_path):
    """Crafted Study UIDs in the study listing and a crafted Series UID in a series listing: each is one
    `fetch` line in errors/ (without the value itself), no request carries it, and the honest study is
    indexed."""
    study, series, files = pacs_files["honest"]

    def override(path: str, query: dict[str, str]) -> Reply | None:
        if path == "/dicom-web/studies":
            first_page = int(query.get("offset", 0)) == 0
            return json_reply([uid_entry(STUDY, uid) for uid in [study, *CRAFTED]] if first_page else [])
        if path == f"/dicom-web/studies/{study}/series":
            return json_reply([uid_entry(SERIES, series, "CT"), uid_entry(SERIES, "../../escaped", "CT")])
        return None

    with DicomWebServer(files, override) as server:
        summary = _index(_source(server.dicomweb_url), tmp_path / "out", tiny_model)
        sent = server.paths()
    assert summary.series["fetched"] == 1 and summary.series["failed"] == 0
    assert [r["source"] for r in _rows(tmp_path / "out")] == [f"{study}/{series}"]
    records = _records(tmp_path / "out")
    listing = [r for r in records if r["source"] == "(study listing)"]
    assert len(listing) == len(CRAFTED) and {r["error_type"] for r in listing} == {"InvalidUID"}
    in_study = [r for r in records if r["source"] == study]
    assert len(in_study) == 1 and "Series Instance UID that is not a DICOM UID" in in_study[0]["message"]
    assert len(records) == len(CRAFTED) + 1 and {r["stage"] for r in records} == {"fetch"}
    assert "escaped" not in json.dumps(records) and "escaped" not in " ".join(summary.lines())
    assert not [p for p in sent if "escaped" in p or "%" in p or "/../" in p or "//" in p]


def test_a_crafted_sop_uid_in_metadata_neither_writes_nor_deletes_outside_the_temp_folder(
    pacs_files, tiny_model, tmp_path, scratch
):
    """Series metadata whose SOP Instance UID climbs out of the temporary folder onto an existing file:
    the file is neither overwritten nor deleted, nothing appears outside OUT and the (empty) temp folder,
    and the series is one `fetch` line; the other series is indexed."""
    honest, bait = pacs_files["honest"], pacs_files["sop"]
    victim = tmp_path / "victim.dcm"  # where SOP "../../../../victim" would land from TMPDIR/radretrieve-*/S/R/
    victim.write_bytes(b"not yours")
    before = _tree(tmp_path)

    def override(path: str, query: dict[str, str]) -> Reply | None:
        if path == f"/dicom-web/studies/{bait[0]}/series/{bait[1]}/metadata":
            meta = server.metadata(bait[0], bait[1])
            meta[0][SOP] = {"vr": "UI", "Value": ["../../../../victim"]}
            return json_reply(meta)
        return None

    with DicomWebServer(honest[2] + bait[2], override) as server:
        summary = _index(_source(server.dicomweb_url), tmp_path / "out", tiny_model)
    assert victim.read_bytes() == b"not yours"
    new = {p for p in _tree(tmp_path) - before if not p.startswith("out")}
    assert new == set() and list(scratch.iterdir()) == []
    records = _records(tmp_path / "out")
    assert [(r["source"], r["stage"], r["error_type"]) for r in records] == [
        (f"{bait[0]}/{bait[1]}", "fetch", "InvalidUID")
    ]
    assert summary.series["fetched"] == 1 and summary.series["failed"] == 1


def test_each_unbounded_answer_is_one_error_line_and_the_job_goes_on(pacs_files, tiny_model, tmp_path, scratch):
    """One study each: metadata declaring 50 GiB, an instance streaming 64 MiB, metadata trickled a byte at
    a time, an instance redirected to another port, a series listing whose pages never end, instances
    swapped for another series'. With low bounds (1 MiB, 2 s, 2,000 entries) each is one `fetch` line naming
    its problem, the honest study is indexed, no bytes past the bounds were taken, the redirect target was
    never asked, and the job ends in bounded time."""
    files = [f for _, _, fs in pacs_files.values() if fs is not pacs_files["sop"][2] for f in fs]
    big, stream, slow, moved, endless = (pacs_files[k] for k in ("big", "stream", "slow", "moved", "endless"))
    swapped, honest = pacs_files["swapped"], pacs_files["honest"]
    elsewhere = DicomWebServer(files)  # an honest server on another port: the redirect's target

    def override(path: str, query: dict[str, str]) -> Reply | None:
        if path == f"/dicom-web/studies/{big[0]}/series/{big[1]}/metadata":
            return Reply(body=b"[", declared_length=50 << 30, stream_bytes=8 * MiB)
        if path.startswith(f"/dicom-web/studies/{stream[0]}/series/{stream[1]}/instances/"):
            return Reply(content_type="multipart/related; boundary=x", stream_bytes=64 * MiB)
        if path == f"/dicom-web/studies/{slow[0]}/series/{slow[1]}/metadata":
            return Reply(body=json.dumps(server.metadata(slow[0], slow[1])).encode(), trickle_s=0.1)
        if path.startswith(f"/dicom-web/studies/{moved[0]}/series/{moved[1]}/instances/"):
            return redirect(elsewhere.url + path)
        if path == f"/dicom-web/studies/{endless[0]}/series":
            offset = int(query.get("offset", 0))
            page = [uid_entry(SERIES, f"1.2.826.0.9.{offset + k + 1}", "CT") for k in range(int(query["limit"]))]
            return json_reply(page if offset < 20_000 else [])  # ends, so that a client without bounds fails
        if path.startswith(f"/dicom-web/studies/{swapped[0]}/series/{swapped[1]}/instances/"):
            n = int(path.rsplit(".", 1)[1]) % len(honest[2])  # some instance of the honest series instead
            sop = sorted(k[2] for k in server.instances if k[1] == honest[1])[n]
            return server.instance(honest[0], honest[1], sop)
        return None

    start = time.monotonic()
    with elsewhere, DicomWebServer(files, override) as server:
        source = _source(server.dicomweb_url, max_response_bytes=MiB, deadline_s=2.0, max_listed=2_000)
        summary = _index(source, tmp_path / "out", tiny_model, workers=2)  # in reader processes, as by default
        took, asked_elsewhere = time.monotonic() - start, list(elsewhere.seen)
        endless_pages, streamed = server.paths(f"/studies/{endless[0]}/series"), max(server.sent.values())
    found = {r["source"]: (r["stage"], r["error_type"]) for r in _records(tmp_path / "out")}
    assert found == {
        f"{big[0]}/{big[1]}": ("fetch", "ResponseTooLarge"),
        f"{stream[0]}/{stream[1]}": ("fetch", "ResponseTooLarge"),
        f"{slow[0]}/{slow[1]}": ("fetch", "DeadlineExceeded"),
        f"{moved[0]}/{moved[1]}": ("fetch", "RedirectRefused"),
        endless[0]: ("fetch", "ListingTooLong"),
        f"{swapped[0]}/{swapped[1]}": ("fetch", "WrongInstance"),
    }
    assert [r["source"] for r in _rows(tmp_path / "out")] == [f"{honest[0]}/{honest[1]}"]
    assert summary.series == {"listed": 6, "skipped": 0, "fetched": 1, "failed": 5, "not_selected": 0}
    assert asked_elsewhere == []  # the redirect was not followed
    assert len(endless_pages) <= 2_000 // 500 + 1
    assert streamed < 32 * MiB  # the 64 MiB body was cut off near 1 MiB (plus socket buffers)
    assert took < 45  # each slow request ends at its 2 s deadline; the trickle alone lasts 60 s per try
    assert list(scratch.iterdir()) == []


def _cli(url: str, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "radretrieve", "index", url, "--out", str(out), "-q", "--no-index"]
    bounds = ["--retries", "0", "--request-deadline", "2", "--max-response-mb", "1", "--max-listed", "1000"]
    start = time.monotonic()
    proc = subprocess.run([*cmd, *bounds, *extra], capture_output=True, text=True, timeout=240)
    return proc, time.monotonic() - start


LISTING_ATTACKS = {
    "endless": "the study listing has more than 1000 entries (--max-listed): narrow it",
    "trickle": "listing the study listing failed (no complete answer within 2 s (--request-deadline))",
    "huge": "listing the study listing failed (answer larger than 1 MiB (declared; --max-response-mb))",
    "redirect": "listing the study listing failed (redirected to http://127.0.0.1:",
}


@pytest.mark.parametrize("attack", sorted(LISTING_ATTACKS))
def test_an_unbounded_study_listing_stops_with_one_line_and_exit_1(attack, tmp_path):
    """The study listing is the job: pages that never end, headers trickled a byte at a time, a 50 GiB
    answer, a redirect to another port: `radretrieve index` ends with one line and exit 1, in bounded time."""
    elsewhere = DicomWebServer()

    def override(path: str, query: dict[str, str]) -> Reply | None:
        if path != "/dicom-web/studies":
            return None
        if attack == "endless":
            offset = int(query.get("offset", 0))
            page = [uid_entry(STUDY, f"1.2.826.0.8.{offset + k + 1}") for k in range(int(query["limit"]))]
            return json_reply(page if offset < 20_000 else [])
        if attack == "trickle":
            return Reply(trickle_headers=True, trickle_s=0.1)
        if attack == "huge":
            return Reply(body=b"[", declared_length=50 << 30, stream_bytes=8 * MiB)
        return redirect(elsewhere.url + path)

    with elsewhere, DicomWebServer((), override) as server:
        proc, took = _cli(server.dicomweb_url, tmp_path / "out")
        pages = server.paths("/studies")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"error: {server.dicomweb_url}: ") and LISTING_ATTACKS[attack] in lines[0], lines
    assert took < 120, took  # CLI start-up on a loaded machine, plus one 2 s deadline; unbounded: 60 s a try
    assert elsewhere.seen == []
    assert len(pages) <= 1000 // 500 + 2  # the probe, then the pages up to the bound
    assert not (tmp_path / "out" / "shards").exists() or not list((tmp_path / "out" / "shards").iterdir())


def test_a_redirect_on_the_same_server_is_still_followed(pacs_files):
    """The bounds refuse only redirects elsewhere: a PACS that moves its QIDO-RS root on the same host and port
    is followed (each hop checked), and a redirect loop ends after 5 hops with one line."""
    from radretrieve.archive.dicomweb.listing import list_series
    from radretrieve.foundation.errors import RadRetrieveError

    study, series, files = pacs_files["honest"]

    def override(path: str, query: dict[str, str]) -> Reply | None:
        if path == "/dicom-web/studies":
            return redirect(f"{server.url}/moved/studies?{urllib.parse.urlencode(query)}")
        if path == "/moved/studies":
            return server.honest("/dicom-web/studies", query)
        if path == "/dicom-web/loop/studies":
            return redirect(f"{server.url}/dicom-web/loop/studies")
        return None

    with DicomWebServer(files, override) as server:
        listed = list_series(_source(server.dicomweb_url))
        with pytest.raises(RadRetrieveError, match="listing the study listing failed \\(too many redirects\\)$"):
            list_series(_source(server.dicomweb_url + "/loop"))
    assert [(r.study_uid, r.series_uid) for r in listed.refs] == [(study, series)] and listed.errors == ()


def test_bounds_must_be_positive():
    from radretrieve.archive.dicomweb import Limits
    from radretrieve.foundation.errors import RadRetrieveError

    for kwargs, flag in (
        ({"max_response_bytes": 0}, "--max-response-mb"),
        ({"max_listed": 0}, "--max-listed"),
        ({"deadline_s": 0.0}, "--request-deadline"),
    ):
        with pytest.raises(RadRetrieveError, match=flag):
            Limits(**kwargs)


def test_uid_rules():
    from radretrieve.archive.dicomweb.uids import is_uid

    good = ["1.2.840.10008.1.2.1", "0", "1.0.3", "2.25." + "1" * 59]
    assert [u for u in good if not is_uid(u)] == []
    assert [u for u in CRAFTED if is_uid(u)] == []
    assert [u for u in ("1..2", ".1", "1.", "1.2 ", " 1", "1.2\n", None, ["1.2"]) if is_uid(u)] == []


def test_scratch_files_stay_directly_in_their_private_folder(tmp_path):
    """The last guard under the UID checks: a temporary name that is not a plain name in the folder is refused,
    and a file is never written over an existing file or through a planted link."""
    from radretrieve.archive.dicomweb.scratch import NotConfined, confined, private_folder, write_new

    with private_folder() as folder:
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        for name in ("../escaped", "/etc/escaped", "a/b.dcm", "..", ""):
            with pytest.raises(NotConfined):
                confined(folder, name)
        (folder / "000001.dcm").symlink_to(tmp_path / "target")
        with pytest.raises(FileExistsError):
            write_new(folder, "000001.dcm", b"x")
        assert write_new(folder, "000002.dcm", b"x").read_bytes() == b"x"
    assert not folder.exists() and not (tmp_path / "target").exists()


def test_instances_are_asked_for_uncompressed_and_one_thread_keeps_every_deadline(tmp_path):
    """Instance requests say `Accept-Encoding: identity` (gzip of pixel data cost the server and the reader
    more CPU than the rest of the request); the deadlines of the fetch threads' requests are kept by one
    watchdog thread of the process (not a thread started per request), which still cuts an answer that
    trickles past its deadline while the others are answered."""
    from radretrieve.archive.dicomweb import Limits, Retry, fetch, parse_source
    from radretrieve.archive.dicomweb.scratch import private_folder
    from radretrieve.archive.records import ArchiveError, Item
    from radretrieve.testing.dicom import write_ct_series

    study, series = write_ct_series(tmp_path / "pacs", 6)
    with DicomWebServer(sorted((tmp_path / "pacs").glob("*.dcm"))) as server:
        sops = sorted(k[2] for k in server.instances)
        slow = server.instance(study, series, sops[-1])
        server.override = lambda path, query: (
            Reply(body=slow.body, content_type=slow.content_type, trickle_s=0.2, max_s=30)
            if path.endswith(f"/instances/{sops[-1]}")
            else None
        )
        rels = [f"{study}/{series}/{sop}.dcm" for sop in sops]
        item = Item(1, "k", "volume", study, series, f"{study}/{series}", tuple(rels), "dicom")
        names = {f"{k:06d}.dcm": rel for k, rel in enumerate(rels)}
        source = parse_source(server.dicomweb_url, retry=Retry(tries=1), limits=Limits(deadline_s=2))
        start = time.monotonic()
        with private_folder() as root, pytest.raises(ArchiveError) as caught:
            fetch._fetch(source, item, names, list(names), root)
        took = time.monotonic() - start
        encodings = [e for p, e in server.encodings.items() if "/instances/" in p]
    assert caught.value.error_type == "DeadlineExceeded" and took < 15, (caught.value, took)
    assert encodings == ["identity"] * 6
    assert [t.name for t in threading.enumerate()].count("dicomweb-deadlines") == 1
