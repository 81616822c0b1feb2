"""Preprocessing and pooling checked by value against hand computations, not against the code's own library."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from radretrieve.archive import read_item, scan
from radretrieve.foundation.config import PreprocessConfig


def test_2d_percentile_normalisation_by_value(tmp_path):
    """A 100 x 200 grey PNG whose 0.5 / 99.5 percentiles are 40 and 200 by construction: 50 dark (0) and 50
    bright (255) outliers, and among the other 19,900 pixels the lowest 100 are 40 and the highest 100 are 200.
    Every output pixel must be (clip((v - 40) / 160, 0, 1) - mean) / std, and the padding must be black."""
    rng = np.random.default_rng(0)
    middle = np.concatenate([np.full(100, 40), np.full(100, 200), rng.integers(41, 200, 19_700)])
    values = np.concatenate([np.zeros(50), np.full(50, 255), middle]).astype(np.uint8)
    img = rng.permutation(values).reshape(100, 200)
    Image.fromarray(img, mode="L").save(tmp_path / "x.png")
    cfg = PreprocessConfig(image_size=200)  # the long side is already 200: no resampling
    item = scan(tmp_path).items[0]
    pixels = read_item(item, tmp_path, cfg).pixels
    assert pixels.shape == (1, 3, 200, 200)
    unit = np.clip((img.astype(np.float64) - 40.0) / 160.0, 0.0, 1.0)
    for c in range(3):
        expected = (unit - cfg.mean[c]) / cfg.std[c]
        np.testing.assert_allclose(pixels[0, c, 50:150, :], expected, atol=1e-5)
        black = (0.0 - cfg.mean[c]) / cfg.std[c]
        np.testing.assert_allclose(pixels[0, c, :50, :], black, atol=1e-6)  # padding above and below
        np.testing.assert_allclose(pixels[0, c, 150:, :], black, atol=1e-6)


def test_an_untrained_adapter_is_close_to_mean_pooling(tiny_model):
    """The volume embedding of the untrained attention adapter vs the normalised mean of the slice embeddings
    from the image encoder alone (encode_images: no adapter involved)."""
    gen = torch.Generator().manual_seed(0)
    for n in (1, 5, 32):
        vol = torch.randn(n, 3, 64, 64, generator=gen)
        pooled = tiny_model.encode_volumes([vol])[0]
        mean = tiny_model.encode_images(vol).mean(dim=0)
        mean = mean / mean.norm()
        assert float(pooled @ mean) >= 0.99, n
        assert tiny_model.config.adapter.pooling == "attention"
