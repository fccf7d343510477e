"""The evaluation report as a person sees it: rendered by real headless Chromium.

Needs Debian's chromium and chromium-driver (scripts/install-chromium.sh); selenium drives
the installed browser, nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from character.report import SECTIONS, write_report

from tests.unit.evaluate.synthetic import results

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser(tmp_path: Path):
    driver_path = shutil.which("chromedriver")
    if not Path(CHROMIUM).exists() or driver_path is None:
        pytest.fail("chromium or chromedriver missing: run scripts/install-chromium.sh")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1100,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_in_a_real_browser(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    index = write_report(results(), tmp_path / "report")
    browser.get(index.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    assert browser.title.startswith("Evaluation: loving")
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings == list(SECTIONS)
    # the persona side by side, right after the summary: one row per prompt, long answers folded
    section = browser.find_element(By.CSS_SELECTOR, "table.side-by-side")
    assert section.is_displayed() and headings.index("Persona side by side") == 1
    shown = results().side_by_side
    assert shown is not None
    assert len(section.find_elements(By.CSS_SELECTOR, "tr")) == 1 + len(shown.rows)
    folded = section.find_element(By.TAG_NAME, "details")
    assert folded.get_attribute("open") is None
    folded.find_element(By.TAG_NAME, "summary").click()
    assert folded.get_attribute("open") is not None and "step by gentle step" in folded.text
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert len(images) == 7
    for src, complete, width in images:
        assert complete and width > 0, f"{src} did not load"
    # The full page, for a person to look at: a real image of the whole page, with content on it.
    from PIL import Image

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1100, height)
    screenshot = tmp_path / "report.png"
    browser.save_screenshot(str(screenshot))
    with Image.open(screenshot) as image:
        assert image.format == "PNG"
        assert image.height >= min(height, 1400) * 0.9 and image.width >= 1000
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # None: more colours than counted, not a blank page
