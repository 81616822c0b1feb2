"""Joining a Ray cluster, and checking that the out dir is on a file system every node sees."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radretrieve.foundation.errors import ConfigError, RadRetrieveError

log = logging.getLogger(__name__)
PROBE_SECONDS = 60.0  # how long a node may take to answer the out-dir check
# Ray is an optional extra (pyproject.toml `ray`): most users index on one machine with the local engine.
RAY_MISSING = 'the ray engine needs Ray, which is not installed: pip install -e ".[ray]"'


class RayMissing(ConfigError):
    """`--engine ray` without Ray installed."""


def require_ray() -> Any:
    """The `ray` module, or `RayMissing` with the install command (no traceback, no module path)."""
    try:
        import ray
    except ImportError as exc:  # not installed, or blocked (sys.modules["ray"] = None)
        raise RayMissing(RAY_MISSING) from exc
    return ray


@dataclass(frozen=True)
class NodeInfo:
    """One alive node of the cluster."""

    node_id: str  # Ray's node id (hex)
    address: str  # the node's IP address as Ray reports it
    cpus: float  # logical CPUs
    gpus: float  # GPUs

    @property
    def name(self) -> str:
        """A short name for summaries and progress lines."""
        return f"{self.address}/{self.node_id[:8]}"


def connect(address: str | None, workers: int) -> Any:
    """`ray` connected to the cluster at `address`, or to a local one on this machine's CPUs."""
    ray = require_ray()

    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else local_cpus(workers),
            # Ray starts its workers at nice 15 (RAY_worker_niceness) by default, the encoder actor too, so
            # any other process on the node (the driver, a reader) preempts its intra-op threads; a local
            # Ray runs them at 0 and the reader tasks lower their own priority (decode.py), as the local
            # engine's readers do. A cluster started with `ray start` takes RAY_worker_niceness=0 from its env.
            _system_config=None if address else {"worker_niceness": 0},
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    return ray


def local_cpus(workers: int) -> int:
    """Logical CPUs of a Ray started here: `workers` reader tasks beside the encoder actor, as the local
    engine runs `--workers` reader processes beside its encoder (with `workers` CPUs, one of them would go
    to the encoder and the readers would decode one chunk at a time: measured 0.75 of the local engine)."""
    return max(2, workers + 1)


def alive_nodes(ray: Any) -> list[NodeInfo]:
    """The cluster's alive nodes, in a stable order."""
    nodes = []
    for n in ray.nodes():
        if n.get("Alive"):
            res = n.get("Resources", {})
            nodes.append(
                NodeInfo(n["NodeID"], n.get("NodeManagerAddress", "?"), res.get("CPU", 0.0), res.get("GPU", 0.0))
            )
    return sorted(nodes, key=lambda n: n.node_id)


def _sees(path: str) -> bool:
    return Path(path).is_file()


def check_out_dir_visible(ray: Any, out_dir: Path, nodes: list[NodeInfo]) -> None:
    """Raise one line if some node cannot see `out_dir` (workers write the shards there themselves)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = Path(out_dir) / f".probe-{secrets.token_hex(6)}"
    probe.write_bytes(b"")
    try:
        sees = ray.remote(num_cpus=0)(_sees)
        refs = {
            n.name: sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote(
                str(probe.resolve())
            )
            for n in nodes
        }
        blind = [name for name, ok in zip(refs, ray.get(list(refs.values()), timeout=PROBE_SECONDS)) if not ok]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise RadRetrieveError(
            f"--out {out_dir} is not visible from node(s) {', '.join(blind)}: Ray workers write the shards "
            "themselves, so put the out dir on a file system every node mounts at the same path (NFS or similar)"
        )
