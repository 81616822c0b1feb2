"""Small real DICOM files for tests: CT slices with chosen geometry, UIDs and (planted) patient data.

The files are written with pydicom as a PACS would store them (file meta, explicit VR little endian), so the
archive readers see nothing test-specific about them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Identifiers a test plants in headers; none of them may ever reach an output.
PLANTED_PHI = {
    "PatientName": "Doe^Jane^Q",
    "PatientID": "MRN-0042-77",
    "PatientBirthDate": "19610423",
    "AccessionNumber": "ACC-98765-X",
    "InstitutionName": "St Elsewhere Memorial Hospital",
    "ReferringPhysicianName": "Welby^Marcus",
}


def phi_strings(phi: dict[str, str] = PLANTED_PHI) -> list[str]:
    """Every form of the planted identifiers a leak could take (name parts, date as written)."""
    out = set()
    for key, value in phi.items():
        out.add(value)
        if key.endswith("Name"):
            out |= {part for part in value.split("^") if len(part) > 2}
            out.add(value.replace("^", " "))
    return sorted(out)


def write_ct_slice(
    path: Path,
    pixels: np.ndarray,
    z: float,
    series: str,
    study: str,
    attrs: dict[str, object] | None = None,
) -> Path:
    """One CT slice: uint16 stored values `pixels` [rows, cols] (HU = value - 1024) at position z (mm)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, z]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in (attrs or {}).items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(
    folder: Path,
    n: int,
    size: int = 16,
    study: str | None = None,
    attrs: dict[str, object] | None = None,
    seed: int = 0,
) -> tuple[str, str]:
    """`n` slices of a random CT series in `folder`; returns (study UID, series UID)."""
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    study = study or generate_uid()
    series = generate_uid()
    for k in range(n):
        pixels = rng.integers(900, 1400, (size, size))
        write_ct_slice(Path(folder) / f"IM{k:04d}.dcm", pixels, float(k), series, study, attrs)
    return study, series
