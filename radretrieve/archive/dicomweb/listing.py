"""QIDO-RS: which studies and series a DICOMweb server holds (studies by date, modality and query keys)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from radretrieve.archive.dicomweb.client import FetchFailed, client_for, with_retries
from radretrieve.archive.dicomweb.source import DicomWebSource
from radretrieve.foundation.errors import RadRetrieveError

# QIDO-RS matching keys that describe a series (the rest are matched on studies).
SERIES_KEYS = frozenset(
    {"Modality", "SeriesDescription", "SeriesNumber", "SeriesDate", "BodyPartExamined", "ProtocolName", "Laterality"}
)
STUDY_UID, SERIES_UID, MODALITY = "0020000D", "0020000E", "00080060"
PAGE = 500  # QIDO-RS results asked for per request (servers cap pages; some ignore `offset`: see `_paged`)


@dataclass(frozen=True, order=True)
class SeriesRef:
    """One series as QIDO-RS lists it (UIDs and modality only: no patient data is kept from the answer)."""

    study_uid: str
    series_uid: str
    modality: str = ""


def _value(obj: dict[str, Any], tag: str) -> str:
    values = obj.get(tag, {}).get("Value") or [""]
    return str(values[0])


def _search(source: DicomWebSource, what: str, call: Any) -> list[dict[str, Any]]:
    try:
        return with_retries(call, source.retry)
    except FetchFailed as exc:
        raise RadRetrieveError(_server_error(source, what, exc)) from None


def _paged(source: DicomWebSource, what: str, search: Any, key: str) -> list[dict[str, Any]]:
    """Every result of a QIDO-RS query, page by page (`search(offset, limit)`). Stops at a short page, and at a
    page with nothing new: a server that ignores `offset` would otherwise be asked forever (dicomweb-client's
    own `get_remaining` loops until an empty page)."""
    found: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        page = _search(source, what, functools.partial(search, offset, PAGE))
        new = {_value(obj, key): obj for obj in page if _value(obj, key) not in found}
        found.update(new)
        if len(page) < PAGE or not new:
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
    _search(source, "the study listing", functools.partial(_studies, client, {}, 0, 1))


def list_series(source: DicomWebSource) -> list[SeriesRef]:
    """Every series of the studies that match the listing, sorted by (study, series) UID.

    Raises RadRetrieveError (one line) when the server cannot be reached or refuses the listing."""
    client = client_for(source)
    listing = source.listing
    study_filters = {k: v for k, v in listing.query if k not in SERIES_KEYS}
    series_filters = {k: v for k, v in listing.query if k in SERIES_KEYS}
    if listing.since:
        study_filters["StudyDate"] = f"{listing.since}-"
    studies: set[str] = set()
    for modality in listing.modalities or (None,):
        filters = dict(study_filters, **({"ModalitiesInStudy": modality} if modality else {}))
        found = _paged(source, "the study listing", functools.partial(_studies, client, filters), STUDY_UID)
        studies.update(uid for uid in (_value(obj, STUDY_UID) for obj in found) if uid)
    refs = set()
    for study in sorted(studies):
        search = functools.partial(_series, client, study, series_filters)
        for obj in _paged(source, "a series listing", search, SERIES_UID):
            ref = SeriesRef(study, _value(obj, SERIES_UID), _value(obj, MODALITY).upper())
            if ref.series_uid and (not listing.modalities or ref.modality in listing.modalities):
                refs.add(ref)
    return sorted(refs)
