"""`radretrieve serve` under load an attacker chooses: concurrent logins, memory-hungry filters, connection floods.

`limited` is a server of its own (one worker, a token, `--secure-cookies`, `--max-connections 20`,
`--keep-alive 1`, `--where-memory-mb 256`, where on); the token server is tests/conftest.py's (two workers).
Only 127.0.0.1 and 127.1.x.y are contacted.
"""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.serve_env import REPO, TOKEN, Server, fresh_address

MAX_CONNECTIONS = 20


@pytest.fixture(scope="module")
def limited(serve_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limited_server")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    args = ("--token-file", str(token_file), "--secure-cookies", "--max-connections", str(MAX_CONNECTIONS))
    args += ("--keep-alive", "1", "--where-memory-mb", "256")
    srv = Server(serve_env["out"], tmp / "server.log", *args, token=TOKEN)
    yield srv
    srv.stop()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


# -- failed logins: concurrent attempts are throttled like consecutive ones ------------------------------------
def test_concurrent_logins_from_one_address_are_throttled(token_server):
    """Every login's headers first, then every body at once: each attempt must have spent its try before its
    body was read, or all of them pass the throttle's check together (measured before the fix: 300 of 300
    got 401, none 429)."""
    from radretrieve.application.web.throttle import BURST, PER_SECOND

    n, address, body = 60, fresh_address(), b"token=wrong-guess-0123456789abcdef"
    head = (
        f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{token_server.port}\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    socks = [socket.create_connection(("127.0.0.1", token_server.port), 30, (address, 0)) for _ in range(n)]
    try:
        start = time.monotonic()
        for sock in socks:
            sock.sendall(head)
        time.sleep(1.0)  # every request is waiting for its body now
        for sock in socks:
            sock.sendall(body)
        statuses = [_status(_read_all(sock)) for sock in socks]
        elapsed = time.monotonic() - start
    finally:
        for sock in socks:
            sock.close()
    assert set(statuses) <= {401, 429}, statuses
    workers = 2  # each worker process throttles on its own (throttle's docstring)
    assert statuses.count(401) <= workers * (BURST + PER_SECOND * elapsed) + 1, (statuses.count(401), elapsed)
    assert statuses.count(429) >= n - workers * (BURST + PER_SECOND * elapsed) - 1


# -- where filters: a one-line 400, and the server's memory stays where it was --------------------------------
def _peak_rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) // 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_memory_hungry_filters_answer_400_and_the_server_stays_small(limited, serve_env):
    """Unrefused, `repeat('x', 500000000)` took the service to 1.4 GB and `range(60000000)` to 4.1 GB."""
    attacks = [
        "length(repeat('x', 500000000)) > 0",
        "len(range(60000000)) > 0",
        "length(lpad('x', 500000000, 'y')) > 0",
        "error(description) IS NULL",
    ]
    with limited.client(TOKEN) as client:
        assert client.get("/api/search", params={"q": "chest", "where": "true"}).status_code == 200
        before = _peak_rss_mb(limited.proc.pid)
        for where in attacks:
            response = client.get("/api/search", params={"q": "chest", "where": where})
            assert response.status_code == 400, (where, response.text)
            message = response.json()["error"]
            assert message.startswith("bad --where: function") and "not allowed" in message and "\n" not in message
        assert client.get("/api/search", params={"q": "chest", "where": "true"}).status_code == 200
    assert _peak_rss_mb(limited.proc.pid) < before + 150, before


# -- the session cookie behind a TLS proxy ---------------------------------------------------------------------
def test_secure_cookies_marks_the_session_cookie_secure(limited):
    with limited.client(address=fresh_address()) as client:
        response = client.post("/login", data={"token": TOKEN})
    assert response.status_code == 303
    attributes = [p.strip().lower() for p in response.headers["set-cookie"].split(";")]
    assert "secure" in attributes and "httponly" in attributes  # the server itself saw plain http


# -- connections: a cap, and idle keep-alive connections close -------------------------------------------------
def test_past_max_connections_requests_get_503_until_connections_close(limited):
    health = f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{limited.port}\r\nConnection: close\r\n\r\n".encode()

    def ask() -> int:
        with socket.create_connection(("127.0.0.1", limited.port), 30) as sock:
            sock.sendall(health)
            return _status(_read_all(sock))

    slow = [socket.create_connection(("127.0.0.1", limited.port), 30) for _ in range(2 * MAX_CONNECTIONS)]
    try:
        for sock in slow:  # headers that never end (a slow-header client)
            sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{limited.port}\r\nX-Slow: ".encode())
        time.sleep(0.5)
        # uvicorn keeps accepting the connections (no header-read timeout), but does no work past the cap
        assert ask() == 503
    finally:
        for sock in slow:
            sock.close()
    deadline = time.monotonic() + 30
    while ask() != 401 and time.monotonic() < deadline:  # 401: served again (no token given)
        time.sleep(0.2)
    assert ask() == 401


def test_an_idle_keep_alive_connection_is_closed(limited):
    with socket.create_connection(("127.0.0.1", limited.port), 30) as sock:
        sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{limited.port}\r\n\r\n".encode())
        answer = b""
        while not answer.endswith(b'{"error":"unauthorized"}'):  # the whole answer, headers and body
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401")
        start = time.monotonic()
        sock.settimeout(15)
        assert _read_all(sock) == b""  # the server closed it
        assert time.monotonic() - start < 5  # --keep-alive 1 (uvicorn's own default is 5 s)


# -- a worker process's log lines are escaped ------------------------------------------------------------------
WORKER_LOG = """
import logging
from radretrieve.application.web import app
app.configure_logging(logging.INFO)
logging.getLogger("radretrieve.test").warning("skipped %s", "evil\\x1b[2J\\rname\\u202e")
"""


def test_a_worker_process_logs_through_the_escaping_formatter():
    """`app_from_env` (what each `--workers` process runs) sets up logging with this `configure_logging`."""
    from radretrieve.application.web import app
    from radretrieve.foundation import terminal

    assert app.configure_logging is terminal.configure_logging
    proc = subprocess.run([sys.executable, "-c", WORKER_LOG], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr and "\r" not in proc.stderr and "\u202e" not in proc.stderr
    assert "WARNING skipped evil\\x1b[2J\\x0dname\\u202e" in proc.stderr


# -- an app used without its lifespan leaves no sessions folder ------------------------------------------------
def test_an_app_without_its_lifespan_leaves_no_sessions_folder(serve_env, tmp_path):
    from radretrieve.application.web.app import create_app
    from radretrieve.application.web.config import ServeConfig
    from radretrieve.application.web.service import WebService

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    config = ServeConfig(serve_env["out"], token_file=token_file)
    service = WebService(config)
    try:
        app = create_app(config, service)
        folder = Path(app.state.sessions_folder.name)
        assert folder.is_dir() and folder.name.startswith("radretrieve-sessions-")
        del app
        gc.collect()
        assert not folder.exists()
    finally:
        service.close()
