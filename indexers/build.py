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
4. write the .faiss file atomically, the tuning queries with their exact neighbours (indexers/truth.py),
   then index.json (with `BuildStats`: phase times, batches streamed, what an add did);
5. build or grow the full-text (keyword) index over every row's searchable text (indexers/fulltext.py).

An add streams only the new shards: into the index and the store, and past the stored tuning queries to
update their exact neighbours; it then measures recall on the stored queries with the current search
params and re-tunes (on the same queries, no pass over the old shards) only when recall fell below the
target. It hashes only what it reads in full (the new shards, the .faiss file, the stored truth); the
old shards and store segments get size checks (`radretrieve verify` hashes everything).

Memory is the index plus one batch (`batch_rows_for`: set by the budget, not the row count) plus the
training sample; nothing holds all vectors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from indexers import checks
from indexers import truth as stored_truth
from indexers.ann import AnnIndex, excluding
from indexers.fulltext import build_fulltext, read_fulltext_json
from indexers.holdout import HeldOut, cross_queries, hold_out
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
from indexers.tune import QuerySet, measure_sets, tune_sets
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_path, remove_stale_temps
from radretrieve.foundation.lock import writer_lock
from radretrieve.outdir.layout import INDEX_DIR
from radretrieve.outdir.manifest import Manifest, read_manifest
from radretrieve.outdir.shards import iter_embeddings
from radretrieve.outdir.verify import REPAIR_HINT, DamagedFile, check_shards, shard_problem

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
    add: dict[str, Any] = field(default_factory=dict)  # what an incremental add did (AddReport.to_json)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        log.info("%s: %s done in %.1f s", self.target, name, self.seconds[name])

    def to_json(self) -> dict[str, object]:
        stream = self.stream.to_json()
        out = {"batch_rows": self.batch_rows, "train_rows": self.train_rows, "seconds": self.seconds, "stream": stream}
        return out | ({"add": self.add} if self.add else {})


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
    """'rebuild', 'add' (new shards only; also a stored truth to recompute) or 'keep' for an existing entry."""
    if existing is None or existing.fingerprint != manifest.fingerprint or not path.is_file():
        return "rebuild"
    current = {json.dumps(shard_key(s), sort_keys=True) for s in manifest.shards}
    indexed = {json.dumps(dict(s), sort_keys=True) for s in existing.shards}
    if not indexed <= current:  # a shard was removed or re-written: its old vectors are in the index
        return "rebuild"
    if existing.plan.index_type == "ivf_pq" and not _store_ok(path.parent, existing):
        return "rebuild"  # IVF-PQ without a usable re-rank store (older build, or a crash mid-write)
    # the .faiss file is read in full: hashed; the store segments stay as they are: size (and mtime)
    store_files = existing.store.files if existing.store is not None else ()
    damaged = checks.failing(path.parent, existing.checks, (existing.file,), store_files)
    if damaged is not None:
        log.warning("%s index: %s; rebuilding it", existing.name, damaged)
        return "rebuild"
    if indexed == current:
        # a damaged stored truth is recomputed (an "add" of nothing); the index itself stays
        return "add" if _truth_problem(path.parent, existing) not in (None, "missing") else "keep"
    return "rebuild" if needs_rebuild(existing.plan, wanted) else "add"


def _truth_problem(folder: Path, info: IndexInfo) -> str | None:
    """Why the stored truth of `info` cannot be used ("missing" when it has none), or None."""
    if info.truth is None or not (folder / info.truth).is_file():
        return "missing"
    found = checks.problem(folder / info.truth, info.checks.get(info.truth), full=True)
    return None if found is None else f"{info.truth}: {found}"


def build_target(
    out_dir: Path,
    manifest: Manifest,
    tgt: Target,
    config: BuildConfig,
    existing: IndexInfo | None,
    verified: set[str] | None = None,
) -> IndexInfo:
    """Build or grow one target's index and return its index.json entry (the .faiss file is written).

    `verified`: shard files already hashed by this run (shared between targets, grown here)."""
    import faiss

    start = time.perf_counter()
    verified = verified if verified is not None else set()
    path = index_dir(out_dir) / tgt.file
    total = count_rows(out_dir, manifest.shards, tgt.kinds)
    wanted = choose_plan(
        total, manifest.dim, config.max_memory, config.exact_threshold, config.index_type, config.coarse
    )
    mode = "rebuild" if config.rebuild else _update_mode(existing, manifest, wanted, path)
    stats = BuildStats(tgt.name, batch_rows_for(config, manifest.dim))
    if mode == "keep" and existing is not None:
        return existing
    with stats.phase("read"):
        index = faiss.read_index(str(path)) if mode == "add" else None
    if index is not None and existing is not None and index.ntotal == existing.count:
        return _add(out_dir, manifest, tgt, config, existing, index, total, stats, verified, start)
    # a fresh build; also when the file disagrees with index.json (a crash between the two writes)
    return _rebuild(out_dir, manifest, tgt, config, existing, wanted, total, stats, verified, start)


