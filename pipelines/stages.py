"""The stages of a task with typed batches between them: decode (worker processes) -> encode -> shard rows."""

from __future__ import annotations

import collections
import hashlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.plan import WorkItem
from radretrieve.archive.records import RemoteArchive
from radretrieve.foundation.names import shown
from radretrieve.models.protocol import Encoder
from radretrieve.outdir.shards import shard_schema


@dataclass(frozen=True)
class Failure:
    """A failed input, as written to errors/*.jsonl (no patient data: source path, stage, type, message)."""

    item_id: int | None  # id of the item that failed (None for scan-level failures)
    source: str  # path relative to the archive root
    stage: str  # scan | read | preprocess | encode
    error_type: str  # e.g. CorruptFile, NoPixelData, MissingDecoder
    message: str  # one line naming the file and the problem
    stat: str = ""  # digest of the item's files' sizes and mtimes when it failed: a changed file is retried

    def __post_init__(self) -> None:  # a file name that is not UTF-8 is stored shown (radretrieve.foundation.names)
        object.__setattr__(self, "source", shown(self.source))
        object.__setattr__(self, "message", shown(self.message))

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


REMOTE_STAT = "remote"  # stat of an item on a server: its decode failure stays done (a fetch failure has "")


def stat_digest(root: Path | RemoteArchive, files: Sequence[str]) -> str:
    """A digest of (file, size, mtime) for an item's files: it changes when a file is replaced or edited."""
    if isinstance(root, RemoteArchive):
        return REMOTE_STAT
    parts = []
    for rel in files:
        try:
            st = (Path(root) / rel).stat()
            parts.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{rel}\0missing")
    # surrogateescape: a file name that is not UTF-8 is hashed as its bytes (radretrieve.foundation.names)
    return hashlib.blake2b("\n".join(parts).encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


@dataclass(frozen=True)
class Decoded:
    """What a reader worker hands to the encoder for one item."""

    work: WorkItem  # the item
    pixels: np.ndarray | None  # float32 [S, 3, H, W], preprocessed; None if it failed
    shape: tuple[int, ...] = ()  # source array shape
    spacing: tuple[float, ...] = ()  # mm
    failure: Failure | None = None  # why it failed
    seconds: float = 0.0  # decode + preprocess time in the worker


def decode(work: WorkItem, root: Path, preprocess: Any) -> Decoded:
    """Read and preprocess one item; never raises for bad input (the failure is returned instead)."""
    from radretrieve.archive import read_item
    from radretrieve.foundation.errors import ReadError

    start = time.perf_counter()
    item = work.item
    try:
        out = read_item(item, root, preprocess)
        pixels = np.ascontiguousarray(out.pixels, dtype=np.float32)
        return Decoded(work, pixels, tuple(out.shape), tuple(out.spacing), None, time.perf_counter() - start)
    except ReadError as exc:
        kind = getattr(exc, "error_type", type(exc).__name__)
        stat = "" if exc.stage == "fetch" else stat_digest(root, item.files)  # a server failure: retried next run
        fail = Failure(work.item_id, item.source, exc.stage, kind, str(exc), stat)
    except Exception as exc:  # noqa: BLE001 - an unexpected decoder failure must not stop the job
        message = f"{item.source}: {exc}"
        fail = Failure(work.item_id, item.source, "read", type(exc).__name__, message, stat_digest(root, item.files))
    return Decoded(work, None, failure=fail, seconds=time.perf_counter() - start)


@dataclass
class Row:
    """One output row before it becomes Arrow."""

    work: WorkItem
    embedding: np.ndarray  # float32 [D]
    shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    slice_count: int = 0


@dataclass(frozen=True)
class _InFlight:
    """One encoder call on the encoder thread: a batch of decoded items, or the reports of one task."""

    future: Any  # Future[tuple[list[Row], float]]: the rows and the seconds the encoder spent
    slices: int  # image slices in it (0 for reports)
    texts: int  # report texts in it (0 for images)


@dataclass
class EncodeBatcher:
    """Collects decoded items until `batch_slices` slices are waiting, then encodes them in one pass.

    Every encoder call (a batch of images or volumes, or the reports of one task) runs on one thread of its
    own, in submission order, so that the caller keeps receiving decoded items (and writing shards) meanwhile:
    reports are encoded while the readers decode the first images, instead of holding up the first decode
    jobs on the caller's thread. One image batch is in flight at a time (back-pressure: memory stays at one
    batch being encoded plus one filling); report texts are small and never wait. Rows come back in order.
    Call `close` when done.
    """

    model: Encoder  # RadCLIP
    batch_slices: int  # slices per encoder call
    pending: list[Decoded] = field(default_factory=list)
    seconds: float = 0.0  # time spent in the image encoder
    text_seconds: float = 0.0  # time spent in the text encoder
    slices: int = 0  # slices encoded so far
    _running: collections.deque = field(default_factory=collections.deque)  # _InFlight, oldest first
    _pool: ThreadPoolExecutor | None = None

    def add(self, item: Decoded) -> list[Row]:
        """Queue an item; returns the rows of batches finished by now (possibly none)."""
        self.pending.append(item)
        if sum(d.pixels.shape[0] for d in self.pending) >= self.batch_slices:
            return self._dispatch()
        return self._ready()

    def add_reports(self, work: Sequence[WorkItem]) -> list[Row]:
        """Encode the report work items of one task (in one text encoder call, as `encode_reports`) on the
        encoder thread; returns the rows of calls finished by now (possibly none)."""
        if work:
            future = self._submit(_encode_text_rows, self.model, list(work))
            self._running.append(_InFlight(future, 0, len(work)))
        return self._ready()

    def flush(self) -> list[Row]:
        """Encode what is pending and wait for every call in flight."""
        rows = self._dispatch() if self.pending else []
        while self._running:
            rows += self._take()
        return rows

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _submit(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="encoder")
        return self._pool.submit(fn, *args)

    def _dispatch(self) -> list[Row]:
        batch, self.pending = self.pending, []
        rows = []
        while any(job.slices for job in self._running):  # back-pressure: wait for the image batch in flight
            rows += self._take()
        slices = sum(d.pixels.shape[0] for d in batch)
        self._running.append(_InFlight(self._submit(_encode_image_rows, self.model, batch), slices, 0))
        return rows + self._ready()

    def _ready(self) -> list[Row]:
        rows = []
        while self._running and self._running[0].future.done():
            rows += self._take()
        return rows

    def _take(self) -> list[Row]:
        job = self._running.popleft()
        rows, seconds = job.future.result()
        if job.texts:
            self.text_seconds += seconds
        else:
            self.seconds += seconds
            self.slices += job.slices
        return rows


def _encode_image_rows(model: Encoder, batch: list[Decoded]) -> tuple[list[Row], float]:
    import torch

    start = time.perf_counter()
    arrays = [torch.from_numpy(d.pixels) for d in batch]
    emb = model.encode_mixed(arrays, [d.work.item.kind == "volume" for d in batch]).numpy()
    rows = [Row(d.work, emb[i], d.shape, d.spacing, d.pixels.shape[0]) for i, d in enumerate(batch)]
    return rows, time.perf_counter() - start


def _encode_text_rows(model: Encoder, work: list[WorkItem]) -> tuple[list[Row], float]:
    start = time.perf_counter()
    rows = encode_reports(model, work)
    return rows, time.perf_counter() - start


def encode_reports(model: Encoder, work: Sequence[WorkItem]) -> list[Row]:
    """Report rows for the report work items of a task (text encoder)."""
    if not work:
        return []
    emb = model.encode_text([w.study.report for w in work]).numpy()
    return [Row(w, emb[i]) for i, w in enumerate(work)]


def rows_to_table(rows: Sequence[Row], dim: int, metadata: dict[str, str]) -> pa.Table:
    """Arrow table in the shard schema, rows sorted by item id (deterministic shard content)."""
    rows = sorted(rows, key=lambda r: r.work.item_id)
    cols: dict[str, list] = {name: [] for name in shard_schema(dim).names}
    for r in rows:
        for name, value in _row_fields(r).items():
            cols[name].append(value)
    emb = np.stack([r.embedding for r in rows]).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    arrays = [pa.array(cols[n], type=shard_schema(dim).field(n).type) for n in cols if n != "embedding"]
    arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim))
    return pa.Table.from_arrays(arrays, schema=shard_schema(dim, metadata))


def _row_fields(r: Row) -> dict[str, Any]:
    study, item = r.work.study, r.work.item
    labels = dict(study.labels) | (dict(item.labels) if item is not None else {})
    common = {"item_id": r.work.item_id, "study_key": study.key, "labels": json.dumps(labels, sort_keys=True)}
    if item is None:
        return common | {
            "kind": "report",
            "series_key": "",
            "source": "",
            "modality": _first(study, "modality"),
            "body_part": _first(study, "body_part"),
            "description": "",
            "slice_count": 0,
            "shape": [],
            "spacing": [],
            "text": study.report,
            "burned_in": False,
        }
    return common | {
        "kind": item.kind,
        "series_key": item.series_key,
        "source": item.source,
        "modality": item.modality,
        "body_part": item.body_part,
        "description": item.description,
        "slice_count": r.slice_count,
        "shape": [int(x) for x in r.shape],
        "spacing": [float(x) for x in r.spacing],
        "text": item.text or study.report,
        "burned_in": bool(item.burned_in),
    }


def _first(study: Any, attr: str) -> str:
    """A report row inherits modality/body part from the study's first item, for filters."""
    return next((getattr(it, attr) for it in study.items if getattr(it, attr)), "")
