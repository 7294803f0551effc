"""Faults against call history and the logs, measured on the real server (issue 11,
items 3, 4 and 6).

Each scenario starts `popup_server.py` as a process on a free loopback port with a
calls database in a temporary folder, sends pop-up requests (one ivrid each) at a
steady rate while the fault happens, stops the server with SIGTERM and counts the
ivrids in the database against the ones answered:

  lock       another process holds the database's write lock for 10 s (and how long
             each pop-up took meanwhile: the median and the worst)
  deleted    the database (and its -wal, -shm) deleted mid-run
  replaced   a new, empty database moved over it mid-run
  readonly   the database on a read-only mount at start, made writable 4 s later
  full       the database's file system (a tmpfs) full for 10 s, then freed
  kill9      kill -9 right after the last answer (what it cannot keep)
  stderr     stderr into a pipe nobody reads; requests with 60 KB ivrids: RSS over
             time, then how long SIGTERM takes and whether the queued calls are written
             (and, as a yardstick, the same with stderr to a file: "free")

Loopback only, every loop bounded. `readonly` and `full` mount a tmpfs and need root
(skipped otherwise). `--server OLD.py` measures another copy of the module (e.g. the
code before the fix: `git show REV:popup_server.py > /tmp/old/popup_server.py`).

    python bench/fault_calls.py                      # every scenario, ~3 minutes
    python bench/fault_calls.py --only lock,stderr
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import signal
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
MODULE = HERE.parent / "popup_server.py"
sys.path.insert(0, str(MODULE.parent))
from popup_server import CALLS_SCHEMA  # noqa: E402  (the calls table, as the server makes it)
CONTACTS = HERE.parent / "data" / "contacts.csv"
SCENARIOS = ("lock", "deleted", "replaced", "readonly", "full", "kill9", "stderr")
STOP_WAIT = 30.0  # seconds SIGTERM is given before kill -9


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, module, folder, db, stderr=None):
        self.port = free_port()
        self.log_path = folder / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(module), str(CONTACTS), "--host", "127.0.0.1",
             "--port", str(self.port), "--token", "", "--calls-db", str(db)],
            cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=stderr if stderr is not None else open(self.log_path, "wb"),
            # its state folder (page secret, office password) in the run's own folder
            env={**os.environ, "XDG_DATA_HOME": str(folder / "data-home")})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/health")
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the server did not start")

    def stop(self):
        """SIGTERM; seconds it took to exit (None: it did not within STOP_WAIT)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_WAIT)
            return time.monotonic() - started
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            return int(status.read().split("VmRSS:")[1].split()[0]) / 1024

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Caller(threading.Thread):
    """Sends GET /popup?ivrid=... at `rate` per second for `seconds`; keeps the
    ivrids answered 200, when each was sent and how long its answer took."""

    def __init__(self, port, rate, seconds, prefix, ivrid_padding=""):
        super().__init__(daemon=True)
        self.port, self.rate, self.seconds = port, rate, seconds
        self.prefix, self.padding = prefix, ivrid_padding
        self.answered = []  # (monotonic time sent, ivrid)
        self.took = []  # seconds to each 200
        self.failed = 0

    def run(self):
        connection = None
        started = time.monotonic()
        for n in range(int(self.rate * self.seconds)):
            time.sleep(max(0.0, started + n / self.rate - time.monotonic()))
            ivrid = f"{self.prefix}{n}{self.padding}"
            sent = time.monotonic()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                                            timeout=10)
                connection.request("GET", "/popup?phone=0722776772&statusCall=Ringing"
                                          f"&ivrid={ivrid}")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.answered.append((sent, ivrid))
                    self.took.append(time.monotonic() - sent)
                else:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                connection = None


def recorded(db):
    if not db.exists():
        return set()
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as c:
        try:
            return {row[0] for row in c.execute("SELECT ivrid FROM events")}
        except sqlite3.OperationalError:
            return set()


# How the server counts call events it lost, in this version and the one before.
_LOSS_LINES = re.compile(r"(\d+) call events were (?:dropped|not recorded)"
                         r"|could not record (\d+) call events|could not record (a) call event")


def counted_losses(log):
    """How many lost call events the server's log counts."""
    return sum(int(number) if number.isdigit() else 1
               for match in _LOSS_LINES.finditer(log) for number in match.groups() if number)


