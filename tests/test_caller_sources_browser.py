"""Issue 21 in a real browser (headless Chromium), in English and Hebrew: the pop-up's
link for a contact of an iPhone's vCard, served beside a CSV, opens that caller's
page (it used to be a JSON 500 for every caller once a source was a vCard)."""
import pytest

import vcards
from conftest import write_contacts
from test_login_browser import _browser

from selenium.webdriver.common.by import By  # noqa: E402


@pytest.mark.parametrize("language", ["en-US", "he-IL"])
def test_a_vcard_contacts_page_opens_from_the_pop_ups_link(start_server, tmp_path,
                                                           language):
    office = write_contacts(tmp_path / "office.csv", [("Desk", "Office", "03-555-0000")])
    vcf, people = vcards.write_iphone(tmp_path)
    garage = people[2]  # a company card, Hebrew, no URL: its pop-up links to its page
    server = start_server(office, vcf)
    answer = server.lookup(garage["numbers"][0])
    assert answer["TOTAL"] == 1 and answer["URL"].startswith(server.url + "/caller/")
    browser = _browser(language)
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
