"""The calls page and the caller's page after a ring-group day sent as Voicenter's
guides describe it (issue 20; the fixtures say what is verbatim), in headless Chromium,
in English and in Hebrew: the ring group answered by one station is one answered call
by that agent with its talk time, the one nobody answered is one missed call, one try,
with no duration; the caller's page shows Voicenter's AI summary as text, and tells a
call-back that reached the caller from one that did not. Screenshots go to artifacts/."""
import time
from pathlib import Path

import pytest

import popup_server as ps
from conftest import SAMPLE_CONTACTS, wait_until
from test_login_browser import By, _browser
from test_voicenter_calls import by_ivrid, fixture, israel_epoch, send_phase

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def a_ring_group_day(server):
    ring = fixture("ring-group.json")
    for fields in ring["answered"][:-1]:
        send_phase(server, "json", fields)
    for fields in ring["unanswered"]:
        send_phase(server, "json", fields)
    time.sleep(1.2)
    send_phase(server, "json", ring["answered"][-1])
    record = fixture("cdr-ai-data.json")["cdr"]
    record["aiData"]["insights"]["summary"] += " <b>not bold</b>"
    assert server.post_json("/cdr", {**record, "ivruniqueid": ring["answered"][0]["ivrid"],
                                     "time": israel_epoch(time.time() - 90)}).json()[
        "Err"] == 0
    answered, missed = ring["answered"][0]["ivrid"], ring["unanswered"][0]["ivrid"]
    wait_until(lambda: (lambda rows: rows.get(answered, {}).get("duration (s)") and
                        rows.get(missed, {}).get("outcome") == "missed")(by_ivrid(server)),
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
    browser = _browser(language)
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
    ring = fixture("ring-group.json")["unanswered"]  # נועה כהן, 054-1234567
    for fields in ring:
        send_phase(server, "json", fields)
    wait_until(lambda: by_ivrid(server).get(ring[0]["ivrid"], {}).get("outcome")
               == "missed", what="the missed call")
    time.sleep(1.1)
    leg2 = fixture("cdr-outgoing.json")["click2call_leg2"]
    for status in ("BUSY", "ANSWER"):
        assert server.post_json("/cdr", {**leg2, "ivruniqueid": f"C2C-{status}",
                                         "status": status, "target": "972541234567",
                                         "time": israel_epoch(time.time())}).json()[
            "Err"] == 0
    hebrew = language.startswith("he")
    text = lambda key, **values: ps.page_texts()[key][hebrew].format(  # noqa: E731
        **values).translate(dict.fromkeys(range(0x2066, 0x206A)))
    browser = _browser(language)
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
