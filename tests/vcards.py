"""vCard files written the way phones and address books export them, for the tests.

Each ``write_*`` function writes one .vcf file byte for byte as its exporter writes
it (version, line ends, folding, quoted-printable, code page, byte-order mark) and
returns ``(path, contacts)``: each contact a dict {card, name, company, url,
numbers}, ``card`` its position in the file (from 1), ``numbers`` caller ids as the
phone system sends them, each written differently from the card. The people and
numbers are made up; the layouts follow the exporters (see shared notes on contact
files); choices that are not certain are said where they are made.
"""

from __future__ import annotations

import base64
from pathlib import Path

CRLF = "\r\n"
UTF8_BOM = b"\xef\xbb\xbf"


def person(card, name, company, url, *numbers):
    return {"card": card, "name": name, "company": company, "url": url,
            "numbers": list(numbers)}


def fold(line: str, width: int = 75, split_characters: bool = False) -> str:
    """A content line folded as RFC 2426/6350 say: at most `width` octets a line, each
    continuation starting with one space. RFC 6350 forbids splitting a UTF-8
    character; RFC 2426 did not, and octet-counting writers do
    (``split_characters``)."""
    data = line.encode("utf-8")
    pieces, limit = [], width
    while len(data) > limit:
        cut = limit
        if not split_characters:
            while cut > 0 and (data[cut] & 0xC0) == 0x80:  # a continuation byte
                cut -= 1
        pieces.append(data[:cut])
        data, limit = data[cut:], width - 1  # the leading space counts
    pieces.append(data)
    return b"\r\n ".join(pieces).decode("utf-8", "surrogateescape")


