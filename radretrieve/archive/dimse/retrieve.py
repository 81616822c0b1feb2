"""C-GET or C-MOVE of chosen instances of one series, each checked to be one asked for, handed over in memory.

Which SOP classes the instances have is asked first (C-FIND at IMAGE level), so that the association proposes
a storage context for each class in every transfer syntax the folder decoder reads: the node then sends each
instance as it stores it (no transcoding, so the decoded pixels are the folder's), and a class missing from the
proposal cannot make an instance silently not arrive. Each instance received (pynetdicom's `encoded_dataset`:
file meta and the data set as received, never decoded and encoded again) must be one asked for (its command's
and its own study, series and SOP instance UIDs, read from its bytes), and every instance asked for must
arrive, else the retrieval fails (`WrongInstance`, `IncompleteSeries`). Each is handed to the caller's
`on_instance(sop, bytes)` as it arrives and written nowhere (`memory`): the caller keeps what it needs.

C-MOVE (`--move-port`): the node opens its own association to our storage SCP (our calling AE title, the
port) and sends the instances there. The SCP listens only while one retrieval runs, so the reader processes
take turns: the port itself is the lock (a second bind waits until the first SCP is gone). It listens on
127.0.0.1 for a node on this machine; for another node on every interface, accepting instances only from the
node's own addresses, and only those asked for.
"""

from __future__ import annotations

import errno
import io
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from radretrieve.archive.dicomweb.uids import is_uid, why_not_uid
from radretrieve.archive.dimse.association import (
    DimseFailed,
    final_status,
    hard_abort,
    new_ae,
    no_delay,
    open_association,
    quick_ack,
)
from radretrieve.archive.dimse.listing import CONTEXTS as FIND_CONTEXTS
from radretrieve.archive.dimse.listing import PENDING, run_find, value_of
from radretrieve.archive.dimse.source import DimseSource

GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE
COMMAND_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]
# What the folder decoder reads (pydicom with its pixel handlers): the node may send each as stored
STORAGE_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still stored by old archives)
]
MAX_CONTEXTS = 127  # 128 presentation contexts per association (PS3.8), one for the retrieve command
_STATUS_WARNING = 0xB000  # some sub-operations failed: which instances arrived is checked one by one
_UID_KEYS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]


@dataclass
class Wanted:
    """The instances of one series to retrieve, and which of them arrived."""

    study: str
    series: str
    sops: frozenset[str]  # their SOP Instance UIDs
    classes: tuple[str, ...]  # their SOP Class UIDs (distinct, checked)
    received: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> its size in bytes


