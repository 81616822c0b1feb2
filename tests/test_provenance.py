"""Honest results (issue 21): every model knows where its weights came from, and every command says so.

One tiny PNG archive with a manifest, indexed twice through the CLI: with `radclip-tiny` (random weights:
untrained) and with a model trained on it for one epoch by `radretrieve.training.train` (trained). Each of the
seven commands runs on both: exactly one warning line for the untrained model, none for the trained one, and its
JSON carries `"model": {"name", "trained", "kind", ...}`. The web page is checked in Chromium against a real
`serve --workers 2` of the untrained out dir (banner) and the session's server of a trained one (no banner).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from radretrieve.cli.app import app
from radretrieve.models.provenance import PULL_HINT, Provenance, read_provenance, reset_warnings
from tests.serve_env import REPO, Server

runner = CliRunner()
TEXTS = ("nodule in the left lung", "fracture of the right femur", "normal chest", "mass in the liver")
WARNING_MARK = "is untrained (random weights)"
QUERY = "nodule in the lung"
TASK = "organ=lung,femur,liver"


@contextlib.contextmanager
def untrained_warnings():
    """The untrained-model warning lines logged inside the block (records of level WARNING and above)."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if WARNING_MARK in record.getMessage():
                assert record.levelno >= logging.WARNING
                lines.append(record.getMessage())

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("radretrieve")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def cli(*args: str) -> tuple[str, list[str]]:
    """`radretrieve ARGS` in process: (stdout, the untrained warnings it logged)."""
    with untrained_warnings() as lines:
        result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.stdout, lines


