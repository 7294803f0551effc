#!/usr/bin/env python3
"""The floor: Bottle on waitress answering one constant JSON, nothing else.

usage: python floor_server.py PORT [THREADS=4]

GET /popup (any query) -> the same constant JSON a hit of popup_server answers.
Served on 127.0.0.1 with the same waitress settings as popup_server (see
waitress_options below), so that the only difference between the two
servers in the benchmark is the work popup_server does per request.
"""
import json
import sys

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


@app.get("/health")
def health():
    return {"status": "ok"}


def waitress_options(threads=4):
    """The keyword arguments popup_server gives waitress.serve (kept in step by hand)."""
    return {"threads": threads, "_quiet": True}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    port = int(argv[0])
    threads = int(argv[1]) if len(argv) > 1 else 4
    import logging
    import waitress
    # waitress logs "Task queue depth is N" once per queued request under load;
    # that logging is not what we measure.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    waitress.serve(app, host="127.0.0.1", port=port, **waitress_options(threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
