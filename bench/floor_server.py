#!/usr/bin/env python3
"""The floor: Bottle on waitress answering one constant JSON (or, in lookup mode, a dict lookup).

usage: python floor_server.py PORT [THREADS=4] [stock|tuned|lookup QUERIES.expected]

GET /popup (any query) -> the same constant JSON a hit of popup_server answers, as
bytes encoded once; GET /hello -> the same as a dict that Bottle encodes each time (the
shape of the constant-JSON route the project's goals are measured against).
  stock  waitress as it comes: create_server(app, threads=THREADS) (the issue's yardstick)
  tuned  the very settings and channel popup_server serves with
         (popup_server.create_server), so that the only difference between this
         floor and popup_server is the work popup_server does per request.
  lookup the tuned floor, but /popup looks the answer up: the least a Bottle route
         can do to answer a lookup (no plugins, Bottle's own query parsing, one
         dict.get on the caller id exactly as written, json.dumps), with the answers
         of a queries file. No normalising, no index: what the tools cost for one.
"""
import json
import sys
from pathlib import Path

import bottle

BODY = json.dumps({"STATUS": "OK", "TOTAL": 1, "CLIENTNAME": "Noa Cohen",
                   "COMPANY": "Galil Systems Ltd",
                   "URL": "https://crm.example.com/contact/1"},
                  ensure_ascii=False).encode("utf-8")

app = bottle.Bottle()


@app.get("/popup")
def popup():
    bottle.response.content_type = "application/json; charset=utf-8"
    return BODY


ANSWERS = {}  # caller id as written -> name; filled in lookup mode


def lookup_popup():
    """The lookup floor's /popup (routed only in lookup mode)."""
    name = ANSWERS.get(bottle.request.query.get("phone", ""))
    bottle.response.content_type = "application/json; charset=utf-8"
    if name is None:
        return json.dumps({"STATUS": "OK", "TOTAL": 0, "CLIENTNAME": "", "COMPANY": "",
                           "URL": ""}).encode("utf-8")
    return json.dumps({"STATUS": "OK", "TOTAL": 1, "CLIENTNAME": name,
                       "COMPANY": "Galil Systems Ltd", "URL": "https://crm.example.com/contact/1"},
                      ensure_ascii=False).encode("utf-8")


def load_answers(expected_path):
    """QUERIES.expected lines ("/popup?phone=...<TAB>name") -> ANSWERS, keyed the way
    Bottle decodes the query (unquote_plus; the queries are ASCII)."""
    from urllib.parse import parse_qs, urlsplit
    with open(expected_path, encoding="utf-8") as lines:
        for line in lines:
            path, _, name = line.rstrip("\n").partition("\t")
            phone = parse_qs(urlsplit(path).query).get("phone", [""])[0]
            if name:
                ANSWERS[phone] = name


@app.get("/hello")
def hello():
    """The issue's yardstick shape: a constant dict, encoded by Bottle's JSON plugin."""
    return {"STATUS": "OK", "CLIENTNAME": "Noa Cohen", "COMPANY": "Galil Systems Ltd",
            "TOTAL": 1, "URL": "https://crm.example.com/contact/1"}


@app.get("/health")
def health():
    return {"status": "ok"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    port = int(argv[0])
    threads = int(argv[1]) if len(argv) > 1 else 4
    mode = argv[2] if len(argv) > 2 else "tuned"
    import logging
    import waitress.server
    # waitress logs "Task queue depth is N" once per queued request; popup_server too
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if mode == "lookup":
        load_answers(argv[3])
        app.route("/popup", "GET", lookup_popup, skip=True)  # replaces the constant route
    if mode == "stock":
        server = waitress.server.create_server(app, host="127.0.0.1", port=port,
                                               threads=threads)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import popup_server
        config = popup_server.Config(host="127.0.0.1", port=port, threads=threads)
        server = popup_server.create_server(app, config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
