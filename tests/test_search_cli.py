"""The search commands end to end: build-index, search, reports, similar; JSON/table/HTML; one-line errors.

One out dir for the module: a synthetic archive of 8 studies, radclip-tiny overfitted on its (image,
report) pairs so a report's text finds its study, indexed and saved with the model. Success paths run
through Typer's CliRunner (in process, fast); errors run through `main()` (the one error boundary); two
runs go through `python -m radretrieve` as a user would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from typer.testing import CliRunner

from radretrieve.cli.app import app, main
from tests.browser import HEADLESS_FLAGS, chromium

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


# -- fixture: an out dir whose model has learnt the 8 studies ----------------------------------------------
def overfit_tiny(items: list, root: Path, max_steps: int = 200):
    """radclip-tiny trained until every report text retrieves its own item (text -> image argmax).

    The image tower's trunk runs once (no grad) and only its output projection and the slice pooling
    adapter train, against frozen text embeddings, with symmetric InfoNCE: seconds on 2 CPU cores.
    """
    import torch
    import torch.nn.functional as F

    from radretrieve import load_model
    from radretrieve.archive import read_item

    torch.manual_seed(0)
    model = load_model("radclip-tiny", device="cpu")
    cfg = model.config.preprocess
    pixels = [torch.from_numpy(read_item(item, root, cfg).pixels) for item in items]
    is_vol = [item.kind == "volume" for item in items]
    visual, proj = model.clip.visual, model.clip.visual.proj
    with torch.no_grad():
        text = F.normalize(model.clip.encode_text(model.tokenizer([i.text for i in items])).float(), dim=-1)
        visual.proj = None  # the trunk's pooled features, before the trainable projection
        feats = torch.cat([visual(p).float() for p in pixels])
        visual.proj = proj
    counts = [p.shape[0] for p in pixels]
    vol_idx = [i for i, v in enumerate(is_vol) if v]
    img_idx = [i for i, v in enumerate(is_vol) if not v]
    labels = torch.arange(len(items))
    opt = torch.optim.AdamW([proj, *model.adapter.parameters()], lr=2e-3)
    model.train()
    for _ in range(max_steps):
        groups = torch.split(F.normalize(feats @ proj, dim=-1), counts)
        pooled = model.pool(torch.cat([groups[i] for i in vol_idx]), [counts[i] for i in vol_idx])
        emb = torch.zeros(len(items), pooled.shape[1])
        emb = emb.index_copy(0, torch.tensor(vol_idx), pooled)
        emb = emb.index_copy(0, torch.tensor(img_idx), torch.stack([groups[i][0] for i in img_idx]))
        logits = emb @ text.T / 0.02
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        if bool((logits.argmax(0) == labels).all()) and loss.item() < 0.3:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def env(serve_env):
    """The 8-study out dir indexed with radclip-tiny overfitted on it (tests/serve_env.py), shared with the
    `serve` tests: one build per session."""
    return serve_env


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """`radretrieve ARGS` in process through the real error boundary: (exit code, stdout, stderr)."""
    with mock.patch.object(sys, "argv", ["radretrieve", *args]):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def search_json(*args: str) -> list[dict]:
    return json.loads(invoke(*args, "--format", "json").stdout)


# -- search ----------------------------------------------------------------------------------------------
def test_each_report_text_finds_its_study_in_top5_end_to_end(env):
    """Issue 5's end-to-end check, as a user runs it: `python -m radretrieve search --query-file`."""
    texts = [" ".join(item.text.split()) for item in env["items"]]
    qfile = env["tmp"] / "queries.txt"
    qfile.write_text("\n".join(texts) + "\n", encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "radretrieve",
        "search",
        "--query-file",
        str(qfile),
        "--index",
        str(env["out"]),
        "-k",
        "5",
        "--format",
        "json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [r["query"] for r in results] == texts
    for item, result in zip(env["items"], results):
        assert len(result["hits"]) == 5
        assert item.study_key in [h["study_key"] for h in result["hits"]], (item.study_key, result["hits"])


def test_search_json_equals_searcher_on_encoded_text(env):
    from indexers.search import Searcher

    query = "CT of the abdomen with a hypodense lesion"
    got = search_json("search", query, "--index", str(env["out"]), "-k", "6", "--mode", "vector")
    searcher = Searcher(env["out"], fingerprint=env["model"].fingerprint)
    try:
        want = searcher.search(env["model"].encode_text([query]).numpy(), k=6)[0]
    finally:
        searcher.close()
    assert got[0]["query"] == query
    hits = got[0]["hits"]
    assert [h["item_id"] for h in hits] == [h.item_id for h in want]
    np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in want], atol=1e-5)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5, 6]
    assert set(hits[0]) == {
        "rank",
        "score",
        "item_id",
        "kind",
        "study_key",
        "source",
        "modality",
        "body_part",
        "description",
        "text",
        "labels",
    }
    assert hits[0]["source"] == want[0].source and hits[0]["labels"] == dict(want[0].labels)


