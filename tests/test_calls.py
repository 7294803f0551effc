"""Call history: phases recorded off the request path, rebuilt into calls, shown on
the page and in the CSV; a broken database never breaks a pop-up."""
import csv
import datetime as dt
import io
import logging
import sqlite3
import time

import pytest

import popup_server as ps
from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS

TODAY = dt.date.today()


def record_all(path, events):
    """Record (fields, total, name) events through a real CallRecorder, then close it."""
    recorder = ps.CallRecorder(path, keep_days=90).start()
    for fields, name in events:
        total = 1 if name else 0
        e164 = ps.normalize_number(fields["phone"])
        answer = ps.PopupAnswer(total, name or "", "Voicenter" if name else "", "",
                           int(e164[1:]) if e164 else None)
        recorder.record(fields, answer)
    recorder.close()


def call(ivrid, phase, phone="0722776772", **extra):
    return {"ivrid": ivrid, "status": phase, "phone": phone, **extra}


def test_phases_out_of_order_and_repeated_build_one_call_each(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [
        (call("A", "Hangup"), "John Doe"),            # the hang-up arrives first
        (call("A", "Ringing"), "John Doe"),
        (call("A", "Ringing"), "John Doe"),           # a repeated delivery
        (call("B", "Ringing", phone="0541234567"), "Noa"),
        (call("B", "Answer", phone="0541234567", extenUser="agent7"), "Noa"),
        (call("B", "Hangup", phone="0541234567"), "Noa"),
        (call("C", "Ringing", phone="0509999999"), None),
    ])
    calls = {c.ivrid: c for c in ps.calls_of_day(db, TODAY)}
    assert set(calls) == {"A", "B", "C"}
    assert calls["A"].outcome == "missed"
    assert calls["B"].outcome == "answered" and calls["B"].answered_by == "agent7"
    assert calls["C"].outcome == "in progress" and calls["C"].name == ""
    rows = sqlite3.connect(db).execute(
        "SELECT COUNT(*) FROM events WHERE ivrid = 'A'").fetchone()
    assert rows == (2,)  # Ringing once, Hangup once


def test_missed_calls_come_first_and_count_the_callers_tries(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [
        (call("1", "Ringing", phone="0541234567"), "Noa"),
        (call("1", "Answer", phone="0541234567"), "Noa"),
        (call("2", "Ringing"), "John Doe"),
        (call("2", "Hangup"), "John Doe"),
        (call("3", "Ringing"), "John Doe"),
        (call("3", "Hangup"), "John Doe"),
    ])
    calls = ps.calls_of_day(db, TODAY)
    assert [c.outcome for c in calls] == ["missed", "missed", "answered"]
    assert [c.tries for c in calls] == [2, 2, 1]


def test_a_hangup_that_says_it_was_answered_is_an_answered_call(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [(call("J", "Ringing"), "John Doe"),
                    (call("J", "Hangup", isAnswered="true"), "John Doe")])
    assert ps.calls_of_day(db, TODAY)[0].outcome == "answered"


def test_calls_older_than_the_kept_days_are_pruned(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [(call("new", "Ringing"), "John Doe")])
    connection = sqlite3.connect(db)
    with connection:
        connection.execute("UPDATE events SET received_at = ? WHERE ivrid = 'new'",
                           (time.time() - 10 * 86400,))
    connection.close()
    recorder = ps.CallRecorder(db, keep_days=5).start()  # prunes when it starts
    recorder.close()
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM events").fetchone() == (0,)


def test_the_csv_has_a_bom_and_the_hebrew_names(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [(call("H", "Ringing", phone="0541234567"), "נועה כהן"),
                    (call("H", "Hangup", phone="0541234567"), "נועה כהן")])
    text = ps.calls_csv(ps.calls_of_day(db, TODAY))
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert rows[0]["name"] == "נועה כהן" and rows[0]["outcome"] == "missed"


# Over HTTP, against the real server -------------------------------------------

def send_a_day_of_calls(server):
    """Three callers through the three request formats Voicenter uses."""
    # John Doe rings twice (GET) and nobody answers either call.
    for ivrid in ("20261126100000aaaa", "20261126110000bbbb"):
        server.get("/popup", {"phone": "0722776772", "ivrid": ivrid, "statusCall": "Ringing",
                              "did": "0722776773"})
        server.get("/popup", {"phone": "0722776772", "ivrid": ivrid, "statusCall": "Hangup"})
    # Noa Cohen (form POST) is answered by extension 201.
    for phase, exten in (("Ringing", ""), ("Answer", "201"), ("Hangup", "201")):
        server.post_form("/popup", {"phone": "0541234567", "ivrid": "20261126120000cccc",
                                    "status": phase, "extenUser": exten})
    # An unknown caller (JSON POST) is still ringing; the Ringing arrives twice.
    for _ in range(2):
        server.post_json("/popup", {"phone": "972509999999", "ivrid": "20261126130000dddd",
                                    "status": "Ringing", "direction": "Incoming",
                                    "isAnswered": False, "currentCall": {"x": 1}})