def _rebuild(
    out_dir: Path,
    manifest: Manifest,
    tgt: Target,
    config: BuildConfig,
    existing: IndexInfo | None,
    plan: IndexPlan,
    total: int,
    stats: BuildStats,
    verified: set[str],
    start: float,
) -> IndexInfo:
    """Build `tgt`'s index from every shard: sample, train, hold out, fill, tune, store the truth, write."""
    batch_rows = stats.batch_rows
    stats.seconds.pop("read", None)
    with stats.phase("verify"):
        verify_shards(out_dir, manifest, {s.file for s in manifest.shards}, verified)
    log.info("%s: building %s for %d vectors in batches of %d rows", tgt.name, plan.factory, total, batch_rows)
    with stats.phase("sample"):
        train = _training_sample(out_dir, tgt, plan, config, total, batch_rows, stats.stream)
    stats.train_rows = 0 if train is None else len(train)
    with stats.phase("train"):
        index = new_index(plan, train)
    del train
    with stats.phase("hold_out"):
        held = _hold_out(out_dir, tgt, plan, config, total, batch_rows, None)
    with stats.phase("add"):
        store_info = _fill(index, out_dir, tgt, plan, config, manifest, total, None, held, None, stats)
    _drop_old_store(index_dir(out_dir), existing, store_info)
    _coarse_ef(index, plan, COARSE_EF_SEARCH)
    with stats.phase("tune"):
        tuned = _tune(out_dir, manifest, tgt, plan, index, config, held, batch_rows, store_info)
    params, recall, by_query, truth = tuned if tuned is not None else (SearchParams(), 1.0, {}, None)
    if len(held):
        index.add_with_ids(held.vectors, held.ids)
    log.info("%s: %s (rebuild) holds %d vectors", tgt.name, plan.factory, index.ntotal)
    written = _write(index, out_dir, tgt, truth, existing, stats)
    info = _info(out_dir, manifest, tgt, plan, index, params, recall, by_query, store_info, written, None, start)
    return replace(info, recall_queries=len(held), build=stats.to_json())


def _write(
    index: Any,
    out_dir: Path,
    tgt: Target,
    truth: stored_truth.StoredTruth | None,
    existing: IndexInfo | None,
    stats: BuildStats,
) -> str | None:
    """Write the .faiss file and the stored truth (dropping an old truth file when there is none now)."""
    folder = index_dir(out_dir)
    with stats.phase("write"):
        write_faiss(index, folder / tgt.file)
        if truth is not None:
            return stored_truth.write(folder, tgt.name, truth)
    if existing is not None and existing.truth is not None:
        (folder / existing.truth).unlink(missing_ok=True)
    return None


def _info(
    out_dir: Path,
    manifest: Manifest,
    tgt: Target,
    plan: IndexPlan,
    index: Any,
    params: SearchParams,
    recall: float,
    by_query: dict[str, QueryRecall],
    store_info: StoreInfo | None,
    truth_name: str | None,
    kept: IndexInfo | None,
    start: float,
) -> IndexInfo:
    """The index.json entry of a just-written index (`kept`: the entry an add grew, whose untouched store
    segments keep their recorded checks)."""
    files = (tgt.file,) + (store_info.files if store_info is not None else ()) + ((truth_name,) if truth_name else ())
    own = by_query.get(tgt.query)
    return IndexInfo(
        tgt.name,
        tgt.file,
        tgt.kinds,
        plan,
        params,
        int(index.ntotal),
        recall,
        own.queries if own is not None else 0,
        manifest.fingerprint,
        manifest_hash(manifest),
        round(time.perf_counter() - start, 3),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tuple(shard_key(s) for s in manifest.shards),
        store_info,
        _file_checks(index_dir(out_dir), files, kept),
        recall_by_query=by_query,
        truth=truth_name,
    )


