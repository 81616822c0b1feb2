"""CPU/GPU placement of faiss indexes and the argument limits of each device.

Every GPU call sits behind `num_gpus() > 0`, so a faiss-cpu build (which lacks the GPU symbols) or a
machine without a GPU never touches one. faiss GPU indexes answer at most k = 2048 and probe at most
nprobe = 2048 lists; asking for more is a user error on GPU, not a crash inside faiss.

Where CUDA is present but faiss sees no GPU (a faiss-cpu wheel next to a CUDA torch, the common case),
`place` keeps faiss on the CPU and names CUDA as the torch device: flat searches and IVF-PQ re-ranking
then run in torch (indexers/torch_exact.py), which has no k limit.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexers.errors import SearchArgError
from indexers.plan import SearchParams
from radretrieve.foundation.errors import RadRetrieveError

log = logging.getLogger(__name__)

GPU_MAX_K = 2048  # faiss GPU top-k selection limit
GPU_MAX_NPROBE = 2048  # faiss GPU IVF probe limit
DEVICES = ("auto", "cpu", "gpu")
NVIDIA_DRIVER = Path("/proc/driver/nvidia")  # present on Linux wherever the NVIDIA kernel driver is loaded


def num_gpus() -> int:
    """GPUs visible to faiss; 0 for faiss-cpu builds."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


@dataclass(frozen=True)
class Placement:
    """Where an index's searches run."""

    faiss: str  # "cpu" | "gpu": the faiss index (and its limits)
    torch: str | None  # torch device for exact search and re-ranking ("cuda"; "cpu" in tests); None: not used


def torch_cuda() -> bool:
    """Whether torch is installed and sees a CUDA device. Imports torch only where it may: already imported,
    or an NVIDIA driver is loaded (so a CPU-only `search` or `info` does not pay torch's import time)."""
    if "torch" not in sys.modules and (importlib.util.find_spec("torch") is None or not NVIDIA_DRIVER.exists()):
        return False
    import torch

    return bool(torch.cuda.is_available())


def place(device: str = "auto") -> Placement:
    """'auto' and 'gpu': faiss GPU when faiss sees one, else torch on CUDA when torch sees it, else (auto)
    the CPU; 'gpu' with neither is an error. 'cpu': faiss on the CPU, no torch."""
    if device not in DEVICES:
        raise RadRetrieveError(f"unknown device {device!r} (choose from {', '.join(DEVICES)})")
    if device == "cpu":
        return Placement("cpu", None)
    if num_gpus() > 0:
        return Placement("gpu", None)
    if torch_cuda():
        log.info("faiss sees no GPU: exact search and re-ranking run in torch on CUDA")
        return Placement("cpu", "cuda")
    if device == "gpu":
        raise RadRetrieveError("--device gpu: no GPU visible to faiss or torch (is faiss-gpu or CUDA torch installed?)")
    return Placement("cpu", None)


def resolve_device(device: str = "auto") -> str:
    """The faiss side of `place`: 'gpu' when faiss sees a GPU, else 'cpu'."""
    return place(device).faiss


def validate_search_args(k: int, params: SearchParams | None, device: str) -> None:
    """Raise `SearchArgError` (one line) if k or the search params are out of range for `device`."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SearchArgError(f"k must be an integer >= 1, got {k!r}")
    if params is not None:
        if params.nprobe is not None and params.nprobe < 1:
            raise SearchArgError(f"nprobe must be >= 1, got {params.nprobe}")
        if params.ef_search is not None and params.ef_search < 1:
            raise SearchArgError(f"ef_search must be >= 1, got {params.ef_search}")
        if params.rerank < 1:
            raise SearchArgError(f"rerank must be >= 1, got {params.rerank}")
    if device == "gpu":
        if k > GPU_MAX_K:
            raise SearchArgError(
                f"k = {k} is above the faiss GPU limit of {GPU_MAX_K}; use a smaller k or --device cpu"
            )
        if params is not None and params.nprobe is not None and params.nprobe > GPU_MAX_NPROBE:
            raise SearchArgError(f"nprobe = {params.nprobe} is above the faiss GPU limit of {GPU_MAX_NPROBE}")


def fits_gpu(k: int, params: SearchParams) -> bool:
    """Whether an internal search (e.g. a grown over-fetch) is within the GPU limits."""
    return k <= GPU_MAX_K and (params.nprobe is None or params.nprobe <= GPU_MAX_NPROBE)


def gpu_supported(index_type: str) -> bool:
    """faiss GPU has flat and IVF indexes; HNSW stays on CPU."""
    return index_type in ("flat", "ivf_flat", "ivf_pq")


def to_gpu(index: Any, index_type: str) -> Any | None:
    """A GPU copy of a CPU index (all GPUs, sharded, when there are several), or None if unsupported.

    Float16 storage halves GPU memory for flat/IVF-Flat vectors at ~1e-3 score error; IVF-PQ codes are
    already compact, so it gets float16 lookup tables (needed for codes of 56+ bytes). The caller keeps the CPU
    index for requests beyond the GPU limits. For 'flat' pass the *inner* IndexFlat (the IDMap2 wrapper is not
    clonable to GPU in every faiss version); the caller maps positions back to ids.
    """
    gpus = num_gpus()
    if gpus == 0 or not gpu_supported(index_type):
        return None
    import faiss

    if gpus == 1:
        opts = faiss.GpuClonerOptions()
        _set_fp16(opts, index_type)
        resources = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(resources, 0, index, opts)
        gpu_index.referenced_objects = [resources]  # keep the resources alive with the index
        return gpu_index
    opts = faiss.GpuMultipleClonerOptions()
    opts.shard = True  # split the vectors across GPUs rather than replicating them
    _set_fp16(opts, index_type)
    log.info("sharding %s index over %d GPUs", index_type, gpus)
    return faiss.index_cpu_to_all_gpus(index, co=opts)


def _set_fp16(opts: object, index_type: str) -> None:
    if index_type == "ivf_pq":
        opts.useFloat16LookupTables = True  # type: ignore[attr-defined]
    else:
        opts.useFloat16 = True  # type: ignore[attr-defined]
