"""QIDO-RS: which studies and series a DICOMweb server holds (studies by date, modality and query keys).

Every UID listed is checked (`uids.is_uid`) before it is used in a request or a name, and every query is
bounded: at most `Limits.max_listed` entries over all its pages. The study listing is the job: a failure
there stops it with one line. A study whose series cannot be listed (or a listed entry with a bad UID) is
one `fetch` error record, and the job goes on with the others.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from radretrieve.archive.dicomweb.client import FetchFailed, client_for, with_retries
from radretrieve.archive.dicomweb.source import DicomWebSource
from radretrieve.archive.dicomweb.uids import is_uid, why_not_uid
from radretrieve.archive.records import ErrorRecord
from radretrieve.foundation.errors import RadRetrieveError

# QIDO-RS matching keys that describe a series (the rest are matched on studies).
SERIES_KEYS = frozenset(
    {"Modality", "SeriesDescription", "SeriesNumber", "SeriesDate", "BodyPartExamined", "ProtocolName", "Laterality"}
)
STUDY_UID, SERIES_UID, MODALITY = "0020000D", "0020000E", "00080060"
PAGE = 500  # QIDO-RS results asked for per request (servers cap pages; some ignore `offset`: see `_paged`)
STUDY_LISTING = "(study listing)"  # the `source` of error records about entries of the study listing


@dataclass(frozen=True, order=True)
class SeriesRef:
    """One series as QIDO-RS lists it (UIDs and modality only: no patient data is kept from the answer)."""

    study_uid: str
    series_uid: str
    modality: str = ""


@dataclass(frozen=True)
class ListedSeries:
    """What the listing found: the series (valid UIDs only), and one error record per study or entry that
    could not be listed (stage `fetch`, sources of UIDs only)."""

    refs: tuple[SeriesRef, ...]
    errors: tuple[ErrorRecord, ...] = ()


class ListingTooLong(Exception):
    """A QIDO-RS query that went past `Limits.max_listed` entries."""


def first_value(obj: Any, tag: str) -> Any:
    """The first value of `tag` in a DICOM JSON object, or None (whatever shape the server sent)."""
    attr = obj.get(tag) if isinstance(obj, dict) else None
    values = attr.get("Value") if isinstance(attr, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _text(obj: Any, tag: str) -> str:
    value = first_value(obj, tag)
    return value if isinstance(value, str) else ""


def _search(source: DicomWebSource, call: Any) -> list[Any]:
    """One QIDO-RS page (raises FetchFailed). A body that is not a JSON array is a broken answer."""
    page = with_retries(call, source.retry)
    if not isinstance(page, list):
        raise FetchFailed("unexpected answer (not a JSON array)", 0, False)
    return page


def _paged(source: DicomWebSource, search: Any, key: str, modality: bool = False) -> list[tuple[Any, str]]:
    """(UID value as sent, modality) of every result of a QIDO-RS query, page by page (`search(offset,
    limit)`), in the order first seen. Stops at a short page, and at a page with nothing new: a server that
    ignores `offset` would otherwise be asked forever (dicomweb-client's own `get_remaining` loops until an
    empty page). Raises ListingTooLong past `max_listed` entries received (a pagination that never ends),
    FetchFailed when a page fails. Only UIDs (and modalities) are kept: no patient data of the answers."""
    limit = source.limits.max_listed
    found: dict[str, tuple[Any, str]] = {}
    offset = received = 0
    while True:
        page = _search(source, functools.partial(search, offset, PAGE))
        received += len(page)
        if received > limit:
            raise ListingTooLong(f"more than {limit} entries (--max-listed)")
        before = len(found)
        for obj in page:
            value = first_value(obj, key)
            found.setdefault(repr(value), (value, _text(obj, MODALITY).upper() if modality else ""))
        if len(page) < PAGE or len(found) == before:
            return list(found.values())
        offset += len(page)


def _server_error(source: DicomWebSource, what: str, exc: FetchFailed) -> str:
    if exc.status in (401, 403):
        hint = (
            "check RADRETRIEVE_DICOMWEB_AUTH or --auth-file"
            if source.auth
            else "set RADRETRIEVE_DICOMWEB_AUTH or --auth-file"
        )
        return f"{source.display}: the server refused {what} ({exc.reason}): {hint}"
    if exc.status == 404:
        return f"{source.display}: no QIDO-RS service there ({exc.reason}); is the path the DICOMweb root?"
    if exc.status == 0 and exc.transient:
        return f"{source.display}: cannot reach the DICOMweb server ({exc.reason})"
    return f"{source.display}: listing {what} failed ({exc.reason})"


def _studies(client: Any, filters: dict[str, str], offset: int, limit: int) -> list[dict[str, Any]]:
    return client.search_for_studies(search_filters=dict(filters), offset=offset, limit=limit)


def _series(client: Any, study: str, filters: dict[str, str], offset: int, limit: int) -> list[dict[str, Any]]:
    return client.search_for_series(study, search_filters=dict(filters), offset=offset, limit=limit)


def probe(source: DicomWebSource) -> None:
    """One small QIDO-RS query, so that an unreachable server or refused credentials are reported before
    anything slow starts (loading a model). Raises RadRetrieveError (one line)."""
    client = client_for(source)
    try:
        _search(source, functools.partial(_studies, client, {}, 0, 1))
    except FetchFailed as exc:
        raise RadRetrieveError(_server_error(source, "the study listing", exc)) from None


def list_series(source: DicomWebSource) -> ListedSeries:
    """Every series of the studies that match the listing, sorted by (study, series) UID, and an error record
    for each study whose series could not be listed and each listed entry without a valid UID.

    Raises RadRetrieveError (one line) when the study listing itself fails (unreachable server, refused,
    too long, too large, too slow, redirected elsewhere)."""
    listing = source.listing
    study_filters = {k: v for k, v in listing.query if k not in SERIES_KEYS}
    if listing.since:
        study_filters["StudyDate"] = f"{listing.since}-"
    studies: set[str] = set()
    errors: list[ErrorRecord] = []
    for modality in listing.modalities or (None,):
        filters = dict(study_filters, **({"ModalitiesInStudy": modality} if modality else {}))
        for value, _ in _list_studies(source, filters):
            if is_uid(value):
                studies.add(value)
            else:
                message = f"the study listing has {why_not_uid(value, 'Study Instance UID')}: entry skipped"
                errors.append(ErrorRecord(STUDY_LISTING, "fetch", "InvalidUID", message))
    refs: set[SeriesRef] = set()
    for study in sorted(studies):
        found, failed = _study_series(source, study)
        refs.update(found)
        errors.extend(failed)
    return ListedSeries(tuple(sorted(refs)), tuple(errors))


def _list_studies(source: DicomWebSource, filters: dict[str, str]) -> list[tuple[Any, str]]:
    search = functools.partial(_studies, client_for(source), filters)
    try:
        return _paged(source, search, STUDY_UID)
    except ListingTooLong as exc:
        hint = "narrow it (--since, --modality, --query) or raise --max-listed"
        raise RadRetrieveError(f"{source.display}: the study listing has {exc}: {hint}") from None
    except FetchFailed as exc:
        raise RadRetrieveError(_server_error(source, "the study listing", exc)) from None


def _study_series(source: DicomWebSource, study: str) -> tuple[list[SeriesRef], list[ErrorRecord]]:
    """The series of one study (of the listed modalities); errors: the study's, or its bad entries'."""
    modalities = source.listing.modalities
    series_filters = {k: v for k, v in source.listing.query if k in SERIES_KEYS}
    search = functools.partial(_series, client_for(source), study, series_filters)
    try:
        found = _paged(source, search, SERIES_UID, modality=True)
    except (ListingTooLong, FetchFailed) as exc:
        error_type = exc.error_type if isinstance(exc, FetchFailed) else "ListingTooLong"
        message = f"study {study}: its series could not be listed ({exc})"
        return [], [ErrorRecord(study, "fetch", error_type, message)]
    refs, errors = [], []
    for value, modality in found:
        if not is_uid(value):
            message = f"study {study}: {why_not_uid(value, 'Series Instance UID')}: series skipped"
            errors.append(ErrorRecord(study, "fetch", "InvalidUID", message))
        elif not modalities or modality in modalities:
            refs.append(SeriesRef(study, value, modality))
    return refs, errors
