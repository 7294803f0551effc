"""The office's own work as a load on a running server, and a pop-up probe asking
during it: tests/test_office_load.py asserts what is answered, and
bench/office_load.py times the probe.

Every load runs on loopback only, in threads that stop when told (or after a
bounded count); every socket has a timeout.
"""
from __future__ import annotations

import contextlib
import http.client
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

from conftest import POPUP_HANG_GUARD, http_request


class Probe(threading.Thread):
    """Asks /popup for `phone` every `every` seconds on a fresh connection, as Voicenter
    does, until stop(); keeps (seconds, problem or None) of each answer. A problem is
    anything but a 200 naming `expected` (CLIENTNAME)."""

    def __init__(self, url, phone, expected, every=0.2, token=""):
        super().__init__(daemon=True)
        self.target = f"{url}/popup?" + urllib.parse.urlencode(
            {"phone": phone, **({"token": token} if token else {})})
        self.expected, self.every = expected, every
        self.results = []
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            started = time.perf_counter()
            problem = None
            try:
                resp = http_request("GET", self.target, timeout=POPUP_HANG_GUARD)
                if resp.status != 200 or resp.json().get("CLIENTNAME") != self.expected:
                    problem = f"{resp.status} {resp.body[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError) as error:
                problem = f"{type(error).__name__}: {error}"
            seconds = time.perf_counter() - started
            self.results.append((seconds, problem))
            self._stop_event.wait(max(0.0, self.every - seconds))

    def stop(self):
        self._stop_event.set()
        self.join(POPUP_HANG_GUARD + 5)

    @property
    def problems(self):
        return [problem for _, problem in self.results if problem]

    @property
    def seconds(self):
        return [seconds for seconds, _ in self.results]


class Repeat(threading.Thread):
    """Runs `work()` again and again until stop() (at most `limit` times), keeping
    each result, or the exception it raised."""

    def __init__(self, work, limit=10_000, pause=0.0):
        super().__init__(daemon=True)
        self.work, self.limit, self.pause = work, limit, pause
        self.results = []
        self._stop_event = threading.Event()

    def run(self):
        for _ in range(self.limit):
            if self._stop_event.is_set():
                return
            try:
                self.results.append(self.work())
            except (OSError, http.client.HTTPException) as error:
                self.results.append(error)
            self._stop_event.wait(self.pause)

    def stop(self, timeout=300):
        """Stop after the work under way, waiting for it `timeout` seconds at most."""
        self._stop_event.set()
        self.join(timeout)


def run_during(load, seconds):
    """Start the threads of `load`, let them run `seconds`, stop them; `load`."""
    for thread in load:
        thread.start()
    time.sleep(seconds)
    for thread in load:
        thread.stop()
    return load


@contextlib.contextmanager
def locked_database(path):
    """Another process holding the SQLite database at `path` (BEGIN EXCLUSIVE: no one
    else may write) until the block ends, as a backup or a database viewer can."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE')\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"
         "db.execute('ROLLBACK')\n", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(10)


def record_calls(port, calls, token=""):
    """Pop-ups for `calls`, a list of (phone, ivrid), over one keep-alive connection:
    each is recorded as a ringing call of today."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for phone, ivrid in calls:
            query = urllib.parse.urlencode({"phone": phone, "ivrid": ivrid,
                                            "statusCall": "Ringing",
                                            **({"token": token} if token else {})})
            conn.request("GET", f"/popup?{query}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
    finally:
        conn.close()


def loopback_address(n):
    """The n-th of many loopback addresses (127.1.0.1, 127.1.0.2, ...): a client of
    its own for the server's per-address limits."""
    return f"127.{1 + n // 65025}.{n // 255 % 255}.{1 + n % 255}"


class LoginFlood(threading.Thread):
    """`connections` wrong-password sign-ins in flight at once, each from its own
    loopback address (the next one each time), re-sent as each is answered, until
    stop(). Keeps the answers' status codes (and "reset" for a refused connection),
    and counts the "busy" answers of a guess that waited out the login lane (the
    office's busy page, not the login page's)."""

    def __init__(self, port, connections=128, first_address=0):
        super().__init__(daemon=True)
        self.port, self.connections = port, connections
        self.next_address = first_address
        self.statuses = []
        self.waited_out = 0
        self._stop_event = threading.Event()
        body = "password=not-the-password&next=%2F"
        self.request = (
            f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Origin: http://127.0.0.1:{port}\r\nConnection: close\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode("ascii")

    def _open(self, selector):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((loopback_address(self.next_address), 0))
        self.next_address += 1
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(self.request)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, [])

    def run(self):
        selector = selectors.DefaultSelector()
        try:
            for _ in range(self.connections):
                self._open(selector)
            while not self._stop_event.is_set():
                for key, _ in selector.select(timeout=0.5):
                    sock, chunks = key.fileobj, key.data
                    try:
                        data = sock.recv(65536)
                    except ConnectionResetError:
                        data, chunks[:] = b"", [b"reset"]
                    except BlockingIOError:
                        continue
                    if data:
                        chunks.append(data)
                        continue
                    answer = b"".join(chunks)
                    self.statuses.append(answer[9:12].decode("ascii", "replace")
                                         if answer.startswith(b"HTTP/") else "reset")
                    self.waited_out += b'id="office-busy"' in answer
                    selector.unregister(sock)
                    sock.close()
                    self._open(selector)
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()
            selector.close()

    def stop(self, timeout=30):
        self._stop_event.set()
        self.join(timeout)


def slow_reader(port, requests):
    """A connection that sends `requests` (bytes: one request or several pipelined)
    with a receive buffer of 4 KiB, and reads nothing until read_answers()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(requests)
    return sock


def read_answers(sock, timeout=60):
    """Read a connection's answers to its end: ([(status, body bytes, whole)], whether
    the server closed it). `whole` is False for an answer the server cut short (it
    closes a connection whose client read nothing for channel_timeout); closed is False
    when the connection was still open after `timeout` seconds of silence."""
    sock.settimeout(timeout)
    stream = sock.makefile("rb")
    answers, closed = [], False
    try:
        while True:
            line = stream.readline()
            if not line:
                closed = True
                break
            status = int(line.split()[1])
            length, chunked = None, False
            while (header := stream.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
                elif name.strip().lower() == "transfer-encoding":
                    chunked = value.strip().lower() == "chunked"
            if chunked:
                body, whole = [], False
                while (size_line := stream.readline()).strip():
                    size = int(size_line.split(b";")[0], 16)
                    if not size:
                        whole = stream.readline() == b"\r\n"
                        break
                    body.append(stream.read(size))
                    stream.readline()
                answers.append((status, b"".join(body), whole))
                if not whole:
                    closed = True
                    break
                continue
            if length is None:  # the end of the answer is the connection's end
                answers.append((status, stream.read(), True))
                closed = True
                break
            body = stream.read(length)
            answers.append((status, body, len(body) == length))
            if len(body) < length:
                closed = True
                break
    except socket.timeout:
        pass
    finally:
        stream.close()
        sock.close()
    return answers, closed


def page_request(port, path, cookie, language="en"):
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
            f"Accept-Language: {language}\r\n\r\n").encode("latin-1")


def cdr_fields(ivrid):
    """A small CDR of our own for loads (a JSON body): the field names and the type of
    Voicenter's CDR guide (voicenter-cdr.md), our values, no time (the arrival is)."""
    return {"ivruniqueid": ivrid, "caller": "0722776772", "target": "0722776773",
            "status": "ANSWER", "type": "Incoming Call", "duration": 30}