def _photo_lines(octets: int, first: str, indent: str = " ") -> list[str]:
    """A base64 JPEG-ish blob: `first` (the property and the start of the data) then
    continuation lines of 74 characters, each after `indent`."""
    blob = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(range(256)) * (octets // 256))
    text = blob.decode("ascii")
    head = 75 - len(first)
    return [first + text[:head]] + [indent + text[i:i + 74]
                                    for i in range(head, len(text), 74)]


def _write(path: Path, lines: list[str], *, encoding="utf-8", bom=False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = CRLF.join(lines).encode(encoding, "surrogateescape") + CRLF.encode()
    path.write_bytes((UTF8_BOM if bom else b"") + data)
    return path


# --------------------------------------------------------------------------
# iPhone / iCloud / macOS Contacts: vCard 3.0, CRLF, raw UTF-8, grouped
# properties with Apple's X-ABLabel, type= in lower case repeated per type,
# PHOTO as folded base64; a company card has FN = the company and N:;;;;.
# --------------------------------------------------------------------------

def write_iphone(tmp_path: Path):
    lines = [
        "BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Apple Inc.//iPhone OS 17.5.1//EN",
        "N:כהן;נועה;;;", "FN:נועה כהן", "ORG:אקמה בע\"מ;מכירות;", "TITLE:מנהלת מכירות",
        "item1.TEL;type=CELL;type=VOICE;type=pref:+972 54-123-4567",
        "item1.X-ABLabel:_$!<Mobile>!$_",
        "TEL;type=WORK;type=VOICE:03-555-1111",
        "item2.EMAIL;type=INTERNET;type=pref:noa@acme.example",
        "item3.URL;type=pref:https://crm.example.com/contact/1001",
        "item3.X-ABLabel:CRM",
        "NOTE:Prefers WhatsApp\\, after 10:00. Her old number 050-999-8888 is gone.",
        *_photo_lines(1200, "PHOTO;ENCODING=b;TYPE=JPEG:"),
        "END:VCARD",
        "BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Apple Inc.//iPhone OS 17.5.1//EN",
        "N:Levi;Dan;;;", "FN:Dan Levi", "ORG:Levi\\, Shapiro & Co.;",
        "item1.TEL;type=pref:072-277-6772", "item1.X-ABLabel:Office",
        "TEL;type=IPHONE;type=CELL;type=VOICE:052 7654321",
        "END:VCARD",
        # A company, as Contacts keeps it: no person's name, shown as the company.
        "BEGIN:VCARD", "VERSION:3.0", "PRODID:-//Apple Inc.//iPhone OS 17.5.1//EN",
        "N:;;;;", "FN:מוסך השרון", "ORG:מוסך השרון;", "X-ABShowAs:COMPANY",
        "TEL;type=MAIN:09-765-4321",
        "END:VCARD",
    ]
    path = _write(tmp_path / "iphone" / "Contacts.vcf", lines)
    return path, [
        person(1, "נועה כהן", "אקמה בע\"מ", "https://crm.example.com/contact/1001",
               "0541234567", "+97235551111"),
        person(2, "Dan Levi", "Levi, Shapiro & Co.", "", "+972722776772",
               "00972527654321"),
        person(3, "מוסך השרון", "מוסך השרון", "", "097654321"),
    ]


# --------------------------------------------------------------------------
# Android (stock Contacts, "Export to .vcf"): vCard 2.1, CRLF. A value that is not
# plain ASCII is quoted-printable, every byte as =XX, with a soft line break "="
# + CRLF once a line holds 67 characters of it (Android's VCardBuilder), each part
# of N encoded on its own. Types are bare parameters (TEL;CELL). A photo is
# ENCODING=BASE64, folded with a space and followed by an empty line.
# Samsung's Contacts writes a custom label as X-CUSTOM(CHARSET=...,label).
# --------------------------------------------------------------------------

def android_qp(text: str) -> str:
    """Android's quoted-printable: every UTF-8 byte as =XX, "=" CRLF after 67."""
    out, count = [], 0
    for byte in text.encode("utf-8"):
        out.append(f"={byte:02X}")
        count += 3
        if count >= 67:
            out.append("=\r\n")
            count = 0
    return "".join(out)


def _qp_line(prop: str, *parts: str) -> str:
    return (f"{prop};CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:"
            + ";".join(android_qp(p) for p in parts))


def write_android(tmp_path: Path):
    lines = [
        "BEGIN:VCARD", "VERSION:2.1",
        _qp_line("N", "בן-דוד", "אביגיל", "", "", ""),
        _qp_line("FN", "אביגיל בן-דוד"),
        "TEL;CELL:054-222-3333",
        "TEL;HOME:03-555-4444",
        "TEL;WORK;FAX:03-555-4445",  # a fax: never indexed, as in a CSV
        _qp_line("ORG", "ספריית העיר"),
        _qp_line("NOTE", "לקוחה ותיקה מאז 2015, מעדיפה שיחות בבוקר ולא בערב, "
                         "להתקשר ל-03-555-9999 רק בחירום"),
        "EMAIL;HOME:avigail@example.org",
        *_photo_lines(900, "PHOTO;ENCODING=BASE64;JPEG:"), "",
        "END:VCARD",
        "BEGIN:VCARD", "VERSION:2.1",
        "N:Mizrahi;Yossi;;;", "FN:Yossi Mizrahi",
        "TEL;CELL;PREF:+972-50-111-2222",
        "TEL;X-CUSTOM(CHARSET=UTF-8,ENCODING=QUOTED-PRINTABLE,"
        + android_qp("עבודה") + "):02-6665555",
        "URL:https://crm.example.com/contact/2002",
        "END:VCARD",
        # A long Hebrew name: its quoted-printable runs over two soft line breaks.
        "BEGIN:VCARD", "VERSION:2.1",
        _qp_line("N", "שטרנברג-רוזנבלום", "אלכסנדרה-מרגריטה", "", "", ""),
        _qp_line("FN", "אלכסנדרה-מרגריטה שטרנברג-רוזנבלום"),
        "TEL;CELL:0587778888",
        "END:VCARD",
    ]
    path = _write(tmp_path / "android" / "00001.vcf", lines)
    return path, [
        person(1, "אביגיל בן-דוד", "ספריית העיר", "", "+972542223333", "035554444"),
        person(2, "Yossi Mizrahi", "", "https://crm.example.com/contact/2002",
               "0501112222", "+97226665555"),
        person(3, "אלכסנדרה-מרגריטה שטרנברג-רוזנבלום", "", "", "+972587778888"),
    ]


# --------------------------------------------------------------------------
# Google Contacts, Export > "vCard (for iOS Contacts)": 3.0, CRLF, TYPE= in
# capitals, Apple's item groups for labels, the colon of a URL escaped
# (https\://), lines folded at 75 octets. Whether Google splits a UTF-8 character
# at a fold is not certain: here it does (RFC 2426 allows it), the harder case.
# --------------------------------------------------------------------------

def write_google(tmp_path: Path):
    lines = [
        "BEGIN:VCARD", "VERSION:3.0",
        fold("FN:רונית אברהמי-גולדשטיין (הנהלת חשבונות, המשרד הראשי בתל אביב)",
             split_characters=True),
        fold("N:אברהמי-גולדשטיין;רונית;;;", split_characters=True),
        "EMAIL;TYPE=INTERNET;TYPE=WORK:ronit@example.co.il",
        "TEL;TYPE=CELL:+972 52-765-4321",
        "TEL;TYPE=WORK:(03) 555-6789",
        "ADR;TYPE=WORK:;;רחוב הרצל 1;תל אביב;;;ישראל",
        "ORG:רואי חשבון אברהמי",
        "item1.URL:https\\://crm.example.com/contact/3003",
        "item1.X-ABLabel:CRM",
        "CATEGORIES:myContacts",
        "END:VCARD",
        "BEGIN:VCARD", "VERSION:3.0",
        "FN:Sam Carter", "N:Carter;Sam;;;",
        "TEL;TYPE=CELL:+1 212-555-0187",
        "item1.TEL:00972722000000", "item1.X-ABLabel:Switchboard",
        "NOTE:Met at the fair\\nCall 1-800-555-0199 for the assistant",
        "CATEGORIES:myContacts,Suppliers",
        "END:VCARD",
    ]
    path = _write(tmp_path / "google" / "contacts.vcf", lines)
    return path, [
        person(1, "רונית אברהמי-גולדשטיין (הנהלת חשבונות, המשרד הראשי בתל אביב)",
               "רואי חשבון אברהמי", "https://crm.example.com/contact/3003",
               "0527654321", "+97235556789"),
        person(2, "Sam Carter", "", "", "+12125550187", "0722000000"),
    ]


# --------------------------------------------------------------------------
# Outlook ("Save as vCard", one contact a file): 2.1, CRLF, text in the Windows
# code page (Windows-1255 on Hebrew Windows) with no CHARSET, a LANGUAGE
# parameter, the address label in quoted-printable of the same code page.
# --------------------------------------------------------------------------

def write_outlook(tmp_path: Path):
    lines = [
        "BEGIN:VCARD", "VERSION:2.1",
        "N;LANGUAGE=he:שמעוני;דנה", "FN:דנה שמעוני",
        "ORG:שיווק ישיר בע\"מ", "TITLE:מנהלת לקוחות",
        "TEL;WORK;VOICE:03-5553333",
        "TEL;CELL;VOICE:052-5552222",
        "TEL;WORK;FAX:03-5554444",
        "ADR;WORK;PREF:;;הברזל 3;תל אביב;;6971005;ישראל",
        "LABEL;WORK;PREF;ENCODING=QUOTED-PRINTABLE:"
        + "".join(f"={b:02X}" for b in "הברזל 3".encode("cp1255")) + "=0D=0A"
        + "".join(f"={b:02X}" for b in "תל אביב".encode("cp1255")),
        "URL;WORK:https://crm.example.com/contact/4004",
        "EMAIL;PREF;INTERNET:dana@example.co.il",
        "REV:20240115T083000Z",
        "END:VCARD",
    ]
    path = _write(tmp_path / "outlook" / "דנה שמעוני.vcf", lines, encoding="cp1255")
    return path, [
        person(1, "דנה שמעוני", "שיווק ישיר בע\"מ", "https://crm.example.com/contact/4004",
               "035553333", "+972525552222"),
    ]


# --------------------------------------------------------------------------
# vCard 4.0 (RFC 6350, as Nextcloud/SabreDAV serve it): TEL as a tel: URI with
# VALUE=uri and a quoted TYPE list, an extension as ;ext=.
# --------------------------------------------------------------------------

def write_vcard4(tmp_path: Path):
    lines = [
        "BEGIN:VCARD", "VERSION:4.0", "PRODID:-//Sabre//Sabre VObject 4.5.4//EN",
        "UID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1",
        "FN:Tamar Golan", "N:Golan;Tamar;;;",
        "ORG:Golan Architects",
        'TEL;VALUE=uri;TYPE="voice,cell":tel:+972-52-555-1234',
        "TEL;VALUE=uri;TYPE=work;PREF=1:tel:+972-3-555-1234;ext=12",
        "EMAIL;TYPE=work:tamar@golan.example",
        "URL:https://crm.example.com/contact/5005",
        "END:VCARD",
        "BEGIN:VCARD", "VERSION:4.0",
        "UID:urn:uuid:0d5c7b2e-9a4f-4a53-8f0c-3c1d0e6a2b77",
        "FN:", "N:;;;;", "ORG:Golan Printing",
        "TEL;VALUE=uri;TYPE=work:tel:+972-4-866-0000",
        "END:VCARD",
    ]
    path = _write(tmp_path / "nextcloud" / "contacts-2024-06-01.vcf", lines)
    return path, [
        person(1, "Tamar Golan", "Golan Architects", "https://crm.example.com/contact/5005",
               "0525551234", "035551234"),
        person(2, "Golan Printing", "Golan Printing", "", "048660000"),
    ]


# --------------------------------------------------------------------------
# A damaged file (a backup cut short, cards pasted together by hand): a UTF-8
# byte-order mark, a card without END:VCARD before the next one, a card with a
# line of garbage, a good card with a photo, and a last card cut off by the
# end of the file. The good cards load; the others are reported by line.
# --------------------------------------------------------------------------

def write_damaged(tmp_path: Path):
    photo = _photo_lines(3000, "PHOTO;ENCODING=b;TYPE=JPEG:")
    lines = [
        "BEGIN:VCARD", "VERSION:3.0", "FN:Good One", "TEL;TYPE=CELL:054-100-0001",
        "END:VCARD",                                                     # lines 1-5
        "BEGIN:VCARD", "VERSION:3.0", "FN:No End", "TEL;TYPE=CELL:054-100-0002",
        #                                                                   lines 6-9
        "BEGIN:VCARD", "VERSION:3.0", "FN:Garbage Inside",
        "\x01\x02 this line is no property",
        "TEL;TYPE=CELL:054-100-0003", "END:VCARD",                      # lines 10-15
        "BEGIN:VCARD", "VERSION:3.0", "FN:דוד עם תמונה",
        "TEL;TYPE=CELL:054-100-0004", *photo, "END:VCARD",
        "BEGIN:VCARD", "VERSION:3.0", "FN:Cut Short", "TEL;TYPE=CELL:054-100-0005",
    ]
    path = _write(tmp_path / "damaged" / "backup.vcf", lines, bom=True)
    last = lines.index("FN:Cut Short")  # 0-based index of the line after BEGIN+VERSION
    return path, {
        "good": [person(1, "Good One", "", "", "0541000001"),
                 person(4, "דוד עם תמונה", "", "", "+972541000004")],
        "damaged": {2: 6, 3: 10, 5: last - 1},  # card -> the line it begins on
        "absent": ["0541000002", "0541000003", "0541000005"],
        "photo_lines": len(photo),
    }


ALL_VCARD_WRITERS = {
    "iphone": write_iphone,
    "android": write_android,
    "google": write_google,
    "outlook": write_outlook,
    "vcard4": write_vcard4,
}
