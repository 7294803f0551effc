"""The calls page and /calls.csv over HTTP, as an office reads them: a day's calls from
the three request formats, missed callers first; marks and notes (the office login
and the form's CSRF token), a form going back to the day, line, page and row it came
from; pages of 500 and their counts; the line filter and the agents' and lines'
names; the try-a-number box; where CDRs go, without the token; a day one number
called thousands of times; days in the zone given; bad queries as JSON errors; and a
database another program holds, as the "busy" page in the page's language."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import html
import io
import random
import re
import socket
import sqlite3
import time
import zoneinfo

import pytest

import popup_server as ps
from conftest import (HEBREW, OFFICE_PASSWORD, SAMPLE_CONTACTS, calls_by_ivrid,
                      http_request, israel_epoch, send_a_day_of_calls, wait_for_calls,
                      wait_until)

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


def _recorded(client, ivrid, outcome):
    """Wait until the call is recorded with this outcome: its phases may reach the
    database in two of the writer's batches."""
    wait_until(lambda: (calls_by_ivrid(client).get(ivrid) or {}).get("outcome") == outcome,
               what=f"{ivrid} recorded as {outcome}")


def _waiting(client):
    return re.findall(r'<tr class="waiting" data-number="([^"]*)"', client.get("/").text)


def _listed(client, ivrid):
    wait_until(lambda: f'data-ivrid="{ivrid}"' in client.get("/calls").text,
               what=f"{ivrid} recorded")


# A day's calls ------------------------------------------------------------------------


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


@pytest.mark.parametrize("language,one_call,one_caller,many_calls,many_callers", [
    ("en", "1 call:", "1 missed caller: 1 still waiting", "2 calls:", "2 missed callers:"),
    ("he", "שיחה אחת:", "מתקשר אחד שלא נענה: 1 עדיין ממתינים", "2 שיחות:",
     "2 מתקשרים שלא נענו:"),
])
def test_the_counts_say_one_call_and_one_caller_in_the_singular(
        office, language, one_call, one_caller, many_calls, many_callers):
    server, client = office
    headers = {"Accept-Language": language}
    _ring(server, "0722776772", "one-1", "Ringing", "Hangup")
    _recorded(client, "one-1", "missed")
    page = client.get("/", headers=headers).text
    assert one_call in page and one_caller in page, page
    _ring(server, "0541234567", "one-2", "Ringing", "Hangup")
    _recorded(client, "one-2", "missed")
    page = client.get("/", headers=headers).text
    assert many_calls in page and many_callers in page and one_call not in page


def test_the_lookup_box_shows_what_voicenter_would_get(start_server):
    server = start_server(SAMPLE_CONTACTS)
    html = server.get("/", {"try": "+972-72-277-6772"}).text
    assert "&quot;CLIENTNAME&quot;: &quot;John Doe&quot;" in html
    assert "Nobody in the contacts" in server.get("/", {"try": "0500000000"}).text


def test_the_page_says_where_cdrs_go_without_showing_the_token(office):
    server, client = office
    page = client.get("/").text
    assert f"{server.url}/cdr?token=" in page and TOKEN not in page
    assert '{"Err": 0, "Errdesc": "OK", "err": 0, "errdesc": "OK"}' in page


def test_agents_and_lines_have_names_and_the_day_filters_by_line(start_server, tmp_path):
    agents = tmp_path / "agents.csv"
    agents.write_text("extension,name\nSIP201,Dana Levi\n", encoding="utf-8")
    lines = tmp_path / "lines.csv"
    lines.write_text("072-277-6773,Sales line\n", encoding="utf-8")
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--agents", agents,
                          "--lines", lines)
    for phase in ("Ringing", "Answer"):
        server.get("/popup", {"phone": "0722776772", "ivrid": "S1", "statusCall": phase,
                              "did": "0722776773", "extenUser": "SIP201"})
    server.get("/popup", {"phone": "0541234567", "ivrid": "O1", "statusCall": "Ringing",
                          "did": "0799999999"})

    def rows(**params):
        text = server.get("/calls.csv", params or None).body.decode("utf-8-sig")
        return list(csv.DictReader(io.StringIO(text)))
    wait_until(lambda: len(rows()) == 2, what="both calls")
    (sales,) = rows(did="0722776773")
    assert (sales["ivrid"], sales["answered by"], sales["line"]) == (
        "S1", "Dana Levi", "Sales line")
    assert [row["ivrid"] for row in rows(did="0799999999")] == ["O1"]


