"""Failed inputs across runs: recorded once, not retried on every run, retried when the input changed.

A read-stage failure is recorded in `errors/<task>.jsonl` with a digest of its files' sizes and mtimes
(`Failure.stat`). On the next run its item counts as done, unless the digest of the files as they are now
differs (a broken file replaced by a good one) or `--retry-errors` is given: then its record is removed
(the file rewritten atomically) and the item is planned again; a new failure is recorded by its new task.
Scan-level failures (`errors/scan.jsonl`) are rewritten by every scan, so they never pile up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.stages import stat_digest
from radretrieve.foundation.fileio import atomic_write_bytes
from radretrieve.outdir.layout import ERROR_DIR, SCAN_ERRORS

log = logging.getLogger(__name__)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def failed_ids(out_dir: Path, items: Mapping[int, Any], root: Path, retry_all: bool = False) -> set[int]:
    """Ids of recorded item failures that stay done; the others' records are removed so they run again.

    `items`: item id -> archive Item (with `files`) of the current scan; records of items no longer in the
    archive stay as they are (done)."""
    done: set[int] = set()
    folder = Path(out_dir) / ERROR_DIR
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        if path.name == SCAN_ERRORS:
            continue
        keep, dropped = [], 0
        for rec in _records(path):
            item_id = rec.get("item_id")
            item = items.get(int(item_id)) if item_id is not None else None
            if item is not None and (retry_all or rec.get("stat", "") != stat_digest(root, item.files)):
                dropped += 1
                continue
            keep.append(rec)
            if item_id is not None:
                done.add(int(item_id))
        if dropped:
            log.info("%s: retrying %d failed input(s)", path.name, dropped)
            atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep).encode())
    return done
