"""`--reports FILE`: report texts exported from a RIS, joined to studies by StudyInstanceUID or AccessionNumber.

A CSV (header row) or JSON Lines file with a `text` (or `report`) column and a key column: `StudyInstanceUID`
(or `study_uid`) or `AccessionNumber` (or `accession`). The key only joins: it is never stored, and the
text is redacted with the study's identifiers like every other report (radretrieve.archive.redact).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from radretrieve.archive.jsonl import json_objects
from radretrieve.foundation.errors import RadRetrieveError

STUDY_COLUMNS = ("StudyInstanceUID", "study_uid")
ACCESSION_COLUMNS = ("AccessionNumber", "accession")
TEXT_COLUMNS = ("text", "report")


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: it is a look-up, not a value
class ReportsTable:
    """Report texts by study UID and by accession number (held in memory, never written)."""

    by_study: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    by_accession: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    rows: int = 0  # rows read from the file

    def __repr__(self) -> str:  # accession numbers are identifiers
        return f"ReportsTable({self.rows} rows)"

    def texts(self, study_key: str, accessions: Iterable[str]) -> list[str]:
        """The texts of a study (by its key, a StudyInstanceUID, or any of its accession numbers)."""
        found = list(self.by_study.get(study_key, ()))
        for acc in sorted(accessions):
            found += self.by_accession.get(acc, ())
        return list(dict.fromkeys(found))


def _rows(path: Path) -> Iterator[dict[str, str]]:
    name = path.name.lower()
    if name.endswith(".csv"):
        with path.open(newline="", encoding="utf-8-sig") as fh:
            yield from ({str(k): str(v or "") for k, v in row.items() if k is not None} for row in csv.DictReader(fh))
    elif name.endswith((".jsonl", ".ndjson")):
        for row in json_objects(path, RadRetrieveError, f"--reports {path.name}"):
            yield {str(k): "" if v is None else str(v) for k, v in row.items()}
    else:
        raise RadRetrieveError(f"--reports {path.name}: use a .csv or .jsonl file")


def _first(row: dict[str, str], names: tuple[str, ...]) -> str:
    return next((row[n].strip() for n in names if row.get(n, "").strip()), "")


def read_reports(path: Path) -> ReportsTable:
    """Read a reports file; one clear error line if it is unusable (no text column, no key on a row)."""
    path = Path(path)
    if not path.is_file():
        raise RadRetrieveError(f"--reports {path}: no such file")
    by_study: dict[str, list[str]] = defaultdict(list)
    by_acc: dict[str, list[str]] = defaultdict(list)
    rows = 0
    try:
        for n, row in enumerate(_rows(path), 1):
            rows += 1
            text = _first(row, TEXT_COLUMNS)
            study, acc = _first(row, STUDY_COLUMNS), _first(row, ACCESSION_COLUMNS)
            if not study and not acc:
                raise RadRetrieveError(
                    f"--reports {path.name} row {n}: no {STUDY_COLUMNS[0]} or {ACCESSION_COLUMNS[0]} to join on"
                )
            if text:
                (by_study[study] if study else by_acc[acc]).append(text)
    except UnicodeDecodeError:
        raise RadRetrieveError(f"--reports {path.name}: not UTF-8 text; save it as UTF-8") from None
    return ReportsTable({k: tuple(v) for k, v in by_study.items()}, {k: tuple(v) for k, v in by_acc.items()}, rows)
