"""`radretrieve serve` against a hostile web page and a credential guesser, on the real servers.

The plain server (no token) and the token server (two workers, `--allowed-host search.hospital.example`) are
the session fixtures of tests/conftest.py. Failed credentials are throttled per client address, so every test
that fails on purpose sends from its own loopback address (`fresh_address`: 127.1.x.y; the servers listen on
127.0.0.1 and nothing else is contacted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.serve_env import ALLOWED_HOST, REPO, TOKEN, fresh_address

UNAUTHORIZED = b'{"error":"unauthorized"}'
SID_CHARS = 43  # secrets.token_urlsafe(32)


def _volume(serve_env):
    return next(i for i in serve_env["items"] if i.kind == "volume")


def _no_data(response: httpx.Response) -> None:
    """A refusal: one JSON error line and nothing of the index."""
    assert response.headers["content-type"] == "application/json"
    assert list(response.json()) == ["error"] and "\n" not in response.json()["error"]
    assert b"study" not in response.content and b"item" not in response.content


# -- DNS rebinding: the Host header ----------------------------------------------------------------------------
def _host_paths(serve_env) -> list[str]:
    volume = _volume(serve_env)
    return ["/", "/login", "/api/health", "/api/search?q=chest", f"/api/item/{volume.item_id}", "/openapi.json"]


REBOUND = [
    "evil.example:{port}",  # the attacker's name, re-pointed at 127.0.0.1
    "evil.example",
    "localhost.evil.example:{port}",
    "127.0.0.1.evil.example:{port}",
    "localhost.:{port}",
    "127.0.0.1",  # right name, wrong port (80)
    "127.0.0.1:{other}",
    "127.0.0.1:{port}@evil.example",
    "",
]


@pytest.mark.parametrize("host", REBOUND)
def test_a_rebound_host_name_is_refused_without_a_token(server, serve_env, host):
    port = server.port
    with server.client() as client:
        for path in _host_paths(serve_env):
            response = client.get(path, headers={"Host": host.format(port=port, other=port + 1)})
            assert response.status_code == 421, (path, response.text)
            _no_data(response)
            assert "--allowed-host" in response.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}", "[::1]:{port}"])
def test_the_loopback_names_are_answered(server, host):
    with server.client() as client:
        response = client.get("/api/health", headers={"Host": host.format(port=server.port)})
        assert response.status_code == 200 and response.json()["status"] == "ready"


def _raw(port: int, request: bytes, address: str | None = None) -> bytes:
    """The raw answer to a raw request (for what httpx will not send: no Host, two Hosts, trailing spaces)."""
    source = (address, 0) if address else None
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=source) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _raw_get(server, path: str, header: bytes) -> tuple[int, bytes]:
    """(status, body) of GET `path` with one extra raw header line, from a fresh address."""
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    request = b"GET " + path.encode() + b" HTTP/1.1\r\n" + host + header + b"\r\nConnection: close\r\n\r\n"
    answer = _raw(server.port, request, fresh_address())
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "request_bytes,statuses",
    [
        # HTTP/1.0 needs no Host: h11 passes it on, the Host check refuses it
        (b"GET /api/search?q=chest HTTP/1.0\r\n\r\n", {421}),
        # h11 itself refuses these two (400); the Host check would too
        (b"GET /api/search?q=chest HTTP/1.1\r\nConnection: close\r\n\r\n", {400, 421}),
        (
            b"GET /api/search?q=chest HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n"
            b"Connection: close\r\n\r\n",
            {400, 421},
        ),
    ],
    ids=["http1.0-no-host", "http1.1-no-host", "two-hosts"],
)
def test_a_missing_or_doubled_host_is_refused(server, request_bytes, statuses):
    answer = _raw(server.port, request_bytes.replace(b"{port}", str(server.port).encode()))
    assert int(answer.split(b" ", 2)[1]) in statuses, answer[:200]
    assert b'"hits"' not in answer


def test_with_a_token_the_host_is_checked_first_and_allowed_host_adds_a_name(token_server):
    port = token_server.port
    with token_server.client(TOKEN) as client:
        for host in (
            f"evil.example:{port}",
            f"{ALLOWED_HOST}.evil.example:{port}",
            "127.0.0.1",
            f"localhost:{port + 1}",
        ):
            refused = client.get("/api/search", params={"q": "chest"}, headers={"Host": host})
            assert refused.status_code == 421, host  # the right token does not help a rebound page
            _no_data(refused)
        # --allowed-host NAME without a port: that name with any port or none (a TLS proxy on 443 sends it bare)
        for host in (f"{ALLOWED_HOST}:{port}", f"{ALLOWED_HOST.upper()}:{port}", f"127.0.0.1:{port}", ALLOWED_HOST):
            assert client.get("/api/search", params={"q": "chest"}, headers={"Host": host}).status_code == 200, host
        for host in (f"{ALLOWED_HOST}:443", f"{ALLOWED_HOST}:{port + 1}"):
            assert client.get("/api/search", params={"q": "chest"}, headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_of_a_wildcard_and_a_lan_bind():
    from radretrieve.application.web.hosts import ANY_PORT, allowed_hosts

    loopback = {("127.0.0.1", 8000), ("localhost", 8000), ("[::1]", 8000)}
    assert allowed_hosts("0.0.0.0", 8000, ("10.1.2.3", "Search.Example:443")) == {
        ("0.0.0.0", 8000),
        *loopback,
        ("10.1.2.3", ANY_PORT),  # an --allowed-host without a port: any port
        ("search.example", 443),
    }
    assert allowed_hosts("10.1.2.3", 8000) == {("10.1.2.3", 8000)}  # not loopback: no localhost names
    assert allowed_hosts("::1", 8000, ("fe80:0::1",)) == {*loopback, ("[fe80::1]", ANY_PORT)}


@pytest.mark.parametrize(
    "allowed,answered,refused",
    [
        # behind a TLS proxy on 443 that forwards `Host: NAME` as the browser sent it (no port)
        ("search.hospital.org", ["search.hospital.org", "search.hospital.org:443", "SEARCH.hospital.org:8000"], []),
        ("search.hospital.org:443", ["search.hospital.org", "search.hospital.org:443"], ["search.hospital.org:8000"]),
        ("search.hospital.org:8443", ["search.hospital.org:8443"], ["search.hospital.org", "search.hospital.org:443"]),
    ],
)
def test_an_allowed_host_behind_a_tls_proxy(allowed, answered, refused):
    from radretrieve.application.web.hosts import HostCheck, allowed_hosts

    check = HostCheck(None, allowed_hosts("127.0.0.1", 8000, (allowed,)))
    scope = lambda host: {"type": "http", "headers": [(b"host", host.encode())]}  # noqa: E731
    for host in answered:
        assert check.host_allowed(scope(host)), (allowed, host)
    for host in [*refused, "evil.example", "search.hospital.org.evil.example", "127.0.0.1", "localhost:8001"]:
        assert not check.host_allowed(scope(host)), (allowed, host)
    assert check.host_allowed(scope("127.0.0.1:8000")) and check.host_allowed(scope("localhost:8000"))


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--allowed-host", "*"], "--allowed-host '*'"),
        (["--allowed-host", "*.example.org"], "--allowed-host '*.example.org'"),
        (["--allowed-host", "search.example:99999"], "--allowed-host 'search.example:99999'"),
        (["--allowed-host", "http://search.example/"], "--allowed-host 'http://search.example/'"),
        (["--session-hours", "0"], "--session-hours 0"),
    ],
)
def test_bad_allowed_host_and_session_hours_are_refused_in_one_line(serve_env, args, needle):
    cmd = [sys.executable, "-m", "radretrieve", "serve", "--index", str(serve_env["out"]), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {needle}"), proc.stderr


# -- another site's page: what it can make the browser send -----------------------------------------------------
def _fetch(site: str, mode: str, dest: str) -> dict[str, str]:
    return {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": mode, "Sec-Fetch-Dest": dest}


def test_another_sites_page_cannot_embed_or_fetch_from_the_service(server, serve_env):
    """An <img> of a thumbnail tells a page by onload/onerror whether an item exists; a fetch or a form is a
    request made in the user's name. The browser says who made them (Sec-Fetch-*): refused, as is same-site
    (another port of the same host)."""
    volume = _volume(serve_env)
    thumb, search = f"/api/thumbnail/{volume.item_id}.png", "/api/search?q=chest"
    with server.client() as client:
        for site in ("cross-site", "same-site"):
            for path, headers in (
                (thumb, _fetch(site, "no-cors", "image")),
                (search, _fetch(site, "cors", "empty")),
                (search, _fetch(site, "no-cors", "script")),
                ("/", _fetch(site, "navigate", "iframe")),
                # a link elsewhere may open the page, never run a search (a `where` with the user's session)
                (search + "&where=true", _fetch(site, "navigate", "document")),
                (thumb, _fetch(site, "navigate", "document")),
                ("/openapi.json", _fetch(site, "navigate", "document")),
            ):
                response = client.get(path, headers=headers)
                assert response.status_code == 403, (path, headers)
                _no_data(response)
                assert not response.content.startswith(b"\x89PNG")
        # the page's own requests, a typed address, a link from elsewhere (top-level), and non-browsers pass
        for path, headers in (
            (thumb, _fetch("same-origin", "no-cors", "image")),
            (search, _fetch("same-origin", "cors", "empty")),
            ("/", _fetch("none", "navigate", "document")),
            ("/?q=chest", _fetch("cross-site", "navigate", "document")),
            ("/login", _fetch("cross-site", "navigate", "document")),  # no token here: 303 to the page
            (search, {}),
        ):
            response = client.get(path, headers=headers, follow_redirects=False)
            assert response.status_code == (303 if path == "/login" else 200), (path, headers)
            assert response.headers["cross-origin-resource-policy"] == "same-origin"


def test_another_sites_form_cannot_sign_the_user_out(token_server):
    sid, _ = _login(token_server)
    with token_server.client(address=fresh_address()) as client:
        cookie = {"Cookie": f"radretrieve_session={sid}"}
        for site in ("cross-site", "same-site"):
            response = client.post("/logout", headers={**cookie, **_fetch(site, "navigate", "document")})
            assert response.status_code == 403
    assert _with_cookie(token_server, sid).status_code == 200  # still signed in


# -- credentials: every spelling that is not exactly the token is refused --------------------------------------
def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"user:{secret}".encode()).decode()


BEARER_REFUSED = {
    "empty header": "",
    "empty bearer": "Bearer ",
    "bearer alone": "Bearer",
    "bearer spaces": "Bearer    ",
    "token without scheme": TOKEN,
    "prefix": f"Bearer {TOKEN[:-1]}",
    "first character": f"Bearer {TOKEN[:1]}",
    "first half": f"Bearer {TOKEN[: len(TOKEN) // 2]}",
    "suffix": f"Bearer {TOKEN[1:]}",
    "one more character": f"Bearer {TOKEN}x",
    "token twice": f"Bearer {TOKEN}{TOKEN}",
    "token, space, token": f"Bearer {TOKEN} {TOKEN}",
    "over-long": f"Bearer {TOKEN}{'A' * 8000}",
    "upper case": f"Bearer {TOKEN.upper()}",
    "swapped case": f"Bearer {TOKEN.swapcase()}",
    "space inside": f"Bearer {TOKEN[:8]} {TOKEN[8:]}",
    "tab for space": f"Bearer\t{TOKEN}",
    "colon for space": f"Bearer:{TOKEN}",
    "no-break space after": ("Bearer " + TOKEN + "\u00a0").encode(),
    "zero-width space before": ("Bearer \u200b" + TOKEN).encode(),
    "non-ASCII last character": ("Bearer " + TOKEN[:-1] + "\u00e9").encode(),
    "Basic with the token": _basic(TOKEN),
    "Basic, token as is": f"Basic {TOKEN}",
    "Token scheme": f"Token {TOKEN}",
    "Bearerx scheme": f"Bearerx {TOKEN}",
}


@pytest.mark.parametrize("value", list(BEARER_REFUSED.values()), ids=list(BEARER_REFUSED))
def test_a_bearer_that_is_not_exactly_the_token_is_refused(token_server, value):
    """Sent as raw bytes: httpx refuses to send some of these (a trailing space)."""
    raw = value if isinstance(value, bytes) else value.encode()
    status, body = _raw_get(token_server, "/api/search?q=chest", b"Authorization: " + raw)
    assert status == 401 and body == UNAUTHORIZED, (status, body[:200])


@pytest.mark.parametrize(
    "value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer   {TOKEN}", f"  Bearer {TOKEN}  "]
)
def test_the_bearer_scheme_is_case_insensitive_and_the_token_exact(token_server, value):
    status, body = _raw_get(token_server, "/api/health", b"Authorization: " + value.encode())
    assert status == 200 and json.loads(body)["status"] == "ready"


LOGIN_REFUSED = {
    "empty": {"data": {"token": ""}},
    "no token field": {"data": {"password": TOKEN}},
    "prefix": {"data": {"token": TOKEN[:-1]}},
    "first character": {"data": {"token": TOKEN[:1]}},
    "one more character": {"data": {"token": TOKEN + "x"}},
    "upper case": {"data": {"token": TOKEN.upper()}},
    "over-long": {"data": {"token": TOKEN + "A" * 5000}},
    "space inside": {"data": {"token": f"{TOKEN[:8]} {TOKEN[8:]}"}},
    "no-break space after": {"data": {"token": TOKEN + "\u00a0"}},
    "zero-width space before": {"data": {"token": "\u200b" + TOKEN}},
    "non-ASCII last character": {"data": {"token": TOKEN[:-1] + "\u00e9"}},
    "two token fields": {"data": {"token": [TOKEN, TOKEN]}},
    "in the query string": {"params": {"token": TOKEN}},
    "as JSON": {"json": {"token": TOKEN}},
}


@pytest.mark.parametrize("kwargs", list(LOGIN_REFUSED.values()), ids=list(LOGIN_REFUSED))
def test_a_login_that_is_not_exactly_the_token_is_refused(token_server, kwargs):
    with token_server.client(address=fresh_address()) as client:
        response = client.post("/login", **kwargs)
        assert response.status_code == 401 and "set-cookie" not in response.headers
        assert 'action="/login"' in response.text  # the form again
        assert client.get("/api/health").status_code == 401


@pytest.mark.parametrize("given", [TOKEN, f"  {TOKEN}\n"], ids=["exact", "pasted with whitespace"])
def test_a_login_with_the_token_starts_a_session(token_server, given):
    with token_server.client(address=fresh_address()) as client:
        response = client.post("/login", data={"token": given})
        assert response.status_code == 303 and response.headers["location"] == "/"
        assert client.get("/api/health").status_code == 200


def _login(token_server) -> tuple[str, str]:
    """A new session: (its id, the Set-Cookie header)."""
    with token_server.client(address=fresh_address()) as client:
        response = client.post("/login", data={"token": TOKEN})
    assert response.status_code == 303, response.text
    return response.cookies["radretrieve_session"], response.headers["set-cookie"]


def _with_cookie(token_server, value: str | bytes, path: str = "/api/health") -> httpx.Response:
    """A request with exactly this cookie value, on a new connection (so either worker may answer)."""
    raw = value if isinstance(value, bytes) else value.encode()
    with token_server.client(address=fresh_address()) as client:
        return client.get(path, headers={"Cookie": b"radretrieve_session=" + raw})


def test_a_cookie_that_is_not_exactly_a_live_session_is_refused(token_server):
    sid, _ = _login(token_server)
    old_style = hmac.new(TOKEN.encode(), b"radretrieve-session-v1", hashlib.sha256).hexdigest()
    refused = {
        "empty": "",
        "prefix": sid[:-1],
        "first half": sid[: len(sid) // 2],
        "one more character": sid + "A",
        "over-long": sid * 100,
        "upper case": sid.upper(),
        "swapped case": sid.swapcase(),
        "rotated": sid[1:] + sid[0],
        "space inside": sid[:10] + " " + sid[10:],
        "no-break space after": (sid + "\u00a0").encode(),
        "non-ASCII last character": (sid[:-1] + "\u00e9").encode(),
        "right shape, never issued": "A" * SID_CHARS,
        "the token": TOKEN,
        "the old cookie (HMAC of the token)": old_style,
    }
    for name, value in refused.items():
        if value == sid:
            continue  # upper/swapped case of an id without letters (never in practice)
        response = _with_cookie(token_server, value)
        assert response.status_code == 401 and response.content == UNAUTHORIZED, name
    assert _with_cookie(token_server, sid).status_code == 200


# -- sessions: fresh per login, expiring, revocable -----------------------------------------------------------
def _attributes(set_cookie: str) -> dict[str, str]:
    parts = [p.strip() for p in set_cookie.split(";")]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else "") for p in parts[1:]}


def test_each_login_is_a_fresh_session_and_logout_revokes_it_on_every_worker(token_server):
    sid1, header1 = _login(token_server)
    sid2, _ = _login(token_server)
    assert sid1 != sid2 and len(sid1) == len(sid2) == SID_CHARS and TOKEN not in header1
    attributes = _attributes(header1)
    assert {"httponly", "path", "max-age", "samesite"} <= set(attributes) and "secure" not in attributes  # http
    assert attributes["samesite"].lower() == "strict" and attributes["path"] == "/"
    assert attributes["max-age"] == str(12 * 3600)  # --session-hours' default
    for _ in range(6):  # new connections: both worker processes see both sessions
        assert _with_cookie(token_server, sid1).status_code == 200
        assert _with_cookie(token_server, sid2).status_code == 200

    with token_server.client(address=fresh_address()) as client:
        out = client.post("/logout", headers={"Cookie": f"radretrieve_session={sid1}"})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert _attributes(out.headers["set-cookie"]).get("max-age") == "0"  # the browser forgets it too
    for _ in range(6):  # revoked on the server: a copy of the cookie is refused by every worker
        assert _with_cookie(token_server, sid1).status_code == 401
        assert _with_cookie(token_server, sid2).status_code == 200  # the other login lives on


def test_sessions_live_in_a_private_folder_that_is_gone_when_the_server_stops(serve_env, tmp_path):
    """One worker this time (uvicorn re-raises SIGTERM there); its temporary folder is this test's."""
    from tests.serve_env import Server

    token_file, tmp = tmp_path / "token", tmp_path / "tmp"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    tmp.mkdir()
    srv = Server(
        serve_env["out"],
        tmp_path / "server.log",
        "--token-file",
        str(token_file),
        token=TOKEN,
        env={"TMPDIR": str(tmp)},
    )
    try:
        with srv.client(address=fresh_address()) as client:
            assert client.post("/login", data={"token": TOKEN}).status_code == 303
            sid = client.cookies["radretrieve_session"]
        (folder,) = tmp.iterdir()
        assert folder.name.startswith("radretrieve-sessions-") and folder.stat().st_mode & 0o777 == 0o700
        (session,) = folder.iterdir()
        assert sid not in session.name and sid not in session.read_text()
    finally:
        srv.stop()
    assert srv.proc.returncode == 143 and list(tmp.iterdir()) == []  # exited through Python, folder removed


