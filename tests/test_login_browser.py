"""The office login in a real browser (Debian's headless Chromium, Selenium), in
English and in Hebrew; the screenshots go to docs/login-en.png and docs/login-he.png."""
import os
import shutil
from pathlib import Path

import pytest

from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS

DOCS = Path(__file__).resolve().parent.parent / "docs"
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


def _browser(language):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=900,640", f"--lang={language}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(20)
    return driver


@pytest.mark.parametrize("language,title,wrong,direction", [
    ("en-US", "Sign in", "Wrong password.", "ltr"),
    ("he-IL", "כניסה", "הסיסמה שגויה.", "rtl"),
])
def test_signing_in_and_out_of_the_calls_page(start_server, tmp_path, language, title,
                                              wrong, direction):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--office-password", OFFICE_PASSWORD)
    browser = _browser(language)
    try:
        browser.get(f"{server.url}/calls?day=2026-11-26")
        assert browser.current_url.startswith(f"{server.url}/login?next=")
        assert browser.find_element(By.TAG_NAME, "h1").text == title
        html = browser.find_element(By.TAG_NAME, "html")
        assert html.get_attribute("dir") == direction
        box = browser.find_element(By.ID, "password")
        box.send_keys("not the password")
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "login-problem")))
        assert browser.find_element(By.ID, "login-problem").text == wrong
        DOCS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(DOCS / f"login-{language[:2]}.png"))

        browser.find_element(By.ID, "password").send_keys(OFFICE_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "status")))
        assert browser.current_url == f"{server.url}/calls?day=2026-11-26"
        assert browser.find_element(By.ID, "contacts").text == "12"

        browser.find_element(By.CSS_SELECTOR, "#logout-form button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "login-form")))
        browser.get(f"{server.url}/")
        assert "/login" in browser.current_url  # the session has ended
    finally:
        browser.quit()
