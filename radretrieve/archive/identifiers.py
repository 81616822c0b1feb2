"""Identifier columns: a manifest exported from a RIS (or a JSON sidecar's `labels`) carries patient names,
record numbers, birth dates and accession numbers beside the labels. Such a column is an identifier, not a
label: it is never stored, and its values redact the same row's free text (radretrieve.archive.redact), like
the identifiers of a DICOM study's own headers.

A column is recognised by its header in any spelling and case (`PatientName`, `patient_name`, `PATIENT NAME`,
`MRN`, `Accession Number`, `DOB`, `Date of Birth`, `first_name`, `Referring Physician`, `phone`...): the
header is split into lower-case words (at case changes, digits and punctuation), and the words, or the
header with its separators removed, are matched against the identifier vocabulary below.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Literal

from radretrieve.archive.redact import NO_IDS, PatientIds

Kind = Literal["name", "birth", "accession", "id"]
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

# Words that make a column an identifier of one kind on their own.
_BIRTH = {"dob", "birth", "birthdate", "birthday", "dateofbirth", "born"}
_ACCESSION = {"accession", "accessionnumber", "accessionno", "acc", "accno", "accnum", "accnr"}
_ID = {
    "mrn", "mrno", "ssn", "nhs", "nhsno", "ehr", "emr", "urn", "umrn", "cpr", "bsn", "nir", "ahv",
    "pid", "patid", "ptid", "patientid", "patientsid", "patientnumber", "patientno", "recordnumber",
    "medicalrecordnumber", "hospitalnumber", "hospitalid", "insurance", "insuranceid", "socialsecurity",
    "phone", "telephone", "tel", "mobile", "fax", "email", "mail", "address", "street", "zip", "zipcode",
    "postcode", "postalcode",
}  # fmt: skip
_NAME = {
    "surname", "forename", "firstname", "lastname", "givenname", "familyname", "fullname", "middlename",
    "maidenname", "patientname", "patientsname", "physician", "doctor", "radiologist", "referrer", "nurse",
    "technologist", "operator",
}  # fmt: skip
# A word that makes `name`, `id`, `number` ... an identifier when it stands beside it.
_PERSON = {
    "patient", "patients", "pat", "pt", "first", "last", "given", "family", "full", "middle", "maiden",
    "sur", "fore", "referring", "reporting", "performing", "attending", "requesting", "ordering", "author",
    "staff", "person",
}  # fmt: skip
_NUMBER = {"id", "no", "nr", "num", "number", "identifier", "key", "code"}
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def _words(header: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORDS.findall(header))


@functools.lru_cache(maxsize=1024)
def identifier_kind(header: str) -> Kind | None:
    """The kind of identifier a column of this header holds, or None for a label."""
    words = _words(header)
    joined = "".join(words)
    kinds: list[tuple[set[str], Kind]] = [(_BIRTH, "birth"), (_ACCESSION, "accession"), (_NAME, "name"), (_ID, "id")]
    for vocabulary, kind in kinds:
        if joined in vocabulary or any(w in vocabulary for w in words):
            return kind
    if "birth" in joined or joined.startswith("accession"):
        return "birth" if "birth" in joined else "accession"
    person = any(w in _PERSON for w in words)
    if "name" in words and (person or words == ("name",)):
        return "name"
    if "record" in words or (person and any(w in _NUMBER for w in words)) or words in (("patient",), ("pt",)):
        return "name" if words in (("patient",), ("pt",)) else "id"
    return None


def split_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], PatientIds, tuple[str, ...]]:
    """(the labels that are labels, the identifiers of the others for redaction, the names of the others)."""
    kept: dict[str, str] = {}
    found: dict[Kind, list[str]] = {"name": [], "birth": [], "accession": [], "id": []}
    dropped = []
    for key, value in labels.items():
        kind = identifier_kind(str(key))
        if kind is None:
            kept[key] = value
            continue
        dropped.append(str(key))
        if value:
            found[kind].append(str(value))
    return kept, _ids(found, labels), tuple(dropped)


def is_identifier_value(value: str, labels: Mapping[str, str]) -> bool:
    """Whether `value` (a row's `study`) is one of the row's identifier values, compared by letters and digits
    ("MRN 0042-7731" is "mrn00427731"): a record number or accession number used as the study key."""
    key = _alnum(value)
    return bool(key) and any(identifier_kind(str(k)) and _alnum(str(v)) == key for k, v in labels.items() if v)


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _ids(found: Mapping[Kind, list[str]], labels: Mapping[str, str]) -> PatientIds:
    if not any(found.values()):
        return NO_IDS
    names = {_pn(v) for v in found["name"]}
    given = [v for k, v in labels.items() if v and set(_words(str(k))) & {"first", "given", "fore", "forename"}]
    family = [v for k, v in labels.items() if v and set(_words(str(k))) & {"last", "family", "sur", "surname"}]
    names |= {f"{f}^{g}" for f in family for g in given}  # separate columns: the whole name too
    dates = {d for v in found["birth"] for d in dicom_dates(v)}
    # every value is also matched as written (runs of letters and digits, any separators between them)
    ids = set(found["id"]) | set(found["birth"])
    return PatientIds(
        names=frozenset(names),
        ids=frozenset(ids),
        accessions=frozenset(found["accession"]),
        birth_dates=frozenset(dates),
    )


def _pn(value: str) -> str:
    """A name as written ("Jane Q Doe", "Doe, Jane", "DOE^JANE") -> DICOM PN (Family^Given Middle)."""
    if "^" in value:
        return value
    if "," in value:
        family, given = value.split(",", 1)
        return f"{family.strip()}^{given.strip()}"
    words = value.split()
    return f"{words[-1]}^{' '.join(words[:-1])}" if len(words) > 1 else value


def dicom_dates(value: str) -> set[str]:
    """A birth date as written -> its YYYYMMDD readings (both for an ambiguous 03/04/1961); {} if none."""
    text = value.strip().lower()
    m = re.fullmatch(r"(\d{4})[-/.]?(\d{1,2})[-/.]?(\d{1,2})(?:[t ].*)?", text)
    if m:
        return _valid({(m.group(1), m.group(2), m.group(3))})
    m = re.fullmatch(r"(\d{1,2})[-/. ](\d{1,2})[-/. ](\d{4})", text)
    if m:
        a, b, y = m.groups()
        return _valid({(y, b, a), (y, a, b)})
    m = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?[\s\-]+(?:of\s+)?([a-z]+)\.?[\s,\-]+(\d{4})", text)
    if m:
        return _valid({(m.group(3), _month(m.group(2)), m.group(1))})
    m = re.fullmatch(r"([a-z]+)\.?[\s\-]+(\d{1,2})(?:st|nd|rd|th)?,?[\s\-]+(\d{4})", text)
    if m:
        return _valid({(m.group(3), _month(m.group(1)), m.group(2))})
    return set()


def _month(word: str) -> str:
    return next((str(i + 1) for i, name in enumerate(MONTHS) if word.startswith(name)), "0")


def _valid(parts: set[tuple[str, str, str]]) -> set[str]:
    return {f"{y}{int(m):02d}{int(d):02d}" for y, m, d in parts if 1 <= int(m) <= 12 and 1 <= int(d) <= 31}
