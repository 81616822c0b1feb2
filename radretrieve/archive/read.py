"""Reader-worker entry points: `read_item` (decode + preprocess), `load_volume`, `thumbnail_slices`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from radretrieve.archive.dicom_pixels import read_dicom, series_affine
from radretrieve.archive.preprocess import intensity_mode, preprocess, slice_positions, take_slices
from radretrieve.archive.preprocess_clip import PixelHints
from radretrieve.archive.records import ArchiveError, Decoded, Item, RemoteArchive
from radretrieve.archive.volumes import Volume, load_item, orientation_of, ras_to_zyx, series_window
from radretrieve.foundation.config import PreprocessConfig

_DISPLAY_CT_WINDOW = (40.0, 400.0)  # soft-tissue window for thumbnails: the general-purpose CT view


def load_volume(item: Item, root: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """All voxels of `item`: float32 [Z, Y, X] (HU for CT, raw intensity otherwise), canonical slice
    order (inferior -> superior), and the spacing (dz, dy, dx) in mm. 2D images give Z = 1."""
    vol = load_item(item, Path(root))
    return vol.data, vol.spacing


def read_item(item: Item, root: Path | RemoteArchive, cfg: PreprocessConfig) -> Decoded:
    """Decode and preprocess one item into model input (see radretrieve.archive.preprocess).

    `root`: the archive folder, or a server (its items are fetched first, then decoded by this same code).
    Raises ArchiveError (a radretrieve.foundation.errors.ReadError) naming the file and the reason.
    """
    if isinstance(root, RemoteArchive):
        return root.read_item(item, cfg)
    if isinstance(root, (str, os.PathLike)):  # else a folder in memory (a DIMSE read's instances) as it is
        root = Path(root)
    vol = _sparse_series(item, root, cfg) if _can_read_sparse(item, cfg) else None
    positions = None
    if vol is None:
        vol = load_item(item, root)
        positions = slice_positions(vol.data.shape[0], cfg.n_slices, vol.spacing[0], cfg.slice_spacing_mm)
    slices = vol.data if positions is None else take_slices(vol.data, positions)
    mode = intensity_mode(item.modality, item.fmt, vol.is_2d, slices)
    hints = PixelHints(window=vol.window, body_part=item.body_part, eight_bit=vol.eight_bit)
    pixels = preprocess(slices, (vol.spacing[1], vol.spacing[2]), mode, cfg, item.source, hints)
    shape, spacing = _source_geometry(item, vol)
    return Decoded(pixels=pixels, shape=shape, spacing=spacing, slice_count=int(pixels.shape[0]))


def files_to_read(item: Item, cfg: PreprocessConfig) -> tuple[str, ...]:
    """The files `read_item` decodes: the sampled slices of a long DICOM series, else all of them (a
    sagittal or coronal series found while reading needs all of them after all)."""
    if not _can_read_sparse(item, cfg):
        return tuple(item.files)
    return tuple(item.files[i] for i in slice_positions(len(item.files), cfg.n_slices).astype(np.int64))


def _source_geometry(item: Item, vol: Volume) -> tuple[tuple[int, ...], tuple[float, ...]]:
    if vol.is_2d:
        return tuple(int(n) for n in vol.data.shape[1:]), (float(vol.spacing[1]), float(vol.spacing[2]))
    if item.shape and len(item.shape) == 3 and item.fmt == "dicom" and len(item.files) > 1:
        return tuple(item.shape), tuple(item.spacing)  # the sparse read only decoded some slices
    return tuple(int(n) for n in vol.data.shape), tuple(float(s) for s in vol.spacing)


def _can_read_sparse(item: Item, cfg: PreprocessConfig) -> bool:
    # A scanned series is already in slice order: decode only the sampled files (10x less work at 300 slices).
    return item.fmt == "dicom" and len(item.files) > cfg.n_slices and cfg.slice_spacing_mm is None


def _sparse_series(item: Item, root: Path, cfg: PreprocessConfig) -> Volume | None:
    """Decode only the sampled slices of a DICOM series; None when the slice axis is not canonical Z."""
    idx = slice_positions(len(item.files), cfg.n_slices).astype(np.int64)
    slices, headers = [], []
    for i in idx:
        arr, header = read_dicom(root / item.files[i], item.files[i])
        slices.append(arr[0])
        headers.append(header)
    if len({a.shape for a in slices}) > 1:
        raise ArchiveError(item.source, "series mixes slice sizes", "MixedSeries")
    spacing_z = float(item.spacing[0]) if item.spacing else (headers[0].thickness or 1.0)
    affine = series_affine(headers, spacing_z)
    stack = np.stack(slices)
    window = series_window(headers)
    if affine is None:
        return Volume(stack, (spacing_z, *headers[0].pixel_spacing), is_2d=False, window=window)
    if int(orientation_of(affine, item.source)[2, 0]) != 2:
        return None  # sagittal/coronal acquisition: canonical slices cut across files, read everything
    data, spacing = ras_to_zyx(stack.transpose(2, 1, 0), affine, item.source)
    return Volume(data, spacing, is_2d=False, window=window)


def thumbnail_slices(item: Item, root: Path, n: int = 3) -> list[np.ndarray]:
    """`n` evenly spaced display slices (uint8 [H, W]) for HTML contact sheets; one for 2D images.

    CT is shown in a soft-tissue window (centre 40, width 400 HU); anything else by 0.5-99.5 percentiles.
    """
    vol = load_item(item, Path(root))
    idx = slice_positions(vol.data.shape[0], max(1, n)).astype(np.int64)
    slices = vol.data[idx]
    if intensity_mode(item.modality, item.fmt, vol.is_2d, slices) == "ct":
        centre, width = _DISPLAY_CT_WINDOW
        lo, hi = centre - width / 2, centre + width / 2
    else:
        finite = slices[np.isfinite(slices)]
        lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5])) if finite.size else (0.0, 1.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.clip((np.nan_to_num(slices, nan=lo) - lo) * scale, 0, 255).astype(np.uint8)
    return [out[i] for i in range(out.shape[0])]
