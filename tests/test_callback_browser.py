"""Calling a missed caller back in a real browser (headless Chromium, tests/chromium.py),
in English and in Hebrew, against the Voicenter stand-in: sign in, choose "my
extension" from Voicenter's list, click "Call back" on the waiting caller, the
stand-in gets one correct Click2Call, the page says so and shows who is calling back;
an offline phone is a sentence; the leg-2 CDR resolves the caller. The screenshots go
to docs/ (shown in the README): callback-LANG.png (ringing, the caller being called
back), callback-caller-LANG.png (the caller's own page and its button),
callback-offline-LANG.png (a refusal) and callback-done-LANG.png (the caller called
back, once the leg-2 CDR came)."""
from __future__ import annotations

import time

import pytest
from selenium.webdriver.support.ui import Select

from chromium import (DOCS, By, WebDriverWait, expected_conditions, open_browser, replaced,
                      sign_in)
from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS, wait_until
from voicenter_standin import CODE

TOKEN = "callback-browser-token"


def _popup(server, phone, ivrid, *phases):
    for phase in phases:
        assert server.get("/popup", {"token": TOKEN, "phone": phone, "ivrid": ivrid,
                                     "statusCall": phase}).status == 200


def _submit(browser, button):
    """Click a form's button and wait until the page it leads to replaced this one."""
    page = browser.find_element(By.TAG_NAME, "html")
    button.click()
    WebDriverWait(browser, 15).until(replaced(page))


def _answer(browser):
    WebDriverWait(browser, 15).until(
        expected_conditions.presence_of_element_located((By.ID, "callback-answer")))
    return browser.find_element(By.ID, "callback-answer").text


@pytest.mark.parametrize("language,ringing,pending,offline,repeat,direction,button,"
                         "called_back", [
    ("en-US", "Voicenter is ringing your phone, then \u2068John Doe\u2069.",
     "being called back by \u2068Walter Melon\u2069, ", "Your phone is offline",
     "\u2068John Doe\u2069 was called back from this browser moments ago; not dialled again.", "ltr",
     "Call back from my extension", "called back, "),
    ("he-IL", "Voicenter מצלצל לטלפון שלך, ואחר כך מחייג אל \u2068John Doe\u2069.",
     "בחיוג חוזר על ידי \u2068Walter Melon\u2069, ", "הטלפון שלך לא מחובר",
     "כבר חייגו בחזרה אל \u2068John Doe\u2069 מהדפדפן הזה לפני רגע; לא חויג שוב.", "rtl",
     "חיוג חוזר מהשלוחה שלי", "חזרו אליו, "),
], ids=["en", "he"])
def test_a_missed_caller_called_back_from_the_calls_page(
        start_server, tmp_path, log_in, voicenter, language, ringing, pending, offline,
        repeat, direction, button, called_back):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD,
                          "--voicenter-code", CODE, "--voicenter-api", voicenter.url,
                          "--voicenter-monitor", voicenter.url)
    client = log_in(server)
    _popup(server, "0722776772", "john-missed", "Ringing", "Hangup")
    _popup(server, "0541234567", "noa-missed", "Ringing", "Hangup")
    wait_until(lambda: client.get("/").text.count('class="waiting"') == 2,
               what="two missed callers")
    wait_until(lambda: server.health()["voicenter"].startswith("ok"), what="the list")

    browser = open_browser(language)
    browser.set_window_size(1280, 1100)
    try:
        browser.get(f"{server.url}/calls")
        sign_in(browser, OFFICE_PASSWORD, "waiting")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == direction
        # The page runs no script: the Content-Security-Policy allows none.
        assert browser.find_elements(By.TAG_NAME, "script") == []
        choice = Select(browser.find_element(By.ID, "extension"))
        assert [option.text for option in choice.options][1:] == [
            "John Doe · 11", "Reception · 14", "Walter Melon · 12", "דנה לוי · 13"]
        choice.select_by_value("SIPSIP2")
        _submit(browser, browser.find_element(By.ID, "extension-submit"))
        assert "Walter Melon" in _answer(browser)

        john = browser.find_element(By.CSS_SELECTOR,
                                    "#waiting tr[data-number='+972722776772']")
        _submit(browser, john.find_element(By.CSS_SELECTOR, "form.callback-form button"))
        clicked = time.time()
        assert _answer(browser) == ringing
        [asked] = voicenter.requests_to("/ForwardDialer/click2call.aspx")
        assert (asked["code"], asked["phone"], asked["target"], asked["action"],
                asked["format"], asked["language"]) == (
            CODE, "SIPSIP2", "972722776772", "call", "json", language[:2])
        john = browser.find_element(By.CSS_SELECTOR,
                                    "#waiting tr[data-number='+972722776772']")
        assert pending in john.find_element(By.CSS_SELECTOR, ".callback-pending").text
        DOCS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(DOCS / f"callback-{language[:2]}.png"))

        # John's own page says so too; its button, pressed again, does not dial twice.
        john.find_element(By.CSS_SELECTOR, "a.number").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "callback-form")))
        assert pending in browser.find_element(By.ID, "callback-pending").text
        assert browser.find_element(By.CSS_SELECTOR, "#callback-form button").text == button
        assert browser.save_screenshot(str(DOCS / f"callback-caller-{language[:2]}.png"))
        _submit(browser, browser.find_element(By.CSS_SELECTOR, "#callback-form button"))
        assert _answer(browser) == repeat
        assert "/caller/" in browser.current_url
        assert len(voicenter.requests_to("/ForwardDialer/click2call.aspx")) == 1
        browser.get(f"{server.url}/calls")

        # Noa's call-back finds the agent's phone offline: a sentence, nothing marked.
        voicenter.click2call_error = 3
        noa = browser.find_element(By.CSS_SELECTOR,
                                   "#waiting tr[data-number='+972541234567']")
        _submit(browser, noa.find_element(By.CSS_SELECTOR, "form.callback-form button"))
        assert _answer(browser).startswith(offline)
        noa = browser.find_element(By.CSS_SELECTOR,
                                   "#waiting tr[data-number='+972541234567']")
        assert noa.find_elements(By.CSS_SELECTOR, ".callback-pending") == []
        assert browser.save_screenshot(str(DOCS / f"callback-offline-{language[:2]}.png"))

        # The call's second leg ends: its CDR resolves John as called back. The leg
        # began when the agent answered, a second or more after the click (a CDR's
        # time is in whole seconds).
        time.sleep(max(0.0, clicked + 1.1 - time.time()))
        resp = server.post_json(f"/cdr?token={TOKEN}", {
            "ivruniqueid": asked and "20261204c2c000001", "type": "Click2Call leg2",
            "status": "ANSWER", "caller": "0722776773", "target": "0722776772",
            "time": int(time.time()), "duration": 30, "extenUser": "SIPSIP2",
            "direction": "outgoing", "var_popupserver": "callback"})
        assert resp.json()["Err"] == 0

        def john_resolved():
            browser.refresh()
            return browser.find_elements(
                By.CSS_SELECTOR, "#resolved tr.called-back[data-number='+972722776772']")
        [john] = wait_until(john_resolved, what="John resolved by the leg-2 CDR")
        assert called_back in john.find_element(By.CSS_SELECTOR, "td.how").text
        assert [row.get_attribute("data-number") for row in browser.find_elements(
            By.CSS_SELECTOR, "#waiting tbody tr")] == ["+972541234567"]
        browser.execute_script("arguments[0].scrollIntoView()", john)
        assert browser.save_screenshot(str(DOCS / f"callback-done-{language[:2]}.png"))
        assert CODE not in browser.page_source
    finally:
        browser.quit()
