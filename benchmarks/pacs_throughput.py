"""PACS throughput: series/s indexed from a folder, and from a local Orthanc over DICOMweb (QIDO-RS + WADO-RS)
and over DIMSE (C-FIND + C-GET), the same CT series, in one run, same model, same reader count. Prints each
rate and its ratio to the folder's, and writes benchmarks/results/pacs_throughput.json.

Needs Orthanc with its DICOMweb plugin (`apt-get install -y orthanc orthanc-dicomweb`); the script starts it
on free 127.0.0.1 ports (HTTP and DICOM) with a temporary storage folder, uploads the archive through the REST
API, and stops it. Each source is one leg: a function `(Bench) -> dict` in LEGS, run in order on its own out
dir; a new source (a push to `radretrieve listen`) is one more function added there.

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
    workers: int  # reader processes, every leg
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


LEGS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "folder": leg_folder,
    "dicomweb": leg_dicomweb,
    "dimse": leg_dimse,
    "dimse_move": leg_dimse_move,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=24, help="CT series (one study each)")
    parser.add_argument("--slices", type=int, default=48, help="slices per series")
    parser.add_argument("--size", type=int, default=256, help="slice rows and columns")
    parser.add_argument("--workers", type=int, default=2, help="reader processes (every leg)")
    parser.add_argument("--model", default="radclip-vit-b-16", help="model (default: a realistic size, random weights)")
    parser.add_argument("--tiny", action="store_true", help="radclip-tiny instead of --model (a smoke run)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda if present)")
    parser.add_argument("--legs", nargs="+", default=["folder", "dicomweb", "dimse"], choices=sorted(LEGS))
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
            bench = Bench(work / "archive", server, model, args.workers, work)
            results = {name: LEGS[name](bench) for name in args.legs}
    base = results.get("folder", {}).get("series_per_s", 0.0)
    ratios = {name: round(r["series_per_s"] / base, 3) if base else None for name, r in results.items()}
    payload = {
        "archive": {"series": args.series, "slices": args.slices, "size": args.size, "files": files},
        "model": model_name,
        "device": str(getattr(model, "device", args.device or "")),
        "workers": args.workers,
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
