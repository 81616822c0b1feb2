"""Control characters and escape sequences in file names never reach the terminal raw: every line radretrieve
prints (log lines, the error boundary, usage errors, tracebacks, tables, JSON) shows them escaped, and JSON
still decodes to the real names."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radretrieve.foundation.terminal import PrintableFormatter, json_printable, printable
from tests.procs import run_all

CLI = [sys.executable, "-m", "radretrieve"]
RAW = ("\x1b", "\r", "\x07", "\u202e", "\x9b")  # ESC, carriage return, bell, RTL override, C1 CSI
GOOD = "a\x1b[2Jb\r\x07\u202eX.png"  # clears the screen, rewrites the line, rings, reverses the text
BAD = "bad\x1b[31m\x9b\u202e.nii"  # a broken NIfTI: its name reaches a warning and an error line


def _run(*args: str) -> subprocess.CompletedProcess:
    [res] = _run_all(list(args))
    return res


def _run_all(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """`radretrieve ARGS` for each command, side by side (tests/procs.py); no raw control character in any
    output."""
    results = run_all([[*CLI, *args] for args in commands], timeout=300)
    for res in results:
        for stream in (res.stdout, res.stderr):
            assert not any(ch in stream for ch in RAW), stream
    return results


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[Path, Path]:
    archive = tmp_path_factory.mktemp("esc") / "archive"
    archive.mkdir()
    Image.fromarray((np.eye(16) * 200).astype(np.uint8)).save(archive / GOOD, format="PNG")
    (archive / BAD).write_bytes(b"not a NIfTI" * 40)
    out = archive.parent / "out"
    # --keep-paths: names are shown only then (anonymised paths, the default, show hashes)
    res = _run("index", str(archive), "--out", str(out), "--workers", "0", "-q", "--keep-paths")
    assert res.returncode == 0, res.stderr
    assert "WARNING skipped bad\\x1b[31m\\x9b\\u202e.nii: not a readable NIfTI file" in res.stderr
    return archive, out


def test_tables_and_json_show_names_escaped(indexed):
    _, out = indexed
    search = ["search", "--index", str(out), "x", "-k", "1"]
    table, data = (res.stdout for res in _run_all(search, [*search, "-f", "json"]))
    assert "a\\x1b[2Jb\\x0d\\x07\\u202eX.png" in table
    assert json.loads(data)[0]["hits"][0]["source"] == GOOD  # the same data, escaped the JSON way
    assert "\\u202e" in data


def test_errors_usage_errors_and_tracebacks_are_escaped(indexed):
    archive, out = indexed
    similar, usage, res = _run_all(
        ["similar", str(archive / BAD), "--index", str(out)],  # the error boundary
        ["info", str(out), "--no\x1b[2J-such"],  # Click's usage error quotes the option
        ["--debug", "info", str(archive / "gone\r\x1b[2J")],  # a traceback ends with the message
    )
    assert similar.returncode == 1
    [line] = [line for line in similar.stderr.splitlines() if line.startswith("error: ")]
    assert "bad\\x1b[31m\\x9b\\u202e.nii: no readable DICOM, NIfTI or image found" in line
    assert usage.returncode == 2 and "--no\\x1b[2J-such" in usage.stderr
    assert res.returncode == 1 and "Traceback" in res.stderr and "gone\\x0d\\x1b[2J: out dir not found" in res.stderr


def test_log_lines_cannot_be_forged_or_drive_the_terminal():
    formatter = PrintableFormatter("%(levelname)s %(message)s")
    name = "x.png\nERROR all files deleted\x1b[2J"
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "skipped %s (%r), %d left", (name, name, 3), None)
    line = formatter.format(record)
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("WARNING skipped x.png\\x0aERROR all files deleted\\x1b[2J (") and line.endswith("3 left")
    try:
        raise ValueError(name)
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(record)
    assert "Traceback" in text and "\x1b" not in text and "\\x1b[2J" in text  # the traceback keeps its lines


def test_json_printable_is_lossless_and_valid():
    value = {"s": "a\x7f\x9b\u202e\u200b\U000e0001z é", "n": 1}  # DEL, C1 CSI, RTL override, ZWSP, a tag char
    text = json_printable(json.dumps(value, ensure_ascii=False, indent=1))
    assert json.loads(text) == value and text.isascii() is False  # é stays readable
    assert not re.search(r"[\x7f-\x9f\u200b\u202e\U000e0001]", text)
    assert printable("tab\tline\nesc\x1b") == "tab\tline\nesc\\x1b" and printable("x\ny", keep="") == "x\\x0ay"


def test_no_command_prints_around_the_helpers():
    """Every line the CLI prints goes through radretrieve.cli.output: no command calls echo or print itself."""
    cli = Path(__file__).resolve().parents[1] / "radretrieve" / "cli"
    offenders = [
        f"{path.name}:{n}"
        for path in sorted(cli.glob("*.py"))
        if path.name != "output.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\b(typer\.echo|typer\.secho|click\.echo|print|sys\.std(out|err)\.write)\(", line)
    ]
    assert offenders == []
