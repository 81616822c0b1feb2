"""Incremental sync of a DICOMweb archive: which series an out dir already holds, and what a run did.

A series counts as indexed when one of its items is in a finished shard (tasks hold whole studies, so a
finished shard holds every item of a series), or when it is recorded as failed at a stage other than
`fetch` and `select` (a broken series is not fetched again every night; `--retry-errors` does). Fetch failures
(the server went away) are always tried again; so are series the selection left out (an SR is read again, so
that a new image series of its study gets its report). Series are known by their Series Instance UID only.
The scan's records of a series a run skips are carried over into that run's `errors/scan.jsonl`
(`kept_records`), so a series that failed its scan (an undecodable transfer syntax a header shows) stays
failed for good, and recorded, however many runs skip it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from radretrieve.outdir.layout import ERROR_DIR, MANIFEST, SCAN_ERRORS
from radretrieve.outdir.manifest import read_manifest


def indexed_series(out_dir: Path, retry_errors: bool = False) -> set[str]:
    """Series UIDs in the finished shards, and (unless `retry_errors`) those recorded as failed for good."""
    out_dir = Path(out_dir)
    done: set[str] = set()
    if (out_dir / MANIFEST).is_file():
        for entry in read_manifest(out_dir).shards:
            done.update(pq.read_table(out_dir / entry.file, columns=["series_key"]).column(0).to_pylist())
    folder = out_dir / ERROR_DIR
    if not retry_errors and folder.is_dir():
        for path in sorted(folder.glob("*.jsonl")):
            for rec in _records(path):
                if rec.get("stage") not in (None, "fetch", "select") and series_of(str(rec.get("source", ""))):
                    done.add(series_of(str(rec["source"])))
    done.discard("")
    return done


def kept_records(out_dir: Path, skipped: set[str]) -> list[str]:
    """The lines of `errors/scan.jsonl` about series this run did not scan again (`skipped`), to be written
    back with this run's scan records (`pipelines.writer.write_scan_errors`)."""
    path = Path(out_dir) / ERROR_DIR / SCAN_ERRORS
    if not skipped or not path.is_file():
        return []
    return [json.dumps(rec) + "\n" for rec in _records(path) if series_of(str(rec.get("source", ""))) in skipped]


def _records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of an errors file (blank and unreadable lines skipped: a record is never fatal)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def series_of(source: str) -> str:
    """The Series UID in a DICOMweb item's source (`STUDY/SERIES` or `STUDY/SERIES/SOP.dcm`), else ""."""
    parts = source.split("/")
    return parts[1] if len(parts) in (2, 3) else ""


@dataclass
class SeriesSync:
    """What a DICOMweb run did, in series: listed by QIDO-RS, skipped as already indexed, fetched, failed."""

    listed: int = 0
    skipped: int = 0  # already in the out dir (finished shards, or failed for good before)
    fetched: int = 0  # fetched and indexed now without a failure
    failed: int = 0  # with at least one failure now (recorded in errors/ by Series UID)
    not_selected: int = 0  # listed, but not embedded: left out by the series selection (SRs read as reports)

    @classmethod
    def count(
        cls, listed: set[str], done: set[str], scan: Any, tasks: Iterable[Any], failed_now: set[str]
    ) -> SeriesSync:
        """`listed`: series UIDs listed; `done`: those skipped before scanning; `scan`: the ScanResult of the
        others; `tasks`: the plan; `failed_now`: series of the items that failed while reading."""
        pending = {w.item.series_key for t in tasks for w in t.work if w.item is not None}
        in_scan = {it.series_key for it in scan.items}
        failed = ({series_of(e.source) for e in scan.errors if e.stage != "select"} | failed_now) & listed
        skipped = (done | in_scan - pending) & listed - failed
        fetched = pending - failed
        rest = len(listed) - len(skipped) - len(fetched) - len(failed)
        return cls(len(listed), len(skipped), len(fetched), len(failed), max(0, rest))

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def line(self) -> str:
        extra = f"; not selected {self.not_selected}" if self.not_selected else ""
        return (
            f"series: listed {self.listed}; skipped as already indexed {self.skipped}; "
            f"fetched {self.fetched}; failed {self.failed}{extra}"
        )
