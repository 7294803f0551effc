#!/usr/bin/env python3
"""Damaged and huge contacts files swapped in under a serving server (issue 11, items
2 and 5).

usage: python bench/fault_load.py [--sizes 64,1024] [--kinds phone,name,line]
                                 [--contacts 20000] [--skip huge,settle]

Parts:
  huge     a file with one huge cell (MiB given by --sizes: a phone cell of digits, a
           name cell, and a line of short cells without a line break) replaces the file
           a running server serves. Printed for each: peak RSS during the load vs RSS
           serving the previous file, lookup p50/p99 (ms) during the load vs at rest,
           whether the server survived, served the previous contacts throughout and
           the new file's other contacts afterwards (or refused it), and what --check
           says of the file (and its peak RSS).
  settle   a writer rewrites the file in place, pausing mid-row for 0.5 to 4 s: is
           the cut file ever served? And how soon after an atomic replace the new
           contacts are served.
Everything runs on 127.0.0.1 with the real server as a process; its files live in a
temporary folder that is deleted at the end (one huge file at a time on disk). Every
wait is bounded; every process started is ended.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gen_contacts  # noqa: E402
import run as bench  # noqa: E402  (helpers: processes, /proc figures, percentiles)

SERVER = HERE.parent / "popup_server.py"
MIB = 1024 * 1024
OLD_NUMBER, OLD_NAME = "0501111111", "Old Known"
NEW_NUMBER, NEW_NAME = "0502222222", "New Known"
LOAD_TIMEOUT = 300  # seconds a load may take before the case is called failed


def say(*a):
    print(*a, flush=True)


class Lookups(threading.Thread):
    """One keep-alive client asking for the previous file's known contact every 5 ms;
    records (time, latency s, answer name)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.records = port, threading.Event(), []

    def run(self):
        conn = None
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", f"/popup?phone={OLD_NUMBER}")
                name = json.loads(conn.getresponse().read())["CLIENTNAME"]
            except (OSError, ValueError, http.client.HTTPException):
                name, conn = None, None
            self.records.append((t0, time.perf_counter() - t0, name))
            time.sleep(0.005)

    def between(self, start, end):
        return [r for r in self.records if start <= r[0] < end]


def lookup(port, number):
    try:
        status, body = bench.http_get(port, f"/popup?phone={number}", timeout=10)
        return json.loads(body) if status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def write_previous(path, contacts):
    gen_contacts.generate(contacts, path, 7)
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(f"{OLD_NAME},Old Co,{OLD_NUMBER},,\r\n")


