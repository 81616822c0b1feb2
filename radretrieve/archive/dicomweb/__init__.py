"""A DICOMweb server (a PACS) as an archive: QIDO-RS lists studies and series, WADO-RS fetches them.

`radretrieve index dicomweb+http://HOST:PORT/dicom-web --out OUT` reads a server with the same code as a
folder: each instance's metadata is scanned as a header-only file (`scan`), so items, item ids (from the
UIDs), series grouping and every selection rule are the folder scan's; each item's instances are fetched to
temporary files and decoded by `radretrieve.archive.read_item` (`fetch`). This package only reads; the
pipeline (`pipelines.scan.scan_remote`, `pipelines.job`) runs the fetches in its reader processes and
skips series already indexed (incremental sync by Series Instance UID).
"""

from __future__ import annotations

from radretrieve.archive.dicomweb.auth import AUTH_ENV, Auth, parse_auth, resolve_auth
from radretrieve.archive.dicomweb.source import (
    DicomWebSource,
    Limits,
    Listing,
    Retry,
    is_dicomweb,
    parse_source,
)

__all__ = [
    "AUTH_ENV",
    "Auth",
    "DicomWebSource",
    "Limits",
    "Listing",
    "Retry",
    "is_dicomweb",
    "parse_auth",
    "parse_source",
    "resolve_auth",
]
