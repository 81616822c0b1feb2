"""`radretrieve listen`, the receiving node, as real processes: the CLI on a free port, pynetdicom's own `storescu`
application as the PACS that pushes. A push equals the folder index of the same files; a second push adds
nothing; kill -9 during a push loses nothing acknowledged and a restart plus a second push gives the folder's
rows once; senders outside the allow-list are rejected; planted patient data reaches no output.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pydicom.uid
import pytest

from tests.pacs_files import INSTANCES
from tests.pacs_files import rows as _rows
from tests.pacs_files import same_rows as _same_rows
from tests.procs import run_all

AET = "RADRETRIEVE"
PUSHED = INSTANCES  # instances of the archive: two CT series, pydicom's CT and RLE MR


@pytest.fixture(scope="module")
def archive(ct_archive) -> Path:
    """Two CT series, pydicom's CT and RLE MR (compressed: stored as sent, decoded like a folder's file); shared
    with tests/test_dicomweb.py (tests/pacs_files.py)."""
    return ct_archive


@pytest.fixture(scope="module")
def folder_rows(ct_folder_rows) -> pa.Table:
    return ct_folder_rows


def _spooled(out: Path) -> list[Path]:
    return sorted((out / "receive").rglob("*.dcm"))


class Listener:
    """`radretrieve listen` as a subprocess; stdout and stderr collected line by line; killed on exit."""

    def __init__(self, out: Path, *args: str, settle: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "radretrieve", "--verbose", "listen", "--out", str(out), "--port", "0"]
        cmd += ["--aet", AET, "--settle", str(settle), "--json", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._readers:
            t.start()
        self.port = 0

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for t in self._readers:
            t.join(timeout=10)

    def started(self, timeout: float = 120.0) -> Listener:
        found = self.until(lambda: re.search(r"listening on 127\.0\.0\.1:(\d+)", "\n".join(self.stderr)), timeout)
        self.port = int(found.group(1))
        return self

    def batches(self, n: int, timeout: float = 120.0) -> list[dict]:
        """The first `n` `--json` status lines (waits for them)."""
        self.until(lambda: len(self.stdout) >= n, timeout)
        return [json.loads(line) for line in self.stdout[:n]]

    def stop(self) -> int:
        """SIGTERM: the clean stop a service manager sends."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        for t in self._readers:
            t.join(timeout=10)
        return code

    def until(self, fn, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = fn()
            if got:
                return got
            if self.proc.poll() is not None:
                time.sleep(0.2)  # the readers' last lines
                raise AssertionError(f"listen exited {self.proc.returncode}: {self.stderr[-20:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out; stderr: {self.stderr[-20:]}")


def _storescu(port: int, path: Path, calling: str = "SENDER", **popen) -> list[str]:
    # -cx: propose the files' own transfer syntaxes (the RLE MR is sent compressed, as a PACS would)
    return [sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port), str(path), "-r", "-cx"] + [
        "-aet", calling, "-aec", AET,
    ]  # fmt: skip


