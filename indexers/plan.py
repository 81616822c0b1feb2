"""What index to build for a given count, dimension and memory budget, and how to search it.

The choice rule (`choose_plan`):

* up to `exact_threshold` vectors (default 50,000) -> exact inner product (`IDMap2,Flat`): at that size a
  brute-force scan is as fast as an ANN probe and needs no tuning;
* above it, if the full-precision vectors fit in `max_memory` -> IVF-Flat (`IVF{nlist},Flat`): cheap to
  train on a sample, cheap to add to incrementally, exact scores for what it returns;
* otherwise -> IVF-PQ (`IVF{nlist},PQ{m}`: 8-bit codes, m bytes per vector, m <= dim/8) whose codes
  fit the budget, with exact re-ranking of an over-fetched candidate list from the re-rank store, a
  memory-mapped copy of the shard vectors next to the index (indexers/store.py; scores stay exact).
  Not 4-bit fast-scan: with inner product its scores are not comparable across inverted lists (recall fell
  as nprobe grew, measured), and faiss GPU lacks it.
  From `HNSW_COARSE_MIN_NLIST` lists on, the coarse quantizer is an HNSW graph over the centroids
  (`IVF{nlist}_HNSW32,PQ{m}`): assigning a vector to its list then costs ~log(nlist) distance
  computations instead of nlist. Below that a flat quantizer is as fast: on 2 cores at dim 512 one
  assignment cost 80 us of CPU flat and 98 us by HNSW32 (efSearch 16) over 8192 centroids (measured),
  because the flat scan runs as one BLAS matrix product;
* HNSW (`IDMap2,HNSW32,Flat`) only on request (`index_type="hnsw"`): its build is slow on few cores
  (1M x 512 on 2 cores: 243 s against 90 s for IVF-Flat, measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from radretrieve.foundation.errors import RadRetrieveError

INDEX_TYPES = ("flat", "hnsw", "ivf_flat", "ivf_pq")
DEFAULT_MAX_MEMORY = 4 << 30  # 4 GiB: the index plus the build's working set must fit
DEFAULT_EXACT_THRESHOLD = 50_000
HNSW_M = 32  # graph degree; 32 is the usual recall/memory balance for dim 64..1024
HNSW_EF_CONSTRUCTION = 128  # candidates considered while linking each added vector (faiss default: 40)
HNSW_COARSE_MIN_NLIST = 16384  # IVF-PQ lists from which the coarse quantizer is an HNSW graph (see above)
COARSE_TYPES = ("flat", "hnsw")
# HNSW coarse quantizer: candidates while finding a vector's one list (training, adding; cheap, and a
# near-best list is still probed), and while finding a query's nprobe lists (faiss takes max(ef, nprobe))
COARSE_EF_ADD = 16
COARSE_EF_SEARCH = 64
TRAIN_POINTS_PER_LIST = 32  # k-means sample per inverted list (faiss warns below 39; 32 keeps training fast)
MIN_TRAIN = 10_000
# Fraction of max_memory the resident index may take; the rest is the build's working set (batches,
# training sample, ground-truth queries).
INDEX_SHARE = 0.75


@dataclass(frozen=True)
class SearchParams:
    """Per-call search parameters; turned into a faiss `SearchParameters*` object, never set on an index."""

    nprobe: int | None = None  # IVF: inverted lists probed per query
    ef_search: int | None = None  # HNSW: candidate list size during graph search
    rerank: int = 1  # candidates fetched per wanted hit before exact re-ranking (IVF-PQ); 1 = none

    def to_json(self) -> dict[str, Any]:
        return {"nprobe": self.nprobe, "ef_search": self.ef_search, "rerank": self.rerank}

    @staticmethod
    def from_json(data: dict[str, Any] | None) -> SearchParams:
        data = data or {}
        return SearchParams(data.get("nprobe"), data.get("ef_search"), int(data.get("rerank", 1)))

    def merged(self, override: SearchParams | None) -> SearchParams:
        """These (tuned) params with the fields set in `override` replacing them."""
        if override is None:
            return self
        return replace(
            self,
            nprobe=override.nprobe if override.nprobe is not None else self.nprobe,
            ef_search=override.ef_search if override.ef_search is not None else self.ef_search,
            rerank=override.rerank if override.rerank != 1 else self.rerank,
        )


@dataclass(frozen=True)
class IndexPlan:
    """Which faiss index to build; a pure description, the builder turns it into an index."""

    index_type: str  # one of INDEX_TYPES
    dim: int  # embedding dimension
    count: int  # vectors the plan was made for (decides nlist; incremental adds keep it)
    nlist: int = 0  # IVF: number of inverted lists (0 for flat/hnsw)
    pq_m: int = 0  # IVF-PQ: 8-bit sub-quantizers (m bytes per code); divides dim
    hnsw_m: int = HNSW_M  # HNSW: graph degree (also of an HNSW coarse quantizer)
    coarse: str = "flat"  # IVF: coarse quantizer over the centroids, "flat" | "hnsw"

    @property
    def factory(self) -> str:
        """The faiss `index_factory` string (also written to index.json)."""
        if self.index_type == "flat":
            return "IDMap2,Flat"
        if self.index_type == "hnsw":
            return f"IDMap2,HNSW{self.hnsw_m},Flat"
        ivf = f"IVF{self.nlist}_HNSW{self.hnsw_m}" if self.coarse == "hnsw" else f"IVF{self.nlist}"
        if self.index_type == "ivf_flat":
            return f"{ivf},Flat"
        return f"{ivf},PQ{self.pq_m}"

    @property
    def train_size(self) -> int:
        """Vectors sampled for k-means training (0 when the index needs no training)."""
        if self.index_type not in ("ivf_flat", "ivf_pq"):
            return 0
        want = max(self.nlist * TRAIN_POINTS_PER_LIST, MIN_TRAIN)
        return min(self.count, want)

    def index_bytes(self, count: int | None = None) -> int:
        """Resident size estimate of the index holding `count` vectors (default: the plan's count)."""
        n = self.count if count is None else count
        if self.index_type == "flat":
            return n * (self.dim * 4 + 8)
        if self.index_type == "hnsw":
            return n * (self.dim * 4 + 8 + self.hnsw_m * 2 * 4)
        coarse = self.nlist * (self.dim * 4 + (self.hnsw_m * 2 * 4 if self.coarse == "hnsw" else 0))
        if self.index_type == "ivf_flat":
            return n * (self.dim * 4 + 8) + coarse
        return n * (self.pq_m + 8) + coarse + 256 * self.dim * 4


def default_nlist(count: int) -> int:
    """About 2*sqrt(count) lists, a power of two, with >= 32 vectors per list on average."""
    target = 2 * math.sqrt(max(count, 1))
    nlist = 1 << max(4, round(math.log2(target)))
    while nlist > 16 and count < nlist * 32:
        nlist //= 2
    return nlist


def _pq_m(count: int, dim: int, budget: int, nlist: int) -> int:
    """Largest sub-quantizer count (a divisor of dim, at most max(4, dim/8)) whose codes fit `budget`.

    Capped because PQ training runs one 256-centroid k-means per sub-quantizer, which dominates the
    build time on few cores; exact re-ranking makes up for the coarser codes.
    """
    fixed = nlist * dim * 4 + 256 * dim * 4
    for m in sorted((m for m in range(1, max(4, dim // 8) + 1) if dim % m == 0), reverse=True):
        if count * (m + 8) + fixed <= budget:
            return m
    raise RadRetrieveError(
        f"--max-memory {budget / INDEX_SHARE / 2**20:.0f} MiB is too small for {count} vectors even as PQ codes"
    )


def choose_plan(
    count: int,
    dim: int,
    max_memory: int = DEFAULT_MAX_MEMORY,
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    index_type: str | None = None,
    coarse: str | None = None,
) -> IndexPlan:
    """The index for `count` vectors of dimension `dim` under `max_memory` bytes (see module docstring).

    `coarse` forces the IVF coarse quantizer ("flat" | "hnsw"); None: HNSW for IVF-PQ from
    `HNSW_COARSE_MIN_NLIST` lists on, flat otherwise."""
    if coarse is not None and coarse not in COARSE_TYPES:
        raise RadRetrieveError(f"unknown coarse quantizer {coarse!r} (choose from {', '.join(COARSE_TYPES)})")
    if dim < 1:
        raise RadRetrieveError(f"bad embedding dimension {dim}")
    if index_type is not None and index_type not in INDEX_TYPES:
        raise RadRetrieveError(f"unknown index type {index_type!r} (choose from {', '.join(INDEX_TYPES)})")
    budget = int(max_memory * INDEX_SHARE)
    nlist = default_nlist(count)
    flat = IndexPlan("flat", dim, count)
    if index_type is None:
        if count <= exact_threshold and flat.index_bytes() <= budget:
            index_type = "flat"
        elif IndexPlan("ivf_flat", dim, count, nlist).index_bytes() <= budget:
            index_type = "ivf_flat"
        else:
            index_type = "ivf_pq"
    if index_type in ("flat", "hnsw"):
        return IndexPlan(index_type, dim, count)
    if count < 2 * MIN_TRAIN // 10:
        raise RadRetrieveError(f"{index_type} needs at least {2 * MIN_TRAIN // 10} vectors to train, got {count}")
    if index_type == "ivf_flat":
        return IndexPlan("ivf_flat", dim, count, nlist, coarse=coarse or "flat")
    coarse = coarse or ("hnsw" if nlist >= HNSW_COARSE_MIN_NLIST else "flat")
    return IndexPlan("ivf_pq", dim, count, nlist, pq_m=_pq_m(count, dim, budget, nlist), coarse=coarse)


def needs_rebuild(built: IndexPlan, wanted: IndexPlan) -> bool:
    """Whether an index built as `built` must be rebuilt rather than grown to `wanted.count` vectors.

    A different type always needs a rebuild; an IVF index whose list count has fallen 4x behind what
    the new count calls for does too (lists grow long and search slows), smaller drift does not.
    """
    if built.index_type != wanted.index_type or built.dim != wanted.dim:
        return True
    if built.index_type in ("ivf_flat", "ivf_pq"):
        return wanted.nlist >= 4 * built.nlist
    return False
