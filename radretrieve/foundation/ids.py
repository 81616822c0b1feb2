"""Stable int64 item ids from source keys (docs/guide/your-data.md: Item ids).

The id is the first 8 bytes of BLAKE2b(key) read as a signed little-endian int64, with the sign bit
cleared so ids are non-negative (FAISS uses -1 as "no result"). The same key gives the same id on every
run, machine and Python version (no `hash()`, which is salted per process).
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from radretrieve.foundation.names import shown

_MASK = (1 << 63) - 1
MAX_ITEM_ID = _MASK  # ids are 0 .. 2**63 - 1
_DIGITS = frozenset("0123456789")


def item_id(key: str) -> int:
    """Return the stable non-negative int64 id of a source key such as a SOP/Series UID or a relative path."""
    # A key from a file name that is not UTF-8 is hashed in its shown form (radretrieve.foundation.names), the
    # form it is stored in, so the id of an item is the same before and after the scan shows its name.
    digest = hashlib.blake2b(shown(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK


def parse_item_id(text: str) -> int | None:
    """The item id `text` spells (ASCII digits only, surrounding whitespace ignored), or None when it is no id:
    not all digits (`"-5"`, `"²"`, `"٣"`, which `str.isdigit` or `int` would take), or above MAX_ITEM_ID."""
    text = text.strip()
    if not text or len(text) > 19 or not _DIGITS.issuperset(text):  # 2**63 - 1 has 19 digits
        return None
    value = int(text)
    return value if value <= MAX_ITEM_ID else None


def is_item_id(value: int) -> bool:
    """Whether an integer is in the range of item ids (a bigger or negative one cannot be in any index)."""
    return 0 <= value <= MAX_ITEM_ID


def normalise_relpath(path: str) -> str:
    """Normalise a relative path into a key: forward slashes, no leading './'."""
    posix = PurePosixPath(path.replace("\\", "/")).as_posix()
    return "" if posix == "." else posix
