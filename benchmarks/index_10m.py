"""10M-vector index benchmark: streaming build under --max-memory, peak RSS, sizes, recall, QPS.

Steps (each skipped when its result is already in the work dir, so a rerun is cheap):

1. write `--count` clustered unit vectors (dim 512) as real float16 shards with the project's shard
   writer, plus one text-like report row per 500 items; exact top-10 of fresh item-like and text-like
   queries is computed while the shards are written (chunked matmul per shard, float16-rounded vectors as
   the shard reader returns them; a resumed run recomputes it by streaming the shards back);
2. build with `python -m radretrieve build-index OUT --max-memory 8G` in a child process (the CLI's code
   path) and record its wall time, peak RSS (the child's VmHWM from /proc, and the peaks of its anonymous
   and file-backed memory: file pages are the memory-mapped store, page cache the kernel can drop);
3. search the items index through `indexers.Searcher` (what `radretrieve search` uses): recall@10 for both
   query types against the exact truth, QPS batched and single-query, and a small nprobe/rerank sweep,
   after reading the re-rank store once so that it is in the page cache (how much was cached before, by
   util-linux `fincore`, is recorded); the tuned params are timed twice, on the first pass (store pages
   mapped as they are touched) and after every page of the store is mapped, as in a long-running service.
4. add one more shard (100k vectors) to the built index in a hard-linked copy of the out dir, as a
   nightly job does (`build-index` without --rebuild), and record its time, peak RSS and the bytes it wrote
   to the re-rank store against the store's size.

    python benchmarks/index_10m.py                          # 10M, work dir under the system temp dir
    python benchmarks/index_10m.py --count 200000 --max-memory 160M --out index_200k.json  # smoke, minutes
    python benchmarks/index_10m.py --shards 20 --max-memory 1600M   # the first 20 written shards only

`--shards N` builds and searches a hard-linked copy of the first N shards of the work dir (`WORK-firstN`),
for when the write was stopped early or the cores are too busy for the whole count; with a budget scaled
the same way (10M under 8G is IVF-PQ; 2M under 8G would be IVF-Flat, under 1.6G it is the same IVF-PQ plan).

Text-like queries sit away from the image clusters (the modality gap): centre + a fixed gap vector of norm
`--gap` + noise, normalised. Writes benchmarks/results/index_10m.json. Never pass/fail on time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from indexers.exact import TopK, exact_search_stream, recall_at  # noqa: E402
from radretrieve.foundation.fileio import atomic_path, atomic_write_text  # noqa: E402
from radretrieve.outdir.manifest import read_manifest, write_manifest  # noqa: E402
from radretrieve.outdir.shards import iter_embeddings  # noqa: E402
from radretrieve.testing.shards import SyntheticItems, append_shard, normalise, write_out_dir  # noqa: E402

ITEMS_PER_CLUSTER = 500  # as benchmarks/search.py: tight clusters, uneven sizes
ITEMS_PER_REPORT = 500
K = 10


@dataclass(frozen=True)
class DataSpec:
    """What the work dir's shards hold; a work dir written with another spec is refused."""

    count: int  # item vectors (kind "image")
    dim: int  # embedding dimension
    shard_rows: int  # item rows per shard
    queries: int  # fresh queries per type (item-like, text-like)
    spread: float  # noise norm around a cluster centre
    gap: float  # norm of the fixed offset of text-like vectors from their image cluster centre
    seed: int

    @property
    def clusters(self) -> int:
        return max(16, self.count // ITEMS_PER_CLUSTER)


class Mixture:
    """The Gaussian mixture on the sphere that items, reports and queries are drawn from."""

    def __init__(self, spec: DataSpec) -> None:
        rng = np.random.default_rng([spec.seed, 0])
        self.spec = spec
        self.centres = normalise(rng.standard_normal((spec.clusters, spec.dim)))  # float32[C, D]
        self.weights = rng.dirichlet(np.full(spec.clusters, 2.0))
        self.gap = normalise(rng.standard_normal((1, spec.dim)))[0] * spec.gap  # float32[D]

    def draw(self, n: int, stream: int, text: bool) -> np.ndarray:
        """float32[n, D] unit vectors; `stream` picks an independent random stream (shard or query set)."""
        rng = np.random.default_rng([self.spec.seed, 1, stream])
        assign = rng.choice(len(self.centres), size=n, p=self.weights)
        noise = rng.standard_normal((n, self.spec.dim), dtype=np.float32) * (self.spec.spread / np.sqrt(self.spec.dim))
        base = self.centres[assign] + (self.gap if text else 0.0)
        return normalise(base + noise)

    def queries(self) -> tuple[np.ndarray, np.ndarray]:
        """(item-like, text-like) fresh queries float32[Q, D] each, not in the shards."""
        q = self.spec.queries
        return self.draw(q, 2 * 10**6 + 1, text=False), self.draw(q, 2 * 10**6 + 2, text=True)


def shard_items(spec: DataSpec, mix: Mixture, i: int) -> SyntheticItems:
    """Shard i: items plus a few text-like report rows (float16-rounded, as stored)."""
    start = i * spec.shard_rows
    n = min(spec.shard_rows, spec.count - start)
    reports = max(1, n // ITEMS_PER_REPORT)
    vecs = np.concatenate([mix.draw(n, i, text=False), mix.draw(reports, 10**6 + i, text=True)])
    vecs = vecs.astype(np.float16).astype(np.float32)  # what iter_embeddings will return
    kinds = ("image",) * n + ("report",) * reports
    per_shard = spec.shard_rows + spec.shard_rows // ITEMS_PER_REPORT + 1  # rows per shard, at most
    items = SyntheticItems.random(n + reports, spec.dim, seed=i, id_offset=10**9 + 7 * i * per_shard, vectors=vecs)
    return SyntheticItems(items.ids, vecs, kinds, items.studies, items.modalities, items.body_parts)


def write_data(work: Path, spec: DataSpec) -> dict:
    """Write (or finish writing) the shards and the exact truth; returns timings."""
    out = work / "out"
    spec_file = work / "data.json"
    if spec_file.is_file():
        if json.loads(spec_file.read_text()) != asdict(spec):
            raise SystemExit(f"error: {spec_file}: written with other parameters; use another --work")
    else:
        work.mkdir(parents=True, exist_ok=True)
        write_out_dir(out, [], spec.dim, float16=True)
        atomic_write_text(spec_file, json.dumps(asdict(spec)))
    mix = Mixture(spec)
    queries = np.concatenate(mix.queries())
    n_shards = -(-spec.count // spec.shard_rows)
    done = len(read_manifest(out).shards)
    truth_file = work / "truth.npz"
    heap = TopK(len(queries), K)
    heap.scores, heap.ids = truth_so_far(work, queries)
    start = time.perf_counter()
    for i in range(done, n_shards):
        items = shard_items(spec, mix, i)
        is_item = np.array([k == "image" for k in items.kinds])
        block = items.vectors[is_item]
        for lo in range(0, len(block), 16384):
            heap.add(queries @ block[lo : lo + 16384].T, items.ids[is_item][lo : lo + 16384])
        append_shard(out, items, f"task-{i:05d}", float16=True)
        _save_truth(truth_file, heap, i + 1)
        print(f"shard {i + 1}/{n_shards} written ({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    return {"write_s": round(time.perf_counter() - start, 1), "shards": n_shards}


def truth_so_far(work: Path, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, ids) of `queries` over the item rows of the shards written so far: the saved
    checkpoint when it covers exactly those shards, else recomputed by streaming them (an interrupted write)."""
    out, path = work / "out", work / "truth.npz"
    done = len(read_manifest(out).shards)
    if path.is_file() and int(np.load(path)["shards"]) == done:
        saved = np.load(path)
        return saved["scores"], saved["ids"]
    if done == 0:
        return np.full((len(queries), 0), -np.inf, np.float32), np.full((len(queries), 0), -1, np.int64)
    print(f"truth: recomputing over the {done} written shards", file=sys.stderr)
    heap = TopK(len(queries), K)
    heap.scores, heap.ids = exact_search_stream(queries, iter_embeddings(out, ("image",)), K)
    _save_truth(path, heap, done)
    return heap.scores, heap.ids


def written(work: Path) -> dict:
    """What the work dir's manifest lists (a write stopped early indexes fewer items than --count)."""
    shards = read_manifest(work / "out").shards
    return {
        "shards": len(shards),
        "items": sum(int(s.counts.get("image", 0)) for s in shards),
        "reports": sum(int(s.counts.get("report", 0)) for s in shards),
    }


def prefix_work_dir(work: Path, shards: int) -> Path:
    """A work dir holding the first `shards` shards of `work` (hard links; same data spec, its own index
    and truth), so a build can be measured on part of a write that is still going or was stopped."""
    base = read_manifest(work / "out")
    if not 0 < shards <= len(base.shards):
        raise SystemExit(f"error: --shards {shards}: {work / 'out'} holds {len(base.shards)} shards")
    prefix = work.with_name(f"{work.name}-first{shards}")
    if not (prefix / "out" / "manifest.json").is_file():
        (prefix / "out" / "shards").mkdir(parents=True, exist_ok=True)
        for entry in base.shards[:shards]:
            link = prefix / "out" / entry.file
            if not link.exists():
                os.link(work / "out" / entry.file, link)
        write_manifest(prefix / "out", dataclasses.replace(base, shards=base.shards[:shards]))
        atomic_write_text(prefix / "data.json", (work / "data.json").read_text())
    return prefix


def _save_truth(path: Path, heap: TopK, shards: int) -> None:
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        np.savez(fh, scores=heap.scores, ids=heap.ids, shards=np.int64(shards))


def _status_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def run_build(work: Path, max_memory: str, rebuild: bool, log_name: str = "build.log") -> dict:
    """`radretrieve build-index` in a child process; wall time, peak RSS (total and anonymous), its log."""
    cmd = [sys.executable, "-m", "radretrieve", "build-index", str(work / "out"), "--max-memory", max_memory]
    cmd += ["--rebuild"] if rebuild else []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log_path = work / log_name
    peak: dict[str, int] = {}
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                for key, value in _status_kib(proc.pid).items():
                    peak[key] = max(peak.get(key, 0), value)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log_path.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"error: build-index failed (exit {proc.returncode}); see {log_path}:\n{text[-2000:]}")
    return {
        "command": "radretrieve build-index OUT --max-memory " + max_memory + (" --rebuild" if rebuild else ""),
        "build_s": round(wall, 1),
        # the child's own high-water mark (VmHWM of its address space, sampled every 0.5 s until it exits)
        "peak_rss_mb": round(peak.get("VmHWM", 0) / 1024, 1),
        # an upper bound: a child started by vfork+exec inherits the parent's RSS high-water mark here
        # (measured: 2.4 GB after this process had written the shards, for a build that peaked at 0.7 GB)
        "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_rss_anon_mb_sampled": round(peak.get("RssAnon", 0) / 1024, 1),  # every 0.5 s: heap, not file pages
        "peak_rss_file_mb_sampled": round(peak.get("RssFile", 0) / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "log": [line for line in text.splitlines() if line.startswith(("INFO items", "INFO reports", "index "))],
    }


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def _store_files(store: dict) -> tuple[str, ...]:
    from indexers.store import StoreInfo

    info = StoreInfo.from_json(store)
    return info.files if info is not None else ()


def measure_add(work: Path, spec: DataSpec, max_memory: str) -> dict:
    """Add one more shard to the built index, as a nightly job would: `build-index` without --rebuild, in a
    copy of the out dir made of hard links (the build replaces files by rename, never writes into them), so
    the measured index stays as built. Records the add's time and peak RSS, and the bytes it wrote to the
    re-rank store against the store's size; the copy is removed afterwards."""
    copy = work.with_name(f"{work.name}-add")
    shutil.rmtree(copy, ignore_errors=True)
    for src in (work / "out").rglob("*"):
        if src.is_file():
            (copy / "out" / src.relative_to(work / "out")).parent.mkdir(parents=True, exist_ok=True)
            os.link(src, copy / "out" / src.relative_to(work / "out"))
    index = copy / "out" / "index"
    before = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in index.iterdir()}
    i = len(read_manifest(copy / "out").shards)
    items = shard_items(dataclasses.replace(spec, count=(i + 1) * spec.shard_rows), Mixture(spec), i)
    append_shard(copy / "out", items, f"task-{i:05d}", float16=True)
    added = run_build(copy, max_memory, rebuild=False, log_name="add.log")
    store = json.loads((index / "index.json").read_text())["indexes"]["items"]["store"]
    files = _store_files(store)
    new = [f for f in files if f not in before]

    def ident(name: str) -> tuple[int, int]:
        st = (index / name).stat()
        return st.st_ino, st.st_mtime_ns

    old_kept = all(before[f] == ident(f) for f in files if f in before)
    result = added | {
        "added_items": int(sum(k == "image" for k in items.kinds)),
        "segments": [seg["count"] for seg in store["segments"]],
        "store_mb_total": round(sum(_mb(index / f) for f in files), 1),
        "store_mb_written": round(sum(_mb(index / f) for f in new), 1),
        "old_segments_untouched": old_kept,
    }
    shutil.rmtree(copy)
    return result


def sizes(work: Path) -> dict:
    out = work / "out"
    info = json.loads((out / "index" / "index.json").read_text())["indexes"]["items"]
    store = info.get("store") or {}
    return {
        "factory": info["factory"],
        "search_params": info["search_params"],
        "count": info["count"],
        "recall_at_10_tuning": info["recall_at_10"],
        "index_file_mb": _mb(out / "index" / info["file"]),
        "store_mb": round(sum(_mb(out / "index" / f) for f in _store_files(store)), 1),
        "shards_mb": round(sum(_mb(p) for p in (out / "shards").glob("*.parquet")), 1),
    }


def warm_store(out: Path) -> dict:
    """Read the re-rank store once, in file order (what `vmtouch -t` does), so the timed searches see it in
    the page cache as a long-running search service would; says how much of it was cached before."""
    from indexers.meta import index_dir, read_index_json

    info = read_index_json(out)["items"]
    files = [index_dir(out) / name for name in (info.store.files if info.store else ())]
    before = sum(_cached_bytes(f) for f in files)
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    total = sum(f.stat().st_size for f in files)
    return {
        "store_mb": round(total / 2**20, 1),
        "cached_before_mb": None if before < 0 else round(before / 2**20, 1),
        "read_s": round(time.perf_counter() - t0, 1),
    }


def map_store(ann: object) -> float:
    """Touch one value per 4 KiB page of the searcher's memory-mapped store (seconds taken)."""
    t0 = time.perf_counter()
    for part in ann.store.parts() if ann.store is not None else ():
        per_page = max(1, 4096 // (part.shape[1] * part.itemsize))
        float(np.asarray(part[::per_page, 0], dtype=np.float32).sum())
    return round(time.perf_counter() - t0, 1)


def _cached_bytes(path: Path) -> int:
    """Bytes of `path` in the page cache, by util-linux `fincore` (-1 where it is missing)."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], **_QUIET)
    except OSError:
        return -1
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else -1


_QUIET = {"capture_output": True, "text": True, "timeout": 60}


def measure_search(work: Path, spec: DataSpec, single: int) -> dict:
    """Recall@10 per query type, QPS batched and single, through the Searcher's items index."""
    from indexers import Searcher
    from indexers.plan import SearchParams

    item_q, text_q = Mixture(spec).queries()
    _, ids = truth_so_far(work, np.concatenate([item_q, text_q]))
    truth = {"item": ids[: spec.queries], "text": ids[spec.queries :]}
    queries = {"item": item_q, "text": text_q}
    searcher = Searcher(work / "out")
    ann = searcher.index("items")
    ann.search(item_q[:10], K)  # warm-up: lazy loads
    warm = warm_store(work / "out")

    def run(params: SearchParams | None) -> dict:
        row: dict = {}
        for name, q in queries.items():
            t0 = time.perf_counter()
            _, found = ann.search(q, K, params)
            row[f"recall_{name}"] = round(recall_at(found, truth[name], K), 4)
            row[f"qps_batched_{name}"] = round(len(q) / (time.perf_counter() - t0), 1)
        return row

    # first pass: the store is in the page cache but not yet mapped into this process (each first touch of
    # a page is a minor fault); then every page is mapped, as in a service that has run for a while
    first_pass = run(None)
    mapped_s = map_store(ann)
    tuned = run(None)
    lat = []
    for q in np.concatenate([item_q, text_q])[:single]:
        t0 = time.perf_counter()
        ann.search(q[None, :], K)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.array(lat) * 1000
    sweep = []
    nlist = ann.plan.nlist or 1
    for nprobe in (p for p in (1, 2, 4, 8, 16, 32, 64) if p <= nlist):
        for rerank in (16, 64, 128) if ann.plan.index_type == "ivf_pq" else (1,):
            sweep.append({"nprobe": nprobe, "rerank": rerank, **run(SearchParams(nprobe=nprobe, rerank=rerank))})
    searcher.close()
    return {
        "store_page_cache": warm | {"map_s": mapped_s},
        "tuned_first_pass": first_pass,
        "tuned": tuned,
        "qps_single": round(len(lat) / sum(lat), 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
        "sweep": sweep,
        "search_process_peak_rss_mb": round(_status_kib(os.getpid()).get("VmHWM", 0) / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10_000_000, help="item vectors")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500, help="fresh queries per type (item-like, text-like)")
    ap.add_argument("--single", type=int, default=200, help="single-query calls timed")
    ap.add_argument("--gap", type=float, default=1.0, help="norm of the text-like offset (modality gap)")
    ap.add_argument("--max-memory", default="8G")
    ap.add_argument("--work", type=Path, default=None, help="work dir (default: under the system temp dir)")
    ap.add_argument("--rebuild", action="store_true", help="build again even if a build was measured")
    ap.add_argument("--steps", default="write,build,search,add", help="comma-separated steps to run")
    ap.add_argument("--shards", type=int, default=0, help="build and search on the first N written shards only")
    ap.add_argument("--out", type=Path, default=None, help="JSON (default benchmarks/results/index_10m.json)")
    args = ap.parse_args()
    spec = DataSpec(args.count, args.dim, args.shard_rows, args.queries, 0.35, args.gap, seed=13)
    work = args.work or Path(tempfile.gettempdir()) / f"radretrieve-index-{args.count}x{args.dim}"
    steps = set(args.steps.split(","))
    if args.shards:  # a prefix of what was written: no writing there
        work, steps = prefix_work_dir(work, args.shards), steps - {"write"}
    state_file = work / "results.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    # count: what --count asked for; "written" below: what the shards hold (a write may have been stopped)
    state["data"] = asdict(spec) | {"clusters": spec.clusters, "reports_per_items": ITEMS_PER_REPORT}
    state["load_1m_at_start"] = round(os.getloadavg()[0], 2)  # the cores are shared: say how busy
    if "write" in steps:
        state["write"] = state.get("write") or {}
        state["write"] |= write_data(work, spec)
    state["written"] = written(work)
    if "build" in steps and (args.rebuild or "build" not in state):
        state["build"] = run_build(work, args.max_memory, rebuild=True) | sizes(work)
        state.pop("search", None)
    atomic_write_text(state_file, json.dumps(state, indent=1))
    if "search" in steps:
        state["search"] = measure_search(work, spec, args.single)
        atomic_write_text(state_file, json.dumps(state, indent=1))
    if "add" in steps:
        state["add"] = measure_add(work, spec, args.max_memory)
        atomic_write_text(state_file, json.dumps(state, indent=1))
    state["load_1m_at_end"] = round(os.getloadavg()[0], 2)
    path = write_json("index_10m", state, args.out)
    print(json.dumps(state, indent=1))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