def test_the_page_and_csv_use_the_time_zone_given(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--timezone", "Asia/Tokyo",
                          "--calls-keep-days", "3650")  # January: never pruned meanwhile
    at = dt.datetime(2026, 1, 15, 23, 30, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo"))
    server.post_json("/cdr", {"ivruniqueid": "TZ", "time": israel_epoch(at.timestamp()),
                              "caller": "0722776772", "status": "NOANSWER"})
    text = server.get("/calls.csv", {"day": "2026-01-15"}).body.decode("utf-8-sig")
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["time"] == "2026-01-15 23:30:00"
    assert "TZ" not in server.get("/calls.csv", {"day": "2026-01-16"}).text
    page = server.get("/", {"day": "2026-01-15"}).text
    assert "23:30:00" in page and "John Doe" in page


# Who sees it --------------------------------------------------------------------------


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


# Marks and notes ----------------------------------------------------------------------


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
    assert _waiting(client) == ["+972722776772"] and calls_by_ivrid(client)["m1"]["mark"] == ""
    done = client.post_form("/calls/mark", form)
    assert done.status == 303 and done.header("Location") == "/calls"
    assert _waiting(client) == [] and calls_by_ivrid(client)["m1"]["mark"] == "handled"


def test_a_note_is_kept_when_only_the_mark_changes(office):
    server, client = office
    _ring(server, "0722776772", "n1", "Ringing", "Hangup")
    _recorded(client, "n1", "missed")
    assert client.post_form("/calls/mark", {"ivrid": "n1", "mark": "",
                                            "note": "=cmd|' /C calc'!A0"}).status == 303
    assert client.post_form("/calls/mark", {"ivrid": "n1", "mark": "handled"}).status == 303
    row = calls_by_ivrid(client)["n1"]
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


def test_the_edit_form_goes_back_to_its_day_line_page_and_row(office):
    server, client = office
    day = dt.date.today() - dt.timedelta(days=2)
    # Noon of that day on the pages (this process's zone is the servers'), sent as
    # Voicenter writes a CDR's time: whichever reading the server takes of a CDR
    # that comes days late, the calls are that day's, in any zone the tests run in.
    noon = israel_epoch(dt.datetime.combine(day, dt.time(12)).timestamp())
    for n, caller in enumerate(("0541234567", "0527654321", "0509998877")):
        assert server.post_json(f"/cdr?token={TOKEN}", {
            "ivruniqueid": f"old-{n}", "type": "Incoming Call", "status": "ANSWER",
            "caller": caller, "did": "0722776773", "time": int(noon) + n * 60,
            "duration": 30}).status == 200
    query = {"day": day.isoformat(), "did": "0722776773", "calls": 1, "edit": "old-0"}
    page = client.get("/calls", query).text
    form = re.search(r'<form method="post" action="/calls/mark" class="mark-form">(.*?)'
                     r'</form>', page, re.S).group(1)
    goal = html.unescape(re.search(r'name="next" value="([^"]*)"', form).group(1))
    assert goal == f"/calls?day={day.isoformat()}&did=0722776773&calls=1#call-old-0"
    done = client.post_form("/calls/mark", {"ivrid": "old-0", "mark": "called back",
                                            "note": "left a message", "next": goal})
    assert done.status == 303 and done.header("Location") == goal
    back = client.get(goal.partition("#")[0]).text
    assert 'id="call-old-0"' in back and "left a message" in back


@pytest.fixture
def locked(tmp_path):
    """Lock the calls database as another program writing to it would (no other
    writer gets in) until the test ends."""
    holders = []

    def lock():
        connection = sqlite3.connect(tmp_path / "calls.sqlite", isolation_level=None,
                                     timeout=10)
        connection.execute("BEGIN IMMEDIATE")
        holders.append(connection)

    yield lock
    for connection in holders:
        connection.rollback()
        connection.close()


def test_a_locked_database_on_a_mark_is_a_page_in_the_pages_language(office, locked):
    server, client = office
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "l-1",
                                 "statusCall": "Hangup"}).status == 200
    _listed(client, "l-1")
    locked()
    goal = "/calls?did=0722776773#call-l-1"
    for headers, words in ((HEBREW, "עסוק, נסו שוב"), ({}, "Busy, try again")):
        resp = client.post_form("/calls/mark", {"ivrid": "l-1", "mark": "handled",
                                                "next": goal}, headers=headers)
        assert resp.status == 503 and resp.header("Content-Type").startswith("text/html")
        assert words in resp.text and resp.header("Retry-After")
        assert html.escape(goal) in resp.text  # the way back to the row
        assert "internal error" not in resp.text and "STATUS" not in resp.text


