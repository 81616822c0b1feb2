"""Reader throughput: decoded + preprocessed slices/s for one worker (one process, one torch thread).

Formats: DICOM CT series, NIfTI MR (synthetic archive), real NIfTI volumes (head CT, Colin27), 2D DICOM
and PNG radiographs (synthetic), and real JPEGs (VQA-RAD). Also times `scan` (headers only) and
`synthesize`. Writes benchmarks/results/read_throughput.json.

    python -m benchmarks.read_throughput                 # defaults: 120 synthetic studies, 224 px, 32 slices
    python -m benchmarks.read_throughput --studies 1000  # also shows the generator's speed at scale
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import write_json
from radretrieve.archive import Item, read_item, scan
from radretrieve.datasets.samples import sample_data_dir
from radretrieve.foundation.config import PreprocessConfig
from radretrieve.synth import synthesize

SHARED = sample_data_dir()  # RADRETRIEVE_DATA, else ../shared/data


def _category(item: Item) -> str:
    if item.fmt == "dicom":
        return "dicom_series" if item.kind == "volume" else "dicom_2d"
    if item.fmt == "nifti":
        return "nifti"
    return "jpeg" if item.source.lower().endswith((".jpg", ".jpeg")) else "png"


def measure(items: list[tuple[str, Item, Path]], cfg: PreprocessConfig, repeat: int) -> dict[str, dict[str, float]]:
    """Slices/s and items/s per category, over `repeat` passes (the first pass warms the page cache)."""
    slices: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for _name, item, root in items:  # warm-up: file cache, torch kernels
        read_item(item, root, cfg)
    for _ in range(repeat):
        for name, item, root in items:
            start = time.perf_counter()
            dec = read_item(item, root, cfg)
            seconds[name] += time.perf_counter() - start
            slices[name] += dec.slice_count
            count[name] += 1
    return {
        name: {
            "items": count[name] // repeat,
            "slices_per_s": round(slices[name] / seconds[name], 1),
            "items_per_s": round(count[name] / seconds[name], 2),
            "ms_per_item": round(1000 * seconds[name] / count[name], 2),
        }
        for name in sorted(seconds)
    }


def _collect(root: Path, label: str | None, limit: int) -> tuple[list[tuple[str, Item, Path]], float]:
    start = time.perf_counter()
    result = scan(root)
    elapsed = time.perf_counter() - start
    per: dict[str, int] = defaultdict(int)
    out = []
    for item in result.items:
        name = label or _category(item)
        if per[name] < limit:
            per[name] += 1
            out.append((name, item, root))
    return out, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=120, help="synthetic studies to generate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224, help="model input size")
    parser.add_argument("--n-slices", type=int, default=32, help="slices sampled per volume")
    parser.add_argument("--limit", type=int, default=40, help="items per category to time")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes over the items")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one worker)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    cfg = PreprocessConfig(image_size=args.image_size, n_slices=args.n_slices)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "synth"
        start = time.perf_counter()
        summary = synthesize(archive, args.studies, seed=args.seed)
        synth_s = time.perf_counter() - start
        items, scan_s = _collect(archive, None, args.limit)
        real: list[tuple[str, Item, Path]] = []
        scans: dict[str, float] = {"synthetic": round(scan_s, 3)}
        for label, folder in (
            ("jpeg_vqa_rad", SHARED / "vqa-rad" / "images"),
            ("nifti_real", SHARED / "ct-head"),
            ("nifti_real", SHARED / "mri-t1-brain"),
        ):
            if folder.is_dir():
                found, seconds = _collect(folder, label, args.limit)
                real += found
                scans[folder.name] = round(seconds, 3)
        results = measure(items + real, cfg, args.repeat)
    payload: dict[str, Any] = {
        "config": {
            "image_size": args.image_size,
            "n_slices": args.n_slices,
            "threads": args.threads,
            "studies": args.studies,
            "repeat": args.repeat,
            "worker_pid_cpus": len(os.sched_getaffinity(0)),
        },
        "synthesize": {
            "studies": summary.studies,
            "files": summary.files,
            "seconds": round(synth_s, 2),
            "studies_per_s": round(summary.studies / synth_s, 1),
        },
        "scan_seconds": scans,
        "scan_files_per_s": round(summary.files / max(scan_s, 1e-9), 1),
        "read": results,
    }
    path = write_json("read_throughput", payload, args.out)
    for name, row in results.items():
        rates = f"{row['slices_per_s']:>9.1f} slices/s  {row['items_per_s']:>8.2f} items/s"
        print(f"{name:<14} {rates}  ({row['items']} items)")
    print(
        f"synthesize: {payload['synthesize']['studies_per_s']} studies/s; scan: {payload['scan_files_per_s']} files/s"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
