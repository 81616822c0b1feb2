"""The README front page and the documentation site: size, links, the quickstart block, the strict build.

`mkdocs build --strict` fails on a broken link, a missing page, a bad anchor or a module mkdocstrings cannot
read; the build test also checks what the hooks generate (the CLI reference from the Typer app, the benchmark
results and their plots from benchmarks/results/*.json).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_BYTES = 12 * 1024
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
QUICKSTART = re.compile(r"<!-- quickstart -->\n```bash\n(.*?)\n```", re.DOTALL)
SOURCE_DIRS = ("radretrieve", "indexers", "pipelines", "benchmarks")


def _markdown_files() -> list[Path]:
    return [README, *sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)]


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where links are links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def relative_links(path: Path) -> list[str]:
    """Link and image targets that point into the repository (no scheme, not a bare #anchor)."""
    targets = LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def broken_links(path: Path) -> list[str]:
    """The relative link targets of a Markdown file that name no file (an anchor after `#` is not checked here:
    `mkdocs build --strict` checks anchors)."""
    return [t for t in relative_links(path) if not (path.parent / t.split("#", 1)[0]).resolve().is_file()]


def test_readme_is_a_front_page_of_at_most_12_kb():
    size = len(README.read_bytes())
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes; move sections into docs/"
    text = README.read_text(encoding="utf-8")
    for must in ("pip install -e .", "radretrieve demo", "python -m pytest -x -q", "docs/serve-page.png"):
        assert must in text


def test_every_relative_link_resolves_to_a_file():
    files = _markdown_files()
    assert len(files) >= 15 and sum(len(relative_links(p)) for p in files) >= 50
    assert [f"{p.relative_to(REPO)}: {t}" for p in files for t in broken_links(p)] == []


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# there\n")
    page.write_text(
        "[ok](there.md#a) [gone](missing.md) ![img](pic.png) [web](https://example.org) [anchor](#x)\n"
        "`[code](not-a-link.md)`\n```\n[fenced](nor-this.md)\n```\n"
    )
    assert broken_links(page) == ["missing.md", "pic.png"]


def quickstart_commands(text: str) -> list[str]:
    """The README's quickstart: the one ```bash block after `<!-- quickstart -->`, a command per line."""
    blocks = QUICKSTART.findall(text)
    assert len(blocks) == 1, "README.md needs exactly one ```bash block right after <!-- quickstart -->"
    return [line.strip() for line in blocks[0].splitlines() if line.strip()]


def test_the_quickstart_is_five_commands_in_one_marked_block():
    commands = quickstart_commands(README.read_text(encoding="utf-8"))
    verbs = [c.split()[1] for c in commands]
    assert verbs == ["models", "index", "search", "serve", "classify"]
    assert commands[0] == "radretrieve models pull radclip"
    model_dir = "~/.cache/radretrieve/models/radclip"
    assert f"--model {model_dir}" in commands[1]


def test_quickstart_options_exist_on_their_commands():
    """Every --option of the quickstart's index, search, serve and classify is one of that command's options."""
    import typer

    from radretrieve.cli.app import app

    group = typer.main.get_command(app)
    for command in quickstart_commands(README.read_text(encoding="utf-8"))[1:]:
        name = command.split()[1]
        options = {o for p in group.commands[name].params for o in [*p.opts, *p.secondary_opts]}
        given = re.findall(r"(?<!\S)(--?[a-z][\w-]*)", command)
        assert given and set(given) <= options, f"{command}: unknown {set(given) - options}"


def test_code_cites_docs_pages_of_this_repository():
    """Comments and docstrings cite the docs page that holds a section, never the old README sections."""
    stale, missing = [], []
    for folder in SOURCE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            rel = path.relative_to(REPO)
            stale += [f"{rel}: {m}" for m in re.findall(r"README(?:\.md)?(?::|\s+section|\))", text)]
            cited = re.findall(r"\b(docs/[\w/.-]+\.md)\b", text)
            missing += [f"{rel}: {c}" for c in cited if not (REPO / c).is_file()]
    assert stale == [] and missing == []


def _mkdocs() -> str:
    exe = shutil.which("mkdocs", path=os.path.dirname(sys.executable)) or shutil.which("mkdocs")
    if exe is None:
        pytest.skip('mkdocs is not installed: pip install -e ".[docs]"')
    return exe


def test_mkdocs_build_strict_passes_and_generates_the_reference(tmp_path):
    import typer

    from radretrieve.cli.app import app

    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [_mkdocs(), "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert time.perf_counter() - start < 120
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"radretrieve {name}" in cli
        for param in command.params:
            for opt in [o for o in param.opts if o.startswith("--")]:
                assert f"<code>{opt}</code>" in cli, f"{name} {opt} is missing from the CLI reference"
    results = (site / "reference" / "benchmark-results" / "index.html").read_text(encoding="utf-8")
    plots = sorted((site / "reference" / "benchmark-plots").glob("*.png"))
    assert len(plots) >= 5
    for png in plots:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"benchmark-plots/{png.name}" in results
    for result in (REPO / "benchmarks" / "results").glob("*.json"):
        assert f"benchmarks/results/{result.name}" in results
    assert (site / "architecture" / "index.html").read_text(encoding="utf-8").count("radretrieve.foundation") >= 1
