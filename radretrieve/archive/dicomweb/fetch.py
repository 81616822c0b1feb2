"""WADO-RS: fetch the instances an item needs, one temporary file each, and decode them with the folder code.

Only the instances `read_item` will decode are fetched (the sampled slices of a long axial series); each
lands in a private temporary folder as the server sent it (transfer syntax `*`: as stored, no transcoding),
under a numbered name (`scratch`). The answer is written to its file as it arrives (`transport.streaming`,
`multipart.PartWriter`): in memory, each of the FETCH_THREADS requests holds one read chunk (64 KiB), never
the instance, whatever `--max-response-mb` allows; `read_item` then decodes the files one at a time.
The folder is removed as soon as the item is decoded, so no copy of
the archive stays on disk and at most one item's instances per reader are on disk at a time. The item is
decoded as a copy whose `files` are those numbered names; errors name the instances' virtual paths again.
Each fetched instance must be the one asked for (its UIDs), else the item fails at stage `fetch`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from radretrieve.archive.dicomweb.client import FetchFailed, session_for, with_retries
from radretrieve.archive.dicomweb.multipart import PartWriter
from radretrieve.archive.dicomweb.scan import split_path
from radretrieve.archive.dicomweb.scratch import local_name, open_new, private_folder
from radretrieve.archive.dicomweb.source import DicomWebSource
from radretrieve.archive.dicomweb.transport import streaming
from radretrieve.archive.records import ArchiveError, Decoded, Item

# WADO-RS: the instance in its stored transfer syntax (as stored, no transcoding), as one multipart part
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_UID_KEYS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
FETCH_THREADS = 4  # instance requests in flight per reader process


def read_remote_item(source: DicomWebSource, item: Item, cfg: Any) -> Decoded:
    """Fetch and decode one item of a DICOMweb scan. Raises ArchiveError: stage `fetch` (FetchFailed) when
    the server fails for good or sends another instance, else whatever decoding the same files from a folder
    raises (naming the instances' virtual paths)."""
    from radretrieve.archive.read import files_to_read, read_item

    names = {local_name(n): rel for n, rel in enumerate(item.files)}  # numbered name -> virtual path
    local = dataclasses.replace(item, files=tuple(names))
    with private_folder() as root:
        needed = files_to_read(local, cfg)
        _fetch(source, item, names, needed, root)
        try:
            try:
                return read_item(local, root, cfg)
            except FileNotFoundError:  # not an axial series after all: its canonical slices need every file
                _fetch(source, item, names, [f for f in local.files if f not in set(needed)], root)
                return read_item(local, root, cfg)
        except ArchiveError as exc:
            if exc.path not in names:
                raise
            raise ArchiveError(names[exc.path], exc.reason, exc.error_type, exc.stage) from None


def _fetch(source: DicomWebSource, item: Item, names: dict[str, str], wanted: Iterable[str], root: Path) -> None:
    """Fetch the instances `wanted` (numbered names) into `root`, FETCH_THREADS requests at a time (a
    request mostly waits on the server)."""
    wanted = list(wanted)
    if len(wanted) <= 1:
        for name in wanted:
            _fetch_one(source, item, names[name], root, name)
        return
    with ThreadPoolExecutor(min(FETCH_THREADS, len(wanted)), thread_name_prefix="wado") as pool:
        futures = [pool.submit(_fetch_one, source, item, names[name], root, name) for name in wanted]
        for future in futures:
            future.result()  # the first failure is raised; the others finish or fail quietly


def _fetch_one(source: DicomWebSource, item: Item, rel: str, root: Path, name: str) -> None:
    try:
        study, series, sop = split_path(rel)
    except ValueError:
        raise ArchiveError(item.source, "not an instance of this server", "InvalidUID", "fetch") from None
    url = f"{source.url}/studies/{study}/series/{series}/instances/{sop}"
    try:
        with_retries(functools.partial(_download, source, url, root, name), source.retry)
    except FetchFailed as exc:
        raise ArchiveError(item.source, f"series {series}: {exc.reason}", exc.error_type, "fetch") from None
    sent = _sent_uids(root / name)
    if sent[2] != sop or any(uid not in (None, asked) for uid, asked in zip(sent[:2], (study, series))):
        why = f"series {series}: the server sent another instance than the one asked for"
        raise ArchiveError(item.source, why, "WrongInstance", "fetch")


def _download(source: DicomWebSource, url: str, root: Path, name: str) -> None:
    """One try: the instance's part of the answer written to `root/name` as it arrives (emptied first)."""
    with open_new(root, name) as out:
        writer = PartWriter(out)
        with streaming(writer):
            response = session_for(source).get(url, headers={"Accept": ACCEPT}, timeout=source.retry.timeout_s)
        response.raise_for_status()
        writer.finish()


def _sent_uids(path: Path) -> list[Any]:
    """(study, series, SOP instance UID) of a fetched file, None where missing (all None: not DICOM)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_UID_KEYS)  # a DICOM file, as sent
    except Exception:  # noqa: BLE001 - pydicom raises many types on a malformed file: not the instance asked for
        return [None, None, None]
    return [getattr(ds, key, None) for key in _UID_KEYS]