def wait_for_calls(server, expected, path="/calls.csv", timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        resp = server.get(path)
        rows = list(csv.DictReader(io.StringIO(resp.body.decode("utf-8-sig"))))
        if len(rows) >= expected or time.monotonic() > deadline:
            return resp, rows
        time.sleep(0.1)


def test_a_day_of_calls_in_three_formats_shows_on_the_page_and_in_the_csv(
        start_server, tmp_path):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite")
    send_a_day_of_calls(server)
    resp, rows = wait_for_calls(server, 4)
    assert resp.status == 200
    assert resp.header("Content-Type").startswith("text/csv")
    assert resp.body.startswith(b"\xef\xbb\xbf")
    assert [(r["outcome"], r["name"]) for r in rows] == [
        ("missed", "John Doe"), ("missed", "John Doe"),
        ("in progress", ""), ("answered", "נועה כהן")]
    assert rows[0]["tries"] == "2" and rows[3]["answered by"] == "201"
    page = server.get("/")
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    html = page.text
    assert "John Doe" in html and "נועה כהן" in html and 'href="tel:+972722776772"' in html
    assert html.index("John Doe") < html.index("נועה כהן")  # missed first


def test_the_lookup_box_shows_what_voicenter_would_get(start_server):
    server = start_server(SAMPLE_CONTACTS)
    html = server.get("/", {"try": "+972-72-277-6772"}).text
    assert "&quot;CLIENTNAME&quot;: &quot;John Doe&quot;" in html
    assert "Nobody in the contacts" in server.get("/", {"try": "0500000000"}).text


def test_the_page_needs_the_office_login_not_the_token_and_never_shows_it(start_server,
                                                                           log_in):
    server = start_server(SAMPLE_CONTACTS, "--token", "page-secret-123",
                          "--office-password", OFFICE_PASSWORD)
    for path in ("/", "/calls.csv", "/?token=page-secret-123",
                 "/calls.csv?token=page-secret-123"):
        refused = server.get(path)
        assert refused.status == 303 and refused.header("Location").startswith(
            "/login?next="), (path, refused)
    page = log_in(server).get("/")
    assert page.status == 200
    assert "calls.csv?day=" in page.text and "page-secret-123" not in page.text
    time.sleep(0.2)
    assert "page-secret-123" not in server.log_text().split("Ready. To set up:")[0]
    assert "page-secret-123" not in "".join(
        line for line in server.log_text().splitlines() if "GET /" in line)


def test_without_a_token_the_page_is_served_only_to_allowed_addresses(start_server):
    assert start_server(SAMPLE_CONTACTS).get("/").status == 200  # loopback
    refused = start_server(SAMPLE_CONTACTS, "--allow-ip", "10.0.0.0/8").get("/")
    assert refused.status == 403
    assert "John Doe" not in refused.text


def test_a_bad_day_is_a_clear_error(start_server):
    resp = start_server(SAMPLE_CONTACTS).get("/calls.csv", {"day": "26/11/2026"})
    assert resp.status == 400 and "YYYY-MM-DD" in resp.json()["MESSAGE"]


def test_a_locked_database_never_delays_or_breaks_a_popup(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    server.get("/popup", {"phone": "0722776772", "ivrid": "warm", "statusCall": "Ringing"})
    blocker = sqlite3.connect(db, timeout=5)
    blocker.execute("BEGIN EXCLUSIVE")  # nobody else can write, nor read in WAL
    try:
        slowest = 0.0
        for n in range(20):
            started = time.monotonic()
            answer = server.lookup("0722776772", ivrid=f"locked-{n}", statusCall="Ringing")
            slowest = max(slowest, time.monotonic() - started)
            assert answer["CLIENTNAME"] == "John Doe"
        assert slowest < 0.5
        time.sleep(1.5)  # the writer's 1 s busy timeout expires
        assert "could not record" in server.log_text()
    finally:
        blocker.rollback()
        blocker.close()
    assert server.lookup("0722776772")["TOTAL"] == 1


def test_a_database_that_cannot_be_created_never_breaks_a_popup(start_server, tmp_path):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", not_a_folder / "calls.sqlite")
    assert server.lookup("0722776772", ivrid="x", statusCall="Ringing")["TOTAL"] == 1
    assert server.get("/").status == 200
    assert "cannot be opened" in server.wait_for_log("cannot be opened")


def test_nothing_recorded_is_lost_on_a_normal_shutdown(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    for n in range(200):
        server.get("/popup", {"phone": "0722776772", "ivrid": f"call-{n}",
                              "statusCall": "Ringing"})
    server.stop()  # SIGTERM, as systemd and Ctrl+C do
    assert server.proc.returncode == 0
    count = sqlite3.connect(db).execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert count == 200


def test_a_recorder_far_behind_drops_new_events_logs_it_and_keeps_the_rest(tmp_path,
                                                                          caplog):
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90)  # not started: nothing is written yet
    answer = ps.PopupAnswer(1, "John", "", "", 972722776772)
    with caplog.at_level(logging.ERROR, logger="popup_server"):
        for n in range(ps.RECORD_BACKLOG + 3):
            recorder.record(call(f"c{n}", "Ringing"), answer)
    assert "call recording is behind; 1 events dropped so far" in caplog.text
    recorder.start()
    recorder.close()
    ivrids = {row[0] for row in sqlite3.connect(db).execute("SELECT ivrid FROM events")}
    assert len(ivrids) == ps.RECORD_BACKLOG and "c0" in ivrids  # the newest were dropped
    assert f"c{ps.RECORD_BACKLOG}" not in ivrids


def test_half_a_character_in_a_json_field_is_refused_and_recording_goes_on(start_server,
                                                                           tmp_path):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    for field in ("ivrid", "phone", "did"):
        body = ('{"phone": "0722776772", "ivrid": "x", "did": "035", '
                '"status": "Ringing"}').replace(
            f'"{field}": "', f'"{field}": "\\ud800')
        resp = server.request("POST", "/popup", body=body.encode(),
                              headers={"Content-Type": "application/json"})
        assert resp.status == 400 and resp.json()["STATUS"] != "OK", resp
        assert "not valid Unicode" in resp.json()["MESSAGE"]
    assert server.lookup("0722776772", ivrid="after", statusCall="Ringing")["TOTAL"] == 1
    server.stop()
    ivrids = [row[0] for row in sqlite3.connect(db).execute("SELECT ivrid FROM events")]
    assert ivrids == ["after"]


def test_an_event_the_database_cannot_take_costs_only_itself(tmp_path):
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90)  # started below: one batch for all three
    answer = ps.PopupAnswer(0, "", "", "", None)
    recorder.record(call("before", "Ringing"), answer)
    recorder.record(call("bad", "Ringing", phone="\ud800"), answer)  # not UTF-8-able
    recorder.record(call("after", "Ringing"), answer)
    recorder.start()
    recorder.close()
    ivrids = {row[0] for row in sqlite3.connect(db).execute("SELECT ivrid FROM events")}
    assert ivrids == {"before", "after"}


@pytest.mark.parametrize("with_nul", [False, True])
@pytest.mark.parametrize("sqlite_has_json", [True, False])
def test_events_are_stored_exactly_as_recorded(tmp_path, monkeypatch, sqlite_has_json,
                                               with_nul):
    if not sqlite_has_json:  # the path for an SQLite built without JSON functions
        monkeypatch.setattr(ps, "_has_json", lambda connection: False)
    nul = "\0" if with_nul else ""  # a query can carry one: ?ivrid=a%00b
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90).start()
    fields = {"ivrid": f'q"uote{nul}\\d', "status": f"Answer{nul}",
              "phone": "+972 (72) 277-6772", "did": "035", "extenUser": "שלוחה 7",
              "direction": "in", "isAnswered": "true"}
    answer = ps.PopupAnswer(4294967295, f"דנה \"D\" {nul}לוי", "",
                            "https://x.example/?a=1&b=[2]", 972722776772)
    before = time.time()
    recorder.record(fields, answer)
    recorder.close()
    (row,) = sqlite3.connect(db).execute("SELECT * FROM events").fetchall()
    # The phase is read (Answer is Voicenter's Talking); one it cannot read is kept.
    assert row[:2] == (f'q"uote{nul}\\d', f"answer{nul}" if nul else "talking")
    assert isinstance(row[2], float) and before <= row[2] <= time.time()
    assert row[3:] == ("+972 (72) 277-6772", "+972722776772", "035", "שלוחה 7", "in", 1,
                       f"דנה \"D\" {nul}לוי", "", 4294967295, "https://x.example/?a=1&b=[2]",
                       "")