@contextlib.contextmanager
def _association(port: int, syntax: str | None = None):
    """A pynetdicom sender in this process (CT storage; only `syntax` if given), released on exit."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage, *([syntax] if syntax else []))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()
        ae.shutdown()


def _push(port: int, path: Path, calling: str = "SENDER") -> subprocess.CompletedProcess:
    return subprocess.run(_storescu(port, path, calling), capture_output=True, text=True, timeout=120)


def test_push_equals_folder_twice_adds_nothing_and_one_writer(archive, folder_rows, tmp_path):
    """A push indexes to the folder's ids, rows and embeddings, the FAISS index is updated and the spool emptied;
    the same push again adds no row; `info` reads the totals while it runs; a second `listen` is refused."""
    out = tmp_path / "out"
    with Listener(out, "--allow", "SENDER@127.0.0.1", "--allow", "OTHER@10.9.9.9") as node:
        node.started()
        _push(node.port, archive)
        first = node.batches(1)[0]
        _same_rows(_rows(out), folder_rows)
        assert first["instances"] == PUSHED and first["indexes"]["items"] == folder_rows.num_rows
        assert _spooled(out) == []  # received files are gone once their rows are in a committed shard
        shards = sorted((out / "shards").glob("*.parquet"))
        _push(node.port, archive)
        second = node.batches(2)[1]
        assert second["instances"] == PUSHED and second["rows"] == {}
        assert sorted((out / "shards").glob("*.parquet")) == shards
        _same_rows(_rows(out), folder_rows)
        cli = [sys.executable, "-m", "radretrieve"]
        info, other = run_all(
            [[*cli, "info", str(out)], [*cli, "listen", "--out", str(out), "--port", "0"]], timeout=120
        )
        assert "listener: running" in info.stdout and f"received {2 * PUSHED} instances" in info.stdout
        assert "indexed 8 series of 8 studies in 2 batch(es)" in info.stdout
        assert other.returncode == 1 and "is being written by" in other.stderr and "radretrieve listen" in other.stderr
        # senders outside the allow-list: an unknown AE title, and an allowed one from an address not its own
        pushes = [_storescu(node.port, archive / "CT_small.dcm", calling) for calling in ("INTRUDER", "OTHER")]
        for refused in run_all(pushes, timeout=120):
            assert "Reason: Calling AE title not recognised" in refused.stderr and refused.returncode != 0
        assert _spooled(out) == [] and len(node.stdout) == 2
        assert (out / "receive").stat().st_mode & 0o777 == 0o700  # whole instances, patient headers included
        # a PDU header that claims 1 GiB: the connection is closed before pynetdicom buffers it
        with socket.create_connection(("127.0.0.1", node.port), timeout=30) as sock:
            sock.sendall(b"\x01\x00" + (1 << 30).to_bytes(4, "big") + b"\x00" * 1024)
            assert sock.recv(1024) == b""
        node.until(lambda: any("a PDU of 1073741824 bytes" in line for line in node.stderr))
        assert node.stop() == 143
    assert sum("rejected an association from 'INTRUDER'" in line for line in node.stderr) == 1
    assert sum("rejected an association from 'OTHER'" in line for line in node.stderr) == 1
    status = json.loads((out / "listen.json").read_text())
    assert status["state"] == "stopped" and status["totals"]["received"]["rejected"] == 2


def test_kill_during_push_then_restart_and_push_again_gives_folder_rows_once(archive, folder_rows, tmp_path):
    """kill -9 while instances arrive: what was acknowledged is on disk, the half-written one is not; the restart
    waits for the studies to settle again, the second push completes them: the folder's rows, each once."""
    out = tmp_path / "out"
    with Listener(out) as node:
        node.started()
        sender = subprocess.Popen(_storescu(node.port, archive), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while len(_spooled(out)) < 5 and time.monotonic() < deadline:
                time.sleep(0.005)
            os.kill(node.proc.pid, signal.SIGKILL)
        finally:  # pynetdicom's storescu may notice the lost peer only at its 30 s timeout: not waited for
            sender.kill()
            sender.wait()
    kept = _spooled(out)
    assert 5 <= len(kept) < PUSHED  # killed mid-push
    assert not (out / "shards").exists() or not list((out / "shards").glob("*.parquet"))
    with Listener(out) as node:
        node.started()
        assert any("received before the restart" in line for line in node.stderr)
        assert not list((out / "receive").rglob(".*.part"))  # the store the kill interrupted is gone
        _push(node.port, archive)
        node.batches(1)
        rows = _rows(out)
        assert len(set(rows.column("item_id").to_pylist())) == rows.num_rows
        _same_rows(rows, folder_rows)
        assert _spooled(out) == []
        node.stop()


def test_another_host_without_allow_list_refused_at_start(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "radretrieve", "listen", "--out", str(out), "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: --host 0.0.0.0: listening beyond this machine needs --allow AET@ADDRESS for every sender"
    ]
    assert not out.exists()


def test_planted_patient_data_pushed_reaches_no_output(tmp_path):
    """The planted PACS study pushed as a PACS would (every object, identifiers in every header and in the texts):
    the same selection as the folder, reports redacted, no planted identifier in any output (stdout, the verbose
    log, shards, errors, listen.json, info), and no received file left."""
    from pydicom.data import get_testdata_file

    from radretrieve.application.info import collect_info
    from radretrieve.testing.dicom import write_planted_archive
    from tests.test_pacs_content import _leaks

    arch = write_planted_archive(tmp_path / "arch")
    pushed = tmp_path / "pushed"
    for path in arch.root.rglob("*.dcm"):  # a PACS holds no sidecar files
        dest = pushed / path.relative_to(arch.root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    out = tmp_path / "out"
    with Listener(out, "--max-pdu", "4096", "--max-instance-mb", "0.02", settle=3.0) as node:
        node.started()
        push = _push(node.port, pushed)
        batch = node.batches(1)[0]
        assert batch["skipped_series"] == arch.skipped and batch["errors"] == {}
        files = len(list(pushed.rglob("*.dcm")))
        assert (batch["received_instances"], batch["refused_instances"]) == (files, 0)
        assert any(f"received {files} instance(s), refused 0" in line for line in node.stderr)
        # a sender that keeps its association open: the study is complete after --settle seconds of quiet
        with _association(node.port) as assoc:
            ds = pydicom.dcmread(arch.root / "b" / "ct" / sorted(os.listdir(arch.root / "b" / "ct"))[0])
            ds.SeriesInstanceUID = ds.SOPInstanceUID = pydicom.uid.generate_uid()
            assert assoc.send_c_store(ds).Status == 0x0000
            assert node.batches(2)[1]["rows"] == {"image": 1} and assoc.is_established
        # an instance over --max-instance-mb (pydicom's CT_small, 39 KiB) aborts its association as it streams in
        big = _storescu(node.port, Path(get_testdata_file("CT_small.dcm"))) + ["-v"]
        sent = subprocess.run(big, capture_output=True, text=True, timeout=120)
        assert "Association Aborted" in sent.stderr  # pynetdicom's storescu exits 0 whatever became of the files
        node.until(lambda: any("an instance larger than 20971 bytes" in line for line in node.stderr))
        assert _spooled(out) == []
        node.stop()
    info = json.dumps(collect_info(out))
    info_text = subprocess.run(
        [sys.executable, "-m", "radretrieve", "info", str(out)], capture_output=True, text=True, timeout=120
    ).stdout
    assert "series skipped by selection: " in info_text and "Localizer 2" in info_text
    rows = [
        r for p in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(p).drop(["embedding"]).to_pylist()
    ]
    reports = " ".join(r["text"] for r in rows if r["kind"] == "report")
    for word in ("nodule", "Impression", "enhanced sr text"):
        assert word in reports, word
    assert "[REDACTED]" in reports
    assert _spooled(out) == []
    binary = {".parquet", ".faiss", ".npy", ".safetensors"}
    files = [
        p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file() and p.suffix not in binary
    ]
    blob = "\n".join([*node.stdout, *node.stderr, info, info_text, *files, repr(rows), push.stdout])
    assert "CT CHEST [REDACTED]" in blob  # descriptions are kept, redacted
    assert _leaks(blob) == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom says so too, when the test makes it
def test_scp_refuses_instances_whose_uids_are_not_uids_and_when_the_disk_is_full(tmp_path):
    """The SCP alone (pynetdicom on both sides, in this process): an instance whose Study Instance UID could make a
    path, and any instance once free disk space would drop below --min-free-mb, are refused and never written."""
    from pydicom.data import get_testdata_file

    from pipelines.receive.scp import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, Counters, ReceivingScp, ScpOptions
    from pipelines.receive.spool import Spool

    spool = Spool(tmp_path / "out")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for options, change, status in (
        (ScpOptions(aet=AET, port=0), {"StudyInstanceUID": "1.2/../../../x"}, CANNOT_UNDERSTAND),
        (ScpOptions(aet=AET, port=0, min_free_bytes=1 << 62), {}, OUT_OF_RESOURCES),
    ):
        counters = Counters()
        scp = ReceivingScp(spool, options, counters, lambda: None)
        try:
            sent = copy.deepcopy(ds)
            for key, value in change.items():
                setattr(sent, key, value)
            with _association(scp.port) as assoc:
                assert assoc.send_c_store(sent).Status == status
        finally:
            scp.shutdown()
        assert counters.to_dict()["refused"] == 1 and counters.to_dict()["instances"] == 0
    assert list((tmp_path / "out").rglob("*.dcm")) == [] and not (tmp_path / "x").exists()


def test_scp_refuses_a_deflated_instance_that_inflates_past_the_instance_limit(tmp_path):
    """Deflate packs zeros ~1000:1: an instance a few KiB on the wire that inflates past --max-instance-mb is
    refused before anything decodes it (pydicom inflates in one piece); a small deflated instance is stored."""
    from pydicom.data import get_testdata_file

    from pipelines.receive.scp import CANNOT_UNDERSTAND, SUCCESS, Counters, ReceivingScp, ScpOptions
    from pipelines.receive.spool import Spool

    spool, counters = Spool(tmp_path / "out"), Counters()
    scp = ReceivingScp(spool, ScpOptions(aet=AET, port=0, max_instance_bytes=1 << 20), counters, lambda: None)
    try:
        small = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        small.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        bomb = copy.deepcopy(small)
        bomb.SOPInstanceUID = pydicom.uid.generate_uid()
        bomb.PixelData = bytes(8 << 20)  # 8 MiB of zeros: ~8 KiB deflated
        with _association(scp.port, pydicom.uid.DeflatedExplicitVRLittleEndian) as assoc:
            assert assoc.send_c_store(bomb).Status == CANNOT_UNDERSTAND
            assert assoc.send_c_store(small).Status == SUCCESS
    finally:
        scp.shutdown()
    assert counters.to_dict()["refused"] == 1 and counters.to_dict()["instances"] == 1
    assert [p.stem for p in (tmp_path / "out").rglob("*.dcm")] == [small.SOPInstanceUID]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"settle": float("nan")}, "--settle nan: expected a finite number"),
        ({"settle": float("inf")}, "--settle inf: expected a finite number"),
        ({"timeout": float("nan")}, "--timeout nan: expected a finite number"),
        ({"timeout": float("inf")}, "--timeout inf: expected a finite number"),
        ({"max_instance_mb": float("nan")}, "--max-instance-mb nan: expected a finite number"),
        ({"min_free_mb": float("nan")}, "--min-free-mb nan: expected a finite number"),
        ({"wait": float("nan")}, "--wait nan: expected a finite number"),
        ({"host": "0.0.0.0", "allow": ("PACS@0.0.0.0/0",)}, "--allow 'PACS@0.0.0.0/0': covers every address"),
        ({"host": "::", "allow": ("PACS@::/0",)}, "--allow 'PACS@::/0': covers every address"),
    ],
)
def test_options_that_pass_every_comparison_or_allow_everyone_are_refused(tmp_path, change, message):
    """NaN passes `< 0.1` and `<= 0` alike (a NaN settle never settles an aborted sender's study, a NaN or inf
    timeout never times out), and an allow-list entry of prefix length 0 lets every address in."""
    from radretrieve.application.listen import ListenOptions
    from radretrieve.foundation.errors import RadRetrieveError

    with pytest.raises(RadRetrieveError) as err:
        ListenOptions(out=tmp_path / "out", **change).check()
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    "text",
    [
        '{"totals": {"batches": "7"}}',
        '{"totals": {"rows": ["image"]}}',
        '{"totals": {"rows": 3}}',
        '{"totals": {"batches": {}}}',
        '{"totals": {"received": {"instances": "y"}}}',
        '{"totals": {"errors": {"DecodeError": -1}}}',
        '{"totals": {"failed_batches": true}}',
        '{"totals": [1, 2]}',
        '{"totals": {"batches": 1',
    ],
)
def test_a_damaged_listen_json_restarts_the_totals_instead_of_stopping_the_node(tmp_path, text, caplog):
    """listen.json is the node's own status file, but a count of the wrong type in it (a hand edit, a torn copy)
    made every start fail at its first status write; its totals start from zero instead, with a warning."""
    from pipelines.receive.node import Totals
    from pipelines.receive.scp import Counters

    (tmp_path / "listen.json").write_text(text, encoding="utf-8")
    totals = Totals.load(tmp_path)
    assert totals == Totals()
    assert totals.to_dict(Counters())["batches"] == 0
    assert "listen.json: damaged totals" in caplog.text
    (tmp_path / "listen.json").write_text('{"totals": {"batches": 2, "rows": {"image": 5}}}', encoding="utf-8")
    assert Totals.load(tmp_path) == Totals(batches=2, rows={"image": 5})


