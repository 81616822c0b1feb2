"""ASGI middleware of the service: the request log, the last-resort error guard, and security headers.

The request log is the access log: method, route *template* (`/api/item/{item_id}`, never the path or the
query string, which carry query texts and study keys), status and milliseconds. uvicorn's own access log is
off (`radretrieve.application.web.app.serve`), because it prints the full request line.
"""

from __future__ import annotations

import logging
import time
import traceback

from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("radretrieve.access")
log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",  # another site's page may not embed a thumbnail (hosts)
}


def route_of(scope: Scope) -> str:
    """The matched route's template, or "-" (an unmatched path is whatever the client typed: not logged)."""
    return getattr(scope.get("route"), "path", None) or "-"


class RequestLog:
    """One log line per request: method, route template, status, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ms = (time.perf_counter() - start) * 1000
            access_log.info("%s %s %d %.1f ms", scope["method"], route_of(scope), status, ms)


class ErrorGuard:
    """Unexpected exceptions become a bare 500; the log gets the type and the frames, not the message (which
    may quote the request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_started(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_started)
        except Exception as exc:  # noqa: BLE001 - the service's last error boundary
            frames = "".join(traceback.format_tb(exc.__traceback__))
            log.error("internal error %s in %s %s\n%s", type(exc).__name__, scope["method"], route_of(scope), frames)
            if not started:
                await JSONResponse({"error": "internal error"}, 500)(scope, receive, send)


class SecurityHeaders:
    """Headers every response gets; `Cache-Control: no-store` unless the route set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in SECURITY_HEADERS.items():
                    headers.setdefault(key, value)
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, add_headers)
