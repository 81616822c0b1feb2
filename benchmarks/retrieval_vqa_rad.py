"""`bench retrieval` on VQA-RAD with an (untrained by default) model: the chance-level baseline that trained
models are compared against, and a check that the whole path (converter -> reader -> encoder -> metrics) runs.

    python -m benchmarks.retrieval_vqa_rad                       # all 314 images, radclip-tiny
    python -m benchmarks.retrieval_vqa_rad --quick               # the test split only (63 images)
    python -m benchmarks.retrieval_vqa_rad --model runs/tiny     # a trained model directory

Writes benchmarks/results/retrieval_vqa_rad.json (+ .md and .png beside it). The JSON is the bench_report
payload plus `benchmark`, `when`, `machine` and `seconds`.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, machine
from radretrieve.datasets.samples import sample_data_dir

VQA_RAD = sample_data_dir() / "vqa-rad"  # RADRETRIEVE_DATA, else ../shared/data
NAME = "retrieval_vqa_rad"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="radclip-tiny", help="registry name or model directory")
    ap.add_argument("--weights", default=None, help="weights for --model")
    ap.add_argument("--data", type=Path, default=VQA_RAD, help="VQA-RAD folder (vqa_rad.json + images/)")
    ap.add_argument("--split", default=None, help="only this split (default: all images)")
    ap.add_argument("--quick", action="store_true", help="the test split only")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    ap.add_argument("--device", default=None, help="cpu | cuda")
    ap.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json", help="JSON path (.md/.png beside it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from radretrieve import load_model
    from radretrieve.datasets.vqa_rad import convert_vqa_rad
    from radretrieve.evaluation.retrieval import BenchOptions, bench_retrieval
    from radretrieve.evaluation.sources import embeddings_from_model

    split = "test" if args.quick and args.split is None else args.split
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "vqa_rad.csv"
        convert_vqa_rad(args.data, manifest, absolute_paths=True)
        model = load_model(args.model, weights=args.weights, device=args.device)
        emb = embeddings_from_model(model, manifest, split)
    options = BenchOptions(n_bootstrap=args.bootstrap)
    title = f"VQA-RAD retrieval, {args.model} ({split or 'all'} split)"
    out = args.out.resolve()
    _, files = bench_retrieval(emb, out.parent, options, name=out.stem, title=title)
    payload = json.loads(files.json.read_text(encoding="utf-8"))
    payload = {
        "benchmark": NAME,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "seconds": round(time.perf_counter() - start, 2),
    } | payload
    files.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(files.markdown.read_text(encoding="utf-8"), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
