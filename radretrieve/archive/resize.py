"""Bilinear resizing of slice stacks in numpy, equal (within about 1e-5 of the value range) to
`torch.nn.functional.interpolate(x, size, mode="bilinear", align_corners=False, antialias=...)`.

Why not call torch: reader processes then never import it, which saves each of them about 0.5 GB of
memory and a second of start-up CPU (a reader only decodes; the encoder lives in the main process).

Each axis is resampled separately with a banded weight table: output pixel i takes at most `taps` input
pixels. Without antialiasing the two taps are plain bilinear interpolation (edges clamped); with it, a
triangle filter stretched by the shrink factor, normalised to sum to one (what torch and Pillow do when
shrinking, so that thin structures do not alias).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AxisWeights:
    """Resampling of one axis: output i = sum_k weight[i, k] * input[index[i, k]]."""

    index: np.ndarray  # int64 [out, taps]
    weight: np.ndarray  # float32 [out, taps]; zero for padding taps


def axis_weights(in_size: int, out_size: int, antialias: bool) -> AxisWeights:
    """The banded weight table taking an axis of `in_size` pixels to `out_size`."""
    # positions in float32 arithmetic, as torch computes them: float64 positions differ by up to ~1e-4 px
    scale = np.float32(in_size) / np.float32(out_size)
    centre = scale * (np.arange(out_size, dtype=np.float32) + np.float32(0.5))
    if antialias:
        return _triangle(in_size, centre, scale)
    src = np.maximum(centre - np.float32(0.5), np.float32(0.0))  # align_corners=False source position, clamped at the first pixel
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = np.clip(src - lo.astype(np.float32), 0.0, 1.0)
    index = np.stack([lo, hi], axis=1)
    weight = np.stack([1.0 - frac, frac], axis=1).astype(np.float32)
    return AxisWeights(index, weight)


def _triangle(in_size: int, centre: np.ndarray, scale: float) -> AxisWeights:
    support = scale if scale >= 1.0 else 1.0  # bilinear's half-width is 1 input pixel, times the shrink factor
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # truncation, as the C++ cast does
    stop = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    taps = int((stop - first).max())
    index = first[:, None] + np.arange(taps)[None, :]
    valid = index < stop[:, None]
    weight = np.where(valid, np.maximum(0.0, 1.0 - np.abs((index - centre[:, None] + 0.5) * inv)), 0.0)
    total = weight.sum(axis=1, keepdims=True)
    weight = np.divide(weight, total, out=np.zeros_like(weight), where=total != 0)
    return AxisWeights(np.minimum(index, in_size - 1), weight.astype(np.float32))


def resize_bilinear(stack: np.ndarray, out_h: int, out_w: int, antialias: bool) -> np.ndarray:
    """Resize float32 [S, H, W] to [S, out_h, out_w]; the width pass runs first, on the larger array."""
    x = np.ascontiguousarray(stack, dtype=np.float32)
    x = _resample(x, axis_weights(x.shape[2], out_w, antialias), axis=2)
    return _resample(x, axis_weights(x.shape[1], out_h, antialias), axis=1)


def _resample(x: np.ndarray, w: AxisWeights, axis: int) -> np.ndarray:
    if w.index.shape[0] == x.shape[axis] and np.array_equal(w.index[:, 0], np.arange(x.shape[axis])) \
            and np.all(w.weight[:, 0] == 1.0):
        return x  # identity (same size)
    shape = [1, 1, 1]
    shape[axis] = -1
    out = None
    for k in range(w.index.shape[1]):
        term = np.take(x, w.index[:, k], axis=axis)
        term *= w.weight[:, k].reshape(shape)
        out = term if out is None else np.add(out, term, out=out)
    return out
