#!/usr/bin/env python3
"""Hostile connections: can clients lock everyone else out?

usage: python bench/fault_connections.py [--hostile 2000] [--seconds 40]
                                         [--server popup_server.py] [--per-ip N]
                                         [--addresses 41] [--phases ...]

Starts the real server as a process on 127.0.0.1 (the sample contacts, a token, no
calls database) and runs these phases of --seconds each (the first, at rest, 10 s):

  at rest    nobody hostile;
  trickling  --hostile connections from 127.0.0.2, each sending one byte of a request
             that never ends every 2-5 s;
  idle       --hostile connections from 127.0.0.2 that connect and send nothing;
  addresses  --addresses loopback addresses (127.0.9.1, ...) each holding --per-ip
             (default 100, the server's share for one address) connections that send
             nothing: 41 x 100 is more than the server's 4,000 in all, every address
             within its share.

In the hostile phases a connection the server closes is opened again after
--reconnect-delay seconds (at once in the addresses phase), as an attacker would.
Meanwhile, in every phase:

  new client  a fresh connection from 127.0.0.1 looks a caller up every 0.1 s
              (timeout 5 s; a timeout counts as 5 s and as a failure);
  keep-alive  one connection from 127.0.0.3 (Voicenter's own) looks a caller up
              every second on the same socket for the whole phase.

Prints, per phase: the new client's lookups (count, failures, p50, p99, max, all
under 1 s?), the keep-alive client's (answered, errors, reconnects), and the
hostile side (connects, connections the server closed, open at the end).
Everything is bounded in time and targets loopback only; every process started is
ended before the script exits. --server points at another copy of popup_server.py
(e.g. the code before the fix) to measure it the same way; --phases runs some of
the phases only (at rest always runs: the others' yardstick).
"""
import argparse
import http.client
import multiprocessing
import os
import random
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import clean_env, free_port, say  # noqa: E402
SERVER = HERE.parent / "popup_server.py"
CONTACTS = HERE.parent / "data" / "contacts.csv"
TOKEN = "bench-token-0123456789"
LOOKUP = f"/popup?token={TOKEN}&phone=0722776772&statusCall=Ringing"
EXPECTED_NAME = b'"CLIENTNAME": "John Doe"'
HOSTILE_SOURCE, PROBE_SOURCE, KEEPALIVE_SOURCE = "127.0.0.2", "127.0.0.1", "127.0.0.3"
PROBE_TIMEOUT = 5.0
TRICKLE = (b"GET " + LOOKUP.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Padding: "
           + b"a" * 60_000)  # a byte at a time, never finished
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


#: The hostile phases: name -> what the attacker does.
PHASES = {"trickling": "trickle", "idle": "idle", "addresses": "addresses"}


def raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


# ------------------------------------------------------------------- the attacker

def attacker(port, count, mode, seconds, reconnect_delay, results,
             sources=(HOSTILE_SOURCE,)):
    """Holds `count` connections for `seconds`, from `sources` in turn, reopening each
    one the server closes after `reconnect_delay`; puts its counts in `results`."""
    raise_fd_limit(count + 256)
    selector = selectors.DefaultSelector()
    stats = {"connects": 0, "closed_by_server": 0, "open_at_end": 0, "max_open": 0}
    rng = random.Random(1)
    reopen_at = [0.0] * count           # when slot i should connect again
    sockets = [None] * count
    sent = [0] * count                  # bytes of TRICKLE sent on slot i
    next_byte = [0.0] * count
    ends = time.monotonic() + seconds

    def close(slot, by_server):
        sock = sockets[slot]
        selector.unregister(sock)
        sock.close()
        sockets[slot] = None
        if by_server:
            stats["closed_by_server"] += 1
        reopen_at[slot] = time.monotonic() + reconnect_delay

    def connect(slot):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        except OSError:
            pass
        sock.bind((sources[slot % len(sources)], 0))
        sock.connect_ex(("127.0.0.1", port))
        sockets[slot] = sock
        sent[slot] = 0
        next_byte[slot] = time.monotonic() + rng.uniform(0.5, 2.0)
        selector.register(sock, selectors.EVENT_READ, slot)
        stats["connects"] += 1

    while True:
        now = time.monotonic()
        if now >= ends:
            break
        for slot in range(count):
            sock = sockets[slot]
            if sock is None:
                if now >= reopen_at[slot]:
                    try:
                        connect(slot)
                    except OSError:
                        reopen_at[slot] = now + reconnect_delay
            elif mode == "trickle" and now >= next_byte[slot]:
                try:
                    sock.send(TRICKLE[sent[slot]:sent[slot] + 1])
                    sent[slot] = (sent[slot] + 1) % len(TRICKLE)
                    next_byte[slot] = now + rng.uniform(2.0, 5.0)
                except BlockingIOError:
                    next_byte[slot] = now + 0.2  # still connecting
                except OSError:
                    close(slot, True)
        for key, _ in selector.select(timeout=0.05):
            slot = key.data
            try:
                data = key.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                close(slot, True)
        stats["max_open"] = max(stats["max_open"], sum(s is not None for s in sockets))
    # Which are still open as far as the server is concerned: a last look for closes.
    for key, _ in selector.select(timeout=0.2):
        try:
            if not key.fileobj.recv(65536):
                close(key.data, True)
        except BlockingIOError:
            pass
        except OSError:
            close(key.data, True)
    stats["open_at_end"] = sum(s is not None for s in sockets)
    for sock in sockets:
        if sock is not None:
            sock.close()
    results.put(stats)


