"""Anonymised outputs: folder and file names can carry patient data (`DOE_JOHN_MRN123456/`), so by default
(`--keep-paths` opts out) every path-derived string of a scan is replaced by a keyed hash before anything is
stored or shown, and so are study keys given as free text (a manifest's or JSON sidecar's `study`, which RIS
exports fill with record numbers). A `study` value that holds an identifier (one of its own row's identifier
values, its study's DICOM identifiers, or one the free-text redaction finds: radretrieve.archive.scanner's
`identifying_key`) is hashed even with `--keep-paths`.

Replaced unless `--keep-paths`: `source`, path-derived item keys (and so item ids), series keys and study keys,
`study` values, and the paths in error records. Always replaced: identifying `study` values. Kept: DICOM UIDs
(linking keys, not names), manifest labels (identifier columns never become labels:
radretrieve.archive.identifiers), and `Item.files` (the real paths, needed to read the pixels; they are never
stored in shards). The hash is HMAC-SHA-256 under a per-out-dir random key, so the same path or study gets the
same hash on every run into that out dir (rows of one study still group), and a name or record number cannot be
recovered by hashing guesses without the key.
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


def _item(item: Item, study_key: str, h: PathHasher, paths: bool) -> Item:
    if not paths:
        return dataclasses.replace(item, study_key=study_key)
    new_key = f"anon:{h(item.item_key)}" if _path_keyed(item.item_key) else item.item_key
    series = h(item.series_key) if _path_keyed(item.series_key) else item.series_key
    return dataclasses.replace(
        item, item_id=item_id(new_key), item_key=new_key, source=h(item.source), series_key=series, study_key=study_key
    )


def _study_key(study: Study, h: PathHasher, paths: bool) -> str:
    """A `study` value that is also one of its row's identifiers is hashed always; other `study` values and
    path-derived study keys (an item's own key, or a folder with a sidecar) when paths are hashed; a
    StudyInstanceUID never (a UID holds no name)."""
    key = study.key
    origins = {i.study_origin for i in study.items}
    if "identifier" in origins:
        return h(key)
    if paths and ("given" in origins or _path_keyed(key) or any(_names_folder(key, i) for i in study.items)):
        return h(key)
    return key


def _names_folder(key: str, item: Item) -> bool:
    return key == item.source or key == item.source.rsplit("/", 1)[0]


def _error(rec: ErrorRecord, h: PathHasher) -> ErrorRecord:
    hashed = h(rec.source)
    # a source of "." (a series spread over the archive's top folders) is no text to replace: it would be every dot
    if rec.source.strip("."):
        message = rec.message.replace(rec.source, hashed)
    else:
        message = rec.message.replace(f"{rec.source}: ", f"{hashed}: ", 1)
    return ErrorRecord(hashed, rec.stage, rec.error_type, message)


def anonymise_scan(result: ScanResult, h: PathHasher, paths: bool = True) -> tuple[ScanResult, dict[int, str]]:
    """The scan with `study` values hashed, and with `paths` its path-derived strings too; and {new item id: real
    source} for finding files again ({} when paths are kept)."""
    studies, real = [], {}
    for study in result.studies:
        key = _study_key(study, h, paths)
        items = tuple(_item(i, key, h, paths) for i in study.items)
        if paths:
            real.update((new.item_id, old.source) for new, old in zip(items, study.items))
        studies.append(dataclasses.replace(study, key=key, items=items))
    anon = dataclasses.replace(
        result,
        studies=tuple(sorted(studies, key=lambda s: s.key)),
        errors=tuple(_error(e, h) for e in result.errors) if paths else result.errors,
        notes=tuple(_error(n, h) for n in result.notes) if paths else result.notes,
    )
    return anon, real
