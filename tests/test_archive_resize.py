"""Readers resize in numpy; torch's own bilinear interpolation is the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.local import start_readers
from radretrieve.archive.resize import resize_bilinear

SHAPES = [  # (in_h, in_w, out_h, out_w): shrink, grow, mixed, odd sizes, down to one pixel
    (512, 512, 224, 224),
    (64, 64, 224, 224),
    (100, 37, 224, 83),
    (512, 400, 64, 50),
    (7, 300, 20, 64),
    (1, 5, 3, 2),
    (13, 13, 1, 1),
    (333, 517, 224, 145),
    (224, 224, 224, 224),
]


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_resize_matches_torch_interpolate(shape, antialias):
    in_h, in_w, out_h, out_w = shape
    x = (np.random.default_rng(sum(shape)).standard_normal((3, in_h, in_w)) * 1000).astype(np.float32)
    ref = F.interpolate(
        torch.from_numpy(x)[:, None], size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=antialias
    )[:, 0].numpy()
    got = resize_bilinear(x, out_h, out_w, antialias)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-5 * np.abs(ref).max())


def test_smooth_image_keeps_its_values_when_shrunk():
    """A linear ramp stays a linear ramp (a mistake in tap placement would shift it)."""
    ramp = np.tile(np.arange(512, dtype=np.float32), (1, 300, 1))
    out = resize_bilinear(ramp, 150, 256, antialias=True)
    np.testing.assert_allclose(out[0, 0, 10:-10], 2 * np.arange(10, 246) + 0.5, atol=1e-3)


def test_reader_processes_never_import_torch(tmp_path):
    """Each reader would carry about 0.5 GB more if they did."""
    from radretrieve.archive import read_item, scan
    from radretrieve.foundation.config import PreprocessConfig
    from radretrieve.synth import synthesize

    synthesize(tmp_path / "a", studies=2, seed=0, image_size=48)  # resized to 32: the resize path runs
    result = scan(tmp_path / "a")
    pool = start_readers(1)
    try:
        cfg = PreprocessConfig(image_size=32)
        shapes = [pool.submit(read_item, it, result.root, cfg).result() for it in result.items]
        assert all(s.pixels.shape[-1] == 32 for s in shapes)
        # a builtin, so that unpickling the call imports nothing (a function of this module would import torch)
        assert pool.submit(eval, "'torch' in __import__('sys').modules").result() is False
    finally:
        pool.close()
