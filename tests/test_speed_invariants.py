"""What the speed work must not change: the same item ids, and embeddings equal (within 1e-6) to each item's
and each report's own forward pass, whatever the batching, the overlap of reports with images on the encoder
thread, the order in which tasks finish, or readers started before the model.

The references are computed here, independently of the job: ids from the documented key rules
(docs/guide/your-data.md, "Item ids") applied to the files on disk, embeddings from the model called on one
item or one report at a time. A small awkward batch (7 slices) and two studies per task make many encoder
calls, report calls between image batches, and several shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import torch

from pipelines.job import IndexOptions, index_archive
from radretrieve.archive import read_item, scan
from radretrieve.datasets.samples import sample_data_dir
from radretrieve.datasets.vqa_rad import load_vqa_rad
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.ids import item_id
from radretrieve.synth import synthesize

VQA_RAD = sample_data_dir() / "vqa-rad"
ATOL = 1e-6


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five captioned VQA-RAD JPEGs (each its own study, the caption its report) beside three synthetic
    studies: two DICOM CT series and an MR NIfTI volume, each with a JSON sidecar report."""
    root = tmp_path_factory.mktemp("speed") / "archive"
    synthesize(root, studies=3, seed=3, image_size=32)
    (root / "manifest.csv").unlink()  # the folder is the archive
    (root / "jpeg").mkdir()
    for im in load_vqa_rad(VQA_RAD)[:5]:
        shutil.copyfile(VQA_RAD / "images" / im.image_name, root / "jpeg" / im.image_name)
        (root / "jpeg" / (Path(im.image_name).stem + ".txt")).write_text(im.text, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def indexed(archive: Path, tiny_model, tmp_path_factory: pytest.TempPathFactory) -> dict[int, np.ndarray]:
    """item id -> embedding, from the shards of one job (one reader, 7 slices per batch, 2 studies per task)."""
    out = tmp_path_factory.mktemp("speed") / "out"
    options = IndexOptions(workers=1, batch_size=7, studies_per_task=2, anonymise_paths=False, progress=False)
    summary = index_archive(archive, out, tiny_model, options)
    assert summary.tasks == 4 and not summary.errors
    rows: dict[int, np.ndarray] = {}
    for shard in sorted((out / "shards").glob("*.parquet")):
        table = pq.read_table(shard, columns=["item_id", "embedding"]).to_pydict()
        for i, emb in zip(table["item_id"], table["embedding"]):
            assert i not in rows, f"item {i} written twice"
            rows[i] = np.asarray(emb, dtype=np.float32)
    return rows


def expected_ids(root: Path) -> dict[str, set[int]]:
    """Item ids by kind, from the files on disk and the documented key rules (not from the scanner)."""
    images, reports = set(), set()
    for jpg in sorted((root / "jpeg").glob("*.jpg")):
        key = f"file:jpeg/{jpg.name}"
        images.add(item_id(key))
        reports.add(item_id(f"report:{key}"))  # a flat folder of x.jpg + x.txt: the study is the item
    for sidecar in sorted(root.glob("*/*.json")):
        reports.add(item_id("report:" + json.loads(sidecar.read_text())["study"]))
        series = sidecar.with_suffix("")
        if series.is_dir():  # a DICOM series: keyed by its SeriesInstanceUID
            uid = pydicom.dcmread(next(series.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID
            images.add(item_id(f"dicom-series:{uid}"))
    for nifti in sorted(root.glob("*/*.nii.gz")):
        images.add(item_id(f"file:{nifti.relative_to(root).as_posix()}"))
    return {"images": images, "reports": reports}


def report_texts(root: Path) -> dict[int, str]:
    """Report id -> its text as written beside the files."""
    texts = {item_id(f"report:file:jpeg/{p.stem}.jpg"): p.read_text(encoding="utf-8") for p in root.glob("jpeg/*.txt")}
    for sidecar in root.glob("*/*.json"):
        meta = json.loads(sidecar.read_text())
        texts[item_id("report:" + meta["study"])] = meta["text"]
    return texts


def test_the_job_writes_exactly_the_expected_ids(archive, indexed):
    want = expected_ids(archive)
    assert len(want["images"]) == 8 and len(want["reports"]) == 8
    assert set(indexed) == want["images"] | want["reports"]


def test_image_and_volume_embeddings_equal_each_items_own_forward_pass(archive, indexed, tiny_model):
    result = scan(archive)
    assert {it.kind for it in result.items} == {"image", "volume"}
    with torch.inference_mode():
        for item in result.items:
            pixels = torch.from_numpy(read_item(item, result.root, tiny_model.config.preprocess).pixels)
            alone = tiny_model.encode_mixed([pixels], [item.kind == "volume"]).numpy()[0]
            np.testing.assert_allclose(indexed[item.item_id], alone, rtol=0, atol=ATOL, err_msg=item.source)


def test_report_embeddings_equal_each_reports_own_forward_pass(archive, indexed, tiny_model):
    texts = report_texts(archive)
    assert len(texts) == 8
    with torch.inference_mode():
        for rid, text in texts.items():
            alone = tiny_model.encode_text([text]).numpy()[0]
            np.testing.assert_allclose(indexed[rid], alone, rtol=0, atol=ATOL, err_msg=text[:40])


def test_index_timings_file_has_every_step_in_order(archive, tmp_path):
    """`radretrieve index --timings FILE` (the end-to-end benchmark's stage split): start-up marks in the order
    the steps run, and the job's seconds for every stage, the report texts' own among them."""
    timings = tmp_path / "timings.json"
    cmd = [sys.executable, "-m", "radretrieve", "index", str(archive), "--out", str(tmp_path / "out")]
    cmd += ["--workers", "1", "--no-index", "-q", "--json", "--timings", str(timings)]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["items"] == 8  # the whole summary came out before the fast exit
    got = json.loads(timings.read_text())
    order = ["command", "prepared", "readers", "imports", "model", "job", "end"]
    assert list(got["marks"]) == order
    stamps = [started] + [got["marks"][k] for k in order] + [time.time()]
    assert stamps == sorted(stamps)
    stages = got["stage_seconds"]
    for key in ("scan", "plan", "run", "text_tower", "text_tower_wait", "decode", "decode_wait", "write"):
        assert stages[key] >= 0, key
    assert stages["encode"] > 0 and stages["text_encode"] > 0


def test_index_timings_refuses_a_file_it_would_destroy_before_the_job(archive, tmp_path):
    """`--timings` replaces its file whole at the job's end: a path in the archive (an image), in the out dir
    or of a user's own file is refused at once, one line naming it, the file untouched; an earlier timings file
    may be replaced."""
    image = next(archive.rglob("*.dcm"))
    before = image.read_bytes()
    cmd = [sys.executable, "-m", "radretrieve", "index", str(archive), "--out", str(tmp_path / "out")]
    proc = subprocess.run([*cmd, "--timings", str(image)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"--timings {image}: is inside the archive" in proc.stderr, proc.stderr
    assert image.read_bytes() == before and not (tmp_path / "out").exists()  # refused before the job ran

    from radretrieve.application.indexing import check_timings_path

    notes = tmp_path / "notes.txt"
    notes.write_text("mine", encoding="utf-8")
    refused = {
        tmp_path / "out" / "job.json": "is inside the out dir",
        notes: "exists and is not a timings file",
        tmp_path / "no-such-folder" / "t.json": "its folder does not exist",
        tmp_path: "exists and is not a timings file",
    }
    for path, why in refused.items():
        with pytest.raises(RadRetrieveError, match=why):
            check_timings_path(path, archive, tmp_path / "out")
    earlier = tmp_path / "timings.json"
    earlier.write_text(json.dumps({"marks": {}, "stage_seconds": {}}), encoding="utf-8")
    check_timings_path(earlier, archive, tmp_path / "out")  # a rerun's: replaced
    check_timings_path(tmp_path / "new.json", "dicomweb+http://127.0.0.1:1/dicom-web", tmp_path / "out")


def test_start_readers_starts_every_reader_now():
    """The readers start when asked (their imports overlap the model load), not one by one as work arrives."""
    from pipelines.local import start_readers

    pool = start_readers(2)
    try:
        deadline = time.monotonic() + 10  # started by now even on a busy machine
        while len(pool.pids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pool.pids()) == 2
    finally:
        pool.close()


EXIT_PROBE = """
import atexit, pathlib, sys, threading
mode, flag = sys.argv[1], pathlib.Path(sys.argv[2])
atexit.register(flag.write_text, "exit handlers ran")
def late():
    __import__("time").sleep(0.5)
    flag.with_suffix(".thread").write_text("done")
if mode == "thread":  # a thread nobody joined: the normal exit waits for it
    threading.Thread(target=late).start()
sys.argv = ["radretrieve", "models", "--json"]
from radretrieve.cli.app import entry
entry()
"""


@pytest.mark.parametrize("mode", ["plain", "thread"])
def test_the_fast_exit_runs_exit_handlers_flushes_output_and_waits_for_threads(tmp_path, mode):
    flag = tmp_path / "flag.txt"
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_PROBE, mode, str(flag)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert any(m["name"] == "radclip-tiny" for m in json.loads(proc.stdout))  # stdout (a pipe) was flushed
    assert flag.read_text() == "exit handlers ran"
    if mode == "thread":
        assert flag.with_suffix(".thread").read_text() == "done"


NATIVE_PROBE = """
import ctypes, sys
ctypes.CDLL(None).printf(b"native line\\n")  # as FAISS, OpenMP or torch write: C stdio, buffered into a pipe
sys.argv = ["radretrieve", "models", "--json"]
from radretrieve.cli.app import entry
entry()
"""


def test_the_fast_exit_keeps_what_a_native_library_wrote_to_a_pipe():
    """Output a C library buffered (printf into a pipe is fully buffered, unless PYTHONUNBUFFERED makes C stdio
    unbuffered too, as it is in some test runners) comes out, as it does from a normal exit."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-c", NATIVE_PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "native line\n" in proc.stdout, proc.stdout[:200]


def test_the_fast_exit_keeps_the_error_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "radretrieve", "index", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.strip().endswith("archive not found")


def test_header_reads_with_numbered_tags_equal_a_full_read(archive):
    """The header scan reads its allow-list by tag number (looked up once): the same headers, identifiers
    included, as pydicom's full read of each file through the same allow-listed fields."""
    import pydicom
    from pydicom.data import get_testdata_files

    from radretrieve.archive.dicom_header import _header, read_header

    files = sorted(archive.glob("*/*/*.dcm"))[:20] + [Path(f) for f in get_testdata_files("CT_small.dcm")]
    files += [Path(f) for f in get_testdata_files("MR_small.dcm")]
    assert len(files) > 10
    for path in files:
        full = pydicom.dcmread(path, stop_before_pixels=True)
        want = _header(full, path.name, int(full.Rows), int(full.Columns))
        got = read_header(path, path.name)
        assert got == want and got.patient == want.patient, path.name


def test_the_demo_synthesis_says_how_far_it_is(tmp_path):
    """The demo's first step (minutes on a slow machine) prints a line at most every 10 s and one at the end."""
    from radretrieve.application.demo import Every

    now = [0.0]
    lines: list[str] = []
    tick = Every(10.0, 5, lines.append, clock=lambda: now[0])
    for n, t in enumerate([3.0, 11.0, 15.0, 22.0, 23.0], start=1):
        now[0] = t
        tick(n)
    assert lines == ["  2/5 studies written, 11 s", "  4/5 studies written, 22 s", "  5/5 studies written, 23 s"]
    seen: list[int] = []
    synthesize(tmp_path / "a", studies=3, seed=0, image_size=32, on_study=seen.append)
    assert seen == [1, 2, 3]
