"""Reading each kind of contacts file: the exports of Google, Outlook and Excel (CSV in
each encoding and delimiter, Excel's Unicode text, .xlsx), written byte for byte by
tests/exports.py; a phone's or address book's vCard (tests/vcards.py); .ods and .xls
written by LibreOffice itself (tests/libreoffice.py); and files of other kinds. Which
columns are the name, the company and the numbers, and the flags that choose them
(--sheet, --name-column, ...); what is skipped or reported, with its row; fax numbers
kept off the index; and the one-line error naming a file that cannot be used."""

from __future__ import annotations

import re
import shutil
import zipfile

import pytest

import exports
import libreoffice
import popup_server as ps
import vcards
from conftest import write_contacts

FIXTURES = sorted(exports.ALL_WRITERS)


@pytest.fixture(params=FIXTURES)
def loaded(request, tmp_path):
    """(index, expected, path) for every fixture, loaded with no hints."""
    path, expected = exports.ALL_WRITERS[request.param](tmp_path)
    return ps.load_index(path), expected, path


def _chosen_columns(index) -> set[str]:
    cols = index.columns
    chosen = set(cols.name) | set(cols.phones)
    if cols.company:
        chosen.add(cols.company)
    return chosen


# Every layout and encoding of the exports, with no hints ------------------------------


def test_every_contact_is_found_by_caller_ids_written_differently(loaded):
    index, expected, _ = loaded
    for c in expected.contacts:
        for caller_id in c["numbers"]:
            match = index.lookup(caller_id)
            assert match.contact is not None, (caller_id, c["name"])
            assert match.contact.name == c["name"], caller_id
            assert match.total == 1, caller_id


def test_names_companies_and_rows_are_exact(loaded):
    index, expected, _ = loaded
    for c in expected.contacts:
        found = index.lookup(c["numbers"][0]).contact
        assert found is not None, c
        assert (found.name, found.company, found.row) == (c["name"], c["company"], c["row"])


def test_the_number_of_findable_contacts_and_rows_read_are_counted(loaded):
    index, expected, _ = loaded
    assert index.rows_read == expected.rows_read
    assert index.contacts == len(expected.contacts)


def test_the_number_of_distinct_numbers_indexed_is_counted(loaded):
    index, expected, _ = loaded
    if expected.numbers is None:
        pytest.skip("this fixture has numbers whose use is a judgement call (fax)")
    assert index.numbers == expected.numbers


def test_the_encoding_is_detected(loaded):
    index, expected, _ = loaded
    assert index.read_as == expected.read_as


def test_the_delimiter_is_detected(loaded):
    index, expected, _ = loaded
    if expected.delimiter is None:
        pytest.skip("workbooks have no delimiter")
    assert index.delimiter == expected.delimiter


def test_the_name_company_and_phone_columns_are_chosen(loaded):
    index, expected, _ = loaded
    cols = index.columns
    if expected.name_columns is not None:
        assert tuple(cols.name) == expected.name_columns
    assert cols.name, "no name column chosen"
    assert cols.company == expected.company_column
    assert expected.phone_columns <= set(cols.phones), cols.phones


def test_phonetic_label_note_and_address_columns_are_never_names_or_numbers(loaded):
    index, expected, _ = loaded
    wrongly_chosen = _chosen_columns(index) & expected.not_columns
    assert not wrongly_chosen
    assert not [u for u in index.unusable if u[1] in expected.not_columns]


def test_rows_without_a_number_are_skipped_with_their_spreadsheet_row(loaded):
    index, expected, _ = loaded
    assert [row for row, _reason in index.skipped] == expected.skipped_rows
    for _row, reason in index.skipped:
        assert reason == "no usable phone number"


def test_a_shared_number_counts_every_contact_and_answers_the_first_in_file_order(loaded):
    index, expected, _ = loaded
    for caller_id, (total, first) in expected.shared.items():
        match = index.lookup(caller_id)
        assert (match.total, match.contact and match.contact.name) == (total, first)
    assert index.shared_numbers == len({index.lookup(c).e164 for c in expected.shared})


