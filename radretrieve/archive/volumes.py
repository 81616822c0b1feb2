"""Load an Item's voxels as float32 [Z, Y, X] in one canonical arrangement, whatever the format.

Canonical arrangement: nibabel's closest canonical (RAS+) orientation, then arranged as
[Z (inferior -> superior), Y (anterior -> posterior), X (patient right -> patient left)], which is how
radiologists view an axial slice (anterior up, patient's right on the viewer's left). DICOM series
(positions/orientations in LPS) and NIfTI volumes (RAS affines) end up identical for the same anatomy.
2D images are [1, Y, X] in their stored orientation. Values: Hounsfield units for CT, raw intensity
otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radretrieve.archive.dicom_header import DicomHeader, order_series
from radretrieve.archive.dicom_pixels import read_dicom, series_affine
from radretrieve.archive.records import ArchiveError, Item, Stage

log = logging.getLogger(__name__)
DEFAULT_MAX_IMAGE_PIXELS = 64 * 2**20  # 8k x 8k: a 2D image above it is shrunk while decoding or refused


@dataclass(frozen=True, eq=False)
class Volume:
    """Decoded voxels of one item, before preprocessing."""

    data: np.ndarray  # float32 [Z, Y, X] (Z = 1 for 2D images), canonical arrangement
    spacing: tuple[float, float, float]  # (dz, dy, dx) in mm; dz = 1.0 for 2D images
    is_2d: bool  # a single 2D image (its shape/spacing are reported without Z)
    window: tuple[float, float] | None = None  # DICOM (WindowCenter, WindowWidth) of the file/series, if any
    eight_bit: bool = False  # decoded from 8-bit image files (values 0..255), as CLIP's training images were


def orientation_of(affine: np.ndarray, source: str, stage: Stage = "read") -> np.ndarray:
    """nibabel's `io_orientation` of a RAS affine ([3, 2] float: RAS axis and flip of each array axis).

    A header is untrusted input: NaN or inf in it, or a degenerate matrix (a zero pixel spacing, a zero
    direction), makes nibabel's SVD fail or return NaN axes, which would stop a whole job. Such an affine is
    one bad file (`BadGeometry`), refused here, the one place every affine passes through."""
    import nibabel as nib

    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise ArchiveError(source, "header affine holds NaN or inf values", "BadGeometry", stage)
    with np.errstate(all="ignore"):  # overflow of huge values ends in NaN axes, refused below
        ornt = nib.orientations.io_orientation(matrix)
    axes = ornt[:, 0]
    if not np.isfinite(ornt).all() or sorted(axes.astype(int).tolist()) != [0, 1, 2]:
        raise ArchiveError(source, "header affine is degenerate (no orientation for every axis)", "BadGeometry", stage)
    return ornt


def header_zooms(zooms: Sequence[float], source: str, stage: Stage = "read") -> list[float]:
    """The first three voxel sizes of a header (padded with 1.0); zero or negative means unknown (1.0), NaN
    or inf is a bad file (`BadGeometry`) rather than a spacing that poisons resizing and the shards."""
    values = [float(z) for z in (tuple(zooms) + (1.0, 1.0, 1.0))[:3]]
    if not all(np.isfinite(values)):
        raise ArchiveError(source, f"header voxel sizes are not finite ({values})", "BadGeometry", stage)
    return [z if z > 0 else 1.0 for z in values]


def ras_to_zyx(data_xyz: np.ndarray, affine: np.ndarray, source: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reorient an [X, Y, Z] array with a RAS affine to canonical [Z, Y(P), X(L)]; return it and (dz, dy, dx)."""
    import nibabel as nib

    ornt = orientation_of(affine, source)
    to_ras = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    ras = nib.orientations.apply_orientation(data_xyz, to_ras)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing_ras = [float(zooms[int(ax)]) for ax in np.argsort(to_ras[:, 0])]  # zooms of output axes R, A, S
    return _ras_array_to_zyx(ras), (spacing_ras[2], spacing_ras[1], spacing_ras[0])


