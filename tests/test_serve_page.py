"""The page of `radretrieve serve` in headless Chromium (Selenium with Debian's chromedriver).

Against the session's real server (tests/conftest.py): type a query and press Enter, k tiles appear whose
thumbnails decoded; arrow keys move between tiles; clicking one shows its similar studies (the API's own
answer for that study) and nearest reports; a `/?q=` link runs its query on load and shows typed markup as
text; with a token, signing in and signing out. A screenshot is saved in the test's tmp dir; with
RADRETRIEVE_UPDATE_SCREENSHOT=1 also to docs/serve-page.png (the picture of README.md and docs/guide/serve.md).
"""

from __future__ import annotations

import os
from urllib.parse import quote

import pytest

from tests.browser import chromedriver, chromium
from tests.serve_env import REPO

QUERY = "CT of the abdomen with a hypodense lesion"
WAIT_S = 30


@pytest.fixture()
def browser():
    chromium(), chromedriver()  # skip (or fail under RADRETRIEVE_REQUIRE_BROWSER=1) without them
    from tests.browser import selenium_chrome

    driver = selenium_chrome(1200, 900)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message=what)


def decoded_images(driver, selector: str) -> list[int]:
    """naturalWidth of every image under `selector` once all have finished loading (0: failed)."""
    script = "return Array.from(document.querySelectorAll(arguments[0])).map(i => [i.complete, i.naturalWidth]);"
    wait_for(driver, lambda d: all(done for done, _ in d.execute_script(script, selector)), "images to load")
    return [width for _, width in driver.execute_script(script, selector)]


def test_search_with_enter_shows_k_tiles_and_a_click_shows_similar_studies(server, serve_env, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    k = 6
    browser.get(server.url + "/")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#modality option")) > 1, "filters to load")
    box = browser.find_element(By.ID, "k")
    box.clear()
    box.send_keys(str(k))
    browser.find_element(By.ID, "q").send_keys(QUERY, Keys.ENTER)
    tiles = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit") or None, "result tiles")
    assert len(tiles) == k
    widths = decoded_images(browser, "#results .hit img.thumb")
    assert len(widths) == k and all(w > 0 for w in widths), widths
    with server.client() as client:
        api = client.get("/api/search", params={"q": QUERY, "k": k}).json()["hits"]
    assert [t.get_attribute("data-item-id") for t in tiles] == [str(h["item_id"]) for h in api]
    assert [t.get_attribute("data-rank") for t in tiles] == [str(r) for r in range(1, k + 1)]
    assert api[0]["study_key"] in tiles[0].text and f"{api[0]['score']:.4f}" in tiles[0].text
    assert "query=" not in browser.current_url and f"q={quote(QUERY).replace('%20', '+')}" in browser.current_url

    # keyboard: arrows move focus between tiles
    tiles[0].click()
    active = lambda d: d.switch_to.active_element.get_attribute("data-rank")  # noqa: E731
    browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    assert active(browser) == "2"
    browser.switch_to.active_element.send_keys(Keys.ARROW_LEFT)
    assert active(browser) == "1"

    # the click on the first tile opened its study: similar studies (as the API says) and nearest reports
    study = api[0]["study_key"]
    similar = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#similar .hit") or None, "similar tiles")
    with server.client() as client:
        want = client.get("/api/similar", params={"study": study, "k": k}).json()["hits"]
        reports = client.get("/api/reports", params={"study": study, "k": 5}).json()["hits"]
    assert [t.get_attribute("data-study") for t in similar] == [h["study_key"] for h in want]
    assert study not in [t.get_attribute("data-study") for t in similar]
    assert all(w > 0 for w in decoded_images(browser, "#similar img.thumb"))
    items = browser.find_elements(By.CSS_SELECTOR, "#reports li")
    assert len(items) == len(reports) and " ".join(reports[0]["text"].split())[:40] in " ".join(items[0].text.split())
    assert study in browser.find_element(By.ID, "detail-title").text

    shot = tmp_path / "serve-page.png"
    browser.save_screenshot(str(shot))
    _check_screenshot(shot)
    if os.environ.get("RADRETRIEVE_UPDATE_SCREENSHOT") == "1":
        save_for_docs(shot, REPO / "docs" / "serve-page.png")


def save_for_docs(shot, target) -> None:
    """The screenshot as a small palette PNG (the picture of README.md and docs/guide/serve.md)."""
    from PIL import Image

    target.parent.mkdir(exist_ok=True)
    Image.open(shot).convert("RGB").quantize(colors=96).save(target, optimize=True)


def _check_screenshot(path) -> None:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(path).convert("L"))
    assert img.shape == (900, 1200)
    assert len(np.unique(img)) >= 64  # thumbnails and text, not a blank page
    assert (img < 40).mean() > 0.03  # black thumbnail backgrounds are on screen


