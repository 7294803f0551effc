"""The calls page in a real browser: headless Chromium from Debian's packages, driven
by Selenium. The screenshot is kept in artifacts/calls-page.png."""
import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import SAMPLE_CONTACTS
from test_calls import send_a_day_of_calls, wait_for_calls

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("POPUP_TEST_REQUIRE_BROWSER"):
        pytest.fail("chromium and chromium-driver are required here "
                    "(apt-get install chromium chromium-driver)", pytrace=False)
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1100,900", "--lang=en-US"):
        options.add_argument(argument)
    # The driver from Debian's package: Selenium must not try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def test_the_page_shows_the_missed_call_by_name_and_the_lookup_box_works(
        start_server, tmp_path, browser):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", "browser-test-token")
    token = {"token": "browser-test-token"}
    send_a_day_of_calls(_WithToken(server, token))
    wait_for_calls(_WithToken(server, token), 4, path="/calls.csv?token=browser-test-token")

    browser.get(f"{server.url}/?token=browser-test-token")
    rows = browser.find_elements(By.CSS_SELECTOR, "#calls tbody tr")
    assert [row.get_attribute("class") for row in rows] == [  # newest first
        "in-progress", "answered", "missed", "missed"]
    first = rows[2]
    assert "John Doe" in first.find_element(By.CSS_SELECTOR, "td.name").text
    assert first.find_element(By.CSS_SELECTOR, "td.outcome").text == "missed"
    assert first.find_element(By.CSS_SELECTOR, "a[href^='tel:']").get_attribute(
        "href") == "tel:+972722776772"
    hebrew = rows[1].find_element(By.CSS_SELECTOR, "td.name bdi")
    assert hebrew.text == "נועה כהן"
    assert browser.find_element(By.ID, "contacts").text == "12"

    box = browser.find_element(By.ID, "try")
    box.clear()
    box.send_keys("+972 54-123-4567")
    browser.find_element(By.CSS_SELECTOR, "#try-form button").click()
    WebDriverWait(browser, 10).until(
        expected_conditions.presence_of_element_located((By.ID, "try-json")))
    assert "נועה כהן" in browser.find_element(By.ID, "try-result").text
    assert '"TOTAL": 1' in browser.find_element(By.ID, "try-json").text

    browser.get(f"{server.url}/?token=browser-test-token")  # back to the day's calls
    time.sleep(0.2)
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "calls-page.png"))


def test_the_page_is_readable_on_a_phone(start_server, tmp_path, browser):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite")
    send_a_day_of_calls(server)
    wait_for_calls(server, 4)
    browser.set_window_size(390, 844)
    browser.get(server.url + "/")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400  # nothing forces sideways scrolling
    assert browser.find_element(By.CSS_SELECTOR, "#calls tbody tr td.name").is_displayed()
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "calls-page-phone.png"))


class _WithToken:
    """A server handle whose requests carry the token in the query string."""

    def __init__(self, server, token):
        self._server, self._token = server, token

    def get(self, path, params=None, **kw):
        return self._server.get(path, {**self._token, **(params or {})}
                                if "token=" not in path else params, **kw)

    def post_form(self, path, data=None, **kw):
        return self._server.post_form(path + "?token=" + self._token["token"], data, **kw)

    def post_json(self, path, obj=None, **kw):
        return self._server.post_json(path + "?token=" + self._token["token"], obj, **kw)
