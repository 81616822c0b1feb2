"""Typed records of an archive scan and of a decoded item (what flows from `scan` to reader workers).

Every field here is either derived from file paths, from the manifest/sidecars, or from the PHI
allow-list in `radretrieve.archive.dicom_header`; nothing else from a DICOM header can reach them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from radretrieve.archive.redact import NO_IDS, PatientIds
from radretrieve.foundation.errors import ReadError
from radretrieve.foundation.names import shown

Kind = Literal["image", "volume"]
Fmt = Literal["dicom", "nifti", "image"]
Stage = Literal["scan", "select", "fetch", "read", "preprocess"]  # fetch: a DICOMweb server failed for good


class Labels(Mapping[str, str]):
    """An immutable, hashable, key-sorted str -> str mapping (so frozen records stay hashable)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._data = {str(k): str(v) for k, v in sorted((items or {}).items())}
        self._hash = hash(tuple(self._data.items()))

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return repr(self._data)


_EMPTY = Labels()


def frozen_labels(labels: Mapping[str, str] | None) -> Labels:
    """A read-only, key-sorted copy of a label mapping (stable repr, equality and hash)."""
    return labels if isinstance(labels, Labels) else Labels(labels)


class ArchiveError(ReadError):
    """A bad input file. `error_type` names the problem class (e.g. "CorruptFile", "MissingDecoder")."""

    def __init__(self, path: str, reason: str, error_type: str, stage: Stage = "read") -> None:
        super().__init__(path, _one_line(reason), stage)
        self.error_type = error_type


def _one_line(text: str, limit: int = 300) -> str:
    """Error messages end up in Parquet rows and log lines: one line, bounded length."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True)
class ErrorRecord:
    """One failed (or noteworthy) input; written to the out dir's `errors/` by the pipeline."""

    source: str  # path relative to the archive root (or as given in the manifest)
    stage: str  # "scan", "select" (a series not selected: error_type is the reason), "read" or "preprocess"
    error_type: str  # CorruptFile, NoPixelData, MissingDecoder, MixedSeries, EmptyFile, ConstantImage, Localizer...
    message: str  # one line naming the file and the problem; never header values outside the allow-list

    def __post_init__(self) -> None:  # a file name that is not UTF-8 is stored in its shown form
        object.__setattr__(self, "source", shown(self.source))
        object.__setattr__(self, "message", shown(self.message))

    @classmethod
    def from_error(cls, exc: ArchiveError) -> ErrorRecord:
        return cls(source=exc.path, stage=exc.stage, error_type=exc.error_type, message=str(exc))