def test_numbers_in_notes_and_addresses_are_not_indexed(loaded):
    index, expected, _ = loaded
    for caller_id in expected.absent:
        match = index.lookup(caller_id)
        assert (match.total, match.contact) == (0, None), caller_id


def test_damaged_numbers_are_reported_with_row_and_column(loaded):
    index, expected, _ = loaded
    reported = [(row, column, cell) for row, column, cell, _reason in index.unusable]
    for row, column, text in expected.unusable:
        hits = [r for r in reported if r[0] == row and r[1] == column]
        assert hits, (row, column, reported)
        assert text in str(hits[0][2])
    # Nothing else is reported: extensions and separators are not damage.
    assert len(reported) == len(expected.unusable), reported


def test_chosen_headers_carry_no_byte_order_mark_or_padding(loaded):
    index, _, _ = loaded
    for header in _chosen_columns(index):
        assert "\ufeff" not in header and header == header.strip(), repr(header)


# Pitfalls of CSV files ----------------------------------------------------------------


def write(tmp_path, text, name="contacts.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize("writer", [exports.write_outlook_csv,
                                    exports.write_excel_csv_ansi,
                                    exports.write_excel_csv_semicolon])
def test_a_hebrew_windows_1255_file_never_loads_as_gibberish(tmp_path, writer):
    path, expected = writer(tmp_path)
    with pytest.raises(UnicodeDecodeError):  # the fixture really is not UTF-8
        path.read_bytes().decode("utf-8")
    index = ps.load_index(path)
    assert index.encoding == "windows-1255"
    for c in expected.contacts:
        found = index.lookup(c["numbers"][0]).contact
        assert found.name == c["name"]
        assert found.company == c["company"]
        assert not re.search("[\u00c0-\u00ff\ufffd]", found.name + found.company)
    for header in list(index.columns.name) + list(index.columns.phones):
        assert not re.search("[\u00c0-\u00ff\ufffd]", header), header


def test_the_byte_order_mark_does_not_stick_to_the_first_header(tmp_path):
    path, _ = exports.write_excel_csv_utf8(tmp_path)
    index = ps.load_index(path)
    assert tuple(index.columns.name) == ("שם פרטי", "שם משפחה")
    assert index.lookup("0503030303").contact.name == "אלון ברק"


def test_an_encoding_given_by_its_windows_name_gets_the_hebrew_checks(tmp_path):
    path = write(tmp_path, "שם,טלפון\nדנה,0722776772\n", encoding="cp1255")
    index = ps.load_index(path, encoding="cp1255")
    assert index.encoding == "windows-1255"
    assert index.lookup("0722776772").contact.name == "דנה"


def test_a_trailing_delimiter_on_every_row_does_not_shift_the_columns(tmp_path):
    path = write(tmp_path, "Name,Company,Phone\nJohn Doe,Voicenter,0722776772,\n"
                           "Dana Levi,Galil,052-7654321,\n")
    index = ps.load_index(path)
    assert index.contacts == 2
    contact = index.lookup("0527654321").contact
    assert (contact.name, contact.company) == ("Dana Levi", "Galil")


def test_row_numbers_count_blank_rows_as_a_spreadsheet_does(tmp_path):
    path = write(tmp_path, "Name,Phone\nJohn,0722776772\n\nDana,oops\nNoa,0541234567\n")
    index = ps.load_index(path)
    assert index.lookup("0541234567").contact.row == 5
    assert index.skipped == ((4, "no usable phone number"),)


