"""C-FIND (Study Root): which studies and series a DICOM node holds (studies by date, modality, query keys).

The identifiers sent ask only for UIDs and the modality (and carry the `--query` matches); from the answers
only the UIDs, checked (`dicomweb.uids.is_uid`), and the modality are kept: no patient data, even where a node
returns more than was asked. Each query is bounded: at most `Limits.max_listed` answers, each within
`--max-response-mb`. The study listing is the job: a failure there stops it with one line. A study whose
series cannot be listed (or a listed entry with a bad UID) is one `fetch` error record; the job goes on.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

from radretrieve.archive.dicomweb.listing import SERIES_KEYS, STUDY_LISTING, ListedSeries, SeriesRef
from radretrieve.archive.dicomweb.uids import is_uid, why_not_uid
from radretrieve.archive.dimse.association import (
    DimseFailed,
    final_status,
    open_association,
    settle,
    with_retries,
)
from radretrieve.archive.dimse.source import DimseSource
from radretrieve.archive.records import ErrorRecord
from radretrieve.foundation.errors import RadRetrieveError

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
PENDING = (0xFF00, 0xFF01)
CONTEXTS = [(FIND, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])]  # explicit, implicit VR little endian


class ListingTooLong(DimseFailed):
    """A C-FIND that went past `Limits.max_listed` answers."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} entries (--max-listed)", "ListingTooLong", False)


def run_find(assoc: Any, watch: Any, query: Any, limit: int) -> Iterator[Any]:
    """The identifiers a C-FIND answers (pending answers), at most `limit`; raises DimseFailed for a failure
    status, an aborted association, more than `limit` answers, or an answer that arrived but was not handed
    to us (transient: pynetdicom's reactor took it, see `association.settle`; trying again lists it)."""
    settle(assoc)
    count, taken, before = 0, 0, watch.find_answers
    for status, identifier in assoc.send_c_find(query, FIND):
        watch.mark()
        taken += 1
        code = final_status(status, "a C-FIND")
        if code == 0x0000:
            if watch.find_answers - before != taken:  # all decoded before the final one was queued
                lost = watch.find_answers - before - taken
                raise DimseFailed(f"{lost} C-FIND answer(s) arrived but were lost on our side", "FetchFailed", True)
            return
        if code not in PENDING:
            raise DimseFailed(f"C-FIND failed (status 0x{code:04X})", "FetchRefused", False)
        count += 1
        if count > limit:
            raise ListingTooLong(limit)
        if identifier is None:
            raise DimseFailed("C-FIND answer that is not a DICOM data set", "FetchFailed", False)
        yield identifier
    raise DimseFailed("the node went away during a C-FIND (no final status)", "AssociationAborted", True)


def value_of(identifier: Any, keyword: str) -> Any:
    """The value of `keyword` in an answer, or None (whatever a node sent: a malformed element is None)."""
    try:
        value = identifier.get(keyword)
    except Exception:  # noqa: BLE001 - pydicom raises many types decoding a malformed element
        return None
    return str(value) if isinstance(value, str) else value


