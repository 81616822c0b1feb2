"""Training quality of the RadCLIP recipe (radclip-tiny, CPU-sized): does `radretrieve train` learn retrieval?

1. Synthetic archive, held-out `val` + `test` studies, text -> volume precision@5 (label-aware: a hit counts when its
   labels match the query's):
   - region-and-modality queries ("chest CT"), relevant = same region and modality (goal >= 0.8);
   - lesion-position queries ("lesion present, upper"), relevant = lesion present at that position along the
     slice axis; the trained attention adapter against mean pooling over the same slice embeddings (goal:
     attention - mean >= 0.2). The synthetic anatomy is constant along Z, so position shows only in slice order.
2. VQA-RAD (the sample data's vqa-rad/, converted by radretrieve.datasets.vqa_rad; split by image, seeded): text ->
   image precision@5 for organ-and-modality queries on the test images, trained vs untrained vs chance.

    python -m benchmarks.train_quality    # ~8 min on 2 busy CPU cores; writes benchmarks/results/train_quality.json
                                          # and train_quality.png (loss and validation recall of the synthetic run)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import RESULTS, write_json
from radretrieve import load_model
from radretrieve.archive import Item, read_item, scan
from radretrieve.datasets.samples import sample_data_dir
from radretrieve.evaluation.metrics import evaluate_embeddings, label_relevance
from radretrieve.models.adapter import SlicePoolingAdapter
from radretrieve.synth import synthesize
from radretrieve.training import (
    DataConfig,
    ImageStageConfig,
    TextConfig,
    TrainConfig,
    VolumeStageConfig,
    presets,
    train,
)
from radretrieve.training.texts import render, template_labels

SHARED_DATA = sample_data_dir()  # RADRETRIEVE_DATA, else ../shared/data
RM_TEMPLATE = presets.REGION_MODALITY
POSITION_TEMPLATE = presets.POSITION
log = logging.getLogger("train_quality")


def synthetic_recipe(args: argparse.Namespace) -> TrainConfig:
    """The demo's recipe (radretrieve.training.presets): label templates; the queries below use that phrasing."""
    return presets.synthetic_recipe(args.seed, args.epochs_2d, args.epochs_3d, args.lr, args.adapter_lr)


def vqa_recipe(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        seed=args.seed,
        text=TextConfig(source="mixed", templates=(RM_TEMPLATE,)),
        data=DataConfig(val_fraction=0.1),
        image_stage=ImageStageConfig(
            epochs=args.vqa_epochs, batch_size=32, lr=args.lr, train_text=True, text_lr=args.lr
        ),
        volume_stage=VolumeStageConfig(epochs=0),
    )


def _labels(item: Item) -> dict[str, str]:
    return template_labels(item.labels, item.modality, item.body_part)


def _decode(items: Sequence[Item], root: Path, model: Any) -> list[torch.Tensor]:
    return [torch.from_numpy(read_item(it, root, model.config.preprocess).pixels) for it in items]


def text_queries(
    labels: Sequence[Mapping[str, str]], keys: Sequence[str], template: str, where: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, list[str]]]:
    """One query per distinct value combination of `keys` in the gallery (optionally only where labels match
    `where`); returns the query texts and their labels (for label-aware relevance)."""
    combos = sorted(
        {
            tuple(lab.get(k, "") for k in keys)
            for lab in labels
            if all(lab.get(k) for k in keys) and all(lab.get(k) == v for k, v in (where or {}).items())
        }
    )
    texts = [render(template, dict(zip(keys, c))) for c in combos]
    return texts, {k: [c[i] for c in combos] for i, k in enumerate(keys)}


