"""Synthetic anatomy for the archive generator: z-constant phantoms with an optional lesion.

Arrays use the reader's canonical arrangement [Z (inferior -> superior), Y (anterior -> posterior),
X (patient right -> left)]. The anatomy is identical on every slice and the per-slice noise is drawn in
a fixed generation order (background slices first, then lesion slices), so the *multiset* of slices
does not depend on where the lesion sits along Z: its position is visible only through slice order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGIONS = ("head", "chest", "abdomen")
POSITIONS = ("lower", "middle", "upper")  # along Z: inferior third, middle third, superior third

# Tissue values per modality: CT in HU; MR and XR in arbitrary units (the reader normalises them).
_TISSUE = {
    "CT": {"air": -1000, "fat": -100, "soft": 40, "brain": 35, "csf": 5, "bone": 900, "lung": -850, "organ": 55},
    "MR": {"air": 0, "fat": 850, "soft": 380, "brain": 520, "csf": 160, "bone": 90, "lung": 40, "organ": 450},
    "XR": {"air": 10, "fat": 70, "soft": 110, "brain": 120, "csf": 110, "bone": 230, "lung": 35, "organ": 120},
}
# Lesion value per modality/region/density: contrast against the tissue the lesion sits in.
_LESION = {
    ("CT", "head"): {"hypo": 0, "hyper": 90},
    ("CT", "chest"): {"hypo": -1000, "hyper": 45},
    ("CT", "abdomen"): {"hypo": 0, "hyper": 140},
    ("MR", "head"): {"hypo": 170, "hyper": 900},
    ("MR", "chest"): {"hypo": 0, "hyper": 650},
    ("MR", "abdomen"): {"hypo": 120, "hyper": 900},
    ("XR", "head"): {"hypo": 60, "hyper": 200},
    ("XR", "chest"): {"hypo": 5, "hyper": 150},
    ("XR", "abdomen"): {"hypo": 60, "hyper": 200},
}
_NOISE = {"CT": 8.0, "MR": 15.0, "XR": 4.0}  # noise standard deviation per modality


@dataclass(frozen=True)
class LesionSpec:
    """Ground truth of one lesion."""

    position: str  # "lower" | "middle" | "upper" along Z (ignored for 2D radiographs)
    side: str  # "left" | "right": patient side (larger X index = patient left)
    density: str  # "hypo" | "hyper"
    size: str  # "small" | "large"
    offset_y: float  # in-plane vertical offset in [-1, 1], scaled into the host organ


def _ellipse(size: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.ogrid[:size, :size]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def anatomy(region: str, modality: str, size: int, jitter: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One 2D slice [size, size] of `region` and the host-organ box (centre y, half-height, centre offset x)."""
    t = _TISSUE[modality]
    c = (size - 1) / 2.0
    j = 1.0 + 0.06 * jitter  # per-study size variation, 3 numbers in [-1, 1]
    img = np.full((size, size), float(t["air"]), dtype=np.float32)
    if region == "head":
        img[_ellipse(size, c, c, 0.44 * size * j[0], 0.37 * size * j[1])] = t["fat"]
        img[_ellipse(size, c, c, 0.41 * size * j[0], 0.34 * size * j[1])] = t["bone"]
        img[_ellipse(size, c, c, 0.37 * size * j[0], 0.30 * size * j[1])] = t["brain"]
        for side in (-1, 1):  # lateral ventricles, symmetric
            img[_ellipse(size, c, c + side * 0.06 * size, 0.12 * size, 0.03 * size)] = t["csf"]
        return img, (c, 0.2 * size, 0.17 * size)
    ry, rx = (0.30, 0.45) if region == "chest" else (0.36, 0.45)
    img[_ellipse(size, c, c, ry * size * j[0], rx * size * j[1])] = t["fat"]
    img[_ellipse(size, c, c, (ry - 0.04) * size * j[0], (rx - 0.04) * size * j[1])] = t["soft"]
    img[_ellipse(size, c + 0.22 * size * j[0], c, 0.05 * size, 0.05 * size)] = t["bone"]  # vertebra, posterior
    if region == "chest":
        for side in (-1, 1):
            img[_ellipse(size, c - 0.02 * size, c + side * 0.2 * size, 0.2 * size * j[2], 0.13 * size)] = t["lung"]
        return img, (c - 0.02 * size, 0.12 * size, 0.2 * size)
    img[_ellipse(size, c - 0.05 * size, c, 0.2 * size * j[2], 0.32 * size)] = t["organ"]
    return img, (c - 0.05 * size, 0.12 * size, 0.18 * size)


