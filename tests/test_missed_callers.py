"""The calls page's data (issue 14 items 1, 2, 4, 7): calls that settle, missed
callers resolving as the office works, marks and notes, agents' and lines' names, the
time zone's days, and a database of the earlier schema upgraded in place."""
from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
import time
import zoneinfo

import pytest

import popup_server as ps
from conftest import SAMPLE_CONTACTS, wait_until

TODAY = dt.date.today()
ANSWER = ps.PopupAnswer(1, "John Doe", "Voicenter", "", 972722776772)
JOHN = "+972722776772"


def record(db, *events):
    """(ivrid, phase, fields...) events through a real CallRecorder."""
    recorder = ps.CallRecorder(db, keep_days=90).start()
    for ivrid, phase, *extra in events:
        recorder.record({"phone": "0722776772", "ivrid": ivrid, "status": phase,
                         **(extra[0] if extra else {})}, ANSWER)
    recorder.close()


def missed(db, **options):
    return [(c.e164, c.tries, c.resolved) for c in ps.missed_callers(db, TODAY, **options)]


def test_a_call_that_never_hangs_up_settles_as_no_answer_recorded(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("R", "Ringing"))
    started = ps.calls_of_day(db, TODAY)[0].started.timestamp()
    outcome = lambda minutes: ps.calls_of_day(  # noqa: E731
        db, TODAY, ring_timeout_seconds=600, now=started + minutes * 60)[0].outcome
    assert (outcome(9), outcome(11)) == ("in progress", "no answer recorded")
    summary = ps.day_summary(db, TODAY, ring_timeout_seconds=600, now=started + 11 * 60)
    assert summary.missed == 1 and summary.open_callers == 1


def test_a_lookup_without_an_ivrid_is_not_a_call(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    for _ in range(3):
        assert server.lookup("0722776772")["CLIENTNAME"] == "John Doe"
    server.lookup("0722776772", ivrid="real", statusCall="Ringing")
    server.stop()
    assert sqlite3.connect(db).execute("SELECT ivrid FROM events").fetchall() == [("real",)]


def test_a_caller_who_tried_twice_is_one_row_resolved_by_a_later_answered_call(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("M1", "Ringing"), ("M1", "Hangup"), ("M2", "Ringing"), ("M2", "Hangup"))
    assert missed(db) == [(JOHN, 2, "")]
    assert ps.day_summary(db, TODAY).open_callers == 1
    record(db, ("A3", "Ringing"), ("A3", "Answer", {"extenUser": "201"}))
    assert missed(db) == [(JOHN, 2, "answered")]
    assert ps.day_summary(db, TODAY).open_callers == 0
    record(db, ("M4", "Ringing"), ("M4", "Hangup"))  # rings again, missed: open again
    assert missed(db) == [(JOHN, 3, "")]


def test_a_missed_caller_is_resolved_by_an_outgoing_cdr_to_them(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("M1", "Ringing"), ("M1", "Hangup"))
    assert ps.store_cdr(db, {"ivruniqueid": "OUT1", "type": "Outgoing Call",
                             "caller": "0722776773", "target": "972722776772",
                             "status": "ANSWER", "time": time.time() + 1})
    assert missed(db) == [(JOHN, 1, "called back")]
    (out,) = [c for c in ps.calls_of_day(db, TODAY) if c.ivrid == "OUT1"]
    assert (out.outcome, out.direction, out.e164) == ("outgoing", "outgoing", JOHN)


def test_a_missed_caller_is_resolved_by_a_mark_and_the_note_is_in_the_csv(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("M1", "Ringing"), ("M1", "Hangup"))
    assert ps.mark_call(db, "M1", note="left a message") is True  # a note alone
    assert missed(db) == [(JOHN, 1, "")]
    assert ps.mark_call(db, "M1", "called back", "spoke to him") is True
    assert missed(db) == [(JOHN, 1, "marked")]
    assert missed(db, open_only=True) == []
    assert ps.mark_call(db, "no-such-call", "handled") is False
    with pytest.raises(ValueError):
        ps.mark_call(db, "M1", "whatever")
    rows = list(csv.DictReader(io.StringIO(ps.calls_csv(ps.calls_of_day(db, TODAY))[1:])))
    assert (rows[0]["mark"], rows[0]["note"]) == ("called back", "spoke to him")


def test_withheld_callers_are_each_their_own_row_and_names_come_from_the_index(tmp_path):
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90).start()
    nobody = ps.PopupAnswer(0, "", "", "", None)
    for n in range(2):
        recorder.record({"phone": "", "ivrid": f"W{n}", "status": "Hangup"}, nobody)
    recorder.close()
    ps.store_cdr(db, {"ivruniqueid": "Q", "caller": "0541234567", "status": "ABANDONE"})
    index = ps.load_index(SAMPLE_CONTACTS)
    callers = ps.missed_callers(db, TODAY, index=index)
    assert sorted((c.e164, c.tries) for c in callers) == [
        ("", 1), ("", 1), ("+972541234567", 1)]
    (noa,) = [c for c in callers if c.e164]
    assert noa.name == "נועה כהן" and noa.last_ivrid == "Q"


