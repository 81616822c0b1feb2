"""2D-stage augmentation: random resized crop, small rotation, intensity and contrast jitter, on model input.

Crop and rotation are one affine resampling per image (`affine_grid` + `grid_sample`, bilinear, border
padding: a rotated corner repeats the image edge rather than inventing a value that is neither air nor
tissue). The jitter acts on all three channels of an image alike, so a grey image stays grey and the three
HU windows of a CT keep their order. Every draw comes from `generator` (default: torch's global generator,
which `train` seeds with the run's seed and restores from each checkpoint).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from radretrieve.training.config import AugmentConfig


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _affine(cfg: AugmentConfig, n: int, aspect: float, generator: torch.Generator | None) -> Tensor:
    """float32 [n, 2, 3]: output -> input sampling grids (normalised coordinates) of crop + rotation."""
    area = _uniform(n, *cfg.crop_scale, generator)
    log_ratio = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator)
    ratio = torch.exp(log_ratio)
    # crop width and height as fractions of the image's (at most the whole image)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    # crop centre: anywhere that keeps the crop inside the image
    cx = (1.0 - sx) * _uniform(n, -1.0, 1.0, generator)
    cy = (1.0 - sy) * _uniform(n, -1.0, 1.0, generator)
    angle = torch.deg2rad(_uniform(n, -cfg.rotation, cfg.rotation, generator))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Rotation in pixel space: normalised x and y differ in scale by the aspect ratio (width / height).
    theta = torch.zeros(n, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = sx * cos
    theta[:, 0, 1] = -sy * sin / aspect
    theta[:, 1, 0] = sx * sin * aspect
    theta[:, 1, 1] = sy * cos
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    return theta.float()


def augment_batch(pixels: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """A randomly changed copy of `pixels: float [N, C, H, W]` (same shape and dtype); unchanged if disabled."""
    if not cfg.enabled or pixels.shape[0] == 0:
        return pixels
    n, _, h, w = pixels.shape
    x = pixels.float()
    theta = _affine(cfg, n, w / h, generator).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = _uniform(n, 1.0 - cfg.contrast, 1.0 + cfg.contrast, generator).float().to(x.device)
    shift = _uniform(n, -cfg.brightness, cfg.brightness, generator).float().to(x.device)
    flat = x.reshape(n, -1)
    mean = flat.mean(dim=1)
    span = flat.amax(dim=1) - flat.amin(dim=1)
    x = (x - mean[:, None, None, None]) * contrast[:, None, None, None] + (mean + shift * span)[:, None, None, None]
    return x.to(pixels.dtype)
