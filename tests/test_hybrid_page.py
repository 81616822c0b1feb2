"""The page's search mode in headless Chromium: the mode control, matched words marked in the report text, markup
in a report shown as inert text, and the mode kept in the shareable URL."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest

from tests.serve_env import Server
from tests.test_serve_page import browser, wait_for  # noqa: F401  (browser: the Chromium fixture)

HOSTILE = '<script>document.title="owned"</script> Kommerell diverticulum <img src=x onerror="document.title=1">'


@pytest.fixture(scope="module")
def hostile_server(serve_env, tmp_path_factory):
    """A server over 6 synthetic studies, one of whose reports carries markup around a rare finding."""
    from indexers.build import build_indexes
    from pipelines.job import IndexOptions, index_archive
    from radretrieve.synth import synthesize

    tmp = tmp_path_factory.mktemp("hostile")
    arch, out = tmp / "arch", tmp / "out"
    synthesize(arch, studies=6, seed=1)
    sidecar = sorted(arch.glob("*/*.json"))[0]
    data = json.loads(sidecar.read_text())
    data["text"] = HOSTILE
    sidecar.write_text(json.dumps(data))
    (arch / "manifest.csv").unlink()  # the folder is scanned with its sidecar reports
    index_archive(arch, out, serve_env["model"], IndexOptions(workers=0, progress=False, anonymise_paths=False))
    build_indexes(out)
    srv = Server(out, tmp / "server.log")
    yield srv
    srv.stop()


def test_keyword_mode_marks_the_matched_words_and_markup_stays_text(hostile_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(f"{hostile_server.url}/?q=kommerell%20diverticula&mode=keyword")
    tiles = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit") or None, "result tiles")
    assert browser.find_element(By.ID, "mode").get_attribute("value") == "keyword"
    report = tiles[0].find_element(By.CSS_SELECTOR, ".report")
    assert [m.text for m in report.find_elements(By.TAG_NAME, "mark")] == ["Kommerell"]
    assert "<script>" in report.text and "onerror" in report.text  # shown as the text it is
    assert not report.find_elements(By.TAG_NAME, "script") and not report.find_elements(By.TAG_NAME, "img")
    assert browser.title == "radretrieve"  # neither the script nor the handler ran
    assert "keyword #1" in tiles[0].find_element(By.CSS_SELECTOR, ".evidence").text


def test_the_mode_control_goes_into_the_shareable_url(hostile_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(hostile_server.url + "/")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#mode option")) == 3, "modes to load")
    assert browser.find_element(By.ID, "mode").get_attribute("value") == "hybrid"  # the server's default
    Select(browser.find_element(By.ID, "mode")).select_by_value("keyword")
    browser.find_element(By.ID, "q").send_keys("diverticulum", Keys.ENTER)
    tiles = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit") or None, "result tiles")
    assert tiles
    query = parse_qs(urlparse(browser.current_url).query)
    assert query["mode"] == ["keyword"] and query["q"] == ["diverticulum"]
    browser.get(browser.current_url)  # the shared link opens in the same mode
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit .evidence") or None, "evidence")
    assert browser.find_element(By.ID, "mode").get_attribute("value") == "keyword"
    browser.get(hostile_server.url + "/?q=diverticulum")  # a link without a mode: the default, left out of it
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit .evidence") or None, "evidence")
    assert browser.find_element(By.ID, "mode").get_attribute("value") == "hybrid"


def test_a_hybrid_hit_that_holds_the_rare_words_says_so(hostile_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(f"{hostile_server.url}/?q=kommerell%20diverticulum&mode=hybrid")
    tiles = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit .evidence") or None, "tiles")
    texts = [t.text for t in tiles]
    assert texts[0].startswith("exact: kommerel, diverticulum · ")
    assert not any("exact" in t for t in texts[1:])  # only the study whose report names it
