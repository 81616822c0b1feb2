"""`OUT/archive.json`: where the indexed sources live, for thumbnails and for reading stored items again.

Written by every `radretrieve index` run; it is a pointer to the archive, not data: shards store sources
relative to this root.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_write_bytes
from radretrieve.outdir.layout import ARCHIVE_FILE

log = logging.getLogger(__name__)


def write_archive_root(out_dir: Path, root: Path) -> None:
    """Record `root` (made absolute) as the out dir's archive root."""
    atomic_write_bytes(Path(out_dir) / ARCHIVE_FILE, json.dumps({"root": str(Path(root).resolve())}).encode())


def write_remote_root(out_dir: Path, name: str) -> None:
    """Record that the sources are on a server (`name`, e.g. dicomweb+https://pacs/dicom-web; no credentials):
    there is no folder to draw previews from."""
    atomic_write_bytes(Path(out_dir) / ARCHIVE_FILE, json.dumps({"remote": name}).encode())


def archive_root(out_dir: Path, override: Path | None = None) -> Path | None:
    """Where the indexed sources live: `override` (--archive), else OUT/archive.json, else None."""
    if override is not None:
        if not Path(override).is_dir():
            raise RadRetrieveError(f"--archive {override}: no such folder")
        return Path(override)
    path = Path(out_dir) / ARCHIVE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "remote" in data and "root" not in data:
            log.info("the sources are on a server (%s); no previews without --archive", data["remote"])
            return None
        root = Path(data["root"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); no previews", path, type(exc).__name__)
        return None
    if not root.is_dir():
        log.warning("archive root %s (from %s) is gone; pass --archive DIR for previews", root, path)
        return None
    return root
