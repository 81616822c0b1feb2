"""A small real DICOMweb server for tests of a client facing a broken or hostile PACS.

It serves DICOM files held in memory over QIDO-RS (`/studies`, `/studies/S/series`, with `offset`/`limit`)
and WADO-RS (`.../metadata`, `.../instances/I` as multipart/related), honestly, on a free 127.0.0.1 port in a
thread of the test process. A test makes it hostile with `override(path, query)`, asked first for every
request: a `Reply` it returns is sent instead (crafted UIDs, pages that never end, a huge declared or
streamed body, a body trickled byte by byte, a redirect elsewhere). Every request is recorded in `seen`.

Whatever a reply asks for, the server stops sending after `Reply.max_s` seconds and when it is closed, so a
client without bounds makes a test fail, never hang it.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.testing.local_http import LocalServer, QuietHandler

BOUNDARY = "radretrieve-test-boundary"
PIXEL_TAGS = ("7FE00010", "7FE00008", "7FE00009")


@dataclass(frozen=True)
class Reply:
    """One crafted answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/dicom+json"
    headers: tuple[tuple[str, str], ...] = ()
    declared_length: int | None = None  # Content-Length sent; None: len(body) (or none, when streaming)
    stream_bytes: int = 0  # after `body`, this many zero bytes (chunked unless declared_length is set)
    trickle_s: float = 0.0  # seconds between single bytes of `body` (0: sent at once)
    trickle_headers: bool = False  # trickle a never-ending header line instead (every `trickle_s` a byte)
    max_s: float = 60.0  # never send for longer than this


def json_reply(objs: Any) -> Reply:
    return Reply(body=json.dumps(objs).encode())


def uid_entry(tag: str, uid: object, modality: str = "") -> dict[str, Any]:
    """A QIDO-RS result object: `tag` (e.g. "0020000D") holding `uid`, and the Modality if given."""
    entry: dict[str, Any] = {tag: {"vr": "UI", "Value": [uid]}}
    if modality:
        entry["00080060"] = {"vr": "CS", "Value": [modality]}
    return entry


def redirect(location: str) -> Reply:
    return Reply(status=302, headers=(("Location", location),), content_type="text/plain")


class DicomWebServer(LocalServer):
    """Serves `files` (DICOM files) at `/dicom-web`; `override(path, query)` may answer any request instead."""

    def __init__(
        self, files: Iterable[Path] = (), override: Callable[[str, dict[str, str]], Reply | None] | None = None
    ) -> None:
        import pydicom

        self.override = override or (lambda path, query: None)
        self.seen: list[str] = []
        self.encodings: dict[str, str] = {}  # request path -> the Accept-Encoding it was sent with
        self.sent: dict[str, int] = {}  # body bytes written per request path (what the client let through)
        self.instances: dict[tuple[str, str, str], tuple[Any, bytes]] = {}
        for path in files:
            data = Path(path).read_bytes()
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            self.instances[(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)] = (ds, data)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._start()

    @property
    def dicomweb_url(self) -> str:
        """The source argument of `radretrieve index` for this server."""
        return f"dicomweb+{self.url}/dicom-web"

    def paths(self, contains: str = "") -> list[str]:
        with self._lock:
            return [p for p in self.seen if contains in p]

    # -- the honest answers -------------------------------------------------------------------------------
    def studies(self) -> list[dict[str, Any]]:
        return [uid_entry("0020000D", s) for s in sorted({k[0] for k in self.instances})]

    def series(self, study: str) -> list[dict[str, Any]]:
        found = sorted({(k[1], ds.Modality) for k, (ds, _) in self.instances.items() if k[0] == study})
        return [uid_entry("0020000E", s, m) for s, m in found]

    def metadata(self, study: str, series: str) -> list[dict[str, Any]]:
        out = []
        for key, (ds, _) in sorted(self.instances.items()):
            if key[:2] == (study, series):
                obj = ds.to_json_dict()
                out.append({tag: value for tag, value in obj.items() if tag not in PIXEL_TAGS})
        return out

    def instance(self, study: str, series: str, sop: str) -> Reply:
        found = self.instances.get((study, series, sop))
        if found is None:
            return Reply(status=404, content_type="text/plain")
        head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body = head + found[1] + f"\r\n--{BOUNDARY}--\r\n".encode()
        return Reply(body=body, content_type=f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')

    def honest(self, path: str, query: dict[str, str]) -> Reply:
        parts = path.removeprefix("/dicom-web").strip("/").split("/")
        if parts == ["studies"]:
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 1000))
            return json_reply(self.studies()[offset : offset + limit])
        if len(parts) == 3 and parts[0] == "studies" and parts[2] == "series":
            return json_reply(self.series(parts[1]))
        if len(parts) == 5 and parts[0] == "studies" and parts[4] == "metadata":
            return json_reply(self.metadata(parts[1], parts[3]))
        if len(parts) == 6 and parts[0] == "studies" and parts[4] == "instances":
            return self.instance(parts[1], parts[3], parts[5])
        return Reply(status=404, content_type="text/plain")

    # -- HTTP ----------------------------------------------------------------------------------------------
    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                split = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(split.query))
                with server._lock:
                    server.seen.append(self.path)
                    server.encodings[self.path] = self.headers.get("Accept-Encoding", "")
                reply = server.override(split.path, query) or server.honest(split.path, query)
                try:
                    self._send(reply)
                except OSError:
                    self.close_connection = True  # the client went away (e.g. it refused the answer)

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                for key, value in reply.headers:
                    self.send_header(key, value)
                if reply.trickle_headers:
                    self._trickle_header(reply)
                    return
                chunked = reply.stream_bytes > 0 and reply.declared_length is None
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    length = len(reply.body) if reply.declared_length is None else reply.declared_length
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                start = time.monotonic()
                if reply.trickle_s:
                    for i in range(len(reply.body)):
                        if server._closing.wait(reply.trickle_s) or time.monotonic() - start > reply.max_s:
                            self.close_connection = True
                            return
                        self._write(reply.body[i : i + 1], chunked)
                else:
                    self._write(reply.body, chunked)
                left = reply.stream_bytes
                block = bytes(1 << 16)
                while left > 0 and not server._closing.is_set() and time.monotonic() - start < reply.max_s:
                    self._write(block[: min(left, len(block))], chunked)
                    left -= len(block)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
                if reply.declared_length is not None and reply.declared_length != len(reply.body) + max(
                    reply.stream_bytes, 0
                ):
                    self.close_connection = True  # the declared length was a lie: end the connection

            def _trickle_header(self, reply: Reply) -> None:
                self.flush_headers()
                self.wfile.write(b"X-Trickle: ")
                start = time.monotonic()
                while not server._closing.wait(reply.trickle_s) and time.monotonic() - start < reply.max_s:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                self.close_connection = True

            def _write(self, data: bytes, chunked: bool) -> None:
                if not data:
                    return
                if chunked:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                else:
                    self.wfile.write(data)
                self.wfile.flush()
                with server._lock:
                    server.sent[self.path] = server.sent.get(self.path, 0) + len(data)

        return Handler

    def close(self) -> None:
        self._closing.set()  # replies still sending stop now
        super().close()

    def __enter__(self) -> DicomWebServer:
        return self
