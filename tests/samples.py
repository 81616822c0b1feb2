"""Where the tests find the real sample data (radretrieve.datasets.samples), and how they skip without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from radretrieve.datasets.samples import FETCH_HINT, sample_data_dir

DATA = sample_data_dir()


def sample(*parts: str) -> Path:
    """A path under the sample data dir (it may not exist: mark the test with `needs`)."""
    return DATA.joinpath(*parts)


def needs(*parts: str) -> pytest.MarkDecorator:
    """Skip, with one line saying how to get the data, when `sample(*parts)` is missing."""
    path = sample(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"no sample data at {path}: {FETCH_HINT}")
