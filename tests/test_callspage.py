"""The calls page over HTTP (issue 14): its marks (office login, CSRF), its pages of
500, its counts, its line filter, the CDR help without the token, hostile queries,
and a database of the schema before `calls` kept the CDR columns."""
import collections
import csv
import io
import re
import sqlite3
import time

import pytest

from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS, wait_until

TOKEN = "calls-page-token-123"


@pytest.fixture
def office(start_server, tmp_path, log_in):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD)
    return server, log_in(server)


def _ring(server, phone, ivrid, *phases, **fields):
    for phase in phases:
        assert server.get("/popup", {"token": TOKEN, "phone": phone, "ivrid": ivrid,
                                     "statusCall": phase, **fields}).status == 200


def _csv(client, **params):
    text = client.get("/calls.csv", params).body.decode("utf-8-sig")
    return {row["ivrid"]: row for row in csv.DictReader(io.StringIO(text))}


def _recorded(client, ivrid, outcome):
    """Wait until the call is recorded with this outcome: its phases may reach the
    database in two of the writer's batches."""
    wait_until(lambda: (_csv(client).get(ivrid) or {}).get("outcome") == outcome,
               what=f"{ivrid} recorded as {outcome}")


def _waiting(client):
    return re.findall(r'<tr class="waiting" data-number="([^"]*)"', client.get("/").text)


def test_a_mark_needs_the_session_and_its_csrf_token(office):
    server, client = office
    _ring(server, "0722776772", "m1", "Ringing", "Hangup")
    _recorded(client, "m1", "missed")
    assert _waiting(client) == ["+972722776772"]
    form = {"ivrid": "m1", "mark": "handled", "next": "/calls"}
    without_session = server.post_form("/calls/mark", form, headers={"Origin": server.url})
    assert without_session.status == 303
    assert without_session.header("Location").startswith("/login?next=")
    refused = [
        client.post_form("/calls/mark", {**form, "csrf": "forged"}),
        client.post_form("/calls/mark", form, headers={"Origin": "https://evil.example"}),
    ]
    for resp in refused:
        assert resp.status == 403 and resp.header("Content-Type").startswith("text/html")
    assert _waiting(client) == ["+972722776772"] and _csv(client)["m1"]["mark"] == ""
    done = client.post_form("/calls/mark", form)
    assert done.status == 303 and done.header("Location") == "/calls"
    assert _waiting(client) == [] and _csv(client)["m1"]["mark"] == "handled"


def test_a_note_is_kept_when_only_the_mark_changes(office):
    server, client = office
    _ring(server, "0722776772", "n1", "Ringing", "Hangup")
    _recorded(client, "n1", "missed")
    assert client.post_form("/calls/mark", {"ivrid": "n1", "mark": "",
                                            "note": "=cmd|' /C calc'!A0"}).status == 303
    assert client.post_form("/calls/mark", {"ivrid": "n1", "mark": "handled"}).status == 303
    row = _csv(client)["n1"]
    assert (row["mark"], row["note"]) == ("handled", "'=cmd|' /C calc'!A0")  # no formula
    assert "=cmd|&#039; /C calc&#039;!A0" in client.get("/").text


@pytest.mark.parametrize("form,message", [
    ({"ivrid": "x1", "mark": "deleted"}, "mark must be one of"),
    ({"ivrid": "no such call", "mark": "handled"}, "no call has this ivrid"),
    ({"mark": "handled"}, "no call has this ivrid"),
])
def test_a_bad_mark_is_a_json_error(office, json_error, form, message):
    server, client = office
    _ring(server, "0722776772", "x1", "Ringing", "Hangup")
    _recorded(client, "x1", "missed")
    assert message in json_error(client.post_form("/calls/mark", form), 400)["MESSAGE"]


def test_a_mark_goes_back_only_to_a_page_of_this_server(office):
    server, client = office
    _ring(server, "0722776772", "r1", "Ringing", "Hangup")
    _recorded(client, "r1", "missed")
    for goal, location in (("//evil.example/x", "/calls"), ("https://evil.example", "/calls"),
                           ("/calls?day=2026-11-26&calls=500", "/calls?day=2026-11-26&calls=500")):
        resp = client.post_form("/calls/mark", {"ivrid": "r1", "mark": "", "next": goal})
        assert resp.header("Location") == location


@pytest.mark.parametrize("query", ["calls=-1", "calls=abc", "callers=1e3",
                                   "calls=99999999999", "callers=%EF%BC%91"])
def test_a_bad_page_start_is_a_json_error(office, json_error, query):
    _server, client = office
    assert "whole number" in json_error(client.get("/?" + query), 400)["MESSAGE"]


