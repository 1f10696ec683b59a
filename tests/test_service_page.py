"""The web page in headless Debian chromium, driven by Playwright (never a downloaded browser)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from servers import Server, mnist_files

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _browser_or_skip(p):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`, "
                    f"as .ci/run does) to test the page")
    try:
        return p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
    except Exception as exc:  # a browser that is present but cannot start here: say why
        pytest.skip(f"{CHROMIUM} does not start: {str(exc).splitlines()[0]}")


@pytest.mark.slow
def test_page_shows_neighbours_of_a_stored_image(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    index_path, vectors, labels, _, y = mnist_files(tmp_path / "files")
    server = Server(index_path, tmp_path / "data", "--gallery", str(vectors), "--labels", str(labels),
                    token="page-token")
    shot = tmp_path / "page.png"
    try:
        with sync_api.sync_playwright() as p:
            browser = _browser_or_skip(p)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.set_default_timeout(90_000)   # a loaded 2-core machine; each wait ends as soon as it can
            page.goto(server.url + "/")
            page.wait_for_selector("#auth", state="visible", timeout=90_000)   # the token is asked for
            page.fill("#token", "page-token")
            page.click("#save-token")
            page.wait_for_function("document.querySelector('#facts').textContent.includes('2,000')",
                                   timeout=90_000)
            facts = page.inner_text("#facts")
            assert "HammingIndex" in facts and "784" in facts and "measured recall" in facts
            page.fill("#qid", "17")
            page.click("#search")
            page.wait_for_function("document.querySelectorAll('.card.neighbour img').length == 12",
                                   timeout=90_000)
            page.wait_for_function("Array.from(document.querySelectorAll('.card img')).every(i => i.complete && i.naturalWidth == 112)",
                                   timeout=90_000)
            cards = page.query_selector_all(".card.neighbour")
            first = cards[0].inner_text()
            assert "id 17" in first and f"label {y[17]}" in first
            assert page.query_selector_all(".card.neighbour.same"), "neighbours of the query's class are marked"
            assert page.inner_text("#query").startswith("query")
            page.wait_for_function("!document.querySelector('#facts').textContent.includes('not measured')",
                                   timeout=90_000)
            page.reload()
            page.wait_for_function("document.querySelector('#facts').textContent.includes('%')", timeout=90_000)
            page.fill("#qid", "17")
            page.click("#search")
            page.wait_for_function("Array.from(document.querySelectorAll('.card.neighbour img')).length == 12 && "
                                   "Array.from(document.querySelectorAll('.card img')).every(i => i.complete && i.naturalWidth == 112)",
                                   timeout=90_000)
            page.screenshot(path=str(shot), full_page=True)

            # An uploaded image: the same digit as a PNG file is its own nearest neighbour.
            from PIL import Image

            import numpy as np

            digit = np.load(vectors)[17].reshape(28, 28)
            Image.fromarray(np.rint(digit * 255).astype(np.uint8)).save(tmp_path / "digit.png")
            page.set_input_files("#upload", str(tmp_path / "digit.png"))
            page.wait_for_function("document.querySelector('#query').textContent.includes('uploaded image') && "
                                   "document.querySelectorAll('.card.neighbour img').length == 12",
                                   timeout=90_000)
            assert "d=0" in page.query_selector_all(".card.neighbour")[0].inner_text()
            browser.close()
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("DEEPCODES_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / "service-page.png")
    finally:
        server.stop()