@pytest.mark.parametrize(
    "link",
    [
        "incoming/study-1.2.3",  # a study: moved into batch/, indexed through, then rmtree'd (OSError) for ever
        "incoming/study-1.2.3/1.2.4",  # a series: a store of 1.2.3/1.2.4 is written into the link's target
        "batch/study-1.2.5/1.2.6/1.2.7.dcm",  # an instance: indexed from wherever it points
        "batch",
    ],
)
def test_a_symbolic_link_planted_in_the_spool_stops_the_node_at_start_naming_it(tmp_path, link):
    """The node makes only folders and files in its spool; a link found there at start is refused (one line
    naming it) before anything is stored, indexed or removed through it."""
    from pipelines.receive.spool import Spool
    from radretrieve.foundation.errors import RadRetrieveError

    out, victim = tmp_path / "out", tmp_path / "victim"
    (victim / "kept").mkdir(parents=True)
    (victim / "kept" / "file.dcm").write_bytes(b"someone else's")
    Spool(out)  # the layout a first run makes
    path = out / "receive" / link
    if path.is_dir():
        path.rmdir()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim / "kept" / "file.dcm" if link.endswith(".dcm") else victim, path)
    with pytest.raises(RadRetrieveError, match=re.escape(f"{path}: a symbolic link in the receiving node's spool")):
        Spool(out).recover()
    assert (victim / "kept" / "file.dcm").read_bytes() == b"someone else's"


