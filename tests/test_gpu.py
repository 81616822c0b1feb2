"""GPU paths against the CPU as the reference: bf16-autocast encoders, training on CUDA, bulk indexing on CUDA.

Skipped without a CUDA device (the project's CPU test run collects and skips them). On a GPU machine:

    python -m pytest -q tests/test_gpu.py

Uses the tiny registry model (random init, fixed seed) and small synthetic archives only: no sample data
beside the repo, no network. The GPU encodes under bf16 autocast, so embeddings are compared by cosine.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

GPU = "cuda"  # the device under test; the CPU runs of the same calls are the reference
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MIN_COS = 0.99  # row cosine GPU vs CPU (bf16 autocast vs float32)
# Random-init embeddings of different inputs share one dominant direction (row cosines of 0.99 between
# *different* images), so rows are also compared after removing the CPU rows' mean: this part is what
# tells inputs apart, and a GPU result that kept only the common direction fails here.
MIN_CENTRED = 0.9
QUIET: dict[str, Any] = {"progress": False}


# ------------------------------------------------------------------ helpers
def assert_rows_match(
    got: torch.Tensor, ref: torch.Tensor, what: str, min_cos: float = MIN_COS, min_centred: float = MIN_CENTRED
) -> None:
    """`got` and `ref`: float [N, D] embeddings of the same N inputs; row by row they must agree."""
    got, ref = torch.as_tensor(got).float(), torch.as_tensor(ref).float()
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    assert torch.allclose(got.norm(dim=1), torch.ones(len(got)), atol=1e-3), f"{what}: rows not L2-normalised"
    cos = F.cosine_similarity(got, ref, dim=1)
    assert cos.min() > min_cos, f"{what}: row cosine min {cos.min():.5f} (rows: {[round(c, 5) for c in cos.tolist()]})"
    if len(ref) >= 3:
        mu = ref.mean(0, keepdim=True)
        centred = F.cosine_similarity(got - mu, ref - mu, dim=1)
        assert centred.min() > min_centred, (
            f"{what}: centred row cosine min {centred.min():.4f} (rows: {[round(c, 4) for c in centred.tolist()]})"
        )


def _inputs(sizes: list[int], seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, 3, 64, 64, generator=g) for s in sizes]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _delta_cosine(a: dict, b: dict, base: dict, keys: list[str]) -> float:
    """Cosine between the weight changes (a - base) and (b - base) over `keys`, flattened."""
    da = torch.cat([(a[k].float() - base[k].float()).reshape(-1) for k in keys])
    db = torch.cat([(b[k].float() - base[k].float()).reshape(-1) for k in keys])
    return float(F.cosine_similarity(da, db, dim=0))


def _amplified_adapter_model(device: str) -> Any:
    """radclip-tiny with a large adapter output projection: the attention part dominates the volume embedding
    (at the default init it is a small correction to the slice mean, which would hide masking errors)."""
    from radretrieve.models.loading import init_model
    from radretrieve.models.registry import get_model_config

    cfg = get_model_config("radclip-tiny")
    cfg = cfg.replace(adapter=dataclasses.replace(cfg.adapter, init_std=0.3))
    return init_model(cfg).to(device).eval()


# ------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def cpu_model():
    from radretrieve import load_model

    return load_model("radclip-tiny", device="cpu")


@pytest.fixture(scope="module")
def gpu_model():
    from radretrieve import load_model

    return load_model("radclip-tiny", device=GPU)


def test_gpu_model_is_placed_and_has_the_cpu_fingerprint(cpu_model, gpu_model) -> None:
    assert gpu_model.device.type == torch.device(GPU).type
    assert all(p.device.type == torch.device(GPU).type for p in gpu_model.parameters())
    # out dirs built on a GPU must be searchable with the same model on a CPU machine
    assert gpu_model.fingerprint == cpu_model.fingerprint


def test_gpu_encoders_run_under_bf16_autocast(gpu_model) -> None:
    seen: list[torch.dtype] = []
    layer = gpu_model.clip.visual.transformer.resblocks[0].mlp.c_fc
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        out = gpu_model.encode_images(_inputs([3], seed=0)[0])
    finally:
        handle.remove()
    assert seen and set(seen) == {torch.bfloat16}, seen
    assert out.dtype == torch.float32 and out.device.type == "cpu"


def test_encode_text_matches_cpu(cpu_model, gpu_model) -> None:
    texts = [
        "axial CT of the head",
        "chest x-ray, no acute findings",
        "abdomen MR with a hypodense liver lesion",
        "x",
        "lesion " * 200,
        "Ödem links, naïve café",
        "",
    ] * 10  # 70 texts: two chunks of max_batch 64
    assert_rows_match(gpu_model.encode_text(texts), cpu_model.encode_text(texts), "encode_text")


def test_encode_images_matches_cpu(cpu_model, gpu_model) -> None:
    (images,) = _inputs([70], seed=1)  # more than max_batch (64): two image-tower chunks
    assert_rows_match(gpu_model.encode_images(images), cpu_model.encode_images(images), "encode_images")


def test_encode_volumes_matches_cpu(cpu_model, gpu_model) -> None:
    # one slice, short, long, longer than max_slices (interpolated positions) and than max_batch (chunks)
    vols = _inputs([1, 5, 33, 70, 12], seed=2)
    assert_rows_match(gpu_model.encode_volumes(vols), cpu_model.encode_volumes(vols), "encode_volumes")


def test_encode_mixed_matches_cpu_and_separate_calls(cpu_model, gpu_model) -> None:
    img_a, img_b, img_c = _inputs([1, 1, 1], seed=3)
    vol_a, vol_b = _inputs([5, 13], seed=4)
    arrays, kinds = [vol_a, img_a, vol_b, img_b, img_c], [True, False, True, False, False]
    mixed = gpu_model.encode_mixed(arrays, kinds)
    assert_rows_match(mixed, cpu_model.encode_mixed(arrays, kinds), "encode_mixed")
    assert_rows_match(
        mixed[[1, 3, 4]],
        gpu_model.encode_images(torch.cat([img_a, img_b, img_c])),
        "mixed vs images",
        min_cos=0.999,
        min_centred=0.95,
    )
    assert_rows_match(mixed[[0, 2]], gpu_model.encode_volumes([vol_a, vol_b]), "mixed vs volumes", min_cos=0.999)


def test_volume_padding_and_masks_on_gpu() -> None:
    cpu, gpu = _amplified_adapter_model("cpu"), _amplified_adapter_model(GPU)
    vols = _inputs([4, 30, 17, 9, 1], seed=5)
    # precondition: the adapter's attention output dominates, so a padding/mask error would show
    mean = F.normalize(torch.stack([F.normalize(cpu.encode_images(v), dim=-1).mean(0) for v in vols]), dim=-1)
    reference = cpu.encode_volumes(vols)
    assert F.cosine_similarity(reference, mean, dim=1).max() < 0.99
    alone = torch.cat([gpu.encode_volumes([v]) for v in vols])  # no padding at all
    batched = gpu.encode_volumes(vols)  # each volume padded to 30 slices
    assert_rows_match(alone, reference, "volumes alone (GPU) vs CPU")
    assert_rows_match(batched, reference, "volumes batched with padding (GPU) vs CPU")
    assert_rows_match(batched, alone, "batched vs alone (GPU)", min_cos=0.995)


# ------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def train_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radretrieve.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("train-synth"), 12, seed=1).manifest


def _recipe():
    from radretrieve.training import (
        CheckpointConfig,
        DataConfig,
        ImageStageConfig,
        TextConfig,
        TrainConfig,
        VolumeStageConfig,
    )

    # Both stages, gradient accumulation, frequent checkpoints; bf16 autocast on the GPU.
    return TrainConfig(
        seed=3,
        precision="bf16",
        text=TextConfig(source="mixed", templates=("{region} {modality}", "{region} {modality}, lesion {lesion}")),
        data=DataConfig(val_fraction=0.25, slices_per_volume=1),
        image_stage=ImageStageConfig(epochs=2, batch_size=4, grad_accum=2, lr=3e-4),
        volume_stage=VolumeStageConfig(epochs=2, batch_size=4),
        checkpoint=CheckpointConfig(every_steps=2, keep=50),
    )


def _train(archive: Path, out: Path, device: str, **kwargs: Any) -> tuple[Any, list[tuple[str, int, float]]]:
    from radretrieve.training import train

    steps: list[tuple[str, int, float]] = []
    result = train(
        _recipe(),
        archive,
        out,
        "radclip-tiny",
        device=device,
        on_step=lambda stage, step, _total, loss: steps.append((stage, step, loss)),
        **kwargs,
    )
    return result, steps


@pytest.fixture(scope="module")
def trained(train_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One uninterrupted run per device from the same initial weights; and those initial weights."""
    from radretrieve import load_model

    base = _state(load_model("radclip-tiny", device="cpu"))
    runs = {dev: _train(train_archive, tmp_path_factory.mktemp(f"train-{dev}"), dev) for dev in ("cpu", GPU)}
    return {"base": base, **runs}


