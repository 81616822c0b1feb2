"""Training quality of the RadCLIP recipe (radclip-tiny, CPU-sized): does `radretrieve train` learn retrieval?

1. Synthetic archive, held-out `val` + `test` studies, text -> volume precision@5 (label-aware: a hit counts when its
   labels match the query's):
   - region-and-modality queries ("chest CT"), relevant = same region and modality (goal >= 0.8);
   - lesion-position queries ("lesion present, upper"), relevant = lesion present at that position along the
     slice axis; the trained attention adapter against mean pooling over the same slice embeddings (goal:
     attention - mean >= 0.2). The synthetic anatomy is constant along Z, so position shows only in slice order.
2. VQA-RAD (the sample data's vqa-rad/, converted by radretrieve.datasets.vqa_rad; split by image, seeded): text ->
   image precision@5 for organ-and-modality queries on the test images, trained vs untrained vs chance.
3. VQA-RAD, `bench retrieval --protocol labels` on the test split (one prompt-ensemble query per organ and per
   modality where known; P@10 / P@50 per class with gallery-bootstrap 95% CIs): untrained, trained as in 2,
   trained with 2D augmentation, and with augmentation + label-prompt texts + keep-best, against chance.
   Goals: organ P@10 >= 0.9, modality P@10 >= 0.8 (means over the classes).

    python -m benchmarks.train_quality    # ~8 min on 2 busy CPU cores; writes benchmarks/results/train_quality.json
                                          # and train_quality.png (loss and validation recall of the synthetic run)
    python -m benchmarks.train_quality --skip synthetic --keep-previous   # VQA-RAD parts only; the synthetic
                                          # section is kept from the previous JSON (and marked so)
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
from radretrieve.evaluation.protocols import protocol_tables
from radretrieve.evaluation.retrieval import BenchOptions
from radretrieve.evaluation.sources import embeddings_from_model
from radretrieve.models.adapter import SlicePoolingAdapter
from radretrieve.synth import synthesize
from radretrieve.training import (
    AugmentConfig,
    CheckpointConfig,
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
    """The plain VQA-RAD recipe (no augmentation, captions + one label template, last epoch kept)."""
    return TrainConfig(
        seed=args.seed,
        text=TextConfig(source="mixed", templates=(RM_TEMPLATE,)),
        data=DataConfig(val_fraction=0.1),
        image_stage=ImageStageConfig(
            epochs=args.vqa_epochs, batch_size=32, lr=args.lr, train_text=True, text_lr=args.lr
        ),
        volume_stage=VolumeStageConfig(epochs=0),
    )


# The variants of part 3, each the plain recipe plus some of issue 14's training options.
def vqa_variants(args: argparse.Namespace) -> dict[str, TrainConfig]:
    plain = vqa_recipe(args)
    augment = plain.replace(augment=AugmentConfig(enabled=True))
    full = augment.replace(
        text=dataclasses.replace(plain.text, prompt_tasks=("organ", "modality")),
        checkpoint=CheckpointConfig(keep_best=True, best_metric="mAP"),
    )
    return {"trained": plain, "trained_augment": augment, "trained_augment_prompts_best": full}


def labels_protocol(model: Any, manifest: Path, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """`bench retrieval --protocol labels` on the test split: per task, the mean over classes and per class."""
    emb = embeddings_from_model(model, manifest, "test")
    options = BenchOptions(label_sets=(("organ",), ("modality",)), n_bootstrap=n_bootstrap, seed=seed)
    out: dict[str, Any] = {}
    for table in protocol_tables("labels", emb, options, encode_text=model.encode_text):
        task = table.title.split(": ", 1)[1]
        runs = {}
        for name, run in table.runs.items():
            runs[name] = {m: {k: _r(v) for k, v in e.items()} for m, e in run["metrics"].items()}
        mean = next(v for k, v in runs.items() if "mean over" in k)
        out[task] = {"n_gallery": table.n_gallery, "unit": table.unit, "chance": table.chance, "mean": mean}
        out[task]["classes"] = {k: v for k, v in runs.items() if "mean over" not in k}
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def vqa_labels(args: argparse.Namespace, work: Path, manifest: Path, trained: Any) -> dict[str, Any]:
    """Part 3: the labels protocol for the untrained model and every training variant."""
    out: dict[str, Any] = {"bootstrap": args.bootstrap, "seconds": {}}
    models = {"untrained": load_model("radclip-tiny", device=args.device)}
    for name, cfg in vqa_variants(args).items():
        if name == "trained":
            models[name] = trained  # the run of part 2: the same recipe and seed
            continue
        t0 = time.perf_counter()
        result = train(cfg, manifest, work / f"model-{name}", "radclip-tiny", device=args.device)
        out["seconds"][name] = round(time.perf_counter() - t0, 1)
        out.setdefault("kept_epochs", {})[name] = result.best
        models[name] = result.model
    for name, model in models.items():
        out[name] = labels_protocol(model, manifest, args.bootstrap, args.seed)
    first = next(iter(models))
    out["chance"] = {task: out[first][task]["chance"] for task in out[first]}
    out["goals"] = {
        name: {
            "organ_p10>=0.9": out[name].get("organ", {}).get("mean", {}).get("P@10", {}).get("value", 0) >= 0.9,
            "modality_p10>=0.8": out[name].get("modality", {}).get("mean", {}).get("P@10", {}).get("value", 0) >= 0.8,
        }
        for name in models
    }
    return out


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
    out["labels_protocol"] = vqa_labels(args, work, manifest, result.model)
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
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the labels-protocol CIs")
    p.add_argument(
        "--keep-previous", action="store_true", help="keep the sections of --out that --skip leaves out (marked)"
    )
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
        payload["recipe"] |= {f"vqa_rad_{k}": v.to_dict() for k, v in vqa_variants(args).items() if k != "trained"}
    if args.keep_previous:
        payload = _merge_previous(payload, args.out, args.skip)
    path = write_json("train_quality", payload, args.out)
    brief = {
        k: {m: v[m] for m in ("trained", "trained_mean_pooling", "untrained", "goals", "chance") if m in v}
        for k, v in payload.items()
        if k in ("synthetic", "vqa_rad")
    }
    if "vqa_rad" in payload and "labels_protocol" in payload["vqa_rad"]:
        lp = payload["vqa_rad"]["labels_protocol"]
        brief["vqa_rad_labels_p10"] = {
            name: {task: lp[name][task]["mean"]["P@10"] for task in lp[name]}
            for name in lp
            if name not in ("bootstrap", "seconds", "kept_epochs", "chance", "goals")
        }
        brief["vqa_rad_labels_chance"] = lp["chance"]
    print(json.dumps(_without_queries(brief), indent=1))
    print(f"wrote {path}")


def _merge_previous(payload: dict[str, Any], path: Path, skipped: Sequence[str]) -> dict[str, Any]:
    """The sections this run skipped, taken from the previous result file, with the run they came from."""
    if not path.is_file():
        return payload
    previous = json.loads(path.read_text())
    keys = {"synthetic": "synthetic", "vqa": "vqa_rad"}
    kept = [keys[s] for s in skipped if keys[s] in previous]
    for key in kept:
        payload[key] = previous[key]
    if kept:
        payload["kept_from_previous_run"] = {"sections": kept, "when": previous.get("when"), "args": previous["args"]}
    return payload


def _without_queries(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_queries(v) for k, v in obj.items() if k != "queries"}
    return obj


if __name__ == "__main__":
    main()
