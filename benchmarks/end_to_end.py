"""End to end against the raw forward pass: where the wall time of `radretrieve index` goes.

Two workloads, each indexed by `radretrieve index ... --no-index` run as a subprocess (the whole process: the
interpreter's start, imports, model load, scan, decode, encode, shard writes, exit), then encoded by the same
model's forward pass alone, in this process, on the same items decoded beforehand, with the same batch size:

1. captioned JPEGs: the VQA-RAD images of the sample data (`../shared/data/vqa-rad`, or `$RADRETRIEVE_DATA`),
   copied into a temporary folder with each image's caption (radretrieve.datasets.vqa_rad) as its `.txt` report;
2. a synthetic archive (radretrieve.synth: DICOM series, NIfTI volumes, PNG radiographs and their reports).

The ratio counts the whole process: raw forward seconds (images + report texts) / end-to-end seconds. The stage
split comes from `radretrieve index --timings FILE` (start-up marks and the job's stage seconds). Writes
benchmarks/results/end_to_end.json and end_to_end.png (matplotlib), with the machine's load before and after.

    python -m benchmarks.end_to_end                       # ViT-B-32 (random weights), all 314 images, 30 studies
    python -m benchmarks.end_to_end --limit 60 --studies 8   # a short run on a busy machine
    python -m benchmarks.end_to_end --tiny                # radclip-tiny, 40 images, 6 studies: a smoke run

Goal (a quiet 2-core machine, CPU): end to end at least 0.8 of the raw forward on both workloads
(docs/guide/speed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_json

NAME = "end_to_end"
# the stages of one indexing process, in the order of the plot; see `stages`
STAGES = (
    "interpreter_and_imports",
    "model_load",
    "scan",
    "text_tower_wait",
    "plan",
    "encoding_run",
    "exit",
)


def load() -> dict[str, Any]:
    """The machine's load now: `uptime`'s line and the 1-minute load average."""
    line = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"uptime": line[line.find("load") :] if "load" in line else line, "load_1m": os.getloadavg()[0]}


def captioned_jpegs(dest: Path, limit: int | None) -> Path:
    """A folder of VQA-RAD JPEGs, each with its caption as `<stem>.txt` (copies: links out of an archive are
    not followed)."""
    from radretrieve.datasets.samples import sample_data_dir
    from radretrieve.datasets.vqa_rad import load_vqa_rad

    root = sample_data_dir() / "vqa-rad"
    images = load_vqa_rad(root)[:limit]
    dest.mkdir(parents=True)
    for im in images:
        shutil.copyfile(root / "images" / im.image_name, dest / im.image_name)
        (dest / (Path(im.image_name).stem + ".txt")).write_text(im.text, encoding="utf-8")
    return dest


def run_index(archive: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `radretrieve index` process; its wall time and the stage split from its --timings file."""
    timings = out.parent / (out.name + "-timings.json")
    cmd = [sys.executable, "-m", "radretrieve", "index", str(archive), "--out", str(out), "--model", args.model]
    cmd += ["--workers", str(args.workers), "--batch-size", str(args.batch_size), "--device", "cpu"]
    cmd += ["--no-index", "--json", "-q", "--timings", str(timings)]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    ended = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"index failed: {proc.stderr.strip().splitlines()[-1:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[0])
    recorded = json.loads(timings.read_text())
    marks = {"start": started} | recorded["marks"] | {"exit": ended}
    return {
        "command": "radretrieve " + " ".join(cmd[3:]).replace(str(archive), "ARCHIVE").replace(str(out), "OUT"),
        "seconds": ended - started,
        "items": summary["items"],
        "rows": summary["rows"],
        "errors": summary["errors"],
        "stages": stages(marks, recorded["stage_seconds"]),
        "marks_s": {k: round(v - started, 3) for k, v in marks.items()},
        "job_stage_seconds": recorded["stage_seconds"],
    }


