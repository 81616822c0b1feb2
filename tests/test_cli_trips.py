"""What a newcomer tripped on (issue 21), through the real CLI in subprocesses: refused commands write nothing,
hints name the command that works, argument errors come before torch and the model load."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "radretrieve"]
# runs the CLI in-process and then reports whether torch was imported: argument errors must come before it
CHECK = (
    "import sys\n"
    "sys.argv = ['radretrieve'] + sys.argv[1:]\n"
    "from radretrieve.cli.app import main\n"
    "try:\n    main()\n"
    "finally:\n    print('TORCH=' + str('torch' in sys.modules), file=sys.stderr)\n"
)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def _archive(tmp_path: Path, kind: str) -> Path:
    if kind == "empty folder":
        (tmp_path / "arch").mkdir()
        return tmp_path / "arch"
    if kind == "single file":
        (tmp_path / "scan.txt").write_text("not an image\n")
        return tmp_path / "scan.txt"
    (tmp_path / "arch" / "notes").mkdir(parents=True)  # files, but none a DICOM, NIfTI or image: refused after the scan
    (tmp_path / "arch" / "notes" / "readme.txt").write_text("no images here\n")
    return tmp_path / "arch"


@pytest.mark.parametrize("kind", ["empty folder", "single file", "no image files"])
def test_a_refused_index_is_one_error_line_and_writes_no_out_dir(tmp_path, kind):
    archive, out = _archive(tmp_path, kind), tmp_path / "out"
    proc = _cli("index", str(archive), "--out", str(out), "-q", "--workers", "0")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = _error_lines(proc)
    assert len(errors) == 1 and str(archive) in errors[0], proc.stderr
    assert "vectors" not in proc.stdout and "recall" not in proc.stdout
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


def test_a_refused_index_leaves_an_existing_out_dir_as_it_was(tmp_path):
    archive, out = _archive(tmp_path, "empty folder"), tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    proc = _cli("index", str(archive), "--out", str(out), "-q")
    assert proc.returncode == 1, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_search_on_an_archive_folder_hints_the_index_command(tmp_path):
    archive = tmp_path / "arch"
    archive.mkdir()
    proc = _cli("search", "x", "--index", str(archive))
    assert proc.returncode == 1, proc.stderr
    errors = _error_lines(proc)
    assert len(errors) == 1, proc.stderr
    assert f"radretrieve index {archive} --out OUT" in errors[0]
    assert "build-index" not in errors[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["embed", "README.md", "--format", "npy"], "--format npy writes binary: give --out"),
        (["embed", "README.md", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["index", "ARCHIVE", "--out", "OUT", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["classify", "README.md", "--task", "organ=head,chest", "--model", "no-such-model"], "unknown model"),
        (["train", "--data", "ARCHIVE", "--out", "OUT", "--model", "no-such-model"], "unknown model"),
        # the default (untrained) model: refused before it loads, so no warning about it either
        (["index", "ARCHIVE", "--out", "OUT"], "nothing indexable found (the folder holds no files)"),
    ],
    ids=[
        "npy-without-out",
        "embed-unknown-model",
        "index-unknown-model",
        "classify-unknown-model",
        "train-unknown-model",
        "index-empty-folder",
    ],
)
def test_argument_errors_come_before_torch_loads(tmp_path, args, expected):
    (tmp_path / "ARCHIVE").mkdir()
    (tmp_path / "README.md").write_text("# not an image\n")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, *args], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 1, proc.stderr
    errors = _error_lines(proc)
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert proc.stderr.splitlines()[:-1] == errors  # nothing else on stderr (the last line is CHECK's)
    assert "TORCH=False" in proc.stderr  # the old code loaded torch and the model first (5 to 24 s)
    assert seconds < 10, seconds
    assert not (tmp_path / "OUT").exists()


def test_quiet_index_prints_no_info_lines(tmp_path):
    archive, out = tmp_path / "syn", tmp_path / "out"
    assert _cli("synth", str(archive), "--studies", "2", "--seed", "0").returncode == 0
    proc = _cli("index", str(archive), "--out", str(out), "-q", "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    assert (out / "manifest.json").is_file()
    assert not [line for line in proc.stderr.splitlines() if line.startswith("INFO")], proc.stderr


READER_WARNING = (
    "import logging, warnings\n"
    "from pipelines.readers import ReaderPool\n"
    "from radretrieve.foundation.terminal import configure_logging\n"
    "configure_logging(logging.WARNING)\n"
    "with ReaderPool(1) as pool:\n"
    "    pool.submit(warnings.warn, 'odd header value').result()\n"
    "    pool.submit(logging.getLogger('x').info, 'info from a reader').result()\n"
)


def test_reader_warnings_go_through_the_log_at_the_parents_level():
    proc = subprocess.run([sys.executable, "-c", READER_WARNING], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # a log record (the parent's format), not the raw `FILE:LINE: UserWarning` that an unconfigured reader prints
    assert lines[0].startswith("WARNING ") and "UserWarning: odd header value" in lines[0], proc.stderr
    assert "info from a reader" not in proc.stderr


def test_a_job_that_waited_for_the_lock_never_removes_what_another_job_left(tmp_path, tiny_model):
    """The out dir did not exist when this job started, but another job made it and wrote into it while this one
    waited for the lock: this job's refusal removes nothing of it."""
    import threading
    import time

    from pipelines.job import IndexOptions, _locked_job
    from radretrieve.foundation.errors import RadRetrieveError
    from tests.locks import hold_lock

    archive = tmp_path / "arch"
    archive.mkdir()
    (archive / "notes.txt").write_text("no image here\n")
    out = tmp_path / "out"
    holder = hold_lock(out)  # the other job: it made the out dir and holds its lock
    (out / "theirs.txt").write_text("the other job's\n")
    release = threading.Timer(1.0, holder.kill)  # the other job ends a second later
    release.start()
    try:
        with pytest.raises(RadRetrieveError):  # refused (here: the out dir holds files of another kind)
            opts = IndexOptions(workers=0, progress=False, wait=60)
            _locked_job(archive, out, tiny_model, opts, time.perf_counter(), created=True)
    finally:
        release.cancel()
        holder.kill()
        holder.wait()
    assert (out / "theirs.txt").read_text() == "the other job's\n"
