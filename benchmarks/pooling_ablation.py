"""Pooling ablation: attention (RadCLIP's adapter) vs mean vs max pooling of slice embeddings, at 8, 16, 32
and 64 slices per volume, on a synthetic CT/MR archive whose reports say where along the volume a lesion is.

Protocol (the same for every variant, so only the pooling and the slice count differ):
1. one synthetic archive (`radretrieve.synth.synthesize`, CT and MR volumes only);
2. stage 1 once: radclip-tiny's image and text towers trained on slice-text pairs (`radretrieve.training`);
3. per variant: that base with the variant's adapter and `n_slices`; stage 2 trains the attention adapter
   (mean and max have no parameters, so stage 2 is skipped for them);
4. `bench retrieval` metrics on the test split: text -> volume by study, and by lesion position
   (the label a pooling without slice positions cannot see).

    python -m benchmarks.pooling_ablation             # 160 studies, 3 poolings x 4 slice counts
    python -m benchmarks.pooling_ablation --quick     # 60 studies, 3 poolings x (8, 32) slices

Writes benchmarks/results/pooling_ablation.json (+ .md table and .png plot beside it).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, write_json

NAME = "pooling_ablation"
POOLINGS = ("attention", "mean", "max")
SLICES = (8, 16, 32, 64)
LABEL_SETS = (("position",), ("region", "modality"))
log = logging.getLogger(NAME)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big the ablation is."""

    studies: int  # synthetic studies (about 20% land in the test split)
    min_slices: int  # fewest slices per synthetic volume (>= the largest slice count keeps sampling honest)
    max_slices: int  # most slices per synthetic volume
    slices: tuple[int, ...]  # slice counts to compare
    image_epochs: int  # stage 1 epochs (shared base)
    volume_epochs: int  # stage 2 epochs per attention variant


FULL = Sizes(160, 64, 80, SLICES, 8, 20)
QUICK = Sizes(60, 32, 40, (8, 32), 3, 8)


def base_model(manifest: Path, out: Path, sizes: Sizes, seed: int) -> Any:
    """Stage 1 only: radclip-tiny's towers trained on slice-text pairs (its text tower starts random)."""
    from radretrieve.training import ImageStageConfig, TrainConfig, VolumeStageConfig, train

    cfg = TrainConfig(
        seed=seed,
        image_stage=ImageStageConfig(epochs=sizes.image_epochs, train_text=True, text_lr=1e-4),
        volume_stage=VolumeStageConfig(epochs=0),
    )
    return train(cfg, manifest, out, model="radclip-tiny", device="cpu").model


def variant(base: Any, pooling: str, slices: int) -> Any:
    """A copy of ``base`` with a fresh adapter of the given pooling and ``slices`` sampled per volume."""
    from radretrieve.models.loading import init_model

    cfg = base.config
    cfg = cfg.replace(
        name=f"{cfg.name}-{pooling}-{slices}",
        adapter=dataclasses.replace(cfg.adapter, pooling=pooling, max_slices=max(cfg.adapter.max_slices, slices)),
        preprocess=dataclasses.replace(cfg.preprocess, n_slices=slices),
    )
    model = init_model(cfg)  # source: the config's name (a model made here, not a registry entry)
    model.clip.load_state_dict(base.clip.state_dict())
    return model.eval()


def run_variant(
    base: Any, pooling: str, slices: int, manifest: Path, out: Path, sizes: Sizes, seed: int
) -> dict[str, Any]:
    from radretrieve.evaluation.retrieval import BenchOptions, retrieval_results
    from radretrieve.evaluation.sources import embeddings_from_model
    from radretrieve.training import ImageStageConfig, TrainConfig, VolumeStageConfig, train

    model = variant(base, pooling, slices)
    start = time.perf_counter()
    cfg = TrainConfig(
        seed=seed, image_stage=ImageStageConfig(epochs=0), volume_stage=VolumeStageConfig(epochs=sizes.volume_epochs)
    )
    trained = train(cfg, manifest, out, model=model, device="cpu").model.eval()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    emb = embeddings_from_model(trained, manifest, split="test")
    encode_s = time.perf_counter() - start
    results = retrieval_results(emb, BenchOptions(label_sets=LABEL_SETS, n_bootstrap=500, seed=seed))
    return {
        "pooling": pooling,
        "slices": slices,
        "train_s": round(train_s, 2),
        "eval_encode_s": round(encode_s, 2),
        "test_volumes": len(emb.images),
        "results": {k: v.to_dict() for k, v in results.items()},
    }


def _row_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The run of this variant that the summary table shows, as a bench_report result."""
    return row["results"]["text->image"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="60 studies, 8 and 32 slices")
    ap.add_argument("--studies", type=int, default=None, help="synthetic studies (overrides the size preset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json", help="JSON path (.md/.png beside it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sizes = QUICK if args.quick else FULL
    if args.studies:
        sizes = dataclasses.replace(sizes, studies=args.studies)

    import torch

    from radretrieve.evaluation.report import write_report
    from radretrieve.synth import synthesize

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        summary = synthesize(
            Path(tmp) / "archive",
            sizes.studies,
            seed=args.seed,
            min_slices=sizes.min_slices,
            max_slices=sizes.max_slices,
            modality_weights=(0.5, 0.5, 0.0),
        )
        base = base_model(summary.manifest, Path(tmp) / "base", sizes, args.seed)
        for slices in sizes.slices:
            for pooling in POOLINGS:
                log.info("variant %s, %d slices", pooling, slices)
                rows.append(
                    run_variant(
                        base, pooling, slices, summary.manifest, Path(tmp) / f"{pooling}-{slices}", sizes, args.seed
                    )
                )
    out = args.out.resolve()
    runs = {f"{r['pooling']} x{r['slices']}": _row_metrics(r) for r in rows}
    files = write_report(runs, out.parent, name=out.stem, title="Pooling ablation: text -> volume (test split)")
    by_position = {f"{r['pooling']} x{r['slices']}": r["results"].get("text->image [position]") for r in rows}
    payload = {
        "sizes": dataclasses.asdict(sizes),
        "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 1),
        "variants": rows,
        "headline": _headline(runs, by_position),
    }
    write_json(NAME, payload, files.json)  # replaces the report JSON with the full payload (same folder)
    print(files.markdown.read_text(encoding="utf-8"), end="")
    return 0


def _headline(runs: dict[str, Any], by_position: dict[str, Any]) -> str:
    parts = []
    for name, run in runs.items():
        pos = by_position.get(name)
        pos_map = f", position mAP {pos['metrics']['mAP']['value']:.3f}" if pos else ""
        parts.append(f"{name}: mAP {run['metrics']['mAP']['value']:.3f}{pos_map}")
    return "; ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
