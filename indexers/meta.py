"""`OUT/index/index.json`: what each index holds and how to search it.

Layout (format_version 1)::

    {"format_version": 1, "fingerprint": ..., "dim": ..., "manifest_hash": ...,
     "indexes": {"items": {<IndexInfo fields>}, "reports": {...}}}

`shards` in each IndexInfo lists the manifest entries already added, which is what makes incremental
builds possible: entries of the manifest not in that list are new.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from indexers.checks import FileCheck, file_name
from indexers.errors import IndexMissing
from indexers.plan import IndexPlan, SearchParams
from indexers.store import StoreInfo
from radretrieve.foundation.errors import RadRetrieveError
from radretrieve.foundation.fileio import atomic_write_bytes
from radretrieve.outdir.layout import INDEX_DIR, INDEX_JSON, MANIFEST
from radretrieve.outdir.manifest import Manifest, ShardEntry

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Target:
    """One index of an out dir: which kinds go in, which file and catalog view hold it."""

    name: str  # key in index.json: "items" | "reports"
    file: str  # file name under OUT/index/
    kinds: tuple[str, ...]  # shard `kind` values indexed together
    view: str  # catalog view with the rows
    query: str  # what the index's own rows are as queries: "image" | "text"
    # the other query type sent to this index and the shard kinds its vectors are sampled from: text
    # embeddings search the items index (`search`), image embeddings the reports index (`reports`)
    cross: tuple[str, tuple[str, ...]]


TARGETS: Mapping[str, Target] = {
    "items": Target("items", "volumes.faiss", ("image", "volume"), "items", "image", ("text", ("report",))),
    "reports": Target("reports", "reports.faiss", ("report",), "reports", "text", ("image", ("image", "volume"))),
}


@dataclass(frozen=True)
class QueryRecall:
    """Recall@10 of one query type, measured when the index was tuned."""

    recall_at_10: float  # vs exact search over what the index holds (1.0 for flat)
    queries: int  # held-out queries of this type used (0 for flat: exact by construction)

    def to_json(self) -> dict[str, Any]:
        return {"recall_at_10": self.recall_at_10, "queries": self.queries}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> QueryRecall:
        return QueryRecall(float(data["recall_at_10"]), int(data["queries"]))


def target(name: str) -> Target:
    if name not in TARGETS:
        raise RadRetrieveError(f"unknown index {name!r} (choose from {', '.join(TARGETS)})")
    return TARGETS[name]


def shard_key(entry: ShardEntry) -> dict[str, Any]:
    """How an indexed shard is remembered: a re-run task with other rows counts as a different shard."""
    return {"file": entry.file, "task_id": entry.task_id, "rows": entry.rows}


def manifest_hash(manifest: Manifest) -> str:
    """Hash of the fingerprint and the finished-shard list (order-free)."""
    keys = sorted(json.dumps(shard_key(s), sort_keys=True) for s in manifest.shards)
    payload = json.dumps({"fingerprint": manifest.fingerprint, "dim": manifest.dim, "shards": keys})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class IndexInfo:
    """One index's entry in index.json."""

    name: str  # "items" | "reports"
    file: str  # file under OUT/index/, readable by faiss.read_index
    kinds: tuple[str, ...]  # shard kinds it holds
    plan: IndexPlan  # type, nlist, pq_m... (the factory string is derived from it)
    params: SearchParams  # tuned default search params
    count: int  # vectors in the index (== faiss ntotal)
    recall_at_10: float  # the lowest of `recall_by_query` (what tuning had to lift to the target); 1.0 for flat
    recall_queries: int  # held-out queries of the index's own kind used for the measurement
    fingerprint: str  # model fingerprint of the shards
    manifest_hash: str  # manifest_hash() when this index was last written
    build_seconds: float  # wall time of the last build or incremental add (incl. tuning)
    built_at: str  # ISO-8601 UTC time of the last write
    shards: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)  # shard_key() of indexed shards
    store: StoreInfo | None = None  # memory-mapped vectors for exact re-ranking (IVF-PQ); None otherwise
    checks: Mapping[str, FileCheck] = field(default_factory=dict)  # file name -> size and SHA-256 at commit
    # query type ("image" | "text") -> its recall; the cross-modal type is absent when the out dir has no
    # rows of it (e.g. no reports) and in indexes built before it was measured
    recall_by_query: Mapping[str, QueryRecall] = field(default_factory=dict)
    build: Mapping[str, Any] = field(default_factory=dict)  # how the last build streamed (indexers.build.BuildStats)
    # stored tuning queries and their exact neighbours (indexers/truth.py), for adds; None: flat, or older
    truth: str | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of this index under OUT/index/: the .faiss file and the re-rank store's."""
        return (self.file,) + (self.store.files if self.store is not None else ())

    @property
    def all_files(self) -> tuple[str, ...]:
        """`files` and the stored truth: everything `radretrieve verify` checks (searching needs no truth)."""
        return self.files + ((self.truth,) if self.truth is not None else ())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "kinds": list(self.kinds),
            "index_type": self.plan.index_type,
            "factory": self.plan.factory,
            "metric": "inner_product",
            "dim": self.plan.dim,
            "planned_count": self.plan.count,
            "nlist": self.plan.nlist,
            "pq_m": self.plan.pq_m,
            "hnsw_m": self.plan.hnsw_m,
            "coarse": self.plan.coarse,
            "search_params": self.params.to_json(),
            "count": self.count,
            "recall_at_10": self.recall_at_10,
            "recall_queries": self.recall_queries,
            "recall_by_query": {name: r.to_json() for name, r in self.recall_by_query.items()},
            "fingerprint": self.fingerprint,
            "manifest_hash": self.manifest_hash,
            "build_seconds": self.build_seconds,
            "built_at": self.built_at,
            "shards": [dict(s) for s in self.shards],
            "store": self.store.to_json() if self.store is not None else None,
            "checks": {name: c.to_json() for name, c in self.checks.items()},
            "build": dict(self.build),
            "truth": self.truth,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> IndexInfo:
        plan = IndexPlan(
            data["index_type"],
            int(data["dim"]),
            int(data["planned_count"]),
            int(data["nlist"]),
            int(data["pq_m"]),
            int(data["hnsw_m"]),
            str(data.get("coarse", "flat")),  # absent before HNSW coarse quantizers
        )
        return IndexInfo(
            data["name"],
            file_name(data["file"]),
            tuple(data["kinds"]),
            plan,
            SearchParams.from_json(data["search_params"]),
            int(data["count"]),
            float(data["recall_at_10"]),
            int(data["recall_queries"]),
            data["fingerprint"],
            data["manifest_hash"],
            float(data["build_seconds"]),
            data["built_at"],
            tuple(data["shards"]),
            StoreInfo.from_json(data.get("store")),  # absent in indexes built before the store existed
            {file_name(name): FileCheck.from_json(c) for name, c in dict(data.get("checks") or {}).items()},
            recall_by_query={n: QueryRecall.from_json(r) for n, r in dict(data.get("recall_by_query") or {}).items()},
            build=dict(data.get("build") or {}),
            truth=None if data.get("truth") is None else file_name(data["truth"]),
        )


