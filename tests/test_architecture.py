"""The import rules of ARCHITECTURE.md, checked on the source (every import, lazy and TYPE_CHECKING ones too).

Run alone with `python -m pytest tests/test_architecture.py -q`. The rules are data (`ALLOWED`); the checker
is tested on planted violations below, so a rule that stopped being enforced would fail here.
"""

from __future__ import annotations

import ast
import re
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
    "testing": FOUNDATION | {"outdir", "models"},
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


# ---- ARCHITECTURE.md names only modules that exist ----

DOC = REPO / "ARCHITECTURE.md"
NAME = re.compile(r"`([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)`")  # a backticked module-like name
DOTTED = re.compile(r"\b((?:radretrieve|indexers|pipelines|foundation)(?:\.[a-z_][a-z0-9_]*)+)")
FILE_SUFFIXES = {"json", "parquet", "key", "toml", "safetensors", "faiss", "jsonl", "lock", "md"}


def _module_file(dotted: str) -> Path | None:
    base = REPO.joinpath(*dotted.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _top_level_names(path: Path) -> set[str]:
    """What a module defines or re-exports at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _dotted_exists(dotted: str) -> bool:
    """`pkg.module` is a module, or `pkg.module.name` a name defined in one (`radretrieve.archive.read_item`)."""
    if dotted.startswith("foundation."):
        dotted = "radretrieve." + dotted
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_file(".".join(parts[:cut]))
        if path is not None:
            rest = parts[cut:]
            return not rest or (len(rest) == 1 and rest[0] in _top_level_names(path))
    return False


def _cli_commands() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "radretrieve" / "cli").glob("*.py"):
        found |= set(re.findall(r"command\(\"([\w-]+)\"", path.read_text(encoding="utf-8")))
    return found


def _name_exists(name: str, package: str) -> bool:
    """A name in a package's row: a module or subpackage anywhere under it (`fold`, `application.web`), a name
    defined in one of its modules (`configure_logging`), or a CLI command (`serve`)."""
    if name.rsplit(".", 1)[-1] in FILE_SUFFIXES:  # a file name such as manifest.json
        return True
    root = REPO.joinpath(*package.split("."))
    relative = Path(*name.split("."))
    for path in root.rglob("*.py"):
        module = path.relative_to(root).with_suffix("")
        if module.parts[-1] == "__init__":
            module = module.parent
        if module.parts[-len(relative.parts) :] == relative.parts:
            return True
    if _dotted_exists(f"radretrieve.{name}") or _dotted_exists(name):
        return True
    defined = set().union(*(_top_level_names(p) for p in root.rglob("*.py")))
    return name in defined or name in _cli_commands()


def missing_architecture_names(text: str) -> list[str]:
    """Names in ARCHITECTURE.md that no module of the repository has: the layer table's backticked names (in
    the package of their row) and every dotted `radretrieve.`/`indexers.`/`pipelines.` name anywhere."""
    missing: list[str] = []
    package = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) == 3 and not cells[0].startswith("---") and cells[0] != "layer":
            named = NAME.findall(cells[1])
            package = named[0] if named else package
            if package is None or _module_file(package) is None:
                missing.append(f"package {package}")
                continue
            missing += [f"{package}: {n}" for n in NAME.findall(cells[2]) if not _name_exists(n, package)]
    missing += [d for d in DOTTED.findall(text) if not _dotted_exists(d)]
    return missing


def test_architecture_names_only_modules_that_exist():
    text = DOC.read_text(encoding="utf-8")
    assert len(NAME.findall(text)) >= 60, "the layer table names fewer modules than when this check was written"
    assert missing_architecture_names(text) == []


def test_a_renamed_module_in_architecture_is_reported():
    text = DOC.read_text(encoding="utf-8")
    planted = text.replace("(`sessions`)", "(`session_store`)").replace("pipelines.plan", "pipelines.planner")
    assert planted != text
    assert sorted(missing_architecture_names(planted)) == [
        "pipelines.planner",
        "radretrieve.application: session_store",
    ]