def test_sessions_expire_and_are_kept_as_hashes(tmp_path):
    from radretrieve.application.web.sessions import SessionStore

    now = [1_000_000.0]  # a clock the test moves: however slow the machine, nothing expires before it says so
    store = SessionStore(tmp_path, lifetime_s=60.0, clock=lambda: now[0])
    sid, other = store.create(), store.create()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and sid not in files and all(sid not in p.read_text() for p in tmp_path.iterdir())
    assert store.valid(sid) and store.valid(other)
    store.revoke(other)
    now[0] += 59.0
    assert not store.valid(other) and store.valid(sid)
    now[0] += 1.0
    assert not store.valid(sid)  # expired on the server, whatever the browser keeps
    assert list(tmp_path.iterdir()) == []  # and its file is gone


def test_expired_sessions_are_pruned_at_the_next_login(tmp_path):
    from radretrieve.application.web.sessions import SessionStore

    SessionStore(tmp_path, lifetime_s=0.2).create()
    time.sleep(0.4)
    fresh = SessionStore(tmp_path, lifetime_s=60).create()
    assert len(list(tmp_path.iterdir())) == 1 and SessionStore(tmp_path, 60).valid(fresh)


# -- throttling: a guesser gets 429, everyone else is answered ------------------------------------------------
def test_wrong_bearer_tokens_are_throttled_per_address(token_server):
    from radretrieve.application.web.throttle import BURST, PER_SECOND

    attacker = token_server.client(address=fresh_address())  # one keep-alive connection: one worker
    try:
        start, statuses = time.monotonic(), []
        for i in range(60):
            response = attacker.get("/api/health", headers={"Authorization": f"Bearer guess-{i:04d}-{'x' * 20}"})
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert int(response.headers["retry-after"]) >= 1
                _no_data(response)
        elapsed = time.monotonic() - start
        assert set(statuses) == {401, 429}
        assert statuses.count(401) <= BURST + PER_SECOND * elapsed + 1, (statuses, elapsed)
        assert statuses[:BURST] == [401] * BURST  # the first tries are answered as before
        # while throttled, credentials from that address are not even checked: the right token too
        right = {"Authorization": f"Bearer {TOKEN}"}
        assert attacker.get("/api/health", headers=right).status_code == 429
        assert attacker.post("/login", data={"token": TOKEN}).status_code == 429
        # every other address is answered at once: right tokens work, wrong ones are plain 401s
        with token_server.client(address=fresh_address()) as other:
            t0 = time.monotonic()
            assert all(other.get("/api/health", headers=right).status_code == 200 for _ in range(20))
            assert time.monotonic() - t0 < 10
            assert other.get("/api/health", headers={"Authorization": "Bearer nope"}).status_code == 401
        time.sleep(int(attacker.get("/api/health", headers=right).headers["retry-after"]))
        assert attacker.get("/api/health", headers=right).status_code == 200  # a try came back
    finally:
        attacker.close()


