"""Search benchmark: build time, memory, QPS (batched and single-query), p50/p99 latency and recall@10.

`--text-sizes N` also measures keyword and hybrid search (docs/guide/hybrid-search.md) over N items with generated
report texts (`report_texts`: a seeded vocabulary of common words plus rare findings), end to end through the
Searcher as the web service holds it (resident catalog): single-query p50/p99 and QPS of vector, keyword and
hybrid queries, and the full-text index's build time and size.

    python benchmarks/search.py --sizes "" --text-sizes 1000000

For each size (default 100k and 1M vectors of dim 512, clustered like real embeddings) it writes a
synthetic out dir with the real shard writer, builds each index type through `indexers.build_indexes`
(so tuning to recall@10 >= 0.95 is part of the build) and measures search through `AnnIndex.search`,
the call the Searcher makes. Recall is against exact brute force over all vectors on fresh queries.

    python benchmarks/search.py --sizes 100000 --types flat,ivf_flat,ivf_pq,hnsw

Writes benchmarks/results/search.json. Numbers depend on the machine and its load: never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from indexers import BuildConfig, Searcher, build_indexes  # noqa: E402
from indexers.exact import exact_search, recall_at  # noqa: E402
from radretrieve.foundation.fileio import atomic_write_text  # noqa: E402
from radretrieve.testing.shards import SyntheticItems, clustered_vectors, write_out_dir  # noqa: E402

SHARD_ROWS = 50_000


def make_out_dir(path: Path, n: int, dim: int, nq: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write n clustered vectors as shards; return (ids int64[n], vectors float32[n, D], queries float32[nq, D])."""
    vecs = clustered_vectors(n + nq, dim, n_clusters=max(16, n // 500), seed=seed)
    parts = []
    for start in range(0, n, SHARD_ROWS):
        stop = min(n, start + SHARD_ROWS)
        parts.append(
            SyntheticItems.random(
                stop - start, dim, seed=start, id_offset=10**9 + 7 * start, kinds=("volume",), vectors=vecs[start:stop]
            )
        )
    write_out_dir(path, parts, dim)
    return np.concatenate([p.ids for p in parts]), vecs[:n], vecs[n:]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mb() -> float:
    """Current resident set (Linux /proc), so each index's own footprint can be told apart."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(
    out: Path,
    index_type: str,
    ids: np.ndarray,
    vecs: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    args: argparse.Namespace,
) -> dict:
    start = time.perf_counter()
    cfg = BuildConfig(index_type=index_type, rebuild=True, max_memory=args.max_memory << 20, tune_queries=300)
    info = build_indexes(out, cfg, targets=("items",))["items"]
    build_s = time.perf_counter() - start
    load_before = os.getloadavg()[0]
    rss0 = rss_mb()
    searcher = Searcher(out, device=args.device)
    ann = searcher.index("items")
    ann.search(queries[:10], 10)  # warm-up (lazy loads)
    rss_loaded = rss_mb() - rss0  # the re-rank store is mapped, not loaded: only touched pages count
    t0 = time.perf_counter()
    _, found = ann.search(queries, 10)
    batched_s = time.perf_counter() - t0
    lat = []
    for q in queries[: args.single]:
        t1 = time.perf_counter()
        ann.search(q[None, :], 10)
        lat.append(time.perf_counter() - t1)
    lat_ms = np.array(lat) * 1000
    t2 = time.perf_counter()
    searcher.search(queries[:20], 10)  # end to end incl. catalog rows, for reference
    e2e_ms = (time.perf_counter() - t2) / 20 * 1000
    searcher.close()
    return {
        "index_type": index_type,
        "factory": info.plan.factory,
        "search_params": info.params.to_json(),
        "build_s": round(build_s, 2),
        "index_file_mb": round((out / "index" / info.file).stat().st_size / 2**20, 1),
        "store_file_mb": round(sum((out / "index" / f).stat().st_size for f in info.store.files) / 2**20, 1)
        if info.store
        else 0,
        "rss_index_loaded_mb": round(rss_loaded, 1),
        "peak_rss_mb_process": round(peak_rss_mb(), 1),
        "recall_at_10_tuning": info.recall_at_10,
        "recall_at_10": round(recall_at(found, truth, 10), 4),
        "qps_batched": round(len(queries) / batched_s, 1),
        "qps_single": round(len(lat) / sum(lat), 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
        "searcher_ms_per_query_batched_with_rows": round(e2e_ms, 3),
        "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # shared cores
    }


COMMON = (
    "no acute intracranial hemorrhage mass effect midline shift normal ventricles sulci unremarkable bilateral "
    "pleural effusion consolidation atelectasis pneumothorax cardiomegaly nodule opacity lesion hypodense "
    "hyperdense enhancing cyst fracture degenerative disc herniation stenosis foraminal T2 FLAIR hyperintensity "
    "diffusion restriction liver spleen kidney pancreas gallbladder bowel obstruction appendicitis lymph node "
    "vertebral body alignment marrow signal edema contusion ligament tear meniscus cartilage effusion joint"
).split()
RARE = ("Kommerell diverticulum", "Chiari malformation", "brown tumour", "Bochdalek hernia", "scimitar syndrome")
LEVELS = ("C3-C4", "C4-C5", "C5-C6", "C6-C7", "L3-L4", "L4-L5", "L5-S1")


def report_texts(n: int, seed: int) -> list[str]:
    """n report-like texts: 12-40 common words, a spine level in a third, a rare finding in one of 2000."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(12, 40, n)
    words = rng.integers(0, len(COMMON), int(lengths.sum()))
    texts, at = [], 0
    for i, length in enumerate(lengths):
        text = " ".join(COMMON[w] for w in words[at : at + length])
        at += length
        if i % 3 == 0:
            text += f" at {LEVELS[i % len(LEVELS)]}"
        if i % 2000 == 7:
            text += f". Incidental {RARE[(i // 2000) % len(RARE)]}."
        texts.append(text)
    return texts


def make_text_out_dir(path: Path, n: int, dim: int, seed: int) -> np.ndarray:
    """Write n items with clustered vectors and generated report texts; returns query vectors float32[50, D]."""
    import pyarrow as pa

    from radretrieve.outdir.layout import SHARD_DIR
    from radretrieve.outdir.manifest import read_manifest, write_manifest
    from radretrieve.outdir.shards import write_shard
    from radretrieve.testing.shards import _entry

    vecs = clustered_vectors(n + 50, dim, n_clusters=max(16, n // 500), seed=seed)
    write_out_dir(path, [], dim)
    for start in range(0, n, SHARD_ROWS):
        stop = min(n, start + SHARD_ROWS)
        items = SyntheticItems.random(
            stop - start, dim, seed=start, id_offset=10**9 + 7 * start, kinds=("volume",), vectors=vecs[start:stop]
        )
        manifest = read_manifest(path)
        table = items.table(dim, manifest.fingerprint)
        texts = pa.array(report_texts(stop - start, seed + start))
        table = table.set_column(table.schema.get_field_index("text"), "text", texts)
        file = f"{SHARD_DIR}/part-{len(manifest.shards):05d}.parquet"
        write_shard(path / file, table)
        write_manifest(path, manifest.with_shard(_entry(items, f"task-{start}", file)))
    return vecs[n:]


def _latencies(call, queries: list, repeat: int) -> dict:
    call(queries[0])  # warm-up
    lat = []
    for i in range(repeat):
        t = time.perf_counter()
        call(queries[i % len(queries)])
        lat.append(time.perf_counter() - t)
    ms = np.array(lat) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "qps_single": round(len(lat) / sum(lat), 1),
    }


def measure_text(out: Path, n: int, args: argparse.Namespace) -> dict:
    """Keyword, hybrid and vector single-query latency over n items with report texts."""
    from indexers.fulltext import read_fulltext_json

    t0 = time.perf_counter()
    qvecs = make_text_out_dir(out, n, args.text_dim, seed=n)
    data_s = time.perf_counter() - t0
    cfg = BuildConfig(index_type=args.text_index, rebuild=True, max_memory=args.max_memory << 20, tune_queries=200)
    t1 = time.perf_counter()
    build_indexes(out, cfg, targets=("items",))
    build_s = time.perf_counter() - t1
    text = read_fulltext_json(out)
    folder = out / "index" / text.folder
    searcher = Searcher(out, device=args.device, resident=True)
    words = ["hemorrhage", "pleural effusion", "C5-C6 disc herniation", "T2 FLAIR hyperintensity", "meniscus tear"]
    words += ["Chiari malformation", "Kommerell diverticulum", "no acute fracture", "liver lesion", "scimitar"]
    pairs = [(w, qvecs[i % len(qvecs)][None, :]) for i, w in enumerate(words * 5)]
    repeat = args.single
    row = {
        "n": n,
        "dim": args.text_dim,
        "vector_index": args.text_index,
        "data_s": round(data_s, 1),
        "build_all_s": round(build_s, 1),
        "fulltext_build_s": text.build_seconds,
        "fulltext_mb": round(sum(c.size for c in text.checks.values()) / 2**20, 1),
        "fulltext_files": len(list(folder.iterdir())),
        "vector": _latencies(lambda p: searcher.search(p[1], 10), pairs, repeat),
        "keyword": _latencies(lambda p: searcher.keyword([p[0]], 10), pairs, repeat),
        "hybrid": _latencies(lambda p: searcher.hybrid([p[0]], p[1], 10), pairs, repeat),
        "vector_filtered": _latencies(lambda p: searcher.search(p[1], 10, where="modality = 'CT'"), pairs, repeat),
        "keyword_filtered": _latencies(lambda p: searcher.keyword([p[0]], 10, where="modality = 'CT'"), pairs, repeat),
        "hybrid_filtered": _latencies(
            lambda p: searcher.hybrid([p[0]], p[1], 10, where="modality = 'CT'"), pairs, repeat
        ),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    row["hybrid_vs_vector_qps"] = round(row["hybrid"]["qps_single"] / row["vector"]["qps_single"], 3)
    searcher.close()
    return row


def write_results(path: Path, results: dict) -> None:
    atomic_write_text(path, json.dumps(results, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated vector counts")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--types", default="flat,ivf_flat,ivf_pq,hnsw", help="index types to measure")
    ap.add_argument("--big", type=int, default=1_000_000, help="sizes from here on use --big-types")
    ap.add_argument("--big-types", default="", help="index types for sizes >= --big (default: --types)")
    ap.add_argument("--queries", type=int, default=1000, help="batched queries (also the recall set)")
    ap.add_argument("--single", type=int, default=200, help="single-query calls timed for latency")
    ap.add_argument("--max-memory", type=int, default=8192, help="MiB budget for the build")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search.json")
    ap.add_argument("--text-sizes", default="", help="item counts for keyword and hybrid search (e.g. 1000000)")
    ap.add_argument("--text-dim", type=int, default=64, help="vector dim of the keyword/hybrid runs")
    ap.add_argument("--text-index", default="ivf_flat", help="vector index type of the keyword/hybrid runs")
    args = ap.parse_args()
    import faiss

    results = {
        "machine": {
            "platform": platform.platform(),
            "faiss": faiss.__version__,
            "omp_threads": faiss.omp_get_max_threads(),
            "gpus": faiss.get_num_gpus(),
        },
        "args": {k: str(v) for k, v in vars(args).items() if k != "out"},
        "runs": [],
    }
    for n in (int(s) for s in args.text_sizes.split(",") if s):
        with tempfile.TemporaryDirectory(prefix="radretrieve-bench-") as tmp:
            row = measure_text(Path(tmp), n, args)
            results.setdefault("text_runs", []).append(row)
            print(json.dumps(row), flush=True)
            write_results(args.out, results)
    for n in (int(s) for s in args.sizes.split(",") if s):
        with tempfile.TemporaryDirectory(prefix="radretrieve-bench-") as tmp:
            out = Path(tmp)
            t0 = time.perf_counter()
            ids, vecs, queries = make_out_dir(out, n, args.dim, args.queries, seed=n)
            _, truth = exact_search(queries, vecs, ids, 10)
            print(f"n={n}: data + exact truth in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            types = args.types.split(",")
            if n >= args.big and args.big_types:
                types = args.big_types.split(",")
            for index_type in types:
                row = {"n": n, "dim": args.dim, **measure(out, index_type, ids, vecs, queries, truth, args)}
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                write_results(args.out, results)  # after every run: a long sweep keeps what it measured
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
