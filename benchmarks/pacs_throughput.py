"""PACS throughput: series/s indexed from a folder, and from a local Orthanc over DICOMweb (QIDO-RS + WADO-RS)
and over DIMSE (C-FIND + C-GET), and pushed by Orthanc to `radretrieve listen`, the same CT series, in one
run, same model, same reader count. Prints each
rate and its ratio to the folder's, and writes benchmarks/results/pacs_throughput.json.

Needs Orthanc with its DICOMweb plugin (`apt-get install -y orthanc orthanc-dicomweb`); the script starts it
on free 127.0.0.1 ports (HTTP and DICOM) with a temporary storage folder, uploads the archive through the REST
API, and stops it. Each source is one leg: a function `(Bench) -> dict` in LEGS, run in order on its own out
dir; a new source is one more function added there.

    python -m benchmarks.pacs_throughput                                   # radclip-vit-b-16, 24 series
    python -m benchmarks.pacs_throughput --tiny --series 4 --slices 8      # a smoke run (radclip-tiny)
    python -m benchmarks.pacs_throughput --legs folder dimse --device cuda --workers 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import write_json
from benchmarks.dicomweb_throughput import write_archive


@dataclass(frozen=True)
class Bench:
    """What every leg shares: the archive (as files), the PACS holding it, the model and the options."""

    archive: Path  # the CT series as files (the folder leg reads them; Orthanc holds the same files)
    server: Any  # radretrieve.testing.orthanc.Orthanc, with its DICOM port open
    model: Any  # the loaded Encoder
    model_name: str  # its name (the listen leg loads it in its own process)
    workers: int  # reader processes, every leg
    listen_workers: int  # the listener's reader processes
    work: Path  # a folder for the legs' out dirs


def index_once(source: Any, out: Path, bench: Bench) -> dict[str, Any]:
    """Index `source` into `out` (a fresh out dir) and time it."""
    from pipelines.job import IndexOptions, index_archive

    start = time.perf_counter()
    summary = index_archive(source, out, bench.model, IndexOptions(workers=bench.workers, progress=False))
    seconds = time.perf_counter() - start
    done = sum(v for k, v in summary.rows.items() if k != "report")
    return {
        "seconds": round(seconds, 2),
        "items": done,
        "series_per_s": round(done / seconds, 3),
        "slices": summary.slices,
        "errors": dict(summary.errors),
        "stage_seconds": {k: round(v, 2) for k, v in summary.stage_seconds.items()},
        **({"series": summary.series} if summary.series else {}),
    }


def leg_folder(bench: Bench) -> dict[str, Any]:
    """The same files read from a folder: the reference rate."""
    return index_once(bench.archive, bench.work / "out-folder", bench)


def leg_dicomweb(bench: Bench) -> dict[str, Any]:
    """QIDO-RS listing, WADO-RS metadata and instances (radretrieve.archive.dicomweb)."""
    from radretrieve.archive.dicomweb import parse_source

    return index_once(parse_source(bench.server.dicomweb_url), bench.work / "out-dicomweb", bench)


def leg_dimse(bench: Bench) -> dict[str, Any]:
    """C-FIND listing, C-GET of each series for its headers, then of the sampled instances of each item."""
    from radretrieve.archive.dimse import parse_source

    return index_once(parse_source(bench.server.dimse_url), bench.work / "out-dimse", bench)


def leg_dimse_move(bench: Bench) -> dict[str, Any]:
    """As `leg_dimse`, with C-MOVE to radretrieve's own storage SCP (--move-port) instead of C-GET."""
    from radretrieve.archive.dimse import parse_source

    source = parse_source(bench.server.dimse_url, move_port=bench.server.move_port)
    return index_once(source, bench.work / "out-dimse-move", bench)