def test_search_table_has_the_columns_and_k_rows(env):
    columns = ["rank", "score", "study", "modality", "description", "path"]
    for mode in ("vector", "hybrid", None):  # None: the default, hybrid (the out dir has a full-text index)
        args = ["--mode", mode] if mode else []
        lines = invoke("search", "chest radiograph", "--index", str(env["out"]), "-k", "3", *args).stdout.splitlines()
        assert lines[0].split() == (columns if mode == "vector" else [*columns, "found", "by"])
        assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
        sources = {i.source for i in env["items"]}
        assert all(any(part in sources for part in line.split()) for line in lines[1:])


def test_where_and_kind_filters_are_honoured(env):
    out = str(env["out"])
    ct = search_json("search", "abdomen", "--index", out, "-k", "10", "--where", "modality = 'CT'")[0]["hits"]
    n_ct = sum(i.modality == "CT" for i in env["items"])
    assert len(ct) == n_ct >= 2 and all(h["modality"] == "CT" for h in ct)
    images = search_json("search", "abdomen", "--index", out, "-k", "10", "--kind", "image")[0]["hits"]
    assert len(images) == sum(i.kind == "image" for i in env["items"]) and {h["kind"] for h in images} == {"image"}
    where = "json_extract_string(labels, '$.region') = 'chest'"
    chest = search_json("search", "lesion", "--index", out, "--kind", "volume", "--where", where)[0]["hits"]
    want = {i.item_id for i in env["items"] if i.kind == "volume" and i.labels.get("region") == "chest"}
    assert {h["item_id"] for h in chest} == want and want


# -- reports and similar ---------------------------------------------------------------------------------
def test_reports_for_item_id_and_study_key(env):
    out = str(env["out"])
    item = next(i for i in env["items"] if i.kind == "volume")
    for ref in (str(item.item_id), item.study_key):
        hits = search_json("reports", ref, "--index", out, "-k", "8")[0]["hits"]
        assert len(hits) == 8 and {h["kind"] for h in hits} == {"report"}
        assert item.text in [h["text"] for h in hits]
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert item.study_key in [h["study_key"] for h in hits[:3]]  # the overfitted model pairs them
    assert len(search_json("reports", item.study_key, "--index", out)[0]["hits"]) == 5  # default k


def test_similar_one_hit_per_study_and_query_excluded(env):
    study = env["items"][0].study_key
    hits = search_json("similar", study, "--index", str(env["out"]), "-k", "10")[0]["hits"]
    studies = [h["study_key"] for h in hits]
    assert len(studies) == len(set(studies)) == len({i.study_key for i in env["items"]}) - 1
    assert study not in studies
    ct = search_json("similar", study, "--index", str(env["out"]), "--where", "modality = 'CT'", "--kind", "volume")
    want = {i.study_key for i in env["items"] if i.modality == "CT" and i.kind == "volume"} - {study}
    assert {h["study_key"] for h in ct[0]["hits"]} == want and {h["modality"] for h in ct[0]["hits"]} == {"CT"}


@pytest.mark.parametrize("rel", ["s0-00001/mr.nii.gz", "s0-00003/xr.dcm", "s0-00002/ct"])
def test_path_query_is_encoded_on_the_fly_and_finds_its_source(env, rel):
    """A copy of an archived NIfTI, DICOM file or series folder is a new study that matches its original."""
    src = env["arch"] / rel
    dst = env["tmp"] / "queries" / rel.replace("/", "_")
    dst.parent.mkdir(exist_ok=True)
    if not dst.exists():
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    top = search_json("similar", str(dst), "--index", str(env["out"]), "-k", "3")[0]["hits"][0]
    assert top["study_key"] == rel.split("/")[0] and top["source"] == rel
    assert top["score"] > 0.99