def test_a_company_without_a_person_shows_the_company_as_the_name(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    match = ps.load_index(path).lookup("972722776772")
    assert match.contact.name == 'מוסך הדר בע"מ'
    assert match.contact.company == 'מוסך הדר בע"מ'


def test_the_phonetic_name_is_not_used_for_a_hebrew_contact(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    index = ps.load_index(path)
    assert index.lookup("0541234567").contact.name == "דנה כהן"
    assert not any("Phonetic" in h for h in index.columns.name)


def test_both_numbers_of_a_google_cell_joined_by_three_colons_are_found(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    index = ps.load_index(path)
    assert index.lookup("035551234").contact.name == "דנה כהן"
    assert index.lookup("035551235").contact.name == "דנה כהן"


def test_google_rows_are_numbered_by_record_not_by_line_despite_multiline_cells(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    index = ps.load_index(path)
    assert index.lookup("+12125550147").contact.row == 6
    assert [row for row, _ in index.skipped] == [5]


@pytest.mark.parametrize("cell_number, caller_id, name", [
    ("03-5553333 ext. 12", "035553333", "Avi Mizrahi"),
    ("03-5553334 x12", "035553334", "Batya Golan"),
    ("03-5553335 #12", "035553335", "Chaim Peretz"),
    ("03-5553336 שלוחה 12", "035553336", "דורית שלום"),
])
def test_a_number_with_an_extension_is_found_by_the_number_without_it(
        tmp_path, cell_number, caller_id, name):
    path, _ = exports.write_messy_numbers_csv(tmp_path)
    index = ps.load_index(path)
    assert index.lookup(caller_id).contact.name == name
    assert index.lookup("12").total == 0


@pytest.mark.parametrize("caller_ids, name", [
    (["035551111", "0525552222"], "Eli Katz"),
    (["0722000000", "0722000001"], "Frida Navon"),
    (["0543000001", "0543000002"], "Gadi Baruch"),
])
def test_every_number_of_a_cell_with_several_is_found(tmp_path, caller_ids, name):
    path, _ = exports.write_messy_numbers_csv(tmp_path)
    index = ps.load_index(path)
    for caller_id in caller_ids:
        assert index.lookup(caller_id).contact.name == name, caller_id


def test_words_in_a_phone_cell_are_reported_not_read_as_a_keypad(tmp_path):
    path = write(tmp_path, "Name,Phone\nJohn,054-1234567 call after 5pm\nDana,052-7654321\n")
    index = ps.load_index(path)
    assert [u[0] for u in index.unusable] == [2]
    assert "words" in index.unusable[0][3]
    assert index.lookup("0541234567").total == 0


def test_a_switchboard_shared_by_two_contacts_gives_total_two_and_the_first(tmp_path):
    path, _ = exports.write_messy_numbers_csv(tmp_path)
    index = ps.load_index(path)
    match = index.lookup("035550000")
    assert match.total == 2
    assert match.contact.name == "Itai Ron"
    assert match.contact.row == 10
    assert index.shared_numbers == 1
    assert index.lookup("0504000002").contact.name == "Yael Tal"


def test_outlook_colleagues_sharing_the_company_main_phone_count_as_two(tmp_path):
    path, _ = exports.write_outlook_csv(tmp_path)
    match = ps.load_index(path).lookup("035550000")
    assert (match.total, match.contact.name) == (2, "דנה לוי")


def test_a_csv_cell_damaged_to_scientific_notation_is_reported_not_guessed(tmp_path):
    path, _ = exports.write_excel_csv_ansi(tmp_path)
    index = ps.load_index(path)
    assert [(r, c, cell) for r, c, cell, _ in index.unusable] == [(3, "טלפון", "5.41E+08")]
    assert index.lookup("0541000000").total == 0
    assert index.lookup("0523334444").contact.name == "רונית אברהם"


def test_a_number_that_libphonenumber_calls_invalid_is_still_indexed(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    assert ps.load_index(path).lookup("0501234567").contact.name == "John Smith"


# Workbooks (.xlsx) --------------------------------------------------------------------


def test_xlsx_numbers_that_lost_their_leading_zero_are_found(tmp_path):
    path, _ = exports.write_xlsx(tmp_path)
    index = ps.load_index(path)
    assert index.kind == "xlsx" and index.read_as == "xlsx"
    assert index.lookup("0541234567").contact.name == "Ofer Sade"
    assert index.lookup("035553399").contact.name == "Galit Noy"
    assert index.lookup("0541234568").contact.name == "Galit Noy"


def test_xlsx_scientific_notation_number_is_reported_not_guessed(tmp_path):
    path, _ = exports.write_xlsx(tmp_path)
    index = ps.load_index(path)
    assert index.lookup("0541000000").total == 0
    assert [(r, c) for r, c, _cell, _why in index.unusable] == [(4, "Mobile")]
    # Ronen Paz is still found by his other number and is not "skipped".
    assert index.lookup("035557788").contact.name == "Ronen Paz"
    assert 4 not in [row for row, _ in index.skipped]


def _scientific_xlsx(path):
    import openpyxl
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Name", "Phone"])
    for name, value in (("Full International", 972541234567), ("Full Local", 541234568),
                        ("Float Local", 521234569.0), ("Digits Lost", 541000000)):
        sheet.append([name, value])
        sheet.cell(sheet.max_row, 2).number_format = "0.00E+00"
    book.save(path)
    return path


def _assert_scientific_cells_read(index):
    assert index.lookup("0541234567").contact.name == "Full International"
    assert index.lookup("0541234568").contact.name == "Full Local"
    assert index.lookup("0521234569").contact.name == "Float Local"
    assert index.lookup("0541000000").total == 0
    assert [(column, cell) for _row, column, cell, _why in index.unusable] == [
        ("Phone", "5.41E+08")]
    assert "scientific notation" in index.unusable[0][3]


def test_a_scientific_xlsx_cell_with_all_its_digits_is_read(tmp_path):
    _assert_scientific_cells_read(ps.load_index(_scientific_xlsx(tmp_path / "sci.xlsx")))

_FODS = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"
 xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:number="urn:oasis:names:tc:opendocument:xmlns:datastyle:1.0" office:version="1.2"
 office:mimetype="application/vnd.oasis.opendocument.spreadsheet">
<office:automatic-styles>
<number:number-style style:name="N1"><number:scientific-number number:decimal-places="2"
 number:min-integer-digits="1" number:min-exponent-digits="2"/></number:number-style>
<style:style style:name="ce1" style:family="table-cell" style:data-style-name="N1"/>
</office:automatic-styles>
<office:body><office:spreadsheet><table:table table:name="Contacts">
<table:table-row><table:table-cell office:value-type="string"><text:p>Name</text:p>
</table:table-cell><table:table-cell office:value-type="string"><text:p>Phone</text:p>
</table:table-cell></table:table-row>
{rows}
</table:table></office:spreadsheet></office:body></office:document>
"""

_FODS_ROW = """<table:table-row><table:table-cell office:value-type="string"><text:p>{name}
</text:p></table:table-cell><table:table-cell table:style-name="ce1"
 office:value-type="float" office:value="{value}"><text:p>{value:.2E}</text:p>
</table:table-cell></table:table-row>"""


def test_a_scientific_cell_of_an_xlsx_saved_by_libreoffice_is_read(tmp_path):
    libreoffice.needed()
    rows = "\n".join(_FODS_ROW.format(name=name, value=value) for name, value in (
        ("Full International", 972541234567), ("Full Local", 541234568),
        ("Float Local", 521234569), ("Digits Lost", 541000000)))
    source = tmp_path / "scientific.fods"
    source.write_text(_FODS.replace("{rows}", rows), encoding="utf-8")
    written = libreoffice.convert(source, "xlsx", tmp_path / "lo")
    import openpyxl
    book = openpyxl.load_workbook(written, read_only=True)
    assert [cell.number_format for cell in next(book.worksheets[0].iter_rows(
        min_row=2, max_row=2))][1] == "0.00E+00"  # LibreOffice kept the format
    book.close()
    index = ps.load_index(written)
    assert index.lookup("0541234567").contact.name.strip() == "Full International"
    assert index.lookup("0541234568").total == 1 and index.lookup("0521234569").total == 1
    assert index.lookup("0541000000").total == 0


def test_repeated_headers_in_a_workbook_are_all_indexed(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    path = tmp_path / "twice.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["Name", "Phone", "Phone"])
    book.active.append(["John", "0722776772", "0541234567"])
    book.save(path)
    assert ps.load_index(path).lookup("0541234567").contact.name == "John"


def test_a_damaged_workbook_is_a_one_line_file_error(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    good = tmp_path / "good.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["Name", "Phone"])
    book.active.append(["John", "0722776772"])
    book.save(good)
    damaged = tmp_path / "damaged.xlsx"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]
            target.writestr(item, data)
    with pytest.raises(ps.ContactsFileError) as error:
        ps.load_index(damaged)
    assert "damaged.xlsx" in str(error.value) and "\n" not in str(error.value)


# Sheets and the columns named by flags ------------------------------------------------


def test_sheet_chooses_which_sheet_of_a_workbook_is_read(tmp_path):
    path, sheets = exports.write_xlsx_two_sheets(tmp_path)
    index = ps.load_index(path, sheet="Clients")
    for c in sheets["Clients"]:
        found = index.lookup(c["numbers"][0]).contact
        assert (found.name, found.row) == (c["name"], c["row"])
    assert index.lookup("039001111").total == 0
    assert index.contacts == 2


def test_without_sheet_the_first_sheet_is_read(tmp_path):
    path, sheets = exports.write_xlsx_two_sheets(tmp_path)
    index = ps.load_index(path)
    assert index.lookup("039001111").contact.name == "Avner Golan"
    assert index.lookup("0549002222").total == 0


def test_an_unknown_sheet_is_a_file_error_naming_the_sheet(tmp_path):
    path, _ = exports.write_xlsx_two_sheets(tmp_path)
    with pytest.raises(ps.ContactsFileError) as err:
        ps.load_index(path, sheet="Leads")
    assert "Leads" in str(err.value)
    assert path.name in str(err.value)


def test_name_column_override_replaces_the_guessed_name(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    index = ps.load_index(path, name_column="Nickname")
    assert tuple(index.columns.name) == ("Nickname",)
    assert index.lookup("0541234567").contact.name == "דנוש"
    assert index.lookup("0527654321").contact.name == "Yos"


def test_name_column_with_a_plus_joins_every_part(tmp_path):
    path = write(tmp_path, "Title,First Name,Last Name,Phone\nDr.,Dana,Levi,0722776772\n")
    index = ps.load_index(path, name_column="Title+First Name+Last Name")
    assert index.lookup("0722776772").contact.name == "Dr. Dana Levi"


def test_company_column_override_replaces_the_guessed_company(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    index = ps.load_index(path, company_column="Organization Department")
    assert index.columns.company == "Organization Department"
    assert index.lookup("0541234567").contact.company == "מיסים"


def test_phone_columns_override_limits_which_numbers_are_indexed(tmp_path):
    path, _ = exports.write_outlook_csv(tmp_path)
    index = ps.load_index(path, phone_columns=["Mobile Phone"])
    assert tuple(index.columns.phones) == ("Mobile Phone",)
    assert index.lookup("0525551313").contact.name == "דנה לוי"
    assert index.lookup("035551212").total == 0
    assert index.lookup("035550000").total == 0


def test_url_column_override_gives_each_contact_its_url(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    index = ps.load_index(path, url_column="Website 1 - Value")
    assert index.columns.url == "Website 1 - Value"
    assert index.lookup("0541234567").contact.url == "https://cohen-tax.co.il"
    assert index.lookup("0722776772").contact.url == ""


def test_overrides_read_a_file_whose_headers_are_not_recognised(tmp_path):
    path = tmp_path / "crm-dump.csv"
    path.write_bytes(
        "Customer,Org,Line A,Line B,CRM link\r\n"
        "Ruth Gal,Gal Books,03-6111111,054-6111111,https://crm.example/c/17\r\n"
        "Amos Or,,,050-6222222,https://crm.example/c/18\r\n".encode("utf-8"))
    index = ps.load_index(path, name_column="Customer", company_column="Org",
                          phone_columns=["Line A", "Line B"], url_column="CRM link")
    cols = index.columns
    assert (tuple(cols.name), cols.company, tuple(cols.phones), cols.url) == (
        ("Customer",), "Org", ("Line A", "Line B"), "CRM link")
    ruth = index.lookup("0546111111").contact
    assert (ruth.name, ruth.company, ruth.url) == ("Ruth Gal", "Gal Books",
                                                   "https://crm.example/c/17")
    assert index.lookup("036111111").contact.name == "Ruth Gal"
    assert index.lookup("0506222222").contact.url == "https://crm.example/c/18"


@pytest.mark.parametrize("override", [
    {"name_column": "Full Name"},
    {"company_column": "Firm"},
    {"phone_columns": ["Phone 1 - Value", "Fax"]},
    {"url_column": "CRM"},
])
def test_an_override_naming_a_missing_column_is_a_file_error_naming_it(tmp_path, override):
    path, _ = exports.write_google_csv(tmp_path)
    missing = [v for v in override.values()][0]
    missing = missing[-1] if isinstance(missing, list) else missing
    with pytest.raises(ps.ContactsFileError) as err:
        ps.load_index(path, **override)
    assert missing in str(err.value)
    assert path.name in str(err.value)


def test_encoding_and_delimiter_can_be_given(tmp_path):
    path, expected = exports.write_excel_csv_semicolon(tmp_path)
    index = ps.load_index(path, encoding="windows-1255", delimiter=";")
    assert (index.encoding, index.delimiter) == ("windows-1255", ";")
    assert index.lookup("0546090909").contact.name == "נועה גולן"
    assert index.lookup("0546090909").contact.company == "גולן, שטרן ושות'"


def test_a_given_encoding_that_does_not_fit_the_file_is_a_file_error(tmp_path):
    path, _ = exports.write_outlook_csv(tmp_path)
    with pytest.raises(ps.ContactsFileError) as err:
        ps.load_index(path, encoding="utf-8")
    assert path.name in str(err.value)
    assert "\n" not in str(err.value)


# Fax numbers --------------------------------------------------------------------------

GOOGLE_HEADER = ("First Name", "Last Name", "Organization Name", "Phone 1 - Label",
                 "Phone 1 - Value", "Phone 2 - Label", "Phone 2 - Value",
                 "Phone 3 - Label", "Phone 3 - Value")


def _google_csv(path):
    return write_contacts(path, [
        ("Dana", "Levi", "Levi Optics", "* Mobile", "054-123-4567", "Work Fax",
         "03-555-1214", "", ""),
        ("Ron", "Bar", "", "Home Fax", "03-555-7777", "Mobile", "052-111-2222", "Work",
         "03-555-1214 ::: 03-555-3333"),
        ("Fax Only", "", "", "Work Fax", "03-555-9999", "", "", "", ""),
    ], header=GOOGLE_HEADER)


def test_fax_numbers_are_kept_off_the_index(tmp_path):
    index = ps.load_index(_google_csv(tmp_path / "google.csv"))
    assert index.lookup("0541234567").contact.name == "Dana Levi"
    assert index.lookup("0521112222").contact.name == "Ron Bar"
    assert index.lookup("035557777").total == 0 and index.lookup("035559999").total == 0
    found = index.lookup("035551214")  # Dana's fax, Ron's work line: Ron only
    assert (found.total, found.contact.name) == (1, "Ron Bar")
    assert index.lookup("035553333").contact.name == "Ron Bar"
    assert [row for row, _why in index.skipped] == [4]  # only a fax: no caller


def test_a_vcard_number_labelled_fax_is_kept_off_the_index(tmp_path):
    path = tmp_path / "contacts.vcf"
    path.write_text("\r\n".join([
        "BEGIN:VCARD", "VERSION:3.0", "FN:Dana Levi",
        "item1.TEL:054-123-4567", "item1.X-ABLABEL:Mobile",
        "item2.TEL:03-555-1214", "item2.X-ABLABEL:Work Fax",
        "TEL;TYPE=HOME;TYPE=FAX:03-555-7777", "END:VCARD", ""]), encoding="utf-8")
    index = ps.load_index(path)
    assert index.lookup("0541234567").contact.name == "Dana Levi"
    assert index.lookup("035551214").total == 0 and index.lookup("035557777").total == 0


def test_a_fax_is_offered_neither_a_call_nor_whatsapp(start_server, tmp_path):
    server = start_server(_google_csv(tmp_path / "google.csv"))
    page = server.get("/caller/+972541234567").text
    assert "03-555-1214" in page
    assert "tel:+972541234567" in page and "https://wa.me/972541234567" in page
    assert "972355512" not in page  # no tel: and no wa.me link to the fax


def test_a_fax_is_written_as_every_other_number_on_the_callers_page(start_server,
                                                                    tmp_path):
    path = write_contacts(tmp_path / "google.csv", [
        ("Dana", "Levi", "Levi Optics", "Mobile", "054-123-4567", "Work Fax",
         "036001234 ::: +972 3 600 5678", "", "")], header=GOOGLE_HEADER)
    server = start_server(path)
    page = server.get("/caller/+972541234567").text
    faxes = re.findall(r'<span class="fax"><bdi dir="ltr">([^<]*)</bdi></span>', page)
    assert faxes == ["03-600-1234", "03-600-5678"], page
    assert "036001234" not in page and "97236001234" not in page  # nor a link to it


# vCard --------------------------------------------------------------------------------

VCARDS = sorted(vcards.ALL_VCARD_WRITERS)


def check(run_cli, path, *flags):
    """(exit status, stdout lines, stderr) of `popup_server.py PATH --check`."""
    result = run_cli(path, "--check", *flags)
    return (result.returncode, result.stdout.decode("utf-8").splitlines(),
            result.stderr.decode("utf-8"))


def value_of(lines, label):
    return next(line.split(": ", 1)[1] for line in lines if line.startswith(label + ": "))


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
            answer["URL"].startswith(server.url + "/caller/")  # its own page
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


# .ods and .xls, written by LibreOffice ------------------------------------------------

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
            answer["URL"].startswith(server.url + "/caller/")  # its own page


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


# Files of kinds that cannot be read: what they look like, and what is read ------------


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


# Files that cannot be used: one line naming the file and the problem ------------------


def _assert_file_error(path, problem_pattern, **kwargs):
    with pytest.raises(ps.ContactsFileError) as err:
        ps.load_index(path, **kwargs)
    message = str(err.value)
    assert isinstance(err.value, ps.PopupError)
    assert path.name in message
    assert "\n" not in message.strip()
    assert re.search(problem_pattern, message, re.IGNORECASE), message
    return message


def test_a_missing_file_is_a_file_error_naming_it(tmp_path):
    _assert_file_error(tmp_path / "nowhere.csv", r"nowhere\.csv: no such file$")


def test_an_empty_file_is_a_file_error_saying_it_is_empty(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"")
    _assert_file_error(path, r"contacts\.csv: the file is empty$")


def test_a_header_only_file_is_a_file_error(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes("שם,חברה,טלפון\r\n".encode("windows-1255"))
    _assert_file_error(path, r"contacts\.csv: has no contacts: only a header row$")


def test_a_file_without_a_phone_column_is_a_file_error_mentioning_phone(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Name,Company,E-mail\r\nDana Levi,Levi Ltd,dana@levi.example\r\n")
    _assert_file_error(path, r"contacts\.csv: has no phone column \(columns: 'Name', "
                             r"'Company', 'E-mail'\); name it with --phone-columns$")


def test_a_google_file_with_only_labels_and_no_phone_values_has_no_phone_column(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(
        b"First Name,Last Name,Labels,E-mail 1 - Label,E-mail 1 - Value\r\n"
        b"Dana,Levi,* myContacts,* Work,dana@levi.example\r\n")
    _assert_file_error(path, r"contacts\.csv: has no phone column \(columns: 'First Name', "
                             r".*\); name it with --phone-columns$")


def test_a_truncated_workbook_is_a_file_error(tmp_path):
    good, _ = exports.write_xlsx(tmp_path)
    path = tmp_path / "half-saved.xlsx"
    path.write_bytes(good.read_bytes()[:300])
    _assert_file_error(path, r"half-saved\.xlsx: cannot be read as an Excel workbook")


def test_an_unknown_override_column_message_is_one_line(tmp_path):
    path, _ = exports.write_excel_csv_ansi(tmp_path)
    message = _assert_file_error(path, r"--name-column 'כתובת' is not a column of this "
                                       r"file \(columns: ", name_column="כתובת")
    assert "כתובת" in message
