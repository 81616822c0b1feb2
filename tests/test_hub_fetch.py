"""A hostile hub against `radretrieve models pull` (radretrieve.models.hub_fetch), through the real CLI and a real
hub server on 127.0.0.1: an ETag that turns into a path after the first answer writes and deletes nothing
outside the cache; a body longer than declared, or a download past its deadline, is stopped while it streams."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from radretrieve.testing.hf_hub_server import HubFile, HubServer, tiny_hf_clip

REPO_ID, FILE = "zluvolyote/RadCLIP", "RadCLIP.pth"


@pytest.fixture(scope="module")
def weights() -> bytes:
    return tiny_hf_clip(seed=4)[1]


def _env(tmp: Path, hub: HubServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "RADRETRIEVE_"))}
    return env | {
        "HF_HOME": str(tmp / "hf"),
        "RADRETRIEVE_HOME": str(tmp / "rr"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_ENDPOINT": hub.url,
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=240)


class TurnsHostile(HubFile):
    """Honest on the first request, then an ETag that is the path of `target` on every later one (the library's
    own metadata request, if it made one, would get this)."""

    target: Path
    answers = 0

    @property
    def declared_etag(self) -> str | None:  # read twice per answer by the server: ETag and X-Linked-Etag
        TurnsHostile.answers += 1
        return None if TurnsHostile.answers <= 2 else str(self.target)

    @declared_etag.setter
    def declared_etag(self, value: str | None) -> None:  # the dataclass's own field: ignored
        pass


@pytest.mark.parametrize("target", ["existing", "new"])
def test_an_etag_that_turns_into_a_path_neither_writes_nor_deletes_outside_the_cache(weights, tmp_path, target):
    victim = tmp_path / "notes" / ("report.txt" if target == "existing" else "planted.pth")
    victim.parent.mkdir()
    if target == "existing":
        victim.write_text("not backed up\n")
    TurnsHostile.answers = 0
    with HubServer() as hub:
        f = TurnsHostile(weights)
        f.target = victim
        hub.repos[REPO_ID] = {FILE: f}
        proc = _run(_env(tmp_path, hub), "-m", "radretrieve", "models", "pull", "radclip")
        gets = hub.gets(FILE)
    assert proc.returncode == 0, proc.stderr  # the one checked answer named the file
    assert len(gets) == 1
    assert victim.exists() == (target == "existing")
    if target == "existing":
        assert victim.read_text() == "not backed up\n"
    assert sorted(p.name for p in victim.parent.iterdir()) == ([victim.name] if target == "existing" else [])


def test_a_body_longer_than_declared_is_cut_off_while_it_streams(weights, tmp_path):
    with HubServer() as hub:
        hub.add(REPO_ID, FILE, weights, declared_size=100_000)
        proc = _run(_env(tmp_path, hub), "-m", "radretrieve", "models", "pull", "radclip")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {REPO_ID}/{FILE}: the hub sent more than the 100000 bytes declared; refused"]
    blobs = tmp_path / "hf" / "hub" / "models--zluvolyote--RadCLIP" / "blobs"
    assert sum(p.stat().st_size for p in blobs.iterdir()) == 0  # nothing kept of it


def test_a_download_past_its_deadline_stops_and_keeps_what_came_for_a_resume(weights, tmp_path):
    code = (
        "from radretrieve.models.hub_fetch import fetch_into_cache\n"
        f"fetch_into_cache({REPO_ID!r}, {FILE!r}, None, 1 << 30, deadline_s=0.0)\n"
    )
    with HubServer() as hub:
        hub.add(REPO_ID, FILE, weights)
        env = _env(tmp_path, hub)
        (tmp_path / "hf").mkdir()
        proc = _run(env, "-c", code)
        assert proc.returncode == 1 and "not downloaded within 0 s; pull again to resume" in proc.stderr
        blobs = tmp_path / "hf" / "hub" / "models--zluvolyote--RadCLIP" / "blobs"
        assert [p.suffix for p in blobs.iterdir()] == [".incomplete"]
        again = _run(env, "-m", "radretrieve", "models", "pull", "radclip")
        ranges = [g[2] for g in hub.gets(FILE)]
    assert again.returncode == 0, again.stderr
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")  # resumed
