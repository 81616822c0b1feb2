"""The HTML contact sheet's layout in headless Chromium: long unbroken values (a 200-character study key, a
deep source path, a report of one long token) stay inside their card, and the full key stays readable."""

from __future__ import annotations

import pytest

from indexers.search import Hit
from radretrieve.application.contact_sheet import render
from tests.browser import selenium_chrome

LONG_KEY = "study-" + "0123456789abcdef" * 12 + "-e"  # 200 characters, no break opportunity

# Every element of every card whose border box reaches past the card's (a 1 px slack for rounding), and every
# card whose content is wider than its box (scrollWidth: overflow that an `overflow:hidden` child would hide).
OVERFLOWS_JS = """
const out = [];
for (const card of document.querySelectorAll('figure.hit')) {
  const box = card.getBoundingClientRect();
  if (card.scrollWidth > card.clientWidth + 1)
    out.push(['card', card.dataset.rank, card.scrollWidth, card.clientWidth]);
  for (const el of card.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.left < box.left - 1 || r.right > box.right + 1)
      out.push([el.tagName + '.' + el.className, card.dataset.rank, Math.round(r.left), Math.round(r.right),
                Math.round(box.left), Math.round(box.right)]);
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'hidden')
      out.push(['scrolls ' + el.tagName + '.' + el.className, card.dataset.rank, el.scrollWidth, el.clientWidth]);
  }
}
return out;
"""


def hits() -> list[Hit]:
    long_path = "/".join(["a-very-long-folder-name-without-spaces"] * 6) + "/" + "x" * 120 + ".dcm"
    return [
        Hit(1, 0.9, 1, "volume", LONG_KEY, "s1/ct.nii.gz", "CT", "abdomen", "axial", "normal study"),
        Hit(2, 0.8, 2, "image", "s2", long_path, "XR", "chest" * 40, "d" * 150, "finding-" * 60),
        Hit(3, 0.7, 3, "report", "s3", "", "", "", "", "short report"),
    ]


@pytest.fixture(scope="module")
def driver():
    d = selenium_chrome(1200, 900)
    try:
        yield d
    finally:
        d.quit()


def test_long_study_key_stays_inside_its_card(driver, tmp_path):
    page = tmp_path / "sheet.html"
    page.write_text(render([("q" * 300, hits())], "t" * 300, None, lambda h: ""), encoding="utf-8")
    for width in (1200, 420):  # a wide window and a phone-sized one (the card is 360 px wide)
        driver.set_window_size(width, 900)
        metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        driver.get(page.as_uri())
        assert len(driver.find_elements("css selector", "figure.hit")) == 3
        assert driver.execute_script(OVERFLOWS_JS) == [], width
        page_width = driver.execute_script("return document.documentElement.scrollWidth")
        assert page_width <= width, "the page itself scrolls sideways"
    # the key is cut for the eye, not for the reader: the whole key is in the element's title (a tooltip)
    keys = driver.find_elements("css selector", "figure.hit .key")
    assert keys[0].get_attribute("title") == LONG_KEY
    assert LONG_KEY in keys[0].get_attribute("textContent")  # copy-paste and find-in-page see all of it
