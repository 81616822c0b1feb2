"""The part every test HTTP server here shares: a threaded server on a free 127.0.0.1 port, in a daemon thread
of the test process, closed by `close()` or a `with` block; and a request handler that speaks HTTP/1.1 and
keeps quiet (tests read what the server recorded, not stderr)."""

from __future__ import annotations

import http.server
import threading
from typing import Any


class QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test reads what the server recorded, not stderr


class LocalServer:
    """Serves requests with the handler class of `_handler()` on 127.0.0.1 until closed."""

    def _start(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
