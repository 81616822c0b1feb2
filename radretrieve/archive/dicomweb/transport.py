"""HTTP to a DICOMweb server with every answer bounded (`Limits`): size, wall-clock time and where it comes from.

`requests` alone reads an answer of any size into memory, waits on a server that trickles one byte per read
timeout for ever, and follows a redirect to any host. `BoundedAdapter` (mounted on the session of
`client.client_for`) reads every answer itself, as it arrives:

- size: a declared Content-Length over the bound is refused before the body is read (a malformed one is
  refused), and the body (decoded, so a compressed answer counts what it expands to) is cut off once it
  passes the bound. An answer held in memory (listings, metadata, errors) is bounded by the lower of
  `max_response_bytes` and `max_held_bytes`; an instance is streamed to its file (`streaming`) as it
  arrives, bounded by `max_response_bytes`, and its error answers are not read at all;
- time: a watchdog thread shuts the request's socket down at the deadline, which ends a blocked read at
  once wherever it is (connect, TLS handshake, headers or body); a shut-down socket is never reused;
- redirects: one that changes scheme, host or port is refused (its answer never used); others are
  followed up to `max_redirects` times, each hop checked again.

A refused answer raises `Refused` (a `requests.RequestException`), classified by `client.describe` as
not transient: a retry would meet the same server.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from radretrieve.archive.dicomweb.source import Limits, origin_of

CHUNK = 1 << 16  # bytes read per step of a body (the deadline is also checked between steps)
_ASCII_DIGITS = re.compile(r"[0-9]{1,18}")  # a Content-Length we read (18 digits: no int overflow elsewhere)
_SHOWN_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?")  # what a message may show of a URL


class Refused(requests.RequestException):
    """An answer refused by a bound; `reason` is one line without URL or credentials."""

    error_type = "FetchRefused"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLarge(Refused):
    error_type = "ResponseTooLarge"


class DeadlineExceeded(Refused):
    error_type = "DeadlineExceeded"


class RedirectRefused(Refused):
    error_type = "RedirectRefused"


class _Watch:
    """The deadline of the request running in this thread: the sockets it uses are shut down when it passes."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._done = False
        self._lock = threading.Lock()
        _DEADLINES.watch(self)

    def add(self, sock: Any) -> None:
        with self._lock:
            if self.expired:
                _shutdown(sock)
            self._sockets.append(sock)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)  # a read blocked in the request's thread returns at once

    def close(self) -> None:
        with self._lock:
            self._done = True
        _DEADLINES.forget(self)


