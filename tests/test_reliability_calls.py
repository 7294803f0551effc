"""Issue 11 (call history, logs, token, /health): calls are kept through a locked,
deleted, replaced or unopenable database; /health says 503 when something is wrong;
a blocked stderr neither grows memory nor stops SIGTERM; the token file is refused
when others can read it and never followed through a symbolic link.

Everything runs the real server as a process and talks HTTP to it."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import popup_server as ps
from conftest import (MODULE, SAMPLE_CONTACTS, free_port, http_request, subprocess_env,
                      wait_until, write_contacts)


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


def health(server):
    resp = server.get("/health")
    return resp.status, resp.json()


# Call history ------------------------------------------------------------------

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
            health(server)), what="/health to say 503 while the database is locked")
        assert body["status"] == "error" and body["contacts_file"] == "ok", body
        assert body["calls"].startswith("cannot be recorded: calls.sqlite: database is "
                                        "locked"), body
        assert str(tmp_path) not in str(body), body
        time.sleep(1.5)  # longer than the writer's busy timeout: old code dropped them
    finally:
        blocker.rollback()
        blocker.close()
    wait_until(lambda: set(during) <= recorded_ivrids(db), what="the calls held meanwhile")
    wait_until(lambda: health(server)[0] == 200, what="/health back to 200")
    assert health(server)[1]["calls"] == "ok"
    log = server.log_text()
    assert log.count("database is locked") == 1, log  # when it started, not every try
    assert "recording calls in" in log and "again" in log


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
    assert health(server)[0] == 200
    server.stop()  # what is read now is the file alone, no connection's WAL beside it
    assert recorded_ivrids(db) == expected
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_database_that_cannot_be_opened_at_start_and_is_mended_loses_no_call(
        start_server, tmp_path):
    in_the_way = tmp_path / "calls"
    in_the_way.write_text("a file where the database's folder should be")
    db = in_the_way / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    while_broken = [f"broken-{n}" for n in range(15)]
    ring(server, while_broken)
    status, body = health(server)
    assert status == 503 and body["calls"].startswith("cannot be recorded: calls.sqlite: ")
    assert "15 call events waiting" in body["calls"], body
    time.sleep(2)  # the database is tried again meanwhile (and used to log every 50 ms)
    in_the_way.unlink()
    in_the_way.mkdir(exist_ok=True)  # the recorder may have made it first: it retries
    ring(server, ["mended"])
    wait_until(lambda: recorded_ivrids(db) == set(while_broken) | {"mended"},
               what="every call, those made while it was broken too")
    wait_until(lambda: health(server)[0] == 200, what="/health back to 200")
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
        wait_until(lambda: health(server)[0] == 503, what="/health 503 (read-only)")
        if as_root:
            subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)
        else:
            folder.chmod(0o755)
            db.chmod(0o644)
        wait_until(lambda: recorded_ivrids(db) == set(while_read_only),
                   what="the calls made while the database was read-only")
        wait_until(lambda: health(server)[0] == 200, what="/health back to 200")
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


# /health -------------------------------------------------------------------------

def test_health_is_503_while_the_contacts_file_fails_to_load(start_server, tmp_path):
    contacts = write_contacts(tmp_path / "book" / "contacts.csv",
                              [["Dana Secret", "Acme", "072-277-6772"]])
    server = start_server(contacts, "--reload-interval", "0.2")
    status, body = health(server)
    assert status == 200 and body["status"] == "ok", body
    assert (body["contacts_file"], body["calls"]) == ("ok", "off"), body
    contacts.write_text("name,company\nDana Secret,Acme\n", encoding="utf-8")  # no phone
    status, body = wait_until(lambda: (lambda h: h if h[0] == 503 else None)(
        health(server)), what="/health 503 after the file broke")
    assert body["status"] == "error" and body["contacts"] == 1, body
    assert body["contacts_file"].startswith(
        "fails to load; still serving the last good contacts, loaded at "), body
    assert body["last_error"].startswith("contacts.csv: "), body
    text = server.get("/health").text
    assert "Dana" not in text and str(tmp_path) not in text
    assert server.lookup("0722776772")["CLIENTNAME"] == "Dana Secret"
    write_contacts(contacts, [["Dana Secret", "Acme", "072-277-6772"]])
    wait_until(lambda: health(server)[0] == 200, what="/health 200 once mended")


# The request log and SIGTERM -------------------------------------------------------

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


# The token file --------------------------------------------------------------------

GOOD_TOKEN = "Qm9fR2l2ZVRoaXNUb2tlblRvVm9pY2VudGVy"


def start_with_token_file(tmp_path, token_file, timeout=20):
    """Start the server on the token file; (exit status or None if it served, log)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(MODULE), str(SAMPLE_CONTACTS), "--host", "127.0.0.1",
         "--port", str(port), "--calls-db", "", "--token-file", str(token_file),
         "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=subprocess_env())
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                http_request("GET", f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
    finally:
        served = proc.poll() is None
        if served:
            proc.terminate()
        output = proc.communicate(timeout=20)[0].decode("utf-8", "replace")
    return (None if served else proc.returncode), output


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_token_file_others_can_read_is_refused_and_chmod_600_keeps_the_url(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(GOOD_TOKEN + "\n")
    token_file.chmod(0o644)
    status, output = start_with_token_file(tmp_path, token_file)
    assert status == 2, output
    assert f"{token_file}: the token file can be read or changed by other users " \
           f"(mode 644)" in output and f"chmod 600 {token_file}" in output, output
    assert GOOD_TOKEN not in output
    token_file.chmod(0o600)
    status, output = start_with_token_file(tmp_path, token_file)
    assert status is None, output
    assert f"/popup?token={GOOD_TOKEN}" in output  # the URL Voicenter has still works
    assert token_file.read_text() == GOOD_TOKEN + "\n"


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_symbolic_link_in_place_of_the_token_file_is_never_followed(tmp_path,
                                                                      target_exists):
    victim = tmp_path / "victim.txt"
    if target_exists:
        victim.write_text("\n")  # empty: the old code wrote a token through the link
    link = tmp_path / ".popup-token"
    link.symlink_to(victim)
    status, output = start_with_token_file(tmp_path, link)
    assert status == 2, output
    assert str(link) in output and "symbolic link" in output, output
    assert victim.exists() == target_exists
    if target_exists:
        assert victim.read_text() == "\n"


def test_a_short_token_in_the_token_file_is_used_with_a_warning(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("abc123\n")
    token_file.chmod(0o600)
    status, output = start_with_token_file(tmp_path, token_file)
    assert status is None, output
    assert "/popup?token=abc123" in output
    assert f"WARNING the token from {token_file} has only 6 characters" in output, output

