#!/usr/bin/env python3
"""popup-server benchmark of several sources and contacts links (issue 12, items 3-4).

usage: python bench/several_sources.py [--contacts 200000] [--repeats 3] [--polls 50]

Prints, each as median [min-max]:
  several   process start to a ready /health (fresh processes, as bench/run.py's
            start-up) serving N contacts as one CSV vs the same N split into two CSVs
            named as two sources (each loaded, then merged into one index).
  merge     in one process: merge_indexes() of the two halves vs load_index() of the
            whole file (the extra work a reload of one of several sources does).
  link      one poll of an unchanged link (a conditional request answered 304) and one
            of a changed link (download of the N/2-contact CSV, then its load) against
            a loopback http.server, vs load_index() of the same file from disk.
Runs on 127.0.0.1 only; every process it starts is ended before it exits.
"""
import argparse
import http.server
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import gen_contacts  # noqa: E402
import run  # noqa: E402  (bench/run.py: servers, /health polling, ranges)
import popup_server as ps  # noqa: E402

SERVER = HERE.parent / "popup_server.py"


def ready_seconds(procs, sources):
    port = run.free_port()
    command = run.server_cmd(SERVER, sources[0], port, extra=[str(s) for s in sources[1:]])
    started = time.perf_counter()
    process = procs.start(command, f"ready-{port}", cwd=SERVER.parent)
    try:
        _, health = run.wait_ready(port, process, 600)
        return time.perf_counter() - started, health["contacts"]
    finally:
        procs.stop(process)


def best_of(function, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def split(path, folder):
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    half = 1 + (len(lines) - 1) // 2
    first, second = folder / "first-half.csv", folder / "second-half.csv"
    first.write_text("".join(lines[:half]), encoding="utf-8")
    second.write_text(lines[0] + "".join(lines[half:]), encoding="utf-8")
    return first, second


def serve_folder(folder):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--polls", type=int, default=50)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="popup-several-"))
    (folder / "logs").mkdir()
    procs = run.Procs(folder / "logs")
    try:
        whole = folder / "whole.csv"
        gen_contacts.generate(args.contacts, whole, 12345)
        first, second = split(whole, folder)

        run.say(f"several: {args.contacts:,} contacts, one file vs two halves")
        times = {"one": [], "two": []}
        for r in range(args.repeats):
            for which in (("one", "two") if r % 2 == 0 else ("two", "one")):
                secs, contacts = ready_seconds(procs, [whole] if which == "one"
                                               else [first, second])
                times[which].append(secs)
                run.say(f"  rep {r + 1} {which}: {secs:.2f} s ({contacts} contacts)")
        ratios = [t / o for t, o in zip(times["two"], times["one"])]
        run.say(f"  ready: two sources {run.fmt_range(times['two'])} s vs one file "
                f"{run.fmt_range(times['one'])} s; ratio {run.fmt_range(ratios)}")

        config = ps.parse_config([str(whole)], environ={})
        halves = [ps.load_index(path, **config.load_options()) for path in (first, second)]
        merge = best_of(lambda: ps.merge_indexes(halves), args.repeats * 2)
        load = best_of(lambda: ps.load_index(whole, **config.load_options()),
                       args.repeats * 2)
        run.say(f"merge: merge_indexes of the halves {run.fmt_range(merge, '{:.3f}')} s "
                f"vs load_index of the whole {run.fmt_range(load, '{:.3f}')} s")

        site = serve_folder(folder)
        link = f"http://127.0.0.1:{site.server_address[1]}/{first.name}"
        config = ps.parse_config([link, "--url-timeout", "120",
                                  "--url-max-bytes", str(1 << 32)], environ={})
        source = ps.LinkSource(link, config, folder / "downloads")
        source.index = source.load()  # the first download, as at start-up
        unchanged = best_of(lambda: source.read(), args.polls)
        changed = []
        for _ in range(args.repeats * 2):
            source._etag = source._modified = None  # as if the link had changed
            changed += best_of(lambda: source.read(), 1)
        from_disk = best_of(lambda: ps.load_index(first, **config.load_options()),
                            args.repeats * 2)
        site.shutdown()
        run.say(f"link: a poll of an unchanged link {statistics.median(unchanged) * 1000:.1f}"
                f" ms [{min(unchanged) * 1000:.1f}–{max(unchanged) * 1000:.1f}] "
                f"({args.polls} polls); a changed one (download + load of "
                f"{args.contacts // 2:,} contacts) {run.fmt_range(changed)} s vs the "
                f"same file from disk {run.fmt_range(from_disk)} s")
    finally:
        procs.stop_all()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
