"""What `radretrieve serve` runs with: a frozen config, the bind rule and the access token.

The bind rule (docs/guide/serve.md: Security): loopback addresses need no token; any other address (0.0.0.0,
a LAN address, a host name) is refused unless a token file is given, because the service would then answer
anyone who can reach the machine. The token is read from a file, never from the command line (where `ps` and
shell history would show it), and never logged. Whatever the address, requests must name the server in their
`Host` header (`hosts`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from radretrieve.application.web.hosts import allowed_hosts
from radretrieve.application.web.limits import DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_CONNECTIONS
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.outdir.where import DEFAULT_MEMORY_MB

log = logging.getLogger(__name__)

DEFAULT_SESSION_HOURS = 12.0  # a working day: a browser left signed in overnight is signed out
MAX_SESSION_HOURS = 24.0 * 30
MIN_TOKEN_CHARS = 16  # shorter tokens are guessable; `python -c "import secrets; print(secrets.token_urlsafe(32))"`
MIN_WHERE_MEMORY_MB = 64
ENV_CONFIG = "RADRETRIEVE_SERVE_CONFIG"  # how `--workers N` hands the config to each worker process


@dataclass(frozen=True)
class ServeConfig:
    """One `radretrieve serve` run (every worker process gets the same one)."""

    out_dir: Path  # the out dir to serve: shards, index/, the model reference, archive.json
    host: str = "127.0.0.1"  # address to bind; anything but loopback needs `token_file`
    port: int = 8000  # TCP port
    token_file: Path | None = None  # file holding the access token; None: no token (loopback only)
    workers: int = 1  # server processes; each loads its own copy of the model and the indexes
    allow_where: bool = True  # accept user SQL filters (`where=`); False with --no-where
    show_burned_in: bool = False  # draw images flagged as possibly carrying burned-in text (--show-burned-in)
    threads: int = 1  # torch and faiss threads per call: requests already run in parallel, and more threads
    # than cores make OpenMP's spinning workers fight (measured: text search 34 -> 480 req/s on 2 cores)
    max_text_batch: int = 64  # at most this many concurrent text queries share one encoder call
    thumbnail_cache_bytes: int = 64 << 20  # PNG bytes of recent thumbnails kept in memory
    allowed_hosts: tuple[str, ...] = ()  # more `Host` names to answer to (--allowed-host); see `hosts`
    session_hours: float = DEFAULT_SESSION_HOURS  # a login session lasts this long (--session-hours)
    sessions_dir: Path | None = None  # where the live sessions are kept; `serve` makes a private one per run
    secure_cookies: bool = False  # mark the session cookie Secure (--secure-cookies: behind a TLS proxy)
    where_memory_mb: int = DEFAULT_MEMORY_MB  # duckdb memory limit of the catalog (--where-memory-mb)
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # past this, new requests get 503 (--max-connections; `limits`)
    keep_alive_s: int = DEFAULT_KEEP_ALIVE_S  # an idle keep-alive connection is closed after this (--keep-alive)

    def check(self) -> ServeConfig:
        """Refuse settings that cannot work or are unsafe, before anything is loaded; returns self."""
        if not 0 < self.port < 65536:
            raise RadRetrieveError(f"--port {self.port}: give a TCP port between 1 and 65535")
        if self.workers < 1:
            raise RadRetrieveError(f"--workers {self.workers}: give at least 1")
        if self.threads < 1:
            raise RadRetrieveError(f"--threads {self.threads}: give at least 1")
        if not 0 < self.session_hours <= MAX_SESSION_HOURS:
            raise RadRetrieveError(
                f"--session-hours {self.session_hours:g}: give more than 0, at most {MAX_SESSION_HOURS:g}"
            )
        if self.where_memory_mb < MIN_WHERE_MEMORY_MB:
            raise RadRetrieveError(f"--where-memory-mb {self.where_memory_mb}: give at least {MIN_WHERE_MEMORY_MB}")
        if self.max_connections < 1 or self.keep_alive_s < 1:
            raise RadRetrieveError("--max-connections and --keep-alive: give at least 1")
        allowed_hosts(self.host, self.port, self.allowed_hosts)  # a bad --allowed-host is one line
        if not Path(self.out_dir).is_dir():
            raise RadRetrieveError(f"--index {self.out_dir}: no such directory")
        if self.token_file is None and not is_loopback(self.host):
            raise RadRetrieveError(
                f"--host {self.host} would answer anyone who can reach this machine: give --token-file FILE "
                "(every request then needs the token), or bind 127.0.0.1"
            )
        if self.token_file is not None:
            read_token(self.token_file)
        return self

    def to_env(self) -> str:
        return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()})

    @staticmethod
    def from_env(text: str) -> ServeConfig:
        data = json.loads(text)
        data["out_dir"] = Path(data["out_dir"])
        data["token_file"] = Path(data["token_file"]) if data.get("token_file") else None
        data["sessions_dir"] = Path(data["sessions_dir"]) if data.get("sessions_dir") else None
        data["allowed_hosts"] = tuple(data.get("allowed_hosts", ()))
        return ServeConfig(**data)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost` are loopback; 0.0.0.0, :: and everything else are not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def read_token(path: Path) -> str:
    """The token in `path` (surrounding whitespace stripped); one-line errors for unusable files."""
    path = Path(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise RadRetrieveError(f"--token-file {path}: cannot read ({reason})") from None
    # printable ASCII only: it travels in an HTTP header, where other bytes are not reliably the same text
    if len(token) < MIN_TOKEN_CHARS or not all("!" <= c <= "~" for c in token):
        raise RadRetrieveError(
            f"--token-file {path}: the token must be one word of at least {MIN_TOKEN_CHARS} printable ASCII characters"
        )
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("--token-file %s can be read by other users; chmod 600 it", path)
    return token
