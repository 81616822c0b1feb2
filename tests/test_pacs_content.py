"""PACS content through the real CLI: series selection, reports in three forms (DICOM SR, a sidecar,
`--reports`), redaction of the study's identifiers with a site `--scrubber`, and the burned-in flag.

One planted archive (radretrieve.testing.dicom.write_planted_archive) is indexed once; its headers, report
texts and SeriesDescriptions name the patient in many forms, and none of those may reach any output byte."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from radretrieve.archive.anonymise import PathHasher
from radretrieve.outdir.anonymise import path_key
from radretrieve.outdir.manifest import read_manifest
from radretrieve.testing.dicom import phi_strings, planted_variants, write_planted_archive
from tests.procs import run_all

CLI = [sys.executable, "-m", "radretrieve", "--verbose"]  # --verbose: debug logs are outputs too
SCRUBBER = "def scrub(text):\n    return text.replace('right lower lobe', '[SITE]')\n"  # a site rule
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pacs")
    arch = write_planted_archive(tmp / "arch")
    (tmp / "site_rules.py").write_text(SCRUBBER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]))
    out = tmp / "out"
    args = ["index", str(arch.root), "--out", str(out), "--workers", "2", "--json"]
    proc = _run(*args, "--reports", str(arch.reports_csv), "--scrubber", "site_rules:scrub", env=env)
    outputs = [proc.stdout, proc.stderr]
    summary = json.loads(proc.stdout.strip().splitlines()[0])
    sheet_files = [tmp / "sheet0.html", tmp / "sheet1.html"]
    sheet = ["search", "chest", "--index", str(out), "-k", "10", "--format", "html", "--out"]
    reads = [  # they only read the out dir: run side by side (tests/procs.py)
        ["info", str(out), "--json"],
        [*sheet, str(sheet_files[0])],
        [*sheet, str(sheet_files[1]), "--show-burned-in"],
        ["info", str(out)],
        ["search", "chest", "--index", str(out), "--format", "json"],
        ["reports", arch.study_a, "--index", str(out), "--format", "json", "-k", "5"],
    ]
    procs = run_all([[*CLI, *args] for args in reads], timeout=300)
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs += [proc.stdout, proc.stderr]
    sheets = [path.read_text() for path in sheet_files]
    outputs += sheets
    info_data = json.loads(procs[0].stdout)
    return {"arch": arch, "out": out, "summary": summary, "info": info_data, "outputs": outputs, "sheets": sheets}


def _rows(out: Path) -> list[dict]:
    return [r for e in read_manifest(out).shards for r in pq.read_table(out / e.file).drop(["embedding"]).to_pylist()]


def _leaks(blob: str) -> list[str]:
    """Planted identifiers in `blob`: every variant anywhere (any case), short name parts as whole words."""
    low = DATA_URI.sub("", blob).lower()  # thumbnails are base64: random letters, not text
    found = [v for v in planted_variants() + phi_strings() if len(v) > 4 and v.lower() in low]
    found += [w for w in ("doe", "jane") if re.search(rf"\b{w}\b", low)]
    return found


def test_planted_identifiers_reach_no_output(indexed):
    out, outputs = indexed["out"], list(indexed["outputs"])
    rows = _rows(out)
    outputs.append(repr(rows))
    for entry in read_manifest(out).shards:
        outputs += [f"{k!r}={v!r}" for k, v in (pq.read_schema(out / entry.file).metadata or {}).items()]
    binary = {".parquet", ".faiss", ".npy", ".safetensors"}
    outputs += [
        p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file() and p.suffix not in binary
    ]
    blob = "\n".join(outputs)
    # the texts do get through, redacted, scrubbed by the site rule: the check can see them
    reports = " ".join(r["text"] for r in rows if r["kind"] == "report")
    for word in indexed["arch"].report_words:
        assert word in reports, word
    assert "[REDACTED]" in reports and "[SITE]" in reports and "right lower lobe" not in blob
    assert "CT CHEST [REDACTED]" in blob and "CT for [REDACTED]" in blob  # descriptions are kept, redacted
    assert _leaks(blob) == []


def _real_paths(indexed: dict) -> dict[str, str]:
    """Stored (anonymised: the default) source -> the archive path it stands for, for every file and folder of
    the archive: the out dir's keyed hash of each path, recomputed with its private key."""
    hashed = PathHasher(path_key(indexed["out"]))
    root = indexed["arch"].root
    return {hashed(p.relative_to(root).as_posix()): p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_skipped_series_are_counted_by_reason_and_recorded(indexed):
    expected = indexed["arch"].skipped
    assert indexed["summary"]["skipped_series"] == expected
    assert indexed["summary"]["errors"] == {}  # skipped series are not errors
    info = indexed["info"]
    assert info["series_skipped_by_reason"] == expected and info["errors_by_type"] == {}
    records = [json.loads(line) for line in (indexed["out"] / "errors" / "scan.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records} == {"select"}
    assert len(records) == sum(expected.values())
    # every input is accounted for: each DICOM file is in a shard row, or in a skipped series' record
    rows = _rows(indexed["out"])
    real = _real_paths(indexed)
    embedded = {real[r["source"]] for r in rows if r["kind"] != "report"}
    skipped = {real[r["source"]] for r in records}
    files = {p.relative_to(indexed["arch"].root).as_posix() for p in indexed["arch"].root.rglob("*.dcm")}
    assert all(any(f == s or f.startswith(s + "/") for s in embedded | skipped) for f in files)


def test_flagged_images_carry_the_flag_and_are_never_drawn(indexed):
    rows = {r["item_id"]: r for r in _rows(indexed["out"]) if r["kind"] != "report"}
    flagged = {i for i, r in rows.items() if r["burned_in"]}
    real = _real_paths(indexed)
    assert {real[rows[i]["source"]] for i in flagged} == set(indexed["arch"].flagged)

    def tiles(html: str) -> dict[int, tuple[str, str]]:
        found = re.findall(r'data-item-id="(-?\d+)"><img class="thumb" alt="([^"]*)" src="([^"]*)"', html)
        return {int(i): (alt, src) for i, alt, src in found}

    hidden, shown = (tiles(html) for html in indexed["sheets"])
    assert set(hidden) == set(rows) == set(shown)  # every item is a hit of the sheet
    for item_id in rows:
        if item_id in flagged:
            assert hidden[item_id][0].startswith("withheld") and shown[item_id][0] == "preview"
            assert hidden[item_id][1] != shown[item_id][1]  # the placeholder, not the image
        else:
            assert hidden[item_id] == shown[item_id] and hidden[item_id][0] == "preview"
