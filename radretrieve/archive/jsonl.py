"""JSON Lines files (manifests, report exports): one JSON object per non-blank line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path


def json_objects(
    path: Path, fail: Callable[[str], Exception], what: str, required: tuple[str, ...] = ()
) -> Iterator[dict]:
    """The objects of `path`, in order. A bad line raises `fail(message)`, one line naming `what` (the file as
    the user knows it) and the line number; `required` keys must be present in every object."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise fail(f"{what} line {n}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or any(k not in row for k in required):
                need = f"an object with a {', '.join(repr(k) for k in required)}" if required else "a JSON object"
                raise fail(f"{what} line {n}: each line {'needs' if required else 'must be'} {need}")
            yield row
