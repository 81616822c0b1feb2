"""WADO-RS: fetch the instances an item needs, one temporary file each, and decode them with the folder code.

Only the instances `read_item` will decode are fetched (the sampled slices of a long axial series); each
lands in a private temporary folder as the server sent it (transfer syntax `*`: as stored, no transcoding),
under a numbered name (`scratch`). The answer is written to its file as it arrives (`transport.streaming`,
`multipart.PartWriter`): in memory, each of the FETCH_THREADS requests holds one read chunk (64 KiB), never
the instance, whatever `--max-response-mb` allows. `read_item` decodes the files one at a time, each as soon
as it is there (`Arriving`): the first slices are decoded while the next ones are on their way. The folder is
removed as soon as the item is decoded (the fetch threads stopped first), so no copy of
the archive stays on disk and at most one item's instances per reader are on disk at a time. The item is
decoded as a copy whose `files` are those numbered names; errors name the instances' virtual paths again.
Each fetched instance must be the one asked for (its UIDs), else the item fails at stage `fetch`.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from radretrieve.archive.dicomweb.client import FetchFailed, session_for, with_retries
from radretrieve.archive.dicomweb.multipart import PartWriter
from radretrieve.archive.dicomweb.scan import split_path
from radretrieve.archive.dicomweb.scratch import local_name, open_new, private_folder
from radretrieve.archive.dicomweb.source import DicomWebSource
from radretrieve.archive.dicomweb.transport import TooLarge, streaming
from radretrieve.archive.records import ArchiveError, Decoded, Item

# WADO-RS: the instance in its stored transfer syntax (as stored, no transcoding), as one multipart part
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# Instances are asked for without HTTP compression: pixel data gains little from gzip, and deflating each
# answer on the server and inflating it here cost more CPU than the whole request otherwise does (measured
# with Orthanc on 127.0.0.1: 2.6 -> 1.2 ms of server CPU per 32 KiB instance). Metadata and listings, which
# are JSON text, keep `requests`' default (gzip).
INSTANCE_HEADERS = {"Accept": ACCEPT, "Accept-Encoding": "identity"}
_UID_KEYS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]
FETCH_THREADS = 4  # instance requests in flight per reader process
# The instances of one item may take this many times --max-response-mb on disk together: one large
# multi-frame object, or the 32 sampled slices (or every slice of a sagittal series) of a single-frame one,
# fit with room; a server answering every slice with --max-response-mb of bytes is stopped there.
ITEM_BUDGET_ANSWERS = 2


def read_remote_item(source: DicomWebSource, item: Item, cfg: Any) -> Decoded:
    """Fetch and decode one item of a DICOMweb scan. Raises ArchiveError: stage `fetch` (FetchFailed) when
    the server fails for good or sends another instance, else whatever decoding the same files from a folder
    raises (naming the instances' virtual paths)."""
    from radretrieve.archive.read import files_to_read, read_item

    names = {local_name(n): rel for n, rel in enumerate(item.files)}  # numbered name -> virtual path
    local = dataclasses.replace(item, files=tuple(names))
    budget = DiskBudget(ITEM_BUDGET_ANSWERS * source.limits.max_response_bytes)
    with private_folder() as root:
        pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="wado")
        try:
            folder = Arriving(root)
            needed = files_to_read(local, cfg)
            folder.expect(_submit(pool, source, item, names, needed, root, budget))
            try:
                try:
                    return read_item(local, folder, cfg)  # type: ignore[arg-type]
                except FileNotFoundError:  # not an axial series after all: its canonical slices need every file
                    rest = [f for f in local.files if f not in set(needed)]
                    folder.expect(_submit(pool, source, item, names, rest, root, budget))
                    return read_item(local, folder, cfg)  # type: ignore[arg-type]
            except ArchiveError as exc:
                if exc.path not in names:
                    raise
                raise ArchiveError(names[exc.path], exc.reason, exc.error_type, exc.stage) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # before the folder goes: no thread still writes there


