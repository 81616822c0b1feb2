"""Associations with a DICOM node (pynetdicom): opened with timeouts, watched, always closed, failures as one line.

Every association is opened by `open_association` and closed when its `with` block ends, however it ends: a
block left normally releases it (A-RELEASE, bounded by the ACSE timeout), one left by an exception aborts it
(A-ABORT), and a release that does not complete is followed by an abort. While it is open a watcher thread
aborts it when its deadline (`Limits.deadline_s`) passes, or when one message (a C-FIND answer, an instance)
grows past `Limits.max_response_bytes` as it arrives: pynetdicom's own ACSE, DIMSE, network and connection
timeouts (`Retry.timeout_s`) stop a node that goes silent; the deadline stops one that trickles. The abort
comes from the watcher because pynetdicom's event handlers run in the association's own thread, which must not
abort itself.

pynetdicom logs the identifiers of C-FIND, C-GET and C-MOVE requests and answers at debug level; those can
hold patient data, so that logging is turned off before the first association (`quiet_pynetdicom`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from radretrieve.archive.dimse.source import DimseSource

log = logging.getLogger(__name__)
T = TypeVar("T")

ABORT_GRACE_S = 0.5  # after an A-ABORT, how long the peer may take to close the connection itself
# Diagnostics of an A-ASSOCIATE-RJ from the node (PS3.8 9.3.4, source "service user")
_REJECT_WHY = {
    1: "no reason given",
    2: "application context not supported",
    3: "our calling AE title is not known there",
    7: "the called AE title is not the node's",
}


class DimseFailed(Exception):
    """A DIMSE exchange that failed: `reason` is one line (no patient data); `error_type` what `errors/`
    records (AssociationRejected, AssociationAborted, FetchFailed, FetchRefused, IncompleteSeries,
    WrongInstance, ResponseTooLarge, DeadlineExceeded); `transient` whether trying again may help."""

    def __init__(self, reason: str, error_type: str = "FetchFailed", transient: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.error_type, self.transient = reason, error_type, transient


@functools.cache
def quiet_pynetdicom() -> None:
    """No identifier datasets in pynetdicom's log (they can carry patient names and ids), no per-PDU debug."""
    from pynetdicom import _config

    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


class Watch:
    """Aborts an association when one message (an instance, a C-FIND answer) takes longer than the deadline to
    arrive or grows too large (from its own thread). The deadline runs from the last completed message, not
    from the association's start: a whole-series C-GET or a listing of many studies is many messages, and only
    a node that stalls on one of them is stopped."""

    def __init__(self, deadline_s: float, max_message_bytes: int) -> None:
        self.deadline_s, self.max_message_bytes = deadline_s, max_message_bytes
        self.tripped: DimseFailed | None = None  # why it aborted the association
        self._message_bytes = 0
        self._since = time.monotonic()  # when the message being received began (the last `mark`)
        self.find_answers = 0  # C-FIND answers decoded on this association (`on_message`), whoever took them
        self._wake = threading.Event()
        self._done = False
        self._assoc: Any = None
        self._thread: threading.Thread | None = None

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        from pynetdicom import evt

        return [
            (evt.EVT_DATA_RECV, self.on_data),
            (evt.EVT_DIMSE_RECV, self.on_message),
            (evt.EVT_DATA_SENT, quick_ack),
            (evt.EVT_ABORTED, wake_waiting),
            (evt.EVT_CONN_CLOSE, wake_waiting),
        ]

    def start(self, assoc: Any) -> None:
        self._assoc = assoc
        self._thread = threading.Thread(target=self._run, name="dimse-watch", daemon=True)
        self._thread.start()

    def mark(self) -> None:
        """A message (an instance, an answer) is complete: the next one starts from zero bytes and seconds."""
        self._message_bytes = 0
        self._since = time.monotonic()

    def trip(self, failure: DimseFailed) -> None:
        if self.tripped is None:
            self.tripped = failure
        self._wake.set()

    def on_data(self, event: Any) -> None:
        """EVT_DATA_RECV: bytes of the message being received (also those of a C-MOVE's storage association)."""
        quick_ack(event)
        self._message_bytes += len(event.data)
        if self._message_bytes > self.max_message_bytes:
            limit = f"{self.max_message_bytes / 2**20:g} MiB"
            self.trip(DimseFailed(f"an answer is larger than {limit} (--max-response-mb)", "ResponseTooLarge", False))

    def on_message(self, event: Any) -> None:
        """EVT_DIMSE_RECV (the network thread, in arrival order, before the message is queued): count the
        C-FIND answers, so that `listing.run_find` can tell an answer that pynetdicom's reactor took from one
        the node never sent (`settle`)."""
        if type(event.message).__name__ == "C_FIND_RSP":
            self.find_answers += 1

    def _run(self) -> None:
        while True:
            left = self._since + self.deadline_s - time.monotonic()
            if left <= 0 or self._wake.wait(left):
                break
        if self._done:
            return
        if self.tripped is None:  # not woken by a trip: the deadline passed
            why = f"one answer took longer than {self.deadline_s:g} s to arrive (--request-deadline)"
            self.tripped = DimseFailed(why, "DeadlineExceeded", False)
        hard_abort(self._assoc)

    def stop(self) -> None:
        self._done = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()


