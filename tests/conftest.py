"""What every test file shares: the real server started as a subprocess, clients for
it, and the few readers several files need (the day's calls as /calls.csv gives them,
Voicenter's fixtures, a CDR's `time`).

Most tests talk to a running ``python popup_server.py ...`` over a socket, the way
Voicenter does. The tests of one function import popup_server from this checkout
(put first on sys.path here, however pytest was started).

Fixtures (each documented where it is defined):
  start_server         start_server(contacts, *args, env=None, ...) -> ServerHandle
  server               a server on the shipped data/contacts.csv
  start_module_server  start_server for a whole module (hypothesis tests)
  make_contacts        make_contacts(rows, header=..., name=...) -> a small CSV's path
  contacts             a CSV of JOHN_ROW and MASKED_ROW (see assert_no_contact_data)
  run_cli              run_cli(*args, env=None) -> the finished process
  log_in               log_in(server) -> a LoggedIn client of the office pages
  voicenter            a stand-in for Voicenter's APIs on loopback
  site                 a contacts site on loopback (tests/linksite.py)
  json_error, popup_answer: assert_json_error and assert_popup_answer

Every server a test starts (start_server, start_module_server) gets, unless the test
gives them: --host 127.0.0.1, a free --port, --token "" (no token), --calls-db ""
(no calls kept), --office-password "" (the login off), --timezone of "A test's day"
below, and a --state-dir of its own under the test's temporary folder; it is never
given a Voicenter API code without loopback stand-ins (refuse_real_voicenter).
"""

from __future__ import annotations

import csv
import datetime as dt
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import tomllib
import urllib.parse
import zoneinfo
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings

#: The program under test (bench/office_load.py --server points it at another copy).
MODULE = Path(__file__).resolve().parent.parent / "popup_server.py"
SAMPLE_CONTACTS = MODULE.parent / "data" / "contacts.csv"
#: What Voicenter sends, copied from its guides and SDK (each file says from where).
VOICENTER_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "voicenter"
#: Seconds a server may take to answer /health after it is started.
STARTUP_TIMEOUT = 20.0
#: Seconds a test waits for a pop-up before it counts it as unanswered: a hang guard,
#: longer than Voicenter itself waits (3 s), so that only a pop-up held up for good
#: fails a test. How fast pop-ups are answered is bench/'s to measure (tests assert
#: no timings): bench/office_load.py, fault_calls.py, fault_connections.py.
POPUP_HANG_GUARD = 5.0
#: The office password of the servers a test starts with the login on.
OFFICE_PASSWORD = "office-password-for-tests"
#: The two contacts of the `contacts` fixture: nothing of them may show in a refusal.
JOHN_ROW = ["John Doe", "Widget Works", "072-277-6772"]
MASKED_ROW = ["Masked Caller", "Privacy Ltd", "050-123-4987"]
#: The Accept-Language of a browser set to Hebrew.
HEBREW = {"Accept-Language": "he-IL,he;q=0.9"}
#: Voicenter's acknowledgement of a CDR, in both spellings (its guide's and its SDK's).
CDR_OK = {"Err": 0, "Errdesc": "OK", "err": 0, "errdesc": "OK"}

sys.path.insert(0, str(MODULE.parent))


# A test's day ------------------------------------------------------------------------
# The pages show a day's calls in the server's --timezone (by default --region's,
# Asia/Jerusalem), and a test reads the calls it made seconds or hours before. Near
# midnight there (22:00 UTC in winter) a call made a minute ago is yesterday's, and a
# test of "today's page" would fail by the clock alone. So the tests run in a
# fixed-offset zone where it is now about midday: this process's local time (TZ, for
# the in-process tests and dt.date.today()) and every server's --timezone, unless a
# test names a zone of its own or asks for the server's default (office_zone=False).
def _midday_zone_name(now: dt.datetime) -> str:
    """The Etc/GMT zone where `now` (UTC) is between 12:00 and 13:00 (Etc/GMT-2 is
    two hours ahead of UTC: POSIX's sign)."""
    ahead = 12 - now.hour  # -11 .. +12: the date there is the date in UTC
    return "UTC" if ahead == 0 else f"Etc/GMT{-ahead:+d}"