def test_training_on_gpu_runs_with_finite_losses_like_cpu(trained) -> None:
    (gpu, gpu_steps), (cpu, cpu_steps) = trained[GPU], trained["cpu"]
    assert gpu.model.device.type == torch.device(GPU).type
    assert gpu.steps == cpu.steps == len(gpu_steps) > 4
    assert [(s, n) for s, n, _ in gpu_steps] == [(s, n) for s, n, _ in cpu_steps]
    assert all(math.isfinite(loss) for _, _, loss in gpu_steps), gpu_steps
    assert {r["stage"] for r in gpu.history} == {"2d", "3d"}
    assert all(math.isfinite(r["loss"]) for r in gpu.history), gpu.history
    # the first step sees the initial weights on both devices: only bf16 rounding differs
    first_gpu, first_cpu = gpu_steps[0][2], cpu_steps[0][2]
    assert abs(first_gpu - first_cpu) <= 0.03 * abs(first_cpu), (first_gpu, first_cpu)
    for (stage, _, lg), (_, _, lc) in zip(gpu_steps, cpu_steps):
        assert abs(lg - lc) <= 0.15 * abs(lc) + 0.05, (stage, lg, lc)  # few small steps: the runs stay close


def test_training_on_gpu_keeps_frozen_parameters_bit_identical(trained) -> None:
    from radretrieve import load_model
    from radretrieve.training.checkpoint import list_checkpoints, load_model_state

    base, (result, _) = trained["base"], trained[GPU]
    final = _state(result.model)
    stage_ends = [p for p in list_checkpoints(result.out) if '"stage": 1' in (p / "state.json").read_text()]
    assert stage_ends, "no checkpoint at the end of the 2D stage"
    model = load_model("radclip-tiny", device="cpu")
    load_model_state(stage_ends[0], model)
    after_2d = _state(model)
    text = [k for k in base if k.startswith("clip.") and not k.startswith("clip.visual.") and "logit" not in k]
    visual = [k for k in base if k.startswith("clip.visual.")]
    adapter = [k for k in base if k.startswith("adapter.")]
    assert text and visual and adapter
    for k in text:  # text encoder: frozen in both stages
        assert torch.equal(final[k], base[k]), k
    for k in adapter:  # adapter: untouched in the 2D stage
        assert torch.equal(after_2d[k], base[k]), k
    for k in visual:  # image encoder: frozen in the 3D stage
        assert torch.equal(final[k], after_2d[k]), k
    assert any(not torch.equal(after_2d[k], base[k]) for k in visual)  # the 2D stage trained it
    assert any(not torch.equal(final[k], after_2d[k]) for k in adapter)  # the 3D stage trained it
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())


