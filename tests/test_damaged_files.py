"""Damaged index files and text towers, `--out` guarding the out dir, and the smaller input problems:
manifest rows that give nothing, non-UTF-8 text, terminal control characters, oversized images, a full disk,
long queries, refused weights."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from indexers import BuildConfig, Searcher, build_indexes
from pipelines.job import IndexOptions, index_archive
from radretrieve.archive import read_item, scan
from radretrieve.foundation.config import PreprocessConfig
from radretrieve.foundation.errors import ModelLoadError, RadRetrieveError
from radretrieve.outdir.text_tower import load_text_tower, save_text_tower, text_tower_path
from radretrieve.outdir.verify import DamagedFile
from radretrieve.synth import synthesize
from radretrieve.testing.shards import SyntheticItems, clustered_vectors, write_out_dir
from tests.procs import run_all

CLI = [sys.executable, "-m", "radretrieve"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_model) -> Path:
    root = tmp_path_factory.mktemp("arch") / "a"
    synthesize(root, studies=6, seed=7)
    out = tmp_path_factory.mktemp("out") / "o"
    index_archive(root, out, tiny_model, IndexOptions(workers=0, progress=False))
    build_indexes(out)
    return out


# -- index files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_faiss_file_is_named_on_load_and_rebuilt_by_build_index(tmp_path, damage):
    dim = 16
    vecs = clustered_vectors(4000, dim, n_clusters=20, seed=3)
    write_out_dir(tmp_path, [SyntheticItems.random(4000, dim, seed=0, kinds=("volume",), vectors=vecs)], dim)
    build_indexes(tmp_path, BuildConfig(index_type="ivf_pq", tune_queries=100), targets=("items",))
    faiss_file = tmp_path / "index" / "volumes.faiss"
    data = bytearray(faiss_file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # same size: a garbled id map or codes, only the checksum can tell
        data[-64] ^= 0xFF
    faiss_file.write_bytes(bytes(data))
    with pytest.raises(DamagedFile) as info:
        Searcher(tmp_path).search(vecs[:2], 5)
    assert str(faiss_file) in str(info.value) and "--rebuild" in str(info.value) and "\n" not in str(info.value)
    infos = build_indexes(tmp_path, BuildConfig(tune_queries=100), targets=("items",))  # not "success, kept"
    hits = Searcher(tmp_path).search(vecs[:2], 5)
    assert [h.item_id for h in hits[0]][:1] and infos["items"].count == 4000


def test_a_damaged_store_file_is_named(tmp_path):
    dim = 16
    vecs = clustered_vectors(4000, dim, n_clusters=20, seed=3)
    write_out_dir(tmp_path, [SyntheticItems.random(4000, dim, seed=0, kinds=("volume",), vectors=vecs)], dim)
    info = build_indexes(tmp_path, BuildConfig(index_type="ivf_pq", tune_queries=100), targets=("items",))["items"]
    ids_file = tmp_path / "index" / info.store.ids
    data = bytearray(ids_file.read_bytes())
    data[-8] ^= 0x01  # one id changed in the re-rank store's map
    ids_file.write_bytes(bytes(data))
    with pytest.raises(DamagedFile, match="ids.npy"):
        Searcher(tmp_path).search(vecs[:2], 5)


# -- the stored text tower -------------------------------------------------------------------------------
def test_a_damaged_text_tower_is_not_used_and_index_rewrites_it(tiny_model, tmp_path, caplog):
    assert save_text_tower(tiny_model, tmp_path) is not None
    path = text_tower_path(tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    with caplog.at_level(logging.WARNING):
        assert load_text_tower(tmp_path, tiny_model.fingerprint) is None
    assert any("damaged" in r.getMessage() for r in caplog.records)
    save_text_tower(tiny_model, tmp_path)  # what `index` does: a damaged tower is written again
    fast = load_text_tower(tmp_path, tiny_model.fingerprint)
    assert fast is not None and torch.allclose(fast.encode_text(["a"]), tiny_model.encode_text(["a"]), atol=1e-5)
    data = bytearray(good)
    data[-4] ^= 0xFF  # one weight changed, the file still parses
    path.write_bytes(bytes(data))
    assert load_text_tower(tmp_path, tiny_model.fingerprint) is None
    save_text_tower(tiny_model, tmp_path)
    assert load_text_tower(tmp_path, tiny_model.fingerprint) is not None


def test_search_falls_back_to_the_model_when_the_tower_is_damaged(indexed, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(indexed, out)
    before = _run("search", "head ct", "--index", str(out), "--format", "json")
    text_tower_path(out).write_bytes(b"garbage")
    after = _run("search", "head ct", "--index", str(out), "--format", "json")
    assert after.returncode == 0 and "damaged" in after.stderr
    assert [h["item_id"] for h in json.loads(after.stdout)[0]["hits"]] == [
        h["item_id"] for h in json.loads(before.stdout)[0]["hits"]
    ]


# -- --out never overwrites the out dir -------------------------------------------------------------------
@pytest.mark.parametrize("target", ["manifest.json", "index/index.json", "shards/x.parquet", "index"])
def test_out_refuses_files_of_the_out_dir(indexed, target):
    before = {p: p.read_bytes() for p in indexed.rglob("*") if p.is_file()}
    proc = _run("search", "ct", "--index", str(indexed), "--format", "json", "--out", str(indexed / target))
    assert proc.returncode == 1 and "refusing to overwrite" in proc.stderr and proc.stderr.count("\n") == 1
    assert {p: p.read_bytes() for p in indexed.rglob("*") if p.is_file()} == before


# -- inputs ----------------------------------------------------------------------------------------------
def test_manifest_rows_that_give_nothing_are_errors_and_counted(tmp_path, tiny_model):
    Image.fromarray(np.zeros((16, 16), np.uint8) + 7).save(tmp_path / "ok.png")
    Image.fromarray(np.eye(16, dtype=np.uint8) * 200).save(tmp_path / "ok2.png")
    Image.fromarray(np.eye(16, dtype=np.uint8) * 200).save(tmp_path / "anim.gif")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "x.webp").write_bytes(b"RIFF....WEBP")
    with (tmp_path / "m.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "text"])
        w.writerows([["ok.png", "a"], ["ok2.png", "b"], ["anim.gif", "c"], ["notes.txt", "d"], ["x.webp", "e"]])
    result = scan(tmp_path / "m.csv")
    assert (result.rows, result.rows_used) == (5, 2)
    assert sorted((e.source, e.error_type) for e in result.errors) == [
        ("anim.gif", "UnsupportedFile"),
        ("notes.txt", "UnsupportedFile"),
        ("x.webp", "UnsupportedFile"),
    ]
    summary = index_archive(tmp_path / "m.csv", tmp_path / "out", tiny_model, IndexOptions(workers=0, progress=False))
    assert "manifest rows used: 2 of 5 (3 in errors/)" in summary.lines()


def test_a_latin1_manifest_is_one_error_line_naming_it(tmp_path):
    (tmp_path / "m.csv").write_bytes("path,text\na.png,Röntgen Thorax\n".encode("latin-1"))
    with pytest.raises(RadRetrieveError) as info:
        scan(tmp_path / "m.csv")
    assert "m.csv" in str(info.value) and "UTF-8" in str(info.value) and "\n" not in str(info.value)


def test_a_latin1_report_is_decoded_with_a_note(tmp_path):
    Image.fromarray(np.eye(16, dtype=np.uint8) * 200).save(tmp_path / "x.png")
    (tmp_path / "x.txt").write_bytes("Röntgen: Lunge frei, Herz normal groß".encode("latin-1"))
    result = scan(tmp_path)
    assert result.studies[0].report == "Röntgen: Lunge frei, Herz normal groß"
    assert [n.error_type for n in result.notes] == ["NotUTF8"]


def test_terminal_control_characters_are_escaped_in_table_output(tmp_path, tiny_model):
    Image.fromarray(np.eye(16, dtype=np.uint8) * 200).save(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text("normal \x1b[2J\x1b[31mALERT\x07 \u202efdp.exe")
    out = tmp_path / "out"
    # kept paths: the study is referred to by its path-derived key (anonymised, it would be a keyed hash)
    index_archive(tmp_path, out, tiny_model, IndexOptions(workers=0, progress=False, anonymise_paths=False))
    build_indexes(out)
    reports = [*CLI, "reports", "file:x.png", "--index", str(out)]
    table, data = (p.stdout for p in run_all([[*reports, "-k", "1"], [*reports, "--format", "json"]], timeout=300))
    assert "\x1b" not in table and "\x07" not in table and "\u202e" not in table
    assert "\\x1b[2J" in table and "\\u202e" in table
    assert "\x1b" in json.loads(data)[0]["hits"][0]["text"]  # JSON keeps the text as it is (escaped by JSON itself)


def test_an_oversized_image_is_shrunk_or_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RADRETRIEVE_MAX_IMAGE_PIXELS", str(100 * 100))
    big = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (400, 1))
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(big).save(tmp_path / "big.png")
    items = {i.source: i for i in scan(tmp_path).items}
    cfg = PreprocessConfig(image_size=32)
    decoded = read_item(items["big.jpg"], tmp_path, cfg)  # JPEG: decoded at 1/4 scale, within the limit
    assert decoded.pixels.shape == (1, 3, 32, 32)
    with pytest.raises(RadRetrieveError) as info:  # PNG has no reduced decode: refused, not loaded
        read_item(items["big.png"], tmp_path, cfg)
    assert info.value.error_type == "ImageTooLarge" and "big.png" in str(info.value)


def test_a_long_query_warns_that_it_was_truncated(indexed):
    proc = _run("search", "lesion " * 200, "--index", str(indexed), "-k", "1")
    assert proc.returncode == 0 and "truncated" in proc.stderr


class NotATensor:
    """Anything that is not a tensor makes a file that only full unpickling could load."""


def test_refused_weights_are_one_line(tmp_path):
    torch.save({"w": torch.zeros(2), "x": NotATensor()}, tmp_path / "evil.pt")
    from radretrieve.models.loading import read_state_dict

    with pytest.raises(ModelLoadError) as info:
        read_state_dict(tmp_path / "evil.pt")
    assert "never unpickled" in str(info.value) and "\n" not in str(info.value) and "\x1b" not in str(info.value)


def _unshare_mount_works() -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not shutil.which("unshare") or not _unshare_mount_works(), reason="needs unshare -rm and tmpfs")
def test_a_full_disk_is_one_line_naming_the_file_before_encoding(tmp_path):
    """A real full disk: a 300 KiB tmpfs in a private mount namespace; the text tower (about 6 MB) is written
    before encoding starts, so the job stops at once, naming it."""
    root = tmp_path / "a"
    synthesize(root, studies=2, seed=1)
    small = tmp_path / "small"
    small.mkdir()
    script = (
        f"mount -t tmpfs -o size=300k tmpfs {small} && "
        f"{sys.executable} -m radretrieve index {root} --out {small}/out --workers 0 --no-index -q"
    )
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no space left" in last and "out/" in last
    assert "Traceback" not in proc.stderr
