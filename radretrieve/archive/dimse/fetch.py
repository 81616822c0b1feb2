"""The instances an item needs, in memory, decoded with the folder code.

Only the instances `read_item` decodes are needed (the sampled slices of a long axial series). Those the
series' header scan kept in this process (`memory.KEPT`) are taken from there; the others are retrieved in
one request (C-GET or C-MOVE at IMAGE level, UID list matching), as the node stores them. Either way they are
held in memory (`memory.MemoryFolder`, by virtual path: `STUDY/SERIES/SOP.dcm`), never written to disk, and
decoded by `radretrieve.archive.read_item` as the files of a folder are, so errors name the virtual paths. The
instances one read holds are bounded by ITEM_BUDGET_ANSWERS x `--max-response-mb`, as the DICOMweb reader's
(`dicomweb.fetch`). Each instance retrieved must be one asked for and every one asked for must arrive
(`retrieve`), else the item fails at stage `fetch`, and the next run tries its series again (`pipelines.sync`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from radretrieve.archive.dicomweb.fetch import ITEM_BUDGET_ANSWERS
from radretrieve.archive.dicomweb.scan import split_path
from radretrieve.archive.dimse.association import DimseFailed, with_retries
from radretrieve.archive.dimse.memory import KEPT, MemoryFolder
from radretrieve.archive.dimse.retrieve import Receiver, Wanted, instance_classes, retrieve
from radretrieve.archive.dimse.source import DimseSource
from radretrieve.archive.records import ArchiveError, Decoded, Item


def read_remote_item(source: DimseSource, item: Item, cfg: Any) -> Decoded:
    """Retrieve (or take what the scan kept) and decode one item of a DIMSE scan. Raises ArchiveError: stage
    `fetch` when the node fails for good or sends another instance, else whatever decoding the same files from
    a folder raises."""
    from radretrieve.archive.read import files_to_read, read_item

    folder = MemoryFolder()
    kept = KEPT.take(source.display, _series_of(item)) if source.keep_scanned else {}
    needed = files_to_read(item, cfg)
    _fetch(source, item, needed, folder, kept)
    try:
        return read_item(item, folder, cfg)  # type: ignore[arg-type]
    except FileNotFoundError:  # not an axial series after all: its canonical slices need every file
        _fetch(source, item, [f for f in item.files if f not in folder], folder, kept)
        return read_item(item, folder, cfg)  # type: ignore[arg-type]


def _series_of(item: Item) -> str:
    """The Series UID of an item's instances (their virtual paths name it); "" if they do not."""
    try:
        return split_path(item.files[0])[1] if item.files else ""
    except ValueError:
        return ""


def _fetch(
    source: DimseSource, item: Item, wanted: Iterable[str], folder: MemoryFolder, kept: dict[str, bytes]
) -> None:
    """Put the instances `wanted` (virtual paths) of `item` into `folder`: kept ones as they are, the others
    retrieved; ArchiveError (stage fetch)."""
    by_sop: dict[str, str] = {}
    study = series = ""
    for rel in wanted:
        if rel in kept:
            folder.add(rel, kept[rel])
            continue
        try:
            study, series, sop = split_path(rel)
        except ValueError:
            raise ArchiveError(item.source, "not an instance of this node", "InvalidUID", "fetch") from None
        by_sop[sop] = rel
    if not by_sop:
        return
    budget = ITEM_BUDGET_ANSWERS * source.limits.max_response_bytes - folder.size
    try:
        with_retries(lambda: _retrieve_once(source, study, series, by_sop, folder, budget), source)
    except DimseFailed as exc:
        raise ArchiveError(item.source, f"series {series}: {exc.reason}", exc.error_type, "fetch") from None


def _retrieve_once(
    source: DimseSource, study: str, series: str, by_sop: dict[str, str], folder: MemoryFolder, budget: int
) -> None:
    classes = {sop: cls for sop, cls in instance_classes(source, study, series, sorted(by_sop)) if sop in by_sop}
    if len(classes) < len(by_sop):
        why = f"{len(by_sop) - len(classes)} of {len(by_sop)} instances are no longer listed by the node"
        raise DimseFailed(why, "IncompleteSeries", True)
    received: dict[str, bytes] = {}  # this try's (a failed try's instances are not used)
    wanted = Wanted(study, series, frozenset(by_sop), tuple(sorted(set(classes.values()))))
    limit = source.limits.max_response_bytes
    receiver = Receiver(wanted, limit, received.__setitem__, max_total=max(0, budget))
    retrieve(source, wanted, receiver, "IMAGE")
    for sop, data in received.items():
        folder.add(by_sop[sop], data)