def report(name, answered, kept, stop_seconds, log, note="", took=None):
    lost = len(answered - kept)
    stopped = "did not exit" if stop_seconds is None else f"exit {stop_seconds:.1f} s"
    print(f"{name:<10} calls answered {len(answered):>6,}  lost {lost:>6,}  "
          f"lost by the log's count {counted_losses(log):>6,}  SIGTERM: {stopped}  {note}")
    if took:
        print(f"{'':<10} pop-ups answered in: median {statistics.median(took) * 1000:.1f} ms,"
              f" worst {max(took) * 1000:.1f} ms")


def finish(name, server, db, answered, note, settle=3.0, check=None, took=None):
    """Give the writer `settle` s for its next try, stop the server, count; `check()`
    adds to the note what it finds in the database then; `took`, the seconds each
    pop-up took, adds their median and worst."""
    time.sleep(settle)
    seconds = server.stop()
    report(name, answered, recorded(db), seconds, server.log(),
           note + (check() if check else ""), took)


@contextlib.contextmanager
def tmpfs(folder, size):
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                   check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def make_database(db):
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(CALLS_SCHEMA)


def read_only_with_its_wal(db, source_folder):
    """A calls database on a read-only mount, its -wal and -shm beside it (copied while
    open), as one left read-only by a backup tool: SQLite opens it, only writes fail."""
    source_folder.mkdir()
    source = source_folder / db.name
    make_database(source)
    with contextlib.closing(sqlite3.connect(source)) as connection:
        connection.execute("SELECT COUNT(*) FROM events").fetchone()
        for path in source_folder.iterdir():
            shutil.copy(path, db.parent / path.name)
    subprocess.run(["mount", "-o", "remount,ro", str(db.parent)], check=True)


def run_calls_during(server, rate, seconds, fault_at, fault, prefix):
    """Calls for `seconds`; `fault()` runs `fault_at` s in; (caller, when it was done)."""
    caller = Caller(server.port, rate, seconds, prefix)
    caller.start()
    time.sleep(fault_at)
    fault()
    fault_time = time.monotonic()  # a call sent after this met the fault
    caller.join(seconds + 60)
    return caller, fault_time


def scenario_lock(module, folder, rate):
    db = folder / "calls.sqlite"
    server = Server(module, folder, db)
    holder = None

    def lock():
        nonlocal holder
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys, time\n"
             f"c = sqlite3.connect({str(db)!r}, isolation_level=None, timeout=10)\n"
             "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True)\n"
             "time.sleep(10); c.execute('ROLLBACK')"], stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
    caller, _ = run_calls_during(server, rate, 14, 1, lock, "lock-")
    holder.wait(30)
    finish("lock", server, db, {i for _, i in caller.answered},
           "(another process held the write lock 10 s)", took=caller.took)


def scenario_moved(module, folder, rate, how):
    db = folder / "calls.sqlite"
    server = Server(module, folder, db)

    def fault():
        if how == "deleted":
            for path in folder.glob("calls.sqlite*"):
                path.unlink()
        else:  # by another calls database, holding a call of its own
            other = folder / "other.sqlite"
            make_database(other)
            with contextlib.closing(sqlite3.connect(other)) as connection, connection:
                connection.execute("INSERT INTO events VALUES ('its-own', 'ringing', 0, "
                                   "'', '', '', '', '', 0, '', '', 0, '')")
            os.replace(other, db)

    def check():
        if how == "deleted":
            return ""
        with contextlib.closing(sqlite3.connect(db)) as connection:
            intact = connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kept = "its-own" in recorded(db)
        return (f"; the new file {'kept' if kept else 'LOST'} its own call, integrity "
                f"{'ok' if intact else 'BROKEN'}")
    caller, fault_time = run_calls_during(server, rate, 6, 2, fault, f"{how}-")
    finish(how, server, db, {i for sent, i in caller.answered if sent > fault_time},
           f"(counting the calls sent after the database was {how})", settle=1.0,
           check=check)


def scenario_readonly(module, folder, rate):
    mount = folder / "mnt"
    with tmpfs(mount, "16m"):
        db = mount / "calls.sqlite"
        read_only_with_its_wal(db, folder / "source")
        server = Server(module, folder, db)
        caller, _ = run_calls_during(
            server, rate, 8, 4,
            lambda: subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True),
            "ro-")
        finish("readonly", server, db, {i for _, i in caller.answered},
               "(read-only at start, SQLite opens it; writable 4 s in)")


