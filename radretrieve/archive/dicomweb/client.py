"""HTTP to a DICOMweb server: one `dicomweb-client` per process and source, retries with backoff, and errors
as one line naming the problem (no URL, no credentials).

dicomweb-client's own retry (a few status codes) is turned off: `with_retries` retries every network error
and every 5xx (and 429) answer with exponential backoff, and gives up at once on other 4xx answers and on
answers refused by the bounds of `transport.BoundedAdapter` (too large, too slow, redirected elsewhere).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from radretrieve.archive.dicomweb.source import DicomWebSource, Retry

log = logging.getLogger(__name__)
T = TypeVar("T")


class FetchFailed(Exception):
    """A request that failed for good: `reason` is one line without URL or credentials; `status` the HTTP
    status (0 for a network error); `transient` whether a later run may succeed (network, 5xx, 429);
    `error_type` what `errors/` records (FetchFailed, FetchRefused, ResponseTooLarge, DeadlineExceeded...)."""

    def __init__(self, reason: str, status: int, transient: bool, error_type: str = "") -> None:
        super().__init__(reason)
        self.reason, self.status, self.transient = reason, status, transient
        self.error_type = error_type or ("FetchFailed" if transient or status == 0 else "FetchRefused")


@functools.lru_cache(maxsize=4)
def client_for(source: DicomWebSource) -> Any:
    """The `DICOMwebClient` of `source` in this process (its session keeps connections open)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=source.url, session=session_for(source), timeout=source.retry.timeout_s)
    client.set_http_retry_params(retry=False)
    return client


@functools.lru_cache(maxsize=4)
def session_for(source: DicomWebSource) -> Any:
    """The `requests.Session` of `source` in this process: every request through the bounds, with its auth."""
    import requests

    from radretrieve.archive.dicomweb.transport import BoundedAdapter

    session = requests.Session()
    session.trust_env = False  # no proxy or .netrc credentials from the environment: the server is named
    session.max_redirects = source.limits.max_redirects
    adapter = BoundedAdapter(source.url, source.limits)
    for prefix in ("http://", "https://"):
        session.mount(prefix, adapter)  # every request, redirects included, goes through the bounds
    if source.auth is not None:
        source.auth.apply(session)
    return session


def describe(exc: BaseException) -> tuple[str, int, bool]:
    """(one-line reason, HTTP status or 0, transient) for an exception of a request."""
    import requests

    from radretrieve.archive.dicomweb.transport import Refused

    if isinstance(exc, Refused):
        return exc.reason, 0, False
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects", 0, False
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status = int(exc.response.status_code)
        return f"HTTP {status} {exc.response.reason or ''}".strip(), status, status >= 500 or status == 429
    if isinstance(exc, requests.Timeout):
        return "timed out", 0, True
    if isinstance(exc, requests.ConnectionError):
        text = str(exc).lower()
        why = "connection refused" if "refused" in text else "connection failed"
        return why, 0, True
    if isinstance(exc, requests.RequestException):
        return f"network error ({type(exc).__name__})", 0, True
    return f"unexpected answer ({type(exc).__name__})", 0, False  # e.g. a malformed multipart body


def with_retries(call: Callable[[], T], retry: Retry, sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, retried on transient failures (`retry.tries` attempts, backoff doubling); else FetchFailed."""
    for attempt in range(retry.tries):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified by `describe`; unknown ones are not retried
            reason, status, transient = describe(exc)
            if not transient or attempt == retry.tries - 1:
                tries = f" after {attempt + 1} tries" if attempt else ""
                kind = str(getattr(exc, "error_type", ""))  # transport.Refused names its bound
                raise FetchFailed(f"{reason}{tries}", status, transient, kind) from None
            wait = retry.backoff_s * 2**attempt
            log.debug(
                "DICOMweb request failed (%s); retry %d of %d in %.1f s", reason, attempt + 1, retry.tries - 1, wait
            )
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