def lesion_radius(size: int, lesion: LesionSpec) -> float:
    """In-plane radius in pixels at the lesion's centre slice."""
    return (0.06 if lesion.size == "small" else 0.11) * size


def lesion_half_extent(lesion: LesionSpec) -> int:
    """Slices on each side of the centre slice that show the lesion."""
    return 1 if lesion.size == "small" else 2


def _lesion_disc(size: int, box: tuple[float, float, float], lesion: LesionSpec, radius: float) -> np.ndarray:
    cy, half_h, off_x = box
    cx = (size - 1) / 2.0 + (off_x if lesion.side == "left" else -off_x)  # patient left = larger X
    return _ellipse(size, cy + lesion.offset_y * half_h, cx, max(radius, 0.5), max(radius, 0.5))


def lesion_centre(depth: int, lesion: LesionSpec) -> int:
    """Centre slice index of the lesion: the middle of its third of the volume, kept fully inside."""
    t = POSITIONS.index(lesion.position)
    h = lesion_half_extent(lesion)
    return int(min(max((depth * (2 * t + 1)) // 6, h), depth - 1 - h))


def phantom_volume(
    region: str, modality: str, depth: int, size: int, lesion: LesionSpec | None, seed: int, jitter: np.ndarray
) -> np.ndarray:
    """A float32 [depth, size, size] volume (values rounded to integers), deterministic by `seed`."""
    rng = np.random.default_rng(seed)
    base, box = anatomy(region, modality, size, jitter)
    noise = rng.normal(0.0, _NOISE[modality], size=(depth, size, size)).astype(np.float32)
    vol = np.empty((depth, size, size), dtype=np.float32)
    if lesion is None:
        vol[:] = base + noise
        return np.round(vol)
    h = lesion_half_extent(lesion)
    centre = lesion_centre(depth, lesion)
    inside = np.arange(centre - h, centre + h + 1)
    outside = np.setdiff1d(np.arange(depth), inside)
    vol[outside] = base + noise[: outside.size]  # background slices: first noise fields, in Z order
    value = _LESION[(modality, region)][lesion.density]
    for k, d in enumerate(range(-h, h + 1)):  # lesion slices: the remaining noise fields
        radius = lesion_radius(size, lesion) * np.sqrt(1.0 - (d / (h + 1)) ** 2)
        slice_ = base.copy()
        slice_[_lesion_disc(size, box, lesion, radius)] = value
        vol[centre + d] = slice_ + noise[outside.size + k]
    return np.round(vol)


def radiograph(region: str, size: int, lesion: LesionSpec | None, seed: int, jitter: np.ndarray) -> np.ndarray:
    """A 2D projection-like image float32 [size, size] in [0, 255]."""
    rng = np.random.default_rng(seed)
    base, box = anatomy(region, "XR", size, jitter)
    y = np.linspace(-1.0, 1.0, size, dtype=np.float32)[:, None]
    img = base + 12.0 * (1.0 - y**2)  # smooth exposure falloff, as on real films
    if lesion is not None:
        disc = _lesion_disc(size, box, lesion, lesion_radius(size, lesion))
        img[disc] = _LESION[("XR", region)][lesion.density]
    img += rng.normal(0.0, _NOISE["XR"], size=img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255)