def _ras_array_to_zyx(ras: np.ndarray) -> np.ndarray:
    # Flip R->L and A->P so rows run anterior->posterior and columns patient right->left (viewer's convention).
    return np.ascontiguousarray(ras[::-1, ::-1, :].transpose(2, 1, 0), dtype=np.float32)


def load_dicom_series(root: Path, files: Sequence[str], series_path: str) -> Volume:
    """Read single-frame DICOM files of one series, order them along the slice normal, stack them."""
    slices, headers = [], []
    for rel in files:
        arr, header = read_dicom(root / rel, rel)
        slices.append(arr[0])
        headers.append(header)
    by_path = dict(zip([h.path for h in headers], slices))
    order = order_series(headers, series_path)  # raises on mixed sizes/orientations, duplicates
    stack = np.stack([by_path[h.path] for h in order.headers])  # [K, rows, cols]
    affine = series_affine(list(order.headers), order.slice_spacing)
    window = series_window(list(order.headers))
    if affine is None:  # no geometry: keep InstanceNumber order, stored in-plane orientation
        row_sp, col_sp = headers[0].pixel_spacing
        return Volume(stack, (order.slice_spacing, row_sp, col_sp), is_2d=False, window=window)
    data, spacing = ras_to_zyx(stack.transpose(2, 1, 0), affine, series_path)
    return Volume(data, spacing, is_2d=False, window=window)


