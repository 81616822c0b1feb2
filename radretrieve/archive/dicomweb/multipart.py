"""The one part of a WADO-RS instance answer, taken out of its multipart/related body as the body arrives.

`PartWriter` is the `sink` of `transport.streaming`: it is told the answer's headers, then fed the body chunk
by chunk, and writes the bytes of the single part (the DICOM file) to `out` as they come, holding back only
the few bytes that could begin the next boundary. So an instance is never held whole in memory on its way to
disk (`requests`/`dicomweb-client` would hold the body, a copy of it, and the part). An answer sent as bare
`application/dicom` (allowed by some servers) is written as it is.
"""

from __future__ import annotations

import re
from typing import IO, Any

MAX_PART_HEADERS = 16 * 1024  # bytes of part headers (a preamble before them is dropped as it arrives)
_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)


class MalformedMultipart(ValueError):
    """An answer that is not one DICOM part in multipart/related (`client.describe`: not transient)."""


class PartWriter:
    """Writes the body of the single part of a multipart/related answer to `out`."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self._delimiter = b""  # CRLF "--" boundary: what ends the part ("" = not multipart: write everything)
        self._state = "headers"
        self._buf = bytearray()
        self._at_start = True  # nothing but (the beginning of) an opening boundary received yet

    def begin(self, headers: Any) -> None:
        content_type = headers.get("content-type", "")
        if content_type.lower().startswith("application/dicom"):
            self._state = "body"
            return
        found = _BOUNDARY.search(content_type)
        if not content_type.lower().startswith("multipart/related") or found is None:
            raise MalformedMultipart("not multipart/related with a boundary")
        self._delimiter = b"\r\n--" + found.group(1).encode("latin-1")

    def write(self, chunk: bytes) -> None:
        if self._state == "done" or not chunk:
            return  # after the part: the closing boundary's epilogue is not kept
        self._buf += chunk
        if self._state == "headers":
            self._skip_headers()
        if self._state == "body":
            self._write_body()
        if self._state == "closing":
            self._check_closing()

    def finish(self) -> None:
        """Raise MalformedMultipart unless the whole part arrived (its closing boundary, when multipart)."""
        if not self._delimiter:
            self.out.write(self._buf)
            self._buf = bytearray()
        elif self._state != "done":
            raise MalformedMultipart("the answer ended inside its part")

    def _skip_headers(self) -> None:
        dash = self._delimiter[2:]  # the first boundary may open the body, without the CRLF before it
        opens = self._at_start and self._buf.startswith(dash)
        first = 0 if opens else self._buf.find(self._delimiter)
        if first < 0:
            if self._at_start and dash.startswith(bytes(self._buf)):
                return  # the opening boundary may still be arriving
            self._at_start = False
            keep = len(self._delimiter) - 1  # the preamble is dropped as it comes, but a boundary's beginning
            del self._buf[: max(0, len(self._buf) - keep)]
            return
        after = first + (len(dash) if opens else len(self._delimiter))
        end = self._buf.find(b"\r\n\r\n", after)
        if end < 0:
            if len(self._buf) - after > MAX_PART_HEADERS:
                raise MalformedMultipart("part headers longer than 16 KiB")
            return
        if self._buf[after : after + 2] == b"--":
            raise MalformedMultipart("no part in the answer")
        del self._buf[: end + 4]
        self._state = "body"

    def _write_body(self) -> None:
        if not self._delimiter:
            self.out.write(self._buf)
            self._buf = bytearray()
            return
        end = self._buf.find(self._delimiter)
        if end < 0:
            keep = len(self._delimiter) - 1  # a boundary may begin in this chunk and end in the next
            if len(self._buf) > keep:
                self.out.write(memoryview(self._buf)[: len(self._buf) - keep])
                del self._buf[: len(self._buf) - keep]
            return
        self.out.write(memoryview(self._buf)[:end])
        del self._buf[: end + len(self._delimiter)]
        self._state = "closing"

    def _check_closing(self) -> None:
        if len(self._buf) < 2:
            return  # the two bytes after the boundary are still to come
        if self._buf[:2] != b"--":
            raise MalformedMultipart("more than one part: one instance was asked for")
        self._buf = bytearray()
        self._state = "done"
