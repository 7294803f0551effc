#!/usr/bin/env python3
"""The floor: Bottle on waitress answering one constant JSON, nothing else.

usage: python floor_server.py PORT [THREADS=8]

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


def waitress_options(threads=8):
    """The settings popup_server.serve() gives waitress (mirrored by hand: keep in step)."""
    return dict(threads=threads, ident="popup-server", connection_limit=1000,
                channel_timeout=30, cleanup_interval=10,
                max_request_body_size=65536 * 4, max_request_header_size=64 * 1024,
                expose_tracebacks=False, asyncore_use_poll=True)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    port = int(argv[0])
    threads = int(argv[1]) if len(argv) > 1 else 8
    import logging
    import waitress.server
    # as popup_server does: waitress logs "Task queue depth is N" once per queued request
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = waitress.server.create_server(app, host="127.0.0.1", port=port,
                                           **waitress_options(threads))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
