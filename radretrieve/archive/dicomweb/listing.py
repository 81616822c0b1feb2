"""QIDO-RS: which studies and series a DICOMweb server holds (studies by date, modality and query keys)."""

from __future__ import annotations

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


def probe(source: DicomWebSource) -> None:
    """One small QIDO-RS query, so that an unreachable server or refused credentials are reported before
    anything slow starts (loading a model). Raises RadRetrieveError (one line)."""
    client = client_for(source)
    _search(source, "the study listing", lambda: client.search_for_studies(limit=1))


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
        found = _search(
            source,
            "the study listing",
            lambda f=filters: client.search_for_studies(search_filters=f, get_remaining=True),
        )
        studies.update(uid for uid in (_value(s, STUDY_UID) for s in found) if uid)
    refs = set()
    for study in sorted(studies):
        found = _search(
            source,
            "a series listing",
            lambda s=study: client.search_for_series(s, search_filters=dict(series_filters), get_remaining=True),
        )
        for obj in found:
            ref = SeriesRef(study, _value(obj, SERIES_UID), _value(obj, MODALITY).upper())
            if ref.series_uid and (not listing.modalities or ref.modality in listing.modalities):
                refs.add(ref)
    return sorted(refs)
