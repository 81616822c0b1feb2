"""Preprocessing: decoded voxels -> CLIP input float32 [S, 3, size, size], by the config's profile.

Two profiles (`PreprocessConfig.profile`): `clip` (radretrieve.archive.preprocess_clip: grey replicated to
RGB, shortest side resized and centre-cropped, one CT window) for pretrained CLIP weights, and
`radiology-3window` below, for models trained here. Order of operations of `radiology-3window`
(all vectorised; no per-pixel Python):
1. slice sampling: S = min(n_slices, depth) slices at the centres of S equal bins along Z; with
   `slice_spacing_mm` set, positions on that spacing grid are linearly interpolated between slices;
2. checks on the sampled slices: non-finite voxels -> NaNImage, constant -> ConstantImage;
3. resize each slice with antialiased bilinear interpolation so its longer physical side (pixel spacing
   taken into account) becomes `image_size`; done on the single-channel data, before windowing, so the
   interpolation runs once instead of three times;
4. intensity -> [0, 1] (percentiles estimated on the resized slices, a strided subsample): CT: one Hounsfield
   window per channel (cfg.ct_windows); MR: clip to percentiles then min-max; X-ray and other 2D: percentile
   min-max, grey replicated to 3 channels;
5. pad to a square with 0 (black, i.e. below every window) so no anatomy is cropped;
6. CLIP mean/std normalisation per channel.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from radretrieve.archive.preprocess_clip import PixelHints, apply_window, clip_geometry, ct_window, normalise_grey
from radretrieve.archive.records import ArchiveError
from radretrieve.archive.resize import resize_bilinear
from radretrieve.foundation.config import PreprocessConfig

Mode = Literal["ct", "mr", "xray"]
_PERCENTILE_SAMPLE = 1 << 18  # voxels used to estimate percentiles (strided subsample; fast, stable)


def slice_positions(depth: int, n_slices: int, dz: float = 1.0, spacing_mm: float | None = None) -> np.ndarray:
    """Fractional slice positions (float64 [S]) to sample from a volume of `depth` slices `dz` mm apart."""
    if spacing_mm is None or depth < 2:
        count = min(n_slices, depth)
        return np.floor((np.arange(count) + 0.5) * depth / count).astype(np.float64)
    step = spacing_mm / dz  # resampled grid, in source slice units
    grid = np.arange(0.0, depth - 1 + 1e-6, step)
    count = min(n_slices, grid.size)
    return grid[np.floor((np.arange(count) + 0.5) * grid.size / count).astype(np.int64)]


def take_slices(data: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Linearly interpolate slices of `data` [Z, Y, X] at fractional `positions` [S] -> float32 [S, Y, X]."""
    lo = np.clip(np.floor(positions).astype(np.int64), 0, data.shape[0] - 1)
    hi = np.minimum(lo + 1, data.shape[0] - 1)
    frac = (positions - lo).astype(np.float32)
    if not np.any(frac > 0):
        return np.ascontiguousarray(data[lo], dtype=np.float32)
    w = frac[:, None, None]
    return (data[lo] * (1 - w) + data[hi] * w).astype(np.float32)


def intensity_mode(modality: str, fmt: str, is_2d: bool, data: np.ndarray) -> Mode:
    """Which intensity mapping applies. Only decoded CT (DICOM/NIfTI) is in HU; JPEG/PNG never are."""
    modality = modality.upper()
    if fmt != "image" and modality == "CT":
        return "ct"
    if fmt == "nifti" and not modality and float(np.nanmin(data)) < -500.0:
        return "ct"  # unlabelled NIfTI holding air at ~-1000: Hounsfield units
    if is_2d or fmt == "image":
        return "xray"
    return "mr"


def check_values(data: np.ndarray, source: str) -> None:
    """Raise NaNImage / ConstantImage for volumes that cannot give a meaningful embedding."""
    if not np.isfinite(data).all():
        raise ArchiveError(source, "image contains NaN or infinite values", "NaNImage", "preprocess")
    if float(data.max()) == float(data.min()):
        raise ArchiveError(
            source, f"image is constant (all values {float(data.min()):g})", "ConstantImage", "preprocess"
        )


