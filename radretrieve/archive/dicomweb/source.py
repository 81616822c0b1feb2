"""`DicomWebSource`: which DICOMweb server to index, what to list there, and how hard to try."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from radretrieve.archive.dicomweb.auth import Auth
from radretrieve.foundation.errors import RadRetrieveError

SCHEME_PREFIX = "dicomweb+"  # `dicomweb+http://HOST:PORT/PATH` or `dicomweb+https://...`


def is_dicomweb(archive: object) -> bool:
    """Whether an `index` argument names a DICOMweb server rather than a folder or manifest."""
    return isinstance(archive, str) and archive.lower().startswith(SCHEME_PREFIX)


@dataclass(frozen=True)
class Retry:
    """How network errors and 5xx answers are retried: `tries` attempts, `backoff_s` * 2^k apart."""

    tries: int = 5  # attempts per request (1: no retry)
    backoff_s: float = 0.5  # wait before the second attempt; doubled for each further one
    timeout_s: float = 60.0  # connect/read timeout of one request

    def __post_init__(self) -> None:
        if self.tries < 1:
            raise RadRetrieveError(f"--retries must be >= 0, got {self.tries - 1}")
        if self.backoff_s < 0:
            raise RadRetrieveError(f"--retry-backoff must be >= 0, got {self.backoff_s}")


@dataclass(frozen=True)
class Limits:
    """Bounds on what a server may send, so that a broken or hostile one costs one error line, never the job:
    every answer is read with these checked as it arrives (`radretrieve.archive.dicomweb.transport`)."""

    max_response_bytes: int = 1 << 30  # one answer (an instance, a metadata or listing page); --max-response-mb
    max_listed: int = 1_000_000  # entries received for one QIDO-RS query (all its pages); --max-listed
    deadline_s: float = 600.0  # wall-clock seconds for one HTTP request, connect to last byte; --request-deadline
    max_redirects: int = 5  # redirects followed per request (same scheme, host and port only)
    # An answer held in memory (a listing page, a series' metadata) is also bounded by this: parsed JSON takes
    # several times its size, and real metadata stays far below it (5,000 instances x 20 KiB = 100 MiB).
    # Instances are streamed to disk, never held (`fetch`): they have `max_response_bytes` alone.
    max_held_bytes: int = 256 << 20

    def __post_init__(self) -> None:
        if self.max_response_bytes < 1:
            raise RadRetrieveError(f"--max-response-mb must be > 0, got {self.max_response_bytes / 2**20:g}")
        if self.max_listed < 1:
            raise RadRetrieveError(f"--max-listed must be >= 1, got {self.max_listed}")
        if not self.deadline_s > 0:
            raise RadRetrieveError(f"--request-deadline must be > 0, got {self.deadline_s}")
        if self.max_held_bytes < 1:
            raise RadRetrieveError(f"the in-memory answer bound must be > 0, got {self.max_held_bytes}")

    @classmethod
    def from_options(cls, max_response_mb: float, max_listed: int, request_deadline: float) -> Limits:
        """The bounds of the `index` options (--max-response-mb, --max-listed, --request-deadline), checked."""
        if not max_response_mb > 0:  # also NaN: refused before it becomes a byte count
            raise RadRetrieveError(f"--max-response-mb must be > 0, got {max_response_mb:g}")
        return cls(max(1, int(max_response_mb * 2**20)), int(max_listed), float(request_deadline))


@dataclass(frozen=True)
class Listing:
    """What QIDO-RS lists: studies from `since` on, with these modalities, matching `query`."""

    since: str = ""  # YYYYMMDD: studies with StudyDate on or after it ("" = all)
    modalities: tuple[str, ...] = ()  # e.g. ("CT", "MR"): series of these modalities only (() = all)
    query: tuple[tuple[str, str], ...] = ()  # extra QIDO matching keys (DICOM keyword, value)


@dataclass(frozen=True)
class DicomWebSource:
    """A DICOMweb server (QIDO-RS, WADO-RS) as an archive; an `ScanResult.root` for items read from it.

    `url` is the service root (http/https, no credentials in it); `auth` travels to the reader processes
    (they fetch), but never into a repr or a log line."""

    url: str  # e.g. http://127.0.0.1:8042/dicom-web
    listing: Listing = Listing()
    retry: Retry = Retry()
    auth: Auth | None = field(default=None, repr=False)
    limits: Limits = Limits()

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port) of the server: the only place a request may be redirected to."""
        return origin_of(self.url)

    @property
    def display(self) -> str:
        """How the source is named in messages and in OUT/archive.json."""
        return SCHEME_PREFIX + self.url

    def read_item(self, item: Any, cfg: Any) -> Any:
        """Fetch `item`'s instances (WADO-RS) and decode them as `radretrieve.archive.read_item` does."""
        from radretrieve.archive.dicomweb.fetch import read_remote_item

        return read_remote_item(self, item, cfg)

    def list_series(self) -> Any:
        """QIDO-RS: every series listed (`radretrieve.archive.dicomweb.listing.list_series`)."""
        from radretrieve.archive.dicomweb.listing import list_series

        return list_series(self)

    def scan_series(self, ref: Any) -> Any:
        """WADO-RS metadata of one series, scanned as header-only files (`dicomweb.scan.scan_series`)."""
        from radretrieve.archive.dicomweb.scan import scan_series

        return scan_series(self, ref)

    def assemble(self, scans: Any, log_paths: bool, policy: Any, listing_errors: Any) -> Any:
        """The scanned series as one ScanResult (`dicomweb.scan.assemble_series`)."""
        from radretrieve.archive.dicomweb.scan import assemble_series

        return assemble_series(self, scans, log_paths, policy, listing_errors)

    def remove_stale(self) -> None:
        """Scratch copies (patient headers) of a reader or job killed before it could remove them."""
        from radretrieve.archive.dicomweb.scratch import remove_stale

        remove_stale()


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, lower-case host, port with the scheme's default filled in) of an http(s) URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: no origin of ours
        port = -1
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def parse_source(
    archive: str,
    auth: Auth | None = None,
    since: str | None = None,
    modalities: str | None = None,
    query: list[str] | None = None,
    retry: Retry = Retry(),
    limits: Limits = Limits(),
) -> DicomWebSource:
    """A source from the `index` arguments (`dicomweb+http(s)://HOST[:PORT]/PATH`, `--since`, ...)."""
    url = archive[len(SCHEME_PREFIX) :].rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RadRetrieveError(f"{archive}: expected dicomweb+http://HOST[:PORT]/PATH or dicomweb+https://...")
    if parts.username or parts.password:
        raise RadRetrieveError(
            "credentials in the URL are not accepted (they would show in process lists and logs): "
            "use RADRETRIEVE_DICOMWEB_AUTH or --auth-file"
        )
    return DicomWebSource(url, parse_listing(since, modalities, query), retry, auth, limits)


