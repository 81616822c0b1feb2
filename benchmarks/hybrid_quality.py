"""Vector, keyword and hybrid search side by side (`radretrieve bench retrieval --protocol labels --mode all`).

Two data sets, each indexed or encoded with an untrained radclip-tiny by default (the case the issue names: an
exact match on a rare term must not be buried by a model that knows nothing):

* a synthetic archive whose reports carry rare finding words: `synthesize` with `--seed`, then a seeded draw gives
  each study one of `FINDINGS` (or none), written into its report as a sentence and into its labels as `finding`
  (the ground truth); queries are the finding names, relevant items the studies that have that finding;
* VQA-RAD's labels protocol (organ, modality) from the shared sample data, when it is there.

    python -m benchmarks.hybrid_quality                  # 120 synthetic studies + VQA-RAD test split
    python -m benchmarks.hybrid_quality --studies 60 --no-vqa-rad
    python -m benchmarks.hybrid_quality --model radretrieve-demo/model --seed 1 --tag trained   # the demo's model

Writes benchmarks/results/hybrid_quality_{synthetic,vqa_rad}.{json,md} (the .md is the printed table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS
from radretrieve.datasets.samples import sample_data_dir

FINDINGS = (
    "Kommerell diverticulum",
    "Chiari malformation",
    "brown tumour",
    "Wormian bones",
    "Bochdalek hernia",
    "Morgagni hernia",
    "scimitar syndrome",
    "Kienbock disease",
)
CLI = [sys.executable, "-m", "radretrieve"]


def plant_findings(arch: Path, seed: int, share: float = 0.5) -> dict[str, int]:
    """Give a seeded `share` of the studies one rare finding: a sentence in the report, the name in the labels."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for sidecar in sorted(arch.glob("*/*.json")):
        data = json.loads(sidecar.read_text())
        finding = str(rng.choice(FINDINGS)) if rng.random() < share else "none"
        if finding != "none":
            data["text"] = f"{data.get('text', '')} Incidental {finding} is noted.".strip()
        data.setdefault("labels", {})["finding"] = finding
        sidecar.write_text(json.dumps(data))
        counts[finding] = counts.get(finding, 0) + 1
    (arch / "manifest.csv").unlink(missing_ok=True)  # the folder is scanned with its sidecars
    return counts


def _run(*args: str) -> str:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return proc.stdout


def synthetic(studies: int, seed: int, model: str, bootstrap: int, out: Path) -> str:
    from radretrieve.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        arch, index = Path(tmp) / "arch", Path(tmp) / "out"
        synthesize(arch, studies=studies, seed=seed)
        counts = plant_findings(arch, seed)
        _run("index", str(arch), "--out", str(index), "--model", model, "--workers", "0")
        return _bench(index, ["--labels", "finding"], bootstrap, out, {"studies": studies, "findings": counts})


def vqa_rad(model: str, bootstrap: int, out: Path) -> str:
    from radretrieve.datasets.vqa_rad import convert_vqa_rad

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "vqa_rad.csv"
        convert_vqa_rad(sample_data_dir() / "vqa-rad", manifest, absolute_paths=True)
        args = ["--model", model, "--data", str(manifest), "--split", "test"]
        return _bench(None, args, bootstrap, out, {"split": "test"})


def _bench(index: Path | None, args: list[str], bootstrap: int, out: Path, meta: dict) -> str:
    start = time.perf_counter()
    where = ["--index", str(index)] if index is not None else []
    cmd = ["bench", "retrieval", *where, *args, "--protocol", "labels", "--mode", "all"]
    cmd += ["--bootstrap", str(bootstrap), "--out", str(out.parent), "--name", out.stem, "--no-plot"]
    table = _run(*cmd)
    payload = json.loads(out.with_suffix(".json").read_text())
    payload |= {"benchmark": out.stem, "seconds": round(time.perf_counter() - start, 1), "data": meta}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=120, help="synthetic studies")
    ap.add_argument("--seed", type=int, default=0, help="archive and finding seed")
    ap.add_argument("--model", default="radclip-tiny", help="registry name or model directory (untrained tiny)")
    ap.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the CIs")
    ap.add_argument("--no-vqa-rad", action="store_true", help="skip VQA-RAD")
    ap.add_argument("--tag", default="", help="suffix of the result files (e.g. trained: ..._synthetic-trained.json)")
    args = ap.parse_args(argv)
    tag = f"-{args.tag}" if args.tag else ""
    print(synthetic(args.studies, args.seed, args.model, args.bootstrap, RESULTS / f"hybrid_quality_synthetic{tag}"))
    if not args.no_vqa_rad and (sample_data_dir() / "vqa-rad").is_dir():
        print(vqa_rad(args.model, args.bootstrap, RESULTS / f"hybrid_quality_vqa_rad{tag}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