def _manifest(root: Path) -> Path:
    """Four PNG images with a report text each, listed in a CSV manifest."""
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(21)
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "text", "study"])
        for i, text in enumerate(TEXTS):
            Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(root / f"im{i}.png")
            writer.writerow([f"im{i}.png", text, f"s{i}"])
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The archive, the trained model directory, and both out dirs with the warnings their `index` logged."""
    from radretrieve.training import DataConfig, ImageStageConfig, TrainConfig, VolumeStageConfig, train

    tmp = tmp_path_factory.mktemp("provenance")
    manifest = _manifest(tmp / "archive")
    cfg = TrainConfig(
        data=DataConfig(val_fraction=0.0),
        image_stage=ImageStageConfig(epochs=1, batch_size=4, warmup_fraction=0.0),
        volume_stage=VolumeStageConfig(epochs=0),
    )
    result = train(cfg, manifest, tmp / "trained", "radclip-tiny", device="cpu")
    outs, warned = {}, {}
    for name, model in (("untrained", "radclip-tiny"), ("trained", str(tmp / "trained"))):
        outs[name] = tmp / f"out-{name}"
        args = ("index", str(manifest), "--out", str(outs[name]), "--model", model, "--workers", "0", "-q", "--json")
        stdout, warned[name] = cli(*args)
        summary = json.loads(stdout)  # the summary: the warning is on stderr, never in the JSON
        assert summary["model"]["trained"] is (name == "trained") and summary["rows"]["image"] == len(TEXTS)
    return {"tmp": tmp, "manifest": manifest, "train": result, "out": outs, "index_warnings": warned}


# -- provenance of each load path -------------------------------------------------------------------------------
def test_a_registry_config_is_untrained_and_a_weights_file_on_top_is_imported(tmp_path, tiny_model):
    from safetensors.torch import save_file

    from radretrieve import load_model

    assert load_model("radclip-tiny", device="cpu", warn=False).provenance.kind == "untrained"
    weights = tmp_path / "hand-copied.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(weights))
    got = load_model("radclip-tiny", weights=str(weights), device="cpu").provenance
    assert (got.kind, got.origin, got.trained) == ("imported", "hand-copied.safetensors", True)
    assert got.digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()


def test_published_sources_and_open_clip_without_a_tag():
    """open_clip tags and hf-hub ids download, so here the rule itself (no network in tests)."""
    from radretrieve.models.provenance import provenance_of_source
    from radretrieve.models.reference import ModelSource

    tagged = provenance_of_source(ModelSource("open_clip", "ViT-B-16", "openai"))
    assert (tagged.kind, tagged.origin) == ("published", "open_clip:ViT-B-16/openai")
    hub = provenance_of_source(ModelSource("hf-hub", "hf-hub:org/biomed"))
    assert (hub.kind, hub.origin) == ("published", "hf-hub:org/biomed")
    assert provenance_of_source(ModelSource("open_clip", "ViT-B-16")).kind == "untrained"
    file = provenance_of_source(ModelSource("open_clip", "ViT-B-16", "/some/where/RadCLIP.pth"), digest=False)
    assert (file.kind, file.origin) == ("imported", "RadCLIP.pth")  # a file's name, never its folder


def test_a_model_directory_says_itself_and_unknown_without_a_record(tmp_path, tiny_model):
    from radretrieve import load_model
    from radretrieve.models.provenance import PROVENANCE_FILE, write_provenance

    tiny_model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / PROVENANCE_FILE).read_text())["kind"] == "untrained"
    assert load_model(str(tmp_path / "m"), device="cpu", warn=False).provenance.kind == "untrained"
    pulled = Provenance("pulled", origin="hf:org/repo@abc/model.pth", digest="sha256:00", licence="check the terms")
    write_provenance(tmp_path / "m", pulled)
    assert load_model(str(tmp_path / "m"), device="cpu").provenance == pulled
    (tmp_path / "m" / PROVENANCE_FILE).unlink()
    assert load_model(str(tmp_path / "m"), device="cpu").provenance.kind == "unknown"


@pytest.mark.parametrize("content", ["deep", "huge"])
def test_a_hostile_record_is_one_error_and_the_listing_shows_it_as_unknown(tmp_path, content):
    from radretrieve.foundation.errors import ModelLoadError
    from radretrieve.models.published import installed_models

    folder = tmp_path / "models" / "odd"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    record = (
        "[" * 100_000 + "]" * 100_000 if content == "deep" else json.dumps({"kind": "pulled", "licence": "x" * 10**6})
    )
    (folder / "provenance.json").write_text(record)
    with pytest.raises(ModelLoadError, match="unreadable provenance record"):
        read_provenance(folder)
    (row,) = installed_models(tmp_path / "models")
    assert row["state"] == "unknown" and row["licence"] is None


def test_weights_changed_in_memory_are_no_longer_untrained(tmp_path):
    """Code other than `radretrieve train` that trains a model (an optimizer step) must not leave it claiming
    random weights: it says unknown, and so does the directory it is saved to."""
    import torch

    from radretrieve import load_model

    model = load_model("radclip-tiny", device="cpu", warn=False)
    model.to("cpu").eval()  # moving or switching modes changes nothing
    assert model.provenance.kind == "untrained"
    with torch.no_grad():
        model.adapter.parameters().__next__().add_(0.01)
    assert model.provenance.kind == "unknown" and model.provenance.trained
    model.save(tmp_path / "m")
    assert read_provenance(tmp_path / "m").kind == "unknown"


def test_training_with_a_preprocess_override_is_not_warned_about(env):
    """`train` starts from untrained weights by design: the base it loads to apply --preprocess is not warned."""
    from radretrieve.application.training import TrainOptions, run_training

    opts = TrainOptions(preprocess="clip", epochs_2d=1, epochs_3d=0, batch_size=4, device="cpu")
    with untrained_warnings() as lines:
        result = run_training(env["manifest"], env["tmp"] / "trained-clip", opts)
    assert lines == []
    assert result.model.provenance.trained and result.model.config.preprocess.profile == "clip"


def test_training_records_trained_with_its_data_and_base(env):
    result, model_dir = env["train"], env["tmp"] / "trained"
    record = read_provenance(model_dir)
    assert record.kind == "trained" and result.model.provenance == record
    d = record.details
    assert record.origin == "radretrieve train" and "manifest.csv" not in json.dumps(record.to_json())  # no names
    assert d["data"] == "manifest" and d["pairs"]["train_images"] == len(TEXTS)
    assert d["epochs"] == {"2d": 1, "3d": 0} and d["steps"] == result.steps >= 1
    assert 0 < d["seconds"] <= result.seconds + 0.1
    assert d["base"]["name"] == "radclip-tiny" and d["base"]["kind"] == "untrained"
    text = (model_dir / "provenance.json").read_text()
    assert str(env["tmp"]) not in text and "im0.png" not in text  # no folder of this machine, no item path
    from radretrieve import load_model

    assert load_model(str(model_dir), device="cpu").provenance.kind == "trained"


# -- out dirs ---------------------------------------------------------------------------------------------------
def test_the_manifest_records_the_models_provenance(env):
    from radretrieve.outdir.model_ref import recorded_model

    for name in ("untrained", "trained"):
        record = json.loads((env["out"][name] / "manifest.json").read_text())["model"]
        assert record["provenance"]["kind"] == name and record["provenance"]["trained"] == (name == "trained")
        assert recorded_model(env["out"][name]).provenance.kind == name
    trained_manifest = json.loads((env["out"]["trained"] / "manifest.json").read_text())
    assert trained_manifest["model"]["name"] == "radclip-tiny-finetuned"


def test_an_older_record_is_derived_from_its_source_where_that_is_decisive(env, tmp_path):
    """Out dirs written before records: a registry name without weights is untrained, a copied model directory
    has its own record, anything else is unknown (no warning)."""
    from radretrieve.outdir.model_ref import recorded_model

    def old(name: str, **changes) -> Path:
        out = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(env["out"][name], out)
        data = json.loads((out / "manifest.json").read_text())
        data["model"] = {k: v for k, v in data["model"].items() if k not in ("provenance", "name")} | changes
        (out / "manifest.json").write_text(json.dumps(data))
        return out

    assert recorded_model(old("untrained")).provenance.kind == "untrained"
    assert recorded_model(old("trained")).provenance.kind == "trained"  # OUT/model/provenance.json
    imported = recorded_model(old("untrained", weights="/gone/RadCLIP.pth")).provenance
    assert (imported.kind, imported.origin) == ("imported", "RadCLIP.pth")
    unknown = old("trained", ref="elsewhere")
    assert recorded_model(unknown).provenance.kind == "unknown"
    _, warned = cli("search", QUERY, "--index", str(old("untrained")), "--format", "json")
    assert len(warned) == 1


# -- one warning per command run, the state in the JSON ---------------------------------------------------------
def _item(out: Path) -> str:
    stdout, _ = cli("search", QUERY, "--index", str(out), "--format", "json", "-k", "1")
    return str(json.loads(stdout)[0]["hits"][0]["item_id"])


def _commands(env, name: str) -> dict[str, tuple[str, ...]]:
    out = str(env["out"][name])
    model = "radclip-tiny" if name == "untrained" else str(env["tmp"] / "trained")
    image = str(env["manifest"].parent / "im0.png")
    item = _item(env["out"][name])
    return {
        "search": ("search", QUERY, "--index", out, "--format", "json"),
        "similar": ("similar", item, "--index", out, "--format", "json"),
        "reports": ("reports", item, "--index", out, "--format", "json"),
        "classify --index": ("classify", "--index", out, "--task", TASK, "--format", "json"),
        "classify PATH": ("classify", image, "--model", model, "--task", TASK, "--format", "json"),
        "embed": ("embed", image, "--text", QUERY, "--model", model),
    }


def _models(stdout: str) -> list[dict]:
    """The `"model"` object of every entry of a command's JSON output."""
    return [entry["model"] for entry in json.loads(stdout)]


