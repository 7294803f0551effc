"""A calls database written by the previous version (schema 3, commit c71e0ec) opens
and is upgraded in place (issue 20): its phases read again under today's rules (a call
it recorded as missed because it did not understand Talking is answered), its CDRs'
columns derived again from the fields kept, nothing lost, the upgrade logged once.
The old database is written by the old module itself, taken from git."""
from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import io
import json
import sqlite3
import subprocess
import sys
import time
import zoneinfo
from pathlib import Path

import pytest

from conftest import MODULE, SAMPLE_CONTACTS, wait_until

OLD_COMMIT = "c71e0ec"  # the last version of schema 3
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "voicenter"
ISRAEL = zoneinfo.ZoneInfo("Asia/Jerusalem")


def old_module(tmp_path):
    """popup_server.py as it was at OLD_COMMIT, imported from a temporary file."""
    try:
        source = subprocess.run(["git", "show", f"{OLD_COMMIT}:popup_server.py"],
                                cwd=MODULE.parent, capture_output=True, check=True,
                                timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip(f"needs git and this repository's history ({OLD_COMMIT})")
    path = tmp_path / "popup_server_c71e0ec.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("popup_server_c71e0ec", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.CALLS_DB_VERSION == 3
    return module


def israel_epoch(seconds):
    local = dt.datetime.fromtimestamp(seconds, ISRAEL)
    return int(local.replace(tzinfo=dt.timezone.utc).timestamp())


def write_old_day(old, db):
    """A day of calls as Voicenter sends them, recorded by the old version."""
    recorder = old.CallRecorder(db, keep_days=90).start()
    john = old.PopupAnswer(1, "John Doe", "Voicenter", "", 972722776772)
    unknown = old.PopupAnswer(0, "", "", "", 972501234567)
    # GET format, answered (Talking) by SIP102: the old version lists it as missed.
    for phase in ("Ringing", "Talking", "Hangup"):
        recorder.record({"phone": "0722776772", "ivrid": "20260301100000get",
                         "statusCall": phase, "extenUser": "SIP102"}, john)
    # A ring group (JSON), answered by SIP103; the other stations answered elsewhere.
    ring = json.loads((FIXTURES / "ring-group.json").read_text(encoding="utf-8"))
    answerer = {"SIP102": "SIP103", "SIP103": "SIP102"}
    for fields in ring["answered"]:  # as the JSON reader passes them on: text
        fields = {k: str(v).lower() if isinstance(v, bool) else str(v)
                  for k, v in fields.items()}
        recorder.record({**fields, "ivrid": "20260301101500ring", "extenUser":
                         answerer.get(fields["extenUser"], fields["extenUser"])}, john)
    # A missed call from an unknown number, then called back with Click2Call.
    for phase in ("Ringing", "Hangup"):
        recorder.record({"phone": "0501234567", "ivrid": "20260301103000miss",
                         "statusCall": phase}, unknown)
    recorder.close()
    now = time.time()
    outgoing = json.loads((FIXTURES / "cdr-outgoing.json").read_text(encoding="utf-8"))
    queue = json.loads((FIXTURES / "cdr-queue.json").read_text(encoding="utf-8"))["cdr"]
    time.sleep(1.1)
    for record in (
            {**outgoing["click2call_leg2"], "time": israel_epoch(time.time())},
            {**queue, "ivruniqueid": "20260301104000queue", "status": "ABANDONE",
             "time": israel_epoch(now - 20), "caller": "0541234567"}):
        assert old.store_cdr(db, record)
    assert old.mark_call(db, "20260301104000queue", "", "call her after 4")


def csv_rows(server):
    text = server.get("/calls.csv").body.decode("utf-8-sig")
    return {row["ivrid"]: row for row in csv.DictReader(io.StringIO(text))}


def contents(db):
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return (connection.execute("SELECT COUNT(*) FROM events").fetchone()[0],
                sorted(row[0] for row in connection.execute("SELECT raw FROM cdrs")),
                connection.execute("SELECT ivrid, note FROM call_notes").fetchall(),
                connection.execute("PRAGMA user_version").fetchone()[0])
    finally:
        connection.close()


def test_a_database_of_the_previous_version_is_upgraded_with_its_calls_corrected(
        start_server, tmp_path):
    old = old_module(tmp_path)
    db = tmp_path / "state" / "calls.sqlite"
    write_old_day(old, db)
    # What the old version made of it (the database is truly its): the answered call
    # missed, the call back an incoming one, its time 2 or 3 hours in the future.
    connection = sqlite3.connect(db)
    before = dict(connection.execute("SELECT ivrid, state || ' ' || direction FROM calls"))
    ahead = connection.execute("SELECT started - received_at FROM cdrs WHERE ivrid = "
                               "'20240601abc123def456'").fetchone()[0]
    connection.close()
    assert before["20260301100000get"] == "missed incoming"
    assert before["20240601abc123def456"] == "answered incoming"  # from the office
    assert ahead > 7000
    events, raws, notes, version = contents(db)
    assert version == 3 and len(raws) == 2 and notes

    agents = tmp_path / "agents.csv"
    agents.write_text("SIP102,Bat-El Levi\nSIP103,Carmel Ron\n", encoding="utf-8")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--agents", agents,
                          "--timezone", "Asia/Jerusalem")
    rows = wait_until(lambda: csv_rows(server), what="the upgraded calls")
    assert set(rows) == {"20260301100000get", "20260301101500ring", "20260301103000miss",
                         "20240601abc123def456", "20260301104000queue"}
    get = rows["20260301100000get"]
    assert (get["outcome"], get["answered by"]) == ("answered", "Bat-El Levi")
    ring = rows["20260301101500ring"]  # the answerer's hang-up was never kept: no talk time
    assert (ring["outcome"], ring["answered by"], ring["tries"]) == (
        "answered", "Carmel Ron", "2")  # John called twice
    back = rows["20240601abc123def456"]
    assert (back["direction"], back["called number"], back["duration (s)"]) == (
        "outgoing", "972501234567", "9")
    queue = rows["20260301104000queue"]
    assert (queue["outcome"], queue["duration (s)"], queue["note"]) == (
        "missed", "", "call her after 4")
    # Its time read again: Israel's wall-clock, not 2 or 3 hours in the future.
    started = dt.datetime.strptime(queue["time"], "%Y-%m-%d %H:%M:%S")
    true = dt.datetime.fromtimestamp(time.time() - 20, ISRAEL).replace(tzinfo=None)
    assert abs((started - true).total_seconds()) < 120, (started, true)
    page = server.get("/").text
    assert 'class="resolved called-back" data-number="+972501234567"' in page
    assert 'class="waiting" data-number="+972541234567"' in page
    # Nothing lost, and said once.
    assert server.log_text().count("upgraded (schema 3 to 4)") == 1, server.log_text()
    server.stop()
    assert contents(db) == (events, raws, notes, 4)
    again = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--agents", agents,
                         "--timezone", "Asia/Jerusalem")
    assert set(csv_rows(again)) == set(rows)
    assert "upgraded" not in again.log_text()
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()


def test_the_upgrade_reads_the_cdrs_numbers_in_the_configured_region(start_server, tmp_path):
    # A call back the old version stored as incoming is read again as outgoing: its
    # called number (the target, a local number of --region US) is read in that region.
    old = old_module(tmp_path)
    db = tmp_path / "state" / "calls.sqlite"
    outgoing = json.loads((FIXTURES / "cdr-outgoing.json").read_text(encoding="utf-8"))
    assert old.store_cdr(db, {**outgoing["click2call_leg2"], "target": "2125551234",
                              "time": israel_epoch(time.time())}, "US")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--region", "US",
                          "--timezone", "Asia/Jerusalem")
    rows = wait_until(lambda: csv_rows(server), what="the upgraded calls")
    back = rows["20240601abc123def456"]
    assert (back["direction"], back["called number"]) == ("outgoing", "2125551234")
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:  # the number the caller's page and the missed callers' list go by
        assert connection.execute("SELECT e164 FROM calls WHERE ivrid = ?", (
            back["ivrid"],)).fetchone() == ("+12125551234",)
    finally:
        connection.close()
    assert server.log_text().count("upgraded (schema 3 to 4)") == 1, server.log_text()
