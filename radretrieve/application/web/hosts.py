"""The `Host` check: the service answers only under the names it was started for (DNS rebinding).

A web page on `evil.example` can re-point its own name at 127.0.0.1; the user's browser then sends the page's
requests to the local service as same-origin requests, with `Host: evil.example:PORT`. Such a page never
holds the token, but a loopback server without one would answer it. So every request's `Host` header must be
one of the allowed names:

* the bound address itself, with the bound port (`127.0.0.1:8000`);
* for loopback and wildcard binds (`127.0.0.1`, `::1`, `localhost`, `0.0.0.0`, `::`): `127.0.0.1`, `localhost`
  and `[::1]`, the names a browser on this machine uses, with the bound port;
* each `--allowed-host NAME:PORT`, with exactly that port (a `Host` without a port is port 80 or 443: behind a
  proxy the server cannot tell which scheme the browser used);
* each `--allowed-host NAME` without a port, with any port or none: the name is the operator's (a rebinding
  page can only use a name its attacker controls), and a TLS proxy on 443 forwards `Host: NAME` bare.

Anything else, a missing `Host` or several, answers 421 with one line, before the token check and whatever the
credentials. Names compare case-insensitively; IP literals compare by value (`[0::1]` is `[::1]`).

A hostile page can also make the browser request the service under its real name, without reading the answer
(CORS stops that): an `<img>` of a thumbnail, a form posted to /logout. Such a page learns from `onload` /
`onerror` whether an item id exists, or signs the user out. Browsers say where a request comes from in
`Sec-Fetch-Site`: anything but `same-origin` or `none` (typed or bookmarked) answers 403, except a top-level
GET navigation to the page itself (`PAGE_ROUTES`: a shared link to `/` or `/login`, which shows the user the
answer, not the linking page). `/api/*` is never exempt: a link elsewhere would otherwise make the user's
browser run a search, a `where` filter included, with the user's session.
Clients that send no such header (curl, scripts, older browsers) are not affected; for older browsers every
response also says `Cross-Origin-Resource-Policy: same-origin` (`middleware.SECURITY_HEADERS`).
"""

from __future__ import annotations

import ipaddress
import re

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from radretrieve.foundation.errors import RadRetrieveError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = ("0.0.0.0", "::")
REFUSED = "this server does not answer to that Host name (start it with --allowed-host NAME to add one)"
CROSS_SITE = "requests made by another site's page are refused: open this server's page itself"
SAME_SITE_FETCH = ("same-origin", "none")
PAGE_ROUTES = ("/", "/login")  # the only routes another site may link to (a top-level GET navigation)
ANY_PORT = 0  # the port of an `--allowed-host NAME` given without one
DEFAULT_PORTS = (80, 443)  # what a `Host` header without a port may mean
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:\[\]]*)(?::([0-9]{1,5}))?")


def _name(text: str) -> str | None:
    """The normal form of a host name or IP literal (lower case; IPv6 in brackets, compressed), or None."""
    text = text.lower()
    try:
        address = ipaddress.ip_address(text[1:-1] if text.startswith("[") and text.endswith("]") else text)
    except ValueError:
        if text.startswith("[") or len(text) > 253 or not all(_LABEL.fullmatch(p) for p in text.split(".")):
            return None
        return text
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def parse_host(value: str, default_port: int) -> tuple[str, int] | None:
    """(name, port) of a `Host` header or an `--allowed-host` value, or None when it is not one."""
    value = value.strip()
    if value and ":" in value and not value.startswith("[") and value.count(":") > 1:
        value = f"[{value}]"  # a bare IPv6 address (only as an --allowed-host value; a Host header brackets it)
    match = _HOST_PORT.fullmatch(value)
    if match is None or not match.group(1):
        return None
    name = _name(match.group(1))
    if match.group(2) is None:  # no port: the default (ANY_PORT for an --allowed-host, "not said" for a Host)
        return (name, default_port) if name is not None else None
    port = int(match.group(2))
    return (name, port) if name is not None and 0 < port < 65536 else None


def allowed_hosts(bind: str, port: int, extra: tuple[str, ...] = ()) -> frozenset[tuple[str, int]]:
    """Every (name, port) the service answers to (port ANY_PORT: any); a bad `--allowed-host` is one line."""
    allowed = set()
    names = [bind]
    if bind.strip().lower() == "localhost" or bind.strip("[]") in WILDCARDS or _is_loopback_ip(bind):
        names += LOOPBACK_NAMES
    for name in names:
        parsed = parse_host(name, port)
        if parsed is not None:
            allowed.add((parsed[0], port))
    for name in extra:
        parsed = parse_host(name, ANY_PORT)
        if parsed is None:
            raise RadRetrieveError(
                f"--allowed-host {name!r}: give a host name or an IP address, optionally with :PORT (no wildcards)"
            )
        allowed.add(parsed)
    return frozenset(allowed)


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware: refuse requests whose `Host` is not an allowed name and port (421), and requests another
    site's page made the browser send (403)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[tuple[str, int]]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif not self.host_allowed(scope):
            await JSONResponse({"error": REFUSED}, 421)(scope, receive, send)
        elif cross_site(scope):
            await JSONResponse({"error": CROSS_SITE}, 403)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def host_allowed(self, scope: Scope) -> bool:
        values = Headers(scope=scope).getlist("host")
        if len(values) != 1:  # none (an HTTP/1.0 request) or several: no name to check
            return False
        parsed = parse_host(values[0], ANY_PORT)
        if parsed is None:
            return False
        name, port = parsed
        if (name, ANY_PORT) in self.allowed:  # an --allowed-host NAME without a port
            return True
        ports = DEFAULT_PORTS if port == ANY_PORT else (port,)  # no port in Host: the scheme's default
        return any((name, p) in self.allowed for p in ports)


def cross_site(scope: Scope) -> bool:
    """Whether a browser says another site (or another origin of this site) made this request, other than by
    a top-level GET navigation."""
    headers = Headers(scope=scope)
    site = headers.get("sec-fetch-site")
    if site is None or site.strip().lower() in SAME_SITE_FETCH:
        return False
    navigation = headers.get("sec-fetch-mode", "").lower() == "navigate"
    top_level = headers.get("sec-fetch-dest", "document").lower() == "document"
    page = scope["path"] in PAGE_ROUTES
    return not (scope["method"] in ("GET", "HEAD") and navigation and top_level and page)
