"""Shared fixtures: tiny models (random init, fixed seed). Sample data: tests/samples.py."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model():
    from radretrieve import load_model

    return load_model("radclip-tiny", device="cpu")
