"""The access token: every request needs it when the server has one (bearer header, or the login cookie).

A refused request gets 401 and nothing else: no hint whether the token was missing or wrong, no data. A person
with a browser gets the login form with that 401; posting the right token sets an HttpOnly, SameSite=Strict
cookie whose value is derived from the token (an HMAC), so the token itself is not stored in the browser.
Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from radretrieve.application.web.page import StaticPage

log = logging.getLogger(__name__)

COOKIE = "radretrieve_session"
LOGIN_PATH = "/login"
MAX_FORM_BYTES = 4096  # a login form is a few dozen bytes; anything larger is refused unread


def session_value(token: str) -> str:
    """The cookie value for `token`: a keyed hash, so a stolen cookie does not reveal the token."""
    return hmac.new(token.encode(), b"radretrieve-session-v1", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class TokenAuth:
    """ASGI middleware: pass requests that carry the token (or go to the login form), refuse the rest."""

    def __init__(self, app: ASGIApp, token: str | None, login_page: StaticPage) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token else ""
        self.login_page = login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        await self.refusal(scope)(scope, receive, send)

    def allowed(self, scope: Scope) -> bool:
        if scope["path"] == LOGIN_PATH:
            return True
        headers = Headers(scope=scope)
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(credential.strip(), self.token or ""):
            return True
        cookie = cookie_parser(headers.get("cookie", "")).get(COOKIE, "")
        return bool(cookie) and _same(cookie, self.session)

    def refusal(self, scope: Scope) -> Response:
        headers = {"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"}
        accept = Headers(scope=scope).get("accept", "")
        if scope["method"] == "GET" and "text/html" in accept:  # a person at a browser: show the login form
            return self.login_page.response(status_code=401, headers=headers)
        return Response(b'{"error":"unauthorized"}', 401, headers=headers, media_type="application/json")


def login_router(token: str | None, login_page: StaticPage) -> APIRouter:
    """GET /login: the form; POST /login: check the token, set the cookie, go to the page."""
    router = APIRouter(include_in_schema=False)

    @router.get(LOGIN_PATH)
    def login_form() -> Response:
        return login_page.response() if token else RedirectResponse("/", 303)

    @router.post(LOGIN_PATH)
    async def login(request: Request) -> Response:
        if not token:
            return RedirectResponse("/", 303)
        given = await _form_token(request)
        if given is None or not _same(given, token):
            log.info("login refused")
            return login_page.response(status_code=401, headers={"Cache-Control": "no-store"})
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="strict", path="/")
        return response

    return router


async def _form_token(request: Request) -> str | None:
    """The `token` field of an urlencoded form body of at most MAX_FORM_BYTES, else None."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    values = parse_qs(body.decode("utf-8", "replace")).get("token", [])
    return values[0].strip() if len(values) == 1 else None
