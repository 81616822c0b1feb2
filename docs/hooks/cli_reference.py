"""MkDocs hook: the CLI reference page, rendered from the Typer app at build time.

`docs/reference/cli.md` holds the marker `<!-- cli-reference -->`; it is replaced by one section per command
(usage, help, a table of its arguments and options) read from `radretrieve.cli.app`, so the page cannot drift
from the code. No option is written by hand anywhere in the docs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

REPO = Path(__file__).resolve().parents[2]
PAGE = "reference/cli.md"
MARKER = "<!-- cli-reference -->"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no pipes, no raw HTML, one line)."""
    return " ".join(text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").split())


def _default(param: Any) -> str:
    if param.required or param.default is None or callable(param.default):
        return ""
    if param.default is False:  # a flag that is off unless given
        return ""
    value = param.default
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else ""
    return f"`{value}`"


def _row(param: Any, ctx: Any) -> str:
    if param.param_type_name == "argument":
        names = f"`{_argument_name(param)}`"
        help_text = getattr(param, "help", None) or ""
    else:
        names = ", ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
        help_text = param.help or ""
    required = "yes" if param.required else ""
    return f"| {names} | {_cell(help_text)} | {_default(param)} | {required} |"


def _argument_name(param: Any) -> str:
    name = (param.name or "arg").upper() + ("..." if param.nargs == -1 else "")
    return name if param.required else f"[{name}]"


def _usage(cmd: Any, title: str, ctx: Any) -> str:
    pieces = [title, "[OPTIONS]"]
    pieces += [_argument_name(p) for p in cmd.get_params(ctx) if p.param_type_name == "argument"]
    if getattr(cmd, "commands", None):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _shown(params: list[Any]) -> list[Any]:
    """The parameters a user gives (`--help` is on every command: said once, above)."""
    return [p for p in params if not getattr(p, "hidden", False) and p.name != "help"]


def _section(cmd: Any, path: list[str], parent: Any) -> list[str]:
    ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent)  # Typer's own Click: never `import click`
    title = " ".join(path)
    usage = _usage(cmd, title, ctx)
    lines = [f"## `{title}`" if len(path) == 2 else f"### `{title}`", "", "```", usage, "```", ""]
    if cmd.help:
        lines += [cmd.help.strip(), ""]
    params = _shown(cmd.get_params(ctx))
    if params:
        lines += ["| argument or option | what | default | required |", "| --- | --- | --- | --- |"]
        lines += [_row(p, ctx) for p in params] + [""]
    for name in sorted(getattr(cmd, "commands", {})):
        lines += _section(cmd.commands[name], [*path, name], ctx)
    return lines


def render() -> str:
    """Every command of the app, in the order `radretrieve --help` lists them."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the working tree's code, whatever is installed
    import typer

    from radretrieve.cli.app import app

    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="radretrieve")
    lines = ["## Global options", "", "```", "radretrieve [OPTIONS] COMMAND [ARGS]...", "```", ""]
    lines += ["| argument or option | what | default | required |", "| --- | --- | --- | --- |"]
    lines += [_row(p, root) for p in _shown(group.get_params(root))] + [""]
    for name in group.list_commands(root):
        lines += _section(group.get_command(root, name), ["radretrieve", name], root)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE}: the marker {MARKER} is missing")
    return markdown.replace(MARKER, render())
