"""`DimseSource`: which DICOM node (PACS) to index over DIMSE, as whom, what to list there, and how hard to try."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from radretrieve.archive.dicomweb.source import Limits, Listing, Retry, parse_listing
from radretrieve.foundation.errors import RadRetrieveError

SCHEME = "dimse://"  # dimse://CALLED_AET@HOST:PORT
DEFAULT_CALLING_AET = "RADRETRIEVE"
MAX_AE_TITLE = 16  # PS3.5 6.2: AE is at most 16 characters of the default repertoire, no backslash, no controls
# A host name (letters, digits, dots, hyphens) or an IPv4 address; an IPv6 address in brackets
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]")


def is_dimse(archive: object) -> bool:
    """Whether an `index` argument names a DICOM node over DIMSE (dimse://AET@HOST:PORT)."""
    return isinstance(archive, str) and archive.lower().startswith(SCHEME)


@dataclass(frozen=True)
class DimseSource:
    """A DICOM node (C-FIND, C-GET or C-MOVE) as an archive; a `ScanResult.root` for the items read from it.

    Every association is opened by the process that needs it (the main process lists, reader processes scan
    and fetch), so the source is plain data and pickles. `retry.timeout_s` is the ACSE, DIMSE and network
    timeout of every association; `limits.deadline_s` bounds one association from request to release;
    `limits.max_response_bytes` bounds one instance (and one C-FIND answer)."""

    host: str  # the node's host name or address (as given; connected to as is)
    port: int  # its DICOM port
    called_aet: str  # the node's AE title
    calling_aet: str = DEFAULT_CALLING_AET  # ours: the node must know it (and, for C-MOVE, where it listens)
    listing: Listing = Listing()
    retry: Retry = Retry()
    limits: Limits = Limits()
    move_port: int | None = None  # None: C-GET; else C-MOVE to our storage SCP on 127.0.0.1 at this port
    # keep what a series' header scan retrieved (within `limits.max_held_bytes` per process), so that reading
    # its item does not retrieve its slices again (`dimse.memory`); False: every read retrieves
    keep_scanned: bool = True

    @property
    def display(self) -> str:
        """How the source is named in messages and in OUT/archive.json."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address, as it was given
        return f"{SCHEME}{self.called_aet}@{host}:{self.port}"

    def read_item(self, item: Any, cfg: Any) -> Any:
        """Retrieve the instances `item` decodes (C-GET or C-MOVE) and decode them with the folder code."""
        from radretrieve.archive.dimse.fetch import read_remote_item

        return read_remote_item(self, item, cfg)

    def list_series(self) -> Any:
        """C-FIND at study, then series level (`radretrieve.archive.dimse.listing.list_series`)."""
        from radretrieve.archive.dimse.listing import list_series

        return list_series(self)

    def scan_series(self, ref: Any) -> Any:
        """The headers of one series, retrieved and scanned as files (`dimse.scan.scan_series`)."""
        from radretrieve.archive.dimse.scan import scan_series

        return scan_series(self, ref)

    def assemble(self, scans: Any, log_paths: bool, policy: Any, listing_errors: Any) -> Any:
        """The scanned series as one ScanResult (the DICOMweb source's `assemble_series`: same virtual paths)."""
        from radretrieve.archive.dicomweb.scan import assemble_series

        return assemble_series(self, scans, log_paths, policy, listing_errors)  # type: ignore[arg-type]

    def remove_stale(self) -> None:
        """At a job's start: scratch copies (patient headers) of a reader or job killed before it could remove
        them, and what an earlier job of this process kept from its scans and never read (`dimse.memory`)."""
        from radretrieve.archive.dicomweb.scratch import remove_stale
        from radretrieve.archive.dimse.memory import KEPT

        remove_stale()
        KEPT.clear()


def check_ae_title(value: str, what: str) -> str:
    """`value` as an AE title (1-16 characters of printable ASCII, no backslash, not all spaces), else one line."""
    if not value.strip():
        raise RadRetrieveError(f"{what}: an AE title cannot be empty")
    if len(value) > MAX_AE_TITLE:
        raise RadRetrieveError(f"{what}: an AE title has at most {MAX_AE_TITLE} characters, got {len(value)}")
    if "\\" in value or not all(" " <= ch <= "~" for ch in value):
        raise RadRetrieveError(f"{what}: an AE title is printable ASCII without backslash")
    return value.strip()  # leading and trailing spaces are not significant (PS3.5 6.2)


def check_port(value: int, what: str) -> int:
    if not 1 <= int(value) <= 65535:
        raise RadRetrieveError(f"{what}: a port is 1 to 65535, got {value}")
    return int(value)


def parse_source(
    archive: str,
    calling_aet: str | None = None,
    since: str | None = None,
    modalities: str | None = None,
    query: list[str] | None = None,
    retry: Retry = Retry(),
    limits: Limits = Limits(),
    move_port: int | None = None,
) -> DimseSource:
    """A source from the `index` arguments (`dimse://CALLED_AET@HOST:PORT`, `--calling-aet`, `--since`, ...)."""
    rest = archive[len(SCHEME) :].rstrip("/")
    called, at, address = rest.rpartition("@")
    host, colon, port = address.rpartition(":")
    expected = f"{archive}: expected dimse://CALLED_AET@HOST:PORT (e.g. dimse://PACS@pacs.example.org:11112)"
    if not at or not colon or not _HOST.fullmatch(host) or not port.isascii() or not port.isdigit():
        raise RadRetrieveError(expected)
    return DimseSource(
        host=host.strip("[]"),
        port=check_port(int(port), archive),
        called_aet=check_ae_title(called, f"{archive}: the called AE title"),
        calling_aet=check_ae_title(calling_aet or DEFAULT_CALLING_AET, "--calling-aet"),
        listing=parse_listing(since, modalities, query),
        retry=retry,
        limits=limits,
        move_port=None if move_port is None else check_port(move_port, "--move-port"),
    )
