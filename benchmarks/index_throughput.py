"""End-to-end indexing throughput vs the raw encoder, stage times, CPU use and peak RSS.

For each archive size: synthesise an archive, run `radretrieve index` in a subprocess (sampling its
process tree for CPU seconds and summed RSS), then time the raw encoder forward pass of the same model
and batch size on pre-decoded tensors. Writes benchmarks/results/index_throughput.json.

    python -m benchmarks.index_throughput --model radclip-tiny --studies 1000 10000
    python -m benchmarks.index_throughput --model radclip-vit-b-16 --studies 20 --image-size 224 --batch-size 64
    python -m benchmarks.index_throughput --model radclip-vit-b-16 --studies 200 --image-size 224 \
        --device cuda --workers 14

Goals (2 cores): ViT-B/16 end-to-end/raw ratio >= 0.95; radclip-tiny keeps both cores >= 90% busy in
the steady state; peak RSS flat from 1k to 10k studies.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_json
from benchmarks.procstat import TreeSampler


def run_index(
    archive: Path, out: Path, model: str, workers: int, batch: int, device: str, engine: str = "local"
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "radretrieve",
        "index",
        str(archive),
        "--out",
        str(out),
        "--model",
        model,
        "--workers",
        str(workers),
        "--batch-size",
        str(batch),
        "--device",
        device,
        "--no-index",
        "--json",
        "-q",
        "--engine",
        engine,
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid).start()
    stdout, stderr = proc.communicate()
    sampler.stop()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"index failed: {stderr.strip().splitlines()[-1:]}")
    summary = json.loads(stdout.strip().splitlines()[0])
    return summary | {
        "process_wall_s": wall,
        "peak_rss_mb": sampler.peak_rss / 2**20,
        "busy_cores_steady": sampler.busy_cores(),
        # where the CPU went: the job's own process, its readers or Ray's workers, actors and daemons
        "cpu_seconds_by_process": sampler.cpu_by_name(),
    }


def raw_encoder(archive: Path, model_name: str, batch: int, max_items: int, device: str) -> dict:
    """Items/s of encode_mixed alone, on items decoded beforehand (same model, same batch size)."""
    import torch

    from radretrieve import load_model
    from radretrieve.archive import read_item, scan

    model = load_model(model_name, device=device)
    result = scan(archive)
    items = result.items[:max_items]
    decoded = [
        (torch.from_numpy(read_item(it, result.root, model.config.preprocess).pixels), it.kind == "volume")
        for it in items
    ]
    batches, cur, n = [], [], 0
    for arr, vol in decoded:
        cur.append((arr, vol))
        n += arr.shape[0]
        if n >= batch:
            batches.append(cur)
            cur, n = [], 0
    if cur:
        batches.append(cur)
    model.encode_mixed(*zip(*batches[0]))  # warm-up
    start = time.perf_counter()
    for b in batches:
        arrays, flags = zip(*b)
        model.encode_mixed(list(arrays), list(flags))  # returns on the CPU: the GPU has finished
    secs = time.perf_counter() - start
    slices = sum(a.shape[0] for a, _ in decoded)
    return {
        "items": len(decoded),
        "slices": slices,
        "seconds": secs,
        "items_per_s": len(decoded) / secs,
        "slices_per_s": slices / secs,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="radclip-tiny")
    ap.add_argument("--studies", type=int, nargs="+", default=[1000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=64, help="synthetic slice size (pixels)")
    ap.add_argument("--raw-items", type=int, default=200, help="items decoded beforehand for the raw timing")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--quick", action="store_true", help="100 studies only")
    ap.add_argument(
        "--engine",
        choices=("local", "ray", "both"),
        default="local",
        help="both: the local engine and the Ray engine (a local Ray on --workers CPUs) on the same archive",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [100] if args.quick else args.studies
    from radretrieve.synth import synthesize

    runs = []
    with tempfile.TemporaryDirectory(prefix="rr-bench-") as tmp:
        for n in sizes:
            archive = Path(tmp) / f"arch-{n}"
            t0 = time.perf_counter()
            synthesize(archive, studies=n, seed=0, image_size=args.image_size)
            synth_s = time.perf_counter() - t0
            common = (args.model, args.workers, args.batch_size, args.device)
            e2e = run_index(archive, Path(tmp) / f"out-{n}", *common, "ray" if args.engine == "ray" else "local")
            run = {"studies": n, "synth_seconds": synth_s, "end_to_end": e2e}
            if args.engine == "both":
                ray_run = run_index(archive, Path(tmp) / f"ray-{n}", *common, "ray")
                run |= {"ray": ray_run, "ray_over_local": ray_run["items_per_s"] / e2e["items_per_s"]}
            raw = raw_encoder(archive, args.model, args.batch_size, args.raw_items, args.device)
            run |= {"raw_encoder": raw, "ratio_end_to_end_over_raw": e2e["items_per_s"] / raw["items_per_s"]}
            runs.append(run)
            print(
                f"{n:>6} studies: {e2e['items_per_s']:.1f} items/s end to end, raw encoder "
                f"{raw['items_per_s']:.1f} items/s, ratio {run['ratio_end_to_end_over_raw']:.2f}, busy cores "
                f"{e2e['busy_cores_steady']:.2f}, peak RSS {e2e['peak_rss_mb']:.0f} MB, stages {e2e['stage_seconds']}"
            )
            if "ray" in run:
                print(
                    f"        ray engine: {run['ray']['items_per_s']:.1f} items/s, {run['ray_over_local']:.2f} of local"
                )
    path = write_json(
        "index_throughput" if args.engine == "local" else "index_throughput_ray",
        {
            "model": args.model,
            "device": args.device,
            "workers": args.workers,
            "engine": args.engine,
            "batch_size": args.batch_size,
            "runs": runs,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
