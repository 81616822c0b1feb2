"""Optional extras: without Ray (the `ray` extra) every module still imports, and `index --engine ray` says
in one line how to install it. A missing package is simulated the way Python itself treats one that cannot
be found: `sys.modules["ray"] = None` makes every `import ray` raise ImportError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK_RAY = "import sys; sys.modules['ray'] = None\n"


def run_without_ray(code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", BLOCK_RAY + code], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env
    )


def test_index_engine_ray_without_ray_is_one_line(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "a.txt").write_text("not an image")
    out = tmp_path / "out"
    argv = ["radretrieve", "index", str(archive), "--out", str(out), "--engine", "ray", "--workers", "0"]
    proc = run_without_ray(f"from radretrieve.cli.app import main\nsys.argv = {argv!r}\nmain()")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == 'error: the ray engine needs Ray, which is not installed: pip install -e ".[ray]"\n'
    assert proc.stdout == ""
    assert not out.exists()  # refused before anything was written


def test_every_module_imports_without_ray():
    code = """
import importlib, pkgutil
import indexers, pipelines, radretrieve
names = []
for pkg in (radretrieve, indexers, pipelines):
    found = pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
    names += [m.name for m in found if not m.name.endswith(".__main__")]  # __main__ runs the CLI
for name in names:
    importlib.import_module(name)
from pipelines.job import IndexOptions
from pipelines.ray_cluster.connect import RayMissing
IndexOptions(engine="local")
try:
    IndexOptions(engine="ray")
except RayMissing as exc:
    print("refused:", exc)
print(len(names), "modules")
"""
    proc = run_without_ray(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == 'refused: the ray engine needs Ray, which is not installed: pip install -e ".[ray]"'
    assert int(lines[1].split()[0]) > 100  # the walk found the packages' modules
