"""Patient data through the whole pipeline: headers with a name, id, birth date, accession number and
institution, indexed by the real CLI (a good series, one failing at read, one failing at scan), never reach a
decoded shard column, schema metadata, errors/, manifest.json, index.json, stderr, `info`, or search output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from radretrieve.outdir.manifest import read_manifest
from radretrieve.testing.dicom import PLANTED_PHI, phi_strings, write_ct_series, write_ct_slice
from tests.procs import run_all

CLI = [sys.executable, "-m", "radretrieve", "--verbose"]  # --verbose: debug logs are outputs too


def _archive(root: Path) -> str:
    attrs = dict(PLANTED_PHI, StudyDescription="CT HEAD", SeriesDescription="AXIAL 1MM")
    study, _ = write_ct_series(root / "good", 6, attrs=attrs)
    write_ct_series(root / "cut", 4, attrs=attrs, seed=1)  # passes the header scan, fails at read
    victim = sorted((root / "cut").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-300])
    from pydicom.uid import generate_uid

    series, other_study = generate_uid(), generate_uid()
    for k, size in enumerate((8, 8, 6)):  # mixed slice sizes: fails at scan
        write_ct_slice(root / "mixed" / f"{k}.dcm", np.full((size, 8), 1000), float(k), series, other_study, attrs)
    return study


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _run_reads(*commands: list[str]) -> list[str]:
    """Commands that only read the out dir, side by side (tests/procs.py): their stdout and stderr texts."""
    procs = run_all([[*CLI, *args] for args in commands], timeout=300)
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return [text for proc in procs for text in (proc.stdout, proc.stderr)]


def _decoded_shards(out: Path) -> list[str]:
    texts = []
    for entry in read_manifest(out).shards:
        table = pq.read_table(out / entry.file)
        texts.append(repr(table.drop(["embedding"]).to_pylist()))
        texts += [k.decode() + "=" + v.decode() for k, v in (table.schema.metadata or {}).items()]
    return texts


def _text_files(out: Path) -> list[str]:
    binary = {".parquet", ".faiss", ".npy", ".safetensors"}
    return [p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file() and p.suffix not in binary]


@pytest.mark.parametrize("workers", ["2"])  # reader processes: their failures travel back too
def test_planted_identifiers_reach_no_output(tmp_path, workers):
    study = _archive(tmp_path / "arch")
    out = tmp_path / "out"
    outputs = []
    proc = _run("index", str(tmp_path / "arch"), "--out", str(out), "--workers", workers)
    outputs += [proc.stdout, proc.stderr]
    errors = [json.loads(line) for p in sorted((out / "errors").glob("*.jsonl")) for line in p.read_text().splitlines()]
    assert {(e["stage"], e["error_type"]) for e in errors} >= {("read", "CorruptFile"), ("scan", "MixedSeries")}
    assert any(r["study_key"] == study for r in pq.read_table(out / read_manifest(out).shards[0].file).to_pylist())
    outputs += _run_reads(
        ["info", str(out), "--json"],
        ["info", str(out)],
        ["search", "ct head", "--index", str(out), "--format", "json"],
        ["search", "ct head", "--index", str(out), "--format", "table"],
        ["similar", study, "--index", str(out), "--format", "json"],
        ["reports", study, "--index", str(out), "--format", "json"],
        ["search", "ct head", "--index", str(out), "--format", "html", "--out", str(tmp_path / "sheet.html")],
    )
    outputs.append((tmp_path / "sheet.html").read_text())
    outputs += _decoded_shards(out) + _text_files(out)
    assert "AXIAL 1MM" in "\n".join(outputs)  # allow-listed header text does get through: the check can see it
    blob = "\n".join(outputs)
    leaked = [s for s in phi_strings() if s in blob]
    assert leaked == []


NAMES = ["DOE_JOHN_MRN123456", "SMITH_ANNA_MRN654321"]


def _named_archive(root: Path) -> None:
    """Folder and file names that carry patient data, as exports from some PACS do."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in NAMES:
        folder = root / name
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(folder / f"{name}_chest.png")
        (folder / f"{name}_chest.txt").write_text("chest radiograph, clear lungs")
        (folder / "broken.png").write_bytes(b"")  # a failure whose record names the file
    write_ct_series(root / NAMES[1] / "ct", 4)


ROOT_NAME = "GARCIA_MARIA_MRN777001"  # the archive root's own folder name carries a patient's name too


