"""A stand-in for Voicenter's Call Log API (POST /hub/cdr/) on loopback, answering as
Voicenter's own guide documents it: VoicenterTeam/claude-marketplace,
plugins/voicenter-api/skills/call-log/SKILL.md (and docs/skills/call-log/README.md),
summarised in shared/voicenter-apis.md, "Call Log".

What it does as the guide says:
- POST JSON `{"code", "fields": [...], "search": {"fromdate", "todate", ...}, "sort"}`;
  dates ISO 8601 in GMT+0 (`2024-06-01T00:00:00`, a trailing `Z` read too), both
  ends taken whole to the second.
- The answer `{"ERROR_NUMBER": 0, "ERROR_DESCRIPTION": "OK", "STATUS_CODE": 200,
  "TOTAL_HITS", "RETURN_HITS", "CDR_LIST"}`, each record with only the fields asked
  for (`Callerextension` / `Targetextension` asked come back as `CallerExtension` /
  `TargetExtension`, as the guide's example answer spells them), at most 10,000
  records an answer (TOTAL_HITS says how many there were).
- Errors with their STATUS_CODE as the HTTP status: 1 (403) rate limit, past 30
  requests in a minute; 2 (403) a wrong code; 4 (403) the IP not authorised; 5 (404)
  a date range that is not one.
- `fields`: "the request has two parts: search criteria (what to filter) and fields
  (what to return)", the fields named from the guide's list of "Returnable Fields"
  (FIELDS below). The guide does not say what a request without `fields`, or naming a
  field not in that list, gets: the stand-in refuses both, with ERROR_NUMBER 3 and
  HTTP 400 (a guess: the guide's table skips 3), so that every test sees the server
  ask for what it keeps by the names Voicenter documents.
It also answers the extension list (POST /Comet/api/GetExtensions, as
tests/voicenter_standin.py does, the guide's list), so that one stand-in serves every
API a server with --voicenter-code asks: give it as --voicenter-api and
--voicenter-monitor.
And for tests: `fail` set to an error number, "hang" (the request is held until
released or the stand-in stops), "500" (an HTML error page), "html" (200 with a page
that is not JSON), "nolist" (JSON without a list of records) or "trickle" (a byte
every 0.2 s, never the whole answer), "403" (an HTML 403, what Voicenter's other
APIs answer a server whose address is not authorised, says the Click2Call guide's
troubleshooting: the Call Log's own guide documents error 4 for it, in its JSON);
`fail_first` answers the first N requests so;
every request is kept in `requests` (when, the body, what was answered).
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import random
import threading
import time

MAX_HITS = 10_000
RATE = (30, 60.0)

ERRORS = {1: (403, "Rate limit exceeded"), 2: (403, "Authorization failed"),
          3: (400, "Invalid fields"),  # not in the guide: see "fields" above
          4: (403, "IP not authorized"), 5: (404, "Date range invalid")}

#: The guide's "Returnable Fields", as a request names them.
FIELDS = frozenset((
    "CallerNumber", "TargetNumber", "Date", "DateEpoch", "Duration", "CallID", "Type",
    "CdrType", "DialStatus", "Targetextension", "Callerextension", "DID", "QueueName",
    "RecordURL", "RecordExpect", "Price", "RingTime", "RepresentativeName",
    "RepresentativeCode", "UserName", "UserId", "DTMFData", "CustomData",
    "DepartmentName", "DepartmentId", "TargetPrefixName"))

#: The CdrType numbers of the guide's table, with the Type names it gives them.
TYPES = {1: "Incoming Call", 4: "Extension Outgoing", 8: "Queue", 9: "Click2Call leg1",
         10: "Click2Call leg2", 11: "VoiceMail"}

#: How an answer spells a field asked for, where it differs (the guide's example).
SPELLED = {"Callerextension": "CallerExtension", "Targetextension": "TargetExtension"}


def utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def israel_prefix(seconds: float) -> str:
    """The Israel-local yyyymmddhhmmss a CallID starts with (Asia/Jerusalem)."""
    from zoneinfo import ZoneInfo
    return dt.datetime.fromtimestamp(seconds, ZoneInfo("Asia/Jerusalem")).strftime(
        "%Y%m%d%H%M%S")


def make_record(epoch: int, rng: random.Random, **changes) -> dict:
    """One record with every field of the guide's example answer, in its shapes."""
    cdr_type = rng.choice((1, 1, 8, 8, 4, 10, 11))
    outgoing = cdr_type in (4, 10)
    status = ("ANSWER" if outgoing else
              rng.choice(("ANSWER", "ANSWER", "NOANSWER", "ABANDONE", "BUSY")))
    if cdr_type == 11:
        status = "VOICEMAIL"
    client = "05" + "".join(rng.choice("0123456789") for _ in range(8))
    extension = rng.choice(("SIPSIP1", "KGpK4iWq", "x7Hd2Lmq"))
    answered = status == "ANSWER"
    record = {
        "CallerNumber": "0722776772" if outgoing else client,
        "TargetNumber": "972" + client[1:] if outgoing else "0722776773",
        "Date": utc(epoch),
        "DateEpoch": epoch,
        "Duration": rng.randint(20, 600) if answered else rng.randint(0, 60),
        "CallID": israel_prefix(epoch) + "%018x" % rng.getrandbits(72),
        "CustomData": {},
        "Type": TYPES[cdr_type],
        "CdrType": cdr_type,
        "DialStatus": status,
        "Callerextension": extension if outgoing else "",
        "Targetextension": "" if outgoing or not answered else extension,
        "DID": "" if outgoing else "0722776773",
        "QueueName": "Sales" if cdr_type == 8 else "",
        "RecordURL": ("https://cpanel.voicenter.co.il/CallsHistory/PlayRecord/"
                      f"{epoch}{rng.randint(1000, 9999)}.mp3" if answered else ""),
        "RingTime": rng.randint(1, 30),
        "RepresentativeName": "John Doe" if answered else "",
        "RepresentativeCode": "87654321" if answered else "",
        "DTMFData": [],
        "DepartmentName": "Sales",
    }
    record.update(changes)
    return record


