"""A big day on the calls page (issue 14 item 9): a day of 500,000 pop-up events
(~167,000 calls from 40,000 numbers, a quarter missed) plus 20,000 CDRs, then:

  before      the code before issue 14 (git REV, default the commit before it): the
              day's calls rebuilt in Python from every event (what its page did)
  page        what the page asks now: day_page() (counts, 500 missed callers, 500
              calls)
  csv         the whole day's CSV streamed (calls_csv_lines over iter_calls_of_day)
  http page   the calls page rendered by the real server (loopback, login off): GET /
              (first pages) and a far page of both lists, 3 times each, and GET
              /calls.csv; the server's peak RSS over its RSS once started

Each function measurement runs in a fresh process: seconds, and peak RSS over the RSS
once imported ("extra"). Ratios are against `before`, measured in the same run.

A pathological day (issue 22), `--one-number N,...`: a day where one number called N
times (an auto-dialler, a busy switchboard), each through the real server on loopback
(login off): GET / (the calls page, 3 times), GET /calls.csv (time to its first byte
and to its last), and the server's peak RSS. `--before-rev REV` measures the same
through REV's server, for N up to `--before-max` (its CSV cost N x N: 150 s at 20,000).

    python bench/calls_day.py                  # ~2 minutes
    python bench/calls_day.py --events 100000 --before-rev 7876719
    python bench/calls_day.py --one-number 1000,5000,20000,50000 --before-rev c71e0ec
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = HERE.parent / "popup_server.py"
CONTACTS = HERE.parent / "data" / "contacts.csv"
BEFORE_REV = "7876719"  # the last commit before issue 14's calls data

MEASURE = r"""
import datetime as dt, json, sys, time, importlib.util
spec = importlib.util.spec_from_file_location("popup_server", sys.argv[1])
ps = importlib.util.module_from_spec(spec); sys.modules["popup_server"] = ps
spec.loader.exec_module(ps)
db, what = sys.argv[2], sys.argv[3]
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")  # peak RSS from here on (Linux)
day = dt.date.today()
base = status("VmRSS:"); started = time.perf_counter()
if what == "before":
    size = len(ps.calls_of_day(db, day))
elif what == "page":
    page = ps.day_page(db, day, size=500)
    size = len(page.calls) + len(page.callers)
elif what == "csv":
    size = 0
    for line in ps.calls_csv_lines(ps.iter_calls_of_day(db, day)):
        size += len(line)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "extra_mib": status("VmHWM:") - base,
                  "size": size}))
"""


def build(db, events, seed=14):
    sys.path.insert(0, str(MODULE.parent))
    import popup_server as ps
    rng = random.Random(seed)
    start = dt.datetime.combine(dt.date.today(), dt.time()).astimezone().timestamp()
    span = min(time.time() - start - 60, 86400 - 60)  # the day so far
    numbers = [f"05{rng.randrange(10**8):08d}" for _ in range(40_000)]
    connection = sqlite3.connect(db, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    ps._prepare_schema(connection)
    rows, call = [], 0
    while len(rows) < events:
        call += 1
        ivrid = f"{call:012d}bench"
        phone = rng.choice(numbers)
        at = start + rng.random() * span
        e164 = "+972" + phone[1:]
        base = (phone, e164, "0722776773")
        rows.append((ivrid, "ringing", at, *base, "", "Incoming", 0, "", "", 0, ""))
        if rng.random() < 0.75:
            rows.append((ivrid, "answer", at + 5, *base, "SIP201", "Incoming", 1, "", "",
                         0, ""))
        rows.append((ivrid, "hangup", at + 60, *base, "", "Incoming", 0, "", "", 0, ""))
    started = time.perf_counter()
    connection.execute("BEGIN")
    connection.executemany("INSERT OR IGNORE INTO events VALUES "
                           "(?,?,?,?,?,?,?,?,?,?,?,?,?)", rows[:events])
    connection.execute("COMMIT")
    insert = time.perf_counter() - started
    for n in range(20_000):
        ps.cdr_row  # the real mapping of a CDR to its columns
        fields = {"ivruniqueid": f"{rng.randrange(1, call):012d}bench" if n % 2 else
                  f"cdr-only-{n}", "caller": rng.choice(numbers),
                  "target": rng.choice(numbers), "status": rng.choice(["ANSWER", "ABANDONE"]),
                  "type": "Outgoing Call" if n % 5 == 0 else "Incoming Call",
                  "time": start + rng.random() * span, "duration": 30}
        connection.execute("INSERT OR IGNORE INTO cdrs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           ps.cdr_row(fields, "IL", time.time()))
    connection.close()
    return call, insert


def build_one_number(db, calls, seed=22):
    """A day of `calls` calls from one number (ringing, answered or not, hung up), and
    the same number of calls from others around them."""
    sys.path.insert(0, str(MODULE.parent))
    import popup_server as ps
    rng = random.Random(seed)
    start = dt.datetime.combine(dt.date.today(), dt.time()).astimezone().timestamp()
    span = min(time.time() - start - 120, 86400 - 120)
    connection = sqlite3.connect(db, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    ps._prepare_schema(connection)
    rows = []
    for call in range(2 * calls):
        phone = "0501234567" if call % 2 == 0 else f"05{rng.randrange(10**8):08d}"
        base = (phone, "+972" + phone[1:], "0722776773")
        at = start + rng.random() * span
        ivrid = f"{call:012d}dialler"
        rows.append((ivrid, "ringing", at, *base, "", "Incoming", 0, "", "", 0, ""))
        if rng.random() < 0.3:
            rows.append((ivrid, "answer", at + 5, *base, "SIP201", "Incoming", 1, "", "",
                         0, ""))
        rows.append((ivrid, "hangup", at + 30, *base, "", "Incoming", 0, "", "", 0, ""))
    connection.execute("BEGIN")
    connection.executemany("INSERT OR IGNORE INTO events VALUES "
                           "(?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    connection.execute("COMMIT")
    connection.close()


def start_server(module, db, folder):
    """The server of `module` on a free loopback port, ready: (process, port)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(module), str(CONTACTS), "--host", "127.0.0.1", "--port",
         str(port), "--token", "", "--calls-db", str(db), "--office-password", "",
         "--state-dir", str(folder / f"state-{port}")], cwd=folder,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            http_get(port, "/health")
            return server, port
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the server did not start")
            time.sleep(0.2)


