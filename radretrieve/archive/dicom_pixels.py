"""DICOM pixel decoding: stored values -> float32 in Hounsfield units (CT) or raw intensity.

Only the pixel data and the allow-listed attributes of a dataset are touched (pydicom converts
elements lazily, so identifying attributes are never even parsed into values).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radretrieve.archive.dicom_header import DicomHeader, _header, check_decoder
from radretrieve.archive.records import ArchiveError

# ITU-R BT.601 luma: how colour DICOM (ultrasound, secondary capture) becomes one grey channel.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def read_dicom(path: Path, rel: str) -> tuple[np.ndarray, DicomHeader]:
    """Decode one DICOM file into float32 [F, Y, X] (F frames), rescaled; and its allow-listed header.

    Rescale slope/intercept are applied (HU for CT); MONOCHROME1 is inverted so that higher values
    are always brighter; colour (RGB/YBR/palette) is converted to luma.
    """
    import pydicom

    if path.stat().st_size == 0:
        raise ArchiveError(rel, "empty file (0 bytes)", "EmptyFile")
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001 - garbage input raises many exception types
        raise ArchiveError(rel, f"not a readable DICOM file ({type(exc).__name__})", "CorruptFile") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ArchiveError(rel, "DICOM object has no pixel data (e.g. a structured report)", "NoPixelData")
    check_decoder(ds, rel, "read")
    header = _header(ds, rel, int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0), with_ids=False)
    arr = _decode(ds, rel)
    return _to_float(arr, ds, header), header


def _native(ds: object) -> np.ndarray | None:
    """Uncompressed greyscale pixel data straight from the bytes (pydicom's generic path costs ~1 ms/file).

    None when the fast path does not apply (compressed, colour, 1-bit, short data): pydicom decodes then.
    """
    meta = getattr(ds, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    bits, stored = int(getattr(ds, "BitsAllocated", 0) or 0), int(getattr(ds, "BitsStored", 0) or 0)
    if uid is None or uid.is_compressed or bits not in (8, 16, 32) or not 0 < stored <= bits:
        return None
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1 or "PixelData" not in ds:  # type: ignore[operator]
        return None
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    dtype = np.dtype(f"{'>' if not uid.is_little_endian else '<'}{'i' if signed else 'u'}{bits // 8}")
    rows, cols = int(ds.Rows), int(ds.Columns)  # type: ignore[attr-defined]
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    raw = ds.PixelData  # type: ignore[attr-defined]
    count = rows * cols * frames
    if len(raw) < count * dtype.itemsize:
        return None  # truncated: let pydicom raise its own error
    arr = np.frombuffer(raw, dtype=dtype, count=count).reshape(frames, rows, cols).astype(dtype.newbyteorder("="))
    if stored < bits:  # drop unused high bits; sign-extend signed values from bit `stored - 1`
        shift = bits - stored
        arr = (arr << shift) >> shift if signed else arr & ((1 << stored) - 1)
    return arr if frames > 1 else arr[0]


def _decode(ds: object, rel: str) -> np.ndarray:
    fast = _native(ds)
    if fast is not None:
        return fast
    try:
        arr = ds.pixel_array  # type: ignore[attr-defined]
    except RuntimeError as exc:
        if "Unable to decompress" in str(exc) or "missing dependencies" in str(exc):
            raise ArchiveError(rel, "no pixel decoder installed for this transfer syntax", "MissingDecoder") from None
        raise ArchiveError(rel, f"pixel data could not be decoded ({type(exc).__name__})", "CorruptFile") from None
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt pixel data raise many types
        raise ArchiveError(rel, f"pixel data could not be decoded ({type(exc).__name__})", "CorruptFile") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    return arr


def _to_float(arr: np.ndarray, ds: object, header: DicomHeader) -> np.ndarray:
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    colour = samples == 3 or (arr.ndim >= 3 and arr.shape[-1] == 3 and arr.shape[-2] == header.cols)
    if colour:
        out = arr.astype(np.float32) @ _LUMA
    else:
        out = arr.astype(np.float32)
    if out.ndim == 2:
        out = out[None]
    if not colour:
        slope = _float_attr(ds, "RescaleSlope", 1.0)
        intercept = _float_attr(ds, "RescaleIntercept", 0.0)
        if slope != 1.0 or intercept != 0.0:
            out = out * np.float32(slope) + np.float32(intercept)
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            out = (np.nanmax(out) + np.nanmin(out)) - out  # stored as "high = dark": invert
    return np.ascontiguousarray(out, dtype=np.float32)


def _float_attr(ds: object, name: str, default: float) -> float:
    try:
        value = float(getattr(ds, name, default))
    except (TypeError, ValueError):
        return default
    return value if np.isfinite(value) else default


def series_affine(headers: list[DicomHeader], spacing_z: float) -> np.ndarray | None:
    """RAS affine of a stack [X=column, Y=row, Z=slice] built from the first slice's geometry.

    DICOM positions are LPS; negating the first two rows turns them into nibabel's RAS. None when the
    series has no geometry (the stack is then kept in file order).
    """
    first = headers[0]
    if not first.position or not first.orientation:
        return None
    row_dir = np.array(first.orientation[:3])  # direction of increasing column index
    col_dir = np.array(first.orientation[3:])  # direction of increasing row index
    normal = np.cross(row_dir, col_dir)
    row_sp, col_sp = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_sp
    affine[:3, 1] = col_dir * row_sp
    affine[:3, 2] = normal * spacing_z
    affine[:3, 3] = first.position
    affine[:2] *= -1.0  # LPS -> RAS
    return affine