def _add(
    out_dir: Path,
    manifest: Manifest,
    tgt: Target,
    config: BuildConfig,
    existing: IndexInfo,
    index: Any,
    total: int,
    stats: BuildStats,
    verified: set[str],
    start: float,
) -> IndexInfo:
    """Grow `existing` by the new shards only: fill, update the stored truth, re-tune only if recall fell."""
    plan, new_rows = existing.plan, total - existing.count
    files = {s.file for s in manifest.shards} - {s["file"] for s in existing.shards}
    with stats.phase("verify"):
        verify_shards(out_dir, manifest, files, verified)
    none = HeldOut(np.empty(0, np.int64), np.empty((0, plan.dim), np.float32))  # the stored queries serve
    with stats.phase("add"):
        store_info = _fill(index, out_dir, tgt, plan, config, manifest, new_rows, existing.store, none, files, stats)
    _coarse_ef(index, plan, COARSE_EF_SEARCH)
    with stats.phase("truth"):
        truth, how = _add_truth(out_dir, manifest, tgt, config, existing, files, stats, verified)
    report = AddReport(rows_added=new_rows, shards_added=len(files), truth=how)
    params, recall, by_query = _kept(existing)
    if truth is not None:
        with stats.phase("tune"):
            params, recall, by_query = _measure_or_retune(
                out_dir, tgt, plan, index, config, existing, truth, store_info, report
            )
    log.info(
        "%s: added %d vectors (%s holds %d); truth %s; %s",
        tgt.name,
        new_rows,
        plan.factory,
        index.ntotal,
        how,
        "re-tuned" if report.retuned else "params kept",
    )
    stats.add = report.to_json()
    written = _write(index, out_dir, tgt, truth, existing, stats)
    info = _info(out_dir, manifest, tgt, plan, index, params, recall, by_query, store_info, written, existing, start)
    return replace(info, build=stats.to_json())


@dataclass
class AddReport:
    """What one incremental add did (index.json `build.add`)."""

    rows_added: int  # vectors streamed into the index
    shards_added: int  # new shard files read
    truth: str  # stored truth: "updated" (new rows merged) | "recomputed" (missing or damaged) | "none" (flat)
    retuned: bool = False  # whether the search params were tuned again
    recall_before: dict[str, float] = field(default_factory=dict)  # query type -> recall@10, params before
    recall_after: dict[str, float] = field(default_factory=dict)  # query type -> recall@10, params after

    def to_json(self) -> dict[str, Any]:
        return {
            "rows_added": self.rows_added,
            "shards_added": self.shards_added,
            "truth": self.truth,
            "retuned": self.retuned,
            "recall_before": self.recall_before,
            "recall_after": self.recall_after,
        }


def _add_truth(
    out_dir: Path,
    manifest: Manifest,
    tgt: Target,
    config: BuildConfig,
    existing: IndexInfo,
    files: set[str],
    stats: BuildStats,
    verified: set[str],
) -> tuple[stored_truth.StoredTruth | None, str]:
    """(the stored truth grown by the new shards' rows, "updated"), or recomputed over every shard when the
    stored one is missing or damaged; (None, "none") for a flat index (exact: nothing to tune)."""
    if existing.plan.index_type == "flat":
        return None, "none"
    folder = index_dir(out_dir)
    problem = _truth_problem(folder, existing)
    if problem is None:
        try:
            old = stored_truth.read(folder / str(existing.truth), existing.plan.dim)
        except stored_truth.TruthDamaged as exc:
            problem = str(exc)
        else:
            return stored_truth.update(
                old, stats.stream.reading(out_dir, tgt.kinds, stats.batch_rows, files)
            ), "updated"
    log.warning("%s index: stored truth %s; recomputing it from every shard", tgt.name, problem)
    verify_shards(out_dir, manifest, {s.file for s in manifest.shards}, verified)
    total = count_rows(out_dir, manifest.shards, tgt.kinds)
    queries = hold_out(out_dir, tgt.kinds, total, config.tune_queries, config.seed + 1, stats.batch_rows)
    cross = _cross(out_dir, manifest, tgt, config, stats.batch_rows)
    sets = {tgt.query: queries.vectors, tgt.cross[0]: cross.vectors}
    return stored_truth.compute(sets, queries.ids, iter_embeddings(out_dir, tgt.kinds, stats.batch_rows)), "recomputed"


def _measure_or_retune(
    out_dir: Path,
    tgt: Target,
    plan: IndexPlan,
    index: Any,
    config: BuildConfig,
    existing: IndexInfo,
    truth: stored_truth.StoredTruth,
    store: StoreInfo | None,
    report: AddReport,
) -> tuple[SearchParams, float, dict[str, QueryRecall]]:
    """Recall on the stored queries with the current params; tuned again (same queries) only below target."""
    vectors = VectorStore(index_dir(out_dir), store, keep_pages=False) if store is not None else None
    ann = AnnIndex(index, plan, SearchParams(), "cpu", store=vectors)
    sets = [QuerySet(name, s.queries, s.ids) for name, s in truth.sets.items()]
    exclude = excluding(truth.exclude)
    before = measure_sets(ann, sets, existing.params, exclude)
    report.recall_before = {name: round(r, 4) for name, r in before.items()}
    params, recall = existing.params, min(before.values(), default=1.0)
    after = before
    if recall < config.target_recall:
        result = tune_sets(ann, sets, config.target_recall, exclude)
        params, recall, report.retuned = result.params, result.recall, True
        after = {name: r for name, (r, _) in result.by_set.items()}
    report.recall_after = {name: round(r, 4) for name, r in after.items()}
    by_query = {name: QueryRecall(round(after[name], 4), len(truth.sets[name])) for name in after}
    return params, round(recall, 4), by_query