class _Answer:
    """What the association request got back: whether the connection opened, and a rejection's reason."""

    def __init__(self) -> None:
        self.connected = False
        self.rejected = ""

    def handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        from pynetdicom import evt

        return [(evt.EVT_CONN_OPEN, self._on_open), (evt.EVT_ACSE_RECV, self._on_acse)]

    def _on_open(self, event: Any) -> None:
        self.connected = True
        no_delay(event)

    def _on_acse(self, event: Any) -> None:
        primitive = event.primitive
        if getattr(primitive, "result", None) in (1, 2):
            source = getattr(primitive, "result_source", None)
            diagnostic = getattr(primitive, "diagnostic", None)
            self.rejected = _REJECT_WHY.get(diagnostic, "no reason given") if source == 1 else "by its network layer"
            self.transient = primitive.result == 2


def no_delay(event: Any) -> None:
    """EVT_CONN_OPEN: turn Nagle's algorithm off. pynetdicom leaves it on, and a DIMSE exchange of small
    messages (a C-FIND answer, a C-STORE response) then waits for the peer's delayed ACK: about 40 ms a message,
    most of the time of a retrieval on a fast network."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (or already closed): nothing to tune


def quick_ack(event: Any) -> None:
    """EVT_DATA_SENT, EVT_DATA_RECV: acknowledge what arrives next at once (Linux TCP_QUICKACK; the kernel
    turns it off again by itself, after we send). A node that sends a small message (a C-GET pending answer)
    and then the next instance with Nagle's algorithm on (Orthanc does) waits for our ACK of the first, which
    Linux delays by some 40 ms: per instance, most of a retrieval's time on a fast network."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass


SETTLE_S = 1.0  # how long `settle` waits for the reactor to run again


def settle(assoc: Any) -> None:
    """Before a request on an association that already served one: wait until pynetdicom's reactor thread has
    run again after the last exchange ended. A request pauses the reactor (so that it does not take the
    answers off the message queue) and waits for its pause flag; that flag still says "paused" from the last
    exchange until the reactor thread gets the CPU again, so a request sent at once can have its first answer
    taken by the reactor, which drops it with a warning ("Received unexpected C-FIND service message"): a
    silently missing series in a listing. `run_find` also detects such a loss (`Watch.on_message`); this
    makes it rare. Bounded, and a no-op where pynetdicom has no such flag."""
    end = time.monotonic() + SETTLE_S
    while getattr(assoc, "_is_paused", False) and assoc.is_established and time.monotonic() < end:
        time.sleep(0.0002)


def new_ae(source: DimseSource, ae_title: str | None = None) -> Any:
    """A pynetdicom AE with our AE title and every timeout of `source.retry`."""
    from pynetdicom import AE

    quiet_pynetdicom()
    ae = AE(ae_title=ae_title or source.calling_aet)
    timeout = source.retry.timeout_s
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.maximum_pdu_size = 1 << 20  # fewer, larger PDUs than the 16 KiB default: localhost and LAN transfers
    return ae


