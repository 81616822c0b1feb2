"""`radretrieve info DIR`: what an out dir holds (counts, errors, model, size on disk)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def collect_info(out_dir: Path) -> dict[str, Any]:
    """Counts by kind and modality, errors by type, model fingerprint and reference, bytes on disk."""
    from radretrieve.outdir.catalog import Catalog

    cat = Catalog(out_dir)
    try:
        by_kind = dict(
            cat.sql(
                "SELECT kind, count(*) FROM (SELECT kind FROM items UNION ALL "
                "SELECT kind FROM reports) GROUP BY kind ORDER BY kind"
            )
        )
        by_modality = dict(cat.sql("SELECT modality, count(*) FROM items GROUP BY modality ORDER BY modality"))
        errors = dict(cat.sql("SELECT error_type, count(*) FROM errors GROUP BY error_type ORDER BY error_type"))
    finally:
        cat.close()
    size = sum(p.stat().st_size for p in Path(out_dir).rglob("*") if p.is_file())
    m = cat.manifest
    return {
        "out_dir": str(out_dir),
        "shards": len(m.shards),
        "rows_by_kind": by_kind,
        "items_by_modality": by_modality,
        "errors_by_type": errors,
        "fingerprint": m.fingerprint,
        "preprocess_hash": m.preprocess_hash,
        "dim": m.dim,
        "model": dict(m.model),
        "bytes_on_disk": size,
    }


def info(
    out_dir: Path = typer.Argument(..., help="An out dir written by `radretrieve index`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show counts by kind and modality, errors by type, the model fingerprint and the size on disk."""
    from radretrieve.foundation.errors import RadRetrieveError

    if not out_dir.is_dir():
        raise RadRetrieveError(f"{out_dir}: out dir not found")
    data = collect_info(out_dir)
    if as_json:
        typer.echo(json.dumps(data, indent=1))
        return
    typer.echo(f"shards: {data['shards']}  dim: {data['dim']}  size: {data['bytes_on_disk'] / 1e6:.1f} MB")
    typer.echo(f"model: {data['model'].get('ref')}  fingerprint: {data['fingerprint']}")
    typer.echo("rows by kind: " + (", ".join(f"{k} {v}" for k, v in data["rows_by_kind"].items()) or "none"))
    typer.echo(
        "items by modality: " + (", ".join(f"{k or '?'} {v}" for k, v in data["items_by_modality"].items()) or "none")
    )
    typer.echo("errors by type: " + (", ".join(f"{k} {v}" for k, v in data["errors_by_type"].items()) or "none"))


def register(app: typer.Typer) -> None:
    app.command("info")(info)