def test_training_on_gpu_moves_the_weights_the_way_cpu_does(trained) -> None:
    base, (gpu, _), (cpu, _) = trained["base"], trained[GPU], trained["cpu"]
    g, c = _state(gpu.model), _state(cpu.model)
    for prefix in ("clip.visual.", "adapter."):
        keys = [k for k in base if k.startswith(prefix) and base[k].is_floating_point()]
        cos = _delta_cosine(g, c, base, keys)
        assert cos > 0.5, f"{prefix}: cosine of the GPU and CPU weight updates is {cos:.3f}"


def test_model_trained_on_gpu_loads_on_cpu(trained) -> None:
    from radretrieve import load_model

    result, _ = trained[GPU]
    loaded = load_model(str(result.out), device="cpu")
    assert loaded.fingerprint == result.fingerprint
    vols = _inputs([5, 3, 20], seed=6)
    assert_rows_match(result.model.encode_volumes(vols), loaded.encode_volumes(vols), "trained model GPU vs CPU")
    texts = ["head CT", "chest CT, lesion present", "abdomen MR"]
    assert_rows_match(result.model.encode_text(texts), loaded.encode_text(texts), "trained text GPU vs CPU")


def test_training_resumes_on_gpu(trained, train_archive: Path, tmp_path: Path) -> None:
    from radretrieve.training import Interrupted
    from radretrieve.training.checkpoint import list_checkpoints

    full, full_steps = trained[GPU]
    base = trained["base"]
    assert full.steps >= 3
    out = tmp_path / "resumed"
    # stop inside the 2D stage (optimizer state saved from the GPU and restored onto it), then inside the 3D stage
    for stop in (1, full.steps - 1):
        with pytest.raises(Interrupted):
            _train(train_archive, out, GPU, resume=True, stop_after_steps=stop)
    rng = torch.load(list_checkpoints(out)[-1] / "rng.pt", weights_only=True)
    if torch.device(GPU).type == "cuda":
        assert "cuda" in rng  # the CUDA generator is checkpointed too
    resumed, steps = _train(train_archive, out, GPU, resume=True)
    assert resumed.resumed_from == full.steps - 1 and resumed.steps == full.steps
    assert [(s, n) for s, n, _ in steps] == [(s, n) for s, n, _ in full_steps[-1:]]
    assert [(r["stage"], r["epoch"], r["step"]) for r in resumed.history] == [
        (r["stage"], r["epoch"], r["step"]) for r in full.history
    ]
    for a, b in zip(resumed.history, full.history):
        assert math.isclose(a["loss"], b["loss"], rel_tol=0.02, abs_tol=1e-3), (a, b)
    # GPU kernels need not be bitwise deterministic, so the weights must agree closely, not exactly
    got, expected = _state(resumed.model), _state(full.model)
    assert got.keys() == expected.keys()
    keys = [k for k in base if base[k].is_floating_point() and not torch.equal(expected[k], base[k])]
    assert keys
    cos = _delta_cosine(got, expected, base, keys)
    assert cos > 0.9, f"resumed vs uninterrupted GPU weight updates: cosine {cos:.4f}"


