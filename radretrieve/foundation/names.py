"""File names that are not valid UTF-8, made safe to store and show.

POSIX file names are bytes; Python hands an undecodable byte (0x80-0xff) of one to us as a lone surrogate
(U+DC80-U+DCFF, PEP 383 `surrogateescape`). Such a string opens the file again, but it cannot be written as
UTF-8: one of them in a shard column, an error record or a log line stops the whole job. So every path-derived
string leaves the scan in its *shown* form: each undecodable byte spelled `\\xNN` (lowercase hex), the rest
unchanged. The form is unambiguous because scanned paths never hold a backslash (`normalise_relpath` makes it a
`/`), and `real_name` turns it back into the name that opens the file (thumbnails, previews); `Item.files`
keeps the real names for the readers meanwhile.
"""

from __future__ import annotations

import re

_SURROGATES = re.compile("[\udc80-\udcff]")
_ESCAPED = re.compile(r"\\x([89a-f][0-9a-f])")


def shown(text: str) -> str:
    """`text` with each undecodable file-name byte spelled `\\xNN`: valid UTF-8 (itself when it already is)."""
    if text.isascii():
        return text
    out = _SURROGATES.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)
    # Any other lone surrogate (not from a file name) has no byte behind it: replaced, so the text encodes.
    return out.encode("utf-8", "replace").decode("utf-8")


def real_name(text: str) -> str:
    """The file name a `shown` path stands for (surrogate-escaped, as `os` functions take it)."""
    if "\\x" not in text:
        return text
    return _ESCAPED.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
