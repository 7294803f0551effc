"""A stand-in for Voicenter's APIs: a real HTTP server on loopback answering as
Voicenter's own guides document them, errors and hangs included.

Where each answer comes from (VoicenterTeam/claude-marketplace, plugins/voicenter-api/
skills/...):
- click2call/SKILL.md: ``/ForwardDialer/click2call.aspx``, GET or POST JSON; ``code``,
  ``phone``, ``target``, ``action`` required; JSON with ``format=json``, "XML by
  default"; the answer ``{"ERRORCODE": 0, "ERRORMESSAGE": "OK", "CALLID": "..."}`` and
  ERRORCODE 1 (invalid parameters), 2 (application error), 3 (agent extension
  offline), 4 (extension blocked for Click2Call). The guide shows no XML answer nor
  what a wrong code gets: the XML below carries the same three fields, and a wrong
  code gets ERRORCODE 1 (its parameters are not valid), both guesses.
- extension-list/SKILL.md: ``/Comet/api/GetExtensions``, GET or POST JSON, ``code`` and
  ``showAll``; ``{"ERR": 0, "DESC": "OK", "EXTENSIONS": [{"SIP", "Name", "SpeedDial",
  "AccountID", "AccountName", "UserName", "UserEmail"}]}``; "an invalid code value
  returns ERR 0 with an empty EXTENSIONS array"; ERR 1 "invalid code format" with
  DESC "Unauthorized".
- docs/skills/click2call/README.md and docs/skills/extension-list/README.md,
  "Troubleshooting": "`403`/`401` from Voicenter: Server IP not whitelisted, add IP in
  CPanel -> API Settings" (Click2Call), "`403`: IP not whitelisted" (the extension
  list). The guides show no body for them: the modes "403" and "401" answer an HTML
  page as IIS does (a guess), never Voicenter's JSON.

The Call Log (``/hub/cdr/``) is answered by ``standin.call_log``, a CallLogStandin
(tests/voicenter_calllog_standin.py, which says where its answers come from) used for
its answers only, with the same code: one stand-in answers the three APIs a server
with --voicenter-code calls.

Configure it per test (``standin.click2call_error = 3``, ``standin.mode["click2call"]
= "hang"``, ``standin.mode["extensions"] = "403"``) and read ``standin.requests``
(every request as (method, path, fields)).
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse

from voicenter_calllog_standin import CallLogStandin

CODE = "vc-test-code-7Qx93LmZ"  # the account's API code the stand-in accepts

#: The extension list of the guide's example, with a Hebrew-named agent added.
EXTENSIONS = [
    {"SIP": "SIPSIP1", "Name": "Extension 1", "SpeedDial": "11", "AccountID": 12345678,
     "AccountName": "Voicenter Account", "UserName": "John Doe",
     "UserEmail": "john@example.com"},
    {"SIP": "SIPSIP2", "Name": "Extension 2", "SpeedDial": "12", "AccountID": 12345679,
     "AccountName": "Sales Department", "UserName": "Walter Melon",
     "UserEmail": "walter@example.com"},
    {"SIP": "KGpK4iWq", "Name": "שלוחה 3", "SpeedDial": "13", "AccountID": 12345679,
     "AccountName": "Sales Department", "UserName": "דנה לוי",
     "UserEmail": "dana@example.com"},
    {"SIP": "NoUser44", "Name": "Reception", "SpeedDial": "14", "AccountID": 12345679,
     "AccountName": "Sales Department", "UserName": "", "UserEmail": ""},
]

#: What each ERRORCODE's ERRORMESSAGE says (the guide's table).
ERROR_MESSAGES = {0: "OK", 1: "Invalid request parameters", 2: "Application error",
                  3: "Agent extension is offline", 4: "Extension blocked for Click2Call"}

HANG_AT_MOST = 30.0  # seconds a "hang" holds its request (the stop ends it sooner)

#: What a server whose address Voicenter does not accept gets (401 or 403): the
#: guides name the status only; this body is IIS's own page for it.
REFUSED_PAGES = {
    403: b"<html><head><title>403 - Forbidden: Access is denied.</title></head><body>"
         b"<h2>403 - Forbidden: Access is denied.</h2><h3>You do not have permission to "
         b"view this directory or page using the credentials that you supplied.</h3>"
         b"</body></html>",
    401: b"<html><head><title>401 - Unauthorized: Access is denied due to invalid "
         b"credentials.</title></head><body><h2>401 - Unauthorized</h2></body></html>",
}


def extension_list_answer(fields, code, extensions):
    """GetExtensions' answer to a request's `fields` when the account's code is `code`:
    ERR 1 "Unauthorized" for no code at all, an empty list for a wrong one."""
    given = str(fields.get("code") or "")
    if not given.strip():
        return {"ERR": 1, "DESC": "Unauthorized", "EXTENSIONS": []}
    if given != code:
        return {"ERR": 0, "DESC": "OK", "EXTENSIONS": []}
    return {"ERR": 0, "DESC": "OK", "EXTENSIONS": extensions}


class VoicenterStandIn:
    """Voicenter's Click2Call and extension list on 127.0.0.1, in a thread."""

    def __init__(self):
        self.code = CODE
        self.extensions = [dict(item) for item in EXTENSIONS]
        self.click2call_error = 0
        #: "ok", "hang", "500", "not-json", "403" or "401", per API ("click2call",
        #: "extensions").
        self.mode = {"click2call": "ok", "extensions": "ok"}
        self.requests: list[tuple[str, str, dict]] = []
        self.call_log = CallLogStandin(code=CODE)  # its answer() only: never started
        self.calls = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                standin._answer(self, None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                standin._answer(self, self.rfile.read(length))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        self.call_log.release()              # its held ("hang") answers go
        self.call_log._server.server_close()  # the port it took, never served
        self.server.shutdown()
        self.server.server_close()

    def requests_to(self, path):
        with self._lock:
            return [fields for _method, asked, fields in self.requests if asked == path]

    # Answering -----------------------------------------------------------------
    def _answer(self, handler, body):
        parts = urllib.parse.urlsplit(handler.path)
        if parts.path == "/hub/cdr/" and body is not None:
            self._send(handler, *self.call_log.answer(body))
            return
        fields = dict(urllib.parse.parse_qsl(parts.query))
        if body:
            try:
                data = json.loads(body.decode("utf-8"))
            except ValueError:
                data = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
            if isinstance(data, dict):
                fields.update(data)
        with self._lock:
            self.requests.append((handler.command, parts.path, fields))
        if parts.path == "/ForwardDialer/click2call.aspx":
            self._click2call(handler, fields)
        elif parts.path == "/Comet/api/GetExtensions":
            self._extensions(handler, fields)
        else:
            self._send(handler, 404, "text/html", b"<html><body>Not Found</body></html>")

    def _trouble(self, handler, api):
        mode = self.mode.get(api, "ok")
        if mode == "hang":
            self._stopping.wait(HANG_AT_MOST)
            handler.close_connection = True
            return True
        if mode == "500":
            self._send(handler, 500, "text/html",
                       b"<html><body><h1>Server Error in '/' Application.</h1></body></html>")
            return True
        if mode == "not-json":
            self._send(handler, 200, "text/html", b"<html><body>Service Unavailable"
                                                  b"</body></html>")
            return True
        if mode in ("403", "401"):
            self._send(handler, int(mode), "text/html", REFUSED_PAGES[int(mode)])
            return True
        return False

    def _click2call(self, handler, fields):
        if self._trouble(handler, "click2call"):
            return
        if fields.get("code") != self.code or not fields.get("phone") \
                or not fields.get("target") or fields.get("action") not in ("call",
                                                                            "terminate"):
            error = 1
        else:
            error = self.click2call_error
        with self._lock:
            self.calls += 1
            call_id = f"20261204c2c{self.calls:06d}" if error == 0 else ""
        answer = {"ERRORCODE": error, "ERRORMESSAGE": ERROR_MESSAGES.get(error, "Error"),
                  "CALLID": call_id}
        if str(fields.get("format", "")).lower() == "json":
            self._send(handler, 200, "application/json", json.dumps(answer).encode())
        else:
            xml = ("<?xml version=\"1.0\" encoding=\"utf-8\"?><Click2CallResponse>"
                   + "".join(f"<{key}>{value}</{key}>" for key, value in answer.items())
                   + "</Click2CallResponse>")
            self._send(handler, 200, "text/xml", xml.encode())

    def _extensions(self, handler, fields):
        if self._trouble(handler, "extensions"):
            return
        answer = extension_list_answer(fields, self.code, self.extensions)
        self._send(handler, 200, "application/json",
                   json.dumps(answer, ensure_ascii=False).encode("utf-8"))

    @staticmethod
    def _send(handler, status, content_type, body):
        content_type = content_type.split(";")[0]
        handler.send_response(status)
        handler.send_header("Content-Type", f"{content_type}; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
