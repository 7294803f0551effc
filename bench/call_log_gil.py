#!/usr/bin/env python3
"""How long a request's thread waits for the GIL while a Call Log pull is stored.

A CallLogPuller (the server's own class, imported from --server) pulls RECORDS
records, in this process, from the Call Log stand-in (tests/voicenter_calllog_standin.py)
run in a process of its own; meanwhile a thread sleeps 1 ms over and over and notes
how late it wakes: what a pop-up's thread waits each time it takes the GIL back (after
reading its request, after each write). Then the same for 5 s at rest. The switch
interval is the server's own (SWITCH_INTERVAL, set by tune_for_serving()) unless
--switch names one; with a module that has none, Python's default (5 ms).

Printed: the pull's duration, and the lateness's p50 / p99 / p99.9 / max during the
pull and at rest, in ms. Loopback only.

    python bench/call_log_gil.py
    python bench/call_log_gil.py --server OLD/popup_server.py --switch 0.005
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STANDIN = """
import sys, time
sys.path.insert(0, {tests!r})
from voicenter_calllog_standin import CallLogStandin, day_of_records
standin = CallLogStandin(day_of_records({records}, end=time.time() - 300, seed=1),
                         code="bench-code-0000").start()
print(standin.url, flush=True)
sys.stdin.read()
standin.stop()
"""


def lateness(work):
    """(seconds `work()` took, sorted wake-up lateness in ms meanwhile)."""
    late, stop = [], threading.Event()

    def sleeper():
        while not stop.is_set():
            started = time.perf_counter()
            time.sleep(0.001)
            late.append((time.perf_counter() - started - 0.001) * 1000)
    thread = threading.Thread(target=sleeper)
    thread.start()
    started = time.perf_counter()
    try:
        work()
    finally:
        took = time.perf_counter() - started
        stop.set()
        thread.join()
    return took, sorted(late)


def figures(late):
    def at(share):
        return late[min(len(late) - 1, int(len(late) * share))]
    return (f"p50 {at(0.5):.2f}  p99 {at(0.99):.2f}  p99.9 {at(0.999):.1f}  "
            f"max {late[-1]:.1f} ms (n={len(late)})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=12_000)
    parser.add_argument("--server", type=Path, default=ROOT / "popup_server.py")
    parser.add_argument("--switch", type=float, help="seconds (default: the server's)")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("popup_server", args.server)
    server = importlib.util.module_from_spec(spec)
    sys.modules["popup_server"] = server
    spec.loader.exec_module(server)
    switch = args.switch or getattr(server, "SWITCH_INTERVAL", 0.005)
    sys.setswitchinterval(switch)
    standin = subprocess.Popen(
        [sys.executable, "-c", STANDIN.format(tests=str(ROOT / "tests"),
                                               records=args.records)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = standin.stdout.readline().strip()
        with tempfile.TemporaryDirectory(prefix="popup-call-log-gil-") as folder:
            db = Path(folder) / "calls.sqlite"
            config = server.parse_config(
                [str(ROOT / "data" / "contacts.csv"), "--calls-db", str(db),
                 "--voicenter-code", "bench-code-0000", "--voicenter-api", url,
                 "--voicenter-monitor", url], {})
            puller = server.CallLogPuller(config, db, rate=(10 ** 6, 60.0))
            took, during = lateness(puller.pull)
            _, rest = lateness(lambda: time.sleep(5))
        print(f"switch interval {switch * 1000:g} ms; pull of {args.records} records "
              f"took {took:.1f} s (trouble: {puller.trouble})")
        print(f"  lateness during the pull: {figures(during)}")
        print(f"  lateness at rest:         {figures(rest)}")
    finally:
        standin.stdin.close()
        standin.wait(timeout=15)


if __name__ == "__main__":
    main()
