"""Self-contained GPU check: needs only PyTorch and numpy (faiss is used when importable). No radretrieve
package import (the torch search backend, indexers/torch_exact.py, is loaded from its file: it needs only
numpy and torch), no network, no weights: throughput does not depend on weight values, so the towers are
randomly initialised.

Measures, writing OUT/gpu_check.json after every phase (a hard stop still leaves the finished ones):

1. image encode throughput (images/s) of CLIP ViT-B/16 and ViT-L/14 image towers in bf16, eager;
2. volume throughput: ViT-B/16 on 32-slice volumes + a small attention pooling layer (RadCLIP's adapter shape);
3. flat inner-product search over 1M x 512 fp16 vectors: faiss GPU if importable, and a torch matmul + top-k
   baseline (always, with its recall@10 against an fp32 search);
4. radretrieve's torch exact backend (indexers/torch_exact.py: what flat search and re-ranking use where faiss
   has no GPU) over the same 1M x 512 fp16 vectors, at query batches 1..1024, against the roofline bound from
   this device's measured copy bandwidth and fp16 matmul rate: each batch must read all n x 512 x 2 bytes
   (bandwidth bound, what single queries hit) and do 2 x n x 512 x batch flops (compute bound);
5. the same encoders under torch.compile (compile time reported separately), while the time budget lasts.

    python benchmarks/gpu_check.py --out OUT               # an H100: well under 8 minutes
    python benchmarks/gpu_check.py --out OUT --device cpu --tiny   # a smoke test in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# clip-retrieval's published inference speeds (one A100; cited with their source in docs/SCALE.md): the numbers to beat.
REFERENCE = {"source": "clip-retrieval README, images/s per A100", "ViT-B-16": 1100.0, "ViT-L-14": 312.0}


@dataclass(frozen=True)
class VitShape:
    """A CLIP ViT image tower's shape (open_clip / OpenAI CLIP)."""

    name: str  # model name
    image_size: int  # input pixels per side
    patch: int  # patch size (conv stride)
    width: int  # transformer width
    layers: int  # transformer blocks
    heads: int  # attention heads
    embed_dim: int  # output (joint embedding) dimension
    batch: int  # images per forward pass when measuring


SHAPES = {
    "ViT-B-16": VitShape("ViT-B-16", 224, 16, 768, 12, 12, 512, 256),
    "ViT-L-14": VitShape("ViT-L-14", 224, 14, 1024, 24, 16, 768, 128),
}
TINY = {
    "ViT-B-16": VitShape("tiny-B", 32, 8, 64, 2, 4, 32, 8),
    "ViT-L-14": VitShape("tiny-L", 28, 7, 96, 2, 4, 48, 8),
}


class Block(nn.Module):
    """Pre-LN transformer block; attention through scaled_dot_product_attention (flash kernels on GPU)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, w)
        x = x + self.proj(attn)
        return x + self.mlp(self.ln_2(x))


class VisionTower(nn.Module):
    """CLIP's image tower: patch conv, class token, learned positions, blocks, LN, projection of the CLS token."""

    def __init__(self, s: VitShape) -> None:
        super().__init__()
        grid = s.image_size // s.patch
        self.conv = nn.Conv2d(3, s.width, s.patch, s.patch, bias=False)
        self.cls = nn.Parameter(torch.randn(s.width) * 0.02)
        self.pos = nn.Parameter(torch.randn(grid * grid + 1, s.width) * 0.01)
        self.ln_pre, self.ln_post = nn.LayerNorm(s.width), nn.LayerNorm(s.width)
        self.blocks = nn.Sequential(*[Block(s.width, s.heads) for _ in range(s.layers)])
        self.proj = nn.Linear(s.width, s.embed_dim, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        x = self.conv(images).flatten(2).transpose(1, 2)  # [B, grid^2, width]
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1) + self.pos.to(x.dtype)
        x = self.blocks(self.ln_pre(x))
        return F.normalize(self.proj(self.ln_post(x[:, 0])), dim=-1)


class SlicePooling(nn.Module):
    """RadCLIP-style adapter: learned slice positions, one self-attention layer, mean over slices."""

    def __init__(self, dim: int, slices: int, heads: int = 8) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(slices, dim))
        self.layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)

    def forward(self, slices: Tensor) -> Tensor:  # [V, S, D] -> [V, D]
        return F.normalize(self.layer(slices + self.pos.to(slices.dtype)).mean(dim=1), dim=-1)


