"""What an out dir holds: counts by kind and modality, errors by type, model, size on disk (`radretrieve info`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radretrieve.outdir.layout import JOB_FILE, LISTEN_FILE


def collect_info(out_dir: Path) -> dict[str, Any]:
    """Counts by kind and modality, errors by type, skipped series by reason, model, bytes on disk."""
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
        errors = dict(
            cat.sql(
                "SELECT error_type, count(*) FROM errors WHERE stage IS DISTINCT FROM 'select' "
                "GROUP BY error_type ORDER BY error_type"
            )
        )
        skipped = dict(
            cat.sql("SELECT error_type, count(*) FROM errors WHERE stage = 'select' GROUP BY error_type ORDER BY 1")
        )
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
        "series_skipped_by_reason": skipped,  # series selection (stage select in errors/)
        "fingerprint": m.fingerprint,
        "preprocess_hash": m.preprocess_hash,
        "dim": m.dim,
        "model": dict(m.model),
        "bytes_on_disk": size,
        "last_job": _last_job(Path(out_dir)),
        "listener": _listener(Path(out_dir)),  # `radretrieve listen`: its state and totals
    }


def _last_job(out_dir: Path) -> dict[str, Any]:
    """The summary the last `radretrieve index` wrote (engine, nodes, encoders, counts); {} if none."""
    return _read_json(out_dir / JOB_FILE)


def _listener(out_dir: Path) -> dict[str, Any]:
    """`radretrieve listen`'s record; a "running" one whose process is gone (killed) says so."""
    data = _read_json(out_dir / LISTEN_FILE)
    if data.get("state") == "running":
        from radretrieve.foundation.lock import current_holder

        holder = current_holder(out_dir)
        if holder is None or holder.command != "radretrieve listen":
            data["state"] = "not running (ended without stopping)"
    return data


def _read_json(path: Path) -> dict[str, Any]:
    """A small JSON record of the out dir; {} if missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
