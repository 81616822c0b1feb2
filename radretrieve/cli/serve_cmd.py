"""`radretrieve serve`: the search service and its page (thin over `radretrieve.application.web`).

The bind rule and the token file are checked before anything heavy is imported, so a refused start is one
line and exit 1 within a second; FastAPI, uvicorn and torch are imported inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

from radretrieve.application.web.limits import DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_CONNECTIONS
from radretrieve.outdir.where import DEFAULT_MEMORY_MB

TOKEN_HELP = (
    "File holding the access token (one word, 16+ characters). Required to bind anything but 127.0.0.1; "
    "with it every request needs the token (Authorization: Bearer, or the login form's cookie)."
)


ALLOWED_HOST_HELP = (
    "Also answer requests for this Host name (repeat for more; NAME or NAME:PORT). Without it only the bound "
    "address (and, for loopback, localhost / 127.0.0.1 / [::1]) is answered: a web page whose name points at "
    "this machine (DNS rebinding) gets 421."
)


def serve(
    index: Path = typer.Option(..., "--index", "-i", help="Out dir with shards and index/ (from `radretrieve index`)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (anything but loopback needs --token-file)."),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
    token_file: Path | None = typer.Option(None, "--token-file", help=TOKEN_HELP),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help=ALLOWED_HOST_HELP),
    session_hours: float = typer.Option(
        12.0, "--session-hours", help="A login (the form's cookie) lasts this long; POST /logout ends it sooner."
    ),
    workers: int = typer.Option(1, "--workers", help="Server processes (each loads the model and indexes)."),
    no_where: bool = typer.Option(False, "--no-where", help="Refuse SQL filters (where=) from clients."),
    threads: int = typer.Option(1, "--threads", help="torch/faiss threads per call (requests run in parallel)."),
    show_burned_in: bool = typer.Option(
        False, "--show-burned-in", help="Also draw images flagged as possibly carrying burned-in text (patient data)."
    ),
    secure_cookies: bool = typer.Option(
        False, "--secure-cookies", help="Mark the login cookie Secure (behind a TLS proxy the server sees plain http)."
    ),
    where_memory_mb: int = typer.Option(
        DEFAULT_MEMORY_MB, "--where-memory-mb", help="duckdb memory limit (MB) of the catalog that runs where filters."
    ),
    max_connections: int = typer.Option(
        DEFAULT_MAX_CONNECTIONS, "--max-connections", help="Open connections past which new requests get 503."
    ),
    keep_alive: int = typer.Option(
        DEFAULT_KEEP_ALIVE_S, "--keep-alive", help="Seconds an idle keep-alive connection stays open."
    ),
) -> None:
    """Serve the out dir: a JSON search API and a web page (http://HOST:PORT/), loaded once, many users."""
    from radretrieve.application.web.config import ServeConfig

    config = ServeConfig(
        out_dir=index.resolve(),
        host=host,
        port=port,
        token_file=token_file.resolve() if token_file is not None else None,
        allowed_hosts=tuple(allowed_host),
        session_hours=session_hours,
        workers=workers,
        allow_where=not no_where,
        threads=threads,
        show_burned_in=show_burned_in,
        secure_cookies=secure_cookies,
        where_memory_mb=where_memory_mb,
        max_connections=max_connections,
        keep_alive_s=keep_alive,
    ).check()
    from radretrieve.application.web.app import serve as run

    run(config)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