class Check:
    """Runs phases against a time budget and keeps the JSON up to date."""

    def __init__(self, out: Path, budget_s: float, settings: dict[str, Any]) -> None:
        self.out, self.deadline, self.started = out, time.monotonic() + budget_s, time.monotonic()
        self.data: dict[str, Any] = {
            "benchmark": "gpu_check",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine(),
            "settings": settings,
            "reference": REFERENCE,
            "encode": [],
            "volume": [],
            "search": [],
            "skipped": [],
            "errors": [],
        }
        self.save()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def phase(self, name: str, needs_s: float, fn: Callable[[], Any], into: str) -> None:
        """Run ``fn`` if ``needs_s`` seconds are left; its result goes to ``data[into]``, an error to ``errors``."""
        if self.left() < needs_s:
            self.data["skipped"].append(
                {"phase": name, "reason": f"time budget: {self.left():.0f} s left, needs ~{needs_s:.0f} s"}
            )
        else:
            try:
                self.data[into].append(fn())
            except Exception as exc:  # noqa: BLE001 - one failed phase (OOM, no compiler) must not stop the rest
                self.data["errors"].append({"phase": name, "error": f"{type(exc).__name__}: {str(exc)[:500]}"})
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        log(f"{name}: done ({time.monotonic() - self.started:.0f} s elapsed)")
        self.save()

    def save(self) -> None:
        self.data["seconds"] = round(time.monotonic() - self.started, 1)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / "gpu_check.json")


def log(line: str) -> None:
    print(f"[gpu_check] {line}", flush=True)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cuda": torch.version.cuda,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / 2**30, 1),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], Any], device: torch.device, warmup: int, min_s: float) -> tuple[float, int]:
    """(seconds per call, calls timed): ``warmup`` untimed calls, then calls until ``min_s`` has passed."""
    for _ in range(warmup):
        fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return elapsed / calls, calls


def encode(shape: VitShape, device: torch.device, dtype: torch.dtype, compiled: bool, min_s: float) -> dict[str, Any]:
    model = VisionTower(shape).to(device=device, dtype=dtype).eval()
    images = torch.randn(shape.batch, 3, shape.image_size, shape.image_size, device=device, dtype=dtype)
    run = torch.compile(model) if compiled else model
    with torch.inference_mode():
        start = time.perf_counter()
        run(images)  # the first call compiles (and warms up the eager kernels)
        sync(device)
        first_s = time.perf_counter() - start
        per_call, calls = rate(lambda: run(images), device, warmup=2, min_s=min_s)
    ips = shape.batch / per_call
    ref = REFERENCE.get(shape.name)
    return {
        "model": shape.name,
        "dtype": str(dtype).removeprefix("torch."),
        "compiled": compiled,
        "batch": shape.batch,
        "images_per_s": round(ips, 1),
        "first_call_s": round(first_s, 2),
        "calls_timed": calls,
        "x_reference_a100": round(ips / ref, 2) if ref else None,
    }


def volumes(
    shape: VitShape, device: torch.device, dtype: torch.dtype, slices: int, n_vol: int, min_s: float
) -> dict[str, Any]:
    """Volumes/s: all slices of ``n_vol`` volumes through the tower in one batch, then the pooling layer."""
    tower = VisionTower(shape).to(device=device, dtype=dtype).eval()
    pool = (
        SlicePooling(shape.embed_dim, slices, heads=8 if shape.embed_dim % 8 == 0 else 4)
        .to(device=device, dtype=dtype)
        .eval()
    )
    vols = torch.randn(n_vol * slices, 3, shape.image_size, shape.image_size, device=device, dtype=dtype)
    emb = torch.randn(n_vol, slices, shape.embed_dim, device=device, dtype=dtype)
    with torch.inference_mode():
        full, calls = rate(lambda: pool(tower(vols).view(n_vol, slices, -1)), device, warmup=2, min_s=min_s)
        pool_only, _ = rate(lambda: pool(emb), device, warmup=2, min_s=min(min_s, 1.0))
    return {
        "model": shape.name,
        "dtype": str(dtype).removeprefix("torch."),
        "slices_per_volume": slices,
        "volumes_per_batch": n_vol,
        "volumes_per_s": round(n_vol / full, 2),
        "slices_per_s": round(n_vol * slices / full, 1),
        "pooling_fraction": round(pool_only / full, 4),
        "calls_timed": calls,
    }