def series_window(headers: Sequence[DicomHeader]) -> tuple[float, float] | None:
    """The display window of a series: its middle slice's (slices of one series normally share it)."""
    windows = [h.window for h in headers if h.window is not None]
    return windows[len(windows) // 2] if windows else None


def load_dicom_file(root: Path, rel: str) -> Volume:
    """A single DICOM file: a 2D image, or a multi-frame volume (frames kept in stored order)."""
    arr, header = read_dicom(root / rel, rel)
    row_sp, col_sp = header.pixel_spacing
    if arr.shape[0] == 1:
        return Volume(arr, (1.0, row_sp, col_sp), is_2d=True, window=header.window)
    return Volume(arr, (header.thickness or 1.0, row_sp, col_sp), is_2d=False, window=header.window)


def load_nifti(root: Path, rel: str) -> Volume:
    """A NIfTI volume reoriented with `nibabel.as_closest_canonical`; 4D keeps the first volume."""
    import nibabel as nib

    path = root / rel
    if path.stat().st_size == 0:
        raise ArchiveError(rel, "empty file (0 bytes)", "EmptyFile")
    try:
        raw = nib.load(path)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on garbage headers
        raise ArchiveError(rel, f"not a readable NIfTI file ({type(exc).__name__}: {exc})", "CorruptFile") from None
    orientation_of(raw.affine, rel)  # before as_closest_canonical, whose SVD fails on a NaN affine
    header_zooms(raw.header.get_zooms(), rel)  # refuse NaN/inf voxel sizes before decoding
    try:
        img = nib.as_closest_canonical(raw)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel/gzip/zlib raise many types on corrupt files
        raise ArchiveError(rel, f"not a readable NIfTI file ({type(exc).__name__}: {exc})", "CorruptFile") from None
    if data.ndim == 4:
        data = data[..., 0]  # 4D (time/echo series): the first volume
    elif data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or min(data.shape) == 0:
        raise ArchiveError(rel, f"NIfTI data has unsupported shape {data.shape}", "CorruptFile")
    zooms = header_zooms(img.header.get_zooms(), rel)
    return Volume(_ras_array_to_zyx(data), (zooms[2], zooms[1], zooms[0]), is_2d=False)


def max_image_pixels() -> int:
    """The largest 2D image decoded at full size: RADRETRIEVE_MAX_IMAGE_PIXELS, default 64 M (8k x 8k)."""
    raw = os.environ.get("RADRETRIEVE_MAX_IMAGE_PIXELS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_IMAGE_PIXELS


def load_image(root: Path, rel: str) -> np.ndarray:
    """A 2D image file (PNG, JPEG, ...) as float32 [Y, X]; colour converted to luma (PIL 'L')."""
    return load_image_plane(root, rel)[0]


def load_image_plane(root: Path, rel: str) -> tuple[np.ndarray, bool]:
    """A 2D image file (PNG, JPEG, ...) as float32 [Y, X], and whether it was 8-bit (0..255 values);
    colour converted to luma (PIL 'L').

    One file must not take gigabytes: a JPEG above `max_image_pixels()` is decoded at 1/2, 1/4 or 1/8 scale
    (the JPEG decoder's own reduction, `draft`), other formats above it are refused (`ImageTooLarge`)."""
    from PIL import Image, ImageOps

    path = root / rel
    if path.stat().st_size == 0:
        raise ArchiveError(rel, "empty file (0 bytes)", "EmptyFile")
    limit = max_image_pixels()
    try:
        with Image.open(path) as img:
            _shrink_or_refuse(img, rel, limit)
            img = ImageOps.exif_transpose(img)
            if img.mode not in ("L", "I", "I;16", "I;16B", "F"):
                img = img.convert("L")
            return np.asarray(img, dtype=np.float32), img.mode == "L"
    except ArchiveError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError ...
        raise ArchiveError(rel, f"not a readable image ({type(exc).__name__}: {exc})", "CorruptFile") from None


def _shrink_or_refuse(img: object, rel: str, limit: int) -> None:
    width, height = img.size  # type: ignore[attr-defined]
    if width * height <= limit:
        return
    if getattr(img, "format", "") == "JPEG":
        scale = next((k for k in (2, 4, 8) if (width // k) * (height // k) <= limit), 8)
        img.draft("L", (width // scale, height // scale))  # type: ignore[attr-defined]
        w, h = img.size  # type: ignore[attr-defined]
        if w * h <= limit:
            return
    raise ArchiveError(
        rel,
        f"image of {width} x {height} pixels is above the limit of {limit} (RADRETRIEVE_MAX_IMAGE_PIXELS)",
        "ImageTooLarge",
    )


def load_item(item: Item, root: Path) -> Volume:
    """Decode all voxels of `item` (no preprocessing)."""
    if item.fmt == "nifti":
        return load_nifti(root, item.files[0])
    if item.fmt == "dicom":
        if len(item.files) == 1:
            return load_dicom_file(root, item.files[0])
        return load_dicom_series(root, item.files, item.source)
    loaded = [load_image_plane(root, rel) for rel in item.files]
    planes = [p for p, _ in loaded]
    if len({p.shape for p in planes}) > 1:
        raise ArchiveError(item.source, "image stack mixes image sizes", "MixedSeries")
    eight_bit = all(bits8 for _, bits8 in loaded)
    return Volume(np.stack(planes), (1.0, 1.0, 1.0), is_2d=len(planes) == 1, eight_bit=eight_bit)


def canonical_geometry(
    shape_xyz: Sequence[int], zooms_xyz: Sequence[float], affine: np.ndarray | None, source: str
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Shape and spacing ([Z, Y, X] order) an array gets from `ras_to_zyx`, computed from headers only.

    Raises `BadGeometry` (stage scan) for non-finite voxel sizes or a NaN/inf/degenerate affine."""
    zooms_xyz = header_zooms(zooms_xyz, source, "scan")
    if affine is None:
        return (int(shape_xyz[2]), int(shape_xyz[1]), int(shape_xyz[0])), (
            float(zooms_xyz[2]),
            float(zooms_xyz[1]),
            float(zooms_xyz[0]),
        )
    axes = orientation_of(affine, source, "scan")[:, 0].astype(int)  # RAS axis of each array axis
    shape_ras, zoom_ras = [0, 0, 0], [1.0, 1.0, 1.0]
    for i, ax in enumerate(axes):
        shape_ras[ax], zoom_ras[ax] = int(shape_xyz[i]), float(zooms_xyz[i])
    return (shape_ras[2], shape_ras[1], shape_ras[0]), (zoom_ras[2], zoom_ras[1], zoom_ras[0])
