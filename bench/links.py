"""What a signed caller link (issue 13) adds to a pop-up answer without a URL: microseconds
to make one with CallerLinks (as /popup does), and to find it again within the hour,
against one lookup (answer_for() of a hit on the
sample contacts, the work of a /popup request) measured in the same run.

    python bench/links.py [--number 200000] [--repeats 7]

Prints the median of the repeats and the ratio link / lookup."""
import argparse
import itertools
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import popup_server as ps  # noqa: E402


def per_call(statement, number, repeats):
    timings = timeit.repeat(statement, number=number, repeat=repeats)
    return statistics.median(timings) / number * 1e6  # microseconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="calls per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    config = ps.parse_config([str(ps.DEFAULT_CONTACTS)], environ={})
    index = ps.load_index(config.contacts_file, **config.load_options())
    fields = {"phone": "0722776772", "ivrid": "2026112610000aaaa", "statusCall": "Ringing"}
    assert ps.answer_for(index, "0722776772", fields, config).total == 1
    secret = b"x" * 43
    lookup = per_call(lambda: ps.answer_for(index, "0722776772", fields, config),
                      args.number, args.repeats)
    links = ps.CallerLinks(secret, 30)
    numbers = itertools.count(972500000000)
    first = per_call(lambda: links.link("https://popup.example.com", f"+{next(numbers)}"),
                     args.number, args.repeats)
    repeat = per_call(lambda: links.link("https://popup.example.com", "+972722776772"),
                      args.number, args.repeats)
    print(f"lookup (answer_for, a hit): {lookup:.2f} us")
    print(f"CallerLinks.link(), a number's first link: {first:.2f} us "
          f"({first / lookup:.2f} of a lookup)")
    print(f"CallerLinks.link(), the same number again within the hour (a call's next "
          f"phase): {repeat:.2f} us ({repeat / lookup:.2f} of a lookup)")


if __name__ == "__main__":
    main()
