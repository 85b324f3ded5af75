"""The server's page in a real headless browser (Playwright driving the system Chromium): upload an image, type
a phrase, read back the box it draws; search the index and see the hits. Nothing here skips: CI installs
chromium (apt) and playwright (pip); a missing browser is a failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infer_helpers import Scenes, Server

from x2vlm_core.inference import Pipeline

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


@pytest.mark.slow  # a server process and a browser: ~30 s on 2 busy cores
def test_upload_an_image_and_read_back_the_box(page: Any, live_server: Server, pipe: Pipeline,
                                               scenes: Scenes) -> None:
    page.goto(live_server.url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert "step 4" in page.inner_text("#info") and page.is_enabled("#search") and not page.is_enabled("#answer")
    page.set_input_files("#image", str(scenes.paths[1]))
    page.wait_for_selector("#frame:not([hidden])", timeout=30_000)
    phrase = scenes.objects[1][0]
    page.fill("#phrase", phrase)
    page.click("#ground")
    page.wait_for_selector("#box[data-xyxy]", timeout=60_000)
    shown = [float(v) for v in page.get_attribute("#box", "data-xyxy").split(",")]
    expected = pipe.ground(scenes.paths[1], phrase)
    assert shown == pytest.approx(list(expected.box.xyxy()), abs=1e-5)
    # the box is drawn where it says: its rectangle over the image's, as fractions
    frame, box = page.locator("#preview").bounding_box(), page.locator("#box").bounding_box()
    drawn = [(box["x"] - frame["x"]) / frame["width"], (box["y"] - frame["y"]) / frame["height"],
             (box["x"] + box["width"] - frame["x"]) / frame["width"],
             (box["y"] + box["height"] - frame["y"]) / frame["height"]]
    assert drawn == pytest.approx(shown, abs=0.01)
    assert phrase in page.inner_text("#result") and page.inner_text("#error") == ""


@pytest.mark.slow
def test_search_shows_the_hits_and_errors_show_the_message(page: Any, live_server: Server, scenes: Scenes) -> None:
    page.goto(live_server.url + "/")
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    page.fill("#phrase", scenes.captions[2])
    page.click("#search")
    page.wait_for_selector("#hits .hit", timeout=60_000)
    assert page.locator("#hits .hit").count() == 10 and page.locator("#hits .box").count() == 10
    first = page.locator("#hits .hit img").first
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=first.element_handle(),
                           timeout=30_000)  # the thumbnail loaded from /index/thumbnail/ROW
    page.fill("#phrase", "   ")
    page.click("#ground")
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=10_000)
    assert page.inner_text("#error") in ("choose an image first", "type a phrase first")