def write_huge(path, kind, size):
    """A contacts file whose third row holds one cell of `size` bytes."""
    chunk = {"phone": b"1234567890", "name": b"Huge Name ", "line": b"1,"}[kind] * (MIB // 10)
    with open(path, "wb") as f:
        f.write(b"name,company,phone,mobile,url\r\n")
        f.write(f"{NEW_NAME},New Co,{NEW_NUMBER},,\r\n".encode())
        f.write({"phone": b"Huge Phone,Co,", "name": b"", "line": b"Huge Line,Co,"}[kind])
        written = 0
        while written < size:
            part = chunk[:size - written]
            f.write(part)
            written += len(part)
        if kind == "name":
            f.write(b",Co,0503333333,,\r\n")
        elif kind == "phone":
            f.write(b",,\r\nAfter Huge,Co,0504444444,,\r\n")
        # "line": no line break at all, to the end of the file


def check_of(path):
    """(exit status, the lines of --check about the huge cell, its peak RSS in MiB)."""
    p = subprocess.Popen([sys.executable, str(SERVER), str(path), "--check"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=bench.clean_env())
    out = p.stdout.read()  # a few lines: the pipe never fills
    p.stdout.close()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    keep = [line.strip() for line in out.decode(errors="replace").splitlines()
            if line.startswith(("cells too long", "  row 3,", "popup_server:"))]
    return p.returncode, keep, usage.ru_maxrss / 1024


def part_huge(args, procs, work):
    say(f"\n== Huge cells: a file with one huge cell replaces a served file "
        f"({args.contacts:,} contacts) ==")
    previous = work / "previous.csv"
    write_previous(previous, args.contacts)
    served = work / "contacts.csv"
    rows = []
    for size_mib in [int(s) for s in args.sizes.split(",") if s]:
        for kind in args.kinds.split(","):
            shutil.copyfile(previous, served)  # a fresh server on the previous file
            srv, port, _, _ = bench.start_server(procs, SERVER, served,
                                                 ("--reload-interval", "0.5"))
            row = one_huge_case(procs, srv, port, served, work, kind, size_mib)
            procs.stop(srv)
            rows.append(row)
            say(f"  {size_mib:>5} MiB {kind:<5}: " + ", ".join(
                f"{k} {v}" for k, v in row.items() if k not in ("size", "kind", "check")))
            say(f"        --check: {row['check']}")
    return rows


READ = re.compile(r"(?:reloaded in|reload failed after) ([\d.]+) s")


def one_huge_case(procs, srv, port, served, work, kind, size_mib):
    client = Lookups(port)
    client.start()
    time.sleep(5)  # at rest
    rest_end = time.perf_counter()
    rss_rest = bench.proc_status(srv.pid)["VmRSS"]
    with open(f"/proc/{srv.pid}/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS, so VmHWM is the peak from here on
    huge = work / "huge.csv"
    write_huge(huge, kind, size_mib * MIB)
    log = bench.LogWatch(srv)
    log.new_text()
    os.replace(huge, served)
    swapped = time.perf_counter()
    started = seconds = None
    outcome = "no outcome"
    while time.perf_counter() - swapped < LOAD_TIMEOUT:
        if srv.poll() is not None:
            outcome = f"server died (status {srv.returncode})"
            break
        text = log.new_text()
        if started is None and bench.LogWatch.RELOADING.search(text):
            started = time.perf_counter()
        if READ.search(text):
            seconds = float(READ.search(text).group(1))
            outcome = "new file served" if "reloaded in" in text else "refused: " + next(
                line.split(": ", 2)[-1] for line in text.splitlines() if "reload failed" in line)
            break
        time.sleep(0.02)
    time.sleep(1)
    client.stop.set()
    client.join(35)
    alive = srv.poll() is None
    peak = bench.proc_status(srv.pid)["VmHWM"] if alive else float("nan")
    # The load: from the server saying it reads the file, for as long as it says it took.
    load_end = (started or swapped) + (seconds or 0)
    rest = [r[1] * 1000 for r in client.between(rest_end - 5, rest_end)]
    during = [r[1] * 1000 for r in client.between(started or swapped, load_end)]
    failed = sum(1 for r in client.records if r[2] is None)
    previous_kept = all(r[2] == OLD_NAME for r in client.records
                        if r[0] + r[1] < load_end - 0.1)  # what it answered before the swap
    if outcome == "new file served":
        new = lookup(port, NEW_NUMBER)
        outcome += ", its other contacts found" if new and new.get("CLIENTNAME") == NEW_NAME \
            else ", its other contacts NOT found"
    status, lines, check_rss = check_of(served)
    served.unlink()  # one huge file on disk at a time
    p99_rest, p99_load = bench.pct(rest, 99), bench.pct(during, 99)
    return {
        "size": size_mib, "kind": kind,
        "load s": f"{seconds or float('nan'):.1f}",
        "peak RSS / RSS serving before": f"{peak / rss_rest:.2f} ({peak:.0f} / {rss_rest:.0f} MiB)",
        "p50 ms load/rest": f"{bench.pct(during, 50):.2f}/{bench.pct(rest, 50):.2f}",
        "p99 ms load/rest": f"{p99_load:.2f}/{p99_rest:.2f} ({p99_load / p99_rest:.1f}x)",
        "lookups during load": len(during),
        "failed": failed,
        "previous contacts served until the swap": previous_kept,
        "server alive": alive,
        "outcome": outcome,
        "check": f"exit {status}, peak RSS {check_rss:.0f} MiB: " + " | ".join(lines),
    }


def part_settle(args, procs, work):
    say("\n== Settle: a writer rewrites the file in place, pausing mid-row "
        "(--reload-interval 1, the default) ==")
    path = work / "settle.csv"
    old = f"name,company,phone\n{OLD_NAME},Old Co,{OLD_NUMBER}\n"
    new = f"name,company,phone\n{NEW_NAME},New Co,{NEW_NUMBER}\nCarol Cut,Co,0503333333\n"
    cut = new.index("Carol C") + len("Carol C")
    path.write_text(old)
    srv, port, _, _ = bench.start_server(procs, SERVER, path, ("--reload-interval", "1"))
    results = []
    for pause in [float(p) for p in args.pauses.split(",") if p]:
        path.write_text(old)  # back to the old file, served again
        deadline = time.monotonic() + 30
        while (lookup(port, OLD_NUMBER) or {}).get("CLIENTNAME") != OLD_NAME:
            if time.monotonic() > deadline:
                raise RuntimeError("the old file was not served again")
            time.sleep(0.1)
        with open(path, "r+") as f:
            f.seek(0)
            f.truncate()
            f.write(new[:cut])
            f.flush()
            started, cut_served = time.monotonic(), False
            while time.monotonic() - started < pause:
                cut_served |= (lookup(port, NEW_NUMBER) or {}).get("TOTAL", 0) > 0
                time.sleep(0.05)
            f.write(new[cut:])
        results.append((pause, cut_served))
        say(f"  pause {pause:>4.1f} s: the cut file was {'SERVED' if cut_served else 'never served'}")
    # How soon an atomic replace is served.
    delays = []
    for i in range(args.replace_repeats):
        path.write_text(old)
        deadline = time.monotonic() + 30
        while (lookup(port, OLD_NUMBER) or {}).get("CLIENTNAME") != OLD_NAME:
            if time.monotonic() > deadline:
                raise RuntimeError("the old file was not served again")
            time.sleep(0.1)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(new)
        os.replace(tmp, path)
        t0 = time.monotonic()
        while (lookup(port, NEW_NUMBER) or {}).get("CLIENTNAME") != NEW_NAME:
            if time.monotonic() - t0 > 30:
                break
            time.sleep(0.02)
        delays.append(time.monotonic() - t0)
    procs.stop(srv)
    say(f"  an atomic replace is served {min(delays):.2f}-{max(delays):.2f} s after it "
        f"(median {bench.med(delays):.2f} s, {len(delays)} times)")
    return results, delays


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,1024", help="huge cell sizes, MiB (default 64,1024)")
    ap.add_argument("--kinds", default="phone,name,line",
                    help="huge cells: a phone cell, a name cell, a line of short cells")
    ap.add_argument("--contacts", type=int, default=20000,
                    help="contacts in the file served before (default 20000)")
    ap.add_argument("--pauses", default="0.5,1,2,2.5,4",
                    help="writer pauses, seconds (default 0.5,1,2,2.5,4)")
    ap.add_argument("--replace-repeats", type=int, default=5)
    ap.add_argument("--skip", default="", help="parts to leave out: huge,settle")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory(prefix="popup-fault-") as tmp:
        work = Path(tmp)
        procs = bench.Procs(work)
        try:
            if "huge" not in skip:
                part_huge(args, procs, work)
            if "settle" not in skip:
                part_settle(args, procs, work)
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
