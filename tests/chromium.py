"""Headless Chromium for the browser tests (the *_browser.py files): Debian's
``chromium`` and ``chromium-driver``, driven by Selenium.

Importing this module skips the test file that imports it when they are missing, or
fails it when POPUP_TEST_REQUIRE_BROWSER (set by CI) asks for them. The screenshots
the README shows go to docs/ (``git checkout docs/`` after a run you did not mean to
change them), the others to artifacts/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
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
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException, WebDriverException)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

__all__ = ["ARTIFACTS", "DOCS", "By", "WebDriverWait", "expected_conditions",
           "open_browser", "replaced", "sign_in"]


def open_browser(language: str = "en-US", window: str = "900,640"):
    """A headless Chromium asking for pages in `language`, its window `window` pixels
    wide and high; the caller quits it. The driver is Debian's: Selenium must not
    try to download one."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     f"--window-size={window}", f"--lang={language}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(20)
    return driver


def sign_in(browser, password: str, until_id: str):
    """Sign in on the login page the browser shows, then wait for the page it leads
    to (its element `until_id`, returned): the click returns before that page comes."""
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
    return WebDriverWait(browser, 10).until(
        expected_conditions.presence_of_element_located((By.ID, until_id)))


def replaced(element):
    """A wait condition: the page holding `element` has been replaced by the next one.
    Chromium says so of an element either as stale or, while the next page is being
    put in, as an inspector error ("Node with given id does not belong to the
    document"), which expected_conditions.staleness_of lets through."""
    def gone(_browser):
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            if "does not belong to the document" in str(error):
                return True
            raise
        return False
    return gone