def test_anonymised_paths_reach_no_output_and_previews_still_work(tmp_path):
    """The default (no option): no folder or file name, the root's own name included, reaches any output; the
    contact sheet, `serve` and `similar PATH` still find the files through the private map."""
    arch = tmp_path / ROOT_NAME
    _named_archive(arch)
    out = tmp_path / "out"
    outputs = []
    proc = _run("index", str(arch), "--out", str(out), "--workers", "0")
    outputs += [proc.stdout, proc.stderr]
    sheet = tmp_path / "sheet.html"
    query = arch / NAMES[0] / f"{NAMES[0]}_chest.png"  # `similar PATH`: a file given by its real path
    *texts, similar_out, _ = _run_reads(
        ["info", str(out), "--json"],
        ["search", "chest", "--index", str(out), "--format", "json"],
        ["search", "chest", "--index", str(out), "--format", "table"],
        ["search", "chest", "--index", str(out), "-k", "3", "--format", "html", "--out", str(sheet)],
        ["similar", str(query), "--index", str(out), "--format", "json"],
    )
    outputs += texts
    html = sheet.read_text()
    outputs.append(html)
    private = {out / "anonymise.key"} | set((out / "sources").glob("*"))  # the map back: documented, not shown
    outputs += _decoded_shards(out)
    outputs += [
        p.read_bytes().decode("utf-8", "replace")
        for p in out.rglob("*")
        if p.is_file() and p not in private and p.suffix not in {".parquet", ".faiss", ".npy", ".safetensors"}
    ]
    blob = "\n".join(outputs)
    assert "h-" in blob and "chest radiograph" in blob  # the outputs are there, with hashed sources
    leaked = [part for name in [*NAMES, ROOT_NAME] for part in (name, *name.split("_")) if part in blob]
    assert leaked == []
    assert "root" not in json.loads((out / "archive.json").read_text())
    assert html.count('alt="preview"') == 3  # thumbnails found through the out dir's source map
    errors = [json.loads(line) for p in (out / "errors").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(errors) == 2 and all(e["source"].startswith("h-") for e in errors)
    hits = json.loads(similar_out)
    assert hits[0]["hits"] and all(h["source"].startswith("h-") for h in hits[0]["hits"])
    _serve_draws_thumbnails(out)


def _serve_draws_thumbnails(out: Path) -> None:
    """`serve` finds the private archive root: every image is drawn, none is the grey placeholder."""
    from radretrieve.application.contact_sheet import placeholder, png_bytes
    from radretrieve.application.web.config import ServeConfig
    from radretrieve.application.web.service import WebService

    service = WebService(ServeConfig(out))
    try:
        ids = [int(i) for (i,) in service.catalog.sql("SELECT item_id FROM items")]
        assert len(ids) == 3 and all(service.thumbnail_png(i) != png_bytes(placeholder()) for i in ids)
    finally:
        service.search.close()


def test_scan_errors_about_two_files_name_neither_once_paths_are_hashed(tmp_path):
    """A series spread over two patient-named folders (DuplicateSlices: a PACS pushing one series into two
    studies does the same in the receiving node's spool) and one image stored twice (DuplicateItem): their
    records named the *other* file's path, and only a record's own source is hashed; a source of "." also
    turned every dot of the message into a hash."""
    import shutil

    from pydicom.uid import generate_uid

    from pipelines.scan import scan_archive
    from radretrieve.archive.anonymise import PathHasher, anonymise_scan
    from radretrieve.testing.dicom import US_IMAGE

    arch = tmp_path / "arch"
    write_ct_series(arch / "Doe_Jane_1961" / "CT", 3, seed=1)
    shutil.copytree(arch / "Doe_Jane_1961" / "CT", arch / "Smith_John" / "CT")
    us = {"SOPClassUID": US_IMAGE, "Modality": "US"}
    write_ct_slice(arch / "Roe_Mary" / "us.dcm", np.full((16, 16), 1000), 0.0, generate_uid(), generate_uid(), us)
    shutil.copytree(arch / "Roe_Mary", arch / "Roe_Mary_copy")
    scanned, _ = anonymise_scan(scan_archive(arch, None), PathHasher(b"k" * 32))
    records = [*scanned.errors, *scanned.notes]
    assert sorted(r.error_type for r in records) == ["DuplicateItem", "DuplicateSlices"]
    for rec in records:
        assert rec.source.startswith("h-") and rec.message.startswith(f"{rec.source}: "), rec
        assert not any(name in rec.message for name in ("Doe", "Jane", "Smith", "John", "Roe", "Mary")), rec
        assert rec.message.count("h-") == 1, rec
