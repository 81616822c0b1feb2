"""`--anonymise-paths`: folder and file names can carry patient data (`DOE_JOHN_MRN123456/`), so with this option
every path-derived string of a scan is replaced by a keyed hash before anything is stored or shown.

Replaced: `source`, path-derived item keys (and so item ids), series keys and study keys, and the paths in
error records. Kept: DICOM UIDs (linking keys, not names), manifest `study` values and labels (the dataset's
own data), and `Item.files` (the real paths, needed to read the pixels; they are never stored in shards).
The hash is HMAC-SHA-256 under a per-out-dir random key, so the same path gets the same hash on every run
into that out dir, and a name cannot be recovered by hashing guesses without the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from dataclasses import dataclass

from radretrieve.archive.records import ErrorRecord, Item, ScanResult, Study
from radretrieve.foundation.ids import item_id

PREFIX = "h-"  # anonymised sources and keys start with this
PATH_KEY_PREFIXES = ("file:", "files:")  # item keys made of paths (DICOM keys are UIDs)


@dataclass(frozen=True)
class PathHasher:
    """Keyed, stable hashes of paths."""

    key: bytes  # secret of the out dir (radretrieve.outdir.anonymise)

    def __call__(self, text: str) -> str:
        return PREFIX + hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:20]


def _path_keyed(key: str) -> bool:
    return key.startswith(PATH_KEY_PREFIXES)


def _item(item: Item, study_key: str, h: PathHasher) -> Item:
    new_key = f"anon:{h(item.item_key)}" if _path_keyed(item.item_key) else item.item_key
    series = h(item.series_key) if _path_keyed(item.series_key) else item.series_key
    return dataclasses.replace(
        item, item_id=item_id(new_key), item_key=new_key, source=h(item.source), series_key=series, study_key=study_key
    )


def _study_key(study: Study, h: PathHasher) -> str:
    """Path-derived study keys (an item's own key, or a folder with a sidecar) are hashed; UIDs and manifest
    `study` values are not paths and stay (a UID holds no name)."""
    key = study.key
    if _path_keyed(key) or any(key == i.source or key == i.source.rsplit("/", 1)[0] for i in study.items):
        return h(key)
    return key


def _error(rec: ErrorRecord, h: PathHasher) -> ErrorRecord:
    hashed = h(rec.source)
    return ErrorRecord(hashed, rec.stage, rec.error_type, rec.message.replace(rec.source, hashed))


def anonymise_scan(result: ScanResult, h: PathHasher) -> tuple[ScanResult, dict[int, str]]:
    """The scan with path-derived strings hashed, and {new item id: real source} for finding files again."""
    studies, real = [], {}
    for study in result.studies:
        key = _study_key(study, h)
        items = tuple(_item(i, key, h) for i in study.items)
        real.update((new.item_id, old.source) for new, old in zip(items, study.items))
        studies.append(dataclasses.replace(study, key=key, items=items))
    anon = dataclasses.replace(
        result,
        studies=tuple(sorted(studies, key=lambda s: s.key)),
        errors=tuple(_error(e, h) for e in result.errors),
        notes=tuple(_error(n, h) for n in result.notes),
    )
    return anon, real
