"""Read real archives: DICOM series, NIfTI volumes, 2D images and their reports.

`scan(root_or_manifest)` finds studies and items reading headers only; `read_item(item, root, cfg)`
decodes and preprocesses one item into CLIP input. This package only reads: synthetic archives are written
by `radretrieve.synth`.

Item keys (-> `radretrieve.foundation.ids.item_id`, the int64 FAISS id), stable across runs and machines:

- ``dicom-series:<SeriesInstanceUID>``  a series of single-frame slices (CT, MR, PT ...) -> volume
- ``dicom:<SOPInstanceUID>``            one DICOM file: a 2D image (CR/DX/single slice, or any file of a
                                        projection modality) or a multi-frame volume
- ``file:<relative path>``              a NIfTI volume, a PNG/JPEG image, or a DICOM file without a UID
- ``files:<p1;p2;...>``                 a manifest volume made of several image files, in slice order

Paths are normalised root-relative POSIX paths (``radretrieve.foundation.ids.normalise_relpath``); the root is
the scanned folder, or the manifest's folder for a manifest scan, so a folder scan and a scan of a
manifest written next to it give the same keys. DICOM keys do not depend on file names at all.

Series selection (radretrieve.archive.selection) skips non-image objects, localizers and screen captures, each
recorded with stage `select`; structured reports become their study's report (radretrieve.archive.sr); texts
are redacted with the study's own identifiers (radretrieve.archive.redact).

Study keys: the manifest's (or a JSON sidecar's) ``study``, else StudyInstanceUID, else the parent folder.
Reports: a sidecar with the same stem (``x.nii.gz`` -> ``x.txt``, or ``x.json`` with ``text`` and
optional ``labels``/``split``/``study``); a DICOM series folder ``ct/`` -> ``ct.txt``/``ct.json`` beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radretrieve.archive.read import load_volume, read_item, thumbnail_slices
from radretrieve.archive.records import ArchiveError, Decoded, ErrorRecord, Item, ScanResult, Study
from radretrieve.foundation.errors import ReadError

__all__ = [
    "ArchiveError",
    "Decoded",
    "ErrorRecord",
    "Item",
    "ScanResult",
    "Study",
    "load_volume",
    "read_item",
    "scan",
    "thumbnail_slices",
]


def scan(
    root_or_manifest: str | Path,
    strict: bool = False,
    map_fn: Any = map,
    log_paths: bool = True,
    policy: Any = None,
) -> ScanResult:
    """Scan an archive folder, or a manifest file (.csv, .parquet, .jsonl), reading headers only.

    Bad inputs become `ScanResult.errors` and scanning goes on; with `strict=True` the first one is
    raised as an ArchiveError instead. `map_fn` maps the per-file header reads of a folder (in order),
    e.g. a process pool's `imap` to read headers in parallel; manifests are scanned row by row.
    `log_paths=False` keeps file names out of the log (`--anonymise-paths`: names can carry patient data).
    `policy` (a `radretrieve.archive.scanner.ScanPolicy`): series selection, `--reports`, the scrubber;
    None: the default selection rules, no reports file, no scrubber. Texts are always redacted.
    """
    from radretrieve.archive.manifest import is_manifest, scan_manifest
    from radretrieve.archive.scanner import DEFAULT_POLICY, scan_folder

    policy = policy or DEFAULT_POLICY
    path = Path(root_or_manifest)
    if is_manifest(path):
        return scan_manifest(path, strict=strict, log_paths=log_paths, policy=policy)
    if not path.is_dir():
        raise ReadError(str(path), "not a folder or a manifest (.csv, .parquet, .jsonl)", "scan")
    return scan_folder(path, strict=strict, map_fn=map_fn, log_paths=log_paths, policy=policy)
