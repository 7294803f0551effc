"""The calls database through what goes wrong with it: another program holding it (the
pop-ups answered meanwhile, every call written once it is let go, /health 503
meanwhile), deleted, replaced or unopenable while the server runs, read-only, events
beyond the recorder's backlog (dropped, counted and logged), a normal shutdown and a
SIGTERM with stderr blocked (every queued call written), a console nobody reads
(memory never grows); and databases of earlier versions upgraded in place, nothing
lost."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import importlib.util
import io
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zoneinfo

import pytest

import popup_server as ps
from conftest import (MODULE, POPUP_HANG_GUARD, SAMPLE_CONTACTS, calls_by_ivrid, free_port,
                      health_of, http_request, israel_epoch, subprocess_env,
                      voicenter_fixture, wait_until)

JOHN = "+972722776772"


def recorded_ivrids(db):
    """The ivrids in the calls database at `db` (an empty set if it is not there)."""
    if not db.exists():
        return set()
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return {row[0] for row in connection.execute("SELECT ivrid FROM events")}
    except sqlite3.OperationalError:  # created a moment ago, no table yet
        return set()
    finally:
        connection.close()


def ring(server, ivrids):
    for ivrid in ivrids:
        answer = server.lookup("0722776772", ivrid=ivrid, statusCall="Ringing")
        assert answer["CLIENTNAME"] == "John Doe", answer


# Another program holding the database -------------------------------------------------


def test_a_locked_database_never_delays_or_breaks_a_popup(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    server.get("/popup", {"phone": "0722776772", "ivrid": "warm", "statusCall": "Ringing"})
    blocker = sqlite3.connect(db, timeout=5)
    blocker.execute("BEGIN EXCLUSIVE")  # nobody else can write, nor read in WAL
    try:
        # Each answered within the hang guard (bench/fault_calls.py --only lock times
        # them): the events wait in the recorder's queue, not on the request.
        for n in range(20):
            answer = server.get("/popup", {"phone": "0722776772", "ivrid": f"locked-{n}",
                                           "statusCall": "Ringing"},
                                timeout=POPUP_HANG_GUARD).json()
            assert answer["CLIENTNAME"] == "John Doe"
        time.sleep(1.5)  # the writer's 1 s busy timeout expires
        assert "could not record" in server.log_text()
    finally:
        blocker.rollback()
        blocker.close()
    assert server.lookup("0722776772")["TOTAL"] == 1


def test_calls_made_while_another_process_locks_the_database_are_all_recorded(
        start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    ring(server, ["before"])
    wait_until(lambda: "before" in recorded_ivrids(db), what="the first call")
    blocker = sqlite3.connect(db, timeout=5, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock, as another program may
    try:
        during = [f"locked-{n}" for n in range(30)]
        ring(server, during)
        status, body = wait_until(lambda: (lambda h: h if h[0] == 503 else None)(
            health_of(server)), what="/health to say 503 while the database is locked")
        assert body["status"] == "error" and body["contacts_file"] == "ok", body
        assert body["calls"].startswith("cannot be recorded: calls.sqlite: database is "
                                        "locked"), body
        assert str(tmp_path) not in str(body), body
        time.sleep(1.5)  # longer than the writer's busy timeout: old code dropped them
    finally:
        blocker.rollback()
        blocker.close()
    wait_until(lambda: set(during) <= recorded_ivrids(db), what="the calls held meanwhile")
    wait_until(lambda: health_of(server)[0] == 200, what="/health back to 200")
    assert health_of(server)[1]["calls"] == "ok"
    log = server.log_text()
    assert log.count("database is locked") == 1, log  # when it started, not every try
    assert "recording calls in" in log and "again" in log


# A database deleted, replaced, unopenable or read-only --------------------------------


@pytest.mark.parametrize("how, by", [("deleted", None), ("replaced", "an empty one"),
                                     ("replaced", "a backup")])
def test_a_database_deleted_or_replaced_while_running_is_made_again(start_server,
                                                                     tmp_path, how, by):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    ring(server, ["first"])
    wait_until(lambda: "first" in recorded_ivrids(db), what="the first call")
    if how == "deleted":
        for path in tmp_path.glob("calls.sqlite*"):
            path.unlink()
    else:  # another file moved in its place: a new database, or a backup restored
        other = tmp_path / "other.sqlite"
        with contextlib.closing(sqlite3.connect(other)) as connection:
            if by == "a backup":
                with contextlib.closing(sqlite3.connect(db)) as source:
                    source.backup(connection)
            else:
                connection.executescript(ps.CALLS_SCHEMA)
        os.replace(other, db)
    after = [f"after-{n}" for n in range(20)]
    ring(server, after)
    expected = set(after) | ({"first"} if by == "a backup" else set())
    wait_until(lambda: recorded_ivrids(db) == expected,
               what=f"the calls made after the database was {how}")
    assert f"was {how} while open" in server.log_text()
    csv_text = server.get("/calls.csv").text
    assert all(ivrid in csv_text for ivrid in after)
    assert health_of(server)[0] == 200
    server.stop()  # what is read now is the file alone, no connection's WAL beside it
    assert recorded_ivrids(db) == expected
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_database_that_cannot_be_created_never_breaks_a_popup(start_server, tmp_path):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", not_a_folder / "calls.sqlite")
    assert server.lookup("0722776772", ivrid="x", statusCall="Ringing")["TOTAL"] == 1
    assert server.get("/").status == 200
    assert "cannot be opened" in server.wait_for_log("cannot be opened")


def test_a_database_that_cannot_be_opened_at_start_and_is_mended_loses_no_call(
        start_server, tmp_path):
    in_the_way = tmp_path / "calls"
    in_the_way.write_text("a file where the database's folder should be")
    db = in_the_way / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    while_broken = [f"broken-{n}" for n in range(15)]
    ring(server, while_broken)
    status, body = health_of(server)
    assert status == 503 and body["calls"].startswith("cannot be recorded: calls.sqlite: ")
    assert "15 call events waiting" in body["calls"], body
    time.sleep(2)  # the database is tried again meanwhile (and used to log every 50 ms)
    in_the_way.unlink()
    in_the_way.mkdir(exist_ok=True)  # the recorder may have made it first: it retries
    ring(server, ["mended"])
    wait_until(lambda: recorded_ivrids(db) == set(while_broken) | {"mended"},
               what="every call, those made while it was broken too")
    wait_until(lambda: health_of(server)[0] == 200, what="/health back to 200")
    assert server.log_text().count("cannot be opened") == 1, server.log_text()


def test_a_read_only_database_at_start_recovers_when_made_writable(start_server,
                                                                   tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "calls.sqlite"
    as_root = os.geteuid() == 0  # root writes through file modes: a read-only mount
    if as_root and (shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
            capture_output=True).returncode != 0):
        pytest.skip("run as root, and no read-only mount can be made here")
    try:
        if as_root:  # with its -wal and -shm beside it: SQLite opens it, writes fail
            source = tmp_path / "source" / "calls.sqlite"
            source.parent.mkdir()
            with contextlib.closing(sqlite3.connect(source)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(ps.CALLS_SCHEMA)
                for path in source.parent.iterdir():
                    shutil.copy(path, folder / path.name)
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        else:
            with contextlib.closing(sqlite3.connect(db)) as connection:
                connection.executescript(ps.CALLS_SCHEMA)
            db.chmod(0o444)
            folder.chmod(0o555)
        server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
        while_read_only = [f"ro-{n}" for n in range(10)]
        ring(server, while_read_only)
        wait_until(lambda: health_of(server)[0] == 503, what="/health 503 (read-only)")
        if as_root:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        else:
            folder.chmod(0o755)
            db.chmod(0o644)
        wait_until(lambda: recorded_ivrids(db) == set(while_read_only),
                   what="the calls made while the database was read-only")
        wait_until(lambda: health_of(server)[0] == 200, what="/health back to 200")
        server.stop()
    finally:
        if as_root:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        else:
            folder.chmod(0o755)


def test_events_past_the_backlog_are_dropped_and_counted_exactly(tmp_path, caplog):
    in_the_way = tmp_path / "calls"
    in_the_way.write_text("x")
    recorder = ps.CallRecorder(in_the_way / "calls.sqlite", keep_days=90).start()
    answer = ps.PopupAnswer(1, "John", "", "", 972722776772)
    extra = 1234
    with caplog.at_level(logging.INFO, logger="popup_server"):
        for n in range(ps.RECORD_BACKLOG + extra):
            recorder.record({"phone": "0722776772", "ivrid": f"c{n}",
                             "status": "Ringing"}, answer)
        in_the_way.unlink()
        in_the_way.mkdir(exist_ok=True)  # the recorder may have made it first: it retries
        wait_until(lambda: recorder.trouble is None and not recorder._events,
                   what="the recorder to write what it held")
        recorder.close()
    assert f"{extra} call events were dropped" in caplog.text, caplog.text
    assert len(recorded_ivrids(in_the_way / "calls.sqlite")) == ps.RECORD_BACKLOG


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


# Shutting down, and a console nobody reads --------------------------------------------


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


class BlockedStderrServer:
    """The server with its stderr into a pipe nobody reads: a paused console."""

    def __init__(self, tmp_path, *args):
        self.port = free_port()
        read_end, write_end = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, str(MODULE), str(SAMPLE_CONTACTS), "--host", "127.0.0.1",
             "--port", str(self.port), "--token", "", "--state-dir", str(tmp_path / "state"),
             *map(str, args)],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=write_end, env=subprocess_env())
        os.close(write_end)
        self.read_end = read_end  # kept open and never read: writes block once it is full
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(self._answers, what="the server to start")

    def _answers(self):
        try:
            return http_request("GET", self.url + "/health", timeout=1).status == 200
        except OSError:
            return False

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            return int(status.read().split("VmRSS:")[1].split()[0]) / 1024

    def ring(self, count, ivrid_size, prefix="c"):
        import http.client
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        padding = "x" * ivrid_size
        try:
            for n in range(count):
                connection.request("GET", f"/popup?phone=0722776772&statusCall=Ringing"
                                          f"&ivrid={prefix}{n}-{padding}")
                response = connection.getresponse()
                response.read()
                assert response.status == 200
        finally:
            connection.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.read_end)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_blocked_stderr_does_not_make_the_request_log_grow(tmp_path):
    server = BlockedStderrServer(tmp_path, "--calls-db", "")
    try:
        server.ring(1000, 100)  # fills the pipe: from here on stderr blocks
        before = server.rss_mib()
        server.ring(4000, 60_000)  # 240 MB of ivrids the old request log kept
        grown = server.rss_mib() - before
        assert grown < 120, f"RSS grew {grown:.0f} MiB"
    finally:
        server.close()


def test_sigterm_with_stderr_blocked_writes_the_queued_calls_and_exits(tmp_path):
    db = tmp_path / "calls.sqlite"
    server = BlockedStderrServer(tmp_path, "--calls-db", db)
    try:
        server.ring(1500, 200)  # far more log than the pipe holds
        server.proc.send_signal(signal.SIGTERM)
        try:
            returncode = server.proc.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not stop the server within 30 s")
        assert returncode == 0
        assert len(recorded_ivrids(db)) == 1500
    finally:
        server.close()


# Databases of earlier versions --------------------------------------------------------


# The schema of the first versions (pop-up events only), as their databases hold it.
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
                    row["note"]) for ivrid, row in calls_by_ivrid(server).items()}
    assert rows == {"p1": ("missed", "", "", "handled", "rang back"),
                    "c1": ("outgoing", "ANSWER", "https://rec.example/c1.mp3", "", "")}
    server.stop()
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA user_version").fetchone()[0] >= 3
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)

OLD_COMMIT = "c71e0ec"  # the last version of schema 3


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
    ring = voicenter_fixture("ring-group.json")
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
    outgoing = voicenter_fixture("cdr-outgoing.json")
    queue = voicenter_fixture("cdr-queue.json")["cdr"]
    time.sleep(1.1)
    for record in (
            {**outgoing["click2call_leg2"], "time": israel_epoch(time.time())},
            {**queue, "ivruniqueid": "20260301104000queue", "status": "ABANDONE",
             "time": israel_epoch(now - 20), "caller": "0541234567"}):
        assert old.store_cdr(db, record)
    assert old.mark_call(db, "20260301104000queue", "", "call her after 4")


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
    rows = wait_until(lambda: calls_by_ivrid(server), what="the upgraded calls")
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
    true = dt.datetime.fromtimestamp(time.time() - 20, zoneinfo.ZoneInfo("Asia/Jerusalem")).replace(tzinfo=None)
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
    assert set(calls_by_ivrid(again)) == set(rows)
    assert "upgraded" not in again.log_text()
    connection = sqlite3.connect(db)
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()


def test_the_upgrade_reads_the_cdrs_numbers_in_the_configured_region(start_server, tmp_path):
    # A call back the old version stored as incoming is read again as outgoing: its
    # called number (the target, a local number of --region US) is read in that region.
    old = old_module(tmp_path)
    db = tmp_path / "state" / "calls.sqlite"
    outgoing = voicenter_fixture("cdr-outgoing.json")
    assert old.store_cdr(db, {**outgoing["click2call_leg2"], "target": "2125551234",
                              "time": israel_epoch(time.time())}, "US")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--region", "US",
                          "--timezone", "Asia/Jerusalem")
    rows = wait_until(lambda: calls_by_ivrid(server), what="the upgraded calls")
    back = rows["20240601abc123def456"]
    assert (back["direction"], back["called number"]) == ("outgoing", "2125551234")
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:  # the number the caller's page and the missed callers' list go by
        assert connection.execute("SELECT e164 FROM calls WHERE ivrid = ?", (
            back["ivrid"],)).fetchone() == ("+12125551234",)
    finally:
        connection.close()
    assert server.log_text().count("upgraded (schema 3 to 4)") == 1, server.log_text()
