"""The ASGI app of `radretrieve serve` (FastAPI on uvicorn), and how it is run.

    serve(ServeConfig(Path("out")))            # blocks; what the CLI command calls

`create_app` loads everything (`WebService`) before it returns, and uvicorn binds its socket only after the
app is loaded, so `/api/health` answers exactly when the service is ready. With `--workers N` uvicorn starts
N processes, each calling `app_from_env` (the config travels in an environment variable, the token stays in
its file).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from indexers.errors import StudyNotFound
from radretrieve.application.web.api import api_router
from radretrieve.application.web.auth import Access, TokenAuth, login_router
from radretrieve.application.web.config import ENV_CONFIG, ServeConfig, read_token
from radretrieve.application.web.hosts import HostCheck, allowed_hosts
from radretrieve.application.web.middleware import ErrorGuard, RequestLog, SecurityHeaders
from radretrieve.application.web.page import StaticPage
from radretrieve.application.web.service import BadItemId, ItemNotFound, PreviewWithheld, WebService, WhereDisabled
from radretrieve.application.web.sessions import SessionStore
from radretrieve.application.web.throttle import FailureThrottle
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.signals import exit_through_python_on_sigterm
from radretrieve.foundation.terminal import configure_logging
from radretrieve.foundation.version import __version__

log = logging.getLogger(__name__)

# Known errors -> HTTP status; every other RadRetrieveError is the client's bad input (400).
STATUS: tuple[tuple[type[RadRetrieveError], int], ...] = (
    (ItemNotFound, 404),
    (BadItemId, 422),
    (StudyNotFound, 404),
    (WhereDisabled, 403),
    (PreviewWithheld, 403),
)


def status_of(exc: RadRetrieveError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


def create_app(config: ServeConfig, service: WebService | None = None) -> FastAPI:
    """The app for `config`; loads the service (model text tower, indexes, catalog) unless given one."""
    hosts = allowed_hosts(config.host, config.port, config.allowed_hosts)
    own_sessions = config.token_file is not None and config.sessions_dir is None  # not started by `serve`
    if own_sessions:
        # a private folder of its own, removed when the app is collected or the process exits, whether or not
        # the app ever ran its lifespan (an app used without one, e.g. by a test client, leaves nothing)
        folder = tempfile.TemporaryDirectory(prefix="radretrieve-sessions-", ignore_cleanup_errors=True)
        config = dataclasses.replace(config, sessions_dir=Path(folder.name))
    access = _access(config)
    service = service or WebService(config)
    page, login_page = StaticPage.load("index.html"), StaticPage.load("login.html")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()
        if own_sessions:
            folder.cleanup()

    # docs_url/redoc_url: their pages load scripts from a CDN; the OpenAPI document itself is /openapi.json
    app = FastAPI(title="radretrieve", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan)
    _install_error_handlers(app, service)
    app.include_router(api_router(service, login=access is not None))
    app.include_router(login_router(access, login_page))

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return page.response()

    # add_middleware wraps: the last added runs first (log, guard, headers, the Host check, the token check)
    app.add_middleware(TokenAuth, access=access, login_page=login_page)
    app.add_middleware(HostCheck, allowed=hosts)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(ErrorGuard)
    app.add_middleware(RequestLog)
    app.state.service = service
    if own_sessions:
        app.state.sessions_folder = folder  # lives (and is removed) with the app
    return app


def _access(config: ServeConfig) -> Access | None:
    """The token, the session store and the failure throttle of a server with a token file; else None."""
    if config.token_file is None or config.sessions_dir is None:
        return None
    sessions = SessionStore(config.sessions_dir, config.session_hours * 3600)
    return Access(read_token(config.token_file), sessions, FailureThrottle(), config.secure_cookies)


def _install_error_handlers(app: FastAPI, service: WebService) -> None:
    @app.exception_handler(RadRetrieveError)
    async def known(_: Request, exc: RadRetrieveError) -> JSONResponse:
        return JSONResponse({"error": service.public_message(exc)}, status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # one line naming the parameter; pydantic's echo of the input value is left out
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)


def app_from_env() -> FastAPI:
    """uvicorn's app factory (each worker process): the config from the environment. A `--workers` child
    process has no logging set up: it gets the CLI's, every line escaped (names come from the archive)."""
    configure_logging(logging.INFO)
    return create_app(ServeConfig.from_env(os.environ[ENV_CONFIG]))


def _warn_if_untrained(config: ServeConfig) -> None:
    """The one warning line of an out dir built with an untrained model, here in the parent process and not in
    each `--workers` process (their services are built with `warn=False`). An out dir that cannot be read is left
    to the service, whose error names the problem."""
    from radretrieve.outdir.model_ref import recorded_model

    try:
        recorded_model(config.out_dir).warn()
    except RadRetrieveError:
        pass


def serve(config: ServeConfig) -> None:
    """Run the service until interrupted (Ctrl-C / SIGTERM shut it down gracefully)."""
    import uvicorn

    config.check()
    _warn_if_untrained(config)
    # After its graceful shutdown uvicorn raises the SIGTERM it caught again, under the handler that was there
    # before it; with the default one the process dies by the signal and no `finally` runs (the sessions
    # folder would stay).
    exit_through_python_on_sigterm()
    # the live login sessions of this run, shared by the worker processes; private (mode 700), gone at exit
    sessions = Path(tempfile.mkdtemp(prefix="radretrieve-sessions-")) if config.token_file is not None else None
    os.environ[ENV_CONFIG] = dataclasses.replace(config, sessions_dir=sessions).to_env()
    try:
        uvicorn.run(
            "radretrieve.application.web.app:app_from_env",
            factory=True,
            host=config.host,
            port=config.port,
            workers=config.workers,
            access_log=False,  # it logs the request line with the query string; RequestLog logs the route only
            log_config=None,  # keep radretrieve's logging (stderr, one format)
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=5,
            # a flood of connections gets 503s, not work; idle keep-alive connections close
            # (docs/guide/serve.md: Security)
            limit_concurrency=config.max_connections,
            timeout_keep_alive=config.keep_alive_s,
        )
    finally:
        if sessions is not None:
            shutil.rmtree(sessions, ignore_errors=True)
