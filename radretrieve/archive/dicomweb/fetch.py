"""WADO-RS: fetch the instances an item needs, one temporary file each, and decode them with the folder code.

Only the instances `read_item` will decode are fetched (the sampled slices of a long axial series); each
lands in a temporary folder as the server sent it (transfer syntax `*`: as stored, no transcoding) and the
folder is removed as soon as the item is decoded, so no copy of the archive stays on disk and at most one
item's instances per reader are on disk at a time.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from radretrieve.archive.dicomweb.client import FetchFailed, client_for, with_retries
from radretrieve.archive.dicomweb.scan import split_path
from radretrieve.archive.dicomweb.source import DicomWebSource
from radretrieve.archive.records import ArchiveError, Decoded, Item

AS_STORED = (("application/dicom", "*"),)  # WADO-RS media type: the instance in its stored transfer syntax
FETCH_THREADS = 4  # instance requests in flight per reader process


def read_remote_item(source: DicomWebSource, item: Item, cfg: Any) -> Decoded:
    """Fetch and decode one item of a DICOMweb scan. Raises ArchiveError: stage `fetch` (FetchFailed) when
    the server fails for good, else whatever decoding the same files from a folder raises."""
    from radretrieve.archive.read import files_to_read, read_item

    with tempfile.TemporaryDirectory(prefix="radretrieve-dicomweb-") as tmp:
        root = Path(tmp)
        needed = files_to_read(item, cfg)
        _fetch(source, item, needed, root)
        try:
            return read_item(item, root, cfg)
        except FileNotFoundError:  # not an axial series after all: its canonical slices need every file
            _fetch(source, item, [f for f in item.files if f not in set(needed)], root)
            return read_item(item, root, cfg)


def _fetch(source: DicomWebSource, item: Item, rels: Iterable[str], root: Path) -> None:
    """Fetch `rels` into `root`, FETCH_THREADS requests at a time (a request mostly waits on the server)."""
    rels = list(rels)
    if len(rels) <= 1:
        for rel in rels:
            _fetch_one(source, item, rel, root)
        return
    with ThreadPoolExecutor(min(FETCH_THREADS, len(rels)), thread_name_prefix="wado") as pool:
        for future in [pool.submit(_fetch_one, source, item, rel, root) for rel in rels]:
            future.result()  # the first failure is raised; the others finish or fail quietly


def _fetch_one(source: DicomWebSource, item: Item, rel: str, root: Path) -> None:
    client = client_for(source)
    study, series, sop = split_path(rel)
    try:
        call = functools.partial(client.retrieve_instance, study, series, sop, media_types=AS_STORED)
        ds = with_retries(call, source.retry)
    except FetchFailed as exc:
        error_type = "FetchFailed" if exc.transient or exc.status == 0 else "FetchRefused"
        raise ArchiveError(item.source, f"series {series}: {exc.reason}", error_type, "fetch") from None
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False)
