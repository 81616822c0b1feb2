"""The headless browser of the page tests: Debian's Chromium. Without it the tests skip with one line; CI sets
RADRETRIEVE_REQUIRE_BROWSER=1 (after installing it), so there a missing browser fails instead of skipping."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

INSTALL = "apt-get install -y chromium chromium-driver (Debian; .ci/run does this)"
# Flags for a closed network: without the background-networking ones Chromium keeps dialling out.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> Path:
    """The Chromium binary, or skip (fail under RADRETRIEVE_REQUIRE_BROWSER=1) with how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return Path(found)
    message = f"no Chromium on PATH: {INSTALL}"
    if os.environ.get("RADRETRIEVE_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)