def _vectors(n: int, dim: int, device: torch.device, seed: int) -> Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return F.normalize(torch.randn(n, dim, device=device, generator=g), dim=-1)


def search_torch(n: int, dim: int, n_q: int, k: int, device: torch.device, min_s: float) -> dict[str, Any]:
    """fp16 matmul + top-k per batch of 1024 queries; recall@k of its ids against an fp32 search."""
    base32 = _vectors(n, dim, device, 0)
    base = base32.half()
    queries = _vectors(n_q, dim, device, 1)
    batch = min(1024, n_q)

    def run() -> Tensor:
        return torch.cat(
            [(queries[i : i + batch].half() @ base.T).topk(k, dim=1).indices for i in range(0, n_q, batch)]
        )

    per_call, calls = rate(run, device, warmup=1, min_s=min_s)
    check = min(256, n_q)
    exact = (queries[:check] @ base32.T).topk(k, dim=1).indices
    got = run()[:check]
    recall = (got[:, :, None] == exact[:, None, :]).any(dim=2).float().mean().item()
    return {
        "backend": "torch-matmul-topk",
        "n": n,
        "dim": dim,
        "dtype": "float16",
        "queries": n_q,
        "k": k,
        "query_batch": batch,
        "qps": round(n_q / per_call, 1),
        f"recall@{k}_vs_fp32": round(recall, 4),
        "calls_timed": calls,
    }


def load_torch_exact() -> Any:
    """indexers/torch_exact.py as a standalone module (the indexers package itself needs pyarrow, duckdb...)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "indexers" / "torch_exact.py"
    spec = importlib.util.spec_from_file_location("radretrieve_torch_exact", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def roofline(device: torch.device, tiny: bool, min_s: float) -> dict[str, float]:
    """This device's copy bandwidth (bytes/s, read + write counted) and matmul rate (flop/s) in the search dtype."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    src = torch.empty((64 if tiny else 2048) << 20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    per_copy, _ = rate(lambda: dst.copy_(src), device, warmup=2, min_s=min(min_s, 1.0))
    side = 512 if tiny or device.type != "cuda" else 8192
    a = torch.randn(side, side, device=device, dtype=dtype)
    per_mm, _ = rate(lambda: a @ a, device, warmup=2, min_s=min(min_s, 1.0))
    return {"copy_bytes_per_s": 2 * src.numel() / per_copy, "matmul_flop_per_s": 2 * side**3 / per_mm}


def search_backend(n: int, dim: int, k: int, device: torch.device, tiny: bool, min_s: float) -> dict[str, Any]:
    """QPS of indexers/torch_exact.TorchExact (ids mapped, results back on the host) per query batch, and the
    fraction of the roofline bound it reaches; recall@k of its ids against an fp32 torch search."""
    torch_exact = load_torch_exact()
    roof = roofline(device, tiny, min_s)
    base = _vectors(n, dim, device, 0)
    ids = torch.arange(n, dtype=torch.int64).numpy() * 7 + 3  # ids are not positions
    index = torch_exact.TorchExact(base.cpu().numpy(), ids, str(device))
    itemsize = index.table.vectors.element_size()
    queries = _vectors(1024, dim, device, 1).cpu().numpy()
    rows = []
    for batch in (1, 16, 256, 1024):
        q = queries[:batch]
        per_call, calls = rate(lambda q=q: index.search(q, k), device, warmup=2, min_s=min_s)
        read_s = n * dim * itemsize / (roof["copy_bytes_per_s"] / 2)  # one read of the table
        math_s = 2 * n * dim * batch / roof["matmul_flop_per_s"]
        bound_qps = batch / max(read_s, math_s)
        rows.append(
            {
                "query_batch": batch,
                "qps": round(batch / per_call, 1),
                "bound_qps": round(bound_qps, 1),
                "bound": "bandwidth" if read_s >= math_s else "compute",
                "fraction_of_bound": round(batch / per_call / bound_qps, 3),
                "calls_timed": calls,
            }
        )
    check = min(256, len(queries))
    exact = (torch.from_numpy(queries[:check]).to(device) @ base.T).topk(k, dim=1).indices.cpu().numpy()
    got = (index.search(queries[:check], k)[1] - 3) // 7
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), exact.tolist())]))
    return {
        "backend": "radretrieve-torch-exact",
        "n": n,
        "dim": dim,
        "dtype": str(index.table.dtype).removeprefix("torch."),
        "k": k,
        "copy_gb_per_s": round(roof["copy_bytes_per_s"] / 1e9, 1),
        "matmul_tflop_per_s": round(roof["matmul_flop_per_s"] / 1e12, 2),
        "batches": rows,
        f"recall@{k}_vs_fp32": round(recall, 4),
    }


