"""Everything the CLI prints goes through here: data to stdout, messages to stderr, escaped for the terminal.

File names, reports and header values are untrusted (radretrieve.foundation.terminal): `say` shows their
control characters and escape sequences as escapes, `say_json` keeps JSON valid and lossless while doing the
same, and `configure_logging` gives the root logger a handler whose formatter does it for every log line.
A test checks that no command module calls `typer.echo` or `print` itself.
"""

from __future__ import annotations

import sys
from typing import TextIO

import typer

from radretrieve.foundation import terminal
from radretrieve.foundation.terminal import json_printable, printable


def say(text: str, err: bool = False, nl: bool = True) -> None:
    """Print text (stdout, or stderr with `err`); line breaks and tabs kept, other control characters escaped."""
    typer.echo(printable(str(text)), err=err, nl=nl)


def say_json(text: str, nl: bool = True) -> None:
    """Print JSON text to stdout, control and format characters inside its strings as JSON escapes."""
    typer.echo(json_printable(text), nl=nl)


def say_as(text: str, fmt: str, nl: bool = True) -> None:
    """`say_json` for fmt "json", else `say`."""
    if fmt == "json":
        say_json(text, nl=nl)
    else:
        say(text, nl=nl)


def error_line(message: str) -> None:
    """The error boundary's one line on stderr: the message on one line, every control character escaped."""
    print(f"error: {printable(message, keep='')}", file=sys.stderr)


class PrintableWriter:
    """A text stream wrapper that escapes what is written to it (for Click's usage errors and tracebacks)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text))

    def flush(self) -> None:
        self.stream.flush()


def configure_logging(level: int) -> None:
    """Log to stderr, every line escaped (`radretrieve.foundation.terminal.configure_logging`)."""
    terminal.configure_logging(level)
