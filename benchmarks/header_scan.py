"""The header scan of a synthetic archive, in-process: wall and CPU seconds of each run, and the best.

    python -m benchmarks.header_scan                 # 300 studies (4,771 DICOM files), 3 runs
    python -m benchmarks.header_scan --studies 60 --runs 5

One untimed scan first (it imports the readers' modules), then each timed scan starts with nothing
remembered (radretrieve.archive.dicom_header.clear_memo), as a reader process does. Issue 23's goal: the
300-study archive scanned in at most 3.05 s (best of 3, quiet machine), the time before series selection and
redaction read their attributes. Writes benchmarks/results/header_scan.json.

The same script measures an older checkout for a before/after comparison (its radretrieve first on the path):

    git worktree add ../before 4477fd5
    PYTHONPATH=../before python benchmarks/header_scan.py --out benchmarks/results/header_scan-4477fd5.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import write_json

GOAL_S = 3.05  # best of 3 for 300 studies, before selection and redaction (issue 23)


def timed_scans(root: Path, runs: int) -> list[dict[str, float]]:
    from radretrieve.archive import dicom_header, scan

    scan(root)  # untimed: imports pydicom, nibabel and the scanner's modules
    forget = getattr(dicom_header, "clear_memo", lambda: None)  # an older checkout has no memo
    out = []
    for _ in range(runs):
        forget()
        wall, cpu = time.perf_counter(), time.process_time()
        result = scan(root)
        out.append(
            {
                "wall_s": round(time.perf_counter() - wall, 3),
                "cpu_s": round(time.process_time() - cpu, 3),
                "studies": len(result.studies),
            }
        )
        print(f"scan: {out[-1]['wall_s']:.2f} s wall, {out[-1]['cpu_s']:.2f} s CPU", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=300, help="synthetic studies (radretrieve synth defaults)")
    ap.add_argument("--runs", type=int, default=3, help="scans of the same archive")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/header_scan.json)")
    args = ap.parse_args(argv)
    from radretrieve.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        synthesize(root, studies=args.studies, seed=0)
        files = sum(1 for p in root.rglob("*.dcm"))
        load_before = os.getloadavg()[0]
        runs = timed_scans(root, args.runs)
    best = min(r["wall_s"] for r in runs)
    payload = {
        "studies": args.studies,
        "dicom_files": files,
        "runs": runs,
        "best_wall_s": best,
        "goal_s": GOAL_S if args.studies == 300 else None,
        "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    path = write_json("header_scan", payload, args.out)
    goal = f"; goal {GOAL_S} s" if args.studies == 300 else ""
    print(f"best {best:.2f} s for {args.studies} studies ({files} DICOM files){goal}; wrote {path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
