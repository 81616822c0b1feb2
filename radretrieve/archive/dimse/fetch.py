"""Retrieve the instances an item needs (C-GET or C-MOVE at IMAGE level) and decode them with the folder code.

Only the instances `read_item` decodes are retrieved (the sampled slices of a long axial series), in one
request (UID list matching), into a private temporary folder under numbered names (`dicomweb.scratch`), as
the node stores them; the item is decoded as a copy whose `files` are those names, and errors name the
instances' virtual paths again. The folder is removed as soon as the item is decoded. Each instance must be
one asked for and every one asked for must arrive (`retrieve`), else the item fails at stage `fetch`, and the
next run tries its series again (`pipelines.sync`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from radretrieve.archive.dicomweb.scan import split_path
from radretrieve.archive.dicomweb.scratch import local_name, private_folder
from radretrieve.archive.dimse.association import DimseFailed, with_retries
from radretrieve.archive.dimse.retrieve import Receiver, Wanted, instance_classes, retrieve
from radretrieve.archive.dimse.source import DimseSource
from radretrieve.archive.records import ArchiveError, Decoded, Item


def read_remote_item(source: DimseSource, item: Item, cfg: Any) -> Decoded:
    """Retrieve and decode one item of a DIMSE scan. Raises ArchiveError: stage `fetch` when the node fails
    for good or sends another instance, else whatever decoding the same files from a folder raises."""
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


def _fetch(source: DimseSource, item: Item, names: dict[str, str], wanted: Iterable[str], root: Path) -> None:
    """Retrieve the instances `wanted` (numbered names) of `item` into `root`; ArchiveError (stage fetch)."""
    by_sop: dict[str, str] = {}
    study = series = ""
    for name in wanted:
        try:
            study, series, sop = split_path(names[name])
        except ValueError:
            raise ArchiveError(item.source, "not an instance of this node", "InvalidUID", "fetch") from None
        by_sop[sop] = name
    if not by_sop:
        return
    try:
        with_retries(lambda: _retrieve_once(source, study, series, by_sop, root), source)
    except DimseFailed as exc:
        raise ArchiveError(item.source, f"series {series}: {exc.reason}", exc.error_type, "fetch") from None


def _retrieve_once(source: DimseSource, study: str, series: str, by_sop: dict[str, str], root: Path) -> None:
    classes = {sop: cls for sop, cls in instance_classes(source, study, series, sorted(by_sop)) if sop in by_sop}
    if len(classes) < len(by_sop):
        why = f"{len(by_sop) - len(classes)} of {len(by_sop)} instances are no longer listed by the node"
        raise DimseFailed(why, "IncompleteSeries", True)
    for name in by_sop.values():  # what an earlier try left: every instance is retrieved again
        (root / name).unlink(missing_ok=True)
    wanted = Wanted(study, series, dict(by_sop), tuple(sorted(set(classes.values()))))
    retrieve(source, wanted, Receiver(wanted, root, source.limits.max_response_bytes), "IMAGE")