@dataclass(frozen=True)
class Item:
    """One encodable unit: a 2D image or a 3D volume (a DICOM series, a NIfTI file, an image stack)."""

    item_id: int  # radretrieve.foundation.ids.item_id(item_key): the FAISS id
    item_key: str  # stable source key, see radretrieve.archive.__init__ for the scheme
    kind: Kind  # "image" (2D) or "volume" (3D)
    study_key: str  # manifest/sidecar `study`, else StudyInstanceUID, else the parent folder
    series_key: str  # SeriesInstanceUID for DICOM, else the item key
    source: str  # root-relative path; ';'-joined files in slice order; folder path for a DICOM series
    files: tuple[str, ...]  # root-relative files to read, in slice order for volumes
    fmt: Fmt  # "dicom", "nifti" or "image" (PNG/JPEG/...)
    modality: str = ""  # DICOM Modality, or the manifest/sidecar `modality` label; "" if unknown
    body_part: str = ""  # BodyPartExamined, or the `body_part`/`region` label; "" if unknown
    description: str = ""  # SeriesDescription or StudyDescription (allow-listed); "" if none
    text: str = ""  # paired report or caption; "" if none
    labels: Mapping[str, str] = field(default=_EMPTY)  # string labels from manifest/sidecar (read-only)
    split: str = ""  # "train", "val", "test" or ""
    shape: tuple[int, ...] = ()  # source array shape from headers ([Z, Y, X] or [Y, X]); () if unknown
    spacing: tuple[float, ...] = ()  # voxel spacing in mm from headers, same order as shape; () if unknown
    burned_in: bool = False  # the pixels may carry text (patient data): never thumbnailed by default
    # Where the study key came from, for radretrieve.archive.anonymise: "given" (a manifest or sidecar `study`
    # value: hashed unless --keep-paths), "identifier" (such a value that holds an identifier: one of its row's
    # or its study's, or one the free-text redaction finds; hashed always), or "" (a UID, a path or an item key).
    study_origin: str = field(default="", compare=False)
    # The study's identifiers from this item's headers, for redacting its texts; emptied by the scan's
    # `assemble` once redacted, so no later stage holds them (radretrieve.archive.redact).
    patient: PatientIds = field(default=NO_IDS, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", frozen_labels(self.labels))


@dataclass(frozen=True)
class Study:
    """A study: its items and its report."""

    key: str  # study key (see Item.study_key)
    items: tuple[Item, ...]  # sorted by item_key
    report: str = ""  # the distinct item texts joined by a blank line; "" if none
    labels: Mapping[str, str] = field(default=_EMPTY)  # merged item labels (first item wins on conflict)
    split: str = ""  # first non-empty item split

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", frozen_labels(self.labels))


@runtime_checkable
class RemoteArchive(Protocol):
    """An archive on a server (radretrieve.archive.dicomweb.DicomWebSource): series are listed, their headers
    scanned, and items fetched, then decoded. The pipeline drives every kind of server through these methods
    alone (pipelines.scan.scan_remote), so a new protocol is one new source class."""

    @property
    def display(self) -> str:
        """How the archive is named in messages (no credentials)."""
        ...

    def read_item(self, item: Item, cfg: Any) -> Decoded:
        """Fetch and decode one item (raises ArchiveError, stage `fetch` when the server fails for good)."""
        ...

    def list_series(self) -> Any:
        """Every series the server lists (a `ListedSeries`: refs with checked UIDs, and error records for what
        could not be listed); raises RadRetrieveError when the server cannot be listed at all."""
        ...

    def scan_series(self, ref: Any) -> Any:
        """The headers of one listed series (a `SeriesScan`); never raises for a server failure. Runs in a
        reader process or on a cluster worker, so the source must pickle."""
        ...

    def assemble(self, scans: Any, log_paths: bool, policy: Any, listing_errors: Any) -> ScanResult:
        """One ScanResult from scanned series, with the folder scanner's grouping, selection and redaction."""
        ...

    def remove_stale(self) -> None:
        """Remove what readers of this kind of source killed earlier left on disk (scratch copies)."""
        ...


@dataclass(frozen=True)
class ScanResult:
    """What `scan` found: studies sorted by key, errors sorted by source."""

    root: Path | RemoteArchive  # archive root (the manifest's folder for a manifest scan), or a server
    studies: tuple[Study, ...]  # sorted by key
    errors: tuple[ErrorRecord, ...] = ()  # inputs that were skipped, with the reason
    notes: tuple[ErrorRecord, ...] = ()  # non-fatal findings (4D NIfTI first volume, slice gaps)
    rows: int = 0  # manifest scans: rows in the manifest (0 for a folder scan)
    rows_used: int = 0  # manifest scans: rows that gave at least one item
    # manifest columns and sidecar label names taken as patient identifiers: dropped, used to redact (names only)
    identifier_columns: tuple[str, ...] = ()

    @property
    def items(self) -> tuple[Item, ...]:
        """All items, in study order then item-key order (stable across runs)."""
        return tuple(item for study in self.studies for item in study.items)


@dataclass(frozen=True, eq=False)
class Decoded:
    """An item decoded and preprocessed into model input."""

    pixels: np.ndarray  # float32 [S, 3, H, W], H = W = cfg.image_size, CLIP-normalised
    shape: tuple[int, ...]  # source array shape ([Z, Y, X] for volumes, [Y, X] for 2D images)
    spacing: tuple[float, ...]  # source voxel spacing in mm, same order as shape
    slice_count: int  # S: slices in `pixels` (1 for 2D images)

    def __repr__(self) -> str:  # the array itself is too long for logs
        return (
            f"Decoded(pixels=float32{list(self.pixels.shape)}, shape={self.shape}, "
            f"spacing={tuple(round(s, 4) for s in self.spacing)}, slice_count={self.slice_count})"
        )