def search_faiss(n: int, dim: int, n_q: int, k: int, device: torch.device, min_s: float) -> dict[str, Any]:
    import faiss  # optional: the check runs without it

    if device.type != "cuda" or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        raise RuntimeError("faiss is importable but has no GPU support here (faiss-cpu?)")
    res = faiss.StandardGpuResources()
    cfg = faiss.GpuIndexFlatConfig()
    cfg.useFloat16 = True  # store the 1M x 512 base as fp16, as the torch baseline does
    index = faiss.GpuIndexFlatIP(res, dim, cfg)
    index.add(_vectors(n, dim, device, 0).cpu().numpy())
    queries = _vectors(n_q, dim, device, 1).cpu().numpy()
    per_call, calls = rate(lambda: index.search(queries, k), torch.device("cpu"), warmup=1, min_s=min_s)
    return {
        "backend": "faiss-gpu-flat-ip",
        "faiss": faiss.__version__,
        "n": n,
        "dim": dim,
        "dtype": "float16",
        "queries": n_q,
        "k": k,
        "qps": round(n_q / per_call, 1),
        "calls_timed": calls,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda | cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny towers and 10k vectors (smoke test, any device)")
    ap.add_argument("--budget-s", type=float, default=400.0, help="start no phase after this many seconds")
    ap.add_argument("--min-s", type=float, default=3.0, help="seconds each measurement runs for")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="auto: on for cuda")
    ap.add_argument("--vectors", type=int, default=None, help="search base size (default 1M; 10k with --tiny)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no GPU (use --device cpu --tiny for a smoke test)")
    shapes = TINY if args.tiny else SHAPES
    n_vectors = args.vectors or (10_000 if args.tiny else 1_000_000)
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    dtype = torch.bfloat16
    torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 recall reference only; encoders run in bf16
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {
        "device": str(device),
        "tiny": args.tiny,
        "min_s": args.min_s,
        "budget_s": args.budget_s,
        "compile": compile_on,
        "shapes": {k: asdict(v) for k, v in shapes.items()},
    }
    check = Check(args.out, args.budget_s, settings)
    t = args.min_s
    for name, shape in shapes.items():
        check.phase(f"encode {name} eager", 3 * t, lambda s=shape: encode(s, device, dtype, False, t), "encode")
    b16 = shapes["ViT-B-16"]
    n_vol = 2 if args.tiny else 8
    check.phase("volumes ViT-B-16 x32", 3 * t, lambda: volumes(b16, device, dtype, 32, n_vol, t), "volume")
    n_q = 256 if args.tiny else 8192
    check.phase("search torch", 3 * t, lambda: search_torch(n_vectors, 512, n_q, 10, device, t), "search")
    check.phase("search faiss", 3 * t, lambda: search_faiss(n_vectors, 512, n_q, 10, device, t), "search")
    # short timings (4 batches x <= 1.5 s): the compiled-encoder phases after it need most of the budget
    backend = lambda: search_backend(n_vectors, 512, 10, device, args.tiny, min(t, 1.5))  # noqa: E731
    check.phase("search torch backend", 4 * min(t, 1.5) + 6, backend, "search")
    if compile_on:
        for name, shape in shapes.items():
            need = 60.0 if args.tiny else (90.0 if name == "ViT-B-16" else 150.0)
            check.phase(f"encode {name} compiled", need, lambda s=shape: encode(s, device, dtype, True, t), "encode")
    else:
        check.data["skipped"].append({"phase": "torch.compile", "reason": f"--compile {args.compile} on {device.type}"})
    check.save()
    for row in check.data["encode"]:
        ref = f" (x{row['x_reference_a100']} clip-retrieval's A100)" if row["x_reference_a100"] else ""
        log(f"{row['model']} {'compiled' if row['compiled'] else 'eager'}: {row['images_per_s']} images/s{ref}")
    for row in check.data["search"]:
        for b in row.get("batches", []):
            log(
                f"{row['backend']} batch {b['query_batch']}: {b['qps']} QPS, "
                f"{b['fraction_of_bound']:.0%} of the {b['bound']} bound ({b['bound_qps']} QPS)"
            )
    log(f"wrote {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
