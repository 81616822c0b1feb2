"""The README's quickstart, run as written: its five commands, read from the block after `<!-- quickstart -->`,
run by bash in a fresh HOME holding a folder of scans (`radretrieve synth`), with the published weights pulled
from a real hub server on 127.0.0.1 (`radretrieve.testing.hf_hub_server`, a tiny CLIPModel state dict in
RadCLIP.pth's format) that huggingface_hub reaches through HF_ENDPOINT. `serve` runs in the background on a free
port (the README's 8000 may be taken) until its page answers, then is stopped. Nothing here warns about
untrained weights (they were pulled)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from radretrieve.models.provenance import PULL_HINT
from radretrieve.synth import synthesize
from radretrieve.testing.hf_hub_server import HubServer, tiny_hf_clip

REPO = Path(__file__).resolve().parents[1]
RADCLIP_REPO, RADCLIP_FILE = "zluvolyote/RadCLIP", "RadCLIP.pth"  # the catalog's entry (models.published)


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no bash block after <!-- quickstart -->"
    return [line for line in block.group(1).splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def home(tmp_path):
    """A fresh HOME with `~/scans` (12 synthetic studies) and the environment of a new user's shell."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "RADRETRIEVE_"))}
    env |= {"HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1", "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}
    # what `radretrieve synth ~/scans --studies 12 --image-size 32` writes (its CLI: tests/test_archive_synth.py)
    synthesize(home / "scans", 12, image_size=32)
    (home / "scans" / "manifest.csv").unlink()  # a user's own folder: files only
    return home, env


def bash(line: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=300, cwd=env["HOME"])


def serve_until_page_answers(line: str, env: dict[str, str]) -> str:
    """Run the `serve` line on a free port until GET / answers; the page's HTML. The server is stopped after."""
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {line} --port {port}"],
        env=env,
        cwd=env["HOME"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                    return resp.read().decode()
            except OSError:
                time.sleep(0.5)
        raise AssertionError("serve did not answer within 120 s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_the_readme_quickstart_runs_as_written_with_pulled_weights(home):
    home, env = home
    pull, index, search, serve, classify = quickstart_commands()
    assert pull.startswith("radretrieve models pull ") and " serve " in f" {serve} "
    with HubServer() as hub:
        hub.add(RADCLIP_REPO, RADCLIP_FILE, tiny_hf_clip(seed=3)[1])
        env = env | {"HF_ENDPOINT": hub.url}
        pulled = bash(pull, env)
    assert pulled.returncode == 0, pulled.stderr
    model = home / ".cache" / "radretrieve" / "models" / "radclip"
    assert f"use it with: --model {model}" in pulled.stdout  # the README's --model value is what pull prints
    assert (home / ".cache" / "huggingface" / "hub").is_dir()  # huggingface_hub's own cache, under HOME

    env = env | {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # the rest runs offline
    indexed = bash(index, env)
    assert indexed.returncode == 0, indexed.stderr
    assert "studies in archive: 12" in indexed.stdout and "errors: 0" in indexed.stdout
    with ThreadPoolExecutor(max_workers=1) as pool:  # both only read the index: side by side
        searching = pool.submit(bash, search, env)
        page = serve_until_page_answers(serve, env)
    searched = searching.result()
    assert searched.returncode == 0, searched.stderr
    assert searched.stdout.split()[:3] == ["rank", "score", "study"] and "\n10 " in searched.stdout
    assert "<html" in page.lower()
    classified = bash(classify, env)
    assert classified.returncode == 0, classified.stderr
    assert classified.stdout.split()[:3] == ["item", "task", "label"] and " organ " in classified.stdout
    for proc in (indexed, searched, classified):
        assert PULL_HINT not in proc.stderr  # pulled weights: no untrained warning (tests/test_provenance.py: the
        # same commands on an untrained model warn once each)
