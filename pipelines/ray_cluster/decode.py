"""Reader tasks of the Ray engine: decode a chunk of a task's items on any CPU of the cluster.

Ray runs each chunk again (`CHUNK_RETRIES`) when its worker process dies or its node goes away. A chunk that
still fails is decoded again item by item, each in a task of its own that is not retried: an item whose own
task dies too is the one that kills workers, and becomes a `WorkerCrashed` failure (stage `read`); the others
decode as usual and the job goes on.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pipelines.plan import WorkItem
from pipelines.readers import READER_NICENESS
from pipelines.stages import Decoded, Failure, decode, stat_digest
from radretrieve.archive.records import RemoteArchive

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
CHUNK_RETRIES = 1  # a chunk whose worker died runs once more before its items are tried one by one
CRASH_MESSAGE = "the worker process died decoding it, twice (out of memory, or a decoder crash)"


def decode_chunk(works: Sequence[WorkItem], root: str | RemoteArchive, preprocess: Any) -> list[Decoded]:
    """Ray task: decode and preprocess the items of one chunk (failures are returned, not raised). From a
    server (`RemoteArchive`), each item is fetched here, on the worker, by the source's own `read_item`."""
    _lower_priority()
    return [decode(w, archive_root(root), preprocess) for w in works]


def archive_root(root: str | RemoteArchive) -> Path | RemoteArchive:
    """The archive a task reads: a folder path as every node sees it, or a server (the source object, with
    its credentials: they travel to the workers inside it and are kept out of its repr)."""
    return root if isinstance(root, RemoteArchive) else Path(root)


def _lower_priority() -> None:
    """Run this worker process at the local engine's reader niceness (once: Ray reuses worker processes).

    As there, readers work ahead of the encoder actor, and one that preempts its intra-op threads stalls them all.
    """
    current = os.nice(0)
    if current < READER_NICENESS:
        os.nice(READER_NICENESS - current)


def crashed(work: WorkItem, root: str | RemoteArchive) -> Decoded:
    message = f"{work.item.source}: {CRASH_MESSAGE}"
    stat = stat_digest(archive_root(root), work.item.files)
    return Decoded(work, None, failure=Failure(work.item_id, work.item.source, "read", "WorkerCrashed", message, stat))


def submit_chunks(
    ray: Any, works: Sequence[WorkItem], root: str | RemoteArchive, preprocess: Any, chunk: int
) -> list[tuple]:
    """Submit the reader tasks of one task's items: [(chunk works, object ref), ...]."""
    task = ray.remote(num_cpus=1, max_retries=CHUNK_RETRIES)(decode_chunk)
    chunks = [list(works[i : i + chunk]) for i in range(0, len(works), chunk)]
    return [(c, task.remote(c, root, preprocess)) for c in chunks]


def gather(ray: Any, works: Sequence[WorkItem], ref: Any, root: str | RemoteArchive, preprocess: Any) -> list[Decoded]:
    """The decoded items of one submitted chunk; a chunk that kept killing workers is split item by item."""
    return gather_chunk(ray, works, ref, decode_chunk, functools.partial(crashed, root=root), root, preprocess)


def gather_chunk(
    ray: Any, items: Sequence[T], ref: Any, run: Callable[..., list[R]], on_crash: Callable[[T], R], *args: Any
) -> list[R]:
    """`ray.get(ref)` of a chunk task over `items`; if its workers kept dying, `run([item], *args)` for each
    item in a task of its own (not retried), and `on_crash(item)` for an item whose own task dies too.

    `run` is a plain top-level function (`ray.remote` takes functions and classes only, not a partial)."""
    from ray.exceptions import RayError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError:
        raise  # an exception raised by the code, not a lost worker: a bug, not bad input
    except RayError as exc:  # the worker or its node died, past the retries
        log.warning("a reader task failed (%s); running its %d item(s) one by one", type(exc).__name__, len(items))
    alone = ray.remote(num_cpus=1, max_retries=0)(run)
    refs = [alone.remote([item], *args) for item in items]
    out: list[R] = []
    for item, single in zip(items, refs):
        try:
            out.extend(ray.get(single))
        except RayTaskError:
            raise
        except RayError:
            out.append(on_crash(item))
    return out