def leg_listen(bench: Bench) -> dict[str, Any]:
    """Orthanc pushes each study (C-STORE, one association per study, as an auto-routing rule does) to a
    `radretrieve listen` process, which indexes each study once its association ends. Timed from the first push
    to the last series indexed (the listener's model load is before, as for a node that runs all night). The
    listener's reader processes (`--listen-workers`, by default as many as the other legs') start once, before
    the first push."""
    import json
    import subprocess
    import sys

    import requests

    from radretrieve.testing.orthanc import CALLING_AET, MODALITY

    out = bench.work / "out-listen"
    status = out / "listen.json"
    cmd = [sys.executable, "-m", "radretrieve", "listen", "--out", str(out), "--port", str(bench.server.move_port)]
    cmd += [
        "--aet",
        CALLING_AET,
        "--model",
        bench.model_name,
        "--workers",
        str(bench.listen_workers),
        "--no-index",
        "-q",
    ]
    log = (bench.work / "listen.log").open("w")  # a file, not a pipe: a full pipe would stall the listener
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        _wait(lambda: status.is_file() and json.loads(status.read_text())["state"] == "running", proc, 600, log.name)
        studies = requests.get(f"{bench.server.url}/studies", timeout=60).json()
        series = len(requests.get(f"{bench.server.url}/series", timeout=60).json())
        start = time.perf_counter()
        for study in studies:  # one association per study, one after another
            push = {"Resources": [study], "Synchronous": True}
            requests.post(f"{bench.server.url}/modalities/{MODALITY}/store", json=push, timeout=600).raise_for_status()
        pushed_s = time.perf_counter() - start

        def indexed() -> int:
            return int(json.loads(status.read_text())["totals"]["series_indexed"])

        _wait(lambda: indexed() >= series, proc, 1800, log.name)
        seconds = time.perf_counter() - start
        totals = json.loads(status.read_text())["totals"]
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()
    done = sum(v for k, v in totals["rows"].items() if k != "report")
    return {
        "seconds": round(seconds, 2),
        "push_seconds": round(pushed_s, 2),
        "items": done,
        "series_per_s": round(done / seconds, 3),
        "errors": totals["errors"],
        "batches": totals["batches"],
    }


def _wait(ready: Callable[[], bool], proc: Any, timeout_s: float, log_path: str) -> None:
    """Poll `ready` until it holds; the listener's exit or the timeout stops the benchmark with its log's tail."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            tail = Path(log_path).read_text(encoding="utf-8", errors="replace")[-2000:]
            raise SystemExit(f"radretrieve listen exited with {proc.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise SystemExit(f"radretrieve listen: not done within {timeout_s:g} s")
        time.sleep(0.1)


LEGS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "folder": leg_folder,
    "dicomweb": leg_dicomweb,
    "dimse": leg_dimse,
    "dimse_move": leg_dimse_move,
    "listen": leg_listen,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=24, help="CT series (one study each)")
    parser.add_argument("--slices", type=int, default=48, help="slices per series")
    parser.add_argument("--size", type=int, default=256, help="slice rows and columns")
    parser.add_argument("--workers", type=int, default=2, help="reader processes (every leg)")
    parser.add_argument("--listen-workers", type=int, default=None, help="the listener's (default: --workers)")
    parser.add_argument("--model", default="radclip-vit-b-16", help="model (default: a realistic size, random weights)")
    parser.add_argument("--tiny", action="store_true", help="radclip-tiny instead of --model (a smoke run)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    parser.add_argument("--legs", nargs="+", default=["folder", "dicomweb", "dimse", "listen"], choices=sorted(LEGS))
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()

    from radretrieve import load_model
    from radretrieve.testing.orthanc import Orthanc, orthanc_missing

    missing = orthanc_missing()
    if missing:
        raise SystemExit(missing)
    model_name = "radclip-tiny" if args.tiny else args.model
    model = load_model(model_name, device=args.device, warn=False)
    with tempfile.TemporaryDirectory(prefix="pacs-bench-") as tmp:
        work = Path(tmp)
        files = write_archive(work / "archive", args.series, args.slices, args.size)
        with Orthanc(work / "orthanc", dicom=True) as server:
            start = time.perf_counter()
            server.upload_folder(work / "archive")
            upload_s = time.perf_counter() - start
            listen_workers = args.workers if args.listen_workers is None else args.listen_workers
            bench = Bench(work / "archive", server, model, model_name, args.workers, listen_workers, work)
            results = {name: LEGS[name](bench) for name in args.legs}
    base = results.get("folder", {}).get("series_per_s", 0.0)
    ratios = {name: round(r["series_per_s"] / base, 3) if base else None for name, r in results.items()}
    payload = {
        "archive": {"series": args.series, "slices": args.slices, "size": args.size, "files": files},
        "model": model_name,
        "device": str(getattr(model, "device", args.device or "")),
        "workers": args.workers,
        "listen_workers": args.workers if args.listen_workers is None else args.listen_workers,
        "sampled_slices": model.config.preprocess.n_slices,
        "orthanc_upload_s": round(upload_s, 2),
        "legs": results,
        "ratio_to_folder": ratios,
        "goal_ratio": 0.8,
    }
    path = write_json("pacs_throughput", payload, args.out)
    for name, r in results.items():
        print(f"{name}: {r['series_per_s']} series/s ({r['seconds']} s; ratio to folder {ratios[name]})")
    print(path)


if __name__ == "__main__":
    main()
