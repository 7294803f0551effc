""""What Voicenter sent" and the calls page's forms in a real browser (headless Chromium,
tests/chromium.py), in English and in Hebrew: the calls page flags a phase it does not
know and leads to /sent, which shows each request as it was read (its times in the
page's language and zone); paths such as /cdr read left to right on the Hebrew page;
the edit form of a call brings the browser back to its day, line and row. The
screenshots go to docs/sent-en.png and docs/sent-he.png."""
from __future__ import annotations

import datetime as dt
import re
import time
import urllib.parse

import pytest

from chromium import DOCS, By, WebDriverWait, expected_conditions, open_browser, sign_in
from conftest import OFFICE_PASSWORD, TEST_ZONE, israel_epoch, write_contacts

TOKEN = "inspect-browser-token-42"


def _office(start_server, tmp_path):
    contacts = write_contacts(tmp_path / "contacts.csv", [
        ("נועה כהן", "כהן ובניו", "054-123-4567"),
        ("Dana Levi", "Levi Optics", "052-765-4321"),
    ])
    return start_server(contacts, "--calls-db", tmp_path / "calls.sqlite",
                        "--token", TOKEN, "--office-password", OFFICE_PASSWORD)


def _sign_in(browser, server, path, until_id):
    """Open `path`, sign in on the login page it leads to, and wait for its element
    `until_id` (the login page's own URL holds the path too: it cannot be waited for)."""
    browser.get(server.url + path)
    sign_in(browser, OFFICE_PASSWORD, until_id)


def _reads_left_to_right(browser, element_id, snippet):
    """Whether `snippet`'s first character is drawn left of its last one inside the
    element (a mirrored "/cdr" shows as "cdr/")."""
    return browser.execute_script("""
        const [root, snippet] = [document.getElementById(arguments[0]), arguments[1]];
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node; node = walker.nextNode()) {
          const at = node.data.indexOf(snippet);
          if (at < 0) continue;
          const box = (i) => { const r = document.createRange();
                               r.setStart(node, i); r.setEnd(node, i + 1);
                               return r.getBoundingClientRect(); };
          return box(at).left < box(at + snippet.length - 1).left;
        }
        return null;""", element_id, snippet)


@pytest.mark.parametrize("language,direction,flag_words", [
    ("en-US", "ltr", "Pop-up requests whose phase this server could not read: 1."),
    ("he-IL", "rtl", "בקשות חלון קופץ שהשלב שלהן לא הובן: 1."),
])
def test_the_calls_page_flags_an_unknown_phase_and_leads_to_what_voicenter_sent(
        start_server, tmp_path, language, direction, flag_words):
    server = _office(start_server, tmp_path)
    for phase in ("Ringing", "Talking", "Hangup"):
        assert server.get("/popup", {"token": TOKEN, "phone": "0541234567",
                                     "ivrid": "20261204101500a", "statusCall": phase,
                                     "extenUser": "201"}).status == 200
    assert server.post_json(f"/popup?token={TOKEN}", {
        "phone": "972527654321", "ivrid": "20261204102000b", "status": "Connected"}
    ).status == 200
    assert server.post_form(f"/popup?token={TOKEN}", {
        "phone": "0509998877", "ivrid": "20261204102500c", "status": "Ringing"}
    ).status == 200
    assert server.get("/popup", {"token": "not-the-token", "phone": "0541234567",
                                 "statusCall": "Ringing"}).status == 403
    assert server.post_json(f"/cdr?token={TOKEN}", {
        "ivruniqueid": "20261204101500a", "type": "Incoming Call", "status": "ANSWER",
        "caller": "0541234567", "time": int(time.time()) - 300, "duration": 95}
    ).status == 200
    assert server.post_json(f"/cdr?token={TOKEN}", {
        "ivruniqueid": "20261204103000d", "type": "Queue", "status": "ABANDONE",
        "caller": "0527654321", "time": "04/12/2026 10:30"}).status == 200

    browser = open_browser(language)
    browser.set_window_size(1280, 1100)
    try:
        _sign_in(browser, server, "/calls", "flag-phases")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == direction
        flag = browser.find_element(By.ID, "flag-phases")
        assert flag.text.startswith(flag_words)
        assert browser.find_element(By.ID, "flag-times")
        if direction == "rtl":  # the CDR help's paths are not mirrored
            assert _reads_left_to_right(browser, "cdr-help", "/cdr") is True
            assert _reads_left_to_right(browser, "cdr-help", "/popup") is True
        flag.find_element(By.TAG_NAME, "a").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "sent")))
        assert urllib.parse.urlsplit(browser.current_url).path == "/sent"
        rows = browser.find_elements(By.CSS_SELECTOR, "#sent tbody tr")
        assert [row.get_attribute("data-kind") for row in rows] == [
            "cdr", "cdr", "popup", "popup", "popup", "popup", "popup", "popup"]
        assert [row.get_attribute("data-flag") for row in rows] == [
            "sent.flag_time", "", "", "", "sent.flag_phase", "", "", ""]
        assert "Connected" in rows[4].text and "+972527654321" in rows[4].text
        assert TOKEN not in browser.page_source and "not-the-token" not in browser.page_source
        assert "ERROR" in rows[2].text
        # Times as on every page: in the page's language, the zone named, never ISO.
        assert TEST_ZONE in browser.find_element(By.ID, "time-zone").text
        assert not re.search(r"\d{4}-\d\d-\d\d", browser.find_element(By.ID, "sent").text)
        if direction == "rtl":
            assert _reads_left_to_right(browser, "sent", "+972527654321") is True
        DOCS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(DOCS / f"sent-{language[:2]}.png"))
    finally:
        browser.quit()


@pytest.mark.parametrize("language", ["en-US", "he-IL"])
def test_the_edit_form_brings_the_browser_back_to_its_day_line_and_row(
        start_server, tmp_path, language):
    server = _office(start_server, tmp_path)
    day = dt.date.today() - dt.timedelta(days=3)
    # Noon of that day on the pages (this process's zone is the servers'), sent as
    # Voicenter writes a CDR's time: whichever reading the server takes of a CDR
    # that comes days late, the calls are that day's, in any zone the tests run in.
    noon = israel_epoch(dt.datetime.combine(day, dt.time(12)).timestamp())
    for n in range(3):
        assert server.post_json(f"/cdr?token={TOKEN}", {
            "ivruniqueid": f"old-{n}", "type": "Incoming Call", "status": "ANSWER",
            "caller": "0527654321", "did": "0722776773", "time": int(noon) + 60 * n,
            "duration": 20}).status == 200
    browser = open_browser(language)
    try:
        shown = f"/calls?day={day.isoformat()}&did=0722776773&calls=1"
        _sign_in(browser, server, shown, "call-old-0")
        browser.find_element(By.CSS_SELECTOR, "#call-old-0 a.edit-mark").click()
        WebDriverWait(browser, 10).until(expected_conditions.presence_of_element_located(
            (By.CSS_SELECTOR, "#call-old-0 form.mark-form")))
        form = browser.find_element(By.CSS_SELECTOR, "#call-old-0 form.mark-form")
        form.find_element(By.NAME, "note").send_keys("called from the car")
        form.find_element(By.TAG_NAME, "button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, "#call-old-0 td.mark"), "called from the car"))
        assert browser.current_url == f"{server.url}{shown}#call-old-0"
    finally:
        browser.quit()
