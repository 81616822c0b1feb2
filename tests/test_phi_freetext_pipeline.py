"""Identifiers written in free text, through the whole pipeline: a sidecar report, StudyDescription,
SeriesDescription and BodyPartExamined that carry the header identifiers in other spellings and identifiers no
header carries (staff and relatives' names, record numbers, dates, phone, e-mail, address), indexed by the
real CLI; none may reach a decoded shard column, schema metadata, any file under the out dir (errors/,
manifest, JSON) or the output and log of `index`, `info`, `search`, `reports` and `similar`, while the
radiology words of the same texts do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from radretrieve.outdir.manifest import read_manifest
from radretrieve.testing.dicom import PLANTED_PHI, write_ct_series
from tests.procs import run_all

CLI = [sys.executable, "-m", "radretrieve", "--verbose"]  # --verbose: debug logs are outputs too

# PLANTED_PHI's header: Doe^Jane^Q, MRN-0042-77, born 19610423, accession ACC-98765-X.
REPORT = (
    "CT HEAD. Patient Jane Q. Doe (DOE, JANE), MRN 0042 77, DOB April 23rd, 1961, acc acc98765x. "
    "Discussed with Dr. Alan Whitcombe on 03/04/2021 by telephone (617) 555-0142, e-mail "
    "a.whitcombe@example-hospital.org. Home address: 42 Elm Street, Springfield, IL 62704. SSN 078-05-1120. "
    "Outside MRN E7654321. Mother: Kowalski, Anna. FINDINGS: 3.2 cm mass in the head of the pancreas. "
    "Hemicord lesion with Brown-Sequard syndrome. Chiari I malformation. Crohn disease of the ileum."
)
PLANTED = [  # every identifier above as written, and the parts of it a partial redaction would leave
    "Jane", "DOE", "Doe", "0042 77", "April 23rd", "acc98765x", "Whitcombe", "Alan", "03/04/2021",
    "555-0142", "(617)", "example-hospital", "Elm Street", "IL 62704", "078-05-1120", "E7654321", "Kowalski",
    "Anna", "JANEDOE", "31/12/1999", "55512345", "19610423", "1961-04-23",
]  # fmt: skip
KEPT = ["Brown-Sequard", "Chiari", "Crohn", "head of the pancreas", "AXIAL", "CHEST"]


def _archive(root: Path) -> str:
    attrs = dict(
        PLANTED_PHI,
        StudyDescription="CT HEAD JaneDoe 1961-04-23",
        SeriesDescription="AXIAL Dr. Alan Whitcombe 31/12/1999",
        BodyPartExamined="CHEST 55512345",
    )
    study, _ = write_ct_series(root / "case1", 4, attrs=attrs)
    (root / "case1.txt").write_text(REPORT)
    return study


def _run(*args: str) -> str:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout + proc.stderr


def test_free_text_identifiers_reach_no_output(tmp_path):
    study = _archive(tmp_path / "arch")
    out = tmp_path / "out"
    outputs = [_run("index", str(tmp_path / "arch"), "--out", str(out), "--workers", "0")]
    reads = [  # they only read the out dir: side by side (tests/procs.py)
        ["info", str(out), "--json"],
        ["search", "ct head", "--index", str(out), "--format", "json"],
        ["similar", study, "--index", str(out), "--format", "json"],
        ["reports", study, "--index", str(out), "--format", "json"],
    ]
    for proc in run_all([[*CLI, *args] for args in reads], timeout=300):
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs.append(proc.stdout + proc.stderr)
    for entry in read_manifest(out).shards:
        table = pq.read_table(out / entry.file)
        outputs.append(repr(table.drop(["embedding"]).to_pylist()))
        outputs += [k.decode() + "=" + v.decode() for k, v in (table.schema.metadata or {}).items()]
    binary = {".parquet", ".faiss", ".npy", ".safetensors"}
    outputs += [
        p.read_bytes().decode("utf-8", "replace") for p in out.rglob("*") if p.suffix not in binary and p.is_file()
    ]
    blob = "\n".join(outputs)
    assert [w for w in KEPT if w not in blob] == []  # the texts are there: the check can see them
    assert [s for s in PLANTED if s in blob] == []