def day_of_records(count: int, end: float, seed: int = 7, span: float = 86400 - 3600,
                   **changes) -> list[dict]:
    """`count` records dated over the `span` seconds before `end`."""
    rng = random.Random(seed)
    return [make_record(int(end - span + rng.random() * span), rng, **changes)
            for _ in range(count)]


def _parse_date(text):
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


class CallLogStandin:
    """The stand-in, started on 127.0.0.1 in a thread: `url` is what
    --voicenter-api takes. Use as a context manager, or start() and stop()."""

    def __init__(self, records=(), code="test-code-1234", hold_for: float = 60.0):
        self.code = code
        self.records = list(records)
        self.fail = None        # an ERROR_NUMBER, "hang", "500", "html", "nolist",
        #                         "403" or "trickle"; None: answer
        self.fail_first = 0     # with `fail` set: only the first N requests fail so
        self.hold_for = hold_for  # seconds a "hang" holds a request at most
        self.max_hits = MAX_HITS  # records an answer holds at most (the guide's 10,000)
        self.rate = RATE  # (requests, seconds): more are answered error 1
        self.fields = FIELDS  # the names a request may ask for
        self.extensions = None  # GetExtensions' list: None, the guide's
        self.extension_requests = 0
        self.requests = []      # dicts: at, body, answered (error number or status)
        self.rate_refusals = 0  # requests over 30 a minute (answered error 1)
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def release(self):
        """Let held ("hang") requests go (they then answer normally)."""
        self._release.set()

    # ---- what it answers -------------------------------------------------------
    def answer(self, body: bytes):
        """(HTTP status, content type, body bytes) for one request's body."""
        now = time.monotonic()
        with self._lock:
            recent = [r["at"] for r in self.requests if r["at"] > now - self.rate[1]]
            entry = {"at": now, "body": None, "answered": None}
            self.requests.append(entry)
            failing = self.fail is not None and (
                not self.fail_first
                or sum(1 for r in self.requests if r.get("failed")) < self.fail_first)
            if failing:
                entry["failed"] = True
            fail = self.fail if failing else None
        try:
            request = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            request = None
        entry["body"] = request
        if fail == "hang":
            self._release.wait(self.hold_for)
        elif fail == "500":
            entry["answered"] = 500
            return 500, "text/html", b"<html><body>Internal Server Error</body></html>"
        elif fail == "html":
            entry["answered"] = "html"
            return 200, "text/html", b"<!DOCTYPE html><html><body>Maintenance</body></html>"
        elif fail == "403":
            from voicenter_standin import REFUSED_PAGES
            entry["answered"] = 403
            return 403, "text/html", REFUSED_PAGES[403]
        elif fail == "nolist":
            entry["answered"] = "nolist"
            return 200, "application/json", b'{"ERROR_NUMBER": 0, "CDR_LIST": "none"}'
        elif fail is not None:
            return self._error(entry, fail)
        if len(recent) >= self.rate[0]:
            with self._lock:
                self.rate_refusals += 1
            return self._error(entry, 1)
        if not isinstance(request, dict) or request.get("code") != self.code:
            return self._error(entry, 2)
        search = request.get("search") if isinstance(request.get("search"), dict) else {}
        start, end = _parse_date(search.get("fromdate")), _parse_date(search.get("todate"))
        if start is None or end is None or start > end:
            return self._error(entry, 5)
        fields = request.get("fields")
        if not isinstance(fields, list) or not fields or not all(
                isinstance(name, str) and name in self.fields for name in fields):
            return self._error(entry, 3)
        found = [r for r in self.records if start <= r["DateEpoch"] <= end]
        order = (request.get("sort") or [{}])[0].get("order", "desc")
        found.sort(key=lambda r: r["DateEpoch"], reverse=order != "asc")
        shown = [{SPELLED.get(name, name): record[name] for name in fields
                  if name in record} for record in found[:self.max_hits]]
        entry["answered"] = 0
        entry["total"], entry["returned"] = len(found), len(shown)
        return 200, "application/json", json.dumps({
            "ERROR_NUMBER": 0, "ERROR_DESCRIPTION": "OK", "STATUS_CODE": 200,
            "TOTAL_HITS": len(found), "RETURN_HITS": len(shown), "CDR_LIST": shown,
        }, ensure_ascii=False).encode("utf-8")

    def _error(self, entry, number):
        status, words = ERRORS[number]
        entry["answered"] = number
        return status, "application/json", json.dumps({
            "ERROR_NUMBER": number, "ERROR_DESCRIPTION": words, "STATUS_CODE": status,
        }).encode("utf-8")

    def extension_list(self, body: bytes):
        """(HTTP status, content type, body bytes) of GetExtensions for one request's
        body, as tests/voicenter_standin.py answers it."""
        from voicenter_standin import EXTENSIONS, extension_list_answer
        try:
            fields = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            fields = None
        with self._lock:
            self.extension_requests += 1
        answer = extension_list_answer(fields if isinstance(fields, dict) else {},
                                       self.code, self.extensions or EXTENSIONS)
        return 200, "application/json", json.dumps(answer, ensure_ascii=False).encode()

    def _handler(self):
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1 << 20))
                if self.path.split("?")[0] == "/Comet/api/GetExtensions":
                    status, kind, data = standin.extension_list(body)
                elif self.path.split("?")[0] != "/hub/cdr/":
                    status, kind, data = 404, "text/html", b"<html>Not Found</html>"
                elif standin.fail == "trickle":  # a byte now and then, never the end
                    standin.requests.append({"at": time.monotonic(), "body": None,
                                             "answered": "trickle"})
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    deadline = time.monotonic() + standin.hold_for
                    while time.monotonic() < deadline and not standin._release.is_set():
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                        standin._release.wait(0.2)
                    return
                else:
                    status, kind, data = standin.answer(body)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

        return Handler

    # ---- what it saw -------------------------------------------------------------
    def most_in_a_minute(self) -> int:
        """The most requests it got in any 60 seconds."""
        times = sorted(r["at"] for r in self.requests)
        return max((sum(1 for t in times[i:] if t < start + RATE[1])
                    for i, start in enumerate(times)), default=0)
