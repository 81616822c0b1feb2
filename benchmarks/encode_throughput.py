"""Encoder throughput: images/s and volumes/s (32 slices), and the adapter's overhead.

Writes benchmarks/results/encode_throughput.json. Goal: encoding volumes costs at most 1.1x encoding the
same number of 2D slices (adapter overhead <= 10%). On CUDA the same runs use bf16 autocast.

    python -m benchmarks.encode_throughput --models radclip-tiny radclip-vit-b-16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import write_json
from radretrieve import load_model


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, n_volumes: int, slices: int, batch: int, repeats: int, device: str) -> dict:
    model = load_model(name, device=device)
    model.max_batch = batch
    size = model.image_size
    vols = [torch.randn(slices, 3, size, size) for _ in range(n_volumes)]
    flat = torch.cat(vols)
    t_img = _best_of(lambda: model.encode_images(flat), repeats)
    t_vol = _best_of(lambda: model.encode_volumes(vols), repeats)
    return {
        "model": name,
        "device": device,
        "batch": batch,
        "slices_per_volume": slices,
        "images_per_s": flat.shape[0] / t_img,
        "volumes_per_s": n_volumes / t_vol,
        "slices_per_s_in_volumes": flat.shape[0] / t_vol,
        "volume_cost_ratio": t_vol / t_img,
        "goal_ratio_at_most": 1.1,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["radclip-tiny", "radclip-vit-b-16"])
    ap.add_argument("--volumes", type=int, default=8, help="volumes per measurement (tiny); ViT-B uses 2")
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for name in args.models:
        n = args.volumes if "tiny" in name or device == "cuda" else 2
        row = measure(name, n, args.slices, args.batch, args.repeats if "tiny" in name else 1, device)
        print(
            f"{name:<18} {device}: {row['images_per_s']:8.1f} images/s  {row['volumes_per_s']:7.2f} volumes/s "
            f"({args.slices} slices)  volume/slice cost ratio {row['volume_cost_ratio']:.3f}"
        )
        rows.append(row)
    path = write_json("encode_throughput", {"results": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
