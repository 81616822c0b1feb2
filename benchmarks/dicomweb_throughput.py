"""DICOMweb throughput: series/s indexed from a local Orthanc (QIDO-RS + WADO-RS) against the same files read
from a folder, in the same run, same model, same reader count. Writes benchmarks/results/dicomweb_throughput.json.

Needs Orthanc with its DICOMweb plugin (`apt-get install -y orthanc orthanc-dicomweb`); the script starts it
on a free 127.0.0.1 port with a temporary storage folder, uploads the archive through the REST API, and stops it.

    python -m benchmarks.dicomweb_throughput                       # 24 CT series of 48 slices, 128 x 128
    python -m benchmarks.dicomweb_throughput --series 48 --slices 96 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_json


def write_archive(root: Path, series: int, slices: int, size: int) -> int:
    """`series` CT studies of one series each; returns the number of files."""
    from radretrieve.testing.dicom import write_ct_series

    for k in range(series):
        write_ct_series(root / f"study{k:04d}", slices, size=size, seed=k)
    return series * slices


def run_once(source: Any, out: Path, model: Any, workers: int) -> dict[str, Any]:
    from pipelines.job import IndexOptions, index_archive

    start = time.perf_counter()
    summary = index_archive(source, out, model, IndexOptions(workers=workers, progress=False))
    seconds = time.perf_counter() - start
    done = sum(summary.rows.values())
    return {
        "seconds": round(seconds, 2),
        "items": done,
        "series_per_s": round(done / seconds, 2),
        "errors": dict(summary.errors),
        "stage_seconds": {k: round(v, 2) for k, v in summary.stage_seconds.items()},
        **({"series": summary.series} if summary.series else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=24, help="CT series (one study each)")
    parser.add_argument("--slices", type=int, default=48, help="slices per series")
    parser.add_argument("--size", type=int, default=128, help="slice rows and columns")
    parser.add_argument("--workers", type=int, default=2, help="reader processes (both sources)")
    parser.add_argument("--model", default="radclip-tiny")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    args = parser.parse_args()

    from radretrieve import load_model
    from radretrieve.archive.dicomweb import parse_source
    from radretrieve.testing.orthanc import Orthanc, orthanc_missing

    missing = orthanc_missing()
    if missing:
        raise SystemExit(missing)
    model = load_model(args.model, device="cpu")
    with tempfile.TemporaryDirectory(prefix="dicomweb-bench-") as tmp:
        tmp_path = Path(tmp)
        files = write_archive(tmp_path / "archive", args.series, args.slices, args.size)
        with Orthanc(tmp_path / "orthanc") as server:
            start = time.perf_counter()
            server.upload_folder(tmp_path / "archive")
            upload_s = time.perf_counter() - start
            folder = run_once(tmp_path / "archive", tmp_path / "out-folder", model, args.workers)
            web = run_once(parse_source(server.dicomweb_url), tmp_path / "out-dicomweb", model, args.workers)
            again = run_once(parse_source(server.dicomweb_url), tmp_path / "out-dicomweb", model, args.workers)
    ratio = web["series_per_s"] / folder["series_per_s"] if folder["series_per_s"] else 0.0
    payload = {
        "archive": {"series": args.series, "slices": args.slices, "size": args.size, "files": files},
        "model": args.model,
        "workers": args.workers,
        "sampled_slices": model.config.preprocess.n_slices,
        "orthanc_upload_s": round(upload_s, 2),
        "folder": folder,
        "dicomweb": web,
        "dicomweb_ratio": round(ratio, 3),
        "dicomweb_rerun": again,
    }
    path = write_json("dicomweb_throughput", payload, args.out)
    print(
        f"folder {folder['series_per_s']} series/s, DICOMweb {web['series_per_s']} series/s "
        f"(ratio {ratio:.2f}); rerun {again['seconds']} s, fetched {again.get('series', {}).get('fetched')}; {path}"
    )


if __name__ == "__main__":
    main()
