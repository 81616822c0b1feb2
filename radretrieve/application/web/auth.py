"""The access token: every request needs it when the server has one (bearer header, or a login session).

A refused request gets 401 and nothing else: no hint whether the token was missing or wrong, no data. A person
with a browser gets the login form with that 401; posting the right token starts a session
(`radretrieve.application.web.sessions`: a fresh random id per login, kept on the server, with an expiry) and
sets it as an HttpOnly, SameSite=Strict cookie (Secure over https, and always with `--secure-cookies`: behind
a TLS proxy the server itself sees plain http); `POST /logout` ends it. The token is
never stored in the browser.

The credential forms accepted, exactly: `Authorization: Bearer TOKEN` (the scheme in any case, one or more
spaces, then the whole token, nothing after it); the login form's `token` field (surrounding ASCII whitespace
of a pasted token ignored); the cookie holding a live session id. Comparisons are constant-time (SHA-256 of
both sides, then `hmac.compare_digest`), and failed bearer tokens and logins are throttled per client address
(`throttle`): 429 with Retry-After once an address has used its tries. A login spends its try before its
body is read (`FailureThrottle.take`, given back when the token was right), so concurrent logins from one
address are throttled like consecutive ones.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from radretrieve.application.web.page import StaticPage
from radretrieve.application.web.sessions import SessionStore
from radretrieve.application.web.throttle import FailureThrottle

log = logging.getLogger(__name__)

COOKIE = "radretrieve_session"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
MAX_FORM_BYTES = 4096  # a login form is a few dozen bytes; anything larger is refused unread
_BEARER = re.compile(r"bearer +(\S+)", re.IGNORECASE)  # RFC 6750: scheme, 1*SP, the token; nothing else
_ASCII_SPACE = " \t\r\n"
UNAUTHORIZED = b'{"error":"unauthorized"}'


def same_secret(given: str, secret: str) -> bool:
    """Constant-time equality: digests of equal length, so neither the length nor a common prefix shows."""
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, hashlib.sha256(secret.encode("utf-8")).digest())


@dataclass(frozen=True)
class Access:
    """The credentials of a server with a token: the token, its sessions, the throttle of failures."""

    token: str
    sessions: SessionStore
    throttle: FailureThrottle
    secure_cookies: bool = False  # the cookie is Secure whatever the scheme (behind a TLS proxy: --secure-cookies)

    def bearer_ok(self, value: str) -> bool:
        match = _BEARER.fullmatch(value.strip(" \t"))  # HTTP's optional whitespace around a header value
        return match is not None and same_secret(match.group(1), self.token)

    def session_of(self, headers: Headers) -> str:
        """The session id in the request's cookie ("" if none)."""
        return cookie_parser(headers.get("cookie", "")).get(COOKIE, "")


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def too_many(wait: int) -> Response:
    body = json.dumps({"error": f"too many failed attempts from this address: retry after {wait} s"}).encode()
    headers = {"Retry-After": str(wait), "Cache-Control": "no-store"}
    return Response(body, 429, headers=headers, media_type="application/json")


class TokenAuth:
    """ASGI middleware: pass requests with a live session or the token (and the login form), refuse the rest."""

    def __init__(self, app: ASGIApp, access: Access | None, login_page: StaticPage) -> None:
        self.app = app
        self.access = access
        self.login_page = login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.access is None or scope["type"] != "http" or scope["path"] in (LOGIN_PATH, LOGOUT_PATH):
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope, self.access)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def check(self, scope: Scope, access: Access) -> Response | None:
        """None if the request may pass, else the response that refuses it."""
        headers = Headers(scope=scope)
        sid = access.session_of(headers)
        if sid and access.sessions.valid(sid):
            return None
        given = headers.getlist("authorization")
        if given:
            address = client_address(scope)
            wait = access.throttle.retry_after(address)
            if wait:  # not even checked: guessing runs at the throttle's rate
                return too_many(wait)
            if len(given) == 1 and access.bearer_ok(given[0]):
                return None
            access.throttle.failed(address)
        return self.refusal(scope)

    def refusal(self, scope: Scope) -> Response:
        headers = {"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"}
        accept = Headers(scope=scope).get("accept", "")
        if scope["method"] == "GET" and "text/html" in accept:  # a person at a browser: show the login form
            return self.login_page.response(status_code=401, headers=headers)
        return Response(UNAUTHORIZED, 401, headers=headers, media_type="application/json")


def login_router(access: Access | None, login_page: StaticPage) -> APIRouter:
    """GET /login: the form; POST /login: check the token, start a session, go to the page; POST /logout."""
    router = APIRouter(include_in_schema=False)

    @router.get(LOGIN_PATH)
    def login_form() -> Response:
        return login_page.response() if access else RedirectResponse("/", 303)

    @router.post(LOGIN_PATH)
    async def login(request: Request) -> Response:
        if access is None:
            return RedirectResponse("/", 303)
        address = client_address(request.scope)
        # the try is spent before the body is awaited: concurrent logins cannot all pass the check at once
        wait = access.throttle.take(address)
        if wait:
            return too_many(wait)
        given = await _form_token(request)
        if given is None or not same_secret(given, access.token):
            log.info("login refused")
            return login_page.response(status_code=401, headers={"Cache-Control": "no-store"})
        access.throttle.refund(address)
        response = RedirectResponse("/", 303)
        response.set_cookie(
            COOKIE,
            access.sessions.create(),
            max_age=int(access.sessions.lifetime_s),
            path="/",
            secure=access.secure_cookies or request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    @router.post(LOGOUT_PATH)
    def logout(request: Request) -> Response:
        """End this browser's session (the id is revoked on the server, not only forgotten by the browser)."""
        if access is None:
            return RedirectResponse("/", 303)
        access.sessions.revoke(access.session_of(request.headers))
        response = RedirectResponse(LOGIN_PATH, 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return router


async def _form_token(request: Request) -> str | None:
    """The one `token` field of an urlencoded form body of at most MAX_FORM_BYTES, else None."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    values = parse_qs(body.decode("utf-8", "replace")).get("token", [])
    return values[0].strip(_ASCII_SPACE) if len(values) == 1 else None
