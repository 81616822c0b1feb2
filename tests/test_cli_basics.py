"""CLI basics: lazy imports (no torch for --help/models), the model list, offline download errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.procs import run_all

CHECK = (
    "import sys\n"
    "sys.argv = ['radretrieve'] + sys.argv[1:]\n"
    "from radretrieve.cli.app import main\n"
    "try:\n    main()\n"
    "except SystemExit:\n    pass\n"
    "heavy = sorted(m for m in ('torch', 'open_clip', 'faiss', 'fastapi', 'uvicorn') if m in sys.modules)\n"
    "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
)


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_and_models_do_not_import_torch():
    for args in (["--help"], ["models"], ["models", "--json"], ["serve", "--help"]):
        proc = _run(*args)
        assert proc.returncode == 0, proc.stderr
        assert "HEAVY=\n" in proc.stderr or proc.stderr.rstrip().endswith("HEAVY="), proc.stderr


def test_models_lists_registry_with_counts():
    proc = _run("models", "--json")
    rows = json.loads(proc.stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["radclip-vit-l-14"]["embed_dim"] == 768
    assert 400e6 < by_name["radclip-vit-l-14"]["params"] < 450e6  # CLIP ViT-L/14 is ~428M + adapter
    assert by_name["radclip-tiny"]["params"] < 10e6


def _offline(cmds: list[list[str]], tmp_path, **extra_env: str) -> list[subprocess.CompletedProcess]:
    """Run each of `cmds` with no network, side by side (tests/procs.py): in a fresh network namespace where
    `unshare -n` works, else through a dead local proxy; either way nothing leaves the machine and every
    download fails as a network failure."""
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("HF_HUB_OFFLINE", None)
    env |= extra_env
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        cmds = [["unshare", "-n", *cmd] for cmd in cmds]
    else:
        env |= {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    return run_all(cmds, env=env, timeout=180)


CLI = [sys.executable, "-m", "radretrieve"]


@pytest.mark.parametrize(
    "hub_offline",
    [
        pytest.param({}, id="probe"),  # radretrieve's reachability probe answers first
        pytest.param({"HF_HUB_OFFLINE": "1"}, id="library"),  # huggingface_hub's own error, classified
    ],
)
def test_offline_pretrained_tag_and_hub_id_fail_with_one_line_through_the_cli(tmp_path, hub_offline):
    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "notes.txt").write_text("a file: an empty folder is refused before the model loads\n")
    models = (["--model", "ViT-B-16", "--weights", "openai"], ["--model", "hf-hub:org/some-model"])
    cmds = [[*CLI, "index", str(arch), "--out", str(tmp_path / f"out{i}"), *model] for i, model in enumerate(models)]
    for proc in _offline(cmds, tmp_path, **hub_offline):
        assert proc.returncode == 1, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert lines[-1].startswith("error: could not download "), proc.stderr
        assert "--weights" in lines[-1] and "Traceback" not in proc.stderr
        assert sum(line.startswith("error:") for line in lines) == 1


def test_a_wrong_tag_is_not_reported_as_a_download_failure(tmp_path):
    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "notes.txt").write_text("a file: an empty folder is refused before the model loads\n")
    cmd = [*CLI, "index", str(arch), "--out", str(tmp_path / "out"), "--model", "ViT-B-16", "--weights", "no-such-tag"]
    [proc] = _offline([cmd], tmp_path)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "not a pretrained tag" in last and "download" not in last
