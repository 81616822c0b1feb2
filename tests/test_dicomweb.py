"""DICOMweb archives against a real Orthanc (QIDO-RS, WADO-RS): same items and embeddings as the same files in a
folder, incremental sync, retries, a server that stops, authentication.

Orthanc (Debian packages orthanc, orthanc-dicomweb) is started by the tests on a free 127.0.0.1 port with a
temporary storage folder; without it the tests skip with one line (they fail under RADRETRIEVE_REQUIRE_ORTHANC=1,
as in CI, where .ci/run installs it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from radretrieve.testing.orthanc import Orthanc
from tests.pacs_files import needs_orthanc
from tests.pacs_files import rows as _rows
from tests.pacs_files import same_rows as _same_rows

FAST = {"tries": 3, "backoff_s": 0.01, "timeout_s": 10.0}  # retries without long waits


@pytest.fixture(scope="module", autouse=True)
def _needs_orthanc():
    needs_orthanc()


@pytest.fixture(scope="module")
def archive(ct_archive) -> Path:
    """The files served by the PACS of these tests, as a folder: two CT series (40 slices, 6), pydicom's CT and
    RLE MR (fetched as stored, not transcoded); shared with tests/test_listen.py (tests/pacs_files.py)."""
    return ct_archive


@pytest.fixture(scope="module")
def pacs(archive, tmp_path_factory):
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        server.upload_folder(archive)
        yield server


@pytest.fixture(scope="module")
def folder_rows(ct_folder_rows) -> pa.Table:
    return ct_folder_rows


def _source(url: str, **kwargs):
    from radretrieve.archive.dicomweb import Retry, parse_source

    return parse_source(url, retry=Retry(**FAST), **kwargs)


def _index(source, out: Path, model, workers: int = 0, **options):
    from pipelines.job import IndexOptions, index_archive

    return index_archive(source, out, model, IndexOptions(workers=workers, progress=False, **options))


def test_orthanc_index_equals_folder_index_with_retries(pacs, folder_rows, tiny_model, tmp_path, monkeypatch):
    """Through a proxy that answers 503 to the first request of every instance and drops the first metadata
    request of every series: the same item ids, rows and embeddings as the folder, and no file left behind."""
    from radretrieve.testing.http_proxy import FaultProxy

    def fault(path: str, n: int):
        if n == 0 and "/instances/" in path:
            return "503"
        if n == 0 and path.endswith("/metadata"):
            return "drop"
        return None

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the reader processes' temporary files go here
    monkeypatch.setattr(tempfile, "tempdir", None)
    with FaultProxy(pacs.url, fault) as proxy:
        summary = _index(_source(f"dicomweb+{proxy.url}/dicom-web"), tmp_path / "out", tiny_model, workers=2)
        retried = [p for p in proxy.paths() if proxy.paths().count(p) > 1]
    _same_rows(_rows(tmp_path / "out"), folder_rows)
    assert summary.series == {"listed": 4, "skipped": 0, "fetched": 4, "failed": 0, "not_selected": 0}
    assert summary.errors == {}
    assert len([p for p in retried if "/instances/" in p]) >= 32 + 6 + 2  # every fetched instance was retried
    assert list(scratch.iterdir()) == []  # no copy of the archive left on disk
    sampled = set(proxy.paths("/instances/"))
    assert len(sampled) == 32 + 6 + 1 + 1  # 32 of the 40 slices: only what is decoded is fetched


def test_second_run_fetches_nothing_and_a_new_study_only_itself(archive, tiny_model, tmp_path):
    from radretrieve.testing.http_proxy import FaultProxy

    with Orthanc(tmp_path / "orthanc") as server, FaultProxy(server.url) as proxy:
        server.upload_folder(archive / "ct2")
        server.upload([archive / "CT_small.dcm"])
        source = _source(f"dicomweb+{proxy.url}/dicom-web")
        first = _index(source, tmp_path / "out", tiny_model)
        assert first.series["fetched"] == 2
        before = len(proxy.seen)
        second = _index(source, tmp_path / "out", tiny_model)
        assert second.series == {"listed": 2, "skipped": 2, "fetched": 0, "failed": 0, "not_selected": 0}
        fetched = [p for p in proxy.paths()[before:] if "/metadata" in p or "/instances/" in p]
        assert fetched == []  # listing only: no metadata, no instance
        assert "series: listed 2; skipped as already indexed 2; fetched 0; failed 0" in second.lines()
        from typer.testing import CliRunner

        from radretrieve.cli.app import app

        info = CliRunner().invoke(app, ["info", str(tmp_path / "out")])  # from OUT/job.json
        assert "PACS series: listed 2, skipped as already indexed 2, fetched 0, failed 0" in info.output
        server.upload([archive / "MR_small_RLE.dcm"])
        before = len(proxy.seen)
        third = _index(source, tmp_path / "out", tiny_model)
        assert third.series == {"listed": 3, "skipped": 2, "fetched": 1, "failed": 0, "not_selected": 0}
        new = {p.split("/series/")[1].split("/")[0] for p in proxy.paths()[before:] if "/series/" in p}
        import pydicom

        assert new == {pydicom.dcmread(archive / "MR_small_RLE.dcm").SeriesInstanceUID}
    assert _rows(tmp_path / "out").num_rows == 3  # a CT volume and two images, each once


def test_a_stopped_server_gives_one_clear_line_and_exit_1(tmp_path):
    from radretrieve.testing.orthanc import free_port

    url = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    cmd = [sys.executable, "-m", "radretrieve", "index", url, "--out", str(tmp_path / "out"), "-q"]
    proc = subprocess.run([*cmd, "--retries", "1", "--retry-backoff", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {url}: cannot reach the DICOMweb server (connection refused after 2 tries)"]


def test_server_stopped_mid_job_then_rerun_resumes_to_the_same_rows(archive, folder_rows, tiny_model, tmp_path):
    """Orthanc is stopped while the job fetches its second study: that study and the rest are recorded as
    failed (Series UIDs only) and the job ends; once it is back, the rerun fetches only those series."""
    from radretrieve.testing.http_proxy import FaultProxy

    with Orthanc(tmp_path / "orthanc") as server:
        server.upload_folder(archive)
        instances = []

        def stop_on_second_series(path: str, n: int):
            if "/instances/" in path:
                instances.append(path.split("/series/")[1].split("/")[0])
                if len(set(instances)) == 2:
                    server.stop()
            return None

        with FaultProxy(server.url, stop_on_second_series) as proxy:
            source = _source(f"dicomweb+{proxy.url}/dicom-web")
            first = _index(source, tmp_path / "out", tiny_model, studies_per_task=1)
            assert first.series["fetched"] == 1 and first.series["failed"] == 3, first.series
            assert first.errors == {"FetchFailed": 3}
            records = [
                line for p in (tmp_path / "out" / "errors").glob("*.jsonl") for line in p.read_text().splitlines()
            ]
            assert len(records) == 3 and all('"stage": "fetch"' in r for r in records)
            done = set(instances[:1])
            server.start()
            before = len(proxy.seen)
            second = _index(source, tmp_path / "out", tiny_model, studies_per_task=1)
            fetched = [p for p in proxy.paths()[before:] if "/instances/" in p or p.endswith("/metadata")]
            again = {p.split("/series/")[1].split("/")[0] for p in fetched}
    assert second.series == {"listed": 4, "skipped": 1, "fetched": 3, "failed": 0, "not_selected": 0}
    assert not again & done  # the finished study was not fetched again
    _same_rows(_rows(tmp_path / "out"), folder_rows)
    assert second.errors == {}


def test_planted_patient_data_served_by_orthanc_reaches_no_output(tmp_path):
    """The planted PACS study (identifiers in every header, in SeriesDescriptions, in the SRs, in --reports
    texts) served by Orthanc and indexed through the real CLI: the reports get through, redacted, and no
    planted identifier is in any output byte (stdout, debug log, shards, errors, info; the HTML and search
    outputs of the same shards are checked by tests/test_pacs_content.py)."""
    import json

    from radretrieve.application.info import collect_info
    from radretrieve.testing.dicom import write_planted_archive
    from tests.test_pacs_content import SCRUBBER, _leaks

    arch = write_planted_archive(tmp_path / "arch")
    (tmp_path / "site_rules.py").write_text(SCRUBBER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "radretrieve", "--verbose", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    with Orthanc(tmp_path / "orthanc") as server:
        server.upload(sorted(arch.root.rglob("*.dcm")))  # a PACS holds no sidecar files
        index = run(
            "index", server.dicomweb_url, "--out", str(out), "--json", "--workers", "2",
            "--reports", str(arch.reports_csv), "--scrubber", "site_rules:scrub",
        )  # fmt: skip
    info = json.dumps(collect_info(out))
    summary = json.loads(index.stdout.strip().splitlines()[0])
    assert summary["skipped_series"] == arch.skipped and summary["errors"] == {}
    selected = 4  # the CT series of both studies, the ultrasound and the burned-in CT image
    expected = {"listed": selected + sum(arch.skipped.values()), "skipped": 0, "fetched": selected, "failed": 0}
    assert summary["series"] == dict(expected, not_selected=sum(arch.skipped.values()))
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
    outputs = [index.stdout, index.stderr, info]
    blob = "\n".join([*outputs, *files, repr(rows)])
    assert "CT CHEST [REDACTED]" in blob  # descriptions are kept, redacted
    assert _leaks(blob) == []


def test_basic_and_bearer_credentials_from_env_or_file_never_shown(
    pacs, archive, tiny_model, tmp_path, monkeypatch, caplog
):
    """HTTP basic against Orthanc's RegisteredUsers (from RADRETRIEVE_DICOMWEB_AUTH), a bearer token from
    --auth-file against a token-checking proxy; a refusal is one line; the secrets are in no output."""
    import logging

    from radretrieve.archive.dicomweb import AUTH_ENV, resolve_auth
    from radretrieve.archive.dicomweb.listing import probe
    from radretrieve.foundation.errors import RadRetrieveError
    from radretrieve.testing.http_proxy import FaultProxy

    caplog.set_level(logging.DEBUG)
    password, token = "pw-Zq81-secret", "tok-7Hx2-secret"
    with Orthanc(tmp_path / "orthanc", users={"radiology": password}) as server:
        server.upload([archive / "CT_small.dcm"])
        monkeypatch.delenv(AUTH_ENV, raising=False)
        with pytest.raises(RadRetrieveError) as refused:
            probe(_source(server.dicomweb_url, auth=resolve_auth(None)))
        assert str(refused.value) == (
            f"{server.dicomweb_url}: the server refused the study listing (HTTP 401 Unauthorized): "
            "set RADRETRIEVE_DICOMWEB_AUTH or --auth-file"
        )
        monkeypatch.setenv(AUTH_ENV, f"basic radiology:{password}")
        basic = _source(server.dicomweb_url, auth=resolve_auth(None))
        first = _index(basic, tmp_path / "basic", tiny_model, workers=2)
    assert first.series["fetched"] == 1 and first.errors == {}
    (tmp_path / "token").write_text(f"bearer {token}\n")
    with FaultProxy(pacs.url, token=token) as proxy:
        bearer = _source(f"dicomweb+{proxy.url}/dicom-web", auth=resolve_auth(tmp_path / "token"))
        second = _index(bearer, tmp_path / "bearer", tiny_model)
        assert {s.status for s in proxy.seen} == {200}
    assert second.series["fetched"] == 4 and second.errors == {}
    outputs = [caplog.text, repr(basic), repr(bearer), *first.lines(), *second.lines()]
    out_files = [p for d in ("basic", "bearer") for p in (tmp_path / d).rglob("*") if p.is_file()]
    outputs += [p.read_bytes().decode("utf-8", "replace") for p in out_files]
    assert not [o for o in outputs if password in o or token in o]


def test_listing_by_date_modality_and_query_keys(archive, tmp_path):
    """--since (StudyDate), --modality and --query KEY=VALUE select what QIDO-RS lists."""
    from radretrieve.archive.dicomweb.listing import list_series
    from radretrieve.testing.dicom import write_ct_series

    studies = {}
    for seed, (date, modality, description) in enumerate(
        [("20240105", "CT", "CHEST"), ("20240601", "MR", "KNEE"), ("20250301", "CT", "HEAD")]
    ):
        attrs = {"StudyDate": date, "Modality": modality, "StudyDescription": description}
        studies[description] = write_ct_series(tmp_path / "files" / str(seed), 1, attrs=attrs, seed=seed)
    with Orthanc(tmp_path / "orthanc") as server:
        server.upload_folder(tmp_path / "files")

        def listed(**kwargs) -> set[str]:
            found = {ref.series_uid for ref in list_series(_source(server.dicomweb_url, **kwargs)).refs}
            return {name for name, (_, series) in studies.items() if series in found}

        assert listed() == {"CHEST", "KNEE", "HEAD"}
        assert listed(since="2024-06-01") == {"KNEE", "HEAD"}
        assert listed(modalities="CT") == {"CHEST", "HEAD"}
        assert listed(modalities="mr,CT", since="20250101") == {"HEAD"}
        # (Orthanc 1.10's plugin does not decode %-escapes in QIDO values: wildcards and spaces match nothing)
        assert listed(query=["StudyDescription=CHEST"]) == {"CHEST"}
        assert listed(query=["Modality=MR"]) == {"KNEE"}  # a series-level key


def test_bad_source_arguments_are_one_line_errors(tmp_path):
    from radretrieve.archive.dicomweb import parse_auth, parse_source, resolve_auth
    from radretrieve.foundation.errors import RadRetrieveError

    cases = {
        "dicomweb+http://user:pw@pacs/dicom-web": "credentials in the URL are not accepted",
        "dicomweb+ftp://pacs/dicom-web": "expected dicomweb+http://HOST[:PORT]/PATH",
    }
    for url, message in cases.items():
        with pytest.raises(RadRetrieveError, match=re.escape(message)) as exc:
            parse_source(url)
        assert "pw" not in str(exc.value)
    with pytest.raises(RadRetrieveError, match="--since '2024-13': expected a date"):
        parse_source("dicomweb+http://pacs/dicom-web", since="2024-13")
    with pytest.raises(RadRetrieveError, match="--query PatientNam: not a DICOM keyword"):
        parse_source("dicomweb+http://pacs/dicom-web", query=["PatientNam=Doe"])
    with pytest.raises(RadRetrieveError) as bad:
        parse_auth("basic secret-without-colon", "RADRETRIEVE_DICOMWEB_AUTH")
    assert "secret" not in str(bad.value)
    with pytest.raises(RadRetrieveError, match=r"--auth-file .*missing: cannot read it"):
        resolve_auth(tmp_path / "missing")


def test_a_test_orthanc_is_gone_at_once_when_its_block_ends(tmp_path):
    """The PACS tests start eight Orthancs: leaving a `with Orthanc(...)` block kills it (its storage is thrown
    away) instead of a clean stop that waits 2.5-3.5 s on its server threads; nothing of it is left running."""
    import time

    with Orthanc(tmp_path / "orthanc", dicom=True) as server:
        proc = server.proc
        assert proc is not None and proc.poll() is None
        start = time.monotonic()
    took = time.monotonic() - start
    assert proc.poll() is not None  # reaped: no process, no zombie
    assert took < 1.5, took