def test_a_big_day_comes_in_pages_and_its_counts_add_up(office):
    server, client = office
    for n in range(501):  # one more than a page; every third one answered
        phases = ("Ringing", "Answer", "Hangup") if n % 3 == 0 else ("Ringing", "Hangup")
        _ring(server, f"05{n:08d}", f"big-{n:03d}", *phases,
              did="0722776773" if n % 2 else "0722776774")
    wait_until(lambda: sorted(collections.Counter(
        row["outcome"] for row in _csv(client).values()).items()) == [
        ("answered", 167), ("missed", 334)], timeout=60, what="501 calls, all ended")
    first = client.get("/").text
    assert first.count('data-ivrid="') == 500
    assert first.count('<tr class="waiting"') == 334 and "334 still waiting" in first
    assert 'data-outcome="missed"><b>334</b>' in first
    assert 'data-outcome="answered"><b>167</b>' in first
    assert re.search(r'href="\?day=[0-9-]+&amp;calls=500"', first)  # the next page
    second = client.get("/", {"calls": 500}).text
    assert re.findall(r'data-ivrid="([^"]*)"', second) == ["big-000"]  # the oldest
    assert "501–501" in second and 'calls=500' in second
    line = client.get("/", {"did": "0722776773"}).text
    assert line.count('data-ivrid="') == 250
    assert "250 calls:" in line and 'data-outcome="answered"><b>83</b>' in line
    assert '<option value="0722776774">' in line  # every line stays choosable


def test_the_page_says_where_cdrs_go_without_showing_the_token(office):
    server, client = office
    page = client.get("/").text
    assert f"{server.url}/cdr?token=" in page and TOKEN not in page
    assert '{"Err": 0, "Errdesc": "OK", "err": 0, "errdesc": "OK"}' in page


SCHEMA_2 = """
CREATE TABLE events (ivrid TEXT NOT NULL, phase TEXT NOT NULL, received_at REAL NOT NULL,
    caller TEXT NOT NULL, e164 TEXT NOT NULL, did TEXT NOT NULL, exten_user TEXT NOT NULL,
    direction TEXT NOT NULL, answered INTEGER NOT NULL, name TEXT NOT NULL,
    company TEXT NOT NULL, total INTEGER NOT NULL, url TEXT NOT NULL,
    PRIMARY KEY (ivrid, phase)) WITHOUT ROWID;
CREATE TABLE calls (ivrid TEXT NOT NULL, started REAL NOT NULL, caller TEXT NOT NULL,
    e164 TEXT NOT NULL, did TEXT NOT NULL, direction TEXT NOT NULL, name TEXT NOT NULL,
    company TEXT NOT NULL, url TEXT NOT NULL, answered_at REAL,
    answered_by TEXT NOT NULL, ended_at REAL, said_answered INTEGER NOT NULL,
    PRIMARY KEY (started, ivrid)) WITHOUT ROWID;
CREATE TRIGGER call_of_new_event AFTER INSERT ON events BEGIN
    DELETE FROM calls WHERE ivrid = NEW.ivrid; END;
CREATE TABLE cdrs (ivrid TEXT NOT NULL, received_at REAL NOT NULL, started REAL NOT NULL,
    direction TEXT NOT NULL, caller TEXT NOT NULL, target TEXT NOT NULL,
    did TEXT NOT NULL, e164 TEXT NOT NULL, status TEXT NOT NULL, answered INTEGER NOT NULL,
    duration INTEGER, agent TEXT NOT NULL, record TEXT NOT NULL, raw TEXT NOT NULL,
    PRIMARY KEY (started, ivrid)) WITHOUT ROWID;
CREATE TABLE call_notes (ivrid TEXT PRIMARY KEY, e164 TEXT NOT NULL, mark TEXT NOT NULL,
    note TEXT NOT NULL, marked_at REAL NOT NULL) WITHOUT ROWID;
PRAGMA user_version = 2;
"""


def test_a_database_of_schema_2_keeps_its_calls_cdrs_and_notes(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    now = time.time()
    old = sqlite3.connect(db)
    old.executescript(SCHEMA_2)
    with old:
        old.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", [
            ("p1", "ringing", now - 300, "0722776772", "+972722776772", "", "", "", 0,
             "John Doe", "Voicenter", 1, ""),
            ("p1", "hangup", now - 290, "0722776772", "+972722776772", "", "", "", 0,
             "John Doe", "Voicenter", 1, "")])
        old.execute("INSERT INTO cdrs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
            "c1", now - 200, now - 200, "outgoing", "201", "0541234567", "",
            "+972541234567", "ANSWER", 1, 30, "201", "https://rec.example/c1.mp3", "{}"))
        old.execute("INSERT INTO call_notes VALUES ('p1', '+972722776772', 'handled', "
                    "'rang back', ?)", (now - 100,))
    old.close()
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    rows = {ivrid: (row["outcome"], row["status"], row["recording"], row["mark"],
                    row["note"]) for ivrid, row in _csv(server).items()}
    assert rows == {"p1": ("missed", "", "", "handled", "rang back"),
                    "c1": ("outgoing", "ANSWER", "https://rec.example/c1.mp3", "", "")}
    server.stop()
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA user_version").fetchone()[0] >= 3
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