def instance_classes(source: DimseSource, study: str, series: str, sops: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(SOP Instance UID, SOP Class UID) of every instance of a series (or of those `sops`: UID list
    matching), in the order the node lists them (C-FIND at IMAGE level); DimseFailed for a bad or repeated
    UID (a series missing slices would be wrong data) or a failed C-FIND."""
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID, query.SeriesInstanceUID = study, series
    query.SOPInstanceUID = list(sops) if sops else ""
    query.SOPClassUID = ""
    found: list[tuple[str, str]] = []
    with open_association(source, FIND_CONTEXTS) as (assoc, watch):
        for identifier in run_find(assoc, watch, query, source.limits.max_listed):
            sop, cls = value_of(identifier, "SOPInstanceUID"), value_of(identifier, "SOPClassUID")
            for value, what in ((sop, "SOP Instance UID"), (cls, "SOP Class UID")):
                if not is_uid(value):
                    raise DimseFailed(f"an instance has {why_not_uid(value, what)}", "InvalidUID", False)
            found.append((sop, cls))
    if len({sop for sop, _ in found}) != len(found):
        raise DimseFailed("the node lists the same SOP Instance UID twice", "InvalidUID", False)
    return found


def storage_contexts(classes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """One presentation context per (class, transfer syntax): the node picks the one of its stored syntax."""
    if not classes or len(classes) > MAX_CONTEXTS:
        why = f"{len(classes)} SOP classes in one series (1 to {MAX_CONTEXTS} supported)"
        raise DimseFailed(why, "FetchRefused", False)
    per_class = max(1, min(len(STORAGE_SYNTAXES), MAX_CONTEXTS // len(classes)))
    return [(cls, [syntax]) for cls in classes for syntax in STORAGE_SYNTAXES[:per_class]]


class Receiver:
    """The C-STORE handler of a retrieval: checks each instance asked for and hands it to `on_instance`,
    refuses the others. `max_bytes` bounds one instance; `max_total`, when the caller holds every instance
    (an item's read), all of them together."""

    def __init__(
        self,
        wanted: Wanted,
        max_bytes: int,
        on_instance: Callable[[str, bytes], None],
        strict: bool = True,
        peers: frozenset[str] = frozenset(),
        max_total: int | None = None,
    ) -> None:
        self.wanted, self.max_bytes, self.on_instance, self.strict = wanted, max_bytes, on_instance, strict
        self.max_total = max_total
        self.peers = peers  # C-MOVE from another machine: the node's addresses (empty: any, the SCP is loopback)
        self.problem: DimseFailed | None = None
        self.watch: Any = None  # the retrieve association's Watch, once it is open
        self._lock = threading.Lock()

    def on_store(self, event: Any) -> int:
        """EVT_C_STORE: 0x0000 for an instance written and checked, a failure status otherwise."""
        try:
            return self._store(event)
        except Exception as exc:  # noqa: BLE001 - a handler must answer; the retrieval reports the problem
            self._fail(DimseFailed(f"an instance could not be written ({type(exc).__name__})", "FetchFailed", True))
            return 0xA700
        finally:
            if self.watch is not None:
                self.watch.mark()

    def on_data(self, event: Any) -> None:
        """EVT_DATA_RECV of a C-MOVE's storage association: counted against the message bound."""
        if self.watch is not None:
            self.watch.on_data(event)
            if self.watch.tripped is not None:
                threading.Thread(target=hard_abort, args=(event.assoc,), daemon=True).start()

    def _fail(self, problem: DimseFailed) -> None:
        with self._lock:
            self.problem = self.problem or problem

    def _store(self, event: Any) -> int:
        if self.peers and event.assoc.requestor.address not in self.peers:
            return 0xA700  # not the node asked: nothing of it is written
        sop = str(event.request.AffectedSOPInstanceUID)
        asked = sop in self.wanted.sops
        if not asked or sop in self.wanted.received:
            if self.strict:
                why = "the node sent another instance than the ones asked for"
                self._fail(DimseFailed(why, "WrongInstance", False))
            return 0xA900 if not asked else 0x0000
        data = event.encoded_dataset(include_meta=True)
        if len(data) > self.max_bytes:
            why = f"an instance is larger than {self.max_bytes / 2**20:g} MiB (--max-response-mb)"
            self._fail(DimseFailed(why, "ResponseTooLarge", False))
            return 0xA700
        if _sent_uids(data) != [self.wanted.study, self.wanted.series, sop]:
            self._fail(DimseFailed("the node sent another instance than the one asked for", "WrongInstance", False))
            return 0xA900
        with self._lock:
            self.wanted.received[sop] = len(data)
            total = sum(self.wanted.received.values())
        if self.max_total is not None and total > self.max_total:
            why = f"the item's instances are larger than {self.max_total / 2**20:g} MiB (--max-response-mb)"
            self._fail(DimseFailed(why, "ResponseTooLarge", False))
            return 0xA700
        self.on_instance(sop, data)
        return 0x0000


def retrieve(source: DimseSource, wanted: Wanted, receiver: Receiver, level: str) -> None:
    """C-GET (or C-MOVE with `source.move_port`) of `wanted` at `level` (SERIES: the whole series, of which the
    instances not listed are dropped; IMAGE: exactly those instances). DimseFailed unless every instance asked
    for arrived and checked."""
    query = _identifier(wanted, level)
    if source.move_port is None:
        code = _get(source, wanted, receiver, query)
    else:
        code = _move(source, wanted, receiver, query)
    if receiver.problem is not None:
        raise receiver.problem
    missing = len(wanted.sops) - len(wanted.received)
    if missing:
        ended = f" (the node ended with status 0x{code:04X})" if code not in (0x0000, _STATUS_WARNING) else ""
        why = f"{missing} of {len(wanted.sops)} instances did not arrive{ended}"
        raise DimseFailed(why, "IncompleteSeries", True)


def _identifier(wanted: Wanted, level: str) -> Any:
    from pydicom.dataset import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = level
    query.StudyInstanceUID, query.SeriesInstanceUID = wanted.study, wanted.series
    if level == "IMAGE":
        query.SOPInstanceUID = sorted(wanted.sops)  # UID list matching: one request for all of them
    return query


def _get(source: DimseSource, wanted: Wanted, receiver: Receiver, query: Any) -> int:
    from pynetdicom import build_role, evt

    contexts = [(GET, COMMAND_SYNTAXES), *storage_contexts(wanted.classes)]
    roles = [build_role(cls, scp_role=True) for cls in wanted.classes]
    with open_association(source, contexts, roles, [(evt.EVT_C_STORE, receiver.on_store)]) as (assoc, watch):
        receiver.watch = watch
        return _drive(assoc.send_c_get(query, GET), "C-GET")


def _move(source: DimseSource, wanted: Wanted, receiver: Receiver, query: Any) -> int:
    from pynetdicom import evt

    scp = new_ae(source)
    for cls in wanted.classes:
        scp.add_supported_context(cls, STORAGE_SYNTAXES)
    loopback = _is_loopback(source.host)
    receiver.peers = frozenset() if loopback else _addresses(source.host)
    handlers = [
        (evt.EVT_C_STORE, receiver.on_store),
        (evt.EVT_DATA_RECV, receiver.on_data),
        (evt.EVT_CONN_OPEN, no_delay),
        (evt.EVT_DATA_SENT, quick_ack),
    ]
    server = _listen(scp, "127.0.0.1" if loopback else "", int(source.move_port or 0), handlers, source)
    try:
        with open_association(source, [(MOVE, COMMAND_SYNTAXES)]) as (assoc, watch):
            receiver.watch = watch
            return _drive(assoc.send_c_move(query, source.calling_aet, MOVE), "C-MOVE")
    finally:
        _stop(server)


def _drive(answers: Any, what: str) -> int:
    """Read a C-GET/C-MOVE's answers to the final one, and return its status; DimseFailed for a request
    refused outright (a failure status before any sub-operation ran)."""
    ran = False
    for status, _ in answers:
        code = final_status(status, f"a {what}")
        counts = [getattr(status, f"Number{k}Suboperations", None) for k in ("OfCompleted", "OfFailed", "OfWarning")]
        ran = ran or any(isinstance(n, int) and n > 0 for n in counts)
        if code in PENDING:
            continue
        if code in (0x0000, _STATUS_WARNING) or ran:
            return code  # sub-operations ran (some may have failed): which instances arrived is checked by the caller
        if code == 0xA801:
            why = f"{what} refused: the node does not know our AE title as a move destination"
            raise DimseFailed(why, "FetchRefused", False)
        raise DimseFailed(f"{what} failed (status 0x{code:04X})", "FetchRefused", code != 0xA900)
    raise DimseFailed(f"the node went away during a {what} (no final status)", "AssociationAborted", True)


def _listen(scp: Any, host: str, port: int, handlers: list[Any], source: DimseSource) -> Any:
    """Our storage SCP on (host, port), waiting while another retrieval of this machine holds the port.
    (pynetdicom's own `start_server` polls for its shutdown every 0.5 s: half a second per retrieval.)"""
    from pynetdicom.transport import ThreadedAssociationServer

    end = time.monotonic() + source.limits.deadline_s
    while True:
        try:
            server = scp.make_server((host, port), evt_handlers=handlers, server_class=ThreadedAssociationServer)
            thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="dimse-scp", daemon=True)
            thread.start()
            return server
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > end:
                why = f"cannot listen on port {port} for C-MOVE (--move-port): {exc.strerror or exc}"
                raise DimseFailed(why, "FetchFailed", False) from None
            time.sleep(0.02)


def _stop(server: Any) -> None:
    """Stop listening, close the port (the next retrieval may take it) and abort what is still connected."""
    socketserver.BaseServer.shutdown(server)
    server.server_close()
    for assoc in list(server.active_associations):
        assoc.abort()


def _is_loopback(host: str) -> bool:
    try:
        return all(addr.startswith("127.") or addr == "::1" for addr in _addresses(host))
    except DimseFailed:
        return False


def _addresses(host: str) -> frozenset[str]:
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
    except OSError:
        raise DimseFailed(f"cannot resolve {host}", "FetchFailed", True) from None


def _sent_uids(data: bytes) -> list[Any]:
    """(study, series, SOP instance UID) of a received instance, None where missing (all None: not DICOM)."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_UID_KEYS)
    except Exception:  # noqa: BLE001 - pydicom raises many types on a malformed instance: not the one asked for
        return [None, None, None]
    return [str(ds[key].value) if key in ds else None for key in _UID_KEYS]
