"""A real HTTP site on loopback for the contacts-link tests: each path answers as the
test sets it (a body, an ETag or Last-Modified, a status, a delay, a redirect), and
every request it receives is kept for the test to read."""

from __future__ import annotations

import email.utils
import http.server
import threading
import time


class Page:
    """How one path answers."""

    def __init__(self, body=b"", *, status=200, etag=None, last_modified=None, delay=0.0,
                 location=None, send_length=True, content_type="text/csv; charset=utf-8"):
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.status, self.etag, self.delay = status, etag, delay
        self.last_modified = (email.utils.formatdate(last_modified, usegmt=True)
                              if isinstance(last_modified, (int, float)) else last_modified)
        self.location, self.send_length, self.content_type = location, send_length, content_type


class LinkSite:
    def __init__(self, host="127.0.0.1"):
        self.pages: dict[str, Page] = {}
        self.requests: list[tuple[str, dict]] = []  # (path with query, headers)
        self.answers: list[tuple[str, int]] = []    # (path with query, status sent)
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                site.requests.append((self.path, dict(self.headers.items())))
                page = site.pages.get(self.path) or site.pages.get(self.path.split("?")[0])
                if page is None:
                    return self._send(404, b"no such page", {})
                if page.delay:
                    time.sleep(page.delay)
                headers = {}
                if page.location:
                    headers["Location"] = page.location
                if page.etag:
                    headers["ETag"] = page.etag
                if page.last_modified:
                    headers["Last-Modified"] = page.last_modified
                if page.status == 200 and (
                        (page.etag and self.headers.get("If-None-Match") == page.etag) or
                        (page.last_modified and not page.etag and
                         self.headers.get("If-Modified-Since") == page.last_modified)):
                    return self._send(304, b"", headers)
                self._send(page.status, page.body, headers, page)

            def _send(self, status, body, headers, page=None):
                site.answers.append((self.path, status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if page is not None and not page.send_length:
                    self.send_header("Connection", "close")  # the body ends with it
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                if page is not None:
                    self.send_header("Content-Type", page.content_type)
                self.end_headers()
                if status != 304:
                    try:
                        self.wfile.write(body)
                    except OSError:  # the client stopped reading (a size cap)
                        pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def statuses(self, path):
        return [status for answered, status in self.answers if answered == path]
