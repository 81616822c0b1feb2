"""DICOM Structured Reports (Basic Text, Enhanced, Comprehensive SR) as report text.

The content tree is walked depth first, in document order (the order a reader sees it): a CONTAINER with a
concept name becomes a heading line ("Findings:"), TEXT items give their text, CODE items "Concept: Meaning",
NUM items "Concept: value unit". Person names (PNAME), dates and times, UIDs, coordinates and references to
images are left out: they are observer context, not the report, and the names are patient or staff data.
The text is redacted with the study's identifiers before it is stored (radretrieve.archive.redact).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radretrieve.archive.records import ArchiveError

MAX_DEPTH = 32  # content trees are shallow; a deeper one is malformed (or hostile)


def _meaning(item: Any) -> str:
    seq = item.get("ConceptNameCodeSequence")
    return " ".join(str(seq[0].get("CodeMeaning", "")).split()) if seq else ""


def _num(item: Any) -> str:
    seq = item.get("MeasuredValueSequence")
    if not seq:
        return ""
    value = seq[0].get("NumericValue", "")
    units = seq[0].get("MeasurementUnitsCodeSequence")
    unit = str(units[0].get("CodeValue", "")) if units else ""
    return f"{value} {unit}".strip() if unit not in ("1", "") else str(value)


def _line(item: Any) -> str:
    """One item's line ('' when it adds no report text)."""
    kind = str(item.get("ValueType", "")).upper()
    concept = _meaning(item)
    if kind == "TEXT":
        return str(item.get("TextValue", "")).strip()
    if kind == "CODE":
        seq = item.get("ConceptCodeSequence")
        value = str(seq[0].get("CodeMeaning", "")).strip() if seq else ""
        return f"{concept}: {value}" if concept and value else value
    if kind == "NUM":
        value = _num(item)
        return f"{concept}: {value}" if concept and value else value
    if kind == "CONTAINER" and concept:
        return f"{concept}:"
    return ""


def _walk(items: Any, depth: int, out: list[str]) -> None:
    if depth > MAX_DEPTH:
        return
    for item in items or ():
        if str(item.get("RelationshipType", "")).upper() == "HAS OBS CONTEXT":
            continue  # observer context: who and when, not what
        line = _line(item)
        if line:
            out.append(line)
        _walk(item.get("ContentSequence"), depth + 1, out)


def report_text(ds: Any) -> str:
    """The text of an SR dataset's content tree, in reading order (the document title first)."""
    lines: list[str] = []
    title = _meaning(ds)
    if title:
        lines.append(title)
    _walk(ds.get("ContentSequence"), 0, lines)
    return "\n".join(lines).strip()


def read_sr_text(path: Path, rel: str) -> str:
    """The report text of the SR file at `path` (the whole file is parsed: the tree is all of it)."""
    import pydicom

    if hasattr(path, "seek"):
        path.seek(0)  # a file object in memory (a DIMSE scan's instance), read before by `read_header`
    try:
        ds = pydicom.dcmread(path, force=True)
        return report_text(ds)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise ArchiveError(rel, f"unreadable structured report ({type(exc).__name__})", "CorruptFile", "scan") from None
