"""Contact sources other than CSV and .xlsx (issue 12): vCard from phones and address
books, LibreOffice .ods, Excel 97-2003 .xls, and the errors for files of other kinds.

vCards are written byte for byte by tests/vcards.py; .ods and .xls are written by
LibreOffice itself (tests/libreoffice.py) from a workbook made here, at test time.
Each kind is loaded with no flags, checked with the real `--check`, and asked for
pop-ups over HTTP.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import libreoffice  # noqa: E402
import popup_server as ps  # noqa: E402
import vcards  # noqa: E402

VCARDS = sorted(vcards.ALL_VCARD_WRITERS)


def check(run_cli, path, *flags):
    """(exit status, stdout lines, stderr) of `popup_server.py PATH --check`."""
    result = run_cli(path, "--check", *flags)
    return (result.returncode, result.stdout.decode("utf-8").splitlines(),
            result.stderr.decode("utf-8"))


def value_of(lines, label):
    return next(line.split(": ", 1)[1] for line in lines if line.startswith(label + ": "))


# --------------------------------------------------------------------------
# vCard
# --------------------------------------------------------------------------

@pytest.mark.parametrize("exporter", VCARDS)
def test_each_exporters_vcard_finds_every_contact_with_its_name_company_and_url(
        tmp_path, exporter):
    path, contacts = vcards.ALL_VCARD_WRITERS[exporter](tmp_path)
    index = ps.load_index(path)
    assert index.contacts == len(contacts)
    for person in contacts:
        for caller_id in person["numbers"]:
            match = index.lookup(caller_id)
            assert match.total == 1, (caller_id, person)
            found = match.contact
            assert (found.name, found.company, found.url, found.row) == (
                person["name"], person["company"], person["url"], person["card"]), caller_id


@pytest.mark.parametrize("exporter", VCARDS)
def test_check_of_each_exporters_vcard_reports_its_cards(tmp_path, run_cli, exporter):
    path, contacts = vcards.ALL_VCARD_WRITERS[exporter](tmp_path)
    status, lines, errors = check(run_cli, path)
    assert status == 0, errors
    assert value_of(lines, "encoding").endswith("(vCard)")
    assert value_of(lines, "delimiter") == "(vCard)"
    assert value_of(lines, "name column") == "Name"
    assert value_of(lines, "company column") == "Company"
    assert value_of(lines, "phone columns").startswith("Phone 1")
    assert value_of(lines, "url column") == "URL"
    assert value_of(lines, "cards read") == str(len(contacts))
    assert f"{len(contacts)} contacts can be found" in lines
    assert "cards skipped: 0" in lines


@pytest.mark.parametrize("exporter", VCARDS)
def test_a_vcard_answers_pop_ups_over_http_with_hebrew_names(tmp_path, start_server,
                                                             popup_answer, exporter):
    path, contacts = vcards.ALL_VCARD_WRITERS[exporter](tmp_path)
    server = start_server(path)
    for person in contacts:
        answer = server.lookup(person["numbers"][-1])
        popup_answer(answer)
        assert (answer["TOTAL"], answer["CLIENTNAME"], answer["COMPANY"]) \
            == (1, person["name"], person["company"])
        assert answer["URL"] == person["url"] if person["url"] else \
            answer["URL"].startswith(server.url + "/caller/")  # its own page (issue 13)
    assert server.health()["contacts"] == len(contacts)


def test_android_quoted_printable_hebrew_over_soft_line_breaks_is_read_whole(tmp_path):
    path, contacts = vcards.write_android(tmp_path)
    raw = path.read_bytes()
    assert b"=\r\n=D7" in raw and b"CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE" in raw
    index = ps.load_index(path)
    assert index.lookup("0587778888").contact.name == "אלכסנדרה-מרגריטה שטרנברג-רוזנבלום"
    assert index.lookup("0542223333").contact.company == "ספריית העיר"


def test_a_line_folded_inside_a_utf8_character_reads_as_the_unfolded_text(tmp_path):
    path, contacts = vcards.write_google(tmp_path)
    continuations = path.read_bytes().split(b"\r\n ")[1:]
    assert any(0x80 <= line[0] < 0xC0 for line in continuations)  # half a character
    assert ps.load_index(path).lookup("0527654321").contact.name == contacts[0]["name"]


def test_an_outlook_vcard_in_windows_1255_without_a_charset_reads_hebrew(tmp_path, run_cli):
    path, contacts = vcards.write_outlook(tmp_path)
    assert "דנה".encode("cp1255") in path.read_bytes()
    status, lines, errors = check(run_cli, path)
    assert status == 0, errors
    assert value_of(lines, "encoding") == "windows-1255 (vCard)"
    found = ps.load_index(path).lookup("0525552222").contact
    assert (found.name, found.company) == ("דנה שמעוני", 'שיווק ישיר בע"מ')


def test_fax_numbers_and_numbers_in_notes_are_not_indexed(tmp_path):
    android, _ = vcards.write_android(tmp_path)
    iphone, _ = vcards.write_iphone(tmp_path)
    google, _ = vcards.write_google(tmp_path)
    assert ps.load_index(android).lookup("035554445").total == 0        # TEL;WORK;FAX
    assert ps.load_index(android).lookup("035559999").total == 0        # in the NOTE
    assert ps.load_index(iphone).lookup("0509998888").total == 0        # in the NOTE
    assert ps.load_index(google).lookup("+18005550199").total == 0      # in the NOTE


def test_phone_labels_come_from_the_group_label_or_the_type(tmp_path):
    path, _ = vcards.write_iphone(tmp_path)
    index = ps.load_index(path, keep_columns=("Phone 1 - Label", "Phone 2 - Label"))
    noa = index.lookup("0541234567").contact
    assert (noa.fields["Phone 1 - Label"], noa.fields["Phone 2 - Label"]) == ("Mobile", "Work")
    android, _ = vcards.write_android(tmp_path)
    yossi = ps.load_index(android, keep_columns=("Phone 2 - Label",)).lookup(
        "026665555").contact
    assert yossi.fields["Phone 2 - Label"] == "עבודה"  # Samsung's X-CUSTOM label


def test_damaged_cards_are_skipped_and_reported_by_line_while_the_rest_load(
        tmp_path, run_cli):
    path, expected = vcards.write_damaged(tmp_path)
    assert path.read_bytes().startswith(b"\xef\xbb\xbfBEGIN:VCARD\r\n")
    status, lines, errors = check(run_cli, path)
    assert status == 0, errors
    assert "cards read: 5" in lines
    assert "2 contacts can be found" in lines
    assert "cards skipped: 3" in lines
    begins = expected["damaged"]
    assert (f"  card 2: no END:VCARD before the next card; the card from line {begins[2]}"
            " is skipped") in lines
    assert (f"  card 3: line {begins[3] + 3} is not a vCard property: '\\x01\\x02 this line"
            f" is no property'; the card from line {begins[3]} is skipped") in lines
    assert (f"  card 5: no END:VCARD before the end of the file; the card from line "
            f"{begins[5]} is skipped") in lines
    index = ps.load_index(path)
    for person in expected["good"]:
        found = index.lookup(person["numbers"][0]).contact
        assert (found.name, found.row) == (person["name"], person["card"])
    for caller_id in expected["absent"]:
        assert index.lookup(caller_id).total == 0, caller_id


def test_a_photo_is_skipped_and_nothing_of_it_reaches_a_field(tmp_path, start_server):
    path, expected = vcards.write_damaged(tmp_path)
    assert expected["photo_lines"] > 40
    server = start_server(path, "--url-template", "https://crm.example.com/{Note}{E-mail}")
    answer = server.lookup("0541000004")
    assert answer["CLIENTNAME"] == "דוד עם תמונה"
    assert answer["URL"] == "https://crm.example.com/"


@pytest.mark.parametrize("name", ["contacts.csv", "export.txt", "contacts"])
def test_a_vcard_is_known_by_its_content_whatever_its_name(tmp_path, name, run_cli):
    source, contacts = vcards.write_iphone(tmp_path)
    path = tmp_path / name
    shutil.copy(source, path)
    status, lines, errors = check(run_cli, path)
    assert status == 0, errors
    assert value_of(lines, "delimiter") == "(vCard)"
    assert f"{len(contacts)} contacts can be found" in lines


def test_a_vcf_with_text_before_its_first_card_is_still_a_vcard(tmp_path):
    source, contacts = vcards.write_google(tmp_path)
    path = tmp_path / "with-heading.vcf"
    path.write_bytes(b"Exported contacts\r\n" + source.read_bytes())
    index = ps.load_index(path)
    assert index.contacts == len(contacts)
    assert any("line 1: not inside a card" in reason for _row, reason in index.skipped)


def test_a_vcard_without_phone_numbers_says_so_and_suggests_no_flag(tmp_path, run_cli):
    path = tmp_path / "emails.vcf"
    path.write_bytes(b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Only Mail\r\n"
                     b"EMAIL;TYPE=INTERNET:only@example.com\r\nEND:VCARD\r\n")
    status, lines, errors = check(run_cli, path)
    assert status == 2
    assert "vCard file with no phone numbers (1 cards" in errors
    assert "--phone-columns" not in errors and "--" not in errors.split(":", 1)[1]
    assert len(errors.strip().splitlines()) == 1


# --------------------------------------------------------------------------
# .ods and .xls, written by LibreOffice
# --------------------------------------------------------------------------

CUSTOMERS = "לקוחות"
SUPPLIERS = "ספקים"


@pytest.fixture(scope="module")
def workbooks(tmp_path_factory):
    """{"ods": path, "xls": path}: one workbook, saved by LibreOffice in each kind.

    Made with openpyxl first: a Hebrew sheet whose header is on row 2 (row 1 empty),
    phone numbers stored as number cells (the leading zero gone, one a float), one
    as text, a row with no number, a company-only row; a second sheet of suppliers.
    """
    if not libreoffice.SOFFICE:
        if libreoffice.required():
            pytest.fail("LibreOffice is required here (apt-get install "
                        "libreoffice-calc-nogui)", pytrace=False)
        pytest.skip("needs LibreOffice (Debian's libreoffice-calc-nogui)")
    import openpyxl
    folder = tmp_path_factory.mktemp("libreoffice")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = CUSTOMERS
    sheet.append([])
    sheet.append(["שם", "חברה", "טלפון", "נייד", "קישור"])
    sheet.append(["נועה כהן", "אקמה", 541234567, "+972 52-765-4321",
                  "https://crm.example.com/contact/1"])
    sheet.append(["Dan Levi", "Levi & Co", 972722776772, 35556789.0, ""])
    sheet.append(["בלי מספר", "אקמה", None, None, ""])
    sheet.append([None, "מוסך השרון", "09-765-4321", None, ""])
    suppliers = book.create_sheet(SUPPLIERS)
    suppliers.append(["Name", "Phone"])
    suppliers.append(["Supplier One", 35551234])
    source = folder / "source" / "contacts.xlsx"
    source.parent.mkdir()
    book.save(source)
    return {kind: libreoffice.convert(source, kind, folder / kind) for kind in ("ods", "xls")}


#: (caller id, name, company, URL, spreadsheet row) on the first sheet.
WORKBOOK_CONTACTS = [
    ("+972541234567", "נועה כהן", "אקמה", "https://crm.example.com/contact/1", 3),
    ("0527654321", "נועה כהן", "אקמה", "https://crm.example.com/contact/1", 3),
    ("0722776772", "Dan Levi", "Levi & Co", "", 4),
    ("035556789", "Dan Levi", "Levi & Co", "", 4),
    ("097654321", "מוסך השרון", "מוסך השרון", "", 6),
]


@pytest.mark.parametrize("kind", ["ods", "xls"])
def test_a_libreoffice_workbook_loads_with_numbers_repaired_and_hebrew_names(
        workbooks, kind):
    path = workbooks[kind]
    magic = path.read_bytes()[:8]
    assert magic.startswith(b"PK\x03\x04" if kind == "ods" else b"\xd0\xcf\x11\xe0")
    index = ps.load_index(path)
    assert index.kind == kind and index.delimiter is None
    assert index.contacts == 3
    for caller_id, name, company, url, row in WORKBOOK_CONTACTS:
        found = index.lookup(caller_id).contact
        assert found is not None, caller_id
        assert (found.name, found.company, found.url, found.row) == (name, company, url, row)
    assert [row for row, _reason in index.skipped] == [5]


@pytest.mark.parametrize("kind", ["ods", "xls"])
def test_check_of_a_libreoffice_workbook(workbooks, run_cli, kind):
    status, lines, errors = check(run_cli, workbooks[kind])
    assert status == 0, errors
    assert value_of(lines, "encoding") == kind
    assert value_of(lines, "delimiter") == f"({kind})"
    assert value_of(lines, "name column") == "שם"
    assert value_of(lines, "company column") == "חברה"
    assert set(value_of(lines, "phone columns").split(", ")) == {"טלפון", "נייד"}
    assert "3 contacts can be found" in lines
    assert "  row 5: no usable phone number" in lines


@pytest.mark.parametrize("kind", ["ods", "xls"])
def test_a_libreoffice_workbook_answers_pop_ups_over_http(workbooks, start_server,
                                                          popup_answer, kind):
    server = start_server(workbooks[kind])
    for caller_id, name, company, url, _row in WORKBOOK_CONTACTS:
        answer = server.lookup(caller_id)
        popup_answer(answer)
        assert (answer["TOTAL"], answer["CLIENTNAME"], answer["COMPANY"]) \
            == (1, name, company)
        assert answer["URL"] == url if url else \
            answer["URL"].startswith(server.url + "/caller/")  # its own page (issue 13)


@pytest.mark.parametrize("kind", ["ods", "xls"])
def test_sheet_chooses_a_sheet_of_an_ods_or_xls(workbooks, kind, run_cli):
    index = ps.load_index(workbooks[kind], sheet=SUPPLIERS)
    assert index.lookup("035551234").contact.name == "Supplier One"
    status, _lines, errors = check(run_cli, workbooks[kind], "--sheet", "Nope")
    assert status == 2
    assert f"has no sheet 'Nope' (sheets: {CUSTOMERS}, {SUPPLIERS})" in errors


@pytest.mark.parametrize("kind", ["ods", "xls"])
def test_a_workbook_is_known_by_its_content_not_its_name(workbooks, tmp_path, kind):
    path = tmp_path / "contacts.xlsx"   # saved under the wrong name
    shutil.copy(workbooks[kind], path)
    index = ps.load_index(path)
    assert index.kind == kind
    assert index.lookup("0541234567").contact.name == "נועה כהן"


# --------------------------------------------------------------------------
# Files of kinds that cannot be read: say what the file looks like
# --------------------------------------------------------------------------

def _zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


NOT_CONTACTS = {
    "pdf": ("contacts.pdf", lambda p: p.write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog "
                                                    b">>\nendobj\ntrailer\n%%EOF\n"),
            "looks like a PDF document"),
    "zip": ("contacts.zip", lambda p: _zip(p, {"export/contacts.csv": "name,phone\nA,1\n"}),
            "looks like a zip archive (holding export/contacts.csv), not a contacts file;"
            " unzip it and give the contacts file inside;"),
    "numbers": ("Contacts.numbers", lambda p: _zip(p, {
        "Index/Document.iwa": b"\x00\x01", "Metadata/Properties.plist": b"<plist/>"}),
        "looks like an Apple Numbers (or Pages, Keynote) document"),
    "html as xls": ("report.xls", lambda p: p.write_text(
        "<html><body><table><tr><td>Name</td><td>Phone</td></tr></table></body></html>"),
        "looks like a web page (HTML)"),
    "calendar": ("calendar.ics", lambda p: p.write_bytes(
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n"),
        "looks like an iCalendar file"),
    "png": ("contacts.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32),
            "looks like a PNG image"),
}


@pytest.mark.parametrize("case", sorted(NOT_CONTACTS))
def test_a_file_of_another_kind_says_what_it_looks_like_and_what_is_read(
        tmp_path, run_cli, case):
    name, write, looks_like = NOT_CONTACTS[case]
    path = tmp_path / name
    write(path)
    status, _lines, errors = check(run_cli, path)
    assert status == 2
    assert errors.count("\n") == 1, errors               # one line
    assert f"{path}: {looks_like}" in errors
    assert "CSV" in errors and ".xlsx" in errors and ".ods" in errors and ".vcf" in errors
    assert "--phone-columns" not in errors and "--encoding" not in errors


def test_a_damaged_xls_says_it_cannot_be_read_as_one(tmp_path, run_cli):
    path = tmp_path / "old.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    status, _lines, errors = check(run_cli, path)
    assert status == 2
    assert f"{path}: cannot be read as an Excel 97-2003 workbook (.xls): " in errors
    assert errors.count("\n") == 1 and "--phone-columns" not in errors


def test_mangled_vcards_load_what_they_can_and_never_raise_anything_else(tmp_path):
    """Seeded, so the same 300 files every run: bytes changed, cut, or spliced in."""
    import random
    rnd = random.Random(12)
    sources = [write(tmp_path)[0].read_bytes() for write in vcards.ALL_VCARD_WRITERS.values()]
    splices = [b"=", b":", b";", b'"', b"\r\n", b"\r\n ", b"ENCODING=QUOTED-PRINTABLE",
               b"CHARSET=idna", b"CHARSET=\x00", b"BEGIN:VCARD\r\n", b"END:VCARD\r\n",
               b"\x00", b"\\", b"\xff\xfe"]
    loaded = 0
    for n in range(300):
        data = bytearray(rnd.choice(sources))
        for _ in range(rnd.randint(1, 6)):
            position = rnd.randrange(len(data))
            choice = rnd.random()
            if choice < 0.4:
                data[position] = rnd.randrange(256)
            elif choice < 0.6:
                del data[position:position + rnd.randint(1, 40)]
            else:
                data[position:position] = rnd.choice(splices)
        path = tmp_path / f"mangled-{n}.vcf"
        path.write_bytes(bytes(data))
        try:
            index = ps.load_index(path)
        except ps.ContactsFileError:
            continue
        ps.load_report(index)
        loaded += index.contacts > 0
    assert loaded > 150, loaded