def test_failed_logins_are_throttled_and_a_live_session_still_passes(token_server):
    from radretrieve.application.web.throttle import BURST

    sid, _ = _login(token_server)
    with token_server.client(address=fresh_address()) as guesser:
        statuses = [guesser.post("/login", data={"token": f"guess-{i:04d}-{'y' * 20}"}).status_code for i in range(25)]
        assert statuses[:BURST] == [401] * BURST and statuses[-5:] == [429] * 5, statuses
        # a session id is 256 random bits: it is checked even from a throttled address
        assert guesser.get("/api/health", headers={"Cookie": f"radretrieve_session={sid}"}).status_code == 200


def test_throttle_buckets_group_ipv6_by_64_and_unmap_ipv4():
    from radretrieve.application.web.throttle import client_key

    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") != client_key("2001:db8:0:1::1")
    assert client_key("::ffff:10.0.0.7") == client_key("10.0.0.7") == "10.0.0.7"


# -- item ids: unknown is 404, not a number is 422, never 500 -------------------------------------------------
UNKNOWN_IDS = ["0", "-1", "-9223372036854775808", str(2**63 - 1), str(2**63), "9" * 30, "-" + "9" * 30]
# int() or pydantic take these; parse_item_id (ASCII digits only) does not, on every route
MALFORMED_IDS = ["abc", "1.5", "1e3", "0x10", "%C2%B2", "%D9%A3", "12abc", "%20", "1_000", "+5", "%2B5", "5.0"]


