"""DICOM UIDs received from a server, checked where they enter (listings, metadata, fetched instances).

A UID from a server goes into request URLs and item keys; a crafted one ("../../x", "/etc/y", "1.2?x=",
non-ASCII digits, a megabyte of text) could change a URL's path or reach a file name. Only what DICOM allows
(PS3.5 9.1) gets through: components of ASCII digits separated by dots, no leading zero in a component
other than "0" itself, 64 characters at most. The rejected value itself is never shown (a broken PACS may
put a patient id in a UID field): messages give only its length.
"""

from __future__ import annotations

import re

MAX_UID_LENGTH = 64
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")  # [0-9], not \d: no other scripts' digits


def is_uid(value: object) -> bool:
    """Whether `value` is a DICOM UID (a str of at most 64 characters, digits and dots as above)."""
    return isinstance(value, str) and len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def why_not_uid(value: object, what: str) -> str:
    """One line saying why `value` (the server's `what`, e.g. "Series Instance UID") was refused."""
    if value is None or value == "":
        return f"no {what}"
    if not isinstance(value, str):
        return f"a {what} that is not a string ({type(value).__name__})"
    return f"a {what} that is not a DICOM UID ({len(value)} characters)"
