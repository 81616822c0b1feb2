"""MkDocs hook: pages whose text lives at the repository root, shown in the site without a copy.

`docs/architecture.md` holds the marker `<!-- include ARCHITECTURE.md -->`; the hook puts the root file's text
there at build time (one source: `tests/test_architecture.py` checks that file's module names and rules).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

REPO = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"<!-- include ([\w.-]+\.md) -->")


def on_page_markdown(markdown: str, page, config, files) -> str:
    def include(match: re.Match[str]) -> str:
        path = REPO / match.group(1)
        if not path.is_file():
            raise PluginError(f"{page.file.src_uri}: {match.group(1)} is not a file at the repository root")
        return path.read_text(encoding="utf-8")

    return MARKER.sub(include, markdown)
