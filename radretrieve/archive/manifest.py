"""Manifest scans (docs/guide/archives.md: Manifests): CSV, Parquet or JSON Lines with one row per source.

Columns: `path` (required; relative to the manifest's folder or absolute; an image, a NIfTI, a DICOM
file, a DICOM folder, or several image files of one volume joined by ';' in slice order), `text`
(optional report/caption), `study` (optional grouping key), `split` (optional: train/val/test).
Every other column is a string label, except identifier columns (patient names, record numbers, birth
dates, accession numbers...: radretrieve.archive.identifiers), which are dropped and redact their row's text.
Items get the same keys as a folder scan of the same files. Links out of the manifest's folder are not followed
(radretrieve.archive.links says what a row's allowed root is).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

from radretrieve.archive.identifiers import is_identifier_value, split_labels
from radretrieve.archive.jsonl import json_objects
from radretrieve.archive.links import leaves_root, link_error, outside_root
from radretrieve.archive.records import ArchiveError, ScanResult
from radretrieve.archive.scanner import (
    DEFAULT_POLICY,
    Collector,
    PartialScan,
    ScanPolicy,
    assemble,
    assign_studies,
    collect_files,
    file_format,
    partial,
    walk,
    with_meta,
)
from radretrieve.archive.selection import DEFAULT_RULES, SelectionRules
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.ids import normalise_relpath

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")
_RESERVED = ("path", "text", "study", "split")
UNSUPPORTED = "not a DICOM, NIfTI (.nii, .nii.gz) or image (.png, .jpg, .bmp, .tif) file"


class ManifestError(RadRetrieveError):
    """The manifest file itself is unusable (unknown format, no `path` column, bad JSON line)."""


def is_manifest(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(MANIFEST_SUFFIXES)


def read_rows(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a manifest as string dicts (missing/None/NaN -> ''); text manifests must be UTF-8."""
    try:
        yield from _read_rows(path)
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"{path.name}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); save it as UTF-8"
        ) from None


def _read_rows(path: Path) -> Iterator[dict[str, str]]:
    name = path.name.lower()
    if name.endswith(".csv"):
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            _require_path(reader.fieldnames or [], path)
            for row in reader:
                yield {k: _str(v) for k, v in row.items() if k is not None}
    elif name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        _require_path(table.column_names, path)
        for row in table.to_pylist():
            yield {k: _str(v) for k, v in row.items()}
    elif name.endswith((".jsonl", ".ndjson")):
        yield from _jsonl_rows(path)
    else:
        raise ManifestError(f"{path.name}: unknown manifest format (use .csv, .parquet or .jsonl)")


def _jsonl_rows(path: Path) -> Iterator[dict[str, str]]:
    for row in json_objects(path, ManifestError, path.name, required=("path",)):
        yield {str(k): _str(v) for k, v in row.items()}


def _require_path(columns: list[str], path: Path) -> None:
    if "path" not in columns:
        raise ManifestError(f"{path.name}: manifest needs a 'path' column (found: {', '.join(columns) or 'none'})")


def _str(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return ""
    return str(value).strip()


def _relative(root: Path, raw: str) -> str:
    """Manifest path -> root-relative key (absolute posix path when outside the root)."""
    candidate = Path(raw) if os.path.isabs(raw) else root / raw
    rel = os.path.relpath(os.path.abspath(candidate), os.path.abspath(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return Path(os.path.abspath(candidate)).as_posix()
    return normalise_relpath(rel)


def scan_manifest(
    manifest: Path, strict: bool = False, log_paths: bool = True, policy: ScanPolicy = DEFAULT_POLICY
) -> ScanResult:
    """Scan the sources a manifest lists; each row's text/labels/split/study go onto its items."""
    col = Collector(strict=strict, log_paths=log_paths, policy=policy)
    rows, used = _scan_rows(manifest, col, 0, None)
    return dataclasses.replace(assemble(manifest.parent, col), rows=rows, rows_used=used)


def scan_manifest_part(
    manifest: Path, start: int, stop: int, log_paths: bool = True, rules: SelectionRules = DEFAULT_RULES
) -> PartialScan:
    """Rows `start` to `stop` (exclusive, 0-based, blank JSON lines not counted) of a manifest, as a part."""
    col = Collector(log_paths=log_paths, policy=ScanPolicy(selection=rules))
    rows, used = _scan_rows(manifest, col, start, stop)
    items, reports = assign_studies(manifest.parent, col.items, col)
    return partial(col, items, reports, rows, used)


def count_rows(manifest: Path) -> int:
    """Rows of a manifest (what `scan_manifest_part` ranges over), read without scanning any source."""
    return sum(1 for _ in read_rows(manifest))


def _scan_rows(manifest: Path, col: Collector, start: int, stop: int | None) -> tuple[int, int]:
    """Scan rows [start, stop) into `col`; returns (rows scanned, rows that gave an item)."""
    root = manifest.parent
    rows = used = 0
    for index, row in enumerate(read_rows(manifest)):
        if index < start:
            continue
        if stop is not None and index >= stop:
            break
        rows += 1
        before, errors = len(col.items), len(col.errors)
        paths = [p.strip() for p in row.get("path", "").split(";") if p.strip()]
        _collect_row(root, paths, col)
        if len(col.items) > before:
            used += 1
        elif len(col.errors) == errors:  # nothing and no reason: a listed file must be accounted for
            col.error(ArchiveError(";".join(paths), UNSUPPORTED, "UnsupportedFile", "scan"))
        # identifier columns (names, record numbers, birth dates...) are no labels: they redact the row's text
        extra = {k: v for k, v in row.items() if k not in _RESERVED}
        labels, patient, dropped = split_labels(extra)
        col.identifier_columns.update(dropped)
        identifying = is_identifier_value(row.get("study", ""), extra)  # e.g. the record number as the key
        meta = {
            "text": row.get("text", ""),
            "labels": labels,
            "split": row.get("split", ""),
            "study": row.get("study", ""),
            "patient": patient,
            "study_origin": "identifier" if identifying else "",
        }
        col.items[before:] = [with_meta(item, meta) for item in col.items[before:]]
    return rows, used


def _collect_row(root: Path, raw_paths: list[str], col: Collector) -> None:
    if not raw_paths:
        col.error(ArchiveError("(manifest row)", "empty 'path'", "MissingFile", "scan"))
        return
    rels = [_relative(root, p) for p in raw_paths]
    escaping = [rel for rel in rels if not col.policy.follow_links and leaves_root(root, rel)]
    if escaping:  # checked before `exists`, so that a link's target is not even probed
        col.error(link_error(escaping[0]))
        return
    missing = [rel for rel in rels if not (root / rel).exists()]
    if missing:
        col.error(ArchiveError(missing[0], "file listed in the manifest does not exist", "MissingFile", "scan"))
        return
    if len(rels) == 1 and (root / rels[0]).is_dir():
        # a DICOM series/study folder; one named outside the manifest's folder is its own allowed root
        base = root / rels[0] if outside_root(rels[0]) else None
        follow = col.policy.follow_links
        collect_files(root, walk(root, rels[0], follow, base), col, base=base)
        return
    formats = {file_format(rel) for rel in rels}
    if len(rels) > 1 and formats == {"image"}:
        from radretrieve.archive.scanner import scan_image_stack

        col.items.append(scan_image_stack(rels))
    elif len(rels) > 1 and formats - {"dicom", "maybe-dicom"}:
        col.error(
            ArchiveError(";".join(rels), "';'-joined paths must all be images or all DICOM", "MixedSeries", "scan")
        )
    else:
        collect_files(root, rels, col)