def test_a_study_whose_stores_all_failed_is_dropped_not_handed_to_the_indexer(tmp_path, tiny_model):
    """A store that fails after making its folders (a full disk, a write error) leaves a study folder without an
    instance; handed to the indexer, a batch of such studies fails ("nothing indexable") at every retry, and the
    node, which retries batch/ before taking anything new, never indexes another study. Nothing in it was
    acknowledged: it is removed, and the studies beside it are taken."""
    from pipelines.job import IndexOptions, index_opened
    from pipelines.outdir_open import open_out_dir
    from pipelines.receive.spool import Spool, Taken
    from radretrieve.foundation.errors import RadRetrieveError
    from radretrieve.foundation.lock import writer_lock
    from radretrieve.testing.dicom import write_ct_series

    out = tmp_path / "out"
    with writer_lock(out, "test"):
        open_out_dir(out, tiny_model, overwrite=False, anonymise=True)  # as the node does, before its spool
        spool = Spool(out)
        (spool.incoming / "study-1.2.3" / "1.2.4").mkdir(parents=True)  # what a failed store leaves
        spool.recover()
        assert spool.take_ready(settle=0.0, limit=8) is None
        assert list(spool.incoming.iterdir()) == [] and list(spool.batch.iterdir()) == []

        (spool.incoming / "study-1.2.3" / "1.2.4").mkdir(parents=True)
        write_ct_series(spool.incoming / "study-1.2.5" / "1.2.6", 2, seed=3)
        spool.recover()
        assert spool.take_ready(settle=0.0, limit=8) == Taken(1, 1, 2)
        assert [p.name for p in spool.batch.iterdir()] == ["study-1.2.5"]

        # why: the indexer refuses a batch without a file, every time
        spool.clear_batch()
        (spool.batch / "study-1.2.3" / "1.2.4").mkdir(parents=True)
        with pytest.raises(RadRetrieveError, match="nothing indexable"):
            index_opened(spool.batch, out, tiny_model, IndexOptions(workers=0, progress=False))


