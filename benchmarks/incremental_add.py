"""Incremental add to an IVF-PQ index: what adding one shard costs, against the size of the re-rank store.

Builds an IVF-PQ index (with its segmented re-rank store) over `--n` clustered vectors written as shards,
then appends one shard of `--add` vectors and runs `build_indexes` again. Records the add's wall time,
the bytes it wrote to the store (the new segment) against the store's total, whether the old segment file
was left as it was (inode, mtime), and, for scale, what copying the old store once costs here (what an add
cost before segments) and what hashing it costs (`build-index` verifies every index file in full before
it adds, so that read remains).

    python benchmarks/incremental_add.py --n 200000 --dim 512 --add 10000

Writes benchmarks/results/incremental_add.json. Numbers depend on the machine and its load: never pass/fail.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402
from indexers import BuildConfig, build_indexes  # noqa: E402
from radretrieve.foundation.fileio import file_sha256  # noqa: E402
from radretrieve.testing.shards import SyntheticItems, append_shard, clustered_vectors, write_out_dir  # noqa: E402

SHARD_ROWS = 50_000


def shards(vecs: np.ndarray, start_id: int, rows: int = SHARD_ROWS) -> list[SyntheticItems]:
    """Items over `vecs` float32[n, D], `rows` per shard, ids start_id + 7*i."""
    out = []
    for start in range(0, len(vecs), rows):
        stop = min(len(vecs), start + rows)
        ids_from = start_id + 7 * start
        out.append(
            SyntheticItems.random(stop - start, vecs.shape[1], seed=start, id_offset=ids_from, vectors=vecs[start:stop])
        )
    return out


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run(n: int, dim: int, add: int, work: Path) -> dict[str, Any]:
    out = work / "out"
    # the added shard comes from the same mixture: new studies of the same archive
    vecs = clustered_vectors(n + add, dim, n_clusters=max(16, n // 500), seed=1)
    write_out_dir(out, shards(vecs[:n], 10**9), dim)
    cfg = BuildConfig(index_type="ivf_pq", tune_queries=200)
    first, build_s = timed(lambda: build_indexes(out, cfg, targets=("items",))["items"])
    old = out / "index" / first.store.segments[0].vectors
    before = old.stat()
    _, copy_s = timed(lambda: shutil.copyfile(old, work / "copy.npy"))  # what an add used to do, at least
    (work / "copy.npy").unlink()
    _, hash_s = timed(lambda: file_sha256(old))
    append_shard(out, shards(vecs[n:], 2 * 10**9, rows=add)[0], "added")
    del vecs
    grown, add_s = timed(lambda: build_indexes(out, cfg, targets=("items",))["items"])
    after = old.stat()
    new_bytes = sum((out / "index" / f).stat().st_size for f in grown.store.files[2:])
    total_bytes = sum((out / "index" / f).stat().st_size for f in grown.store.files)
    return {
        "n": n,
        "dim": dim,
        "added": add,
        "factory": first.plan.factory,
        "build_s": round(build_s, 2),
        "add_s": round(add_s, 2),
        "segments": [s.count for s in grown.store.segments],
        "store_bytes_total": total_bytes,
        "store_bytes_written_by_add": new_bytes,
        "old_segment_untouched": (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns),
        "copy_old_store_once_s": round(copy_s, 2),
        "hash_old_store_once_s": round(hash_s, 2),
        "recall_by_query_first_build": {k: v.to_json() for k, v in first.recall_by_query.items()},
        "recall_by_query_after_add": {k: v.to_json() for k, v in grown.recall_by_query.items()},
        "search_params_after_add": grown.params.to_json(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000, help="vectors in the first build")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--add", type=int, default=10_000, help="vectors in the added shard")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: results/incremental_add.json)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="incremental_add-") as tmp:
        result = run(args.n, args.dim, args.add, Path(tmp))
    print(result)
    print(write_json("incremental_add", result, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
