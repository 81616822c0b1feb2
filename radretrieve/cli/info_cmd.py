"""`radretrieve info DIR`: what an out dir holds (thin over `radretrieve.application.info`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from radretrieve.cli.output import say, say_json


def info(
    out_dir: Path = typer.Argument(..., help="An out dir written by `radretrieve index`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show counts by kind and modality, errors by type, skipped series by reason, the model and the size on disk."""
    from radretrieve.foundation.errors import RadRetrieveError

    if not out_dir.is_dir():
        raise RadRetrieveError(f"{out_dir}: out dir not found")
    from radretrieve.application.info import collect_info

    data = collect_info(out_dir)
    if as_json:
        say_json(json.dumps(data, indent=1))
        return
    say(f"shards: {data['shards']}  dim: {data['dim']}  size: {data['bytes_on_disk'] / 1e6:.1f} MB")
    say(f"model: {data['model'].get('ref')}  fingerprint: {data['fingerprint']}")
    say("rows by kind: " + (", ".join(f"{k} {v}" for k, v in data["rows_by_kind"].items()) or "none"))
    say("items by modality: " + (", ".join(f"{k or '?'} {v}" for k, v in data["items_by_modality"].items()) or "none"))
    say("errors by type: " + (", ".join(f"{k} {v}" for k, v in data["errors_by_type"].items()) or "none"))
    skipped = data["series_skipped_by_reason"]
    say("series skipped by selection: " + (", ".join(f"{k} {v}" for k, v in skipped.items()) or "none"))
    job = data.get("last_job") or {}
    if job:
        say(
            f"last job: engine {job.get('engine', '?')}, {job.get('tasks', 0)} task(s), {job.get('items', 0)} items, "
            f"{job.get('seconds', 0.0):.1f} s, errors {job.get('errors') or 'none'}"
        )
        series = job.get("series") or {}
        if series:  # a DICOMweb archive: the incremental sync of the last run
            say(
                f"  PACS series: listed {series.get('listed', 0)}, skipped as already indexed "
                f"{series.get('skipped', 0)}, fetched {series.get('fetched', 0)}, failed {series.get('failed', 0)}"
            )
        for enc in job.get("cluster", {}).get("encoders", []):
            say(f"  encoder {enc['encoder']} on {enc['node']}: {enc['items']} items, {enc['tasks']} task(s)")
    _say_listener(data.get("listener") or {})


def _say_listener(listener: dict) -> None:
    """`radretrieve listen`'s totals over all its runs (OUT/listen.json)."""
    if not listener:
        return
    t = listener.get("totals") or {}
    r = t.get("received") or {}
    say(
        f"listener: {listener.get('state', '?')} (AE {listener.get('aet', '?')}, port {listener.get('port', '?')}); "
        f"received {r.get('instances', 0)} instances ({r.get('duplicates', 0)} again while spooled, "
        f"{r.get('refused', 0)} refused) in {r.get('associations', 0)} associations ({r.get('rejected', 0)} rejected)"
    )
    say(
        f"  indexed {t.get('series_indexed', 0)} series of {t.get('studies_indexed', 0)} studies in "
        f"{t.get('batches', 0)} batch(es) ({t.get('failed_batches', 0)} failed); waiting in the spool: "
        f"{listener.get('waiting_studies', 0)} studies"
    )


def register(app: typer.Typer) -> None:
    app.command("info")(info)
