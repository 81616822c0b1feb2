"""Every test that docs/THREAT_MODEL.md names as the proof of a defence exists.

A renamed or deleted test would otherwise leave the threat model citing a defence that nothing checks.
"""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "THREAT_MODEL.md"
# `tests/file.py::name`, or `::name` continuing the file named last in the same table cell.
REF = re.compile(r"`(tests/[\w/]+\.py)?(?:::([\w*]+))?(?:\[[^\]]*\])?`")


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def _references() -> list[tuple[str, str | None]]:
    refs: list[tuple[str, str | None]] = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        current = None
        for match in REF.finditer(line):
            file, name = match.groups()
            if file is None and name is None:
                continue
            current = file or current
            if current is None:
                raise AssertionError(f"`::{name}` with no file before it: {line}")
            refs.append((current, name))
    return refs


def test_every_test_the_threat_model_names_exists():
    refs = _references()
    assert len(refs) >= 30, "the threat model names fewer tests than it did when this check was written"
    missing = []
    for file, name in refs:
        path = REPO / file
        if not path.is_file():
            missing.append(file)
            continue
        if name is None:
            continue
        names = _test_names(path)
        pattern = re.compile(name.replace("*", r"\w*") + "$")
        if not any(pattern.match(n) for n in names):
            missing.append(f"{file}::{name}")
    assert missing == []
