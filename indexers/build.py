"""Build OUT/index/ from an out dir's shards, streaming, incrementally where possible.

For each target (items = image + volume rows, reports = report rows):

1. count the rows from the manifest and choose an `IndexPlan` (indexers/plan.py);
2. if index.json already holds this target with the same fingerprint, all its shards still listed and a
   plan that need not change, add only the new shards; otherwise build from scratch:
   sample training vectors at random positions of the stream (no full copy in RAM), train, then add the
   shards batch by batch;
   IVF-PQ also gets a re-rank store (indexers/store.py): the vectors, appended to segment files in the
   same streaming pass and memory-mapped for searching (an add writes a new segment, leaving the old ones
   as they are);
3. hold `tune_queries` sampled rows out of the index, tune search params on them against exact truth
   computed by streaming (indexers/holdout.py), then add them;
4. write the .faiss file atomically, then index.json (with `BuildStats`: phase times, batches streamed).

Memory is the index plus one batch (`batch_rows_for`: set by the budget, not the row count) plus the
training sample; nothing holds all vectors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from indexers import checks
from indexers.ann import AnnIndex
from indexers.holdout import HeldOut, cross_queries, hold_out, query_truths
from indexers.meta import (
    TARGETS,
    IndexInfo,
    QueryRecall,
    Target,
    index_dir,
    manifest_hash,
    read_index_json,
    shard_key,
    write_index_json,
)
from indexers.plan import (
    COARSE_EF_ADD,
    COARSE_EF_SEARCH,
    DEFAULT_EXACT_THRESHOLD,
    DEFAULT_MAX_MEMORY,
    HNSW_EF_CONSTRUCTION,
    INDEX_SHARE,
    IndexPlan,
    SearchParams,
    choose_plan,
    needs_rebuild,
)
from indexers.store import StoreInfo, StoreWriter, VectorStore, resolve_dtype
from indexers.stream import StreamStats, add_shards, count_rows, sample_rows, shard_dtypes
from indexers.tune import RECALL_K, QuerySet, tune_sets
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path, remove_stale_temps
from radretrieve.foundation.lock import writer_lock
from radretrieve.outdir.layout import INDEX_DIR
from radretrieve.outdir.manifest import Manifest, read_manifest
from radretrieve.outdir.verify import check_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    """How to build; the defaults suit a workstation."""

    max_memory: int = DEFAULT_MAX_MEMORY  # bytes for the resident index plus the build's working set
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD  # at most this many vectors -> exact (flat) index
    index_type: str | None = None  # force "flat" | "hnsw" | "ivf_flat" | "ivf_pq" (None: choose_plan)
    coarse: str | None = None  # force the IVF coarse quantizer "flat" | "hnsw" (None: choose_plan)
    target_recall: float = 0.95  # recall@10 vs exact that tuning must reach
    tune_queries: int = 500  # held-out queries (sampled vectors) for tuning and the recorded recall
    rebuild: bool = False  # ignore an existing index and build from scratch
    seed: int = 0  # sampling seed (training sample and tuning queries)
    store_dtype: str = "auto"  # IVF-PQ re-rank store: "auto" (the shards' dtype, lossless) | "float32" | "float16"
    wait: float = 0.0  # seconds to wait for another writer of the out dir (0: stop at once naming it)


def batch_rows_for(config: BuildConfig, dim: int) -> int:
    """Rows per streamed batch: ~2% of the budget, within [1024, 65536]; never a function of the row count,
    so what a pass holds stays the same however large the archive."""
    return int(min(65536, max(1024, config.max_memory * 0.02 // (dim * 4))))


@dataclass
class BuildStats:
    """Where one target's build spent its time and what it streamed (index.json `build`, and the log)."""

    target: str  # "items" | "reports"
    batch_rows: int  # rows per streamed batch (batch_rows_for)
    train_rows: int = 0  # vectors the index was trained on
    seconds: dict[str, float] = field(default_factory=dict)  # phase -> wall seconds
    stream: StreamStats = field(default_factory=StreamStats)  # the passes that fill the index and sample

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        log.info("%s: %s done in %.1f s", self.target, name, self.seconds[name])

    def to_json(self) -> dict[str, object]:
        stream = self.stream.to_json()
        return {"batch_rows": self.batch_rows, "train_rows": self.train_rows, "seconds": self.seconds, "stream": stream}


