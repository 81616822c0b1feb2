"""A small real HTTP proxy for tests of a client's network behaviour: it forwards GET requests to a server
(Orthanc), records every request, and injects faults chosen by the test (5xx answers, dropped connections,
a bearer-token check, or a callback that stops the server behind it).

Runs in a thread of the test process on a free 127.0.0.1 port (`with FaultProxy(target) as proxy:`).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import requests

from radretrieve.testing.local_http import LocalServer, QuietHandler

Fault = Literal["503", "500", "drop"] | None  # answer 503/500, or close the connection without an answer
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and what it did."""

    path: str  # path and query
    status: int  # the status sent (0: dropped)


class FaultProxy(LocalServer):
    """Forwards to `target` (e.g. http://127.0.0.1:8042). `fault(path, n)` is asked before each request (`n`:
    how many requests for that path came before) and may return a Fault; `token` makes it require
    `Authorization: Bearer <token>` (401 otherwise) and forward without it (to an Orthanc with no auth)."""

    def __init__(self, target: str, fault: Callable[[str, int], Fault] | None = None, token: str | None = None) -> None:
        self.target = target.rstrip("/")
        self.fault = fault or (lambda path, n: None)
        self.token = token
        self.seen: list[Seen] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._start()

    def paths(self, contains: str = "") -> list[str]:
        """Paths of the requests seen (with `contains` in them)."""
        with self._lock:
            return [s.path for s in self.seen if contains in s.path]

    def _record(self, path: str, status: int) -> None:
        with self._lock:
            self.seen.append(Seen(path, status))

    def _next(self, path: str) -> int:
        with self._lock:
            n = self._counts.get(path, 0)
            self._counts[path] = n + 1
            return n

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if proxy.token is not None and self.headers.get("Authorization") != f"Bearer {proxy.token}":
                    proxy._record(self.path, 401)
                    self._answer(401, b"")
                    return
                fault = proxy.fault(self.path, proxy._next(self.path))
                if fault == "drop":
                    proxy._record(self.path, 0)
                    self.close_connection = True
                    self.connection.shutdown(2)  # socket.SHUT_RDWR: the client sees a reset/empty reply
                    return
                if fault in ("500", "503"):
                    proxy._record(self.path, int(fault))
                    self._answer(int(fault), b"injected fault")
                    return
                self._forward()

            def _forward(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
                try:
                    r = requests.get(proxy.target + self.path, headers=headers, timeout=60)
                except requests.RequestException:
                    proxy._record(self.path, 502)
                    self._answer(502, b"upstream unreachable")
                    return
                proxy._record(self.path, r.status_code)
                extra = {k: v for k, v in r.headers.items() if k.lower() not in HOP_HEADERS}
                self._answer(r.status_code, r.content, extra)

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def __enter__(self) -> FaultProxy:
        return self
