"""Checks before an indexing job touches its out dir: a refused job writes nothing, and a job whose out dir did
not exist before leaves none behind when it fails before its first shard."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from radretrieve.archive.manifest import is_manifest
from radretrieve.foundation.errors import ReadError
from radretrieve.outdir.layout import SHARD_DIR


def check_archive(archive: Path) -> None:
    """Refuse a local archive that cannot give one item, before the out dir is created: neither a folder nor a
    manifest, or a folder without a single file (cheap: the walk stops at the first file)."""
    if is_manifest(archive):
        return
    if not archive.is_dir():
        raise ReadError(str(archive), "not a folder or a manifest (.csv, .parquet, .jsonl)", "scan")
    for _, _, files in os.walk(archive):
        if files:
            return
    raise ReadError(str(archive), "nothing indexable found (the folder holds no files)", "scan")


def nothing_indexable(archive: Path) -> ReadError:
    """The error of a scan that found files but neither an item nor a failure (no file of a known kind)."""
    return ReadError(str(archive), "nothing indexable found (no DICOM, NIfTI or image file)", "scan")


def remove_new_out_dir(out_dir: Path) -> None:
    """Remove an out dir this job created, if it holds no shard yet: what was written (manifest, text tower,
    errors/) belongs to a refused job. An out dir with shards is kept: the job resumes from them."""
    shards = out_dir / SHARD_DIR
    if shards.is_dir() and any(shards.iterdir()):
        return
    shutil.rmtree(out_dir, ignore_errors=True)
