"""The office login in a real browser (headless Chromium, tests/chromium.py), in English
and in Hebrew: signing in and out of the calls page, a wrong password said in the
page's language. The screenshots go to docs/login-en.png and docs/login-he.png."""
import pytest

from chromium import DOCS, By, WebDriverWait, expected_conditions, open_browser
from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS


@pytest.mark.parametrize("language,title,wrong,direction", [
    ("en-US", "Sign in", "Wrong password.", "ltr"),
    ("he-IL", "כניסה", "הסיסמה שגויה.", "rtl"),
])
def test_signing_in_and_out_of_the_calls_page(start_server, tmp_path, language, title,
                                              wrong, direction):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--office-password", OFFICE_PASSWORD)
    browser = open_browser(language)
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