# POPUP_TEST_ZONE names another (the screenshots for docs/ are taken with
# POPUP_TEST_ZONE=Asia/Jerusalem, at a time of day far from midnight there).
TEST_ZONE = (os.environ.get("POPUP_TEST_ZONE")
             or _midday_zone_name(dt.datetime.now(dt.timezone.utc)))
os.environ["TZ"] = TEST_ZONE
time.tzset()


# Hypothesis ----------------------------------------------------------------------------
# Hypothesis searches at random on every run (a property must hold for all inputs, so
# each run may find what earlier ones missed); no deadline and no too_slow check, as
# timings of a loaded machine are not what these tests test. A failure prints the
# blob that replays it (@reproduce_failure). `--hypothesis-profile repeatable` tries
# the same examples every run and keeps none between runs.
hypothesis_settings.register_profile(
    "random", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile(
    "repeatable", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("random")


# Waiting and HTTP ----------------------------------------------------------------------

def wait_until(predicate, timeout: float = 20.0, what: str = "the condition"):
    """Poll `predicate` until it gives a true value, and return that value; the test
    fails, saying what it waited for, when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}; last value: "
                        f"{value!r}")
        time.sleep(0.05)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Response:
    """A fully read HTTP answer."""

    def __init__(self, status: int, reason: str, headers, body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str, default=None):
        return self.headers.get(name, default)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"<Response {self.status} {self.body[:300]!r}>"


def http_request(method: str, url: str, body: bytes | str | None = None,
                 headers: dict | None = None, timeout: float = 15.0) -> Response:
    """Send one request on a fresh connection; the path is sent exactly as given."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.reason, resp.headers, data)
    finally:
        conn.close()


# A running server ---------------------------------------------------------------------

class ServerHandle:
    """One running ``popup_server.py`` subprocess, its logs and an HTTP client of it."""

    def __init__(self, proc: subprocess.Popen, port: int, stdout_path: Path,
                 stderr_path: Path, argv: list[str]):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.argv = argv
        self._stdout_path = stdout_path
        self._stderr_path = stderr_path

    # ---- logs -------------------------------------------------------------
    def stdout_text(self) -> str:
        return self._stdout_path.read_bytes().decode("utf-8", "replace")

    def stderr_text(self) -> str:
        return self._stderr_path.read_bytes().decode("utf-8", "replace")

    def log_text(self) -> str:
        """Everything the server printed, stdout then stderr."""
        return self.stdout_text() + "\n" + self.stderr_text()

    def log_mark(self) -> tuple[int, int]:
        return (self._stdout_path.stat().st_size, self._stderr_path.stat().st_size)

    def log_since(self, mark: tuple[int, int]) -> str:
        out = self._stdout_path.read_bytes()[mark[0]:]
        err = self._stderr_path.read_bytes()[mark[1]:]
        return (out + b"\n" + err).decode("utf-8", "replace")

    def wait_for_log(self, needle: str, since=(0, 0), timeout: float = 5.0) -> str:
        """Poll the log written after ``since`` until it contains ``needle``."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_since(since)
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    # ---- HTTP -------------------------------------------------------------
    def request(self, method: str, path: str, body=None, headers=None,
                timeout: float = 15.0) -> Response:
        return http_request(method, self.url + path, body=body, headers=headers,
                            timeout=timeout)

    def get(self, path: str = "/popup", params: dict | None = None,
            headers=None, **kw) -> Response:
        if params:
            sep = "&" if "?" in path else "?"
            path = path + sep + urllib.parse.urlencode(params)
        return self.request("GET", path, headers=headers, **kw)

    def post_form(self, path: str = "/popup", data: dict | None = None,
                  headers=None, **kw) -> Response:
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(headers or {})
        body = urllib.parse.urlencode(data or {})
        return self.request("POST", path, body=body, headers=h, **kw)

    def post_json(self, path: str = "/popup", obj=None, headers=None, **kw) -> Response:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return self.request("POST", path, body=body, headers=h, **kw)

    def lookup(self, phone: str, path: str = "/popup", **params) -> dict:
        """GET /popup?phone=... and return the JSON answer (asserting 200)."""
        resp = self.get(path, dict(phone=phone, **params))
        assert resp.status == 200, resp
        return resp.json()

    def health(self) -> dict:
        """/health's body. It answers 503 (the same JSON) when the contacts fail to
        load or calls cannot be recorded, 200 only when all is well: the code and
        the body's "status" are checked to agree."""
        resp = self.get("/health")
        assert resp.status in (200, 503), resp
        body = resp.json()
        assert (resp.status == 200) == (body["status"] == "ok"), resp
        return body

    # ---- life cycle ---------------------------------------------------------
    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# Starting a server --------------------------------------------------------------------

def _has_flag(args, flag: str) -> bool:
    return any(a == flag or str(a).startswith(flag + "=") for a in args)


def _flag_value(args, flag: str):
    args = [str(a) for a in args]
    value = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def subprocess_env(env: dict | None = None) -> dict:
    """The test runner's environment without any POPUP_* variable, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("POPUP_")}
    base["PYTHONUNBUFFERED"] = "1"
    base["PYTHONIOENCODING"] = "utf-8"
    base.update(env or {})
    return base


# Never the real Voicenter: a server given an API code asks Voicenter's APIs at once
# and then every minute or so: the Call Log and Click2Call at --voicenter-api, the
# extension list at --voicenter-monitor, each https://...voicenter... by default. A
# test that names one stand-in and forgets the other sends its code to Voicenter's
# production API (and, where there is no internet, puts an error of its own on the
# pages it screenshots). So every server a test starts with a code must name a
# loopback address for both.
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _config_file_settings(args, env) -> dict:
    """The --config (else POPUP_CONFIG) file's settings, {} when there is none or it
    does not read (the server then refuses to start anyway)."""
    path = _flag_value(args, "--config") or env.get("POPUP_CONFIG")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (TypeError, OSError, ValueError):
        return {}


def refuse_real_voicenter(args, env) -> None:
    """Fail the test when a server would start with a Voicenter API code
    (--voicenter-code, POPUP_VOICENTER_CODE or the config file's voicenter-code) and
    either of --voicenter-api and --voicenter-monitor is not on loopback."""
    args = [str(a) for a in args]
    config = _config_file_settings(args, env)

    def setting(flag):
        given = _flag_value(args, flag)
        if given is None:
            given = env.get("POPUP_" + flag.lstrip("-").replace("-", "_").upper())
        return config.get(flag.lstrip("-")) if given is None else given
    if not setting("--voicenter-code"):
        return
    for flag in ("--voicenter-api", "--voicenter-monitor"):
        url = str(setting(flag) or "")
        if urllib.parse.urlsplit(url).hostname not in _LOOPBACK_HOSTS:
            pytest.fail(f"a server with --voicenter-code must ask a stand-in on loopback: "
                        f"give {flag} a stand-in's http://127.0.0.1:PORT (it is "
                        f"{url or 'not given, so Voicenter itself'})", pytrace=False)


def _lock_is_held(path: Path) -> bool:
    """Whether a running server holds the state folder lock file `path` (its flock)."""
    if os.name == "nt":
        return False  # the tests that start servers at once run on Linux (CI)
    import fcntl
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def free_state_folder(cwd: Path) -> Path:
    """cwd/state, else state-2, state-3, ...: the first no running server holds (a
    server locks its state folder while it runs), so that a test running two servers
    at once gives each its own, while a server started again finds its state."""
    for number in range(1, 100):
        folder = Path(cwd) / ("state" if number == 1 else f"state-{number}")
        if not _lock_is_held(folder / "server.lock"):
            return folder
    raise RuntimeError("99 servers at once in one test")


def _server_argv(contacts_path, extra: list[str], env: dict, cwd: Path,
                 office_zone: bool, disable_token: bool) -> tuple[list[str], bool]:
    """The command line of a test's server: what the test gives, and the defaults of
    this module's docstring for what it does not (as flag or POPUP_* variable).
    Returns it and whether the port is one chosen here."""
    argv = [sys.executable, str(MODULE)]
    if contacts_path is not None:
        argv.append(str(contacts_path))
    if not _has_flag(extra, "--host") and "POPUP_HOST" not in env:
        argv += ["--host", "127.0.0.1"]
    port_chosen_here = not _has_flag(extra, "--port") and "POPUP_PORT" not in env
    if port_chosen_here:
        argv += ["--port", str(free_port())]
    if disable_token and not _has_flag(extra, "--token") and "POPUP_TOKEN" not in env:
        argv += ["--token", ""]
    if not _has_flag(extra, "--calls-db") and "POPUP_CALLS_DB" not in env:
        argv += ["--calls-db", ""]
    if office_zone and not _has_flag(extra, "--timezone") and "POPUP_TIMEZONE" not in env:
        argv += ["--timezone", TEST_ZONE]  # see "A test's day"
    if not _has_flag(extra, "--state-dir") and "POPUP_STATE_DIR" not in env:
        argv += ["--state-dir", str(free_state_folder(cwd))]
    if not _has_flag(extra, "--office-password") and "POPUP_OFFICE_PASSWORD" not in env:
        argv += ["--office-password", ""]
    return argv + extra, port_chosen_here


def launch_server(contacts_path, *extra_args, env: dict | None = None, cwd: Path,
                  log_dir: Path, startup_timeout: float = STARTUP_TIMEOUT,
                  disable_token: bool = True, office_zone: bool = True,
                  preexec_fn=None) -> ServerHandle:
    """Start ``popup_server.py`` with the defaults of this module's docstring and wait
    until GET /health answers; the caller stops it.

    ``contacts_path=None`` starts it without a CONTACTS_FILE argument;
    ``disable_token=False`` leaves out the default ``--token ""`` (token generation);
    ``office_zone=False`` the default --timezone (the server's own default applies);
    ``preexec_fn`` runs in the server's process before it starts (e.g. to lower a
    resource limit). A port chosen here that another program takes before the server
    binds it is replaced by another, and the server started again.
    """
    env = dict(env or {})
    extra = [str(a) for a in extra_args]
    refuse_real_voicenter(extra, env)
    argv, port_chosen_here = _server_argv(contacts_path, extra, env, cwd, office_zone,
                                          disable_token)
    port = int(_flag_value(argv, "--port") or env["POPUP_PORT"])
    log_dir.mkdir(parents=True, exist_ok=True)
    n = len(list(log_dir.glob("server-*.stdout")))
    stdout_path = log_dir / f"server-{n}.stdout"
    stderr_path = log_dir / f"server-{n}.stderr"
    deadline = time.monotonic() + startup_timeout
    while True:
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.Popen(argv, cwd=str(cwd), stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, env=subprocess_env(env),
                                    preexec_fn=preexec_fn)
        handle = ServerHandle(proc, port, stdout_path, stderr_path, argv)
        if _answers_health(handle, deadline, startup_timeout, port_chosen_here):
            return handle
        # Another program took the free port between free_port() and the bind.
        port = free_port()
        argv[argv.index("--port") + 1] = str(port)


def _answers_health(handle: ServerHandle, deadline: float, startup_timeout: float,
                    port_chosen_here: bool) -> bool:
    """True once `handle` answers /health; False when it exited because its port,
    chosen by launch_server, was taken meanwhile and there is time to try another.
    The test fails on any other exit, or at the deadline."""
    while True:
        rc = handle.proc.poll()
        if rc is not None and port_chosen_here and "Address already in use" in \
                handle.stderr_text() and time.monotonic() < deadline:
            return False
        if rc is not None:
            pytest.fail(f"server exited with status {rc} before answering /health\n"
                        f"argv: {handle.argv}\nstderr:\n{handle.stderr_text()}\n"
                        f"stdout:\n{handle.stdout_text()}")
        try:
            http_request("GET", handle.url + "/health", timeout=1.0)
            return True
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            handle.stop()
            pytest.fail(f"server did not answer /health within {startup_timeout} s\n"
                        f"argv: {handle.argv}\nstderr:\n{handle.stderr_text()}")
        time.sleep(0.05)


def printed_password(server):
    """The office password a first start printed (once), in the start-up's closing
    block (written just after the server begins to answer: waited for)."""
    server.wait_for_log("State folder:", timeout=10)
    found = re.findall(r"^  Office password: +(\S+) +\(made now", server.log_text(),
                       re.M)
    assert len(found) == 1, server.log_text()
    return found[0]


def start_as_a_user_would(tmp_path, *args, module=MODULE, env=None, port=None):
    """The server started with only `args` (no --state-dir, --calls-db, --token,
    --timezone or --office-password added, unlike start_server), on a loopback port;
    stopped by the caller."""
    port = port or free_port()
    log_dir = tmp_path / "server-logs"
    log_dir.mkdir(exist_ok=True)
    number = len(list(log_dir.glob("*.stdout")))
    out, err = log_dir / f"raw-{number}.stdout", log_dir / f"raw-{number}.stderr"
    argv = [sys.executable, str(module), *map(str, args), "--host", "127.0.0.1",
            "--port", str(port)]
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=stdout, stderr=stderr,
                                stdin=subprocess.DEVNULL, env=subprocess_env(env))
    handle = ServerHandle(proc, port, out, err, argv)

    def answers():
        assert proc.poll() is None, handle.log_text()
        try:
            return http_request("GET", handle.url + "/health", timeout=1)
        except OSError:
            return None
    wait_until(answers, what="the server to start")
    return handle


# Fixtures ------------------------------------------------------------------------------

@pytest.fixture
def start_server(tmp_path):
    """Factory: ``start_server(contacts_path, *extra_args, env=None)`` -> ServerHandle,
    started by launch_server in tmp_path (its logs in tmp_path/server-logs).

    Keyword ``disable_token=False`` starts it without the default ``--token ""``;
    ``office_zone=False`` without the test's --timezone (see "A test's day");
    ``preexec_fn`` and ``startup_timeout`` as launch_server's.

    Every server started through it is stopped at teardown.
    """
    started: list[ServerHandle] = []

    def _start(contacts_path, *extra_args, env=None, startup_timeout=STARTUP_TIMEOUT,
               disable_token=True, office_zone=True, preexec_fn=None):
        handle = launch_server(contacts_path, *extra_args, env=env, cwd=tmp_path,
                               log_dir=tmp_path / "server-logs",
                               startup_timeout=startup_timeout, disable_token=disable_token,
                               office_zone=office_zone, preexec_fn=preexec_fn)
        started.append(handle)
        return handle

    yield _start
    for handle in reversed(started):
        handle.stop()


@pytest.fixture
def server(start_server):
    """A server on the shipped sample data/contacts.csv (no token, no calls db)."""
    return start_server(SAMPLE_CONTACTS)


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory):
    """start_server for a whole module, in a temporary folder of its own (for
    hypothesis tests, whose examples share one server)."""
    base = tmp_path_factory.mktemp("module-server")
    started: list[ServerHandle] = []

    def _start(contacts_path, *extra_args, env=None, startup_timeout=STARTUP_TIMEOUT):
        handle = launch_server(contacts_path, *extra_args, env=env, cwd=base,
                               log_dir=base / "server-logs",
                               startup_timeout=startup_timeout)
        started.append(handle)
        return handle

    yield _start
    for handle in reversed(started):
        handle.stop()


def write_contacts(path: Path, rows, header=("name", "company", "phone"),
                   encoding: str = "utf-8") -> Path:
    """Write a small CSV contacts file (header + rows) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def make_contacts(tmp_path):
    """``make_contacts(rows, header=..., name="contacts.csv")`` -> path under tmp_path/data."""

    def _make(rows, header=("name", "company", "phone"), name="contacts.csv",
              encoding="utf-8"):
        return write_contacts(tmp_path / "data" / name, rows, header=header,
                              encoding=encoding)

    return _make


@pytest.fixture
def contacts(make_contacts):
    """A CSV of JOHN_ROW and MASKED_ROW (see assert_no_contact_data)."""
    return make_contacts([JOHN_ROW, MASKED_ROW])


@pytest.fixture
def run_cli(tmp_path):
    """``run_cli(*args, env=None, timeout=30)``: run ``popup_server.py *args`` to
    completion in tmp_path (for --help, --check, commands and start-up errors) and
    return the CompletedProcess; its state in tmp_path/state unless the test names
    one, and never a Voicenter API code without loopback stand-ins (except with
    --help and --check, which ask no one)."""

    def _run(*args, env=None, timeout=30):
        env = dict(env or {})
        if not {"--help", "--check"} & {str(a) for a in args}:
            refuse_real_voicenter(args, env)
        if not _has_flag(args, "--state-dir"):
            env.setdefault("POPUP_STATE_DIR", str(tmp_path / "state"))
        argv = [sys.executable, str(MODULE), *[str(a) for a in args]]
        return subprocess.run(argv, cwd=str(tmp_path), env=subprocess_env(env),
                              stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout)

    return _run


class LoggedIn:
    """A client of the office pages signed in with the office password: get() and
    post_form() carry its session cookie (and post_form() the form's CSRF token
    and an Origin of the server's own). Start the server with
    ``"--office-password", OFFICE_PASSWORD``; then ``client = log_in(server)``."""

    def __init__(self, server, password=OFFICE_PASSWORD):
        self.server = server
        resp = server.post_form("/login", {"password": password, "next": "/"},
                                headers={"Origin": server.url})
        assert resp.status == 303, resp
        self.cookie = resp.header("Set-Cookie").split(";")[0]
        self.csrf = self._csrf()

    def _csrf(self) -> str:
        page = self.get("/").text
        marker = 'name="csrf" value="'
        start = page.index(marker) + len(marker)
        return page[start:page.index('"', start)]

    def get(self, path: str, params: dict | None = None, headers=None, **kw) -> Response:
        return self.server.get(path, params, headers={"Cookie": self.cookie,
                                                      **(headers or {})}, **kw)

    def post_form(self, path: str, data: dict | None = None, headers=None,
                  **kw) -> Response:
        return self.server.post_form(
            path, {"csrf": self.csrf, **(data or {})},
            headers={"Cookie": self.cookie, "Origin": self.server.url, **(headers or {})},
            **kw)


@pytest.fixture
def log_in():
    """``log_in(server, password=OFFICE_PASSWORD)`` -> a LoggedIn client."""
    return LoggedIn


@pytest.fixture
def voicenter():
    """A started VoicenterStandIn (tests/voicenter_standin.py): give the server
    ``--voicenter-code voicenter.code --voicenter-api voicenter.url
    --voicenter-monitor voicenter.url``; stopped at teardown."""
    from voicenter_standin import VoicenterStandIn
    standin = VoicenterStandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def site():
    """A started LinkSite (tests/linksite.py): a contacts site on loopback whose
    pages the test sets (``site.pages["/c.csv"] = Page(...)``); stopped at teardown."""
    from linksite import LinkSite
    running = LinkSite().start()
    yield running
    running.stop()


# What a test asserts of an answer -------------------------------------------------------

def assert_popup_answer(answer: dict) -> None:
    """The five Voicenter fields are there with the right JSON types."""
    assert answer["STATUS"] == "OK", answer
    assert isinstance(answer["TOTAL"], int) and not isinstance(answer["TOTAL"], bool), answer
    for key in ("CLIENTNAME", "COMPANY", "URL"):
        assert isinstance(answer[key], str), (key, answer)


def assert_json_error(resp: Response, status: int) -> dict:
    """A 4xx answer is JSON {"STATUS": "ERROR", "MESSAGE": <non-empty str>}."""
    assert resp.status == status, resp
    ctype = (resp.header("Content-Type") or "").lower()
    assert ctype.startswith("application/json"), (ctype, resp)
    body = resp.json()
    assert isinstance(body, dict), body
    assert body.get("STATUS") == "ERROR", body
    assert isinstance(body.get("MESSAGE"), str) and body["MESSAGE"].strip(), body
    return body


def assert_no_contact_data(resp: Response) -> None:
    """Nothing of the `contacts` fixture's contacts (a name, a company) is in `resp`."""
    for secret in (b"John Doe", b"Widget Works", b"Masked Caller", b"Privacy Ltd"):
        assert secret not in resp.body, resp


@pytest.fixture
def json_error():
    """assert_json_error, as a fixture."""
    return assert_json_error


@pytest.fixture
def popup_answer():
    """assert_popup_answer, as a fixture."""
    return assert_popup_answer


# What several test files send and read ---------------------------------------------------

def health_of(server) -> tuple[int, dict]:
    """/health's status and body, whatever the status (503 while something is wrong)."""
    resp = server.get("/health")
    return resp.status, resp.json()


def send_phase(server, how: str, fields: dict) -> None:
    """One pop-up request of a call's phase, as Voicenter sends it: how="get" (the
    query), "form" or "json" (a POST); asserts it was answered 200 with STATUS OK."""
    if how == "get":
        resp = server.get("/popup", fields)
    elif how == "form":
        resp = server.post_form("/popup", fields)
    else:
        resp = server.post_json("/popup", fields)
    assert resp.status == 200 and resp.json()["STATUS"] == "OK", resp


def send_a_day_of_calls(server):
    """Three callers through the three request formats Voicenter uses."""
    # John Doe rings twice (GET) and nobody answers either call.
    for ivrid in ("20261126100000aaaa", "20261126110000bbbb"):
        server.get("/popup", {"phone": "0722776772", "ivrid": ivrid, "statusCall": "Ringing",
                              "did": "0722776773"})
        server.get("/popup", {"phone": "0722776772", "ivrid": ivrid, "statusCall": "Hangup"})
    # Noa Cohen (form POST) is answered by extension 201.
    for phase, exten in (("Ringing", ""), ("Answer", "201"), ("Hangup", "201")):
        server.post_form("/popup", {"phone": "0541234567", "ivrid": "20261126120000cccc",
                                    "status": phase, "extenUser": exten})
    # An unknown caller (JSON POST) is still ringing; the Ringing arrives twice.
    for _ in range(2):
        server.post_json("/popup", {"phone": "972509999999", "ivrid": "20261126130000dddd",
                                    "status": "Ringing", "direction": "Incoming",
                                    "isAnswered": False, "currentCall": {"x": 1}})


def wait_for_calls(server, expected, path="/calls.csv", timeout=5.0):
    """(the download, its rows) once `path` holds `expected` calls, or after `timeout`
    seconds (the test's asserts then say what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = server.get(path)
        rows = list(csv.DictReader(io.StringIO(resp.body.decode("utf-8-sig"))))
        if len(rows) >= expected or time.monotonic() > deadline:
            return resp, rows
        time.sleep(0.1)


def calls_csv(client, **params) -> list[dict]:
    """The rows of /calls.csv (of the day in `params`, else today) as dicts, read by
    a ServerHandle or a LoggedIn client; asserts the download answered 200."""
    resp = client.get("/calls.csv", params or None)
    assert resp.status == 200, resp
    return list(csv.DictReader(io.StringIO(resp.body.decode("utf-8-sig"))))


def calls_by_ivrid(client, **params) -> dict[str, dict]:
    """calls_csv's rows by their ivrid."""
    return {row["ivrid"]: row for row in calls_csv(client, **params)}


def voicenter_fixture(name: str):
    """A JSON fixture of tests/fixtures/voicenter/ (what Voicenter sends)."""
    return json.loads((VOICENTER_FIXTURES / name).read_text(encoding="utf-8"))


def israel_epoch(seconds: float) -> int:
    """The true Unix time `seconds` as Voicenter's CDR `time` documents it: Israel's
    wall-clock written as if it were UTC (a CDR that comes long after its call is
    read that way)."""
    local = dt.datetime.fromtimestamp(seconds, zoneinfo.ZoneInfo("Asia/Jerusalem"))
    return int(local.replace(tzinfo=dt.timezone.utc).timestamp())


def caller_page_path(url: str) -> str:
    """The path and query of a pop-up's link to a caller's page."""
    parts = urllib.parse.urlsplit(url)
    return parts.path + "?" + parts.query


def post_caller_form(server, url, path_suffix, fields, origin=None):
    """POST a caller page's form as its browser would: to the page's path + suffix,
    with the link's ?e=&s= and the page's own CSRF token."""
    page = server.get(caller_page_path(url))
    assert page.status == 200, page
    token = re.search(r'name="csrf" value="([^"]*)"', page.text).group(1)
    parts = urllib.parse.urlsplit(url)
    return server.post_form(parts.path + path_suffix + "?" + parts.query,
                            {"csrf": token, **fields},
                            headers={"Origin": origin or server.url})