# ------------------------------------------------------------------- the clients

def new_client_lookups(port, stop, latencies, failures):
    """A fresh connection per lookup, every 0.1 s, until `stop` is set."""
    while not stop.is_set():
        started = time.monotonic()
        ok = False
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT,
                                          source_address=(PROBE_SOURCE, 0))
        try:
            conn.request("GET", LOOKUP)
            response = conn.getresponse()
            ok = response.status == 200 and EXPECTED_NAME in response.read()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        elapsed = time.monotonic() - started
        latencies.append(elapsed if ok else max(elapsed, PROBE_TIMEOUT))
        if not ok:
            failures.append(elapsed)
        stop.wait(max(0.0, 0.1 - elapsed))


def keepalive_client(port, stop, counts):
    """One connection kept open, a lookup every second, until `stop` is set."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT,
                                      source_address=(KEEPALIVE_SOURCE, 0))
    sock = None
    while not stop.is_set():
        try:
            conn.request("GET", LOOKUP)
            response = conn.getresponse()
            ok = response.status == 200 and EXPECTED_NAME in response.read()
            counts["answered" if ok else "errors"] += 1
            if sock is not None and conn.sock is not sock:
                counts["reconnects"] += 1
            sock = conn.sock
        except (OSError, http.client.HTTPException):
            counts["errors"] += 1
            conn.close()
        stop.wait(1.0)
    conn.close()


# ------------------------------------------------------------------- the run

def start_server(server, port, workdir, per_ip):
    argv = [sys.executable, str(server), str(CONTACTS), "--host", "127.0.0.1",
            "--port", str(port), "--token", TOKEN, "--calls-db", ""]
    if per_ip:
        argv += ["--max-connections-per-ip", str(per_ip)]
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=workdir, env=clean_env())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {(workdir / 'server.log').read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not answer /health within 30 s")


def run_phase(port, name, mode, seconds, args):
    stop = threading.Event()
    latencies, failures = [], []
    counts = {"answered": 0, "errors": 0, "reconnects": 0}
    results = multiprocessing.Queue()
    hostile = None
    if mode == "addresses":
        sources = [f"127.0.9.{1 + n}" for n in range(args.addresses)]
        attack = (port, len(sources) * (args.per_ip or 100), "idle", seconds, 0.0,
                  results, sources)
    else:
        attack = (port, args.hostile, mode, seconds, args.reconnect_delay, results)
    if mode:
        hostile = multiprocessing.Process(target=attacker, args=attack, daemon=True)
        hostile.start()
    threads = [threading.Thread(target=new_client_lookups,
                                args=(port, stop, latencies, failures)),
               threading.Thread(target=keepalive_client, args=(port, stop, counts))]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=PROBE_TIMEOUT + 5)
    attack = None
    if hostile is not None:
        try:
            attack = results.get(timeout=30)
        except Exception:
            attack = None
        hostile.join(timeout=10)
        if hostile.is_alive():
            hostile.kill()
    return report(name, latencies, failures, counts, attack)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(name, latencies, failures, counts, attack):
    worst = max(latencies)
    line = (f"{name:<10} new client: {len(latencies)} lookups, {len(failures)} failed, "
            f"p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, max {worst * 1000:.1f} ms, "
            f"all under 1 s: {'yes' if worst < 1.0 and not failures else 'NO'}")
    say(line)
    say(f"{'':<10} keep-alive: {counts['answered']} answered, {counts['errors']} errors, "
        f"{counts['reconnects']} reconnects")
    if attack:
        say(f"{'':<10} hostile: {attack['connects']} connects, "
            f"{attack['closed_by_server']} closed by the server, "
            f"{attack['open_at_end']} open at the end (at most {attack['max_open']})")
    return worst < 1.0 and not failures and not counts["errors"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hostile", type=int, default=2000,
                        help="hostile connections held open (default 2000)")
    parser.add_argument("--seconds", type=float, default=40,
                        help="length of each hostile phase (default 40)")
    parser.add_argument("--reconnect-delay", type=float, default=1.0,
                        help="seconds before the attacker reopens a closed connection")
    parser.add_argument("--server", type=Path, default=SERVER,
                        help="the popup_server.py to measure (default: this one)")
    parser.add_argument("--per-ip", type=int, default=0,
                        help="pass --max-connections-per-ip N to the server")
    parser.add_argument("--addresses", type=int, default=41,
                        help="addresses of the addresses phase (default 41)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"some of: {','.join(PHASES)} (default: all)")
    args = parser.parse_args()
    raise_fd_limit(max(args.hostile, args.addresses * (args.per_ip or 100)) + 512)
    say(f"server: {args.server}; {args.hostile} hostile connections from {HOSTILE_SOURCE}, "
        f"{args.addresses} x {args.per_ip or 100} from as many addresses, "
        f"{args.seconds:g} s a phase; load average {os.getloadavg()[0]:.2f}")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="popup-fault-") as tmp:
        workdir = Path(tmp)
        proc = start_server(args.server, port, workdir, args.per_ip)
        try:
            passed = [run_phase(port, "at rest", None, 10, args)]
            passed += [run_phase(port, name, PHASES[name], args.seconds, args)
                       for name in args.phases.split(",") if name != "at rest"]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            refused = [line for line in (workdir / "server.log").read_text(
                errors="replace").splitlines() if "refused" in line or "limit" in line]
            for line in refused[:5]:
                say(f"server log: {line}")
    say(f"load average at the end {os.getloadavg()[0]:.2f}")
    say("PASS" if all(passed) else "FAIL")
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
