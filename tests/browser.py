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


def _missing(message: str) -> None:
    if os.environ.get("RADRETRIEVE_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def chromium() -> Path:
    """The Chromium binary, or skip (fail under RADRETRIEVE_REQUIRE_BROWSER=1) with how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        _missing(f"no Chromium on PATH: {INSTALL}")
    return Path(found)


def chromedriver() -> Path:
    """Debian's chromedriver (matches its Chromium), or skip / fail as `chromium`; needs selenium too."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing('selenium is not installed: pip install -e ".[test]"')
    found = shutil.which("chromedriver")
    if not found:
        _missing(f"no chromedriver on PATH: {INSTALL}")
    return Path(found)


def selenium_chrome(width: int = 1200, height: int = 900, flags: tuple[str, ...] = ()):
    """A headless Selenium Chrome driver on the system Chromium with a width x height CSS-pixel viewport;
    `flags`: more Chromium switches."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium())
    for flag in HEADLESS_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    for flag in flags:
        options.add_argument(flag)
    # the driver path is given, so Selenium Manager (which would try to download one) never runs
    driver = webdriver.Chrome(options=options, service=Service(str(chromedriver())))
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver
