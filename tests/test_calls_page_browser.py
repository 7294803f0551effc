"""The calls page an office starts its morning from, in a real browser (headless
Chromium, tests/chromium.py), in English and in Hebrew: the login leads to it, and
its missed callers resolve as the office works (a later call answered, a "mark as
handled" click, a call back told by a CDR posted to /cdr); a note written on a call;
the day's calls by name and the try-a-number box; the page on a phone's screen; and
the calls page and the caller's page after a ring-group day sent as Voicenter's
guides describe it (tests/fixtures/voicenter/). The screenshots go to
docs/calls-en.png and docs/calls-he.png (shown in the README), the others to
artifacts/."""

from __future__ import annotations

import time

import pytest

import popup_server as ps
from chromium import (ARTIFACTS, DOCS, By, WebDriverWait, expected_conditions,
                      open_browser, replaced, sign_in)
from conftest import (OFFICE_PASSWORD, SAMPLE_CONTACTS, calls_by_ivrid, israel_epoch,
                      send_a_day_of_calls, send_phase, voicenter_fixture, wait_for_calls,
                      wait_until)

TOKEN = "calls-page-browser-token"
JOHN, NOA, STRANGER = "0722776772", "0541234567", "0509999999"


def _popup(server, phone, ivrid, *phases, **fields):
    for phase in phases:
        resp = server.get("/popup", {"token": TOKEN, "phone": phone, "ivrid": ivrid,
                                     "statusCall": phase, **fields})
        assert resp.status == 200, resp


def _wait_for_outcomes(client, outcomes):
    """Wait until these calls are recorded with these outcomes: a call's phases may
    reach the database in two of the writer's batches."""
    def recorded():
        rows = calls_by_ivrid(client)
        return all(rows.get(ivrid, {}).get("outcome") == outcome
                   for ivrid, outcome in outcomes.items())
    wait_until(recorded, what=f"the calls {outcomes}")


def _rows(browser, table):
    return browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


# The morning's work -------------------------------------------------------------------


@pytest.mark.parametrize("language,direction,waiting_heading", [
    ("en-US", "ltr", "Still waiting for a call back"),
    ("he-IL", "rtl", "ממתינים לחזרה"),
])
def test_the_morning_view_empties_as_the_office_works_through_it(
        start_server, tmp_path, log_in, language, direction, waiting_heading):
    agents = tmp_path / "agents.csv"
    agents.write_text("extension,name\n201,Dana Levi\n", encoding="utf-8")
    lines = tmp_path / "lines.csv"
    lines.write_text("number,name\n0722776773,Sales line\n", encoding="utf-8")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD,
                          "--agents", agents, "--lines", lines)
    client = log_in(server)
    # The night: John and a stranger ring the sales line unanswered, Noa's call is
    # missed too; an earlier call of Noa's was answered by extension 201.
    _popup(server, NOA, "noa-answered", "Ringing", "Answer", "Hangup",
           extenUser="201", did="0722776773")
    _popup(server, JOHN, "john-missed", "Ringing", "Hangup", did="0722776773")
    _popup(server, STRANGER, "stranger-missed", "Ringing", "Hangup", did="0722776773")
    _popup(server, NOA, "noa-missed", "Ringing", "Hangup")
    _wait_for_outcomes(client, {"noa-answered": "answered", "john-missed": "missed",
                                "stranger-missed": "missed", "noa-missed": "missed"})

    browser = open_browser(language)
    browser.set_window_size(1280, 1500)
    try:
        # A browser without a session is sent to the login page, which leads back.
        browser.get(f"{server.url}/calls")
        assert "/login?next=" in browser.current_url
        sign_in(browser, OFFICE_PASSWORD, "waiting")
        assert browser.current_url == f"{server.url}/calls"
        html = browser.find_element(By.TAG_NAME, "html")
        assert html.get_attribute("dir") == direction
        assert browser.find_element(By.ID, "waiting-heading").text.startswith(
            waiting_heading)
        waiting = _rows(browser, "waiting")
        assert [row.get_attribute("data-number") for row in waiting] == [
            "+972541234567", "+972509999999", "+972722776772"]  # last try first
        assert "John Doe" in waiting[2].text
        assert waiting[2].find_element(By.CSS_SELECTOR, "a.number").get_attribute(
            "href") == f"{server.url}/caller/+972722776772"
        answered = browser.find_element(By.ID, "call-noa-answered")
        assert answered.find_element(By.CSS_SELECTOR, "td.agent").text == "Dana Levi"
        assert browser.find_element(By.CSS_SELECTOR, "#call-john-missed td.line") \
            .text == "Sales line"

        # John calls again and is answered: he no longer waits.
        _popup(server, JOHN, "john-answered", "Ringing", "Answer", "Hangup",
               extenUser="201")
        _wait_for_outcomes(client, {"john-answered": "answered"})
        # Noa is marked as handled from the page itself (its form and CSRF token).
        browser.refresh()
        noa = browser.find_element(By.CSS_SELECTOR,
                                   "#waiting tr[data-number='+972541234567']")
        noa.find_element(By.CSS_SELECTOR, "form.mark-handled button").click()
        # The page the form returns to replaces this one (#resolved is there already).
        WebDriverWait(browser, 10).until(replaced(noa))
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "resolved")))
        assert [row.get_attribute("data-number") for row in _rows(browser, "waiting")] \
            == ["+972509999999"]
        how = {row.get_attribute("data-number"): row.get_attribute("class")
               for row in _rows(browser, "resolved")}
        assert how == {"+972541234567": "resolved marked",
                       "+972722776772": "resolved answered"}
        assert calls_by_ivrid(client)["noa-missed"]["mark"] == "handled"
        DOCS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(DOCS / f"calls-{language[:2]}.png"))

        # The stranger is called back; a CDR of that call says so (our own, with a
        # plain "Outgoing Call" type and no time: the server takes its arrival).
        resp = server.post_json(f"/cdr?token={TOKEN}", {
            "ivruniqueid": "call-back-1", "type": "Outgoing Call", "caller": "201",
            "target": STRANGER, "status": "ANSWER", "duration": 42,
            "record": "https://recordings.example/call-back-1.mp3"})
        assert resp.json() == {"Err": 0, "Errdesc": "OK", "err": 0, "errdesc": "OK"}
        browser.refresh()
        assert browser.find_elements(By.ID, "nobody-waiting")
        assert not browser.find_elements(By.ID, "waiting")
        how = {row.get_attribute("data-number"): row.get_attribute("class")
               for row in _rows(browser, "resolved")}
        assert how["+972509999999"] == "resolved called-back"
        call_back = browser.find_element(By.ID, "call-call-back-1")
        assert call_back.get_attribute("class") == "outgoing"
        assert call_back.find_element(By.CSS_SELECTOR, "a.recording").get_attribute(
            "href") == "https://recordings.example/call-back-1.mp3"
        counts = {span.get_attribute("data-outcome"): int(span.find_element(
            By.TAG_NAME, "b").text) for span in browser.find_elements(
            By.CSS_SELECTOR, "#summary .count")}
        assert counts == {"missed": 3, "answered": 2, "outgoing": 1}
        assert len(_rows(browser, "calls")) == sum(counts.values())
    finally:
        browser.quit()


def test_a_note_is_written_on_a_call_from_the_page(start_server, tmp_path, log_in):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD)
    client = log_in(server)
    _popup(server, JOHN, "john-1", "Ringing", "Hangup")
    _wait_for_outcomes(client, {"john-1": "missed"})
    browser = open_browser("he-IL")
    try:
        browser.get(f"{server.url}/login?next=/calls")
        sign_in(browser, OFFICE_PASSWORD, "call-john-1")
        browser.find_element(By.CSS_SELECTOR, "#call-john-1 a.edit-mark").click()
        form = WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, "#call-john-1 form.mark-form")))
        form.find_element(By.CSS_SELECTOR, "option[value='called back']").click()
        form.find_element(By.NAME, "note").send_keys("חזרתי אליו, יתקשר מחר")
        form.find_element(By.CSS_SELECTOR, "button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, "#call-john-1 .note")))
        row = browser.find_element(By.ID, "call-john-1")
        assert row.find_element(By.CSS_SELECTOR, ".note").text == "חזרתי אליו, יתקשר מחר"
        assert row.find_element(By.CSS_SELECTOR, ".mark-value").text == "חזרו אליו"
        assert browser.find_elements(By.ID, "nobody-waiting")
    finally:
        browser.quit()


# The day's calls, and the page on a phone ---------------------------------------------


@pytest.fixture
def browser():
    """An English browser with a desktop's window, quit at teardown."""
    driver = open_browser("en-US", window="1100,900")
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


# A ring-group day ---------------------------------------------------------------------


def a_ring_group_day(server):
    ring = voicenter_fixture("ring-group.json")
    for fields in ring["answered"][:-1]:
        send_phase(server, "json", fields)
    for fields in ring["unanswered"]:
        send_phase(server, "json", fields)
    time.sleep(1.2)
    send_phase(server, "json", ring["answered"][-1])
    record = voicenter_fixture("cdr-ai-data.json")["cdr"]
    record["aiData"]["insights"]["summary"] += " <b>not bold</b>"
    assert server.post_json("/cdr", {**record, "ivruniqueid": ring["answered"][0]["ivrid"],
                                     "time": israel_epoch(time.time() - 90)}).json()[
        "Err"] == 0
    answered, missed = ring["answered"][0]["ivrid"], ring["unanswered"][0]["ivrid"]
    wait_until(lambda: (lambda rows: rows.get(answered, {}).get("duration (s)") and
                        rows.get(missed, {}).get("outcome") == "missed")(calls_by_ivrid(server)),
               what="the day's two calls")
    return answered, missed


@pytest.mark.parametrize("language", ["en-US", "he-IL"])
def test_the_pages_after_a_ring_group_day(start_server, tmp_path, language):
    agents = tmp_path / "agents.csv"
    agents.write_text("SIP101,Avi Cohen\nSIP102,בת-אל לוי\nSIP103,Carmel Ron\n",
                      encoding="utf-8")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--agents", agents)
    answered, missed = a_ring_group_day(server)
    hebrew = language.startswith("he")
    text = lambda key: ps.page_texts()[key][1 if hebrew else 0]  # noqa: E731
    browser = open_browser(language)
    try:
        browser.set_window_size(1200, 900)
        browser.get(server.url + "/calls")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("dir") == (
            "rtl" if hebrew else "ltr")
        rows = {row.get_attribute("data-ivrid"): row for row in
                browser.find_elements(By.CSS_SELECTOR, "#calls tbody tr")}
        assert set(rows) == {answered, missed}  # one row a call, not a station
        cells = lambda row: row.find_elements(By.TAG_NAME, "td")  # noqa: E731
        talked = cells(rows[answered])
        assert talked[2].text.startswith(text("outcome.answered"))
        assert rows[answered].find_element(By.CSS_SELECTOR, "td.agent").text == "בת-אל לוי"
        # the CDR's actualCallDuration, 42 s: the talk time, not the 80 s in the queue
        assert talked[5].text == "0:42"
        nobody = cells(rows[missed])
        assert nobody[2].text.startswith(text("outcome.missed"))
        assert rows[missed].find_element(By.CSS_SELECTOR, "td.agent").text == ""
        assert nobody[5].text == ""  # no duration for a call nobody answered
        waiting = browser.find_elements(By.CSS_SELECTOR, "#waiting tbody tr")
        assert [row.get_attribute("data-number") for row in waiting] == ["+972541234567"]
        assert waiting[0].find_element(By.CSS_SELECTOR, "td.tries").text == "1"
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / f"ring-group-{language[:2]}.png"))

        browser.get(server.url + "/caller/+972722776772")
        summary = browser.find_element(By.CSS_SELECTOR, "#caller-calls .ai-summary")
        assert text("caller.summary") in summary.text
        assert "The caller reported dropped calls." in summary.text
        assert "<b>not bold</b>" in summary.text  # shown as text, never as markup
        assert not summary.find_elements(By.TAG_NAME, "b")
        assert browser.save_screenshot(str(ARTIFACTS / f"ring-group-caller-{language[:2]}.png"))
    finally:
        browser.quit()


@pytest.mark.parametrize("language", ["en-US", "he-IL"])
def test_the_callers_page_tells_a_call_back_that_reached_them_from_one_that_did_not(
        start_server, tmp_path, language):
    """A ring group nobody answered, then two Click2Call call-backs by the same agent:
    busy, then answered. The caller's page says which reached them, in its language;
    no outgoing call is "answered by" the agent who made it."""
    agents = tmp_path / "agents.csv"
    agents.write_text("SIPSIP,יוסי מור\n", encoding="utf-8")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--agents", agents)
    ring = voicenter_fixture("ring-group.json")["unanswered"]  # נועה כהן, 054-1234567
    for fields in ring:
        send_phase(server, "json", fields)
    wait_until(lambda: calls_by_ivrid(server).get(ring[0]["ivrid"], {}).get("outcome")
               == "missed", what="the missed call")
    time.sleep(1.1)
    leg2 = voicenter_fixture("cdr-outgoing.json")["click2call_leg2"]
    for status in ("BUSY", "ANSWER"):
        assert server.post_json("/cdr", {**leg2, "ivruniqueid": f"C2C-{status}",
                                         "status": status, "target": "972541234567",
                                         "time": israel_epoch(time.time())}).json()[
            "Err"] == 0
    hebrew = language.startswith("he")
    text = lambda key, **values: ps.page_texts()[key][hebrew].format(  # noqa: E731
        **values).translate(dict.fromkeys(range(0x2066, 0x206A)))
    browser = open_browser(language)
    try:
        browser.set_window_size(1200, 900)
        browser.get(server.url + "/caller/+972541234567")
        rows = {row.get_attribute("data-ivrid"): [
                    cell.text.translate(dict.fromkeys(range(0x2066, 0x206A)))
                    for cell in row.find_elements(By.TAG_NAME, "td")[1:3]]
                for row in browser.find_elements(By.CSS_SELECTOR, "#caller-calls tbody tr")}
        assert rows == {
            ring[0]["ivrid"]: [text("outcome.missed"), ""],
            "C2C-BUSY": [text("caller.not_reached_by", agent="יוסי מור") + " (" +
                         text("call_status.BUSY") + ")", ""],
            "C2C-ANSWER": [text("caller.called_back_by", agent="יוסי מור"), ""]}
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / f"call-backs-caller-{language[:2]}.png"))
    finally:
        browser.quit()