def precision_at_5(
    model: Any,
    gallery: np.ndarray,
    labels: Sequence[Mapping[str, str]],
    keys: Sequence[str],
    template: str,
    where: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Label-aware text -> gallery precision@5 (and chance: the mean fraction of relevant items)."""
    texts, q_labels = text_queries(labels, keys, template, where)
    g_labels = {k: [lab.get(k, "") for lab in labels] for k in keys}
    rel = label_relevance(q_labels, g_labels, keys)
    res = evaluate_embeddings(model.encode_text(texts).numpy(), gallery, rel, ks=(1, 5), n_bootstrap=0)
    counts = [int(rel.block(i, i + 1).sum()) for i in range(len(texts))]
    # chance: expected precision of a random ranking; ceiling: the best possible (a query with 3 relevant
    # items cannot score above 3/5), so a score is read against both.
    return {
        "precision@5": round(res.metrics["precision@5"].value, 4),
        "chance": round(float(np.mean(counts)) / gallery.shape[0], 4),
        "ceiling": round(float(np.mean([min(c, 5) / 5 for c in counts])), 4),
        "queries": texts,
        "relevant_per_query": counts,
        "n_gallery": int(gallery.shape[0]),
    }


def mean_pooling(model: Any) -> Any:
    """The same model with parameter-free mean pooling instead of the attention adapter."""
    twin = copy.deepcopy(model)
    cfg = dataclasses.replace(model.config.adapter, pooling="mean")
    twin.adapter = SlicePoolingAdapter(model.config.embed_dim, cfg).to(model.device)
    return twin


def synthetic(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    summary = synthesize(work / "synth", args.studies, seed=args.seed)
    t_synth = time.perf_counter() - t0
    result = train(synthetic_recipe(args), summary.manifest, work / "model-synth", "radclip-tiny", device=args.device)
    t_train = time.perf_counter() - t0 - t_synth
    if result.plot is not None:  # the loss / validation-recall curves, next to the JSON
        shutil.copyfile(result.plot, args.out.with_suffix(".png"))
    found = scan(summary.manifest)
    # Held out: the val and test studies (val only feeds the logged validation metrics, never the weights);
    # test alone is ~10% of the studies, too few volumes per query for precision@5 to reach 1.
    test = [it for it in found.items if it.split in ("val", "test") and it.kind == "volume"]
    volumes = _decode(test, found.root, result.model)
    labels = [_labels(it) for it in test]
    out: dict[str, Any] = {
        "studies": args.studies,
        "held_out_volumes": len(test),
        "train_seconds": round(t_train, 1),
        "synth_seconds": round(t_synth, 1),
        "history": list(result.history),
    }
    models = {
        "trained": result.model,
        "trained_mean_pooling": mean_pooling(result.model),
        "untrained": load_model("radclip-tiny", device=args.device),
    }
    for name, model in models.items():
        gallery = model.encode_volumes(volumes).numpy()
        out[name] = {
            "region_modality": precision_at_5(model, gallery, labels, ("region", "modality"), RM_TEMPLATE),
            "lesion_position": precision_at_5(
                model, gallery, labels, ("lesion", "position"), POSITION_TEMPLATE, where={"lesion": "present"}
            ),
        }
    attn = out["trained"]["lesion_position"]["precision@5"]
    mean = out["trained_mean_pooling"]["lesion_position"]["precision@5"]
    out["goals"] = {
        "region_modality_p5>=0.8": out["trained"]["region_modality"]["precision@5"] >= 0.8,
        "attention_minus_mean_p5": round(attn - mean, 4),
        "attention_beats_mean_by>=0.2": attn - mean >= 0.2,
    }
    return out


def vqa_rad(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from radretrieve.datasets.vqa_rad import convert_vqa_rad

    manifest = work / "vqa" / "manifest.csv"
    convert_vqa_rad(Path(args.vqa), manifest, seed=args.seed)
    t0 = time.perf_counter()
    result = train(vqa_recipe(args), manifest, work / "model-vqa", "radclip-tiny", device=args.device)
    t_train = time.perf_counter() - t0
    found = scan(manifest)
    test = [it for it in found.items if it.split == "test"]
    images = torch.cat(_decode(test, found.root, result.model))
    labels = [_labels(it) for it in test]
    out: dict[str, Any] = {
        "test_images": len(test),
        "train_seconds": round(t_train, 1),
        "history": list(result.history),
    }
    for name, model in {"trained": result.model, "untrained": load_model("radclip-tiny", device=args.device)}.items():
        gallery = model.encode_images(images).numpy()
        out[name] = precision_at_5(model, gallery, labels, ("region", "modality"), RM_TEMPLATE)
        # Organ alone: every test image has one (modality is known for only about a third), so more signal.
        out[name]["organ_only"] = precision_at_5(model, gallery, labels, ("region",), "{region}")
    out["chance"] = out["trained"]["chance"]
    out["goals"] = {
        "above_untrained": out["trained"]["precision@5"] > out["untrained"]["precision@5"],
        "above_chance": out["trained"]["precision@5"] > out["chance"],
    }
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=400, help="synthetic studies (10%% become the held-out test set)")
    p.add_argument("--epochs-2d", type=int, default=8)
    p.add_argument("--epochs-3d", type=int, default=30)
    p.add_argument("--vqa-epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=5e-4, help="image (and text) encoder LR")
    p.add_argument("--adapter-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--vqa", default=str(SHARED_DATA / "vqa-rad"), help="VQA-RAD folder (vqa_rad.json + images/)")
    p.add_argument("--skip", choices=("synthetic", "vqa"), action="append", default=[])
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    p.add_argument("--out", type=Path, default=RESULTS / "train_quality.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        # paths are recorded by name only: result files are committed and must not carry this machine's paths
        payload: dict[str, Any] = {
            "args": {
                k: v.name if isinstance(v, Path) else (Path(v).name if k == "vqa" else v) for k, v in vars(args).items()
            }
        }
        if "synthetic" not in args.skip:
            payload["synthetic"] = synthetic(args, work)
        if "vqa" not in args.skip:
            payload["vqa_rad"] = vqa_rad(args, work)
        payload["recipe"] = {"synthetic": synthetic_recipe(args).to_dict(), "vqa_rad": vqa_recipe(args).to_dict()}
    path = write_json("train_quality", payload, args.out)
    brief = {
        k: {m: v[m] for m in ("trained", "trained_mean_pooling", "untrained", "goals", "chance") if m in v}
        for k, v in payload.items()
        if k in ("synthetic", "vqa_rad")
    }
    print(json.dumps(_without_queries(brief), indent=1))
    print(f"wrote {path}")


def _without_queries(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_queries(v) for k, v in obj.items() if k != "queries"}
    return obj


if __name__ == "__main__":
    main()
