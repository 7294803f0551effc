"""The calls page an office starts its morning from (issue 14), in a real browser
(Debian's headless Chromium, Selenium), in English and in Hebrew: the login leads to
it, and its missed callers resolve as the office works: a later call answered, a
"mark as handled" click, a call back told by a CDR posted to /cdr. The screenshots go
to docs/calls-en.png and docs/calls-he.png (shown in the README)."""
import csv
import io

import pytest

from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS, wait_until
from test_login_browser import DOCS, By, WebDriverWait, _browser, expected_conditions

TOKEN = "calls-page-browser-token"
JOHN, NOA, STRANGER = "0722776772", "0541234567", "0509999999"


def _popup(server, phone, ivrid, *phases, **fields):
    for phase in phases:
        resp = server.get("/popup", {"token": TOKEN, "phone": phone, "ivrid": ivrid,
                                     "statusCall": phase, **fields})
        assert resp.status == 200, resp


def _csv_ivrids(client):
    text = client.get("/calls.csv").body.decode("utf-8-sig")
    return {row["ivrid"]: row for row in csv.DictReader(io.StringIO(text))}


def _wait_for_outcomes(client, outcomes):
    """Wait until these calls are recorded with these outcomes: a call's phases may
    reach the database in two of the writer's batches."""
    def recorded():
        rows = _csv_ivrids(client)
        return all(rows.get(ivrid, {}).get("outcome") == outcome
                   for ivrid, outcome in outcomes.items())
    wait_until(recorded, what=f"the calls {outcomes}")


def _rows(browser, table):
    return browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


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

    browser = _browser(language)
    browser.set_window_size(1280, 1500)
    try:
        # A browser without a session is sent to the login page, which leads back.
        browser.get(f"{server.url}/calls")
        assert "/login?next=" in browser.current_url
        browser.find_element(By.ID, "password").send_keys(OFFICE_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "waiting")))
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
        WebDriverWait(browser, 10).until(expected_conditions.staleness_of(noa))
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "resolved")))
        assert [row.get_attribute("data-number") for row in _rows(browser, "waiting")] \
            == ["+972509999999"]
        how = {row.get_attribute("data-number"): row.get_attribute("class")
               for row in _rows(browser, "resolved")}
        assert how == {"+972541234567": "resolved marked",
                       "+972722776772": "resolved answered"}
        assert _csv_ivrids(client)["noa-missed"]["mark"] == "handled"
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
    browser = _browser("he-IL")
    try:
        browser.get(f"{server.url}/login?next=/calls")
        browser.find_element(By.ID, "password").send_keys(OFFICE_PASSWORD)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.presence_of_element_located((By.ID, "call-john-1")))
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
