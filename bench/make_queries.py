#!/usr/bin/env python3
"""Request paths for wrk (popup.lua), one per line, and the answers they expect.

usage: python make_queries.py CSV OUT.txt [N=10000] [HIT_FRACTION=0.5] [SEED=7]

Hits are numbers taken from CSV (phone or mobile column), re-written in a
randomly chosen form (so they usually differ in form from the stored string);
misses are numbers from the same prefix spaces that are not in CSV.
Also writes OUT.txt.expected: one line per path, "PATH<TAB>NAME" for a hit
(NAME = the contact's name column) and "PATH<TAB>" for a miss, for
correctness checks. Last line printed: figures.
"""
import csv
import os
import random
import re
import sys
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_contacts import LAND_PREFIXES, MOBILE_PREFIXES, SUBS, fmt  # noqa: E402

NONDIGIT = re.compile(r"\D")


def norm(s):
    """Any of the five written forms -> national form '0521234567'."""
    d = NONDIGIT.sub("", s)
    if d.startswith("00972"):
        return "0" + d[5:]
    if d.startswith("972"):
        return "0" + d[3:]
    return d


def split_national(n):
    """'0521234567' -> ('52', subscriber index) ; '031234567' -> ('3', ...)"""
    nat = n[1:]
    return nat[:-7], int(nat[-7:]) - 2_000_000


def make(src, n=10000, hit_frac=0.5, seed=7):
    """Return [(path, expected_name_or_None)]."""
    rnd = random.Random(seed)
    known, names = [], {}
    with open(src, newline="", encoding="utf-8") as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            for v in (row[2], row[3]):
                if v:
                    k = norm(v)
                    known.append(k)
                    names[k] = row[0]
    out = []
    for _ in range(n):
        if rnd.random() < hit_frac:
            k = rnd.choice(known)
            prefix, sub = split_national(k)
            expected = names[k]
        else:
            while True:
                prefix = rnd.choice(LAND_PREFIXES + MOBILE_PREFIXES)
                sub = rnd.randrange(SUBS)
                if norm(fmt(prefix, sub, 2)) not in names:
                    break
            expected = None
        out.append(("/popup?phone=" + quote(fmt(prefix, sub, rnd.randrange(5)), safe=""),
                    expected))
    return out


def write(queries, out):
    with open(out, "w") as f:
        f.write("\n".join(p for p, _ in queries) + "\n")
    with open(out + ".expected", "w", encoding="utf-8") as f:
        for p, name in queries:
            f.write(f"{p}\t{name or ''}\n")


def read_expected(path):
    """OUT.txt.expected -> [(path, name_or_None)]."""
    res = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                p, _, name = line.partition("\t")
                res.append((p, name or None))
    return res


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = argv[0], argv[1]
    n = int(argv[2]) if len(argv) > 2 else 10000
    hit_frac = float(argv[3]) if len(argv) > 3 else 0.5
    seed = int(argv[4]) if len(argv) > 4 else 7
    q = make(src, n, hit_frac, seed)
    write(q, out)
    hits = sum(1 for _, e in q if e is not None)
    print(f"queries={n} hits={hits} misses={n - hits} out={out} expected={out}.expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
