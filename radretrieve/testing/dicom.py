"""Small real DICOM files for tests: CT slices with chosen geometry, UIDs and (planted) patient data; structured
reports (Basic Text, Enhanced, Comprehensive SR) with a content tree; objects that are not images (RT, SEG, KO,
PR, encapsulated PDF) as a PACS holds them.

The files are written with pydicom as a PACS would store them (file meta, explicit VR little endian), so the
archive readers see nothing test-specific about them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
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
    meta.MediaStorageSOPClassUID = str((attrs or {}).get("SOPClassUID", CT_IMAGE_STORAGE))
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
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


BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
# Objects without pixel data: (SOP Class UID, Modality).
NON_IMAGE_OBJECTS = {
    "RTStructure": ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT"),
    "RTPlan": ("1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN"),
    "KeyObject": ("1.2.840.10008.5.1.4.1.1.88.59", "KO"),
    "PresentationState": ("1.2.840.10008.5.1.4.1.1.11.1", "PR"),
    "EncapsulatedDocument": ("1.2.840.10008.5.1.4.1.1.104.1", "DOC"),
    "Segmentation": ("1.2.840.10008.5.1.4.1.1.66.4", "SEG"),
}


def _code(meaning: str, value: str = "121071", scheme: str = "DCM") -> object:
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _save(ds: object, path: Path, sop_class: str) -> Path:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # type: ignore[attr-defined]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta  # type: ignore[attr-defined]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)  # type: ignore[attr-defined]
    return path


def write_non_image(path: Path, kind: str, study: str, attrs: dict[str, object] | None = None) -> Path:
    """An object without pixel data of one of NON_IMAGE_OBJECTS' kinds, in a series of its own."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    sop_class, modality = NON_IMAGE_OBJECTS[kind]
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, generate_uid(), modality
    for key, value in (attrs or {}).items():
        setattr(ds, key, value)
    return _save(ds, path, sop_class)


