"""File writers of the synthetic archive: DICOM CT series, DICOM radiographs, NIfTI, PNG.

Arrays come in the reader's canonical arrangement [Z (inf -> sup), Y (ant -> post), X (right -> left)].
No identifying values: patient name and id are fixed, obviously synthetic strings; dates are fixed
(so the same seed gives byte-identical files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
_DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
_HU_OFFSET = 1024  # stored = HU + 1024 with RescaleIntercept -1024, the usual CT convention


@dataclass(frozen=True)
class DicomIds:
    """UIDs and descriptive attributes shared by the files of one synthetic series."""

    study_uid: str  # StudyInstanceUID
    series_uid: str  # SeriesInstanceUID
    frame_uid: str  # FrameOfReferenceUID
    patient_id: str  # an obviously synthetic id, e.g. "SYNTH-00012"
    body_part: str  # BodyPartExamined: HEAD, CHEST, ABDOMEN
    description: str  # Study/SeriesDescription


def _base_dataset(ids: DicomIds, sop_class: str, sop_uid: str, modality: str) -> object:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ids.study_uid, ids.series_uid
    # Synthetic, non-identifying values so the files look like real DICOM; the readers' PHI allow-list never
    # parses these attributes (tests/test_archive_dicom.py proves no name or id reaches any output).
    ds.PatientName, ds.PatientID = "SYNTHETIC^PHANTOM", ids.patient_id
    ds.StudyDate = ds.SeriesDate = "20000101"
    ds.Modality, ds.BodyPartExamined = modality, ids.body_part
    ds.StudyDescription = ds.SeriesDescription = ids.description
    ds.SeriesNumber = 1
    return ds


def _pixels(ds: object, arr: np.ndarray, signed: bool) -> None:
    ds.Rows, ds.Columns = arr.shape  # type: ignore[attr-defined]
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15  # type: ignore[attr-defined]
    ds.PixelRepresentation = 1 if signed else 0  # type: ignore[attr-defined]
    ds.PixelData = arr.astype(np.int16 if signed else np.uint16).tobytes()  # type: ignore[attr-defined]


def write_ct_series(
    folder: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    ids: DicomIds,
    sop_uids: list[str],
    names: list[str],
    descending_instances: bool,
) -> list[Path]:
    """One file per slice of `hu` [Z, Y, X]; slice k lies at z = k * dz (LPS +z = superior).

    `names[k]` is slice k's file name (shuffled by the caller); InstanceNumber runs superior->inferior
    when `descending_instances`, as many scanners number head-first scans.
    """
    folder.mkdir(parents=True, exist_ok=True)
    dz, dy, dx = spacing
    depth, rows, cols = hu.shape
    origin = (-dx * (cols - 1) / 2.0, -dy * (rows - 1) / 2.0, -dz * (depth - 1) / 2.0)
    stored = np.round(hu).astype(np.int32) + _HU_OFFSET
    paths = []
    for k in range(depth):
        ds = _base_dataset(ids, _CT_STORAGE, sop_uids[k], "CT")
        ds.FrameOfReferenceUID = ids.frame_uid
        ds.InstanceNumber = depth - k if descending_instances else k + 1
        ds.ImagePositionPatient = [f"{origin[0]:.4f}", f"{origin[1]:.4f}", f"{origin[2] + k * dz:.4f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]  # rows run +x (patient left), columns +y (posterior)
        ds.PixelSpacing = [f"{dy:.6g}", f"{dx:.6g}"]
        ds.SliceThickness = f"{dz:.6g}"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -_HU_OFFSET, 1, "HU"
        ds.PhotometricInterpretation = "MONOCHROME2"
        _pixels(ds, stored[k], signed=True)
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_radiograph_dicom(
    path: Path, img: np.ndarray, spacing: float, ids: DicomIds, sop_uid: str, modality: str, monochrome1: bool
) -> None:
    """A DX/CR image; MONOCHROME1 files store inverted values (high = dark), as many CR systems do."""
    sop_class = _DX_STORAGE if modality == "DX" else _CR_STORAGE
    ds = _base_dataset(ids, sop_class, sop_uid, modality)
    ds.InstanceNumber = 1
    ds.ImagerPixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    stored = np.round(img * 16.0)  # 0..255 -> 12-bit-like range
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    if monochrome1:
        stored = 4095.0 - stored
    _pixels(ds, stored, signed=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_nifti(path: Path, vol: np.ndarray, spacing: tuple[float, float, float], flip_x: bool) -> None:
    """Write canonical [Z, Y, X] as an int16 NIfTI with a RAS (or, if `flip_x`, LAS) affine."""
    import nibabel as nib

    dz, dy, dx = spacing
    ras = vol.transpose(2, 1, 0)[::-1, ::-1, :]  # [X: right->left, Y: ant->post] -> RAS index order
    affine = np.diag([dx, dy, dz, 1.0])
    if flip_x:  # store x reversed (LAS), as some converters do; the reader's canonicalisation undoes it
        ras = ras[::-1]
        affine[0, 0] = -dx
    affine[:3, 3] = [-dx * (vol.shape[2] - 1) / 2.0 * np.sign(affine[0, 0]), -dy * (vol.shape[1] - 1) / 2.0, 0.0]
    img = nib.Nifti1Image(np.ascontiguousarray(ras).astype(np.int16), affine)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def write_png(path: Path, img: np.ndarray) -> None:
    """An 8-bit greyscale PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, format="PNG")