def stages(marks: dict[str, float], job: dict[str, float]) -> dict[str, float]:
    """The process's wall time cut into consecutive stages (they sum to the whole), then what the encoding run
    spent per stage (these overlap: encoders on one thread, readers in other processes, writes here)."""
    job_s = marks["job"] - marks["model"]
    serial = {
        "interpreter_and_imports": marks["imports"] - marks["start"],
        "model_load": marks["model"] - marks["imports"],
        "scan": job.get("scan", 0.0),
        "text_tower_wait": job.get("text_tower_wait", 0.0),
        "plan": job.get("plan", 0.0),
        "encoding_run": job.get("run", 0.0),
    }
    # lock, out dir checks, the summary: the job's time outside its timed steps
    serial["job_other"] = job_s - sum(v for k, v in serial.items() if k in ("scan", "text_tower_wait", "plan"))
    serial["job_other"] -= serial["encoding_run"]
    serial["exit"] = marks["exit"] - marks["job"]
    inside = {
        "image_encode": job.get("encode", 0.0),
        "text_encode": job.get("text_encode", 0.0),
        "shard_write": job.get("write", 0.0),
        "decode_summed_over_readers": job.get("decode", 0.0),
        "decode_wait": job.get("decode_wait", 0.0),
        "text_tower_write": job.get("text_tower", 0.0),
    }
    return {k: round(v, 3) for k, v in (serial | inside).items()}