class _Deadlines:
    """One thread per process that expires the watches of the requests in flight when their deadlines pass.

    (A `threading.Timer` per request, as before, cost a thread start per request: about 1 ms, a third of the
    client's CPU for a small instance on 127.0.0.1.) The requests in flight are few (a reader's fetch threads),
    so the thread looks at all of them each time it wakes. It is started by the first request of the process;
    a forked child, which has no copy of it, starts its own."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._start_lock = threading.Lock()  # the first requests of several threads start one watchdog
        self._running = False
        self._cond = threading.Condition()
        self._active: set[_Watch] = set()

    def watch(self, watch: _Watch) -> None:
        with self._start_lock:
            if not self._running:
                threading.Thread(target=self._run, name="dicomweb-deadlines", daemon=True).start()
                self._running = True
        with self._cond:
            self._active.add(watch)
            self._cond.notify()

    def forget(self, watch: _Watch) -> None:
        with self._cond:
            self._active.discard(watch)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for watch in [w for w in self._active if w.deadline <= now]:
                    self._active.discard(watch)
                    watch._expire()
                soonest = min((w.deadline for w in self._active), default=None)
                self._cond.wait(None if soonest is None else max(0.0, soonest - now))


_DEADLINES = _Deadlines()


def _shutdown(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


_current = threading.local()  # .watch: the _Watch of the request this thread is making, if any


def _watch_socket(sock: Any) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        watch.add(sock)


class _WatchedHTTPConnection(HTTPConnection):
    """A connection whose socket (new or reused from the pool) is handed to the current request's watch."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch_socket(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        _watch_socket(self.sock)  # None for a new connection: `_new_conn` hands it over when it connects
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch_socket(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        _watch_socket(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection  # type: ignore[assignment]


class BoundedAdapter(HTTPAdapter):
    """A `requests` transport for one server (`url`) that enforces `limits` on every request it sends."""

    def __init__(self, url: str, limits: Limits) -> None:
        self.origin = origin_of(url)
        self.limits = limits
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any) -> Any:
        if origin_of(request.url or "") != self.origin:
            raise RedirectRefused(_redirect_reason(request.url or ""))  # never sent (a hop of a redirect)
        watch = _Watch(self.limits.deadline_s)
        _current.watch = watch
        try:
            response = super().send(request, stream=True, timeout=_capped(timeout, watch.left()), **kwargs)
            try:
                self._check_redirect(response)
                _read_body(response, self.limits, watch)
                if watch.expired:  # the shut-down socket may have ended headers or body early: not an answer
                    raise DeadlineExceeded(_deadline_reason(self.limits))
            except BaseException:
                response.close()  # every refused or failed answer: its connection is never reused half-read
                raise
            return response
        except Refused:
            raise
        except Exception:
            if watch.expired or watch.left() <= 0:
                raise DeadlineExceeded(_deadline_reason(self.limits)) from None
            raise
        finally:
            _current.watch = None
            watch.close()

    def _check_redirect(self, response: requests.Response) -> None:
        if response.is_redirect:
            target = urllib.parse.urljoin(response.url or "", response.headers.get("location", ""))
            if origin_of(target) != self.origin:
                raise RedirectRefused(_redirect_reason(target))


def _capped(timeout: Any, left: float) -> Any:
    """The (connect, read) timeout of a request, neither longer than what is left of its deadline."""
    left = max(left, 0.001)
    if timeout is None:
        return (left, left)
    if isinstance(timeout, tuple):
        return tuple(left if t is None else min(float(t), left) for t in timeout)
    return min(float(timeout), left)


def declared_length(response: requests.Response) -> int | None:
    """The Content-Length of `response` (None: not declared). Only ASCII digits are a length: `str.isdigit`
    also takes "1\u00b2" and other Unicode digits, which `int` refuses, so a malformed one is refused here
    (`Refused`) rather than raising ValueError past the bounds (an answer of unknown framing is not read)."""
    declared = response.headers.get("content-length")
    if declared is None:
        return None
    if not _ASCII_DIGITS.fullmatch(declared.strip()):
        raise Refused("malformed Content-Length header")
    return int(declared.strip())


def _read_body(response: requests.Response, limits: Limits, watch: _Watch) -> None:
    """Read the whole body (as `requests` would), refusing it past the size bound or the deadline (`send`
    closes the response on every path that raises). Read errors become the exceptions `requests` itself
    raises for them (transient ones). Into `response.content`, or inside `streaming(sink)` into `sink`."""
    from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

    sink = getattr(_current, "sink", None)
    if sink is not None and response.status_code != 200:
        response.close()  # an error or redirect of a streamed request: only its status and headers are used
        response._content, response._content_consumed = b"", True
        return
    # what is held in memory (and parsed: JSON grows several times in Python objects) has the lower bound
    limit = limits.max_response_bytes if sink is not None else min(limits.max_response_bytes, limits.max_held_bytes)
    held = limit < limits.max_response_bytes
    declared = declared_length(response)
    if declared is not None and declared > limit:
        raise TooLarge(_size_reason(limit, True, held))
    if sink is not None:
        sink.begin(response.headers)
    body = io.BytesIO() if sink is None else sink
    size = 0
    try:
        for chunk in response.raw.stream(CHUNK, decode_content=True):
            size += len(chunk)
            if size > limit:
                raise TooLarge(_size_reason(limit, False, held))
            body.write(chunk)
            if watch.left() <= 0:
                raise DeadlineExceeded(_deadline_reason(limits))
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(type(exc).__name__) from None
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(type(exc).__name__) from None
    except ReadTimeoutError as exc:
        raise requests.exceptions.ReadTimeout(type(exc).__name__) from None
    # what `response.content` returns: the body read here, bounded (urllib3 has given the connection back).
    # `getvalue` hands over the BytesIO's own buffer (no second copy of the answer in memory).
    response._content = body.getvalue() if sink is None else b""
    response._content_consumed = True


@contextlib.contextmanager
def streaming(sink: Any) -> Iterator[None]:
    """Inside the block, the body of each 200 answer of this thread's requests goes to `sink` (told the headers
    by `sink.begin(headers)`, then fed `sink.write(chunk)` as chunks arrive: never held whole in memory;
    `response.content` is empty), bounded as any other answer."""
    _current.sink = sink
    try:
        yield
    finally:
        _current.sink = None


def _size_reason(limit: int, declared: bool, held: bool = False) -> str:
    how = "declared" if declared else "sent"
    bound = "the most an answer held in memory may take" if held else "--max-response-mb"
    return f"answer larger than {limit / 2**20:g} MiB ({how}; {bound})"


def _deadline_reason(limits: Limits) -> str:
    return f"no complete answer within {limits.deadline_s:g} s (--request-deadline)"


def _redirect_reason(target: str) -> str:
    parts = urllib.parse.urlsplit(target)
    shown = f"{parts.scheme}://{parts.netloc}"
    where = shown if _SHOWN_ORIGIN.fullmatch(shown) else "another scheme, host or port"
    return f"redirected to {where}: not followed (only the server's own scheme, host and port are)"