@contextlib.contextmanager
def open_association(
    source: DimseSource,
    contexts: Sequence[tuple[str, Sequence[str]]],
    roles: Sequence[Any] = (),
    handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
) -> Iterator[tuple[Any, Watch]]:
    """An established association with the node proposing `contexts` ((abstract syntax, transfer syntaxes)),
    with the SCP/SCU `roles` and event `handlers`, and its Watch. Raises DimseFailed when it cannot be
    opened (nothing listening, rejected, aborted); released or aborted when the block ends."""
    ae = new_ae(source)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    watch, answer = Watch(source.limits.deadline_s, source.limits.max_response_bytes), _Answer()
    assoc = ae.associate(
        source.host,
        source.port,
        ae_title=source.called_aet,
        ext_neg=list(roles) or None,
        evt_handlers=[*handlers, *watch.handlers(), *answer.handlers()],
    )
    if not assoc.is_established:
        _close(assoc, clean=False)
        raise _not_established(assoc, answer)
    watch.start(assoc)
    clean = False
    try:
        yield assoc, watch
        clean = True
    except DimseFailed:
        if watch.tripped is None:
            raise
        # else the association went away because the watch aborted it: its reason is the one to report
    finally:
        watch.stop()
        _close(assoc, clean and watch.tripped is None)
    if watch.tripped is not None:
        raise watch.tripped


def _not_established(assoc: Any, answer: _Answer) -> DimseFailed:
    if answer.rejected:
        transient = getattr(answer, "transient", False)
        return DimseFailed(f"association rejected: {answer.rejected}", "AssociationRejected", transient)
    if not answer.connected:
        return DimseFailed("cannot connect (nothing answers at that address and port)", "FetchFailed", True)
    return DimseFailed("the node aborted the association request", "AssociationAborted", True)


def _close(assoc: Any, clean: bool) -> None:
    """Release (clean) or abort the association, and wait for its thread (bounded by the ACSE timeout)."""
    try:
        if clean and assoc.is_established:
            assoc.release()
    finally:
        if assoc.is_alive() and not assoc.is_released:
            hard_abort(assoc)
        if assoc.is_alive():  # (a rejected request's thread may never have started)
            assoc.join(timeout=max(1.0, float(assoc.acse_timeout or 1.0)) * 2)


def hard_abort(assoc: Any) -> None:
    """A-ABORT, then the connection closed from our side after a short grace. pynetdicom's own blocking abort
    waits for the peer to close the connection, up to the ACSE timeout: a node still sending (or a peer that
    holds the connection open) would keep a reader that long."""
    if not assoc.is_alive():
        return
    assoc.abort(block=False)  # the A-ABORT is queued and sent by the association's own thread
    end = time.monotonic() + ABORT_GRACE_S
    while _state(assoc) not in ("Sta1", "") and time.monotonic() < end:
        time.sleep(0.01)
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the peer is gone for pynetdicom too: its state machine goes idle
        except OSError:
            pass
    _wake(assoc)
    killer = threading.Thread(target=assoc.kill, name="dimse-abort", daemon=True)
    killer.start()
    killer.join(ABORT_GRACE_S * 4)  # bounded: a thread that still does not end is a daemon, ended at exit


def wake_waiting(event: Any) -> None:
    """EVT_ABORTED, EVT_CONN_CLOSE: the peer aborted or went away; see `_wake`."""
    _wake(event.assoc)


def _wake(assoc: Any) -> None:
    """Wake a C-FIND/C-GET/C-MOVE waiting for its next answer on a dead association: pynetdicom would wait for
    the DIMSE timeout (60 s by default) after the peer is gone. (None, None) is pynetdicom's own "no answer":
    the operation ends with an empty status (`final_status`: AssociationAborted)."""
    messages = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
    if messages is not None:
        messages.put((None, None))


def _state(assoc: Any) -> str:
    return str(getattr(getattr(assoc.dul, "state_machine", None), "current_state", ""))


def with_retries(call: Callable[[], T], source: DimseSource, sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, retried on transient DimseFailed (`retry.tries` attempts, backoff doubling); else raised."""
    retry = source.retry
    for attempt in range(retry.tries):
        try:
            return call()
        except DimseFailed as exc:
            if not exc.transient or attempt == retry.tries - 1:
                if attempt:
                    exc.reason = f"{exc.reason} after {attempt + 1} tries"
                raise
            wait = retry.backoff_s * 2**attempt
            log.debug("DIMSE failed (%s); retry %d of %d in %.1f s", exc.reason, attempt + 1, retry.tries - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def final_status(status: Any, what: str) -> int:
    """The status code of a DIMSE answer; DimseFailed when there is none (the association went away)."""
    code = getattr(status, "Status", None) if status is not None else None
    if code is None:
        raise DimseFailed(f"the node went away during {what} (association aborted)", "AssociationAborted", True)
    return int(code)