def raw_forward(archive: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The model's forward pass alone on the archive's items (decoded beforehand) and on its reports: same model,
    same batch size (slices), reports in batches of one task's studies as the job encodes them."""
    import torch

    from radretrieve.archive import read_item, scan
    from radretrieve.models.loading import load_model

    torch.set_num_threads(os.cpu_count() or 1)  # what the indexing process gets by default
    model = load_model(args.model, device="cpu", warn=False)
    result = scan(archive)
    decoded = [
        (torch.from_numpy(read_item(it, result.root, model.config.preprocess).pixels), it.kind == "volume")
        for it in result.items
    ]
    reports = [s.report for s in result.studies if s.report]
    batches = _slice_batches(decoded, args.batch_size)
    with torch.inference_mode():
        model.encode_mixed(*map(list, zip(*decoded[:2])))  # warm-up (the raw forward pass at its best)
        model.encode_text(reports[:2])
        start = time.perf_counter()
        for batch in batches:
            model.encode_mixed(*map(list, zip(*batch)))
        image_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(0, len(reports), 64):  # --studies-per-task 64: one text batch per task
            model.encode_text(reports[i : i + 64])
        text_s = time.perf_counter() - start
    slices = sum(a.shape[0] for a, _ in decoded)
    return {
        "items": len(decoded),
        "slices": slices,
        "reports": len(reports),
        "image_seconds": image_s,
        "text_seconds": text_s,
        "seconds": image_s + text_s,
        "items_per_s": len(decoded) / image_s,
        "slices_per_s": slices / image_s,
        "texts_per_s": len(reports) / text_s if reports else 0.0,
    }


def _slice_batches(decoded: list[tuple[Any, bool]], batch: int) -> list[list[tuple[Any, bool]]]:
    """Items grouped as the job's encoder groups them: a batch closes once it holds `batch` slices."""
    out, cur, n = [], [], 0
    for arr, vol in decoded:
        cur.append((arr, vol))
        n += arr.shape[0]
        if n >= batch:
            out.append(cur)
            cur, n = [], 0
    return out + ([cur] if cur else [])


def workload(name: str, archive: Path, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs = [run_index(archive, tmp / f"{name}-out-{i}", args) for i in range(args.repeat)]
    e2e = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]  # the median run
    raw = raw_forward(archive, args)
    ratio = raw["seconds"] / e2e["seconds"]
    line = (
        f"{name}: {e2e['items']} items in {e2e['seconds']:.1f} s end to end; raw forward {raw['seconds']:.1f} s "
        f"({raw['items_per_s']:.1f} items/s, {raw['texts_per_s']:.1f} texts/s); ratio {ratio:.2f}"
    )
    print(line, flush=True)
    print("  stages: " + ", ".join(f"{k} {v:.1f}" for k, v in e2e["stages"].items()), flush=True)
    return {
        "workload": name,
        "end_to_end": e2e,
        "end_to_end_seconds_all_runs": [r["seconds"] for r in runs],
        "raw_forward": raw,
        "ratio_raw_over_end_to_end": ratio,
        "pairs_per_s_end_to_end": e2e["items"] / e2e["seconds"],
        "pairs_per_s_raw": raw["items"] / raw["seconds"],
    }


def plot(path: Path, results: list[dict[str, Any]]) -> Path | None:
    """One horizontal bar per workload cut into the process's consecutive stages, with the raw forward pass
    (image + text encoding) beneath it; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    order = ["interpreter_and_imports", "model_load", "scan", "text_tower_wait", "plan", "job_other"]
    order += ["encoding_run", "exit"]
    colors = dict(zip(order, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(10, 2.2 + 1.3 * len(results)))
    labels = []
    for row, res in enumerate(results):
        y = 2 * row
        left = 0.0
        for stage in order:
            width = max(res["end_to_end"]["stages"].get(stage, 0.0), 0.0)
            ax.barh(y, width, left=left, color=colors[stage], label=stage if row == 0 else None)
            left += width
        raw = res["raw_forward"]
        ax.barh(y + 0.8, raw["image_seconds"], color="0.35", label="raw: image forward" if row == 0 else None)
        text_label = "raw: text forward" if row == 0 else None
        ax.barh(y + 0.8, raw["text_seconds"], left=raw["image_seconds"], color="0.7", label=text_label)
        labels += [(y, f"{res['workload']}\nindex (ratio {res['ratio_raw_over_end_to_end']:.2f})"), (y + 0.8, "raw")]
    ax.set_yticks([y for y, _ in labels], [t for _, t in labels])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (wall)")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.35))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip name: random weights from the fixed seed")
    ap.add_argument("--limit", type=int, default=None, help="VQA-RAD images (default all 314)")
    ap.add_argument("--studies", type=int, default=30, help="synthetic studies")
    ap.add_argument("--image-size", type=int, default=128, help="synthetic slice size (pixels)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1, help="indexing runs per workload (the median is kept)")
    ap.add_argument("--only", choices=("jpeg", "synthetic"), default=None)
    ap.add_argument("--tiny", action="store_true", help="radclip-tiny, 40 images, 6 studies: a smoke run")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/end_to_end.json)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.model, args.limit, args.studies, args.image_size = "radclip-tiny", args.limit or 40, 6, 64
    from radretrieve.synth import synthesize

    before = load()
    results = []
    with tempfile.TemporaryDirectory(prefix="rr-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        if args.only in (None, "jpeg"):
            archive = captioned_jpegs(tmp / "vqa-rad", args.limit)
            results.append(workload("captioned_jpeg", archive, tmp, args))
        if args.only in (None, "synthetic"):
            synthesize(tmp / "synthetic", studies=args.studies, seed=0, image_size=args.image_size)
            (tmp / "synthetic" / "manifest.csv").unlink()  # the folder is the archive, not its manifest
            results.append(workload("synthetic_archive", tmp / "synthetic", tmp, args))
    after = load()
    settings = {k: getattr(args, k) for k in ("model", "limit", "studies", "image_size", "workers", "batch_size")}
    payload = {
        "settings": settings | {"repeat": args.repeat},
        "command": "python -m benchmarks.end_to_end " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load_before": before,
        "load_after": after,
        "load_mean_1m": statistics.mean([before["load_1m"], after["load_1m"]]),
        "workloads": results,
    }
    path = write_json(NAME, payload, args.out)
    png = plot(path.with_suffix(".png"), results)
    print(f"wrote {path}" + (f" and {png}" if png else " (no plot: matplotlib is not installed)"))


if __name__ == "__main__":
    main()
