"""`radretrieve listen --out OUT --port PORT --aet AET`: a receiving node a PACS pushes to (thin:
`radretrieve.application.listen`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from radretrieve.cli.options import MODEL_HELP
from radretrieve.cli.output import say, say_json


def listen(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Out dir to index into; received files are spooled in OUT/receive."
    ),
    port: int = typer.Option(11112, "--port", help="TCP port (0: any free port, shown on stderr)."),
    aet: str = typer.Option("RADRETRIEVE", "--aet", help="Our AE title: senders must call it."),
    model: str = typer.Option("radclip-tiny", "--model", "-m", help=MODEL_HELP),
    weights: str | None = typer.Option(None, "--weights", "-w", help="Weights file or pretrained tag."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: cuda if present)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; any other than this machine's loopback needs --allow."
    ),
    allow: list[str] = typer.Option(
        [],
        "--allow",
        help="AET@ADDRESS (or AET@NETWORK, e.g. PACS@10.1.2.0/24): a sender allowed to push. Repeatable; with it, "
        "associations from any other AE title or address are rejected.",
    ),
    settle: float = typer.Option(
        10.0,
        "--settle",
        help="Seconds without a new instance after which a study is complete (or when the sender "
        "releases its association).",
    ),
    batch_studies: int = typer.Option(64, "--batch-studies", help="Most studies indexed per micro-batch."),
    workers: int = typer.Option(
        0, "--workers", help="Reader processes, started once for the whole run (0: decode in this process)."
    ),
    max_pdu: int = typer.Option(262_144, "--max-pdu", help="Largest PDU offered to senders, in bytes."),
    max_instance_mb: float = typer.Option(1024.0, "--max-instance-mb", help="Largest instance accepted, in MiB."),
    min_free_mb: float = typer.Option(
        1024.0, "--min-free-mb", help="Free disk space to leave; instances beyond it are refused (out of resources)."
    ),
    max_associations: int = typer.Option(8, "--max-associations", help="Simultaneous associations."),
    timeout: float = typer.Option(60.0, "--timeout", help="ACSE, DIMSE and network timeouts, in seconds."),
    wait: float = typer.Option(
        0.0, "--wait", help="Seconds to wait for another job writing --out (default: stop at once naming it)."
    ),
    no_index: bool = typer.Option(False, "--no-index", help="Do not update the FAISS indexes after batches."),
    index_every: float = typer.Option(
        60.0,
        "--index-every",
        help="While batches follow one another, seconds between FAISS index updates (at least); the indexes "
        "are always updated once no other batch is ready.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON status line per indexed batch on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Warnings and errors only on stderr."),
) -> None:
    """Receive studies pushed by a PACS (C-STORE) and index them as they settle; stop with Ctrl-C or SIGTERM."""
    from radretrieve.application.listen import ListenOptions, batch_json, batch_line, check_listen, run_listen

    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
    options = ListenOptions(
        out=out,
        port=port,
        aet=aet,
        model=model,
        weights=weights,
        device=device,
        host=host,
        allow=tuple(allow),
        settle=settle,
        batch_studies=batch_studies,
        workers=workers,
        max_pdu=max_pdu,
        max_instance_mb=max_instance_mb,
        min_free_mb=min_free_mb,
        max_associations=max_associations,
        timeout=timeout,
        wait=wait,
        build_index=not no_index,
        index_every=index_every,
    )
    check_listen(options)  # bad options: one line, before torch and the model load
    log = logging.getLogger("radretrieve.listen")

    def on_listening(bound: int) -> None:
        log.info("listening on %s:%d as %s (settle %g s); spool %s", host, bound, aet.strip(), settle, out / "receive")

    def on_batch(report: Any, infos: dict[str, Any]) -> None:  # report: application.listen's BatchReport
        if as_json:
            say_json(json.dumps(batch_json(report, infos)))
        log.info("%s", batch_line(report))

    totals = run_listen(options, on_batch, on_listening)
    say(f"stopped: {totals.batches} batch(es), {totals.series_indexed} series indexed in all runs", err=True)


def register(app: typer.Typer) -> None:
    app.command("listen")(listen)
