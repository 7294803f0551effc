#!/usr/bin/env python3
"""Write N seeded synthetic Israeli contacts to a CSV file.

usage: python gen_contacts.py N OUT.csv [SEED=12345]

Columns: name,company,phone,mobile,url
 - phone:  landline (02/03/04/08/09) or VoIP (072/073/074/076/077/079)
 - mobile: 050/052/053/054/055/058, empty in about 15% of rows
   (so 1,000,000 rows hold about 1.85 million numbers)
 - every number is unique in the file (the phone and mobile number spaces are
   disjoint and each is sampled without replacement)
 - each number is written in one of five forms, chosen at random:
     "072-277-6772"  "+972 52 123 4567"  "0521234567"  "972521234567"
     "(03) 123-4567"
The same (N, SEED) always gives the same file. Last line printed: figures.
"""
import csv
import random
import sys
import time

LAND_PREFIXES = ["2", "3", "4", "8", "9", "72", "73", "74", "76", "77", "79"]
MOBILE_PREFIXES = ["50", "52", "53", "54", "55", "58"]
SUBS = 8_000_000  # subscriber numbers 2000000..9999999 for each prefix
EMPTY_MOBILE = 0.15


def fmt(prefix, sub, style):
    """One number (prefix '52', subscriber index 0..SUBS-1) in written form 0..4."""
    s = str(2_000_000 + sub)
    if style == 0:
        return f"0{prefix}-{s[:3]}-{s[3:]}"
    if style == 1:
        return f"+972 {prefix} {s[:3]} {s[3:]}"
    if style == 2:
        return f"0{prefix}{s}"
    if style == 3:
        return f"972{prefix}{s}"
    return f"(0{prefix}) {s[:3]}-{s[3:]}"


FIRST = ("Noa Tamar Maya Yael Shira Adi Michal Lior Roni Dana Avi David Moshe "
         "Yossi Itay Omer Eitan Daniel Ariel Amit Yonatan Nir Gal Tal Ido Ran "
         "Oren Hila Keren Sarit Ahmad Mohammad Rami Lina Sami Nadia").split()
LAST = ("Cohen Levi Mizrahi Peretz Biton Dahan Avraham Friedman Azulay Malka "
        "Katz Shapiro Gabay Ohayon Yosef Amar Hadad Ben-David Klein Goldberg "
        "Rosen Weiss Haddad Khoury Nasser Saleh Mansour Barak Segal Carmi").split()
CO_A = ("Galil Negev Carmel Yarden Kinneret Arava Sharon Golan Hermon Tavor "
        "Eilat Modiin Ayalon Sorek Dan").split()
CO_B = ("Systems Logistics Insurance Dental Motors Foods Software Realty "
        "Electric Optics Textiles Legal Travel Security Media").split()
CO_C = ["Ltd", "Ltd.", "Inc", "Group", "& Sons", ""]


def generate(n, out, seed=12345):
    rnd = random.Random(seed)
    land_ids = rnd.sample(range(len(LAND_PREFIXES) * SUBS), n)
    mob_ids = rnd.sample(range(len(MOBILE_PREFIXES) * SUBS), n)
    numbers = 0
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "company", "phone", "mobile", "url"])
        for i in range(n):
            lid, mid = land_ids[i], mob_ids[i]
            phone = fmt(LAND_PREFIXES[lid // SUBS], lid % SUBS, rnd.randrange(5))
            if rnd.random() < EMPTY_MOBILE:
                mobile = ""
            else:
                mobile = fmt(MOBILE_PREFIXES[mid // SUBS], mid % SUBS, rnd.randrange(5))
                numbers += 1
            numbers += 1
            name = f"{rnd.choice(FIRST)} {rnd.choice(LAST)}"
            company = " ".join(x for x in (rnd.choice(CO_A), rnd.choice(CO_B), rnd.choice(CO_C)) if x)
            w.writerow([name, company, phone, mobile, f"https://crm.example.com/contact/{i + 1}"])
    return numbers


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    n, out = int(argv[0]), argv[1]
    seed = int(argv[2]) if len(argv) > 2 else 12345
    t0 = time.perf_counter()
    numbers = generate(n, out, seed)
    print(f"rows={n} numbers={numbers} out={out} seed={seed} "
          f"seconds={time.perf_counter() - t0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