def resize_slices(slices: np.ndarray, spacing_yx: tuple[float, float], size: int) -> np.ndarray:
    """Resize [S, Y, X] so the longer physical side is `size` pixels; keeps the aspect ratio."""
    s, h, w = slices.shape
    phys_h, phys_w = h * spacing_yx[0], w * spacing_yx[1]
    scale = size / max(phys_h, phys_w)
    out_h = min(size, max(1, round(phys_h * scale)))
    out_w = min(size, max(1, round(phys_w * scale)))
    if (out_h, out_w) == (h, w):
        return slices
    antialias = out_h < h or out_w < w  # antialias only matters (and only costs) when shrinking
    return resize_bilinear(slices, out_h, out_w, antialias)


def to_unit(slices: np.ndarray, mode: Mode, cfg: PreprocessConfig, source: str) -> np.ndarray:
    """Map intensities to [0, 1]: float32 [S, 3, Y, X] for CT (one window per channel), else [S, 1, Y, X]."""
    if mode == "ct":
        out = np.empty((slices.shape[0], 3, *slices.shape[1:]), dtype=np.float32)
        for c, (centre, width) in enumerate(cfg.ct_windows):
            np.subtract(slices, centre - width / 2.0, out=out[:, c])
            out[:, c] *= 1.0 / width
        return np.clip(out, 0.0, 1.0, out=out)
    lo_p, hi_p = cfg.mr_percentiles if mode == "mr" else cfg.xray_percentiles
    flat = slices.reshape(-1)
    sample = flat[:: max(1, flat.size // _PERCENTILE_SAMPLE)]
    lo, hi = (float(v) for v in np.percentile(sample, [lo_p, hi_p]))
    if hi <= lo:  # a mostly constant image with a few outliers: use the full range instead
        lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        raise ArchiveError(source, f"sampled slices are constant (all values {lo:g})", "ConstantImage", "preprocess")
    out = (slices - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)[:, None]


def pad_normalise(unit: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Centre [S, C, h, w] in [0, 1] on a black square canvas, replicate grey to 3 channels, CLIP-normalise."""
    size = cfg.image_size
    s, c, h, w = unit.shape
    mean = np.asarray(cfg.mean, dtype=np.float32)[None, :, None, None]
    inv_std = (1.0 / np.asarray(cfg.std, dtype=np.float32))[None, :, None, None]
    out = np.zeros((s, 3, size, size), dtype=np.float32)  # the padding: black
    top, left = (size - h) // 2, (size - w) // 2
    out[:, :, top : top + h, left : left + w] = unit  # broadcasts C=1 to 3 channels
    out -= mean  # in place: no full-size temporaries (this array is the largest one per item)
    out *= inv_std
    return out


def preprocess(
    slices: np.ndarray,
    spacing_yx: tuple[float, float],
    mode: Mode,
    cfg: PreprocessConfig,
    source: str,
    hints: PixelHints | None = None,
) -> np.ndarray:
    """Sampled slices [S, Y, X] (HU or intensity) -> float32 [S, 3, size, size] model input.

    `hints` (the file's CT window, body part, 8-bit origin) are used by the `clip` profile only."""
    check_values(slices, source)
    if cfg.profile == "clip":
        return normalise_grey(clip_unit(slices, spacing_yx, mode, cfg, source, hints or PixelHints()), cfg)
    resized = resize_slices(slices, spacing_yx, cfg.image_size)
    return pad_normalise(to_unit(resized, mode, cfg, source), cfg)


def clip_unit(
    slices: np.ndarray,
    spacing_yx: tuple[float, float],
    mode: Mode,
    cfg: PreprocessConfig,
    source: str,
    hints: PixelHints,
) -> np.ndarray:
    """The `clip` profile before normalisation: float32 [S, size, size] in [0, 1]."""
    size = cfg.image_size
    if mode == "ct":
        return clip_geometry(apply_window(slices, *ct_window(hints)), spacing_yx, size, eight_bit=False)
    if hints.eight_bit and mode == "xray":
        return clip_geometry(slices, spacing_yx, size, eight_bit=True)  # as stored: what CLIP saw
    return clip_geometry(to_unit(slices, mode, cfg, source)[:, 0], spacing_yx, size, eight_bit=False)
