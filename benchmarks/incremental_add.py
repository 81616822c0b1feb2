"""Nightly add to a large index: what adding 1% of the vectors costs against a full build, and the recall after.

Writes an out dir of `--n` item vectors (plus text-like report rows, 1 per 500 items, as
benchmarks/index_10m.py draws them: a Gaussian mixture on the sphere with a modality gap), builds the items
index from scratch (the planner picks the type under `--max-memory`; IVF-PQ at 1M x 512 under 1 GiB), then
appends one shard of `--add` vectors from the same mixture and runs `build_indexes` again: an incremental
add. It then copies the shards to a second out dir and builds from scratch on all the data, and measures
recall@10 of both indexes (with their own tuned params) on fresh image-like and text-like queries against
exact truth over every item. Records the add's phases (index.json `build`: verify, read, add, truth, tune,
write), whether it re-tuned, the recall it measured on the stored queries before and after, and the
machine load (`os.getloadavg`) at start and end.

    nice -n 10 python benchmarks/incremental_add.py --n 1000000 --add 10000

Goals (issue 22): add_s <= 0.05 * build_s, and recall@10 after the add within 0.01 of the rebuild's for
both query types. Writes benchmarks/results/incremental_add.json. Numbers depend on the machine and its
load: never pass/fail.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from benchmarks.index_10m import ITEMS_PER_REPORT, DataSpec, Mixture, shard_items  # noqa: E402
from indexers import BuildConfig, IndexInfo, build_indexes, exact_search_stream, recall_at  # noqa: E402
from indexers.load import open_index  # noqa: E402
from radretrieve.foundation.fileio import file_sha256  # noqa: E402
from radretrieve.outdir.manifest import read_manifest, write_manifest  # noqa: E402
from radretrieve.outdir.shards import iter_embeddings  # noqa: E402
from radretrieve.testing.shards import SyntheticItems, append_shard, write_out_dir  # noqa: E402

ITEM_KINDS = ("image", "volume")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def write_base(out: Path, spec: DataSpec, mix: Mixture) -> None:
    write_out_dir(out, [], spec.dim, float16=True)
    for i in range(-(-spec.count // spec.shard_rows)):
        append_shard(out, shard_items(spec, mix, i), f"task-{i:05d}", float16=True)
    commit_digests(out)


def commit_digests(out: Path) -> None:
    """Record the size and SHA-256 of shards without them, as `radretrieve index` does when it commits a
    shard (the synthetic writer leaves them out), so that the builds verify shards as they would for real."""
    manifest = read_manifest(out)
    shards = tuple(
        e if e.sha256 else replace(e, size=(out / e.file).stat().st_size, sha256=file_sha256(out / e.file))
        for e in manifest.shards
    )
    write_manifest(out, replace(manifest, shards=shards))


def added_shard(spec: DataSpec, mix: Mixture, add: int) -> SyntheticItems:
    """`add` new items of the same mixture (new studies of the same archive) and their reports."""
    reports = max(1, add // ITEMS_PER_REPORT)
    vecs = np.concatenate([mix.draw(add, 3 * 10**6, text=False), mix.draw(reports, 3 * 10**6 + 1, text=True)])
    vecs = vecs.astype(np.float16).astype(np.float32)
    items = SyntheticItems.random(add + reports, spec.dim, seed=99, id_offset=5 * 10**9, vectors=vecs)
    kinds = ("image",) * add + ("report",) * reports
    return SyntheticItems(items.ids, vecs, kinds, items.studies, items.modalities, items.body_parts)


def recall(out: Path, info: IndexInfo, queries: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict:
    """recall@10 per query type of the index as searched by default (its tuned params)."""
    ann = open_index(out, info, "cpu", None)
    found = {name: ann.search(q, 10)[1] for name, q in queries.items()}
    return {name: round(recall_at(found[name], truth[name], 10), 4) for name in queries}


def run(n: int, dim: int, add: int, max_memory: int, queries: int, work: Path) -> dict[str, Any]:
    spec = DataSpec(n, dim, 50_000, queries, 0.35, 1.0, seed=13)
    mix = Mixture(spec)
    inc, full = work / "inc", work / "full"
    load_start = load()
    (_, write_s) = timed(lambda: write_base(inc, spec, mix))
    cfg = BuildConfig(max_memory=max_memory)
    first, build_s = timed(lambda: build_indexes(inc, cfg, targets=("items",))["items"])
    append_shard(inc, added_shard(spec, mix, add), "task-added", float16=True)
    commit_digests(inc)
    grown, add_s = timed(lambda: build_indexes(inc, cfg, targets=("items",))["items"])
    load_after_add = load()
    shutil.copytree(inc, full, ignore=shutil.ignore_patterns("index"))
    rebuilt, rebuild_s = timed(lambda: build_indexes(full, cfg, targets=("items",))["items"])
    image_q, text_q = mix.queries()
    qs = {"image": image_q, "text": text_q}
    stacked = np.concatenate([image_q, text_q])
    _, ids = exact_search_stream(stacked, iter_embeddings(full, ITEM_KINDS, 65536), 10)
    truth = {"image": ids[:queries], "text": ids[queries:]}
    after_add, after_rebuild = recall(inc, grown, qs, truth), recall(full, rebuilt, qs, truth)
    return {
        "n": n,
        "dim": dim,
        "added": add,
        "added_fraction": round(add / n, 4),
        "max_memory": max_memory,
        "factory": first.plan.factory,
        "loadavg_start": load_start,
        "loadavg_after_add": load_after_add,
        "loadavg_end": load(),
        "write_s": round(write_s, 1),
        "build_s": round(build_s, 2),
        "add_s": round(add_s, 2),
        "rebuild_s": round(rebuild_s, 2),
        "add_over_build": round(add_s / build_s, 4),
        "add_over_rebuild": round(add_s / rebuild_s, 4),
        "goal_add_over_build": 0.05,
        "add_phases_s": dict(grown.build.get("seconds", {})),
        "add": dict(grown.build.get("add", {})),
        "build_phases_s": dict(first.build.get("seconds", {})),
        "rebuild_phases_s": dict(rebuilt.build.get("seconds", {})),
        "search_params": {
            "first_build": first.params.to_json(),
            "after_add": grown.params.to_json(),
            "rebuild": rebuilt.params.to_json(),
        },
        "segments_after_add": [s.count for s in grown.store.segments] if grown.store is not None else [],
        "eval_queries_per_type": queries,
        "recall_at_10_after_add": after_add,
        "recall_at_10_rebuild": after_rebuild,
        "recall_gap": {name: round(after_rebuild[name] - after_add[name], 4) for name in qs},
        "goal_recall_gap": 0.01,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="item vectors in the first build")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--add", type=int, default=0, help="item vectors added (default: 1%% of --n)")
    ap.add_argument("--max-memory-mb", type=int, default=1024, help="build budget (1024: IVF-PQ at 1M x 512)")
    ap.add_argument("--queries", type=int, default=500, help="fresh evaluation queries per type")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: results/incremental_add.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")  # the builds' phases, as they go
    add = args.add or max(1, args.n // 100)
    with tempfile.TemporaryDirectory(prefix="incremental_add-", dir=args.work) as tmp:
        result = run(args.n, args.dim, add, args.max_memory_mb << 20, args.queries, Path(tmp))
    print(result)
    print(write_json("incremental_add", result, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