def test_a_locked_database_on_a_callers_forms_is_a_page_in_the_pages_language(
        office, locked):
    server, client = office
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "l-2",
                                 "statusCall": "Hangup"}).status == 200
    _listed(client, "l-2")
    locked()
    note = client.post_form("/caller/+972541234567/call", {"ivrid": "l-2", "note": "hi"},
                            headers=HEBREW)
    assert note.status == 503 and note.header("Content-Type").startswith("text/html")
    assert "עסוק, נסו שוב" in note.text and 'href="/caller/+972541234567"' in note.text
    added = client.post_form("/caller/+972509998877/contact",
                             {"name": "נועה", "phone": "050-999-8877"}, headers=HEBREW)
    assert added.status == 303
    page = client.get(added.header("Location").partition("#")[0], headers=HEBREW)
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    assert "נועה" in page.text


# Pages of 500 calls, and bad queries --------------------------------------------------


def test_a_big_day_comes_in_pages_and_its_counts_add_up(office):
    server, client = office
    for n in range(501):  # one more than a page; every third one answered
        phases = ("Ringing", "Answer", "Hangup") if n % 3 == 0 else ("Ringing", "Hangup")
        _ring(server, f"05{n:08d}", f"big-{n:03d}", *phases,
              did="0722776773" if n % 2 else "0722776774")
    wait_until(lambda: sorted(collections.Counter(
        row["outcome"] for row in calls_by_ivrid(client).values()).items()) == [
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


@pytest.mark.parametrize("query", ["calls=-1", "calls=abc", "callers=1e3",
                                   "calls=99999999999", "callers=%EF%BC%91"])
def test_a_bad_page_start_is_a_json_error(office, json_error, query):
    _server, client = office
    assert "whole number" in json_error(client.get("/?" + query), 400)["MESSAGE"]


def test_a_bad_day_is_a_clear_error(start_server):
    resp = start_server(SAMPLE_CONTACTS).get("/calls.csv", {"day": "26/11/2026"})
    assert resp.status == 400 and "YYYY-MM-DD" in resp.json()["MESSAGE"]


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_a_day_far_outside_the_calendar_is_a_400_not_a_crash(start_server, day):
    server = start_server(SAMPLE_CONTACTS)
    for path in ("/calls", "/calls.csv"):
        resp = server.get(path, {"day": day})
        assert resp.status == 400 and resp.json()["STATUS"] == "ERROR"


# A day where one number called thousands of times -------------------------------------

TODAY = dt.date.today()
DIALLER = "0501234567"


def build_day(db, calls_of_one, others=(), seed=22):
    """A day of `calls_of_one` calls from DIALLER (ringing, then hung up: missed) and
    one call from each number of `others`, at random times of today so far, written
    as pop-up events: the database's own triggers make them calls."""
    rng = random.Random(seed)
    start = dt.datetime.combine(TODAY, dt.time()).astimezone().timestamp()
    span = max(min(time.time() - start - 120, 86400 - 120), 60)
    phones = [DIALLER] * calls_of_one + list(others)
    rows = []
    for number, phone in enumerate(phones):
        ivrid = f"{number:08d}-day"
        at = start + rng.random() * span
        base = (phone, "+972" + phone[1:], "0722776773")
        rows.append((ivrid, "ringing", at, *base, "", "Incoming", 0, "", "", 0, "", ""))
        if number % 3 == 0:
            rows.append((ivrid, "talking", at + 5, *base, "201", "Incoming", 1, "", "", 0,
                         "", ""))
        rows.append((ivrid, "hangup", at + 30, *base, "", "Incoming", 0, "", "", 0, "", ""))
    connection = sqlite3.connect(db, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    ps._prepare_schema(connection)
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    connection.execute("COMMIT")
    connection.close()


def _rows_of(body):
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def page_tries(html):
    """{ivrid: tries} of the calls page's calls table (1 where it shows none)."""
    table = html[html.index('<table id="calls">'):]
    tries = {}
    for row in table.split("<tr ")[1:]:
        ivrid = re.search(r'data-ivrid="([^"]+)"', row).group(1)
        shown = re.search(r"Tries today: (\d+)", row.split("</tr>")[0])
        tries[ivrid] = int(shown.group(1)) if shown else 1
    return tries


def test_tries_count_every_call_of_the_number_that_day_on_every_page(tmp_path):
    db = tmp_path / "calls.sqlite"
    others = [f"05299900{n:02d}" for n in range(40)] + ["0529990001"] * 3
    build_day(db, 1200, others)
    expected = {"+972501234567": 1200, "+972529990001": 4}
    seen = {}
    for offset in (0, 500, 1000):
        page = ps.day_page(db, TODAY, size=500, calls_from=offset)
        for shown in page.calls:
            seen[shown.ivrid] = shown.tries
            assert shown.tries == expected.get(shown.e164, 1), (offset, shown.e164)
    assert len(seen) == 1243
    assert sum(1 for call in ps.iter_calls_of_day(db, TODAY) if call.tries == 1200) == 1200


def test_the_csvs_tries_are_the_pages_over_http(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    build_day(db, 700, [f"05299900{n:02d}" for n in range(30)] + ["0529990001"] * 2)
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--office-password", "")
    from_csv = {row["ivrid"]: int(row["tries"]) for row in _rows_of(
        server.get("/calls.csv").body)}
    from_pages = {}
    for offset in (0, 500):
        resp = server.get("/", {"calls": offset})
        assert resp.status == 200
        from_pages.update(page_tries(resp.text))
    assert len(from_csv) == len(from_pages) == 732
    assert from_csv == from_pages
    assert sorted(set(from_csv.values())) == [1, 3, 700]


@pytest.fixture(scope="module")
def dialler_day(tmp_path_factory):
    """A calls database holding a day of 50,000 calls from one number."""
    db = tmp_path_factory.mktemp("dialler") / "calls.sqlite"
    build_day(db, 50_000)
    return db


def test_the_csv_of_50000_calls_from_one_number_downloads_whole(start_server, dialler_day):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", dialler_day,
                          "--office-password", "")
    # A hang guard, not a timing assert: a count a row made this take minutes.
    resp = http_request("GET", server.url + "/calls.csv", timeout=60)
    assert resp.status == 200
    rows = _rows_of(resp.body)
    assert len(rows) == 50_000
    assert {row["tries"] for row in rows} == {"50000"}
    assert [row["outcome"] for row in rows[:2]] == ["missed", "missed"]  # missed first


def test_a_client_that_goes_away_stops_the_csvs_query(start_server, dialler_day):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", dialler_day,
                          "--office-password", "")
    mark = server.log_mark()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"GET /calls.csv HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        while len(got) < 64 * 1024:
            piece = sock.recv(16 * 1024)
            assert piece, "the server closed the download"
            got += piece
        # Unread bytes left at close: the kernel answers the server with a reset.
    line = server.wait_for_log("the download of calls-", since=mark, timeout=30)
    stopped = int(re.search(r"stopped after (\d+) calls", line).group(1))
    assert 0 < stopped < 50_000
    # Its database connection was let go: a writer gets the whole database at once.
    writer = sqlite3.connect(dialler_day, timeout=0)
    wait_until(lambda: writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0,
               timeout=10, what="a checkpoint no reader holds back")
    writer.close()
    assert server.get("/health").status == 200
