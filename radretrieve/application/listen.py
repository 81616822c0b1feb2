"""What `radretrieve listen` does: a receiving node a PACS pushes studies to (C-STORE), indexed as they settle.

    options = ListenOptions(out=Path("out"), port=11112, aet="RADRETRIEVE")
    check_listen(options)                        # every argument check: before torch and the model load
    run_listen(options, on_batch=print_line)     # until SIGTERM / Ctrl-C (holds the out dir's writer lock)

The node itself (spool, SCP, micro-batches) is `pipelines.receive`; this layer adds what ties it to the
indexes: after each batch the FAISS indexes are updated (`build_out_dir_index`, as `radretrieve build-index`).
Nothing heavy is imported at module level.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radretrieve.foundation.errors import RadRetrieveError

if TYPE_CHECKING:
    from pipelines.receive.node import BatchReport, Totals

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class ListenOptions:
    """Everything `radretrieve listen` takes (the CLI's defaults)."""

    out: Path  # the out dir the node indexes into (and spools in)
    port: int = 11112  # TCP port (0: any free port)
    aet: str = "RADRETRIEVE"  # our AE title: senders call it
    model: str = "radclip-tiny"  # registry name, model directory, open_clip name or hf-hub: id
    weights: str | None = None  # weights file or pretrained tag
    device: str | None = None  # cpu | cuda (None: cuda if present)
    host: str = "127.0.0.1"  # address to bind; another than loopback needs `allow`
    allow: tuple[str, ...] = ()  # AET@ADDRESS (or AET@NETWORK) senders allowed
    settle: float = 10.0  # seconds without a new instance after which a study is complete
    batch_studies: int = 64  # most studies per micro-batch
    workers: int = 0  # reader processes, kept for the whole run (0: decode in the node's process)
    max_pdu: int = 262_144  # largest PDU offered, in bytes
    max_instance_mb: float = 1024.0  # largest instance accepted, in MiB
    min_free_mb: float = 1024.0  # free disk space left under the out dir, in MiB
    max_associations: int = 8  # simultaneous associations
    timeout: float = 60.0  # ACSE, DIMSE and network timeouts, in seconds
    wait: float = 0.0  # seconds to wait for another writer of the out dir (0: stop at once naming it)
    build_index: bool = True  # update the FAISS indexes after batches
    index_every: float = 60.0  # while batches follow one another, seconds between index updates (at least)

    def check(self) -> None:
        """The checks of the options alone (no file, no network): one `RadRetrieveError` line each."""
        from pipelines.receive.scp import check_ae_title, parse_allow

        check_ae_title(self.aet, "--aet")
        parse_allow(self.allow)
        for flag, value in (
            ("--settle", self.settle),
            ("--max-instance-mb", self.max_instance_mb),
            ("--min-free-mb", self.min_free_mb),
            ("--timeout", self.timeout),
            ("--wait", self.wait),
            ("--index-every", self.index_every),
        ):
            if not math.isfinite(value):  # NaN passes every comparison below; inf never settles or times out
                raise RadRetrieveError(f"{flag} {value}: expected a finite number")
        if not 0 <= self.port <= 65535:
            raise RadRetrieveError(f"--port {self.port}: expected 0 to 65535")
        if not is_loopback(self.host) and not self.allow:
            raise RadRetrieveError(
                f"--host {self.host}: listening beyond this machine needs --allow AET@ADDRESS for every sender"
            )
        if self.index_every < 0:
            raise RadRetrieveError(f"--index-every {self.index_every:g}: expected 0 or more seconds")
        if self.settle < 0.1:
            raise RadRetrieveError(f"--settle {self.settle:g}: expected at least 0.1 seconds")
        if self.batch_studies < 1:
            raise RadRetrieveError("--batch-studies must be at least 1")
        if not 4096 <= self.max_pdu <= 16 << 20:
            raise RadRetrieveError(f"--max-pdu {self.max_pdu}: expected 4096 to 16777216 bytes")
        if self.max_instance_mb <= 0 or self.min_free_mb < 0 or self.max_associations < 1 or self.timeout <= 0:
            raise RadRetrieveError("--max-instance-mb, --max-associations and --timeout must be positive")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the port on this machine (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(options: ListenOptions) -> None:
    """Every check that needs no model: options, and that the model reference parses."""
    options.check()
    from radretrieve.models.reference import parse_model_ref

    parse_model_ref(options.model, options.weights)


def run_listen(
    options: ListenOptions,
    on_batch: Callable[[BatchReport, dict[str, Any]], None] = lambda report, infos: None,
    on_listening: Callable[[int], None] = lambda port: None,
) -> Totals:
    """Load the model and run the node until SIGTERM or Ctrl-C. `on_batch(report, index_infos)` after each
    indexed batch; `on_listening(port)` once the port is open."""
    check_listen(options)
    from radretrieve.foundation.lock import writer_lock
    from radretrieve.models.loading import load_model
    from radretrieve.models.provenance import warn_if_untrained

    o = options
    # the lock before the model: a second writer of OUT is refused in a moment, not after a model load (the node
    # takes it again, re-entrantly, for its whole run)
    with writer_lock(o.out, "radretrieve listen", wait=o.wait):
        model = load_model(o.model, weights=o.weights, device=o.device, warn=False)
        warn_if_untrained(model.config.name, model.provenance)
        return _run_node(o, model, on_batch, on_listening)


def _run_node(
    o: ListenOptions,
    model: Any,
    on_batch: Callable[[BatchReport, dict[str, Any]], None],
    on_listening: Callable[[int], None],
) -> Totals:
    from pipelines.receive.node import Node, ReceiveOptions
    from pipelines.receive.scp import ScpOptions, parse_allow
    from radretrieve.application.indexing import build_out_dir_index

    scp = ScpOptions(
        aet=o.aet.strip(),
        host="127.0.0.1" if o.host == "localhost" else o.host,
        port=o.port,
        allow=parse_allow(o.allow),
        max_pdu=o.max_pdu,
        max_instance_bytes=int(o.max_instance_mb * (1 << 20)),
        min_free_bytes=int(o.min_free_mb * (1 << 20)),
        max_associations=o.max_associations,
        timeout_s=o.timeout,
    )
    receive = ReceiveOptions(
        scp, settle=o.settle, batch_studies=o.batch_studies, workers=o.workers, wait=o.wait, index_every=o.index_every
    )

    def update_index() -> dict[str, Any]:
        return build_out_dir_index(o.out) if o.build_index else {}

    return Node(o.out, model, receive).run(update_index, on_batch, on_listening)


def batch_json(report: BatchReport, infos: dict[str, Any]) -> dict[str, Any]:
    """`listen --json`: one status line per batch (counts only)."""
    s = report.summary
    return {
        "batch": report.number,
        "studies": report.taken.studies,
        "series": report.taken.series,
        "instances": report.taken.instances,
        "rows": dict(s.rows),
        "errors": dict(s.errors),
        "skipped_series": dict(s.skipped),
        "seconds": round(s.seconds, 3),
        "waiting_studies": report.waiting[0],
        "received_instances": report.received[0],  # this run so far
        "refused_instances": report.received[1],
        # vectors per index after this batch's update; {} when the update waits for a later batch (--index-every)
        "indexes": {name: int(getattr(info, "count", 0)) for name, info in infos.items()},
    }


def batch_line(report: BatchReport) -> str:
    """The progress line of one batch (stderr)."""
    s = report.summary
    rows = ", ".join(f"{k} {v}" for k, v in sorted(s.rows.items())) or "none new"
    errors = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "none"
    return (
        f"batch {report.number}: {report.taken.series} series of {report.taken.studies} study(ies) indexed in "
        f"{s.seconds:.1f} s; rows {rows}; errors {errors}; waiting {report.waiting[0]} study(ies); "
        f"received {report.received[0]} instance(s), refused {report.received[1]}"
    )
