#!/usr/bin/env python3
"""popup-server benchmark: every figure of issue 5 in one command.

usage: python bench/run.py [--contacts N] [--repeats R] [--quick] [--skip PARTS] ...

Parts (each compares popup_server with a yardstick measured in the same run):
  http     wrk throughput of popup_server vs the floor (floor_server.py: Bottle on
           waitress answering a constant JSON) at 1, 4 and 32 connections, replaying
           a mix of hits and misses in varied written forms (popup.lua); beside them
           the lookup floor (the least a Bottle route can do to answer a lookup) and
           popup_server recording calls as well (its default setup).
  inproc   inside Bottle, no HTTP: time per /popup lookup vs the constant-JSON route.
  startup  process start to a ready /health vs a bare pandas.read_csv(path, dtype=str)
           in a fresh process; RSS when ready vs RSS right after that read_csv.
  reload   the contacts file is touched / replaced while clients send lookups: failed
           or wrong answers (must be 0) and latency during reload vs at rest.
  pull     only with --pull: Voicenter's Call Log pulled and stored (--pull-records,
           12,000: over one answer's 10,000) from a stand-in on loopback while
           clients send lookups: latency during the pull vs the same server at rest
           right after (bench/call_log_pull.py, which also runs it alone).
Ratios are printed last, as median [min-max] over the repeats.
Everything runs on 127.0.0.1; every load run is bounded in time; every process this
script starts is ended before it exits. Needs wrk for the http part
(Debian/Ubuntu: apt-get install wrk); without it that part is skipped.
"""
import argparse
import atexit
import http.client
import io
import json
import os
import re
import shutil
import signal
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
import gen_contacts  # noqa: E402
import make_queries  # noqa: E402

PY = sys.executable
CONNS = (1, 4, 32)
THREADS = 4  # waitress threads of both servers (popup_server's default); --threads
TARGETS = {  # name -> (op, value)
    "http": (">=", 0.9), "inproc": ("<=", 1.5), "startup_time": ("<=", 2.0),
    "startup_rss": ("<=", 1.2), "reload_p99": ("<=", 5.0), "reload_fail": ("==", 0),
    "pull_p50": ("<=", 1.5), "pull_fail": ("==", 0),
}


# --------------------------------------------------------------------------- helpers

