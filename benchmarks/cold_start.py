"""Cold-start benchmark: `radretrieve search "TEXT" --index DIR` from process start to printed result.

Builds (once, cached under --work) a 100k-item out dir the cheap way: synthetic shards of clustered
vectors in the real shard format, with the manifest naming the built-in `radclip-tiny` model and its
real fingerprint, so the CLI loads that model, encodes the text and searches the real index. Then it
runs the command --runs times in fresh processes and reports the median wall time (the first run
also warms the OS page cache; all runs are reported). `-X importtime` of one extra run says where the
import time goes.

    python benchmarks/cold_start.py --items 100000 --runs 3

Writes benchmarks/results/cold_start.json. Numbers depend on the machine and its load: never pass/fail.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_json  # noqa: E402

SHARD_ROWS = 50_000
MODEL = "radclip-tiny"


def make_out_dir(out: Path, n: int, seed: int = 0) -> dict:
    """Synthetic shards for `n` volumes in `out`, manifest pointing at radclip-tiny; index built."""
    import radretrieve
    from indexers import build_indexes
    from radretrieve.outdir.manifest import Manifest, write_manifest
    from radretrieve.outdir.text_tower import save_text_tower
    from radretrieve.testing.shards import SyntheticItems, append_shard, clustered_vectors

    model = radretrieve.load_model(MODEL)
    dim = int(model.encode_text(["probe"]).shape[-1])
    manifest = Manifest(
        model.fingerprint, "pp-cold-start", dim, {"ref": MODEL, "weights": None, "fingerprint": model.fingerprint}
    )
    write_manifest(out, manifest)
    save_text_tower(model, out)  # as `radretrieve index` does: text search starts without open_clip
    vecs = clustered_vectors(n, dim, n_clusters=max(16, n // 500), seed=seed)
    for i, start in enumerate(range(0, n, SHARD_ROWS)):
        stop = min(n, start + SHARD_ROWS)
        part = SyntheticItems.random(
            stop - start, dim, seed=i, id_offset=10**9 + 7 * start, kinds=("volume",), vectors=vecs[start:stop]
        )
        append_shard(out, part, f"task-{i:05d}")
    t0 = time.perf_counter()
    infos = build_indexes(out)
    return {"dim": dim, "build_index_s": round(time.perf_counter() - t0, 2), "index_type": infos["items"].plan.factory}


def run_once(cmd: list[str]) -> tuple[float, str]:
    """Wall seconds from spawn to exit of `cmd`, and its stdout (it must succeed and print hits)."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return wall, done.stdout


def import_profile(cmd: list[str], top: int = 15) -> list[dict]:
    """The slowest top-level imports (cumulative µs) of one run under `python -X importtime`."""
    done = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True, cwd=ROOT)
    rows = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 1:  # top-level imports only (nested ones are inside their cumulative time)
            rows.append({"module": m.group(4), "cumulative_ms": round(int(m.group(2)) / 1000, 1)})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--query", default="head CT")
    ap.add_argument("--work", type=Path, default=None, help="keep the out dir here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/cold_start.json)")
    args = ap.parse_args()
    tmp = None
    if args.work is None:
        tmp = tempfile.mkdtemp(prefix="radretrieve-cold-")
        args.work = Path(tmp)
    out = args.work / f"out-{args.items}"
    try:
        setup = {}
        if not (out / "index" / "index.json").is_file():
            t0 = time.perf_counter()
            setup = make_out_dir(out, args.items)
            setup["setup_s"] = round(time.perf_counter() - t0, 1)
        cmd = [sys.executable, "-m", "radretrieve", "search", args.query, "--index", str(out)]
        walls = [run_once(cmd)[0] for _ in range(args.runs)]
        _, printed = run_once(cmd)
        payload = {
            "items": args.items,
            "model": MODEL,
            "query": args.query,
            **setup,
            "command": "python -m radretrieve search QUERY --index OUT",
            "runs_s": [round(w, 3) for w in walls],
            "median_s": round(statistics.median(walls), 3),
            "goal_s": 3.0,
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "printed_lines": len(printed.splitlines()),
            "slowest_imports": import_profile(cmd),
        }
        path = write_json("cold_start", payload, args.out)
        print(f"median {payload['median_s']} s over {walls}; wrote {path}", file=sys.stderr)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
