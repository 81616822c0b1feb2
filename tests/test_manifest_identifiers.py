"""A manifest exported from a RIS: identifier columns (names, record numbers, birth dates, accession numbers, in
several header spellings) are dropped, redact their own row's text and labels, and are named (never their
values) in the job summary; a record number used as the study key is stored as a keyed hash, paths kept or
not. Real `radretrieve index` runs on a tiny archive; every output file is searched for the planted values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from radretrieve.archive.identifiers import dicom_dates, identifier_kind
from radretrieve.cli.app import app
from radretrieve.outdir.manifest import read_manifest

runner = CliRunner()
HEADER = ["path", "text", "study", "PatientName", "mrn", "DOB", "Accession Number", "patient_id", "finding"]
ROWS = [
    ["a.png", "Jane Doe, MRN 0042 7731, born 23 April 1961: a mass", "MRN-0042-7731", "Doe, Jane", "MRN-0042-7731",
     "1961-04-23", "ACC-99812", "PID-55501", "mass; Jane DOE seen"],
    ["b.png", "follow-up of Jane Doe, accession ACC99813, PID 55501", "MRN-0042-7731", "Doe, Jane",
     "MRN-0042-7731", "1961-04-23", "ACC-99813", "PID-55501", "mass"],
    ["c.png", "Anna Smith (19800411): no finding", "MRN-5551-0093", "SMITH^ANNA", "MRN-5551-0093",
     "04/11/1980", "ACC-31337", "PID-31337", "normal"],
]  # fmt: skip
PLANTED = [
    "Jane", "Doe", "DOE", "Anna", "Smith", "SMITH", "0042-7731", "0042 7731", "00427731", "5551-0093", "55510093",
    "1961-04-23", "23 April 1961", "19610423", "04/11/1980", "19800411", "99812", "99813", "31337", "55501",
]  # fmt: skip
IDENTIFIER_COLUMNS = ["Accession Number", "DOB", "PatientName", "mrn", "patient_id"]


def _archive(root: Path) -> Path:
    root.mkdir(parents=True)
    for i, row in enumerate(ROWS):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 24), dtype=np.uint8)).save(root / row[0])
    with (root / "ris_export.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([HEADER, *ROWS])
    return root / "ris_export.csv"


def _rows(out: Path) -> list[dict]:
    return [r for e in read_manifest(out).shards for r in pq.read_table(out / e.file).drop(["embedding"]).to_pylist()]


def _everything(out: Path, *more: str) -> str:
    """Every output: decoded shard rows, and every file of the out dir but its private key and source map."""
    private = {out / "anonymise.key"} | set((out / "sources").glob("*"))
    files = [p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.is_file() and p not in private]
    return "\n".join([repr(_rows(out)), *files, *more])


def test_identifier_columns_are_dropped_and_redact_their_row(tmp_path):
    manifest = _archive(tmp_path / "arch")
    out = tmp_path / "out"
    res = runner.invoke(app, ["index", str(manifest), "--out", str(out), "--workers", "0", "-q", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["identifier_columns"] == IDENTIFIER_COLUMNS  # names only: what was dropped
    assert json.loads((out / "job.json").read_text())["identifier_columns"] == IDENTIFIER_COLUMNS
    found = runner.invoke(app, ["search", "mass", "--index", str(out), "--format", "json"])
    assert found.exit_code == 0, found.output
    rows = [r for r in _rows(out) if r["kind"] == "image"]
    assert all(json.loads(r["labels"]).keys() == {"finding"} for r in rows)  # the label stays, the ids go
    assert "[REDACTED]" in "".join(r["text"] for r in rows) and "a mass" in "".join(r["text"] for r in rows)
    blob = _everything(out, res.output, found.output)
    assert [s for s in PLANTED if s in blob] == []
    by_file = {r["item_id"]: r["study_key"] for r in rows}
    keys = sorted(by_file.values())
    assert len(set(keys)) == 2 and keys[0] != keys[2]  # the rows of one record number still form one study
    assert all(k.startswith("h-") for k in keys)


def test_a_record_number_as_study_key_is_hashed_with_keep_paths_too(tmp_path):
    manifest = _archive(tmp_path / "arch")
    out = tmp_path / "out"
    res = runner.invoke(app, ["index", str(manifest), "--out", str(out), "--workers", "0", "-q", "--keep-paths"])
    assert res.exit_code == 0, res.output
    assert "warning: --keep-paths" in res.stderr  # the opt-out is said out loud
    rows = [r for r in _rows(out) if r["kind"] == "image"]
    assert sorted(r["source"] for r in rows) == ["a.png", "b.png", "c.png"]  # the names are kept, as asked
    assert all(r["study_key"].startswith("h-") for r in rows)
    assert [s for s in PLANTED if s in _everything(out)] == []


def test_identifier_headers_in_many_spellings():
    ids = ["PatientName", "patient_name", "PATIENT NAME", "patientname", "Patient's Name", "MRN", "mrn", "DOB",
           "Date of Birth", "birth_date", "Accession Number", "AccessionNumber", "acc_no", "PatientID", "patient id",
           "Medical Record Number", "first_name", "LastName", "Referring Physician", "phone"]  # fmt: skip
    labels = ["finding", "modality", "organ", "plane", "case", "region", "VolumeName", "PatientSex", "split_note"]
    assert [h for h in ids if identifier_kind(h) is None] == []
    assert [h for h in labels if identifier_kind(h) is not None] == []
    assert dicom_dates("23/04/1961") == {"19610423"} and dicom_dates("03/04/1961") == {"19610403", "19610304"}
    assert dicom_dates("April 23, 1961") == {"19610423"} == dicom_dates("1961-04-23T00:00:00")


def test_a_json_sidecar_with_identifier_labels(tmp_path):
    """A sidecar's `labels` follow the manifest's rule: identifiers dropped, used to redact the report; its
    `study`, equal to the record number, is marked identifying (hashed at indexing even with --keep-paths)."""
    from radretrieve.archive import scan

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "x.png")
    sidecar = {
        "text": "Doe, Jane (MRN 0042-7731): mass",
        "study": "MRN-0042-7731",
        "labels": {"PatientName": "DOE^JANE", "Medical Record Number": "MRN-0042-7731", "finding": "mass"},
    }
    (tmp_path / "x.json").write_text(json.dumps(sidecar))
    result = scan(tmp_path)
    (item,) = result.items
    assert dict(item.labels) == {"finding": "mass"} and result.identifier_columns == (
        "Medical Record Number",
        "PatientName",
    )
    assert item.text == "[REDACTED] ([REDACTED]): mass" and item.study_origin == "identifier"


# the birth date as whole dates, not the bare year: four given digits occur by chance among the hundreds of digits
# of job.json's timings (about 1e-4 per position) and in random file names; CI once found "1958" so
SIDECAR_PLANTED = ["Kowalczyk", "Agnieszka", "1958-09-11", "19580911", "884213", "Tomasz", "Wojciechowski"]


@pytest.mark.parametrize("keep", [False, True], ids=["anonymised", "keep-paths"])
def test_a_sidecar_study_that_holds_an_identifier_is_hashed(tmp_path, keep):
    """JSON sidecars whose `study` is a name with a birth date, or the DICOM file's own PatientID header, and
    whose labels name a referrer and a record number: neither the study keys nor the labels carry them, paths
    kept or not (a study value holding an identifier is hashed always)."""
    import pydicom
    from pydicom.data import get_testdata_file

    arch = tmp_path / "arch"
    arch.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24), dtype=np.uint8)).save(arch / "x.png")
    sidecar = {
        "study": "Kowalczyk, Agnieszka 1958-09-11",
        "text": "chest film",
        "labels": {"referrer": "Dr Tomasz Wojciechowski", "mrn": "MRN 884213", "finding": "normal"},
    }
    (arch / "x.json").write_text(json.dumps(sidecar))
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID, ds.PatientName = "884213", "Kowalczyk^Agnieszka"
    ds.save_as(arch / "ct.dcm")
    (arch / "ct.json").write_text(json.dumps({"study": "884213", "text": "head ct"}))
    out = tmp_path / "out"
    flags = ["--keep-paths"] if keep else []
    res = runner.invoke(app, ["index", str(arch), "--out", str(out), "--workers", "0", "-q", *flags])
    assert res.exit_code == 0, res.output
    found = runner.invoke(app, ["search", "chest", "--index", str(out), "--format", "json"])
    assert found.exit_code == 0, found.output
    rows = [r for r in _rows(out) if r["kind"] == "image"]
    assert sorted(json.loads(r["labels"]).get("finding", "") for r in rows) == ["", "normal"]
    assert all(set(json.loads(r["labels"])) <= {"finding"} for r in rows)
    assert len({r["study_key"] for r in rows}) == 2 and all(r["study_key"].startswith("h-") for r in rows)
    blob = _everything(out, res.output, found.output)
    assert [s for s in SIDECAR_PLANTED if s in blob] == []