def write_sr(
    path: Path,
    study: str,
    sections: list[tuple[str, list[str]]],
    sop_class: str = BASIC_TEXT_SR,
    title: str = "Radiology Report",
    attrs: dict[str, object] | None = None,
) -> Path:
    """A structured report: a titled CONTAINER holding one CONTAINER per (heading, texts) section, each with
    TEXT items, plus an observer-context PNAME item (a person's name, which is not report text)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    def item(relationship: str, value_type: str, concept: str, **values: object) -> Dataset:
        it = Dataset()
        it.RelationshipType, it.ValueType = relationship, value_type
        it.ConceptNameCodeSequence = [_code(concept)]
        for key, value in values.items():
            setattr(it, key, value)
        return it

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, generate_uid(), "SR"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code(title, "18748-4", "LN")]
    observer = item("HAS OBS CONTEXT", "PNAME", "Person Observer Name", PersonName="Welby^Marcus")
    content = [observer]
    for heading, texts in sections:
        section = item("CONTAINS", "CONTAINER", heading, ContinuityOfContent="SEPARATE")
        section.ContentSequence = [item("CONTAINS", "TEXT", "Finding", TextValue=t) for t in texts]
        content.append(section)
    ds.ContentSequence = content
    for key, value in (attrs or {}).items():
        setattr(ds, key, value)
    return _save(ds, path, sop_class)


# -- a small PACS-like archive: what series selection skips, reports in three forms, planted identifiers ----
# Report texts and descriptions carry the planted identifiers in the forms people write them; none may ever
# reach an output (the identifiers are redacted from the study's free text).
PLANTED_TEXTS = (
    "Jane Doe (MRN-0042-77), born 23/04/1961, accession ACC-98765-X: right lower lobe nodule",
    "DOE, JANE seen again on 1961-04-23? no: 23 April 1961 is the birth date; id MRN 0042 77",
    "Follow-up for Doe^Jane^Q, accession ACC98765X, DOB 04/23/1961 and 23.04.1961",
)


@dataclass(frozen=True)
class PlantedArchive:
    """What `write_planted_archive` wrote."""

    root: Path  # the archive folder
    study_a: str  # StudyInstanceUID of the study with the SR and every object selection skips
    study_b: str  # StudyInstanceUID of the study with a sidecar report and a --reports row by UID
    skipped: dict[str, int]  # series the default selection skips, by reason
    flagged: tuple[str, ...]  # sources of the items that must carry the burned_in flag
    reports_csv: Path  # a --reports file: a row by AccessionNumber (study A), a row by StudyInstanceUID (B)
    report_words: tuple[str, ...]  # words of each report form (SR, sidecar, --reports) that must get through


def write_planted_archive(root: Path) -> PlantedArchive:
    """Two studies of one patient (PLANTED_PHI in every header), with a CT series per study whose
    SeriesDescription names the patient, and, in study A: a localizer (ImageType), a lateral scout (geometry),
    a secondary-capture dose report, six non-image objects, a Basic Text SR, an ultrasound image and a CT image
    with BurnedInAnnotation YES. Study B: an Enhanced SR, a sidecar report next to its series folder."""
    from pydicom.uid import generate_uid

    root = Path(root)
    rng = np.random.default_rng(7)
    phi = dict(PLANTED_PHI)
    desc = dict(phi, SeriesDescription="CT CHEST Jane Doe 19610423")
    study_a, _ = write_ct_series(root / "a" / "ct", 4, attrs=desc)
    study_b, _ = write_ct_series(root / "b" / "ct", 3, attrs=dict(phi, StudyDescription="CT for DOE^JANE"), seed=1)
    loc = dict(phi, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    write_ct_series(root / "a" / "localizer", 2, study=study_a, attrs=loc, seed=2)
    scout = dict(phi, ImageOrientationPatient=[0, 1, 0, 0, 0, -1])  # sagittal: a lateral scout
    write_ct_slice(
        root / "a" / "scout" / "IM0.dcm", rng.integers(900, 1400, (16, 16)), 0.0, generate_uid(), study_a, scout
    )
    dose = dict(phi, SOPClassUID=SECONDARY_CAPTURE, Modality="CT", SeriesDescription="Dose Report Jane Doe")
    write_ct_slice(
        root / "a" / "dose" / "IM0.dcm", rng.integers(900, 1400, (16, 16)), 0.0, generate_uid(), study_a, dose
    )
    for kind in NON_IMAGE_OBJECTS:
        write_non_image(root / "a" / "objects" / f"{kind}.dcm", kind, study_a, phi)
    write_sr(root / "a" / "sr" / "report.dcm", study_a, [("Findings", [PLANTED_TEXTS[0]]), ("Impression", ["stable"])],
             attrs=phi)  # fmt: skip
    us = dict(phi, SOPClassUID=US_IMAGE, Modality="US")
    write_ct_slice(root / "a" / "us" / "IM0.dcm", rng.integers(900, 1400, (16, 16)), 0.0, generate_uid(), study_a, us)
    burned = dict(phi, BurnedInAnnotation="YES")
    write_ct_slice(
        root / "a" / "burned" / "IM0.dcm", rng.integers(900, 1400, (16, 16)), 0.0, generate_uid(), study_a, burned
    )
    write_sr(root / "b" / "sr.dcm", study_b, [("Findings", ["enhanced sr text"])], ENHANCED_SR, attrs=phi)
    (root / "b" / "ct.txt").write_text("sidecar report " + PLANTED_TEXTS[1])
    reports = root.parent / (root.name + "-reports.csv")
    with reports.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["AccessionNumber", "StudyInstanceUID", "text"])
        writer.writerow([phi["AccessionNumber"], "", "ris report A " + PLANTED_TEXTS[2]])
        writer.writerow(["", study_b, "ris report B " + PLANTED_TEXTS[0]])
    skipped = {"Localizer": 2, "SecondaryCapture": 1, "StructuredReport": 2, **dict.fromkeys(NON_IMAGE_OBJECTS, 1)}
    return PlantedArchive(
        root=root,
        study_a=study_a,
        study_b=study_b,
        skipped=skipped,
        flagged=("a/burned/IM0.dcm", "a/us/IM0.dcm"),
        reports_csv=reports,
        report_words=("nodule", "Impression", "enhanced sr text", "sidecar report", "ris report A", "ris report B"),
    )


def planted_variants() -> list[str]:
    """The planted identifiers in every form PLANTED_TEXTS and the descriptions write them (and more)."""
    return [
        "Doe^Jane^Q", "Doe^Jane", "Jane Doe", "Doe, Jane", "Doe Jane", "MRN-0042-77", "MRN 0042 77", "MRN004277",
        "ACC-98765-X", "ACC98765X", "19610423", "1961-04-23", "23/04/1961", "04/23/1961", "23.04.1961",
        "23 April 1961",
    ]  # fmt: skip
