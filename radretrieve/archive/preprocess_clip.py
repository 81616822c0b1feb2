"""The `clip` preprocessing profile: model input as pretrained CLIP weights saw it in training.

open_clip's inference transform (`open_clip.create_model_and_transforms(...)[2]`) resizes a PIL image so its
shortest side is the input size (bicubic), centre-crops a square, scales 8-bit values by 1/255 and applies the
CLIP mean/std. This profile does the same, on grey images replicated to three channels:

- 8-bit image files (JPEG/PNG): the stored values, resized by Pillow's bicubic filter on the 8-bit image (as
  open_clip does, rounding included), then / 255: equal to open_clip's transform of the grey image;
- CT (DICOM/NIfTI, Hounsfield units): ONE window, replicated (never three different ones): the file's own
  WindowCenter/WindowWidth when present, else `BODY_PART_WINDOWS` by body part, else `DEFAULT_CT_WINDOW`;
  the DICOM "LINEAR" VOI function (PS3.3 C.11.2.1.2.1), mapped to [0, 1];
- MR and other 2D data (DICOM radiographs, 16-bit PNG): the percentile scaling of the other profile;
- then, for all but 8-bit files: the [0, 1] slice resized by Pillow's bicubic filter in float ("F" mode, no
  rounding), clipped back to [0, 1] (bicubic overshoots at edges, as the 8-bit path clips), centre-cropped.

Pixel spacing counts: the shortest *physical* side becomes the input size (square pixels: the shortest side).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radretrieve.foundation.config import PreprocessConfig

# CT windows (centre, width) in HU when the file names none, by BodyPartExamined / body-part label (upper case).
BODY_PART_WINDOWS: dict[str, tuple[float, float]] = {
    "HEAD": (40.0, 80.0),  # brain window
    "BRAIN": (40.0, 80.0),
    "SKULL": (40.0, 80.0),
    "CHEST": (-600.0, 1500.0),  # lung window
    "LUNG": (-600.0, 1500.0),
    "THORAX": (-600.0, 1500.0),
}
DEFAULT_CT_WINDOW: tuple[float, float] = (40.0, 400.0)  # soft tissue: abdomen, pelvis, neck, anything else


@dataclass(frozen=True)
class PixelHints:
    """What the `clip` profile needs to know about an item beyond its voxels."""

    window: tuple[float, float] | None = None  # the file's (WindowCenter, WindowWidth), if it has one
    body_part: str = ""  # body part, for the default CT window
    eight_bit: bool = False  # voxels are the 0..255 values of 8-bit image files


def ct_window(hints: PixelHints) -> tuple[float, float]:
    """The one CT window (centre, width) in HU: the file's own, else by body part, else soft tissue."""
    if hints.window is not None:
        return hints.window
    return BODY_PART_WINDOWS.get(hints.body_part.strip().upper(), DEFAULT_CT_WINDOW)


def apply_window(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM LINEAR windowing of float32 HU [...] to float32 [0, 1] (width < 1 uses LINEAR_EXACT)."""
    if width > 1.0:
        centre, width = centre - 0.5, width - 1.0
    out = (hu - np.float32(centre)) * np.float32(1.0 / width) + np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def resized_size(h: int, w: int, spacing_yx: tuple[float, float], size: int) -> tuple[int, int]:
    """(out_h, out_w) with the shorter physical side `size`; the longer one truncated, as torchvision does."""
    phys_h, phys_w = h * spacing_yx[0], w * spacing_yx[1]
    if phys_h <= phys_w:
        return size, max(size, int(size * phys_w / phys_h))
    return max(size, int(size * phys_h / phys_w)), size


def centre_crop(x: np.ndarray, size: int) -> np.ndarray:
    """The central `size` x `size` of [..., H, W] (offsets rounded as torchvision's CenterCrop rounds them)."""
    h, w = x.shape[-2:]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def _resize(plane: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    from PIL import Image

    if plane.shape == (out_h, out_w):
        return plane
    return np.asarray(Image.fromarray(plane).resize((out_w, out_h), Image.Resampling.BICUBIC))


def clip_geometry(slices: np.ndarray, spacing_yx: tuple[float, float], size: int, eight_bit: bool) -> np.ndarray:
    """[S, Y, X] -> float32 [S, size, size] in [0, 1]: shortest side resized (bicubic), centre-cropped.

    `eight_bit`: `slices` hold 0..255 values; they are resized as an 8-bit image and divided by 255 after."""
    out_h, out_w = resized_size(slices.shape[1], slices.shape[2], spacing_yx, size)
    out = np.empty((slices.shape[0], size, size), dtype=np.float32)
    for i, plane in enumerate(slices):
        if eight_bit:
            grey = np.clip(np.rint(plane), 0, 255).astype(np.uint8)
            out[i] = centre_crop(_resize(grey, out_h, out_w), size).astype(np.float32) * np.float32(1.0 / 255.0)
        else:
            resized = _resize(np.ascontiguousarray(plane, dtype=np.float32), out_h, out_w)
            out[i] = np.clip(centre_crop(resized, size), 0.0, 1.0)
    return out


def normalise_grey(unit: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """[S, size, size] in [0, 1] -> float32 [S, 3, size, size]: grey in all three channels, CLIP mean/std."""
    mean = np.asarray(cfg.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(cfg.std, dtype=np.float32)[None, :, None, None]
    out = np.repeat(unit[:, None], 3, axis=1)
    out -= mean
    out /= std  # a division, as torchvision's Normalize does (a multiply by 1/std differs in the last bit)
    return out