@pytest.mark.parametrize("name", ["untrained", "trained"])
def test_each_command_warns_once_on_an_untrained_model_and_says_so_in_its_json(env, name):
    untrained = name == "untrained"
    assert len(env["index_warnings"][name]) == int(untrained), "index (-q)"
    for command, args in _commands(env, name).items():
        stdout, warned = cli(*args)
        assert len(warned) == int(untrained), (command, warned)
        if untrained:
            assert "radclip-tiny" in warned[0] and PULL_HINT in warned[0], warned
        models = _models(stdout)
        assert models and all(m == models[0] for m in models), command
        assert (models[0]["trained"], models[0]["kind"]) == (not untrained, name), (command, models[0])
        assert models[0]["name"] == ("radclip-tiny" if untrained else "radclip-tiny-finetuned"), command


def test_the_contact_sheet_carries_the_banner_of_an_untrained_model_only(env, tmp_path):
    for name in ("untrained", "trained"):
        sheet = tmp_path / f"{name}.html"
        cli("search", QUERY, "--index", str(env["out"][name]), "--format", "html", "--out", str(sheet))
        html = sheet.read_text()
        assert ('class="notice"' in html) == (name == "untrained"), name
        assert (PULL_HINT in html) == (name == "untrained") and "<figure" in html


