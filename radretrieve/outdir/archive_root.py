"""`OUT/archive.json`: where the indexed sources live, for thumbnails and for reading stored items again.

Written by every `radretrieve index` run; it is a pointer to the archive, not data: shards store sources
relative to this root. In an out dir with anonymised paths (the default) the root's own name can carry
patient data too (`/data/DOE_JOHN/`), so `archive.json` says only that the root is private, and the root is
kept in `OUT/sources/root.json`, beside the map back to the real files: read by the contact sheet and `serve`
to draw thumbnails, never shown.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_write_bytes
from radretrieve.outdir.layout import ARCHIVE_FILE, PRIVATE_ROOT_FILE, SOURCE_MAP_DIR

log = logging.getLogger(__name__)


def write_archive_root(out_dir: Path, root: Path, private: bool = False) -> None:
    """Record `root` (made absolute) as the out dir's archive root; `private`: in the private source map only."""
    real = json.dumps({"root": str(Path(root).resolve())}).encode()
    if private:
        atomic_write_bytes(Path(out_dir) / SOURCE_MAP_DIR / PRIVATE_ROOT_FILE, real)
        atomic_write_bytes(Path(out_dir) / ARCHIVE_FILE, json.dumps({"private": True}).encode())
    else:
        atomic_write_bytes(Path(out_dir) / ARCHIVE_FILE, real)


def write_remote_root(out_dir: Path, name: str) -> None:
    """Record that the sources are on a server (`name`, e.g. dicomweb+https://pacs/dicom-web; no credentials):
    there is no folder to draw previews from."""
    atomic_write_bytes(Path(out_dir) / ARCHIVE_FILE, json.dumps({"remote": name}).encode())


def archive_root(out_dir: Path, override: Path | None = None) -> Path | None:
    """Where the indexed sources live: `override` (--archive), else OUT/archive.json (or the private root it
    points to), else None."""
    if override is not None:
        if not Path(override).is_dir():
            raise RadRetrieveError(f"--archive {override}: no such folder")
        return Path(override)
    path = Path(out_dir) / ARCHIVE_FILE
    if not path.is_file():
        return None
    private = False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "remote" in data and "root" not in data:
            log.info("the sources are on a server (%s); no previews without --archive", data["remote"])
            return None
        if isinstance(data, dict) and data.get("private") is True:
            private, path = True, Path(out_dir) / SOURCE_MAP_DIR / PRIVATE_ROOT_FILE
            data = json.loads(path.read_text(encoding="utf-8"))
        root = Path(data["root"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: unreadable (%s); no previews", path, type(exc).__name__)
        return None
    if not root.is_dir():
        shown = "(kept private)" if private else str(root)  # an anonymised root's name is not shown either
        log.warning("archive root %s (from %s) is gone; pass --archive DIR for previews", shown, path)
        return None
    return root
