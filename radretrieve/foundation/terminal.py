"""Text bound for a terminal: control characters and escape sequences made visible, never obeyed.

File names, report text, header values and server answers come from untrusted archives. Printed raw, a name
holding "\\x1b[2J" clears the screen, "\\r" overwrites the line before it with something else, "\\x07" rings,
U+202E (right-to-left override) makes "gpj.exe" read as "exe.jpg", and "\\n" forges a whole log line. Every
character of Unicode categories Cc (controls, C1 included) and Cf (format: bidi overrides, zero-width joiners)
is shown as a Python-style escape instead ("\\x1b", "\\u202e"); everything else, accents included, stays.

The CLI routes all it prints through here: its output helpers (`radretrieve.cli.output`), its error boundary,
and the formatter of its logging handler (`PrintableFormatter`, installed by `configure_logging`, which the
CLI and every `serve --workers` process call), so a message written anywhere in the library reaches the
terminal escaped. JSON output keeps its data and stays valid JSON (`json_printable`).
"""

from __future__ import annotations

import logging
import numbers
import sys
import unicodedata
from typing import Any

LOG_FORMAT = "%(levelname)s %(message)s"
UNSAFE_CATEGORIES = ("Cc", "Cf")  # control and format characters: a terminal acts on some of each


def _unsafe(ch: str, keep: str) -> bool:
    return ch not in keep and unicodedata.category(ch) in UNSAFE_CATEGORIES


def printable(text: str, keep: str = "\n\t") -> str:
    """`text` with every control or format character not in `keep` written as an escape ("\\x1b", "\\u202e").

    `keep="\\n\\t"` (the default) is for text whose line breaks are the program's own (tables, tracebacks);
    `keep=""` for a value that must stay on its line (a file name in a message)."""
    if text.isprintable():  # fast path: nothing to escape (False for any \n or \t too)
        return text
    return "".join(_escape(ch) if _unsafe(ch, keep) else ch for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def json_printable(text: str) -> str:
    """JSON text with the control and format characters inside its strings written as JSON escapes ("\\u202e",
    surrogate pairs above U+FFFF): still valid JSON that decodes to the same data, and safe on a terminal.

    `json.dumps` escapes U+0000..U+001F itself but leaves DEL, the C1 controls (U+0080..U+009F, U+009B is a
    CSI on some terminals) and the bidi overrides raw when `ensure_ascii=False`. Outside its strings JSON text
    holds only ASCII punctuation, spaces and newlines, so every character changed here is inside a string."""
    if text.isprintable():
        return text
    return "".join(_json_escape(ch) if _unsafe(ch, "\n") else ch for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


class _Escaped:
    """A log argument shown escaped and on one line, whether the format asks for %s or %r."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return printable(str(self.value), keep="")

    def __repr__(self) -> str:
        return printable(repr(self.value), keep="")


def _escaped_arg(value: Any) -> Any:
    return value if isinstance(value, numbers.Number) else _Escaped(value)  # %d / %.1f still get numbers


class PrintableFormatter(logging.Formatter):
    """A formatter whose lines cannot drive the terminal.

    Arguments (`log.warning("skipped %s", path)`: the data) are escaped whole, newlines included, so a file
    name cannot start a line of its own; the rest (the message the code wrote, a traceback) keeps its
    newlines and tabs and is escaped otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        if record.args:
            record = logging.makeLogRecord(record.__dict__)  # a copy: other handlers see the record unchanged
            if isinstance(record.args, dict):
                record.args = {k: _escaped_arg(v) for k, v in record.args.items()}
            else:
                record.args = tuple(_escaped_arg(v) for v in record.args)  # type: ignore[union-attr]
        return printable(super().format(record))


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr through `PrintableFormatter` (a no-op when the root logger already has a handler).
    Python warnings go through it too: a decoder's warning can quote a header value or a file name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)
    logging.getLogger("faiss").setLevel(logging.WARNING)
