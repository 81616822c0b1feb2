"""The import rules of ARCHITECTURE.md, checked on the source (every import, lazy and TYPE_CHECKING ones too).

Run alone with `python -m pytest tests/test_architecture.py -q`. The rules are data (`ALLOWED`); the checker
is tested on planted violations below, so a rule that stopped being enforced would fail here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = ("radretrieve", "indexers", "pipelines", "benchmarks")

FOUNDATION = {"foundation"}
CORE = {"foundation", "models", "archive", "synth", "outdir", "datasets", "evaluation", "training", "testing"}
# component -> components it may import (besides itself). Layers, bottom to top: foundation; core; indexers
# and pipelines; application; cli. `root` is the package's own __init__ (version, lazy load_model, and the lazy
# `open` of the Python API, which lives in the application layer); nothing below the application imports root.
ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "models": FOUNDATION,
    "archive": FOUNDATION,
    "datasets": FOUNDATION,
    "synth": FOUNDATION | {"archive"},
    "outdir": FOUNDATION | {"models"},
    "evaluation": FOUNDATION | {"models", "archive", "outdir"},
    "training": FOUNDATION | {"models", "archive", "evaluation"},
    "testing": FOUNDATION | {"outdir"},
    "root": FOUNDATION | {"models", "application"},
    "indexers": FOUNDATION | {"outdir"},
    "pipelines": CORE,
    "application": CORE | {"root", "indexers", "pipelines"},
    "cli": CORE | {"root", "indexers", "pipelines", "application"},
    "benchmarks": CORE | {"root", "indexers", "pipelines", "application", "cli"},
}
PROJECT_TOPS = {"radretrieve", "indexers", "pipelines", "benchmarks", "tests"}


def component(module: str) -> str | None:
    """The architecture component of a dotted module name; None for modules outside the project."""
    parts = module.split(".")
    if parts[0] not in PROJECT_TOPS:
        return None
    if parts[0] != "radretrieve":
        return parts[0]
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "root" if len(parts) == 1 or parts[1] == "__init__" else "cli"
    return parts[1]


def file_module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_sub(name: str) -> bool:
    return (REPO / "radretrieve" / name).is_dir() or (REPO / "radretrieve" / f"{name}.py").is_file()


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted module) of every import statement anywhere in the tree, relative ones resolved."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            # `from radretrieve import x` may name a subpackage: count it as that subpackage
            out += [
                (node.lineno, f"{name}.{a.name}" if name == "radretrieve" and _is_sub(a.name) else name)
                for a in node.names
            ]
    return out


def violations(sources: dict[str, str]) -> list[str]:
    """Broken rules in {repo-relative path: source text}, one line each: 'path:line: a imports b'."""
    found = []
    for rel, text in sorted(sources.items()):
        path = REPO / rel
        module = file_module(path)
        own = component(module)
        for line, target in imported_modules(ast.parse(text), module, path.name == "__init__.py"):
            other = component(target)
            if other is None or other == own or own in (None, "tests"):  # tests may import anything
                continue
            if other not in ALLOWED.get(own, set()):
                found.append(f"{rel}:{line}: {own} imports {other} ({target})")
    return found


def project_sources() -> dict[str, str]:
    files = [p for top in SOURCE_ROOTS for p in (REPO / top).rglob("*.py")]
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in files}


def test_the_project_keeps_its_import_rules() -> None:
    assert violations(project_sources()) == []


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("radretrieve/foundation/x.py", "from radretrieve.models import loading"),  # foundation imports nothing
        ("radretrieve/archive/x.py", "def f():\n    import pipelines.job"),  # lazy import: still a dependency
        ("radretrieve/outdir/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from indexers import x"),
        ("radretrieve/evaluation/x.py", "from radretrieve.application import render"),  # core below application
        ("indexers/x.py", "from radretrieve.archive import scan"),  # indexers: foundation + outdir only
        ("pipelines/x.py", "from indexers.build import build_indexes"),  # only application/cli tie the three
        ("benchmarks/x.py", "from tests.conftest import REPO"),  # benchmarks never import tests
        ("radretrieve/models/x.py", "from radretrieve import application"),  # `from radretrieve import` a package
        ("radretrieve/archive/sub/x.py", "from ...application import demo"),  # relative imports are resolved
        ("pipelines/x.py", "import radretrieve"),  # root reaches the application layer (radretrieve.open)
        ("radretrieve/__init__.py", "def f():\n    from indexers.search import Searcher"),  # root: no indexers
    ],
)
def test_a_broken_rule_is_reported(path: str, source: str) -> None:
    assert len(violations({path: source})) == 1


def test_allowed_imports_are_not_reported() -> None:
    allowed = {
        "radretrieve/application/x.py": "from indexers import Searcher\nfrom pipelines.job import index_archive",
        "indexers/x.py": "from radretrieve.outdir.catalog import Catalog\nfrom radretrieve.foundation import errors",
        "radretrieve/cli/x.py": "def f():\n    from radretrieve.application.demo import run_demo",
        "radretrieve/__init__.py": "def open():\n    from radretrieve.application.outdir_api import OutDir",
        "tests/x.py": "from benchmarks.suite import SPECS\nfrom pipelines.job import index_archive",
    }
    assert violations(allowed) == []