# -- HTML contact sheet ----------------------------------------------------------------------------------
class _Sheet(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures = 0
        self.thumbs: list[list[dict]] = []  # per figure, its <img> attributes
        self.refs: list[str] = []  # every src/href in the document

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "figure" and "hit" in (a.get("class") or "").split():
            self.figures += 1
            self.thumbs.append([])
        if tag == "img" and self.thumbs:
            self.thumbs[-1].append(a)


def parse_sheet(path: Path) -> _Sheet:
    sheet = _Sheet()
    sheet.feed(path.read_text(encoding="utf-8"))
    return sheet


def png_of(uri: str):
    import base64
    import io

    from PIL import Image

    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_html_sheet_one_thumbnail_per_hit_escaped_and_offline(env):
    path = env["tmp"] / "sheet.html"
    query = "CT <b>abdomen</b> & lesion"
    invoke("search", query, "--index", str(env["out"]), "-k", "5", "--format", "html", "--out", str(path))
    text = path.read_text(encoding="utf-8")
    assert "CT &lt;b&gt;abdomen&lt;/b&gt; &amp; lesion" in text and "<b>abdomen</b>" not in text
    sheet = parse_sheet(path)
    assert sheet.figures == 5 and [len(t) for t in sheet.thumbs] == [1] * 5
    assert all(ref.startswith("data:image/png;base64,") for ref in sheet.refs)  # nothing to fetch
    hits = search_json("search", query, "--index", str(env["out"]), "-k", "5")[0]["hits"]
    for hit, (img,) in zip(hits, sheet.thumbs):
        assert img["alt"] == "preview", hit["source"]  # found in the archive (OUT/archive.json)
        png = png_of(img["src"])
        if hit["kind"] == "volume":  # three sampled slices side by side
            assert png.width > 2.5 * png.height
        assert len(np.unique(np.asarray(png))) > 10  # a windowed image, not a flat tile


def test_html_reports_borrow_study_thumbnail_and_missing_archive_gives_placeholders(env):
    path = env["tmp"] / "reports.html"
    study = env["items"][0].study_key
    invoke("reports", study, "--index", str(env["out"]), "-k", "3", "--format", "html", "--out", str(path))
    sheet = parse_sheet(path)
    assert sheet.figures == 3 and all(len(t) == 1 and t[0]["alt"] == "preview" for t in sheet.thumbs)
    empty = env["tmp"] / "empty_archive"
    empty.mkdir(exist_ok=True)
    invoke(
        "similar",
        study,
        "--index",
        str(env["out"]),
        "-k",
        "4",
        "--format",
        "html",
        "--out",
        str(path),
        "--archive",
        str(empty),
    )
    sheet = parse_sheet(path)
    assert sheet.figures == 4 and all(len(t) == 1 and t[0]["alt"] == "no preview" for t in sheet.thumbs)


def test_html_sheet_renders_in_headless_chromium(env, tmp_path):
    browser = chromium()
    from PIL import Image

    path = tmp_path / "sheet.html"
    invoke("search", "abdomen", "--index", str(env["out"]), "-k", "8", "--format", "html", "--out", str(path))
    shot = tmp_path / "shot.png"
    cmd = [
        str(browser),
        *HEADLESS_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        path.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (1600, 1200)
    assert len(np.unique(img)) >= 64  # thumbnails and text, not a blank page
    top = img[:800]  # where the figures are: dark thumbnails on a light page
    assert (top < 60).mean() > 0.02 and (top > 200).mean() > 0.2


# -- build-index -----------------------------------------------------------------------------------------
def test_build_index_command_rebuilds(env, tmp_path):
    out = str(tmp_path / "out")  # a copy: the session's out dir is served by a running server meanwhile
    shutil.copytree(env["out"], out)
    lines = invoke("build-index", out, "--rebuild", "--max-memory", "512M").stdout.splitlines()
    n_items = len(env["items"])
    assert lines == [
        f"index items: flat, {n_items} vectors, recall@10 image 1.000, text 1.000",
        f"index reports: flat, {n_items} vectors, recall@10 text 1.000, image 1.000",
    ]


def test_parse_size():
    from radretrieve.cli.search_cmd import parse_size

    assert parse_size("4G") == 4 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1000") == 1000
    assert parse_size("1.5k") == 1536


# -- errors: one line on stderr, exit code 1 -------------------------------------------------------------
ERRORS = [
    (["search", "x", "--index", "{tmp}/no_such_dir"], "no such directory"),
    (["search", "x", "--index", "{out}", "--model", "radclip-tiny"], "fingerprint"),
    (["search", "x", "--index", "{out}", "--where", "no_such_column = 1"], "bad --where"),
    (["search", "x", "--index", "{out}", "--where", "modality = 'CT'; DROP VIEW items"], "bad --where"),
    (["search", "--query-file", "{tmp}/no_such_file.txt", "--index", "{out}"], "--query-file"),
    (["search", "x", "--index", "{out}", "-k", "0"], "-k must be between 1 and 10000"),
    (["search", "x", "--index", "{out}", "-k", "10001"], "-k must be between 1 and 10000"),
    (["search", "x", "--index", "{out}", "--format", "pdf"], "--format"),
    (["search", "x", "--index", "{out}", "--kind", "report"], "--kind"),
    (["search", "--index", "{out}"], "query TEXT"),
    (["reports", "no-such-study", "--index", "{out}"], "not an item id"),
    (["similar", "s0-00000", "--index", "{out}", "-k", "-3"], "-k must be between"),
    (["build-index", "{tmp}/no_such_dir"], "no such directory"),
    (["build-index", "{out}", "--max-memory", "lots"], "--max-memory"),
]


@pytest.mark.parametrize("args,needle", ERRORS, ids=[f"{a[0]}-{n}" for a, n in ERRORS])
def test_errors_are_one_line_and_exit_1(env, capsys, args, needle):
    args = [a.format(tmp=env["tmp"], out=env["out"]) for a in args]
    code, out, err = run_main(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 1 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_error_from_the_console_entry_point(env):
    cmd = [sys.executable, "-m", "radretrieve", "search", "x", "--index", str(env["out"]), "--where", "nope ="]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith("error: bad --where"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
