"""Shared fixtures: tiny models (random init, fixed seed) and the real sample data beside the repo."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model():
    from radretrieve import load_model

    return load_model("radclip-tiny", device="cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared sample data not found at ../shared/data (looked in {SHARED_DATA.name})")
    return SHARED_DATA
