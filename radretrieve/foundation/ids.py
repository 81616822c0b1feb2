"""Stable int64 item ids from source keys (DESIGN.md: item id contract).

The id is the first 8 bytes of BLAKE2b(key) read as a signed little-endian int64, with the sign bit
cleared so ids are non-negative (FAISS uses -1 as "no result"). The same key gives the same id on every
run, machine and Python version (no `hash()`, which is salted per process).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

_MASK = (1 << 63) - 1


def item_id(key: str) -> int:
    """Return the stable non-negative int64 id of a source key such as a SOP/Series UID or a relative path."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK


def normalise_relpath(path: str) -> str:
    """Normalise a relative path into a key: forward slashes, no leading './'."""
    posix = PurePosixPath(path.replace("\\", "/")).as_posix()
    return "" if posix == "." else posix