def index_dir(out_dir: Path) -> Path:
    return Path(out_dir) / INDEX_DIR


def _missing_hint(out_dir: Path) -> str:
    """Why there is no index and the command that makes one: `build-index` only helps an out dir (one with a
    manifest); a folder without one is most likely the archive itself, which `index` embeds first."""
    if not (Path(out_dir) / MANIFEST).is_file():
        return (
            f"{out_dir}: not an out dir (no {MANIFEST}); to index an archive folder run "
            f"`radretrieve index {out_dir} --out OUT`"
        )
    return f"{out_dir}: no {INDEX_DIR}/{INDEX_JSON} (run `radretrieve build-index {out_dir}`)"


def read_index_json(out_dir: Path, required: bool = True) -> dict[str, IndexInfo]:
    """The indexes recorded in OUT/index/index.json ({} if absent and not `required`)."""
    path = index_dir(out_dir) / INDEX_JSON
    if not path.is_file():
        if required:
            raise IndexMissing(_missing_hint(out_dir))
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {data.get('format_version')} (expected {FORMAT_VERSION})")
        return {name: IndexInfo.from_json(entry) for name, entry in data["indexes"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise RadRetrieveError(f"{path}: unreadable index.json ({exc}); rebuild with --rebuild") from exc


def write_index_json(
    out_dir: Path, infos: Mapping[str, IndexInfo], manifest: Manifest, fulltext: Mapping[str, Any] | None = None
) -> None:
    """Atomically (re)write index.json for `infos` and the full-text index's entry (indexers/fulltext.py)."""
    data: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "fingerprint": manifest.fingerprint,
        "dim": manifest.dim,
        "manifest_hash": manifest_hash(manifest),
        "indexes": {name: info.to_json() for name, info in sorted(infos.items())},
    }
    if fulltext is not None:
        data["fulltext"] = dict(fulltext)
    atomic_write_bytes(index_dir(out_dir) / INDEX_JSON, json.dumps(data, indent=1).encode())
