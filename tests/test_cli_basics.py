"""CLI basics: lazy imports (no torch for --help/models), the model list, offline download errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHECK = (
    "import sys\n"
    "sys.argv = ['radretrieve'] + sys.argv[1:]\n"
    "from radretrieve.cli.app import main\n"
    "try:\n    main()\n"
    "except SystemExit:\n    pass\n"
    "heavy = sorted(m for m in ('torch', 'open_clip', 'faiss') if m in sys.modules)\n"
    "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
)


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_and_models_do_not_import_torch():
    for args in (["--help"], ["models"], ["models", "--json"]):
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


def test_offline_pretrained_tag_fails_with_one_clear_line(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    code = "from radretrieve import load_model\nload_model('ViT-B-16', weights='openai', device='cpu')\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "ModelLoadError" in last and "could not download ViT-B-16" in last and "--weights" in last
