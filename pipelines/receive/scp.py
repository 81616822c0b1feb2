"""The C-STORE SCP of the receiving node (pynetdicom): who may connect, what a sender may send, and storing.

A sender is bounded before pynetdicom reads anything from it, then at each step:

- address: a connection from an address no `--allow` entry covers is closed at accept (`verify_request`), as
  are connections beyond `max_associations` (+2, so pynetdicom itself can answer "local limit exceeded");
- AE titles: the called AE title must be ours; with an allow-list, the calling AE title must be allowed *from
  that address* (an A-ASSOCIATE-RJ "calling AE title not recognised" otherwise);
- size: we offer `max_pdu`; a PDU that claims more than that (a non-conforming or hostile sender: pynetdicom
  would buffer whatever length a PDU header claims) closes the connection before it is read; an instance that
  grows past `max_instance_bytes` aborts the association, a deflated one that would inflate past it is refused
  (measured in steps, before anything decodes it); a disk with less than `min_free_bytes` left after the
  instance answers "out of resources";
- time: ACSE, DIMSE and network timeouts end connections that stall.

An instance is answered with success only after the spool has it on disk (pipelines.receive.spool); its UIDs
are checked as DICOM UIDs first (they name its file). Nothing from a header but those UIDs is read here, and
no log line carries more than the calling AE title and address.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import shutil
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.receive.spool import InstanceUids, Spool
from radretrieve.archive.dicomweb.uids import is_uid, why_not_uid
from radretrieve.archive.dimse.association import no_delay, quick_ack
from radretrieve.foundation.errors import RadRetrieveError

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # C-STORE "Refused: Out of Resources"
CANNOT_UNDERSTAND = 0xC000  # C-STORE "Error: Cannot understand"
PDU_HEADER_ROOM = 64 * 1024  # an A-ASSOCIATE-RQ with many presentation contexts can exceed a small max PDU
AE_TITLE_CHARS = set(map(chr, range(0x20, 0x7F))) - {"\\"}
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the whole dataset is one deflate stream
INFLATE_STEP = 1 << 20  # bytes inflated at a time when measuring a deflated dataset


@dataclass(frozen=True)
class Sender:
    """One `--allow AET@ADDRESS` entry: a calling AE title and the address (or network) it may call from."""

    aet: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def covers(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in self.network
        except ValueError:
            return False


def check_ae_title(value: str, what: str) -> str:
    """An AE title: 1-16 printable ASCII characters, no backslash, not only spaces."""
    if not 0 < len(value) <= 16 or not set(value) <= AE_TITLE_CHARS or not value.strip():
        raise RadRetrieveError(f"{what} {value!r}: an AE title is 1 to 16 printable ASCII characters (no backslash)")
    return value.strip()


def parse_allow(entries: tuple[str, ...]) -> tuple[Sender, ...]:
    """`AET@ADDRESS` entries (ADDRESS: an IPv4/IPv6 address or network, e.g. 10.1.2.0/24)."""
    out = []
    for entry in entries:
        aet, sep, address = entry.rpartition("@")
        if not sep or not aet:
            raise RadRetrieveError(f"--allow {entry!r}: expected AET@ADDRESS (e.g. PACS@10.1.2.3)")
        try:
            network = ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise RadRetrieveError(f"--allow {entry!r}: {address!r} is not an IP address or network") from None
        if network.prefixlen == 0:  # an allow-list entry that lets every address in is no allow-list
            raise RadRetrieveError(f"--allow {entry!r}: covers every address; name the sender's address or network")
        out.append(Sender(check_ae_title(aet, "--allow"), network))
    return tuple(out)


@dataclass(frozen=True)
class ScpOptions:
    """How the node listens and what it accepts from a sender."""

    aet: str  # our AE title (senders must call it)
    host: str = "127.0.0.1"  # address to bind
    port: int = 11112  # TCP port (0: any free port, logged and written to listen.json)
    allow: tuple[Sender, ...] = ()  # senders allowed (empty: any, only while bound to a loopback address)
    max_pdu: int = 262_144  # largest PDU we offer to receive, in bytes
    max_instance_bytes: int = 1 << 30  # largest instance accepted (a bigger one aborts its association)
    min_free_bytes: int = 1 << 30  # free disk space the spool leaves (else "out of resources")
    max_associations: int = 8  # simultaneous associations
    timeout_s: float = 60.0  # ACSE, DIMSE and network timeouts


@dataclass
class Counters:
    """What the SCP saw, updated from the association threads (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    associations: int = 0  # accepted
    rejected: int = 0  # connections or associations refused (address, AE title, limits)
    instances: int = 0  # stored (new names)
    duplicates: int = 0  # stored again under a name already in the spool
    refused: int = 0  # C-STOREs answered with a failure (bad UIDs, too big, disk full, write failed)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def to_dict(self) -> dict[str, int]:
        with self.lock:
            return {
                "associations": self.associations,
                "rejected": self.rejected,
                "instances": self.instances,
                "duplicates": self.duplicates,
                "refused": self.refused,
            }


def instance_uids(data: bytes) -> InstanceUids | str:
    """The checked Study, Series and SOP Instance UIDs of a received DICOM file, or why it is refused."""
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=[0x0020000D, 0x0020000E, 0x00080018])
    except Exception as exc:  # noqa: BLE001 - any decoding failure is one refused instance
        return f"an instance that cannot be decoded ({type(exc).__name__})"
    values = [str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    for value, what in zip(values, ("Study Instance UID", "Series Instance UID", "SOP Instance UID"), strict=True):
        if not is_uid(value):
            return why_not_uid(value, what)
    return InstanceUids(*values)


def inflates_within(deflated: bytes, limit: int) -> bool:
    """Whether a raw deflate stream inflates to at most `limit` bytes (and is whole). Measured a step at a time:
    pydicom inflates a deflated dataset in one piece, and deflate packs ~1000:1, so a sender's small instance
    could otherwise take the node's memory (and the indexer's, which decodes it again) by the gigabyte."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, rest = 0, deflated
    try:
        while not inflater.eof:
            piece = inflater.decompress(rest, INFLATE_STEP)
            total += len(piece)
            if total > limit:
                return False
            rest = inflater.unconsumed_tail
            if not rest and len(piece) < INFLATE_STEP:
                break  # all input consumed and no output pending: a truncated stream ends here
    except zlib.error:
        return False
    return inflater.eof


class ReceivingScp:
    """The running SCP; `shutdown` stops accepting and aborts open associations (their unacknowledged
    instances are not on disk; acknowledged ones are)."""

    def __init__(self, spool: Spool, options: ScpOptions, counters: Counters, on_event: Callable[[], None]) -> None:
        self.spool, self.options, self.counters, self.on_event = spool, options, counters, on_event
        self._bytes: dict[int, int] = {}  # association -> P-DATA bytes since its last C-STORE
        self.server = self._start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def _start(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        _config.LOG_REQUEST_IDENTIFIERS = False  # never log a dataset's identifiers
        _config.LOG_RESPONSE_IDENTIFIERS = False
        logging.getLogger("pynetdicom").setLevel(logging.ERROR)  # its INFO/DEBUG lines dump PDUs and headers
        o = self.options
        ae = AE(ae_title=o.aet)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)  # stored as sent, decoded later
        ae.add_supported_context(Verification)  # C-ECHO, for a router's connection test
        ae.maximum_pdu_size = o.max_pdu
        ae.maximum_associations = o.max_associations
        ae.require_called_aet = True
        if o.allow:
            ae.require_calling_aet = sorted({s.aet for s in o.allow})
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = o.timeout_s
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_CONN_OPEN, no_delay),
            (evt.EVT_DATA_SENT, quick_ack),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        try:
            server = ae.make_server(
                (o.host, o.port),
                evt_handlers=handlers,
                server_class=_server_class(self),
                request_handler=_handler_class(o),
            )
        except OSError as exc:  # the port is taken, the address is not this machine's, IPv6 on an IPv4 host
            raise RadRetrieveError(f"--port {o.port}: cannot listen on {o.host} ({exc.strerror or exc})") from None
        thread = threading.Thread(target=server.serve_forever, name="listen-accept", daemon=True)
        thread.start()
        ae._servers.append(server)  # pynetdicom's own shutdown() removes it from there
        return server

    def shutdown(self, wait_s: float = 10.0) -> None:
        """Stop accepting, then abort every open association, waiting at most `wait_s` for that (an association
        stuck waiting for a request of a silent peer would otherwise hold the exit until its ACSE timeout; its
        threads are daemons, so they never hold the process)."""
        self.server.shutdown()
        open_now = list(self.server.active_associations)
        stopper = threading.Thread(target=lambda: [a.abort() for a in open_now], name="listen-stop", daemon=True)
        stopper.start()
        stopper.join(timeout=wait_s)

    # -- event handlers (association threads) -------------------------------------------------------------
    def _on_requested(self, event: Any) -> None:
        """With an allow-list: the calling AE title must be allowed from the caller's address."""
        address = event.assoc.requestor.address
        aet = str(event.assoc.requestor.primitive.calling_ae_title or "").strip()
        if self.options.allow and not any(s.aet == aet and s.covers(address) for s in self.options.allow):
            self.counters.add(rejected=1)
            log.warning("rejected an association from %r at %s: not in --allow", aet, address)
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent; calling AE title not recognised
            time.sleep(0.1)  # let the reject reach the sender before pynetdicom closes the connection

    def _on_accepted(self, event: Any) -> None:
        self.counters.add(associations=1)
        self._bytes[id(event.assoc)] = 0

    def _on_data(self, event: Any) -> None:
        """Count P-DATA bytes of the instance being received; abort an association whose instance outgrows
        `max_instance_bytes` (pynetdicom would keep it all in memory)."""
        quick_ack(event)
        data = event.data
        key = id(event.assoc)
        if not data or data[0] != 0x04 or key not in self._bytes:
            return
        self._bytes[key] += len(data)
        if self._bytes[key] > self.options.max_instance_bytes + self.options.max_pdu:
            del self._bytes[key]
            self.counters.add(refused=1)
            log.warning(
                "aborted the association of %s: an instance larger than %d bytes (--max-instance-mb)",
                event.assoc.requestor.address,
                self.options.max_instance_bytes,
            )
            event.assoc.abort()

    def _on_store(self, event: Any) -> int:
        key = id(event.assoc)
        self._bytes[key] = 0
        try:
            return self._store(event, key)
        except Exception as exc:  # noqa: BLE001 - one refused instance, never a dead association thread
            self.counters.add(refused=1)
            log.error("could not store an instance (%s); answered out of resources", type(exc).__name__)
            return OUT_OF_RESOURCES
        finally:
            self.on_event()

    def _store(self, event: Any, key: int) -> int:
        data = event.encoded_dataset(include_meta=True)
        if len(data) > self.options.max_instance_bytes:
            self.counters.add(refused=1)
            log.warning("refused an instance of %d bytes (--max-instance-mb)", len(data))
            return OUT_OF_RESOURCES
        if shutil.disk_usage(self.spool.root).free < self.options.min_free_bytes + len(data):
            self.counters.add(refused=1)
            log.error(
                "refused an instance: less than %d MiB free for %s", self.options.min_free_bytes >> 20, self.spool.root
            )
            return OUT_OF_RESOURCES
        deflated = str(event.context.transfer_syntax) == DEFLATED
        if deflated and not inflates_within(event.encoded_dataset(include_meta=False), self.options.max_instance_bytes):
            self.counters.add(refused=1)
            log.warning("refused a deflated instance that is damaged or inflates past --max-instance-mb")
            return CANNOT_UNDERSTAND
        uids = instance_uids(data)
        if isinstance(uids, str):
            self.counters.add(refused=1)
            log.warning("refused an instance from %s: %s", event.assoc.requestor.address, uids)
            return CANNOT_UNDERSTAND
        new = self.spool.store(data, uids, key)
        self.counters.add(instances=int(new), duplicates=int(not new))
        return SUCCESS

    def _on_released(self, event: Any) -> None:
        self.spool.ended(id(event.assoc), released=True)
        self.on_event()

    def _on_closed(self, event: Any) -> None:
        self._bytes.pop(id(event.assoc), None)
        self.spool.ended(id(event.assoc), released=False)
        self.on_event()


def _server_class(scp: ReceivingScp) -> type:
    """pynetdicom's threaded server, with connections checked at accept (address, count)."""
    from pynetdicom.transport import ThreadedAssociationServer

    class Server(ThreadedAssociationServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            address = str(client_address[0])
            allow = scp.options.allow
            if allow and not any(s.covers(address) for s in allow):
                scp.counters.add(rejected=1)
                log.warning("refused a connection from %s: no --allow entry covers it", address)
                return False
            if len(self.active_associations) >= scp.options.max_associations + 2:
                scp.counters.add(rejected=1)
                log.warning(
                    "refused a connection from %s: %d associations open", address, len(self.active_associations)
                )
                return False
            return True

    return Server


def _handler_class(options: ScpOptions) -> type:
    """pynetdicom's request handler, with the association socket's reads bounded by the PDU size we offer."""
    from pynetdicom.transport import RequestHandler

    limit = max(options.max_pdu, PDU_HEADER_ROOM) + 6

    class Handler(RequestHandler):
        def _create_association(self) -> Any:
            assoc = super()._create_association()
            # daemons: a stop (SIGTERM) never waits for a sender; what it had acknowledged is on disk already
            assoc.daemon = assoc.dul.daemon = True
            sock = assoc.dul.socket
            read = sock.recv

            def bounded_recv(nr_bytes: int) -> bytearray:
                if nr_bytes > limit:  # a PDU header claiming more than we offered: close before buffering it
                    log.warning(
                        "closed the connection of %s: a PDU of %d bytes (max %d)",
                        self.client_address[0],
                        nr_bytes,
                        limit,
                    )
                    raise OSError("PDU larger than the maximum offered")
                return read(nr_bytes)

            sock.recv = bounded_recv
            return assoc

    return Handler
