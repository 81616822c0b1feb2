"""File names that are not valid UTF-8 (radretrieve.foundation.names): such a file is indexed, not dropped and
not fatal; every string derived from its name that reaches an output (shard rows, errors/, the private source
map) is valid UTF-8, with each undecodable byte spelled `\\xNN`; thumbnails still find the file. Real files with
such names, real `radretrieve index` runs, with anonymised paths (the default) and `--keep-paths`."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from radretrieve.application.contact_sheet import thumbnail
from radretrieve.cli.app import app
from radretrieve.outdir.anonymise import read_sources
from radretrieve.outdir.manifest import read_manifest

runner = CliRunner()


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)  # the name as Python's os functions give it (surrogate-escaped)


def _archive(folder: Path) -> None:
    """A good DICOM file, a DICOM file and a folder and image whose names are not UTF-8, and a broken image."""
    folder.mkdir(parents=True)
    shutil.copy(get_testdata_file("MR_small.dcm"), folder / "good.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / _name(b"bad\xff.dcm"))
    sub = folder / _name(b"dir\xfe")
    sub.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    Image.fromarray(img).save(sub / _name(b"im\xe9.png"), format="PNG")
    (folder / _name(b"broken\xfd.png")).write_bytes(b"not a png")  # fails at the scan
    noise = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(sub / _name(b"cut\xfc.png"), format="PNG")
    data = (sub / _name(b"cut\xfc.png")).read_bytes()
    (sub / _name(b"cut\xfc.png")).write_bytes(data[: len(data) // 2])  # a whole header: fails at the read


EXPECTED = {"good.dcm", "bad\\xff.dcm", "dir\\xfe/im\\xe9.png"}  # the shown forms, spelled by hand


def _index(target: Path, out: Path, *flags: str) -> None:
    res = runner.invoke(app, ["index", str(target), "--out", str(out), "--workers", "0", "-q", *flags])
    assert res.exit_code == 0, res.output


def _rows(out: Path) -> list[dict]:
    return [r for e in read_manifest(out).shards for r in pq.read_table(out / e.file).drop(["embedding"]).to_pylist()]


def _check_utf8(out: Path) -> list[dict]:
    """Every stored text file is strict UTF-8 and holds no surrogate, escaped or not; the errors/ records."""
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            text = path.read_bytes().decode("utf-8")  # strict
            assert "\\udc" not in text.lower(), path.name
            json.dumps(json.loads(text) if path.suffix == ".json" else 0, ensure_ascii=False).encode("utf-8")
    return [json.loads(line) for p in sorted((out / "errors").glob("*.jsonl")) for line in p.read_text().splitlines()]


def _thumbnails_found(out: Path, root: Path, rows: list[dict]) -> list[bool]:
    real = read_sources(out) if read_manifest(out).anonymised else {}
    return [thumbnail(root, real.get(r["item_id"], r["source"]))[1] for r in rows]


@pytest.mark.parametrize("keep", [False, True], ids=["anonymised", "keep-paths"])
def test_a_folder_with_names_that_are_not_utf8_is_indexed(tmp_path, keep):
    arch, out = tmp_path / "arch", tmp_path / "out"
    _archive(arch)
    _index(arch, out, *(["--keep-paths"] if keep else []))
    rows = _rows(out)
    assert len(rows) == 3  # the two files with undecodable names are indexed, not dropped
    for r in rows:
        for v in r.values():
            if isinstance(v, str):
                v.encode("utf-8")  # strict: no surrogate reached a shard
    errors = {e["stage"]: e for e in _check_utf8(out)}
    assert sorted(errors) == ["read", "scan"] and errors["scan"]["error_type"] == "CorruptFile"
    if keep:
        assert {r["source"] for r in rows} == EXPECTED
        assert errors["scan"]["source"] == "broken\\xfd.png"
        assert errors["scan"]["message"].startswith("broken\\xfd.png: ")
        assert errors["read"]["source"] == "dir\\xfe/cut\\xfc.png"
    else:
        # the private map: the way back to the real files (of the item that failed to read too)
        assert set(read_sources(out).values()) == EXPECTED | {"dir\\xfe/cut\\xfc.png"}
        assert all(r["source"].startswith("h-") for r in rows)
        assert all(e["source"].startswith("h-") for e in errors.values())
        assert not [e for e in errors.values() if "broken" in e["message"] or "cut" in e["message"]]
    assert _thumbnails_found(out, arch, rows) == [True, True, True]


@pytest.mark.parametrize("keep", [False, True], ids=["anonymised", "keep-paths"])
def test_a_manifest_row_whose_folder_holds_such_names(tmp_path, keep):
    root = tmp_path / "root"
    _archive(root / "sub")
    with (root / "m.csv").open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["path", "text"], ["sub", "a folder row"]])
    out = tmp_path / "out"
    _index(root / "m.csv", out, *(["--keep-paths"] if keep else []))
    rows = [r for r in _rows(out) if r["kind"] != "report"]  # the row's text is a report of its own
    assert len(rows) == 3
    errors = _check_utf8(out)
    assert sorted(e["stage"] for e in errors) == ["read", "scan"]
    if keep:
        assert {r["source"] for r in rows} == {"sub/" + s for s in EXPECTED}
    assert _thumbnails_found(out, root, rows) == [True, True, True]