def scenario_full(module, folder, rate):
    mount = folder / "mnt"
    with tmpfs(mount, "16m"):
        db = mount / "calls.sqlite"
        server = Server(module, folder, db)
        filler = mount / "filler"

        def fill():
            with open(filler, "wb") as handle:
                with contextlib.suppress(OSError):
                    while True:
                        handle.write(b"\0" * 65536)
                        handle.flush()
            threading.Timer(10, filler.unlink).start()
        caller, _ = run_calls_during(server, rate, 14, 1, fill, "full-")
        finish("full", server, db, {i for _, i in caller.answered}, "(tmpfs full for 10 s)")


def scenario_kill9(module, folder, rate):
    db = folder / "calls.sqlite"
    server = Server(module, folder, db)
    caller = Caller(server.port, rate, 3, "k-")
    caller.run()
    server.proc.kill()
    server.proc.wait(10)
    answered = {i for _, i in caller.answered}
    lost = answered - recorded(db)
    last = sorted(caller.answered)[-1][0]
    sent_of = dict((i, sent) for sent, i in caller.answered)
    window = max((last - sent_of[i] for i in lost), default=0.0)
    print(f"{'kill9':<10} calls answered {len(answered):>6,}  lost {len(lost):>6,}  "
          f"(all sent in the last {window * 1000:.0f} ms; a killed process cannot log)")


def scenario_stderr(module, folder, requests, recording, blocked=True):
    db = folder / f"calls-{blocked}.sqlite" if recording else ""
    read_end, write_end = os.pipe()
    server = Server(module, folder, db, stderr=write_end if blocked else None)
    os.close(write_end)  # never read: the pipe fills, then every write to stderr blocks
    try:
        padding = "-" + "x" * 60_000
        samples = [f"{server.rss_mib():.0f}"]
        sent = 0
        step = max(1, requests // 6)
        while sent < requests:
            caller = Caller(server.port, 100_000, step / 100_000, f"s{sent}-", padding)
            caller.run()
            sent += step
            samples.append(f"{server.rss_mib():.0f}")
        seconds = server.stop()
    finally:
        os.close(read_end)
    kept = len(recorded(db)) if recording else None
    stopped = "did not exit" if seconds is None else f"exit {seconds:.1f} s"
    print(f"{'stderr' if blocked else 'free':<10} recording {'on ' if recording else 'off'}"
          f"  {sent:,} requests "
          f"with 60 KB ivrids; RSS MiB every {step:,}: {' '.join(samples)}  "
          f"SIGTERM: {stopped}" + (f"  calls recorded {kept:,} of {sent:,}"
                                   if recording else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", type=Path, default=MODULE,
                        help="the popup_server.py to measure")
    parser.add_argument("--rate", type=int, default=300, help="pop-ups a second")
    parser.add_argument("--big-requests", type=int, default=12_000,
                        help="requests with 60 KB ivrids in the stderr scenario")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args()
    chosen = args.only.split(",")
    root = os.geteuid() == 0 and shutil.which("mount") is not None
    print(f"server: {args.server}  rate: {args.rate} pop-ups/s  (loopback)")
    for name in chosen:
        with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as folder:
            folder = Path(folder)
            if name in ("readonly", "full") and not root:
                print(f"{name:<10} skipped: needs root to mount a tmpfs")
            elif name == "lock":
                scenario_lock(args.server, folder, args.rate)
            elif name in ("deleted", "replaced"):
                scenario_moved(args.server, folder, args.rate, name)
            elif name == "readonly":
                scenario_readonly(args.server, folder, args.rate)
            elif name == "full":
                scenario_full(args.server, folder, args.rate)
            elif name == "kill9":
                scenario_kill9(args.server, folder, args.rate)
            elif name == "stderr":
                scenario_stderr(args.server, folder, args.big_requests, recording=False)
                scenario_stderr(args.server, folder, args.big_requests, recording=True)
                scenario_stderr(args.server, folder, args.big_requests, recording=True,
                                blocked=False)  # the same, stderr to a file: a yardstick
            else:
                parser.error(f"unknown scenario {name}")


if __name__ == "__main__":
    main()
