"""The caller's page in a real browser (headless Chromium, tests/chromium.py), in English
and in Hebrew: a pop-up's URL followed to the caller's page (every column, the Hebrew
page right to left), the add-contact flow, a tampered link, a hostile name shown as
text; and the page of a contact of an iPhone's vCard served beside a CSV. Screenshots
go to docs/caller-known-LANG.png and docs/caller-unknown-LANG.png."""

from __future__ import annotations

import hashlib

import pytest
from selenium.common.exceptions import NoAlertPresentException

import vcards
from chromium import DOCS, By, WebDriverWait, expected_conditions, open_browser
from conftest import write_contacts

HEADER = ("שם", "Company", "Phone", "Mobile", "E-mail", "City", "Notes")

ROWS = [
    ("נועה כהן", "Cohen & Partners Ltd", "02-6543210", "054-1234567", "noa@example.com",
     "ירושלים", "prefers WhatsApp after 17:00"),
    ("John Doe", "Voicenter", "072-277-6772", "", "", "Tel Aviv", ""),
]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _right_to_left(browser):
    """The page's direction, and whether its heading hugs the right edge."""
    direction = browser.execute_script(
        "return getComputedStyle(document.body).direction")
    heading = browser.find_element(By.TAG_NAME, "h1")
    span = browser.execute_script(
        "const r = document.createRange(); r.selectNodeContents(arguments[0]);"
        "const b = r.getBoundingClientRect(), p = arguments[0].getBoundingClientRect();"
        "return [b.left - p.left, p.right - b.right];", heading)
    return direction == "rtl" and span[1] < span[0]


@pytest.mark.parametrize("language", ["en-US", "he-IL"])
def test_a_pop_ups_link_opens_the_callers_page_with_every_column(start_server, tmp_path,
                                                                 language):
    office = write_contacts(tmp_path / "office.csv", ROWS, header=HEADER)
    server = start_server(office, "--calls-db", tmp_path / "calls.sqlite")
    answer = server.lookup("0541234567", ivrid="call-1", statusCall="Ringing")
    assert answer["TOTAL"] == 1 and answer["URL"].startswith(server.url + "/caller/")
    browser = open_browser(language)
    try:
        browser.get(answer["URL"])
        assert browser.find_element(By.ID, "caller-name").text == "נועה כהן"
        assert browser.find_element(By.ID, "caller-company").text == "Cohen & Partners Ltd"
        shown = browser.find_element(By.ID, "contacts").text
        # Phones as the pages write every number of the region: as dialled at home.
        written = {"02-6543210": "02-654-3210", "054-1234567": "054-123-4567"}
        for header, value in zip(HEADER, ROWS[0]):
            value = written.get(value, value)
            assert header in shown and value in shown, (header, value)
        assert browser.find_elements(By.CSS_SELECTOR, 'a[href="mailto:noa@example.com"]')
        assert browser.find_elements(By.CSS_SELECTOR, 'a[href="https://wa.me/972541234567"]')
        assert _right_to_left(browser) == language.startswith("he")
        DOCS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(DOCS / f"caller-known-{language[:2]}.png"))

        tampered = answer["URL"].replace("972541234567", "972541234568")
        browser.get(tampered)
        reason = browser.find_element(By.ID, "denied-reason")
        assert reason.get_attribute("data-reason") == "tampered"
        assert "Cohen" not in browser.page_source
    finally:
        browser.quit()


@pytest.mark.parametrize("language", ["en-US", "he-IL"])
def test_adding_an_unknown_caller_from_the_page(start_server, tmp_path, language):
    office = write_contacts(tmp_path / "office.csv", ROWS, header=HEADER)
    before = _digest(office)
    server = start_server(office)
    answer = server.lookup("0509999871")
    assert answer["TOTAL"] == 0
    browser = open_browser(language)
    try:
        browser.get(answer["URL"])
        assert browser.find_elements(By.ID, "not-found")
        assert browser.find_element(By.ID, "caller-national").text == "050-999-9871"
        assert _right_to_left(browser) == language.startswith("he")
        assert browser.save_screenshot(str(DOCS / f"caller-unknown-{language[:2]}.png"))
        name = "<script>alert(1)</script>"
        browser.find_element(By.ID, "add-name").send_keys(name)
        browser.find_element(By.ID, "add-company").send_keys("Galil Systems")
        browser.find_element(By.ID, "add-notes").send_keys("asked for a quote")
        browser.find_element(By.CSS_SELECTOR, "#add-form button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "caller-name")))
        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 (the script never ran)
        assert browser.find_element(By.ID, "caller-name").text == name
        assert "asked for a quote" in browser.find_element(By.ID, "contacts").text
    finally:
        browser.quit()
    found = server.lookup("0509999871")
    assert (found["TOTAL"], found["CLIENTNAME"], found["COMPANY"]) == (1, name,
                                                                       "Galil Systems")
    assert _digest(office) == before


@pytest.mark.parametrize("language", ["en-US", "he-IL"])
def test_a_vcard_contacts_page_opens_from_the_pop_ups_link(start_server, tmp_path,
                                                           language):
    office = write_contacts(tmp_path / "office.csv", [("Desk", "Office", "03-555-0000")])
    vcf, people = vcards.write_iphone(tmp_path)
    garage = people[2]  # a company card, Hebrew, no URL: its pop-up links to its page
    server = start_server(office, vcf)
    answer = server.lookup(garage["numbers"][0])
    assert answer["TOTAL"] == 1 and answer["URL"].startswith(server.url + "/caller/")
    browser = open_browser(language)
    try:
        browser.get(answer["URL"])
        assert browser.find_element(By.ID, "caller-name").text == garage["name"]
        shown = browser.find_element(By.ID, "contacts").text
        assert "Contacts.vcf" in shown and "09-765-4321" in shown, shown
        direction = browser.execute_script(
            "return getComputedStyle(document.body).direction")
        assert direction == ("rtl" if language.startswith("he") else "ltr")
    finally:
        browser.quit()
