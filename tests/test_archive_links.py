"""Links out of the archive (radretrieve.archive.links): a link inside an archive to a file or folder outside it
is neither indexed nor drawn as a thumbnail unless `--follow-external-links` asks for it; each skipped link is
recorded (stage `scan`, `ExternalLink`) without its target; links inside the archive keep working; loops of
links never hang. Real files, real symlinks, real `radretrieve index` runs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from typer.testing import CliRunner

from radretrieve.application.contact_sheet import thumbnail
from radretrieve.archive import scan
from radretrieve.archive.scanner import ScanPolicy, walk
from radretrieve.cli.app import app
from radretrieve.outdir.manifest import read_manifest

runner = CliRunner()
TARGET = "ELSEWHERE_TARGET"  # the outside folder's name: must not appear in any record of a skipped link


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24), dtype=np.uint8)).save(path)


def _linked_archive(tmp: Path) -> Path:
    """An archive with two real images, a link to one of them, and links out of it: to a file, through a
    chain of two links, to a folder, to a report; plus loops of file links and of folder links."""
    outside, arch = tmp / TARGET, tmp / "arch"
    _png(outside / "secret.png", 1)
    _png(outside / "folder" / "inner.png", 2)
    (outside / "notes.txt").write_text("SECRET NOTE FROM OUTSIDE")
    os.symlink(outside / "folder", outside / "folder" / "again")  # a loop outside the archive
    _png(arch / "case" / "a.png", 3)
    _png(arch / "b.png", 4)
    os.symlink(arch / "case" / "a.png", arch / "inner_link.png")  # inside the archive: indexed
    os.symlink("../b.png", arch / "case" / "relative_link.png")  # inside, relative: indexed
    os.symlink(outside / "secret.png", arch / "ext_file.png")
    os.symlink(outside / "secret.png", arch / "case" / "hop.png")  # a chain: chain.png -> hop.png -> outside
    os.symlink("case/hop.png", arch / "chain.png")
    os.symlink(outside / "folder", arch / "ext_dir")
    os.symlink(outside / "notes.txt", arch / "b.txt")  # b.png's report, linked in from outside
    os.symlink("loop2.png", arch / "loop1.png")  # file links in a loop
    os.symlink("loop1.png", arch / "loop2.png")
    os.symlink(arch, arch / "case" / "up")  # a folder link back to the root: not walked twice
    return arch


def _index(arch: Path, out: Path, *flags: str) -> list[dict]:
    res = runner.invoke(app, ["index", str(arch), "--out", str(out), "--workers", "0", "-q", *flags])
    assert res.exit_code == 0, res.output
    return [json.loads(line) for p in sorted((out / "errors").glob("*.jsonl")) for line in p.read_text().splitlines()]


def _sources(out: Path) -> set[str]:
    return {r["source"] for e in read_manifest(out).shards for r in pq.read_table(out / e.file).to_pylist()}


def test_links_out_of_the_archive_are_skipped_and_recorded(tmp_path):
    arch = _linked_archive(tmp_path)
    out = tmp_path / "out"
    errors = _index(arch, out, "--keep-paths")  # raw paths, so the records can be checked by name
    external = {e["source"] for e in errors if e["error_type"] == "ExternalLink"}
    assert external == {"ext_file.png", "chain.png", "case/hop.png", "ext_dir", "b.txt"}
    assert all(e["stage"] == "scan" for e in errors if e["error_type"] == "ExternalLink")
    assert {e["source"] for e in errors if e["error_type"] != "ExternalLink"} == {"loop1.png", "loop2.png"}
    assert _sources(out) == {"case/a.png", "b.png", "inner_link.png", "case/relative_link.png"}
    stored = "\n".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    stored += repr([pq.read_table(out / e.file).drop(["embedding"]).to_pylist() for e in read_manifest(out).shards])
    assert TARGET not in stored and "SECRET NOTE" not in stored  # neither the target's name nor its text


def test_follow_external_links_indexes_them_and_a_loop_ends(tmp_path):
    arch = _linked_archive(tmp_path)
    out = tmp_path / "out"
    errors = _index(arch, out, "--keep-paths", "--follow-external-links")
    assert not [e for e in errors if e["error_type"] == "ExternalLink"]
    sources = _sources(out)
    assert {"ext_file.png", "chain.png", "ext_dir/inner.png"} <= sources
    assert not any("again" in s for s in sources)  # the loop outside was walked once


def test_a_manifest_row_may_not_lead_out_of_its_allowed_root(tmp_path):
    """A manifest's allowed root is its folder; a row that names a place outside it (an absolute path) makes
    that place the row's allowed root. A link leading out of either is skipped."""
    arch = _linked_archive(tmp_path)
    other = tmp_path / "other_dataset"
    _png(other / "named.png", 5)
    _png(other / "series" / "s1.png", 6)
    os.symlink(tmp_path / TARGET / "secret.png", other / "series" / "leak.png")
    with (arch / "m.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "text"])
        w.writerows([["b.png", "inside"], ["ext_file.png", "link out"], ["ext_dir", "folder link out"]])
        w.writerows([[str(other / "named.png"), "named outside"], [str(other / "series"), "folder outside"]])
    result = scan(arch / "m.csv")
    walked = Path(os.path.relpath(other / "series" / "s1.png", arch)).as_posix()  # found under a folder row
    assert sorted(i.source for i in result.items) == sorted(["b.png", (other / "named.png").as_posix(), walked])
    skipped = {Path(e.source).name for e in result.errors if e.error_type == "ExternalLink"}
    assert skipped == {"ext_file.png", "ext_dir", "leak.png"}
    assert all(TARGET not in e.message for e in result.errors)


def test_walk_never_descends_a_loop(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "up")  # inside: not walked
    outside = tmp_path / "x"
    (outside / "y").mkdir(parents=True)
    (outside / "y" / "f.png").write_bytes(b"")
    os.symlink(outside, outside / "y" / "loop")
    os.symlink(outside, tmp_path / "a" / "out")
    assert walk(tmp_path / "a") == ["out"]  # recorded by the scan as an ExternalLink
    assert walk(tmp_path / "a", follow_links=True) == ["out/y/f.png"]
    skipped = scan(tmp_path / "a").errors
    assert [(e.source, e.error_type) for e in skipped] == [("out", "ExternalLink")]
    assert scan(tmp_path / "a", policy=ScanPolicy(follow_links=True)).errors[0].error_type == "EmptyFile"


def test_previews_are_never_drawn_from_outside_the_root(tmp_path):
    """An indexed file replaced by a link to outside after indexing: the contact sheet (and `serve`, which
    draws with the same `thumbnail`) shows the placeholder, not the outside pixels."""
    arch = _linked_archive(tmp_path)
    out = tmp_path / "out"
    _index(arch, out)  # default: anonymised paths, previews through the private source map
    assert thumbnail(arch, "case/a.png")[1] is True
    assert thumbnail(arch, "ext_file.png")[1] is False
    assert thumbnail(arch, "ext_dir/inner.png")[1] is False
    sheet = tmp_path / "sheet.html"
    args = ["search", "x", "--index", str(out), "-k", "4", "--format", "html", "--out", str(sheet)]
    assert runner.invoke(app, args).exit_code == 0
    assert sheet.read_text().count('alt="preview"') == 4
    (arch / "b.png").unlink()
    os.symlink(tmp_path / TARGET / "secret.png", arch / "b.png")  # swapped after indexing
    assert runner.invoke(app, args).exit_code == 0
    html = sheet.read_text()
    assert html.count('alt="preview"') == 2 and html.count('alt="no preview"') == 2  # b.png and its link
