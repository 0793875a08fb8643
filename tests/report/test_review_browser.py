"""The review page in a real browser (headless Chromium): pictures load, a score is clicked, saved and shown again.

The page is opened at the address with the server's token, as ``sirtreg review`` opens it; its script sends the
token with its requests. Without the token the server shows nothing.

Skips with the reason when Chromium, its driver or selenium is missing (CI installs them where it can).
"""

from __future__ import annotations

import shutil
import threading

import pytest

from sirtreg.review import make_server

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)
pytest.importorskip("selenium.webdriver", reason="selenium is needed (pip install -e '.[test]')")
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT_S = 20


@pytest.fixture()
def served(run_folder):
    server = make_server(run_folder, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _loaded(driver) -> None:
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script("return document.readyState") == "complete")


def test_a_score_clicked_in_the_page_lands_in_the_store(browser, served):
    assert "?token=" in served.url
    browser.get(served.url)
    _loaded(browser)
    sizes = browser.execute_script(
        "return Array.from(document.images).map((i) => [i.complete, i.naturalWidth, i.naturalHeight]);")
    assert sizes == [[True, 40, 30], [True, 20, 10]]  # every picture of the report is shown
    assert browser.find_element(By.ID, "review").is_displayed()

    browser.find_element(By.ID, "reviewer").send_keys("Dr Browser")
    row = browser.find_element(By.CSS_SELECTOR, 'tr.item[data-floating="mr"][data-landmark="lesion 2"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", row)  # not under the save bar
    row.find_element(By.CSS_SELECTOR, 'input[type=radio][value="4"]').click()
    row.find_element(By.CSS_SELECTOR, "input.comment").send_keys("a little caudal")
    browser.find_element(By.ID, "save").click()
    status = browser.find_element(By.ID, "review-status")
    WebDriverWait(browser, WAIT_S).until(lambda d: status.text.startswith(("saved", "not saved")))
    assert status.text == "saved: 1 new or changed of 1 score(s)"
    (score,) = served.store.scores()
    assert (score.floating, score.kind, score.landmark, score.reviewer, score.score, score.comment) == (
        "mr", "lesion", "lesion 2", "Dr Browser", 4, "a little caudal")

    browser.refresh()  # the page remembers the reviewer and shows the saved score again
    _loaded(browser)
    row = browser.find_element(By.CSS_SELECTOR, 'tr.item[data-floating="mr"][data-landmark="lesion 2"]')
    radio = row.find_element(By.CSS_SELECTOR, 'input[type=radio][value="4"]')
    WebDriverWait(browser, WAIT_S).until(lambda d: radio.is_selected())
    assert browser.find_element(By.ID, "reviewer").get_attribute("value") == "Dr Browser"
    assert row.find_element(By.CSS_SELECTOR, "input.comment").get_attribute("value") == "a little caudal"
    assert row.find_element(By.CSS_SELECTOR, "td.saved").text.endswith("UTC")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []  # no script error, no refused content


def test_the_page_without_the_token_shows_nothing(browser, served):
    browser.get(f"http://127.0.0.1:{served.port}/")
    _loaded(browser)
    assert "no or wrong token" in browser.page_source
    assert browser.find_elements(By.ID, "review") == [] and served.store.scores() == []