def new_index(plan: IndexPlan, train: np.ndarray | None) -> Any:
    """An empty faiss index for `plan`, trained on `train` float32[n, D] when the plan needs training."""
    import faiss

    index = faiss.index_factory(plan.dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.index_type in ("ivf_flat", "ivf_pq"):
        # we sample TRAIN_POINTS_PER_LIST (32) per list on purpose; faiss would warn below 39
        faiss.downcast_index(index).cp.min_points_per_centroid = 16
    if plan.index_type == "ivf_pq":
        # 10 k-means iterations per sub-quantizer instead of 25: PQ training dominated build time on 2
        # cores, and re-ranking makes the last bit of code quality irrelevant to the final ranking
        ivf = faiss.downcast_index(index)
        ivf.pq.cp.niter = 10
        # the factory turns on polysemous training (a simulated-annealing reordering of every
        # sub-quantizer's centroids, seconds each) for polysemous filtering, which we never use: it was
        # most of IVF-PQ's build time (measured: 13.5 s of 13.9 s on 2000 x 32)
        ivf.do_polysemous_training = False
    # an HNSW coarse quantizer trains with the faiss defaults: k-means assigns through the graph itself
    _coarse_ef(index, plan, COARSE_EF_ADD)
    if plan.index_type == "hnsw":
        # faiss's default of 40 candidates while linking built a graph that topped out at recall@10
        # 0.94 on 1M clustered 512-d vectors, whatever efSearch (measured); a wider search builds better links
        hnsw = faiss.downcast_index(faiss.downcast_index(index).index)
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if not index.is_trained:
        if train is None or len(train) == 0:
            raise RadRetrieveError(f"{plan.factory}: no training vectors")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    return index


def write_faiss(index: Any, path: Path) -> None:
    """Write a faiss index atomically: temp file in the same folder, then rename over `path`."""
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def _update_mode(existing: IndexInfo | None, manifest: Manifest, wanted: IndexPlan, path: Path) -> str:
    """'rebuild', 'add' (new shards only) or 'keep' for an existing index entry."""
    if existing is None or existing.fingerprint != manifest.fingerprint or not path.is_file():
        return "rebuild"
    current = {json.dumps(shard_key(s), sort_keys=True) for s in manifest.shards}
    indexed = {json.dumps(dict(s), sort_keys=True) for s in existing.shards}
    if not indexed <= current:  # a shard was removed or re-written: its old vectors are in the index
        return "rebuild"
    if existing.plan.index_type == "ivf_pq" and not _store_ok(path.parent, existing):
        return "rebuild"  # IVF-PQ without a usable re-rank store (older build, or a crash mid-write)
    damaged = checks.failing(path.parent, existing.checks, existing.files)
    if damaged is not None:
        log.warning("%s index: %s; rebuilding it", existing.name, damaged)
        return "rebuild"
    if indexed == current:
        return "keep"
    return "rebuild" if needs_rebuild(existing.plan, wanted) else "add"


def build_target(
    out_dir: Path, manifest: Manifest, tgt: Target, config: BuildConfig, existing: IndexInfo | None
) -> IndexInfo:
    """Build or grow one target's index and return its index.json entry (the .faiss file is written)."""
    import faiss

    start = time.perf_counter()
    path = index_dir(out_dir) / tgt.file
    total = count_rows(out_dir, manifest.shards, tgt.kinds)
    wanted = choose_plan(
        total, manifest.dim, config.max_memory, config.exact_threshold, config.index_type, config.coarse
    )
    mode = "rebuild" if config.rebuild else _update_mode(existing, manifest, wanted, path)
    batch_rows = batch_rows_for(config, manifest.dim)
    stats = BuildStats(tgt.name, batch_rows)
    if mode == "keep" and existing is not None:
        return existing
    index = faiss.read_index(str(path)) if mode == "add" else None
    if index is not None and existing is not None and index.ntotal == existing.count:
        plan, base, new_rows = existing.plan, existing.store, total - existing.count
        files: set[str] | None = {s.file for s in manifest.shards} - {s["file"] for s in existing.shards}
    else:  # fresh build; also when the file disagrees with index.json (a crash between the two writes)
        mode, plan, base, new_rows, files = "rebuild", wanted, None, total, None
        log.info("%s: building %s for %d vectors in batches of %d rows", tgt.name, plan.factory, total, batch_rows)
        with stats.phase("sample"):
            train = _training_sample(out_dir, tgt, plan, config, total, batch_rows, stats.stream)
        stats.train_rows = 0 if train is None else len(train)
        with stats.phase("train"):
            index = new_index(plan, train)
        del train
    with stats.phase("hold_out"):
        held = _hold_out(out_dir, tgt, plan, config, new_rows, batch_rows, files)
    with stats.phase("add"):
        store_info = _fill(index, out_dir, tgt, plan, config, manifest, new_rows, base, held, files, stats)
    _drop_old_store(path.parent, existing, store_info)
    _coarse_ef(index, plan, COARSE_EF_SEARCH)
    with stats.phase("tune"):
        tuned = _tune(out_dir, manifest, tgt, plan, index, config, held, batch_rows, store_info)
    if tuned is None:  # an add without new rows of this kind: the index holds what it did, its params hold
        tuned = _kept(existing) if mode == "add" and existing is not None else (SearchParams(), 1.0, {})
    params, recall, by_query = tuned
    if len(held):
        index.add_with_ids(held.vectors, held.ids)
    log.info("%s: %s (%s) holds %d vectors", tgt.name, plan.factory, mode, index.ntotal)
    with stats.phase("write"):
        write_faiss(index, path)
    files = (tgt.file,) + (store_info.files if store_info is not None else ())
    return IndexInfo(
        tgt.name,
        tgt.file,
        tgt.kinds,
        plan,
        params,
        int(index.ntotal),
        recall,
        len(held),
        manifest.fingerprint,
        manifest_hash(manifest),
        round(time.perf_counter() - start, 3),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tuple(shard_key(s) for s in manifest.shards),
        store_info,
        _file_checks(path.parent, files, existing if mode == "add" else None),
        recall_by_query=by_query,
        build=stats.to_json(),
    )


def _hold_out(
    out_dir: Path, tgt: Target, plan: IndexPlan, config: BuildConfig, rows: int, batch_rows: int, files: set[str] | None
) -> HeldOut:
    """The tuning queries, sampled from the rows about to be added (none for a flat index)."""
    n = config.tune_queries if plan.index_type != "flat" else 0
    return hold_out(out_dir, tgt.kinds, rows, n, config.seed + 1, batch_rows, files)


def _fill(
    index: Any,
    out_dir: Path,
    tgt: Target,
    plan: IndexPlan,
    config: BuildConfig,
    manifest: Manifest,
    new_rows: int,
    base: StoreInfo | None,
    held: HeldOut,
    files: set[str] | None,
    stats: BuildStats,
) -> StoreInfo | None:
    """Stream the shards (all, or the new `files`) into `index` and the re-rank store, batch by batch."""
    _coarse_ef(index, plan, COARSE_EF_ADD)
    store = _store_writer(out_dir, tgt, plan, config, manifest, new_rows, base)
    try:
        add_shards(index, out_dir, tgt.kinds, stats.batch_rows, files, store, skip=held.ids, stats=stats.stream)
    except BaseException:
        if store is not None:
            store.abort()
        raise
    # the store goes into place before tuning reads it; a crash before index.json is written leaves a
    # store whose length disagrees with index.json, which forces a rebuild (_update_mode, load)
    return store.commit() if store is not None else None


def _coarse_ef(index: Any, plan: IndexPlan, ef: int) -> None:
    """Set the HNSW coarse quantizer's candidate list (no-op for flat quantizers)."""
    import faiss

    if plan.coarse == "hnsw":
        faiss.downcast_index(faiss.extract_index_ivf(index).quantizer).hnsw.efSearch = ef


def _store_ok(folder: Path, info: IndexInfo) -> bool:
    if info.store is None:
        return False
    try:
        return len(VectorStore(folder, info.store)) == info.count
    except RadRetrieveError:
        return False


def _store_writer(
    out_dir: Path,
    tgt: Target,
    plan: IndexPlan,
    config: BuildConfig,
    manifest: Manifest,
    new_rows: int,
    base: StoreInfo | None,
) -> StoreWriter | None:
    """A writer for the re-rank store when the plan re-ranks (IVF-PQ); an add keeps the base's dtype."""
    if plan.index_type != "ivf_pq":
        return None
    dtype = (
        base.dtype if base is not None else resolve_dtype(config.store_dtype, shard_dtypes(out_dir, manifest.shards))
    )
    return StoreWriter(index_dir(out_dir), tgt.name, plan.dim, dtype, new_rows, base)


def _drop_old_store(folder: Path, existing: IndexInfo | None, new: StoreInfo | None) -> None:
    """Remove store files of the previous build that the new one does not reuse (type/dtype change)."""
    if existing is None or existing.store is None:
        return
    keep = set(new.files) if new is not None else set()
    for name in existing.store.files:
        if name not in keep:
            (folder / name).unlink(missing_ok=True)


def _file_checks(folder: Path, files: tuple[str, ...], kept: IndexInfo | None) -> dict[str, checks.FileCheck]:
    """Size and SHA-256 of `files`; an add reuses the checks of the store segments it left untouched
    (verified in full by `_update_mode`), so it does not read the whole store again."""
    old = {n: c for n, c in kept.checks.items() if kept.store is not None and n in kept.store.files} if kept else {}
    fresh = checks.record(folder, [f for f in files if f not in old])
    return {f: old.get(f) or fresh[f] for f in files}


def _training_sample(
    out_dir: Path, tgt: Target, plan: IndexPlan, config: BuildConfig, total: int, batch_rows: int, stats: StreamStats
) -> np.ndarray | None:
    if plan.train_size == 0:
        return None
    # the sample must fit next to the index in the budget
    cap = int(config.max_memory * (1 - INDEX_SHARE) / 2 // (plan.dim * 4))
    _, vecs = sample_rows(out_dir, tgt.kinds, total, min(plan.train_size, cap), config.seed, batch_rows, stats=stats)
    return vecs


def _tune(
    out_dir: Path,
    manifest: Manifest,
    tgt: Target,
    plan: IndexPlan,
    index: Any,
    config: BuildConfig,
    held: HeldOut,
    batch_rows: int,
    store: StoreInfo | None,
) -> tuple[SearchParams, float, dict[str, QueryRecall]] | None:
    """(params, recall@10, recall per query type) tuned on the held-out rows (not yet in `index`) and on the
    other modality's vectors (indexers/holdout.py) against streamed exact truth; None when an add brought
    no rows of this index's kind (nothing new to tune on: the caller keeps the existing params)."""
    cross_name, cross_kinds = tgt.cross
    if plan.index_type == "flat":
        return SearchParams(), 1.0, {tgt.query: QueryRecall(1.0, 0), cross_name: QueryRecall(1.0, 0)}
    if len(held) == 0:
        return None
    cross = cross_queries(out_dir, manifest.shards, cross_kinds, config.tune_queries, config.seed + 2, batch_rows)
    truths = query_truths(
        out_dir, tgt.kinds, held, {tgt.query: held.vectors, cross_name: cross.vectors}, RECALL_K, batch_rows
    )
    # keep_pages=False: tuning reads rows all over the store; their mapped pages must not add up in the RSS
    vectors = VectorStore(index_dir(out_dir), store, keep_pages=False) if store is not None else None
    ann = AnnIndex(index, plan, SearchParams(), "cpu", store=vectors)
    sets = [
        QuerySet(tgt.query, held.vectors, truths[tgt.query]),
        QuerySet(cross_name, cross.vectors, truths[cross_name]),
    ]
    result = tune_sets(ann, sets, config.target_recall)
    by_query = {name: QueryRecall(round(r, 4), n) for name, (r, n) in result.by_set.items()}
    return result.params, round(result.recall, 4), by_query


def _kept(existing: IndexInfo) -> tuple[SearchParams, float, dict[str, QueryRecall]]:
    return existing.params, existing.recall_at_10, dict(existing.recall_by_query)


def build_indexes(
    out_dir: Path, config: BuildConfig | None = None, targets: tuple[str, ...] = ("items", "reports")
) -> dict[str, IndexInfo]:
    """Build (or incrementally update) OUT/index/ for `targets`; returns the index.json entries.

    Holds the out dir's writer lock; refuses (one line naming the file) to build from damaged shards."""
    config = config or BuildConfig()
    out_dir = Path(out_dir)
    with writer_lock(out_dir, "radretrieve build-index", wait=config.wait):
        remove_stale_temps(out_dir / INDEX_DIR)
        manifest = read_manifest(out_dir)
        check_shards(out_dir, manifest, full=True)
        return _build_all(out_dir, manifest, config, targets)


def _build_all(
    out_dir: Path, manifest: Manifest, config: BuildConfig, targets: tuple[str, ...]
) -> dict[str, IndexInfo]:
    try:
        existing = read_index_json(out_dir, required=False)
    except RadRetrieveError:
        existing = {}  # unreadable index.json: rebuild everything
    infos = dict(existing)
    for name in targets:
        infos[name] = build_target(out_dir, manifest, TARGETS[name], config, existing.get(name))
        write_index_json(out_dir, infos, manifest)  # after each target, so a crash keeps finished ones
    return infos