def test_a_real_search_prints_one_line_on_stderr_and_clean_json(env):
    proc = subprocess.run(
        [sys.executable, "-m", "radretrieve", "search", QUERY, "--index", str(env["out"]["untrained"]), "-f", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if WARNING_MARK in line] == [
        f"WARNING model radclip-tiny {WARNING_MARK}: its results are meaningless; get published weights with "
        f"`{PULL_HINT}`"
    ]
    (result,) = json.loads(proc.stdout)
    assert result["model"]["trained"] is False and result["hits"]


def test_the_python_api_warns_through_logging(caplog):
    from radretrieve import load_model

    reset_warnings()
    with caplog.at_level(logging.WARNING, logger="radretrieve"):
        load_model("radclip-tiny", device="cpu")
        load_model("radclip-tiny", device="cpu")  # once per model name and process
        load_model("radclip-tiny", device="cpu", warn=False)
    assert [r.getMessage() for r in caplog.records if WARNING_MARK in r.getMessage()] == [
        f"model radclip-tiny {WARNING_MARK}: its results are meaningless; get published weights with `{PULL_HINT}`"
    ]


# -- serve: one line for all workers, the state in every answer, the page's banner ------------------------------
@pytest.fixture(scope="module")
def untrained_server(env):
    srv = Server(env["out"]["untrained"], env["tmp"] / "untrained-server.log", "--workers", "2")
    yield srv
    srv.stop()


def test_serve_warns_once_for_all_workers_and_answers_with_the_state(untrained_server, server):
    assert untrained_server.log_text().count(WARNING_MARK) == 1
    assert WARNING_MARK not in server.log_text()
    for srv, trained in ((untrained_server, False), (server, True)):
        with srv.client() as client:
            options = client.get("/api/options").json()["model"]
            hits = client.get("/api/search", params={"q": QUERY, "k": 2}).json()
        assert options["trained"] is trained and hits["model"]["trained"] is trained
        assert ("notice" in options) is not trained
    assert "results are random" in options_notice(untrained_server)


def options_notice(srv: Server) -> str:
    with srv.client() as client:
        return client.get("/api/options").json()["model"]["notice"]


def test_the_page_shows_a_banner_for_an_untrained_model_only(untrained_server, server):
    from tests.browser import chromedriver, chromium

    chromium(), chromedriver()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser import selenium_chrome

    driver = selenium_chrome(1000, 700)
    try:
        driver.get(untrained_server.url + "/")
        banner = WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "untrained").is_displayed() and d.find_element(By.ID, "untrained"),
            message="the untrained banner",
        )
        assert banner.text == options_notice(untrained_server)
        assert banner.text.startswith("This index was built with an untrained model (radclip-tiny): results are")
        driver.get(server.url + "/")
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#modality option")) > 1, message="options loaded"
        )
        assert not driver.find_element(By.ID, "untrained").is_displayed()
    finally:
        driver.quit()