def _dataset(level: str, keys: dict[str, Any]) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        try:
            setattr(ds, keyword, value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise RadRetrieveError(f"--query {keyword}={value!r}: not a value of that attribute ({exc})") from None
    return ds


def probe(source: DimseSource) -> None:
    """Open (and release) one association, so that an unreachable node or a rejection (AE titles) is reported
    before anything slow starts (loading a model). Raises RadRetrieveError (one line)."""
    try:
        with_retries(lambda: _open_and_release(source), source)
    except DimseFailed as exc:
        raise RadRetrieveError(_node_error(source, exc)) from None


def _open_and_release(source: DimseSource) -> None:
    with open_association(source, CONTEXTS):
        pass


def _node_error(source: DimseSource, exc: DimseFailed) -> str:
    hint = ""
    if exc.error_type == "AssociationRejected":
        hint = (
            f": check the called AE title, and that the node knows ours ({source.calling_aet}, --calling-aet) "
            "with this host"
        )
    return f"{source.display}: {exc.reason}{hint}"


def list_series(source: DimseSource) -> ListedSeries:
    """Every series of the studies that match the listing, sorted by (study, series) UID, and an error record
    for each study whose series could not be listed and each entry without a valid UID. Raises
    RadRetrieveError (one line) when the study listing itself fails."""
    try:
        studies, errors = with_retries(lambda: _list_studies(source), source)
    except DimseFailed as exc:
        if isinstance(exc, ListingTooLong):
            hint = "narrow it (--since, --modality, --query) or raise --max-listed"
            raise RadRetrieveError(f"{source.display}: the study listing has {exc.reason}: {hint}") from None
        raise RadRetrieveError(_node_error(source, exc)) from None
    return ListedSeries(tuple(sorted(_all_series(source, studies, errors))), tuple(errors))


def _all_series(source: DimseSource, studies: set[str], errors: list[ErrorRecord]) -> set[SeriesRef]:
    """The series of every study, over one association while it lasts (one per study would cost a round trip
    each); a study whose C-FIND fails is tried `retry.tries` times on a new association, then recorded."""
    refs: set[SeriesRef] = set()
    todo, tries = collections.deque(sorted(studies)), 0
    while todo:
        try:
            with open_association(source, CONTEXTS) as (assoc, watch):
                while todo:
                    refs.update(_study_series(assoc, watch, source, todo[0], errors))
                    todo.popleft()
                    tries = 0
        except DimseFailed as exc:
            tries += 1
            if exc.transient and tries < source.retry.tries:
                time.sleep(source.retry.backoff_s * 2 ** (tries - 1))
                continue
            study, tries = todo.popleft(), 0
            message = f"study {study}: its series could not be listed ({exc.reason})"
            errors.append(ErrorRecord(study, "fetch", exc.error_type, message))
    return refs


def _study_keys(source: DimseSource, modality: str | None) -> dict[str, Any]:
    listing = source.listing
    keys: dict[str, Any] = {"StudyInstanceUID": ""}
    keys.update((k, v) for k, v in listing.query if k not in SERIES_KEYS)
    if listing.since:
        keys["StudyDate"] = f"{listing.since}-"
    if modality:
        keys["ModalitiesInStudy"] = modality
    return keys


def _list_studies(source: DimseSource) -> tuple[set[str], list[ErrorRecord]]:
    studies: set[str] = set()
    errors: list[ErrorRecord] = []
    with open_association(source, CONTEXTS) as (assoc, watch):
        for modality in source.listing.modalities or (None,):
            query = _dataset("STUDY", _study_keys(source, modality))
            for identifier in run_find(assoc, watch, query, source.limits.max_listed):
                value = value_of(identifier, "StudyInstanceUID")
                if is_uid(value):
                    studies.add(value)
                else:
                    message = f"the study listing has {why_not_uid(value, 'Study Instance UID')}: entry skipped"
                    errors.append(ErrorRecord(STUDY_LISTING, "fetch", "InvalidUID", message))
    return studies, errors


def _study_series(
    assoc: Any, watch: Any, source: DimseSource, study: str, errors: list[ErrorRecord]
) -> list[SeriesRef]:
    """The series of one study (of the listed modalities); bad entries are added to `errors`."""
    keys: dict[str, Any] = {"StudyInstanceUID": study, "SeriesInstanceUID": "", "Modality": ""}
    keys.update((k, v) for k, v in source.listing.query if k in SERIES_KEYS)
    modalities = source.listing.modalities
    refs, bad = [], []
    for identifier in run_find(assoc, watch, _dataset("SERIES", keys), source.limits.max_listed):
        value = value_of(identifier, "SeriesInstanceUID")
        modality = value_of(identifier, "Modality")
        modality = modality.strip().upper() if isinstance(modality, str) else ""
        if not is_uid(value):
            message = f"study {study}: {why_not_uid(value, 'Series Instance UID')}: series skipped"
            bad.append(ErrorRecord(study, "fetch", "InvalidUID", message))
        elif not modalities or modality in modalities:
            refs.append(SeriesRef(study, value, modality))
    errors.extend(bad)  # after the C-FIND finished: a retried study records its bad entries once
    return refs