def verify_shards(out_dir: Path, manifest: Manifest, files: set[str], verified: set[str]) -> None:
    """Hash the shards in `files` that this run has not hashed yet (the ones a pass is about to read);
    `DamagedFile` (one line, with the repair) for the first that differs from its manifest entry."""
    for entry in manifest.shards:
        if entry.file in files and entry.file not in verified:
            problem = shard_problem(out_dir, entry, full=True, dim=manifest.dim)
            if problem is not None:
                raise DamagedFile(f"{Path(out_dir) / entry.file}: damaged shard: {problem}; {REPAIR_HINT}")
            verified.add(entry.file)


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
    """Size, SHA-256 and mtime of `files`; an add reuses the checks of the store segments it left untouched
    (size-checked by `_update_mode`), so it does not read the whole store."""
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
) -> tuple[SearchParams, float, dict[str, QueryRecall], stored_truth.StoredTruth | None] | None:
    """(params, recall@10, recall per query type, the truth to store) tuned on the held-out rows (not yet in
    `index`) and on the other modality's vectors (indexers/holdout.py) against streamed exact truth; None
    when there is nothing to tune on (no rows held out)."""
    cross_name = tgt.cross[0]
    if plan.index_type == "flat":
        return SearchParams(), 1.0, {tgt.query: QueryRecall(1.0, 0), cross_name: QueryRecall(1.0, 0)}, None
    if len(held) == 0:
        return None
    cross = _cross(out_dir, manifest, tgt, config, batch_rows)
    batches = iter_embeddings(out_dir, tgt.kinds, batch_rows)
    truth = stored_truth.compute({tgt.query: held.vectors, cross_name: cross.vectors}, held.ids, batches)
    # keep_pages=False: tuning reads rows all over the store; their mapped pages must not add up in the RSS
    vectors = VectorStore(index_dir(out_dir), store, keep_pages=False) if store is not None else None
    ann = AnnIndex(index, plan, SearchParams(), "cpu", store=vectors)
    sets = [QuerySet(name, s.queries, s.ids) for name, s in truth.sets.items()]
    result = tune_sets(ann, sets, config.target_recall)
    by_query = {name: QueryRecall(round(r, 4), n) for name, (r, n) in result.by_set.items()}
    return result.params, round(result.recall, 4), by_query, truth


def _cross(out_dir: Path, manifest: Manifest, tgt: Target, config: BuildConfig, batch_rows: int) -> HeldOut:
    """The other modality's tuning queries (sampled from the out dir's rows of that kind)."""
    kinds = tgt.cross[1]
    return cross_queries(out_dir, manifest.shards, kinds, config.tune_queries, config.seed + 2, batch_rows)


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
        # every shard: the cheap checks (size, magics, footer schema); the shards a pass reads are hashed
        # before it (verify_shards), so an add does not read the shards it leaves alone
        check_shards(out_dir, manifest, full=False)
        return _build_all(out_dir, manifest, config, targets)


def _build_all(
    out_dir: Path, manifest: Manifest, config: BuildConfig, targets: tuple[str, ...]
) -> dict[str, IndexInfo]:
    try:
        existing = read_index_json(out_dir, required=False)
        text = read_fulltext_json(out_dir)
    except RadRetrieveError:
        existing, text = {}, None  # unreadable index.json: rebuild everything
    infos = dict(existing)
    verified: set[str] = set()
    kept = text.to_json() if text is not None else None
    for name in targets:
        infos[name] = build_target(out_dir, manifest, TARGETS[name], config, existing.get(name), verified)
        write_index_json(out_dir, infos, manifest, kept)  # after each target, so a crash keeps finished ones
    # the keyword index: same shards, same lock, listed in the same index.json (indexers/fulltext.py)
    verify = lambda files: verify_shards(out_dir, manifest, files, verified)  # noqa: E731
    text = build_fulltext(out_dir, manifest, text, config.rebuild, verify)
    write_index_json(out_dir, infos, manifest, text.to_json())
    return infos