def say(*a):
    print(*a, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The servers' user data folder (their state folders: token, page secret, calls),
#: a temporary one, so that a benchmark never leaves files in the user's own.
BENCH_DATA_HOME = tempfile.mkdtemp(prefix="popup-bench-data-")
atexit.register(shutil.rmtree, BENCH_DATA_HOME, ignore_errors=True)


def clean_env():
    """The environment for servers: no POPUP_* settings leaking in from the shell, and
    a temporary user data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POPUP_")}
    env["XDG_DATA_HOME"] = BENCH_DATA_HOME
    return env


def proc_status(pid):
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) / 1024
    return out


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_range(xs, spec="{:.2f}"):
    if not xs:
        return "n/a"
    return f"{spec.format(med(xs))} [{spec.format(min(xs))}–{spec.format(max(xs))}]"


def pct(xs, p):
    """p-th percentile (0..100) of a list, nearest rank."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


class Procs:
    """Every subprocess this run starts; all are ended by stop_all()."""

    def __init__(self, logdir):
        self.logdir = Path(logdir)
        self.procs = []

    def start(self, cmd, name, cwd=None, env=None, stdout=None):
        log = open(self.logdir / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, cwd=cwd, env=env or clean_env(), stdin=subprocess.DEVNULL,
                             stdout=stdout if stdout is not None else log,
                             stderr=log if stdout is not None else subprocess.STDOUT,
                             start_new_session=True)
        p.log_path = log.name
        p.log_file = log
        self.procs.append(p)
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        p.log_file.close()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


def log_tail(p, n=15):
    try:
        return "\n".join(Path(p.log_path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def http_get(port, path, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def health(port):
    try:
        st, body = http_get(port, "/health", timeout=2)
        return json.loads(body) if st == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def wait_ready(port, proc, timeout, need_contacts=True, interval=0.01):
    """Poll /health until status ok (and contacts > 0); return seconds since call."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode}:\n{log_tail(proc)}")
        h = health(port)
        if h and h.get("status") == "ok" and (not need_contacts or h.get("contacts", 0) > 0):
            return time.perf_counter() - t0, h
        time.sleep(interval)
    raise RuntimeError(f"not ready after {timeout:.0f} s:\n{log_tail(proc)}")


# --------------------------------------------------------------------------- data

def ensure_data(cache, n, seed, nq):
    cache.mkdir(parents=True, exist_ok=True)
    csv_path = cache / f"contacts-{n}-{seed}.csv"
    if not csv_path.exists():
        say(f"generating {n} contacts -> {csv_path}")
        tmp = csv_path.with_suffix(".tmp")
        numbers = gen_contacts.generate(n, tmp, seed)
        os.replace(tmp, csv_path)
        say(f"  {numbers} numbers")
    q_path = cache / f"queries-{n}-{seed}-{nq}.txt"
    if not Path(str(q_path) + ".expected").exists():
        say(f"writing {nq} queries -> {q_path}")
        make_queries.write(make_queries.make(csv_path, nq, 0.5, seed + 1), str(q_path))
    return csv_path, q_path


# --------------------------------------------------------------------------- servers

def start_floor(procs, threads, mode="tuned", extra=()):
    port = free_port()
    p = procs.start([PY, str(HERE / "floor_server.py"), str(port), str(threads), mode,
                     *extra], f"floor-{mode}-{port}")
    wait_ready(port, p, 30, need_contacts=False)
    return p, port


def server_cmd(server, csv_path, port, extra=()):
    # A state folder for each server: two servers may not share one (the second stops).
    return [PY, str(server), str(csv_path), "--host", "127.0.0.1", "--port", str(port),
            "--token", "", "--calls-db", "", "--threads", str(THREADS),
            "--state-dir", str(Path(BENCH_DATA_HOME) / f"state-{port}"), *extra]


def start_server(procs, server, csv_path, extra=(), timeout=600):
    port = free_port()
    p = procs.start(server_cmd(server, csv_path, port, extra), f"server-{port}",
                    cwd=server.parent)
    secs, h = wait_ready(port, p, timeout)
    return p, port, secs, h


# --------------------------------------------------------------------------- part 1/5: wrk

WRK_LAT = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def run_wrk(port, conns, duration, queries, threads=1):
    cmd = ["wrk", f"-t{min(threads, conns)}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
           "--latency", "-s", str(HERE / "popup.lua"), f"http://127.0.0.1:{port}", "--",
           str(queries)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError("wrk gave no figures:\n" + out)
    res = {"rps": float(m.group(1))}
    for q, v, unit in WRK_LAT.findall(out):
        res[f"p{q}"] = float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]  # ms
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["sockerr"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    return res


def part_http(args, procs, server, csv_path, q_path, R, workdir):
    say("\n== 1. HTTP throughput (wrk, hits and misses in varied forms) ==")
    say("  fresh processes every repeat: a process keeps the speed it starts with (where")
    say("  the scheduler puts its threads), so repeats inside one process understate the")
    say("  spread")
    res = {c: {"stock": [], "floor": [], "lookup": [], "server": [], "recording": [],
               "ratio": [], "ratio_stock": [], "ratio_lookup": [], "lookup_floor": [],
               "ratio_recording": []}
           for c in CONNS}
    for r in range(R):
        floor, fport = start_floor(procs, args.threads)
        stock, stock_port = start_floor(procs, args.threads, "stock")
        lookup, lookup_port = start_floor(procs, args.threads, "lookup",
                                          [f"{q_path}.expected"])
        srv = sport = rec = rec_port = None
        if server:
            try:
                srv, sport, secs, _ = start_server(procs, server, csv_path)
                # the default setup: every request also recorded in the calls database
                rec, rec_port, secs, _ = start_server(
                    procs, server, csv_path,
                    ("--calls-db", str(Path(workdir) / f"calls-{r}.sqlite")))
            except RuntimeError as e:
                say(f"popup_server did not start: {e}")
        targets = [("stock", stock_port), ("floor", fport), ("lookup", lookup_port)] + (
            [("server", sport)] if sport else []) + (
            [("recording", rec_port)] if rec_port else [])
        for name, port in targets:  # warm-up, not counted
            run_wrk(port, 4, 1, q_path, args.wrk_threads)
        for c in CONNS:
            order = targets if (r + CONNS.index(c)) % 2 == 0 else targets[::-1]
            got = {}
            for name, port in order:
                w = run_wrk(port, c, args.duration, q_path, args.wrk_threads)
                got[name] = w
                res[c][name].append(w)
                say(f"  c={c:<2} rep {r + 1}/{R} {name:6} {w['rps']:9.0f} req/s  "
                    f"p50 {w.get('p50', float('nan')):7.2f} ms  p99 {w.get('p99', float('nan')):7.2f} ms"
                    f"  non-2xx {w['non2xx']}  socket errors {w['sockerr']}")
            if "server" in got:
                res[c]["ratio"].append(got["server"]["rps"] / got["floor"]["rps"])
                res[c]["ratio_stock"].append(got["server"]["rps"] / got["stock"]["rps"])
                res[c]["ratio_lookup"].append(got["server"]["rps"] / got["lookup"]["rps"])
            if "recording" in got:
                res[c]["ratio_recording"].append(got["recording"]["rps"] / got["floor"]["rps"])
            res[c]["lookup_floor"].append(got["lookup"]["rps"] / got["floor"]["rps"])
        procs.stop(floor)
        procs.stop(stock)
        procs.stop(lookup)
        for process in (srv, rec):
            if process:
                procs.stop(process)
    return res


# --------------------------------------------------------------------------- part 2: in-process

INPROC_ITERS = 20000


def inproc_child(server_dir, csv_path, q_path, iters, repeats):
    """Runs in a fresh process: times both WSGI apps; prints one JSON line."""
    sys.path.insert(0, server_dir)
    import floor_server
    t0 = time.perf_counter()
    import popup_server as ps
    cfg = ps.parse_config([csv_path, "--token", "", "--calls-db", ""], environ={})
    holder = ps.ContactsHolder(cfg)
    app = ps.create_app(cfg, holder)
    load_s = time.perf_counter() - t0
    expected = make_queries.read_expected(q_path + ".expected")

    base = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8080", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False}
    envs = []
    for path, _ in expected:
        p, _, q = path.partition("?")
        e = dict(base, PATH_INFO=p, QUERY_STRING=q)
        envs.append(e)
    status = [None]

    def start_response(s, h, exc_info=None):
        status[0] = s

    def call(wsgi, env):
        env = env.copy()
        env["wsgi.input"] = io.BytesIO(b"")
        it = wsgi(env, start_response)
        body = b"".join(it)
        if hasattr(it, "close"):
            it.close()
        return body

    wrong = 0
    examples = []
    for env, (path, name) in zip(envs, expected):
        body = call(app, env)
        try:
            d = json.loads(body)
            ok = (status[0].startswith("200") and d.get("STATUS") == "OK"
                  and ((name is None and d.get("TOTAL") == 0)
                       or (name is not None and d.get("TOTAL", 0) >= 1 and d.get("CLIENTNAME") == name)))
        except ValueError:
            ok = False
        if not ok:
            wrong += 1
            if len(examples) < 5:
                examples.append(f"{path} expected {name!r} got {status[0]} {body[:120]!r}")
    n = len(envs)
    cycle = [envs[i % n] for i in range(iters)]
    hello = [dict(env, PATH_INFO="/hello", QUERY_STRING="") for env in cycle]
    times = {"floor": [], "floor_bytes": [], "server": []}
    for r in range(repeats):
        order = [("floor", floor_server.app, hello), ("floor_bytes", floor_server.app, cycle),
                 ("server", app, cycle)]
        if r % 2:
            order.reverse()
        for name, wsgi, calls in order:
            for env in calls[:500]:  # warm-up
                call(wsgi, env)
            t = time.perf_counter()
            for env in calls:
                call(wsgi, env)
            times[name].append((time.perf_counter() - t) / iters * 1e6)
    print(json.dumps({"load_s": load_s, "wrong": wrong, "checked": n, "examples": examples,
                      "times_us": times}), flush=True)


def part_inproc(args, procs, server, csv_path, q_path, R):
    say("\n== 2. Inside Bottle (WSGI app called directly, no HTTP) ==")
    p = procs.start([PY, str(Path(__file__).resolve()), "--_inproc", str(server.parent),
                     str(csv_path), str(q_path), str(args.inproc_iters), str(R)],
                    "inproc", stdout=subprocess.PIPE)
    try:
        out, _ = p.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        procs.stop(p)
        say("  timed out")
        return None
    procs.stop(p)
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        say(f"  failed (status {p.returncode}):\n{log_tail(p)}")
        return None
    d = json.loads(lines[-1])
    t = d["times_us"]
    ratios = [s / f for s, f in zip(t["server"], t["floor"])]
    ratios_bytes = [s / f for s, f in zip(t["server"], t["floor_bytes"])]
    say(f"  index built in-process in {d['load_s']:.2f} s; answers checked: {d['checked']}, "
        f"wrong: {d['wrong']}")
    for ex in d["examples"]:
        say(f"    wrong: {ex}")
    for i, (f, b, s) in enumerate(zip(t["floor"], t["floor_bytes"], t["server"])):
        say(f"  rep {i + 1}/{R}: constant JSON route {f:6.1f} us, pre-encoded bytes {b:6.1f} us, "
            f"/popup lookup {s:6.1f} us/request   ratios {s / f:.2f} / {s / b:.2f}")
    return {"ratio": ratios, "ratio_bytes": ratios_bytes, "floor_us": t["floor"],
            "server_us": t["server"], "wrong": d["wrong"]}


# --------------------------------------------------------------------------- part 3: start-up

BARE_READ = ("import sys, pandas\n"
             "df = pandas.read_csv(sys.argv[1], dtype=str)\n"
             "st = open('/proc/self/status').read()\n"
             "print('READY', len(df), st.split('VmRSS:')[1].split()[0],"
             " st.split('VmHWM:')[1].split()[0], flush=True)\n")


def bare_read(procs, csv_path):
    t0 = time.perf_counter()
    p = procs.start([PY, "-c", BARE_READ, str(csv_path)], "bare-read", stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    secs = time.perf_counter() - t0
    procs.stop(p)
    if not line.startswith("READY"):
        raise RuntimeError("bare read_csv failed:\n" + log_tail(p))
    _, rows, rss, hwm = line.split()
    return secs, int(rss) / 1024, int(hwm) / 1024, int(rows)


def part_startup(args, procs, server, csv_path, R):
    say("\n== 3. Start-up: process start to ready /health, and RSS ==")
    Path(csv_path).read_bytes()  # warm the page cache for both sides
    res = {"base_s": [], "srv_s": [], "base_rss": [], "srv_rss": [], "base_hwm": [],
           "srv_hwm": [], "time": [], "rss": []}
    for r in range(R):
        order = ("base", "server") if r % 2 == 0 else ("server", "base")
        got = {}
        for which in order:
            if which == "base":
                secs, rss, hwm, rows = bare_read(procs, csv_path)
                say(f"  rep {r + 1}/{R} read_csv(dtype=str): {secs:6.2f} s  RSS {rss:7.1f} MiB"
                    f"  peak {hwm:7.1f} MiB  ({rows} rows)")
            else:
                port = free_port()
                t0 = time.perf_counter()
                p = procs.start(server_cmd(server, csv_path, port), f"startup-{port}",
                                cwd=server.parent)
                try:
                    _, h = wait_ready(port, p, args.startup_timeout)
                    secs = time.perf_counter() - t0
                    st = proc_status(p.pid)
                    rss, hwm = st["VmRSS"], st["VmHWM"]
                finally:
                    procs.stop(p)
                say(f"  rep {r + 1}/{R} popup_server ready:  {secs:6.2f} s  RSS {rss:7.1f} MiB"
                    f"  peak {hwm:7.1f} MiB  ({h.get('contacts')} contacts, {h.get('numbers')} numbers)")
            got[which] = (secs, rss, hwm)
        (bs, br, bh), (ss, sr, sh) = got["base"], got["server"]
        for k, v in (("base_s", bs), ("srv_s", ss), ("base_rss", br), ("srv_rss", sr),
                     ("base_hwm", bh), ("srv_hwm", sh), ("time", ss / bs), ("rss", sr / br)):
            res[k].append(v)
    return res


# --------------------------------------------------------------------------- part 4: reload

class Client(threading.Thread):
    """Sends lookups on one keep-alive connection, checks every answer, records latency."""

    def __init__(self, port, queries, offset, rate, stop):
        super().__init__(daemon=True)
        self.port, self.queries, self.i = port, queries, offset
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stop_ev = stop
        self.records = []  # (start perf_counter, latency s, ok)
        self.examples = []

    def run(self):
        conn = None
        nxt = time.perf_counter()
        n = len(self.queries)
        while not self.stop_ev.is_set():
            if self.interval:
                nxt += self.interval
                d = nxt - time.perf_counter()
                if d > 0:
                    time.sleep(d)
            path, name = self.queries[self.i % n]
            self.i += 7
            t0 = time.perf_counter()
            ok, why = False, ""
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", path)
                r = conn.getresponse()
                body = r.read()
                d = json.loads(body)
                if r.status != 200 or d.get("STATUS") != "OK":
                    why = f"{r.status} {body[:100]!r}"
                elif name is None:
                    ok = d.get("TOTAL") == 0
                    why = "" if ok else f"miss answered {body[:100]!r}"
                else:
                    ok = d.get("TOTAL", 0) >= 1 and d.get("CLIENTNAME") == name
                    why = "" if ok else f"expected {name!r}, got {body[:100]!r}"
            except (OSError, ValueError, http.client.HTTPException) as e:
                why = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            lat = time.perf_counter() - t0
            self.records.append((t0, lat, ok))
            if not ok and len(self.examples) < 3:
                self.examples.append(f"{path}: {why}")
        if conn is not None:
            conn.close()


class LogWatch:
    """Reads what a server has logged since the last call (its log is a file)."""
    RELOADING = re.compile(r"changed; reloading")
    RELOADED = re.compile(r"reloaded in ([\d.]+) s")

    def __init__(self, p):
        self.p, self.offset = p, 0

    def new_text(self):
        self.p.log_file.flush()
        try:
            with open(self.p.log_path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return ""
        cut = data.rfind(b"\n") + 1  # whole lines only
        self.offset += cut
        return data[:cut].decode(errors="replace")


def trigger(path, mode):
    if mode == "touch":
        now = time.time()
        os.utime(path, (now, now))
    elif mode == "replace":  # what a careful program does: write a copy, rename over
        tmp = path.with_name(path.name + ".bench-tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, path)
    elif mode == "inplace":  # what a naive program does: truncate and rewrite
        data = path.read_bytes()
        with open(path, "wb") as f:
            f.write(data)
    else:
        raise ValueError(mode)


def part_reload(args, procs, server, csv_path, q_path, R, workdir):
    say(f"\n== 4. Reload while clients send lookups ({args.reload_clients} clients, "
        f"{args.reload_rate or 'unpaced'} req/s in all) ==")
    rdir = Path(workdir) / "reload"
    rdir.mkdir(exist_ok=True)
    path = rdir / Path(csv_path).name
    shutil.copyfile(csv_path, path)
    queries = make_queries.read_expected(str(q_path) + ".expected")
    srv, port, secs, h0 = start_server(procs, server, path, ("--reload-interval", "0.5"))
    say(f"  server ready in {secs:.2f} s")
    logw = LogWatch(srv)
    stop = threading.Event()
    per = args.reload_rate / args.reload_clients if args.reload_rate else 0
    clients = [Client(port, queries, i * 1009, per, stop) for i in range(args.reload_clients)]
    windows = {"rest": [], "reload": []}
    reload_secs = []
    modes = [m for m in args.reload_modes.split(",") if m]
    try:
        for c in clients:
            c.start()
        time.sleep(0.5)  # connections open, warm
        for r in range(R):
            t = time.perf_counter()
            time.sleep(args.rest_seconds)
            windows["rest"].append((r, t, time.perf_counter()))
            for mode in modes:
                before = (health(port) or {}).get("loaded_at")
                logw.new_text()
                t = time.perf_counter()
                trigger(path, mode)
                done = started = None
                took = []
                while time.perf_counter() - t < args.reload_timeout:
                    text = logw.new_text()
                    if started is None and LogWatch.RELOADING.search(text):
                        started = time.perf_counter()
                    took += [float(x) for x in LogWatch.RELOADED.findall(text)]
                    h = health(port)
                    # loaded_at has whole seconds only: the server's log says it too
                    if h and (h.get("loaded_at") != before or took):
                        done = time.perf_counter()
                        break
                    time.sleep(0.05)
                if done is None:
                    say(f"  rep {r + 1}/{R} {mode}: no reload seen within {args.reload_timeout} s")
                    windows["reload"].append((r, t, time.perf_counter()))
                    continue
                # "during reload": from the server starting to read the file (its log
                # says when) or else from the change, until the new index is served, + tail
                windows["reload"].append((r, started or t, done + args.reload_tail))
                reload_secs.append(done - t)
                time.sleep(max(1.0, args.reload_tail + 0.5))
                took += [float(x) for x in LogWatch.RELOADED.findall(logw.new_text())]
                own = f"; the server says loading took {took[-1]:.2f} s" if took else ""
                settle = f", began reading after {started - t:.2f} s" if started else ""
                say(f"  rep {r + 1}/{R} {mode:7}: new contacts served {done - t:5.2f} s after the "
                    f"change{settle}{own} (contacts {h.get('contacts')}, "
                    f"last_error {h.get('last_error')!r})")
    finally:
        stop.set()
        for c in clients:
            c.join(15)
        procs.stop(srv)

    records = [rec for c in clients for rec in c.records]

    def in_windows(kind, rep=None):
        ws = [(a, b) for (rr, a, b) in windows[kind] if rep is None or rr == rep]
        return [(lat, ok) for (t0, lat, ok) in records if any(a <= t0 <= b for a, b in ws)]

    fails = sum(1 for *_, ok in records if not ok)
    res = {"total": len(records), "fail": fails, "ratio": [], "reload_s": reload_secs,
           "examples": [e for c in clients for e in c.examples][:5]}
    for kind in ("rest", "reload"):
        xs = in_windows(kind)
        lats = [lat * 1e3 for lat, _ in xs]
        res[kind] = {"n": len(xs), "fail": sum(1 for _, ok in xs if not ok),
                     "p50": pct(lats, 50), "p90": pct(lats, 90), "p99": pct(lats, 99),
                     "max": max(lats) if lats else float("nan")}
    for r in range(R):
        rest = [lat for lat, _ in in_windows("rest", r)]
        rel = [lat for lat, _ in in_windows("reload", r)]
        if rest and rel:
            res["ratio"].append(pct(rel, 99) / pct(rest, 99))
    say(f"  answers checked: {res['total']}, failed or wrong: {fails}")
    for e in res["examples"]:
        say(f"    e.g. {e}")
    for kind in ("rest", "reload"):
        k = res[kind]
        say(f"  {kind:6}: {k['n']:6} requests, {k['fail']} failed/wrong, latency ms: p50 {k['p50']:.2f}"
            f"  p90 {k['p90']:.2f}  p99 {k['p99']:.2f}  max {k['max']:.2f}")
    return res


# --------------------------------------------------------------------------- part 6: pull

def part_pull(args, server, csv_path, R, workdir):
    """The pop-up's p50 and p99 while a Call Log pull is stored, as ratios to the same
    server at rest in the same repeat (call_log_pull.run_once, its stand-in answering
    every API of Voicenter's on loopback)."""
    import call_log_pull
    say(f"\n== 6. The pop-up while Voicenter's Call Log is pulled ({args.pull_records} "
        f"records, {args.reload_clients} clients) ==")
    options = argparse.Namespace(records=args.pull_records, clients=args.reload_clients,
                                 server=server)
    phones = call_log_pull.phones_of(csv_path)
    res = {"p50": [], "p99": [], "fail": 0, "seconds": []}
    for r in range(R):
        pull, rest, seconds, stored, failed = call_log_pull.run_once(
            options, csv_path, phones, workdir)
        res["p50"].append(pull["p50"] / rest["p50"])
        res["p99"].append(pull["p99"] / rest["p99"])
        res["fail"] += failed
        res["seconds"].append(seconds)
        say(f"  repeat {r + 1}: {stored} records stored in {seconds:.1f} s; pull p50/p99 "
            f"{pull['p50']:.2f}/{pull['p99']:.2f} ms, rest {rest['p50']:.2f}/"
            f"{rest['p99']:.2f} ms; failed answers {failed}")
    return res


# --------------------------------------------------------------------------- report

def verdict(key, value):
    op, target = TARGETS[key]
    if value != value:  # nan
        return "n/a"
    ok = {">=": value >= target, "<=": value <= target, "==": value == target}[op]
    return "PASS" if ok else "FAIL"


def rps_range(runs):
    return fmt_range([w["rps"] for w in runs], "{:.0f}")


def latencies(runs):
    """Median p50/p99 of wrk runs, ms."""
    return f"{med([w.get('p50', 0) for w in runs]):.2f}/{med([w.get('p99', 0) for w in runs]):.2f}"


def report(args, R, n, http_res, inproc_res, startup_res, reload_res, pull_res=None):
    if http_res:
        say("\n== 5. Floors vs popup_server side by side (wrk, req/s median [min–max]; "
            "latency ms median) ==")
        say("  stock floor: waitress as it comes; floor: the same settings and channel "
            "as popup_server")
        say(f"  {'conns':>5} | {'stock floor req/s':>24} | {'stock p50/p99':>14} | "
            f"{'server/stock':>20}")
        for c in CONNS:
            st = http_res[c]["stock"]
            say(f"  {c:>5} | {rps_range(st):>24} | {latencies(st):>14} | "
                f"{fmt_range(http_res[c]['ratio_stock']):>20}")
        say(f"  {'conns':>5} | {'floor req/s':>26} | {'server req/s':>26} | {'floor p50/p99':>15} | "
            f"{'server p50/p99':>15} | server/floor")
        for c in CONNS:
            f, s = http_res[c]["floor"], http_res[c]["server"]
            sl = latencies(s) if s else "n/a"
            say(f"  {c:>5} | {rps_range(f):>26} | {rps_range(s):>26} | {latencies(f):>15} | "
                f"{sl:>15} | {fmt_range(http_res[c]['ratio'])}")
        say("  lookup floor: the tuned floor looking each answer up by the caller id as "
            "written (Bottle's")
        say("  query parsing, one dict.get, json.dumps): the least a Bottle route can do "
            "to answer a lookup")
        say(f"  {'conns':>5} | {'lookup floor req/s':>26} | {'lookup floor/floor':>20} | "
            f"server/lookup floor")
        for c in CONNS:
            say(f"  {c:>5} | {rps_range(http_res[c]['lookup']):>26} | "
                f"{fmt_range(http_res[c]['lookup_floor']):>20} | "
                f"{fmt_range(http_res[c]['ratio_lookup'])}")
        say("  recording: popup_server as it runs by default, every request also written to the")
        say("  calls database (the rows above run with --calls-db '')")
        say(f"  {'conns':>5} | {'recording req/s':>26} | recording/floor")
        for c in CONNS:
            say(f"  {c:>5} | {rps_range(http_res[c]['recording']):>26} | "
                f"{fmt_range(http_res[c]['ratio_recording'])}")

    rows = []
    if http_res:
        for label, figure, key in (
                ("1. HTTP req/s, server / floor, {} conn", "ratio", "http"),
                ("1. (lookup floor / floor, {} conn)", "lookup_floor", None),
                ("1. (server / lookup floor, {} conn)", "ratio_lookup", None),
                ("1. (recording calls too / floor, {} conn)", "ratio_recording", None)):
            for c in CONNS:
                rows.append((label.format(c), http_res[c][figure], key))
    if inproc_res:
        rows.append(("2. in Bottle, /popup lookup / constant JSON route", inproc_res["ratio"],
                     "inproc"))
        rows.append(("2. (the same / a route returning fixed bytes)", inproc_res["ratio_bytes"],
                     None))
    if startup_res:
        rows.append(("3. start-up to ready / bare read_csv", startup_res["time"], "startup_time"))
        rows.append(("3. RSS when ready / RSS after read_csv", startup_res["rss"], "startup_rss"))
    if reload_res:
        rows.append(("4. p99 latency during reload / at rest", reload_res["ratio"], "reload_p99"))
    if pull_res:
        rows.append(("6. p50 latency during a Call Log pull / at rest", pull_res["p50"],
                     "pull_p50"))
        rows.append(("6. (p99 latency during the pull / at rest)", pull_res["p99"], None))
    say(f"\n== Ratios ({n} contacts, {R} repeats; median [min–max]; "
        f"load average now {os.getloadavg()[0]:.2f}) ==")
    say(f"  {'figure':<46} {'median [min–max]':>24}  {'target':>7}  verdict")
    for label, xs, key in rows:
        if key is None:  # a figure that explains another; no goal of its own
            say(f"  {label:<46} {fmt_range(xs):>24}  {'-':>7}  -")
            continue
        op, t = TARGETS[key]
        say(f"  {label:<46} {fmt_range(xs):>24}  {op + format(t, 'g'):>7}  {verdict(key, med(xs))}")
    if reload_res:
        f, total = reload_res["fail"], reload_res["total"]
        say(f"  {'4. failed or wrong answers (reload test)':<46} {f'{f} of {total}':>24}  "
            f"{'==0':>7}  {verdict('reload_fail', f)}")
    if pull_res:
        f = pull_res["fail"]
        say(f"  {'6. failed answers during the pulls':<46} {f:>24}  {'==0':>7}  "
            f"{verdict('pull_fail', f)}")
    if inproc_res:
        w = inproc_res["wrong"]
        say(f"  {'2. wrong answers in-process (all queries)':<46} {w:>24}  {'==0':>7}  "
            f"{'PASS' if w == 0 else 'FAIL'}")


# --------------------------------------------------------------------------- main

def main(argv=None):
    global THREADS
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_inproc":
        _, server_dir, csv_path, q_path, iters, repeats = argv
        inproc_child(server_dir, csv_path, q_path, int(iters), int(repeats))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, help="contacts in the file (default 1000000; --quick 100000)")
    ap.add_argument("--repeats", type=int, help="repeats of every measurement (default 3; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="100k contacts, 2 repeats, 3 s wrk runs")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 5; --quick 3)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--queries", type=int, default=20000, help="distinct request paths")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "popup-bench-cache",
                    help="where generated data is kept between runs")
    ap.add_argument("--server", type=Path, default=HERE.parent / "popup_server.py")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="waitress threads of both servers (default %(default)s, the server's default)")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--inproc-iters", type=int, default=INPROC_ITERS)
    ap.add_argument("--skip", default="", help="comma list of parts: http,inproc,startup,reload")
    ap.add_argument("--pull", action="store_true",
                    help="also part 6: the pop-up while Voicenter's Call Log is pulled")
    ap.add_argument("--pull-records", type=int, default=12_000,
                    help="records of that pull (default %(default)s)")
    ap.add_argument("--reload-modes", default="touch,replace",
                    help="touch, replace (write a copy, rename over), inplace (truncate+rewrite)")
    ap.add_argument("--reload-clients", type=int, default=4)
    ap.add_argument("--reload-rate", type=float, default=200.0,
                    help="requests per second of all reload clients together (0 = unpaced)")
    ap.add_argument("--rest-seconds", type=float, help="at-rest window per repeat (default 5; --quick 2)")
    ap.add_argument("--reload-timeout", type=float, default=180.0)
    ap.add_argument("--reload-tail", type=float, default=0.5,
                    help="seconds after the new index shows in /health still counted as 'during reload'")
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the servers' logs (temp dir)")
    args = ap.parse_args(argv)
    n = args.contacts or (100_000 if args.quick else 1_000_000)
    R = args.repeats or (2 if args.quick else 3)
    args.duration = args.duration or (3 if args.quick else 5)
    args.rest_seconds = args.rest_seconds or (2.0 if args.quick else 5.0)
    skip = set(filter(None, args.skip.split(",")))
    THREADS = args.threads

    server = args.server.resolve()
    if not server.exists():
        say(f"{server} not found: only the floor will be measured")
        server = None
    have_wrk = shutil.which("wrk") is not None
    if not have_wrk and "http" not in skip:
        say("wrk not found: the HTTP parts (1 and 5) are skipped. Install it with: "
            "apt-get install wrk")

    say(f"popup-server bench: {n} contacts, {R} repeats, wrk runs of {args.duration} s, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (other work on the machine makes figures noisy)")
    csv_path, q_path = ensure_data(args.cache, n, args.seed, args.queries)
    workdir = tempfile.mkdtemp(prefix="popup-bench-")
    procs = Procs(workdir)
    old_term = signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    http_res = inproc_res = startup_res = reload_res = pull_res = None
    try:
        if have_wrk and "http" not in skip:
            http_res = part_http(args, procs, server, csv_path, q_path, R, workdir)
        if server and "inproc" not in skip:
            inproc_res = part_inproc(args, procs, server, csv_path, q_path, R)
        if server and "startup" not in skip:
            try:
                startup_res = part_startup(args, procs, server, csv_path, R)
            except RuntimeError as e:
                say(f"  failed: {e}")
        if server and "reload" not in skip:
            try:
                reload_res = part_reload(args, procs, server, csv_path, q_path, R, workdir)
            except RuntimeError as e:
                say(f"  failed: {e}")
        if server and args.pull:
            try:
                pull_res = part_pull(args, server, csv_path, R, workdir)
            except (RuntimeError, SystemExit) as e:
                say(f"  failed: {e}")
        report(args, R, n, http_res, inproc_res, startup_res, reload_res, pull_res)
        if args.json:
            args.json.write_text(json.dumps(
                {"contacts": n, "repeats": R, "duration": args.duration, "threads": THREADS,
                 "http": {str(k): v for k, v in (http_res or {}).items()}, "inproc": inproc_res,
                 "startup": startup_res, "reload": reload_res, "pull": pull_res}, indent=1,
                default=str))
            say(f"\nall figures written to {args.json}")
    finally:
        procs.stop_all()
        signal.signal(signal.SIGTERM, old_term)
        if args.keep:
            say(f"server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
