"""The calls page of an office with no public address, in a real browser (headless
Chromium, tests/chromium.py), in English and in Hebrew: while Voicenter refuses the
server's address (error 4) the status line says where to authorise it (the
screenshots docs/call-log-en.png and docs/call-log-he.png, in the README); once it is
authorised, the next pull of the Call Log brings the day's calls, abandoned in a
queue or not, and the status line the time of the pull."""
from __future__ import annotations

import random
import re
import time

import pytest

from chromium import DOCS, By, open_browser, sign_in
from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS, wait_until
from voicenter_calllog_standin import CallLogStandin, make_record

CODE = "browser-test-code-5678"


@pytest.mark.parametrize("language,direction,words", [
    ("en-US", "ltr", "under API Settings"),
    ("he-IL", "rtl", "תחת הגדרות API"),
])
def test_the_status_line_says_what_to_authorise_then_the_pulled_calls_show(
        start_server, tmp_path, log_in, language, direction, words):
    now = int(time.time())
    rng = random.Random(4)
    abandoned = make_record(now - 1800, rng, Type="Queue", CdrType=8,
                            DialStatus="ABANDONE", CallerNumber="0722776772",
                            Targetextension="", RecordURL="", Duration=40)
    answered = make_record(now - 1200, rng, Type="Incoming Call", CdrType=1,
                           DialStatus="ANSWER", CallerNumber="0541234567")
    with CallLogStandin([abandoned, answered], code=CODE) as standin:
        standin.fail = 4
        server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                              "--office-password", OFFICE_PASSWORD, "--timezone", "UTC",
                              "--voicenter-code", CODE, "--voicenter-api", standin.url,
                              "--voicenter-monitor", standin.url, "--call-log-every", "2")
        client = log_in(server)
        wait_until(lambda: 'data-trouble="address"' in client.get("/calls").text,
                   what="the refusal on the calls page")
        wait_until(lambda: server.health()["voicenter"].startswith("ok"),
                   what="the stand-in's extension list")
        day = time.strftime("%Y-%m-%d", time.gmtime(now - 1800))
        browser = open_browser(language)
        browser.set_window_size(1280, 900)
        try:
            browser.get(f"{server.url}/login?next=/calls?day={day}")
            status = sign_in(browser, OFFICE_PASSWORD, "call-log")
            assert words in status.text and "class" in status.get_attribute("outerHTML")
            assert status.get_attribute("data-trouble") == "address"
            # The extension list came from the stand-in: the only trouble shown is the
            # one this screenshot is about.
            extensions = browser.find_element(By.ID, "voicenter-status")
            assert extensions.get_attribute("class") != "error", extensions.text
            assert len(browser.find_elements(By.CSS_SELECTOR, "#status .error")) == 1
            assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == direction
            assert browser.save_screenshot(str(DOCS / f"call-log-{language[:2]}.png"))
            standin.fail = None  # the office authorises the address in the CPanel
            wait_until(lambda: 'data-trouble' not in client.get("/calls").text and
                       answered["CallID"] in client.get(f"/calls?day={day}").text,
                       what="a good pull")
            browser.get(f"{server.url}/calls?day={day}")
            status = browser.find_element(By.ID, "call-log")
            assert status.get_attribute("data-trouble") is None
            # The pull's time as every time of the pages: in their zone and language.
            assert re.search(r"\d\d:\d\d", status.text), status.text
            assert time.strftime("%Y-%m-%d", time.gmtime()) not in status.text
            # The abandoned call says why in the page's language, the status as sent
            # in data-status; the answered one says so by its outcome alone.
            row = browser.find_element(By.ID, f"call-{abandoned['CallID']}")
            said = row.find_element(By.CSS_SELECTOR, ".call-status")
            assert said.get_attribute("data-status") == "ABANDONE"
            assert said.text and "ABANDONE" not in said.text, said.text
            assert "missed" in row.get_attribute("class").split()
            row = browser.find_element(By.ID, f"call-{answered['CallID']}")
            assert row.find_elements(By.CSS_SELECTOR, ".call-status") == []
            assert "answered" in row.get_attribute("class").split()
        finally:
            browser.quit()
        assert CODE not in server.log_text()