class Arriving:
    """An item's private folder while its instances are fetched: `folder / name` waits for that instance (and
    raises its fetch's failure), so the first slices are decoded while the next ones are still on their way."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.futures: dict[str, Future[None]] = {}

    def expect(self, futures: dict[str, Future[None]]) -> None:
        self.futures.update(futures)

    def __truediv__(self, name: str) -> Path:
        future = self.futures.get(name)
        if future is not None:
            future.result()
        return self.root / name  # (a name not fetched: missing, as a file would be)


def _submit(
    pool: ThreadPoolExecutor,
    source: DicomWebSource,
    item: Item,
    names: dict[str, str],
    wanted: Iterable[str],
    root: Path,
    budget: DiskBudget,
) -> dict[str, Future[None]]:
    """Start fetching the instances `wanted` (numbered names) into `root` in the order given, FETCH_THREADS
    requests at a time (a request mostly waits on the server), all of them together within `budget` bytes."""
    fetch_one = functools.partial(_fetch_one, source, item, budget=budget)
    return {name: pool.submit(fetch_one, names[name], root, name) for name in wanted}


def _fetch(
    source: DicomWebSource,
    item: Item,
    names: dict[str, str],
    wanted: Iterable[str],
    root: Path,
    budget: DiskBudget | None = None,
) -> None:
    """Fetch the instances `wanted` (numbered names) into `root`, and wait for all of them."""
    budget = budget or DiskBudget(ITEM_BUDGET_ANSWERS * source.limits.max_response_bytes)
    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="wado") as pool:
        for future in _submit(pool, source, item, names, wanted, root, budget).values():
            future.result()  # the first failure is raised; the others finish or fail quietly


def _fetch_one(source: DicomWebSource, item: Item, rel: str, root: Path, name: str, budget: DiskBudget) -> None:
    try:
        study, series, sop = split_path(rel)
    except ValueError:
        raise ArchiveError(item.source, "not an instance of this server", "InvalidUID", "fetch") from None
    url = f"{source.url}/studies/{study}/series/{series}/instances/{sop}"
    try:
        with_retries(functools.partial(_download, source, url, root, name, budget), source.retry)
    except FetchFailed as exc:
        raise ArchiveError(item.source, f"series {series}: {exc.reason}", exc.error_type, "fetch") from None
    sent = _sent_uids(root / name)
    if sent[2] != sop or any(uid not in (None, asked) for uid, asked in zip(sent[:2], (study, series))):
        why = f"series {series}: the server sent another instance than the one asked for"
        raise ArchiveError(item.source, why, "WrongInstance", "fetch")


def _download(source: DicomWebSource, url: str, root: Path, name: str, budget: DiskBudget) -> None:
    """One try: the instance's part of the answer written to `root/name` as it arrives (emptied first; what a
    failed try wrote goes back to the budget)."""
    with open_new(root, name) as out:
        metered = _Metered(out, budget)
        try:
            writer = PartWriter(metered)
            with streaming(writer):
                response = session_for(source).get(url, headers=INSTANCE_HEADERS, timeout=source.retry.timeout_s)
            response.raise_for_status()
            writer.finish()
        except BaseException:
            budget.give_back(metered.written)
            raise


class DiskBudget:
    """The bytes the instances of one item may take on disk, shared by its fetch threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            if self.used + n > self.limit:
                why = f"the item's instances are larger than {self.limit / 2**20:g} MiB"
                raise TooLarge(f"{why} ({ITEM_BUDGET_ANSWERS} x --max-response-mb)")
            self.used += n

    def give_back(self, n: int) -> None:
        with self._lock:
            self.used -= n


class _Metered:
    """A file that takes each write from the item's budget before writing it."""

    def __init__(self, out: BinaryIO, budget: DiskBudget) -> None:
        self.out, self.budget, self.written = out, budget, 0

    def write(self, data: Any) -> None:
        self.budget.take(len(data))
        self.written += len(data)
        self.out.write(data)


def _sent_uids(path: Path) -> list[Any]:
    """(study, series, SOP instance UID) of a fetched file, None where missing (all None: not DICOM)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_UID_KEYS)  # a DICOM file, as sent
    except Exception:  # noqa: BLE001 - pydicom raises many types on a malformed file: not the instance asked for
        return [None, None, None]
    return [getattr(ds, key, None) for key in _UID_KEYS]
