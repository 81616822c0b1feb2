"""The out-dir side of anonymised paths (the default; `--keep-paths` opts out): the per-out-dir key and the way
back to the real files.

`OUT/anonymise.key` (random, created on first use, mode 0600) keys the path and study-key hashes, so they are
stable across runs into one out dir. `OUT/sources/<task>.jsonl` maps each anonymised item id to its real source
path, and `OUT/sources/root.json` holds the real archive root (radretrieve.outdir.archive_root), for the readers
that must open the files again (thumbnails in the contact sheet and the web page). Both hold what anonymisation
hides from every output: keep them with the archive, not with the shards you share; no catalog view, `--where`
filter or web route can read them.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from radretrieve.foundation.fileio import atomic_write_bytes
from radretrieve.outdir.layout import ANON_KEY_FILE, SOURCE_MAP_DIR


def path_key(out_dir: Path) -> bytes:
    """The out dir's hashing key, created (owner-readable only) if it does not exist yet."""
    path = Path(out_dir) / ANON_KEY_FILE
    if not path.is_file():
        atomic_write_bytes(path, secrets.token_hex(32).encode())
        os.chmod(path, 0o600)  # the one file not given the common mode: it is a secret
    return bytes.fromhex(path.read_text().strip())


def write_sources(out_dir: Path, task_id: str, sources: Mapping[int, str]) -> None:
    """Record the real sources of one task's items (written with the task's shard)."""
    body = "".join(json.dumps({"item_id": int(i), "source": s}) + "\n" for i, s in sorted(sources.items()))
    atomic_write_bytes(Path(out_dir) / SOURCE_MAP_DIR / f"{task_id}.jsonl", body.encode())


def read_sources(out_dir: Path) -> dict[int, str]:
    """item id -> real source, for an anonymised out dir ({} otherwise)."""
    folder = Path(out_dir) / SOURCE_MAP_DIR
    out: dict[int, str] = {}
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                out[int(rec["item_id"])] = str(rec["source"])
    return out