def test_a_numbers_recent_calls_incoming_and_outgoing(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("M1", "Ringing"), ("M1", "Hangup"))
    ps.store_cdr(db, {"ivruniqueid": "OUT", "type": "outgoing", "target": "0722776772",
                      "time": time.time() + 5})
    ps.store_cdr(db, {"ivruniqueid": "OTHER", "caller": "0541234567"})
    calls = ps.calls_of_number(db, JOHN)
    assert [(c.ivrid, c.outcome) for c in calls] == [("OUT", "outgoing"), ("M1", "missed")]


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


def test_an_agents_file_that_cannot_be_read_is_one_line(run_cli, tmp_path):
    bad = tmp_path / "agents.csv"
    bad.write_text("101\n", encoding="utf-8")
    result = run_cli(SAMPLE_CONTACTS, "--agents", bad, "--check")
    assert result.returncode == 2
    assert f"{bad}, line 1: write agents as two columns" in result.stderr.decode()


def test_an_unknown_time_zone_is_refused_in_one_line(run_cli):
    result = run_cli(SAMPLE_CONTACTS, "--timezone", "Mars/Olympus", "--check")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1].endswith(
        "'Mars/Olympus' is not a time zone this machine knows (e.g. Asia/Jerusalem, "
        "Europe/London, UTC)")


def israel_epoch(seconds):
    """A moment as Voicenter's CDR `time` documents it: Israel's wall-clock written as
    if it were UTC (these CDRs come long after their calls, and are read that way)."""
    local = dt.datetime.fromtimestamp(seconds, zoneinfo.ZoneInfo("Asia/Jerusalem"))
    return local.replace(tzinfo=dt.timezone.utc).timestamp()


def test_days_begin_at_midnight_in_the_time_zone(tmp_path):
    db = tmp_path / "calls.sqlite"
    zone = zoneinfo.ZoneInfo("Asia/Jerusalem")
    day = dt.date(2026, 3, 27)  # Israel's clocks go forward at 02:00: a 23-hour day
    start = dt.datetime(2026, 3, 27, tzinfo=zone).timestamp()
    end = dt.datetime(2026, 3, 28, tzinfo=zone).timestamp()
    for ivrid, at in (("before", start - 1), ("first", start), ("last", end - 1),
                      ("after", end)):
        ps.store_cdr(db, {"ivruniqueid": ivrid, "time": israel_epoch(at),
                          "caller": "0722776772"})
    assert end - start == 23 * 3600
    calls = ps.calls_of_day(db, day, zone=zone)
    assert sorted(c.ivrid for c in calls) == ["first", "last"]
    assert {c.ivrid: c.started.strftime("%H:%M:%S %Z") for c in calls} == {
        "first": "00:00:00 IST", "last": "23:59:59 IDT"}
    utc = ps.calls_of_day(db, day, zone=zoneinfo.ZoneInfo("UTC"))
    assert sorted(c.ivrid for c in utc) == ["after", "last"]


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


# The schema as it was before issue 14, as databases of earlier versions hold it.
SCHEMA_BEFORE = """
CREATE TABLE IF NOT EXISTS events (
    ivrid TEXT NOT NULL, phase TEXT NOT NULL, received_at REAL NOT NULL,
    caller TEXT NOT NULL, e164 TEXT NOT NULL, did TEXT NOT NULL, exten_user TEXT NOT NULL,
    direction TEXT NOT NULL, answered INTEGER NOT NULL, name TEXT NOT NULL,
    company TEXT NOT NULL, total INTEGER NOT NULL, url TEXT NOT NULL,
    PRIMARY KEY (ivrid, phase)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_time ON events (received_at);
"""


def test_a_database_of_the_earlier_schema_is_upgraded_in_place(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    now = time.time()
    old = sqlite3.connect(db)
    old.executescript(SCHEMA_BEFORE)
    row = lambda ivrid, phase, at, answered=0, exten="": (  # noqa: E731
        ivrid, phase, at, "0722776772", JOHN, "035", exten, "", answered, "John Doe",
        "Voicenter", 1, "")
    with old:
        old.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", [
            row("old-1", "ringing", now - 300), row("old-1", "hangup", now - 290),
            row("old-2", "ringing", now - 200), row("old-2", "answer", now - 190, 1, "201"),
            row("no-ivrid-1764240000000", "ringing", now - 100)])  # a test lookup then
    old.close()
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    server.get("/popup", {"phone": "0722776772", "ivrid": "new", "statusCall": "Ringing"})
    assert server.post_json("/cdr", {"ivruniqueid": "old-1", "status": "NOANSWER",
                                     "caller": "0722776772"}).json()["Err"] == 0

    def rows():
        text = server.get("/calls.csv").body.decode("utf-8-sig")
        return {r["ivrid"]: (r["outcome"], r["status"]) for r in
                csv.DictReader(io.StringIO(text))}
    wait_until(lambda: "new" in rows(), what="the new call")
    assert rows() == {"old-1": ("missed", "NOANSWER"), "old-2": ("answered", ""),
                      "new": ("in progress", "")}
    server.stop()
    connection = sqlite3.connect(db)
    assert connection.execute("SELECT COUNT(*) FROM events").fetchone() == (6,)
    assert connection.execute("PRAGMA user_version").fetchone() == (ps.CALLS_DB_VERSION,)
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