@pytest.mark.parametrize("route", ["/api/item/{}", "/api/thumbnail/{}.png"])
def test_every_id_route_answers_404_or_422(server, route):
    with server.client() as client:
        for item_id in UNKNOWN_IDS:
            response = client.get(route.format(item_id))
            assert response.status_code == 404, (item_id, response.text)
            assert response.json()["error"] == f"item {int(item_id)} is not in the index"
        for item_id in MALFORMED_IDS:
            response = client.get(route.format(item_id))
            assert response.status_code == 422, (item_id, response.text)
            assert response.json()["error"].startswith("item_id: ")


@pytest.mark.parametrize("endpoint", ["similar", "reports"])
def test_every_study_reference_that_is_no_id_or_key_answers_404(server, endpoint):
    with server.client() as client:
        for study in [*UNKNOWN_IDS, "\u00b2", "\u0663", "+5", " 7 "]:
            response = client.get(f"/api/{endpoint}", params={"study": study})
            assert response.status_code == 404, (study, response.text)
            assert "is neither an item id nor a study key" in response.json()["error"]


def test_the_cli_takes_a_huge_number_as_an_unknown_study(serve_env):
    cmd = [sys.executable, "-m", "radretrieve", "similar", "9" * 30, "--index", str(serve_env["out"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "is not an item id, a study key" in lines[0], proc.stderr