def parse_listing(since: str | None, modalities: str | None, query: list[str] | None) -> Listing:
    """The `--since`, `--modality` and `--query` options, checked (shared by the DICOMweb and DIMSE sources)."""
    return Listing(_date(since) if since else "", _modalities(modalities), _query(query or []))


def _date(text: str) -> str:
    digits = text.replace("-", "")
    if not re.fullmatch(r"\d{8}", digits):
        raise RadRetrieveError(f"--since {text!r}: expected a date as YYYY-MM-DD or YYYYMMDD")
    return digits


def _modalities(text: str | None) -> tuple[str, ...]:
    found = tuple(m.strip().upper() for m in (text or "").split(",") if m.strip())
    bad = [m for m in found if not re.fullmatch(r"[A-Z0-9]{1,16}", m)]
    if bad:
        raise RadRetrieveError(f"--modality: {bad[0]!r} is not a DICOM modality code (e.g. CT,MR)")
    return found


def _query(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RadRetrieveError("--query: expected KEY=VALUE, KEY a DICOM keyword (e.g. StudyDescription)")
        tag = tag_for_keyword(key)
        if tag is None or dictionary_VR(tag) == "SQ":
            raise RadRetrieveError(f"--query {key}: not a DICOM keyword a listing can match (e.g. StudyDescription)")
        out.append((key, value))
    return tuple(out)
