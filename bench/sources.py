#!/usr/bin/env python3
"""popup-server benchmark of the other sources (issue 12): vCard, .ods and .xls.

usage: python bench/sources.py [--vcards 10000,100000] [--rows 10000] [--repeats 3]

Prints, each as median [min-max] over fresh server processes, process start to a
ready /health (the same measure as bench/run.py's start-up):
  vcard     N vCards (iPhone 3.0 cards; every 5th an Android 2.1 card with its
            Hebrew name in quoted-printable) vs a CSV of the same contacts.
            Goal: 10,000 vCards ready in under 2 s.
  workbook  the same ROWS contacts as .ods and .xls vs as .xlsx, all three written by
            LibreOffice from one CSV (skipped without soffice).
With vobject installed (pip install vobject; not a requirement), also the time
vobject takes to parse the 10,000-card file, for docs/contact-files.md's comparison.
Runs on 127.0.0.1 only; every process it starts is ended before it exits.
"""
import argparse
import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import gen_contacts  # noqa: E402
import libreoffice  # noqa: E402  (tests/libreoffice.py: soffice --convert-to)
import run  # noqa: E402  (bench/run.py: servers, /health polling, ranges)
import vcards  # noqa: E402  (tests/vcards.py: Android's quoted-printable)

SERVER = HERE.parent / "popup_server.py"
HEBREW_FIRST = "נועה תמר מאיה יעל שירה עדי מיכל אבי דוד משה יוסי איתי".split()
HEBREW_LAST = "כהן לוי מזרחי פרץ ביטון דהן אברהם פרידמן אזולאי מלכה".split()


def contacts_csv(n, folder, seed=12345):
    """N synthetic contacts (bench/gen_contacts.py), every 5th with a Hebrew name:
    the CSV and its rows."""
    raw = folder / f"raw-{n}.csv"
    gen_contacts.generate(n, raw, seed)
    with open(raw, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    raw.unlink()
    for i in range(4, n, 5):
        rows[i]["name"] = f"{HEBREW_FIRST[i % 12]} {HEBREW_LAST[i % 10]}"
    path = folder / f"contacts-{n}.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path, rows


def iphone_card(row):
    first, _, last = row["name"].partition(" ")
    lines = ["BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Apple Inc.//iPhone OS 17.5.1//EN",
             f"N:{last};{first};;;", f"FN:{row['name']}",
             f"ORG:{row['company']};"]
    if row["mobile"]:
        lines += [f"item1.TEL;type=CELL;type=VOICE;type=pref:{row['mobile']}",
                  "item1.X-ABLabel:_$!<Mobile>!$_"]
    lines += [f"TEL;type=WORK;type=VOICE:{row['phone']}",
              f"item2.URL;type=pref:{row['url']}", "item2.X-ABLabel:CRM",
              "END:VCARD"]
    return lines


def android_card(row):
    first, _, last = row["name"].partition(" ")
    lines = ["BEGIN:VCARD", "VERSION:2.1",
             "N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:"
             + ";".join(vcards.android_qp(part) for part in (last, first, "", "", "")),
             "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:" + vcards.android_qp(row["name"]),
             f"TEL;HOME:{row['phone']}"]
    if row["mobile"]:
        lines.append(f"TEL;CELL:{row['mobile']}")
    return lines + [f"ORG:{row['company']}", f"URL:{row['url']}", "END:VCARD"]


def write_vcards(rows, path):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for i, row in enumerate(rows):
            card = android_card(row) if i % 5 == 4 else iphone_card(row)
            handle.write("\r\n".join(card) + "\r\n")
    return path


def ready_seconds(procs, path):
    port = run.free_port()
    started = time.perf_counter()
    process = procs.start(run.server_cmd(SERVER, path, port), f"ready-{port}",
                          cwd=SERVER.parent)
    try:
        _, health = run.wait_ready(port, process, 600)
        return time.perf_counter() - started, health["contacts"]
    finally:
        procs.stop(process)


def compare(procs, label, subject, baseline, repeats):
    """Time-to-ready of subject and baseline, alternating; printed and returned."""
    times = {"subject": [], "baseline": []}
    for r in range(repeats):
        for which in (("subject", "baseline") if r % 2 == 0 else ("baseline", "subject")):
            path = subject if which == "subject" else baseline
            secs, contacts = ready_seconds(procs, path)
            times[which].append(secs)
            run.say(f"  rep {r + 1}/{repeats} {path.name:>22}: {secs:6.2f} s "
                    f"({contacts} contacts)")
    ratios = [s / b for s, b in zip(times["subject"], times["baseline"])]
    run.say(f"  {label}: {run.fmt_range(times['subject'])} s vs "
            f"{run.fmt_range(times['baseline'])} s; ratio {run.fmt_range(ratios)}")
    return times, ratios


def vobject_seconds(path):
    try:
        import vobject
    except ImportError:
        return None
    started = time.perf_counter()
    with open(path, encoding="utf-8") as handle:
        cards = sum(1 for _ in vobject.readComponents(handle.read()))
    return time.perf_counter() - started, cards


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vcards", default="10000,100000",
                        help="numbers of vCards, comma-separated (default 10000,100000)")
    parser.add_argument("--rows", type=int, default=10000,
                        help="rows of the .ods/.xls/.xlsx comparison (default 10000)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="popup-bench-sources-"))
    procs = run.Procs(work)
    summary = []
    try:
        for n in (int(text) for text in args.vcards.split(",") if text):
            run.say(f"\n== {n:,} vCards vs a CSV of the same contacts ==")
            csv_path, rows = contacts_csv(n, work)
            vcf_path = write_vcards(rows, work / f"contacts-{n}.vcf")
            times, ratios = compare(procs, f"{n:,} vCards", vcf_path, csv_path, args.repeats)
            worst = max(times["subject"])
            goal = f"; goal < 2 s: {'met' if worst < 2 else 'NOT met'}" if n == 10_000 else ""
            summary.append(f"{n:,} vCards ready: {run.fmt_range(times['subject'])} s; "
                           f"vs the CSV: {run.fmt_range(ratios)}{goal}")
            if n == 10_000 and (parsed := vobject_seconds(vcf_path)):
                summary.append(f"vobject parsing the {parsed[1]:,} cards alone: "
                               f"{parsed[0]:.2f} s")
        if not libreoffice.SOFFICE:
            run.say("\nno soffice (LibreOffice): the .ods/.xls comparison is skipped")
        else:
            run.say(f"\n== {args.rows:,} rows as .ods and .xls vs as .xlsx "
                    "(all written by LibreOffice) ==")
            csv_path, _rows = contacts_csv(args.rows, work)
            books = {kind: libreoffice.convert(csv_path, kind, work / kind)
                     for kind in ("xlsx", "ods", "xls")}
            for kind in ("ods", "xls"):
                times, ratios = compare(procs, f".{kind}", books[kind], books["xlsx"],
                                        args.repeats)
                summary.append(f"{args.rows:,} rows as .{kind} ready: "
                               f"{run.fmt_range(times['subject'])} s; vs .xlsx "
                               f"{run.fmt_range(times['baseline'])} s: "
                               f"{run.fmt_range(ratios)}")
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    run.say("\n== summary (median [min–max]) ==")
    for line in summary:
        run.say("  " + line)


if __name__ == "__main__":
    main()