# ------------------------------------------------------------------ bulk indexing
@pytest.fixture(scope="module")
def index_archive_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radretrieve.synth import synthesize

    root = tmp_path_factory.mktemp("index-synth") / "a"
    synthesize(root, studies=6, seed=0)
    return root


@pytest.fixture(scope="module")
def indexed(index_archive_dir: Path, cpu_model, gpu_model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same archive indexed with the model on the CPU and on the GPU (decoding in this process)."""
    from pipelines.job import IndexOptions, index_archive

    outs = {}
    for name, model in (("cpu", cpu_model), (GPU, gpu_model)):
        outs[name] = tmp_path_factory.mktemp(f"index-{name}") / "o"
        index_archive(index_archive_dir, outs[name], model, IndexOptions(workers=0, studies_per_task=2, **QUIET))
    return outs


def _shard_rows(out: Path) -> dict[str, list[dict]]:
    """Shard file -> its rows, over the manifest's shards."""
    import pyarrow.parquet as pq

    from radretrieve.outdir.manifest import read_manifest

    return {entry.file: pq.read_table(out / entry.file).to_pylist() for entry in read_manifest(out).shards}


def _expected_ids(archive: Path) -> set[int]:
    from pipelines.plan import report_item_id
    from radretrieve.archive import scan

    result = scan(archive)
    return {it.item_id for it in result.items} | {report_item_id(s.key) for s in result.studies if s.report}


def test_index_on_gpu_writes_the_cpu_items_and_embeddings(indexed, index_archive_dir: Path, cpu_model) -> None:
    from radretrieve.outdir.manifest import read_manifest

    cpu_m, gpu_m = read_manifest(indexed["cpu"]), read_manifest(indexed[GPU])
    assert gpu_m.fingerprint == cpu_m.fingerprint == cpu_model.fingerprint
    assert gpu_m.preprocess_hash == cpu_m.preprocess_hash and gpu_m.dim == cpu_m.dim == 128
    assert [(s.file, s.task_id, s.rows, s.counts) for s in gpu_m.shards] == [
        (s.file, s.task_id, s.rows, s.counts) for s in cpu_m.shards
    ]
    assert not (indexed[GPU] / "errors").exists() or not any((indexed[GPU] / "errors").glob("*.jsonl"))
    cpu_rows, gpu_rows = _shard_rows(indexed["cpu"]), _shard_rows(indexed[GPU])
    assert cpu_rows.keys() == gpu_rows.keys()
    same = ("item_id", "kind", "study_key", "series_key", "source", "modality", "slice_count", "shape", "text")
    by_kind: dict[str, tuple[list, list]] = {}
    for file, rows in cpu_rows.items():
        assert [tuple(r[c] for c in same) for r in gpu_rows[file]] == [tuple(r[c] for c in same) for r in rows], file
        for rg, rc in zip(gpu_rows[file], rows):
            g, c = by_kind.setdefault(rc["kind"], ([], []))
            g.append(rg["embedding"])
            c.append(rc["embedding"])
    ids = {r["item_id"] for rows in gpu_rows.values() for r in rows}
    assert ids == _expected_ids(index_archive_dir)
    assert {"report", "volume"} <= set(by_kind)
    for kind, (g, c) in by_kind.items():
        assert_rows_match(torch.tensor(np.array(g)), torch.tensor(np.array(c)), f"index rows ({kind})")


def test_index_on_gpu_with_reader_processes_matches(indexed, index_archive_dir: Path, gpu_model, tmp_path) -> None:
    from pipelines.job import IndexOptions, index_archive

    out = tmp_path / "o"
    index_archive(index_archive_dir, out, gpu_model, IndexOptions(workers=2, studies_per_task=2, **QUIET))
    inline = {r["item_id"]: r for rows in _shard_rows(indexed[GPU]).values() for r in rows}
    pooled = {r["item_id"]: r for rows in _shard_rows(out).values() for r in rows}
    assert pooled.keys() == inline.keys()
    ids = sorted(inline)
    assert_rows_match(
        torch.tensor(np.array([pooled[i]["embedding"] for i in ids])),
        torch.tensor(np.array([inline[i]["embedding"] for i in ids])),
        "workers=2 vs workers=0 (GPU)",
        min_cos=0.999,
    )


def test_text_tower_written_by_a_gpu_job_encodes_like_the_gpu_model(indexed, gpu_model) -> None:
    from radretrieve.outdir.manifest import read_manifest
    from radretrieve.outdir.text_tower import load_text_tower

    fast = load_text_tower(indexed[GPU], read_manifest(indexed[GPU]).fingerprint)
    assert fast is not None, "text_tower.safetensors missing or written for another fingerprint"
    reports = sorted(
        (r for rows in _shard_rows(indexed[GPU]).values() for r in rows if r["kind"] == "report"),
        key=lambda r: r["item_id"],
    )
    assert len(reports) >= 3
    stored = torch.tensor(np.array([r["embedding"] for r in reports]))
    assert_rows_match(fast.encode_text([r["text"] for r in reports]), stored, "fast text encoder vs GPU shards")
