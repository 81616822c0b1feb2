"""Open an out dir for writing: create it, or check and repair it before a job adds to it.

Runs with the out dir's writer lock held (radretrieve.foundation.lock), so everything found half-written
belongs to a writer that is gone: temp files are removed, shards that never reached the manifest are
removed, and listed shards that are missing or damaged are dropped from the manifest so that the job
re-runs their tasks.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from radretrieve.foundation.config import config_hash
from radretrieve.foundation.errors import FingerprintMismatch, RadRetrieveError
from radretrieve.foundation.fileio import remove_stale_temps
from radretrieve.foundation.lock import LOCK_FILE
from radretrieve.models.protocol import Encoder
from radretrieve.outdir.layout import MANIFEST, OWNED, SHARD_DIR
from radretrieve.outdir.manifest import Manifest, read_manifest, write_manifest
from radretrieve.outdir.model_ref import model_reference
from radretrieve.outdir.verify import damaged_shards

log = logging.getLogger(__name__)


def open_out_dir(out_dir: Path, model: Encoder, overwrite: bool, anonymise: bool = False) -> Manifest:
    """Create or reopen `out_dir` for `model`; refuse another model or preprocessing unless `overwrite`, and
    a change of `--anonymise-paths` (an out dir's sources are all hashed, or none are)."""
    fingerprint, prep = model.fingerprint, config_hash(model.config.preprocess)
    for path in remove_stale_temps(out_dir):
        log.info("removed %s, left by an interrupted write", path.relative_to(out_dir))
    if (out_dir / MANIFEST).is_file():
        old = read_manifest(out_dir)
        if (old.fingerprint, old.preprocess_hash) == (fingerprint, prep):
            if old.anonymised != anonymise and old.shards and not overwrite:
                was = "with anonymised paths (the default)" if old.anonymised else "with --keep-paths"
                keep = "without --keep-paths" if old.anonymised else "with --keep-paths"
                raise RadRetrieveError(f"{out_dir} was built {was}; index into it {keep}, or pass --overwrite")
            if old.anonymised == anonymise or not old.shards:
                return repair(out_dir, dataclasses.replace(old, anonymised=anonymise))
        if not overwrite:
            # the fingerprint covers the preprocessing too, so name the preprocessing first when it differs
            what = "preprocessing (--preprocess)" if old.preprocess_hash != prep else "model"
            raise FingerprintMismatch(
                f"{out_dir} was built with another {what} (fingerprint {old.fingerprint}); "
                "use another --out or pass --overwrite to rebuild it"
            )
        _clear(out_dir)
    elif _has_other_files(out_dir) and not overwrite:
        raise RadRetrieveError(f"{out_dir} exists, is not empty and is not a radretrieve out dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(fingerprint, prep, model.config.embed_dim, model_reference(model, out_dir), (), anonymise)
    write_manifest(out_dir, manifest)
    return manifest


def repair(out_dir: Path, manifest: Manifest) -> Manifest:
    """Remove unlisted shards; drop (and delete) listed shards that are missing or damaged."""
    listed = {out_dir / s.file for s in manifest.shards}
    for path in sorted((out_dir / SHARD_DIR).glob("*")) if (out_dir / SHARD_DIR).is_dir() else []:
        if path not in listed:
            log.info("removing unlisted %s from an interrupted run", path.name)
            path.unlink()
    damaged = damaged_shards(out_dir, manifest, full=True)
    for file, problem in damaged.items():
        log.warning("%s: damaged shard (%s): its task runs again", out_dir / file, problem)
        (out_dir / file).unlink(missing_ok=True)
    if damaged:
        manifest = manifest.without(set(damaged))
        write_manifest(out_dir, manifest)
    return manifest


def _has_other_files(out_dir: Path) -> bool:
    return out_dir.exists() and any(p.name != LOCK_FILE for p in out_dir.iterdir())


def _clear(out_dir: Path) -> None:
    """Remove everything a job owns (the lock stays: it is held)."""
    for name in OWNED:
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
