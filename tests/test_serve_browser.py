"""The page in headless Chromium, driven by Selenium through Debian's chromium + chromedriver (nothing is
downloaded), against the live server of `live_server`: search -> results -> open one; search by image;
match -> heatmap; judge -> score. Screenshots go to the test's tmp dir and are copied to /tmp/serve_screens."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from animatch.data.synth import query_text

pytestmark = pytest.mark.browser

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")
SCREENS = Path("/tmp/serve_screens")
WAIT_S = 30
WIDTH = 1280
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--window-size={WIDTH},900")


@pytest.fixture(scope="module")
def records(synth_root):
    return [json.loads(line) for line in (synth_root / "metadata.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip(f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium "
                    f"chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def page(driver, live_server):
    driver.get(live_server[0] + "/")
    wait(driver, lambda d: "48 characters" in d.find_element(By.ID, "index-info").text)
    yield driver
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def wait(driver, condition):
    return WebDriverWait(driver, WAIT_S).until(condition)


def images_loaded(driver, css: str) -> bool:
    return driver.execute_script(
        "const ims = [...document.querySelectorAll(arguments[0])];"
        "return ims.length > 0 && ims.every(im => im.complete && im.naturalWidth > 0);", css)


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """The whole page (the window grows to its height) as tmp_path/name, also copied to /tmp/serve_screens."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, max(900, min(height + 140, 4000)))
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, 900)
    SCREENS.mkdir(exist_ok=True)
    shutil.copy(path, SCREENS / name)
    return path


def upload(driver, element_id: str, paths: list[Path]) -> None:
    driver.find_element(By.ID, element_id).send_keys("\n".join(str(p) for p in paths))


def test_search_results_open_and_search_by_image(page, records, synth_root, tmp_path):
    record = records[3]
    box = page.find_element(By.ID, "search-query")
    box.send_keys(query_text(record["attributes"]), Keys.ENTER)
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .result")) == 10)
    first = page.find_elements(By.CSS_SELECTOR, "#gallery .result")[0]
    assert first.find_element(By.CLASS_NAME, "name").text == record["character"]
    assert first.find_element(By.CLASS_NAME, "title").text == record["title"]
    wait(page, lambda d: images_loaded(d, "#gallery img"))
    screenshot(page, tmp_path, "1_search.png")
    first.click()
    wait(page, lambda d: d.find_element(By.ID, "detail-appearance").text.strip())
    assert page.find_element(By.ID, "detail-name").text == record["character"]
    assert "selected" in first.get_attribute("class")
    wait(page, lambda d: images_loaded(d, "#detail-image"))
    screenshot(page, tmp_path, "2_detail.png")

    upload(page, "search-image", [synth_root / records[7]["file_name"]])
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#described .item")) == 10)
    assert records[7]["character"] in page.find_elements(By.CSS_SELECTOR, "#described .item")[0].text
    wait(page, lambda d: images_loaded(d, "#described img"))
    screenshot(page, tmp_path, "3_search_by_image.png")


def test_match_shows_the_ranked_table_and_the_heatmap(page, records, synth_root, tmp_path):
    page.find_element(By.ID, "tab-match").click()
    upload(page, "match-images", [synth_root / r["file_name"] for r in records[:3]])
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#match-previews img")) == 3)
    page.find_element(By.ID, "match-texts").send_keys("\n".join(query_text(r["attributes"]) for r in records[:2]))
    page.find_element(By.ID, "match-filter").send_keys(f"{records[2]['character']} {records[2]['title']}")
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#match-picker input")) == 1)
    page.find_element(By.CSS_SELECTOR, "#match-picker input").click()
    page.find_element(By.ID, "match-k").clear()
    page.find_element(By.ID, "match-k").send_keys("3")
    page.find_element(By.ID, "match-run").click()
    wait(page, lambda d: images_loaded(d, "#match-results img.heatmap"))
    rows = page.find_elements(By.CSS_SELECTOR, "#match-results tbody tr")
    assert len(rows) == 9 and "error" not in page.find_element(By.ID, "match-status").get_attribute("class")
    assert records[2]["character"] in page.find_element(By.ID, "match-picked").text
    screenshot(page, tmp_path, "4_match.png")


def test_judge_shows_progress_then_the_verdict(page, live_server, records, synth_root, tmp_path):
    page.find_element(By.ID, "tab-judge").click()
    upload(page, "judge-image", [synth_root / records[0]["file_name"]])
    page.find_element(By.ID, "judge-text").send_keys("A girl with long pink hair, blue eyes and a black uniform.")
    release = threading.Event()  # a job occupying the judge, so the page shows the queue first
    live_server[1].queue.submit("test", lambda job: release.wait(WAIT_S))
    try:
        page.find_element(By.ID, "judge-run").click()
        wait(page, lambda d: "position 1" in d.find_element(By.ID, "judge-progress-text").text)
        assert not page.find_element(By.ID, "judge-run").is_enabled()
        screenshot(page, tmp_path, "5_judge_waiting.png")
    finally:
        release.set()
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#judge-results .bigscore"))
    assert not page.find_element(By.ID, "judge-progress").is_displayed()
    assert "judged in" in page.find_element(By.ID, "judge-status").text
    screenshot(page, tmp_path, "5_judge.png")
    page.find_element(By.CSS_SELECTOR, "input[name=judge-mode][value=cascade]").click()
    page.find_element(By.ID, "judge-run").click()
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#judge-results tbody tr")) == 3)
    screenshot(page, tmp_path, "6_cascade.png")


def test_judge_tab_explains_a_missing_judge(page, live_server, monkeypatch, tmp_path):
    monkeypatch.setattr(live_server[1], "judge", None)
    page.refresh()
    page.find_element(By.ID, "tab-judge").click()
    notice = wait(page, lambda d: d.find_element(By.ID, "judge-missing").text)
    assert "--judge-model" in notice and not page.find_element(By.ID, "judge-run").is_enabled()
    screenshot(page, tmp_path, "7_no_judge.png")


def test_api_docs_render_offline(page, live_server, tmp_path):
    page.get(live_server[0] + "/docs")
    wait(page, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10)
    assert "/api/judge/cascade" in page.find_element(By.TAG_NAME, "body").text
    screenshot(page, tmp_path, "8_api_docs.png")
