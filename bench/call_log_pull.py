#!/usr/bin/env python3
"""The pop-up's speed while Voicenter's Call Log is pulled and stored (issue 25).

A stand-in for Voicenter's /hub/cdr/ (tests/voicenter_calllog_standin.py, in a process
of its own) holds a day of RECORDS records (12,000 by default: over one answer's
10,000, so the window is split). popup_server.py starts with a calls database and
--voicenter-code, every API of Voicenter's at the stand-in (it answers the extension
list too: nothing goes to Voicenter itself); the stand-in holds the first Call Log
request 5 s, then answers. Client
threads send /popup lookups (a keep-alive connection each, one request at a time)
the whole while; each answer's latency is kept with its time. Phases:

  pull   from the stand-in's first answer to the pull's end (/health's
         call_log_pulled_at set): the records parsed, mapped and stored
  rest   as long again after it, the same server at rest (the baseline)

Printed: p50 / p99 / max of each phase, their ratios (pull / rest), the pull's
duration and the records stored. Loopback only; every loop bounded in time.

    python bench/call_log_pull.py            # 12,000 records, 2 repeats
    python bench/call_log_pull.py --records 30000 --repeats 3
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import gen_contacts  # noqa: E402,F401  (its file is written by running it)

CODE = "bench-code-0000"
STANDIN = """
import sys, time
sys.path.insert(0, {tests!r})
from voicenter_calllog_standin import CallLogStandin, day_of_records
standin = CallLogStandin(day_of_records({records}, end=time.time() - 300, seed=1),
                         code={code!r}, hold_for=5.0)
standin.fail, standin.fail_first = "hang", 1
standin.start()
print(standin.url, flush=True)
sys.stdin.read()
standin.stop()
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port, path, timeout=10):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()


def load(port, phones, stop, samples):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    rng = random.Random(threading.get_ident())
    while not stop.is_set():
        phone = rng.choice(phones)
        started = time.perf_counter()
        connection.request("GET", f"/popup?phone={phone}")
        answer = connection.getresponse()
        answer.read()
        samples.append((time.monotonic(), time.perf_counter() - started, answer.status))
        time.sleep(0.002)  # a steady rate, not a saturating one: latency is the measure
    connection.close()


def figures(latencies):
    ordered = sorted(latencies)
    return {"n": len(ordered), "p50": statistics.median(ordered) * 1000,
            "p99": ordered[int(len(ordered) * 0.99) - 1] * 1000, "max": ordered[-1] * 1000}


def phones_of(contacts, count=2000):
    """The phone column of the first `count` rows of a gen_contacts.py file, as a
    query string holds them, and one number no contact has."""
    with open(contacts, encoding="utf-8") as handle:
        next(handle)
        phones = [line.split(",")[2].strip('"') for line, _ in zip(handle, range(count))]
    return [p.replace(" ", "%20").replace("+", "%2B") for p in phones] + ["0501112233"]


def run_once(args, contacts, phones, folder):
    """(pull figures, rest figures, the pull's seconds, records stored, failed answers)
    of one server pulling `args.records` records (args.server, args.clients)."""
    standin = subprocess.Popen(
        [sys.executable, "-c", STANDIN.format(tests=str(ROOT / "tests"),
                                               records=args.records, code=CODE)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    server = None
    try:
        url = standin.stdout.readline().strip()
        port = free_port()
        db = Path(folder) / f"calls-{port}.sqlite"
        server = subprocess.Popen(
            [sys.executable, str(args.server), str(contacts), "--host", "127.0.0.1",
             "--port", str(port), "--token", "", "--office-password", "",
             "--state-dir", str(Path(folder) / f"state-{port}"), "--calls-db", str(db),
             "--voicenter-code", CODE, "--voicenter-api", url, "--voicenter-monitor", url,
             "--call-log-every", "3600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                get(port, "/health", 1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
        asked = time.monotonic()
        samples, stop = [], threading.Event()
        clients = [threading.Thread(target=load, args=(port, phones, stop, samples))
                   for _ in range(args.clients)]
        for client in clients:
            client.start()
        done = None
        while time.monotonic() < asked + 300:
            body = json.loads(get(port, "/health"))
            if body.get("call_log_pulled_at"):
                done = time.monotonic()
                break
            time.sleep(0.2)
        if done is None:
            raise SystemExit("the pull did not end within 300 s")
        released = asked + 5.0
        pull_seconds = done - released
        time.sleep(max(pull_seconds, 5.0) + 1.0)
        stop.set()
        for client in clients:
            client.join(timeout=15)
        pull = [s[1] for s in samples if released <= s[0] <= done]
        rest = [s[1] for s in samples if done + 1.0 <= s[0] <= done + 1.0 + max(pull_seconds, 5.0)]
        failed = sum(1 for s in samples if s[2] != 200)
        with sqlite3.connect(db) as connection:
            stored = connection.execute("SELECT count(*) FROM cdrs").fetchone()[0]
        return figures(pull), figures(rest), pull_seconds, stored, failed
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        standin.stdin.close()
        standin.wait(timeout=15)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=12_000)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--server", type=Path, default=ROOT / "popup_server.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="popup-call-log-") as folder:
        contacts = Path(folder) / "contacts.csv"
        subprocess.run([sys.executable, str(HERE / "gen_contacts.py"), str(args.contacts),
                        str(contacts)], check=True, stdout=subprocess.DEVNULL)
        phones = phones_of(contacts)
        ratios = []
        for repeat in range(args.repeats):
            pull, rest, seconds, stored, failed = run_once(args, contacts, phones, folder)
            print(f"repeat {repeat + 1}: pull of {stored} records took {seconds:.1f} s; "
                  f"failed answers {failed}")
            for name, phase in (("pull", pull), ("rest", rest)):
                print(f"  {name:4}  n={phase['n']:6}  p50={phase['p50']:.2f} ms  "
                      f"p99={phase['p99']:.2f} ms  max={phase['max']:.1f} ms")
            ratios.append((pull["p50"] / rest["p50"], pull["p99"] / rest["p99"]))
            print(f"  ratio pull/rest: p50 {ratios[-1][0]:.2f}x  p99 {ratios[-1][1]:.2f}x")
        print("median ratio pull/rest: p50 %.2fx, p99 %.2fx" % (
            statistics.median(r[0] for r in ratios), statistics.median(r[1] for r in ratios)))


if __name__ == "__main__":
    main()