def test_a_batch_whose_index_update_fails_is_still_done_and_does_not_block_the_next(tmp_path, tiny_model, caplog):
    """The rows of a batch are committed, then the FAISS update fails (a damaged index file, every time): the
    batch is done all the same (kept, it would be retried forever and hold back every study behind it), the
    failure is logged and counted, and the next study is indexed."""
    from pipelines.outdir_open import open_out_dir
    from pipelines.receive.node import Node, ReceiveOptions
    from pipelines.receive.scp import ScpOptions
    from pipelines.receive.spool import Spool
    from radretrieve.foundation.errors import RadRetrieveError
    from radretrieve.foundation.lock import writer_lock
    from radretrieve.testing.dicom import write_ct_series

    out = tmp_path / "out"
    updates: list[int] = []

    def update() -> dict:
        updates.append(1)
        raise RadRetrieveError(f"{out}/index/items.faiss: damaged (size differs from index.json)")

    with writer_lock(out, "test"):
        open_out_dir(out, tiny_model, overwrite=False, anonymise=True)
        spool = Spool(out)
        node = Node(out, tiny_model, ReceiveOptions(scp=ScpOptions(aet="RADRETRIEVE", port=0)))
        node._hooks = (update, lambda report, infos: None)
        for number, seed in enumerate((3, 4), start=1):
            write_ct_series(spool.incoming / f"study-1.2.{seed}" / f"1.3.{seed}", 2, seed=seed)
            spool.recover()
            taken = spool.take_ready(settle=0.0, limit=8)
            assert taken is not None and node._index(spool, taken, number)
            assert list(spool.batch.iterdir()) == []  # done: not retried
    assert len(updates) == 2 and node.totals.index_failures == 2 and node.totals.series_indexed == 2
    assert node.totals.failed_batches == 0 and _rows(out).column("kind").to_pylist() == ["volume", "volume"]
    assert "search index was not updated" in caplog.text


def test_a_port_in_use_is_one_line_naming_it(tmp_path):
    """Another program on the port: one line naming the port and the address, no traceback."""
    from pipelines.receive.scp import ReceivingScp, ScpOptions
    from radretrieve.foundation.errors import RadRetrieveError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RadRetrieveError, match=rf"^--port {port}: cannot listen on 127.0.0.1 \(.+\)$"):
            ReceivingScp(None, ScpOptions(aet="RADRETRIEVE", port=port), None, lambda: None)
