"""Two copies of popup_server.py side by side: requests a second through wrk, and the
time to a ready /health, alternating between them in fresh processes, as a ratio this
copy / the other for every pair (a waitress process keeps the speed it starts with, so
only many fresh pairs say whether a change moved the pop-up).

    python bench/compare.py OTHER/popup_server.py [--pairs 6] [--conns 1,32]
                            [--contacts 100000] [--startup-contacts 1000000]

OTHER is typically a clone at an older commit (`git worktree add /tmp/old COMMIT`).
Prints every pair, then median [min–max] of the ratios. Needs wrk; everything runs on
127.0.0.1 and every server is stopped before the next pair."""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import run  # the benchmark's own helpers: data, servers, wrk

HERE = Path(__file__).resolve().parent


def ratio_line(what, mine, other):
    ratios = [a / b for a, b in zip(mine, other)]
    return (f"{what}: this / other median {statistics.median(ratios):.2f} "
            f"[{min(ratios):.2f}–{max(ratios):.2f}] (this {statistics.median(mine):,.2f}, "
            f"other {statistics.median(other):,.2f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("other", type=Path, help="the other copy's popup_server.py")
    parser.add_argument("--server", type=Path, default=HERE.parent / "popup_server.py")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--conns", default="1,32", help="wrk connections, comma list")
    parser.add_argument("--duration", type=int, default=5, help="seconds a wrk run")
    parser.add_argument("--contacts", type=int, default=100_000, help="for the wrk runs")
    parser.add_argument("--startup-contacts", type=int, default=1_000_000,
                        help="for the start-up runs (0: none)")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "popup-bench-cache")
    args = parser.parse_args(argv)
    conns = [int(c) for c in args.conns.split(",")]
    copies = {"this": args.server.resolve(), "other": args.other.resolve()}
    csv_path, q_path = run.ensure_data(args.cache, args.contacts, 12345, 20000)
    big = (run.ensure_data(args.cache, args.startup_contacts, 12345, 20000)[0]
           if args.startup_contacts else None)
    rps = {(name, c): [] for name in copies for c in conns}
    ready = {name: [] for name in copies}
    procs = run.Procs(tempfile.mkdtemp(prefix="popup-compare-"))
    try:
        for pair in range(args.pairs):
            order = list(copies) if pair % 2 == 0 else list(copies)[::-1]
            started = {name: run.start_server(procs, copies[name], csv_path)
                       for name in order}
            for name in order:  # warm-up, not counted
                run.run_wrk(started[name][1], 4, 1, q_path)
            for c in conns:
                for name in order:
                    rps[(name, c)].append(run.run_wrk(started[name][1], c, args.duration,
                                                      q_path)["rps"])
            for process, *_ in started.values():
                procs.stop(process)
            if big is not None:
                for name in order:
                    process, _, seconds, _ = run.start_server(procs, copies[name], big)
                    ready[name].append(seconds)
                    procs.stop(process)
            run.say(f"pair {pair + 1}/{args.pairs}: " + ", ".join(
                f"{name} {rps[(name, c)][-1]:,.0f} req/s at {c}" for c in conns
                for name in copies) + "".join(
                f", {name} ready in {ready[name][-1]:.2f} s" for name in copies if ready[name]))
    finally:
        procs.stop_all()
    run.say(f"\n{copies['this']} (this) against {copies['other']} (other), "
            f"{args.pairs} pairs:")
    for c in conns:
        run.say(ratio_line(f"req/s at {c} connection(s)", rps[("this", c)],
                           rps[("other", c)]))
    if big is not None:
        run.say(ratio_line(f"seconds to ready, {args.startup_contacts:,} contacts",
                           ready["this"], ready["other"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