def test_a_link_runs_its_query_on_load_and_shows_markup_as_text(server, browser):
    from selenium.webdriver.common.by import By

    typed = "<img src=x onerror=document.title='owned'> chest"
    browser.get(f"{server.url}/?q={quote(typed)}&k=3&kind=volume")
    tiles = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .hit") or None, "result tiles")
    assert len(tiles) == 3 and all("volume" in t.text for t in tiles)
    assert browser.find_element(By.ID, "q").get_attribute("value") == typed
    assert browser.find_element(By.ID, "kind").get_attribute("value") == "volume"
    status = browser.find_element(By.ID, "status")
    assert typed in status.text and not status.find_elements(By.TAG_NAME, "img")
    assert browser.title == "radretrieve"


def test_an_error_is_shown_as_the_apis_one_line_message(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{server.url}/?q=chest&where={quote('no_such_column = 1')}")
    status = wait_for(browser, lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"), "error")
    assert status
    text = browser.find_element(By.ID, "status").text
    assert text.startswith("bad --where: ") and not browser.find_elements(By.CSS_SELECTOR, "#results .hit")


def test_sign_in_then_sign_out_revokes_the_session(token_server, browser):
    """With a token: the login form, then the page with a Sign out button; signing out ends the session on the
    server (a copy of the cookie is refused) and shows the form again."""
    import httpx
    from selenium.webdriver.common.by import By

    from tests.serve_env import TOKEN

    browser.get(token_server.url + "/")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
    sign_out = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#logout button").is_displayed(), "sign out")
    assert sign_out
    sid = browser.get_cookie("radretrieve_session")["value"]
    assert httpx.get(token_server.url + "/api/health", cookies={"radretrieve_session": sid}).status_code == 200
    browser.find_element(By.CSS_SELECTOR, "#logout button").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "token"), "the login form")
    assert browser.get_cookie("radretrieve_session") is None
    assert httpx.get(token_server.url + "/api/health", cookies={"radretrieve_session": sid}).status_code == 401


def test_without_a_token_there_is_no_sign_out(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#modality option")) > 1, "filters to load")
    assert not browser.find_element(By.ID, "logout").is_displayed()


# -- a hostile page in a real browser --------------------------------------------------------------------------
REBOUND = "rebound.example"  # resolved to 127.0.0.1 by this browser only (--host-resolver-rules): no DNS asked


@pytest.fixture()
def rebinding_browser():
    chromium(), chromedriver()
    from tests.browser import selenium_chrome

    driver = selenium_chrome(800, 600, flags=(f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1",))
    yield driver
    driver.quit()


FETCH = """const done = arguments[arguments.length - 1];
fetch(arguments[0]).then(r => r.text().then(t => done([r.status, t]))).catch(e => done([0, String(e)]));"""


def test_a_page_whose_name_is_rebound_to_the_server_reads_nothing(server, rebinding_browser):
    """DNS rebinding as it happens: the attacker's name now points at 127.0.0.1, so the attacker's page and the
    service share an origin and the page may read every answer, unless the service refuses the name."""
    page = f"http://{REBOUND}:{server.port}"
    rebinding_browser.get(page + "/")
    assert "radretrieve" not in rebinding_browser.title
    status, text = rebinding_browser.execute_async_script(FETCH, page + "/api/search?q=chest")
    assert status == 421 and "hits" not in text and "--allowed-host" in text
    status, text = rebinding_browser.execute_async_script(FETCH, server.url + "/api/search?q=chest")
    assert status == 0  # the real name, from the rebound page: cross-origin, so CORS hides the answer anyway


@pytest.fixture()
def hostile_site(tmp_path):
    """A web page served on localhost (another site than 127.0.0.1) from a folder; yields (folder, port)."""
    import functools
    import http.server
    import threading

    from tests.serve_env import free_port

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, port
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


def test_another_sites_page_cannot_load_a_thumbnail(server, serve_env, browser, hostile_site):
    """Whether an <img> of /api/thumbnail/ID.png loads tells a page that the item exists."""
    folder, port = hostile_site
    volume = next(i for i in serve_env["items"] if i.kind == "volume")
    thumb = f"{server.url}/api/thumbnail/{volume.item_id}.png"
    (folder / "index.html").write_text(f'<!DOCTYPE html><title>elsewhere</title><img src="{thumb}">')
    browser.get(f"http://localhost:{port}/index.html")
    assert browser.title == "elsewhere"
    assert decoded_images(browser, "img") == [0]  # refused: the page sees only an error
    browser.get(thumb)  # the same image on the server's own origin loads (the test can tell a load)
    assert browser.execute_script("return document.images[0].naturalWidth") > 0
