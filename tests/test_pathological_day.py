"""A day where one number called thousands of times (an auto-dialler, a busy
switchboard): the calls page and /calls.csv count each number's tries with one grouped
query, the CSV streams from its first row and stops when its client goes away."""
import csv
import datetime as dt
import io
import random
import re
import socket
import sqlite3
import time

import pytest

import popup_server as ps
from conftest import SAMPLE_CONTACTS, http_request, wait_until

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


def csv_rows(body):
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
    from_csv = {row["ivrid"]: int(row["tries"]) for row in csv_rows(
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
    rows = csv_rows(resp.body)
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
