"""DICOM scanning and reading against pydicom/nibabel as references, with real sample files."""

from __future__ import annotations

import logging
import random
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radretrieve.archive import ArchiveError, Item, load_volume, read_item, scan, thumbnail_slices
from radretrieve.archive.scanner import ScanPolicy
from radretrieve.archive.selection import build_rules
from radretrieve.foundation.config import PreprocessConfig
from radretrieve.foundation.errors import ReadError
from radretrieve.foundation.ids import item_id
from tests.samples import needs, sample

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # local: get_testdata_file may download
HEAD_CT = sample("ct-head", "head_ct.nii.gz")


def _copy(tmp: Path, *names: str, sub: str = "") -> Path:
    (tmp / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(PYDICOM_FILES / name, tmp / sub / name)
    return tmp


# Several pydicom test files are secondary captures, which the default series selection skips: these tests
# are about decoding them, so they ask for them.
WITH_CAPTURES = ScanPolicy(selection=build_rules(include=["secondary-capture"]))


def _only_item(root: Path) -> Item:
    result = scan(root, policy=WITH_CAPTURES)
    assert result.errors == (), result.errors
    assert len(result.items) == 1
    return result.items[0]


def test_ct_small_hounsfield_units_match_pydicom(tmp_path: Path) -> None:
    item = _only_item(_copy(tmp_path, "CT_small.dcm"))
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    assert item.kind == "image" and item.fmt == "dicom" and item.modality == "CT"
    assert item.item_key == f"dicom:{ds.SOPInstanceUID}" and item.item_id == item_id(item.item_key)
    assert item.study_key == ds.StudyInstanceUID
    vol, spacing = load_volume(item, tmp_path)
    np.testing.assert_array_equal(vol[0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])


def test_ct_windows_are_the_three_channels(tmp_path: Path) -> None:
    item = _only_item(_copy(tmp_path, "CT_small.dcm"))
    cfg = PreprocessConfig(image_size=128)  # CT_small is 128x128 with square pixels: no resize
    dec = read_item(item, tmp_path, cfg)
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    assert dec.pixels.shape == (1, 3, 128, 128) and dec.pixels.dtype == np.float32
    assert dec.shape == (128, 128) and dec.slice_count == 1
    for c, (centre, width) in enumerate(cfg.ct_windows):
        unit = np.clip((hu - (centre - width / 2)) / width, 0, 1)
        np.testing.assert_allclose(dec.pixels[0, c], (unit - cfg.mean[c]) / cfg.std[c], atol=1e-4)


@pytest.mark.parametrize(
    "variant", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm"]
)
def test_mr_transfer_syntax_variants_decode_like_mr_small(tmp_path: Path, variant: str) -> None:
    ref = pydicom.dcmread(PYDICOM_FILES / "MR_small.dcm").pixel_array.astype(np.float32)
    item = _only_item(_copy(tmp_path, variant))
    vol, _ = load_volume(item, tmp_path)
    np.testing.assert_array_equal(vol[0], ref)


def test_jpeg2000_decodes_like_pydicom(tmp_path: Path) -> None:
    item = _only_item(_copy(tmp_path, "JPEG2000.dcm"))
    ds = pydicom.dcmread(PYDICOM_FILES / "JPEG2000.dcm")
    vol, _ = load_volume(item, tmp_path)
    np.testing.assert_array_equal(vol[0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    assert read_item(item, tmp_path, PreprocessConfig(image_size=32)).pixels.shape == (1, 3, 32, 32)


def test_multiframe_is_one_volume(tmp_path: Path) -> None:
    item = _only_item(_copy(tmp_path, "SC_rgb_rle_2frame.dcm"))
    assert item.kind == "volume" and item.shape == (2, 100, 100)
    dec = read_item(item, tmp_path, PreprocessConfig(image_size=32))
    assert dec.pixels.shape == (2, 3, 32, 32)


def _slice(path: Path, pixels: np.ndarray, z: float, series: str, study: str, **attrs: object) -> None:
    """Write one CT slice with pydicom (independent of radretrieve's synth writer)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
    ds.PatientName, ds.PatientID = "Doe^Jane", "MRN-0042"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, z]
    ds.PixelSpacing, ds.RescaleSlope, ds.RescaleIntercept = [1, 1], 1, -1024
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


@needs("ct-head", "head_ct.nii.gz")
def test_head_ct_round_trip_as_shuffled_dicom_series(tmp_path: Path) -> None:
    img = nib.load(HEAD_CT)
    data = np.asarray(img.dataobj).astype(np.int32)  # [X (right), Y (anterior), Z (superior)], diagonal affine
    sx, sy, sz = (float(z) for z in img.header.get_zooms()[:3])
    study, series = generate_uid(), generate_uid()
    order = list(range(data.shape[2]))
    random.Random(7).shuffle(order)
    for n, k in enumerate(order):  # file names shuffled, instance numbers reversed: only positions tell order
        # NIfTI voxel (i, j, k) is at RAS (i*sx, j*sy, k*sz) = LPS (-i*sx, -j*sy, k*sz): rows run -x, columns -y.
        _slice(
            tmp_path / "series" / f"{n:05d}.dcm",
            data[:, :, k].T + 1024,
            k * sz,
            series,
            study,
            ImageOrientationPatient=[-1, 0, 0, 0, -1, 0],
            PixelSpacing=[sy, sx],
            InstanceNumber=data.shape[2] - k,
        )
    shutil.copy(HEAD_CT, tmp_path / "head.nii.gz")
    result = scan(tmp_path)
    assert result.errors == ()
    by_fmt = {item.fmt: item for item in result.items}
    dicom, nifti = by_fmt["dicom"], by_fmt["nifti"]
    assert dicom.item_key == f"dicom-series:{series}" and dicom.source == "series" and dicom.kind == "volume"
    expected = np.flip(data, (0, 1)).transpose(2, 1, 0).astype(np.float32)  # canonical [Z, Y(P), X(L)]
    for item in (dicom, nifti):
        vol, spacing = load_volume(item, tmp_path)
        np.testing.assert_array_equal(vol, expected)
        assert spacing == pytest.approx((sz, sy, sx), rel=1e-5)
        assert item.shape == expected.shape and item.spacing == pytest.approx((sz, sy, sx), rel=1e-5)
    cfg = PreprocessConfig(image_size=64, n_slices=8)
    a, b = read_item(dicom, tmp_path, cfg), read_item(nifti, tmp_path, cfg)  # sparse DICOM read vs full NIfTI
    np.testing.assert_allclose(a.pixels, b.pixels, atol=1e-5)
    assert a.shape == b.shape == expected.shape and a.slice_count == 8
    assert [t.shape for t in thumbnail_slices(dicom, tmp_path, n=3)] == [(256, 256)] * 3


def test_slice_spacing_resampling(tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    for k in range(10):  # 10 slices 2 mm apart, value = slice index
        _slice(tmp_path / f"{k}.dcm", np.full((8, 8), 1024 + 10 * k), 2.0 * k, series, study)
    item = _only_item(tmp_path)
    vol, spacing = load_volume(item, tmp_path)
    assert spacing[0] == pytest.approx(2.0) and list(vol[:, 0, 0]) == [10.0 * k for k in range(10)]
    cfg = PreprocessConfig(image_size=8, n_slices=64, slice_spacing_mm=1.0, ct_windows=((45, 90),) * 3)
    dec = read_item(item, tmp_path, cfg)
    assert dec.slice_count == 19  # 18 mm extent on a 1 mm grid
    unit = dec.pixels[:, 0, 4, 4] * cfg.std[0] + cfg.mean[0]
    np.testing.assert_allclose(unit * 90.0, np.arange(19) * 5.0, atol=1e-3)  # halfway slices interpolated


def test_mixed_sizes_duplicates_and_gaps_are_reported(tmp_path: Path) -> None:
    study = generate_uid()
    mixed, dup, gap = generate_uid(), generate_uid(), generate_uid()
    for k in range(3):
        _slice(tmp_path / "mixed" / f"{k}.dcm", np.zeros((8 if k else 6, 8)), k, mixed, study)
        _slice(tmp_path / "dup" / f"{k}.dcm", np.zeros((8, 8)) + k, min(k, 1), dup, study)
    for k, z in enumerate([0, 1, 2, 6, 7]):
        _slice(tmp_path / "gap" / f"{k}.dcm", np.zeros((8, 8)) + k, z, gap, study)
    result = scan(tmp_path)
    errors = {e.source: e for e in result.errors}
    assert errors["mixed"].error_type == "MixedSeries" and "6x8, 8x8" in errors["mixed"].message
    assert errors["dup"].error_type == "DuplicateSlices"
    assert [i.source for i in result.items] == ["gap"]
    assert [(n.source, n.error_type) for n in result.notes] == [("gap", "SliceGap")]
    with pytest.raises(ArchiveError) as info:
        scan(tmp_path, strict=True)
    assert info.value.error_type in {"MixedSeries", "DuplicateSlices"} and isinstance(info.value, ReadError)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8)
    _slice(
        tmp_path / "m1.dcm",
        ramp,
        0,
        generate_uid(),
        generate_uid(),
        Modality="CR",
        PhotometricInterpretation="MONOCHROME1",
        RescaleIntercept=0,
    )
    vol, _ = load_volume(_only_item(tmp_path), tmp_path)
    np.testing.assert_array_equal(vol[0], 63.0 - ramp)


def test_bad_dicom_inputs_are_typed_errors_and_scanning_goes_on(tmp_path: Path) -> None:
    _copy(tmp_path, "CT_small.dcm", "test-SR.dcm", "MR_small_jpeg_ls_lossless.dcm", "rtplan.dcm")
    (tmp_path / "random.dcm").write_bytes(np.random.default_rng(0).bytes(2048))
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "README").write_text("not dicom, no suffix: ignored")
    result = scan(tmp_path)
    kinds = {e.source: e.error_type for e in result.errors}
    assert kinds == {
        "test-SR.dcm": "StructuredReport",  # not selected as an image (stage select): read as the report
        "MR_small_jpeg_ls_lossless.dcm": "MissingDecoder",
        "rtplan.dcm": "RTPlan",  # not selected (stage select)
        "random.dcm": "CorruptFile",
        "empty.dcm": "EmptyFile",
    }
    missing = next(e for e in result.errors if e.error_type == "MissingDecoder")
    assert "pylibjpeg" in missing.message and "gdcm" in missing.message and missing.source in missing.message
    assert [i.source for i in result.items] == ["CT_small.dcm"]
    with pytest.raises(ArchiveError):
        scan(tmp_path, strict=True)


def _fake_item(name: str) -> Item:
    key = "file:" + name
    return Item(item_id(key), key, "image", "s", key, name, (name,), "dicom")


@pytest.mark.parametrize(
    ("name", "error_type"),
    [
        ("MR_truncated.dcm", "CorruptFile"),
        ("test-SR.dcm", "NoPixelData"),
        ("MR_small_jpeg_ls_lossless.dcm", "MissingDecoder"),
    ],
)
def test_read_stage_errors(tmp_path: Path, name: str, error_type: str) -> None:
    _copy(tmp_path, name)
    with pytest.raises(ArchiveError) as info:
        read_item(_fake_item(name), tmp_path, PreprocessConfig(image_size=32))
    assert info.value.error_type == error_type and info.value.path == name and name in str(info.value)


def test_truncated_pixel_data_is_a_read_error(tmp_path: Path) -> None:
    raw = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(raw[: len(raw) - 5000])
    item = _only_item(tmp_path)  # the header is intact
    with pytest.raises(ArchiveError) as info:
        read_item(item, tmp_path, PreprocessConfig(image_size=32))
    assert info.value.error_type == "CorruptFile" and info.value.stage == "read"


def test_phi_never_reaches_any_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    secrets = [str(ds.PatientName), str(ds.PatientName).split("^")[0], ds.PatientID, "Doe^Jane", "MRN-0042"]
    assert str(ds.PatientName) and ds.PatientID  # the file really carries a name and an id
    _copy(tmp_path / "a", "CT_small.dcm")
    raw = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cut.dcm").write_bytes(raw[: len(raw) - 5000])  # same PHI, fails at read time
    study = generate_uid()
    for k in range(3):  # a mixed-size series carrying a patient name: fails at scan time
        _slice(tmp_path / "a" / "mixed" / f"{k}.dcm", np.zeros((8 if k else 6, 8)), k, "1.2.3.4", study)
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    counts = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for root in (tmp_path / "a", tmp_path / "b"):
            result = scan(root)
            counts.append((len(result.items), len(result.errors)))
            outputs += [repr(result), repr(result.items), repr(result.errors), repr(result.studies)]
            for item in result.items:
                try:
                    outputs.append(repr(read_item(item, root, PreprocessConfig(image_size=32))))
                    outputs.append(repr(load_volume(item, root)[1]))
                except ArchiveError as exc:
                    outputs += [str(exc), exc.reason, repr(exc.args)]
    outputs += [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    assert counts == [(1, 1), (1, 0)] and any("could not be decoded" in o for o in outputs)
    blob = "\n".join(outputs)
    for secret in secrets:
        assert secret not in blob


@pytest.mark.parametrize("signed", [True, False])
def test_native_fast_path_matches_pydicom_for_12_bit_data(tmp_path: Path, signed: bool) -> None:
    rng = np.random.default_rng(3)
    stored = rng.integers(-2048 if signed else 0, 2048 if signed else 4096, (6, 5))
    raw = (stored & 0x0FFF) | (0xA000 if not signed else 0)  # 12 bits stored; junk in the unused high bits
    _slice(
        tmp_path / "a.dcm",
        raw,
        0,
        generate_uid(),
        generate_uid(),
        BitsStored=12,
        HighBit=11,
        PixelRepresentation=int(signed),
        RescaleIntercept=0,
    )
    vol, _ = load_volume(_only_item(tmp_path), tmp_path)
    np.testing.assert_array_equal(vol[0], pydicom.dcmread(tmp_path / "a.dcm").pixel_array.astype(np.float32))
    np.testing.assert_array_equal(vol[0], stored.astype(np.float32))


def test_values_remembered_across_slices_are_pydicoms_own(tmp_path: Path) -> None:
    from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

    from radretrieve.archive.dicom_header import _memo, clear_memo, read_header

    pixels = np.zeros((4, 4))
    names = ("a", "b", "c", "d", "e")
    files = [tmp_path / f"{n}.dcm" for n in names]
    _slice(files[0], pixels, 0.0, "1.2.3.4", "1.2.3", SpecificCharacterSet="ISO_IR 100", SeriesDescription="Crâne")
    _slice(files[1], pixels, 1.0, "1.2.3.4", "1.2.3", SpecificCharacterSet="ISO_IR 144", SeriesDescription="Crтne")
    _slice(files[2], pixels, 2.0, "1.2.3.4", "1.2.3", SeriesDescription="x" * 3000, BodyPartExamined="Doe^John")
    for path, syntax, little in ((files[3], ImplicitVRLittleEndian, True), (files[4], ExplicitVRBigEndian, False)):
        _slice(path, pixels, 3.0, "1.2.3.4", "1.2.3", ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = syntax  # headers only: the pixel bytes are never read here
        pydicom.dcmwrite(path, ds, implicit_vr=little, little_endian=little, force_encoding=True)
    raw = [pydicom.dcmread(p).get_item(0x0008103E).value for p in files[:2]]
    assert raw[0] == raw[1]  # the same bytes, read under two character sets
    clear_memo()
    order = [0, 1, 2, 3, 4, 0, 4, 3]
    headers = [read_header(files[i], files[i].name) for i in order]
    own = [pydicom.dcmread(files[i]) for i in order]  # pydicom alone, each file read fresh
    assert [h.description for h in headers] == [d.get("SeriesDescription", "") for d in own]
    assert [h.description for h in headers[:2]] == ["Crâne", "Crтne"]
    assert [h.orientation for h in headers] == [tuple(float(v) for v in d.ImageOrientationPatient) for d in own]
    assert [h.pixel_spacing for h in headers] == [tuple(float(v) for v in d.PixelSpacing) for d in own]
    assert [h.study_uid for h in headers] == [d.StudyInstanceUID for d in own]
    assert {h.orientation for h in headers} == {(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)}
    assert [h.position for h in headers] == [(0.0, 0.0, float(z)) for z in (0, 1, 2, 3, 3, 0, 3, 3)]
    kept = " ".join(str(v) for v in _memo.values())
    assert "1.2.3.4" in kept and "1.2.3" in kept  # the series' shared values are remembered
    assert "Doe" not in kept and "MRN-0042" not in kept  # identifiers and free text never are
    assert "Crâne" not in kept and "x" * 3000 not in kept


def test_a_file_with_a_huge_character_set_is_read_without_the_memo(tmp_path: Path) -> None:
    from radretrieve.archive.dicom_header import _memo, clear_memo, read_header

    path = tmp_path / "huge.dcm"
    _slice(path, np.zeros((4, 4)), 0.0, "1.2.3.9", "1.2.8", SpecificCharacterSet=["ISO_IR 100"] * 200)
    clear_memo()
    header = read_header(path, path.name)
    assert header.series_uid == "1.2.3.9" and not _memo  # nothing of it is kept
