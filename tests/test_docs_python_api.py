"""The ```python blocks of docs/guide/python-api.md run, in order, in one namespace (as notebook cells), on a
copy of the session's small synthetic out dir: the page's placeholder `path/to/out` is replaced by that path."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "guide" / "python-api.md"
PLACEHOLDER = "path/to/out"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks(markdown: str) -> list[str]:
    return BLOCK.findall(markdown)


def test_the_block_extractor_finds_every_python_block():
    page = "# t\n```python\na = 1\n```\ntext\n```bash\nls\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(page) == ["a = 1\n", "b = a + 1\n"]


def test_the_python_api_page_runs(serve_env, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(serve_env["out"], out)  # classify writes predictions into it
    blocks = python_blocks(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 6 and all(PLACEHOLDER not in b or f'"{PLACEHOLDER}"' in b for b in blocks)
    namespace: dict = {"__name__": "python_api_page"}
    try:
        for n, block in enumerate(blocks):
            code = compile(block.replace(PLACEHOLDER, str(out)), f"{PAGE.name} block {n + 1}", "exec")
            exec(code, namespace)
    finally:
        if "out" in namespace:
            namespace["out"].close()
    assert (out / "predictions.parquet").is_file()  # the classify block ran on the copy
    assert namespace["opened"].closed and namespace["out"].closed
