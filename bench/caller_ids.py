"""What reading a caller id costs in each written form (number_key()), as a ratio to
the commonest one, an Israeli number written nationally (0541234567, the fast path),
measured in the same run: bare national numbers (the fast path, or is_valid_number
where a foreign reading could be valid), and foreign ones with and without their +.

    python bench/caller_ids.py [--number 20000] [--repeats 5]

Prints microseconds a call (the median of the repeats) and the ratio to the national form."""
import argparse
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import popup_server as ps  # noqa: E402

FORMS = [
    ("national (baseline)", "0541234567"),
    ("bare 072, fast path", "722776772"),
    ("bare 054, is_valid_number", "547771111"),
    ("bare invalid, both readings", "501234567"),
    ("with 972", "972541234567"),
    ("foreign with +", "+33612345678"),
    ("foreign without + (Voicenter)", "33612345678"),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rules = ps.number_rules("IL")
    figures = []
    for label, text in FORMS:
        timings = timeit.repeat(lambda: ps.number_key(text, rules), number=args.number,
                                repeat=args.repeats)
        figures.append((label, text, statistics.median(timings) / args.number * 1e6))
    baseline = figures[0][2]
    for label, text, micros in figures:
        print(f"{label:32s} {text:14s} {micros:8.2f} µs  {micros / baseline:6.1f} ×")


if __name__ == "__main__":
    main()