def csv_times(port, timeout):
    """GET /calls.csv: (seconds to the first byte of its body, to its end, rows)."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("GET", "/calls.csv")
    response = connection.getresponse()
    response.read(1)
    first = time.perf_counter() - started
    rows = 1 + response.read().count(b"\n")
    connection.close()
    return first, time.perf_counter() - started, rows


def one_number(args):
    sizes = [int(size) for size in args.one_number.split(",")]
    modules = [("now", MODULE)]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if args.before_rev_given:
            before = folder / "before.py"
            before.write_bytes(subprocess.run(
                ["git", "-C", str(MODULE.parent), "show",
                 f"{args.before_rev}:popup_server.py"], capture_output=True,
                check=True).stdout)
            modules.append((f"before ({args.before_rev})", before))
        print(f"{'calls of one number':>20s} {'server':>18s} {'GET / (3 times)':>24s} "
              f"{'CSV first byte':>15s} {'CSV whole':>10s} {'CSV rows':>9s} "
              "peak RSS after the pages/the CSV")
        for size in sizes:
            db = folder / f"day-{size}.sqlite"
            build_one_number(db, size)
            for label, module in modules:
                if module is not MODULE and size > args.before_max:
                    continue
                server, port = start_server(module, db, folder)
                try:
                    idle = server_rss_mib(server.pid)
                    pages = [http_get(port, "/")[2] for _ in range(3)]
                    after_pages = server_rss_mib(server.pid) - idle
                    try:
                        first, whole, rows = csv_times(port, timeout=args.csv_timeout)
                    except TimeoutError:
                        print(f"{size:20,d} {label:>18s} "
                              f"{' / '.join(f'{t:.2f}' for t in pages):>22s} s "
                              f"  no CSV within --csv-timeout ({args.csv_timeout:g} s)")
                        continue
                    print(f"{size:20,d} {label:>18s} "
                          f"{' / '.join(f'{t:.2f}' for t in pages):>22s} s "
                          f"{first:13.2f} s {whole:8.2f} s {rows - 2:9,d} "
                          f"{after_pages:+4.0f}/{server_rss_mib(server.pid) - idle:+4.0f} MiB")
                finally:
                    server.terminate()
                    server.wait(timeout=30)


def measure(module, db, what):
    out = subprocess.run([sys.executable, "-c", MEASURE, str(module), str(db), what],
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port, path):
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, len(body), time.perf_counter() - started


def server_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--before-rev", default=None)
    parser.add_argument("--one-number", metavar="N,...",
                        help="the pathological day: one number calling N times")
    parser.add_argument("--before-max", type=int, default=5000,
                        help="--one-number: the largest N measured through --before-rev")
    parser.add_argument("--csv-timeout", type=float, default=600)
    args = parser.parse_args()
    args.before_rev_given = args.before_rev is not None
    args.before_rev = args.before_rev or BEFORE_REV
    if args.one_number:
        one_number(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        db = folder / "calls.sqlite"
        calls, insert = build(db, args.events)
        print(f"{args.events:,} events ({calls:,} calls) + 20,000 CDRs; inserting the "
              f"events (triggers summing up calls): {insert:.1f} s")
        before = folder / "before.py"
        before.write_bytes(subprocess.run(
            ["git", "-C", str(MODULE.parent), "show", f"{args.before_rev}:popup_server.py"],
            capture_output=True, check=True).stdout)
        results = {"before": measure(before, db, "before"),
                   "page": measure(MODULE, db, "page"), "csv": measure(MODULE, db, "csv")}
        base = results["before"]
        for what, result in results.items():
            print(f"{what:7s} {result['seconds']:7.2f} s ({result['seconds'] / base['seconds']:5.2f}x)"
                  f"  {result['extra_mib']:7.1f} MiB extra ({result['extra_mib'] / base['extra_mib']:5.3f}x)")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, str(MODULE), str(CONTACTS), "--host", "127.0.0.1", "--port",
             str(port), "--token", "", "--calls-db", str(db), "--office-password", "",
             "--state-dir", str(folder / "state")], cwd=folder,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    http_get(port, "/health")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not start")
                    time.sleep(0.2)
            idle = server_rss_mib(server.pid)
            far = f"/?calls={calls // 2}&callers=10000"
            for path in ("/", far, "/calls.csv"):
                times = []
                for _ in range(1 if path == "/calls.csv" else 3):
                    status, size, seconds = http_get(port, path)
                    times.append(seconds)
                print(f"GET {path:28s} {status} {size / 2**20:6.1f} MiB in "
                      f"{' / '.join(f'{t:.2f}' for t in times)} s; server peak RSS "
                      f"+{server_rss_mib(server.pid) - idle:.0f} MiB")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
