"""Loading real contact files: Google, Outlook and Excel exports (issue 3).

Every fixture is written byte for byte by tests/exports.py; these tests load it
with ``load_index`` and no hints, then look its contacts up by caller ids
written differently from the file.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import popup_server as ps  # noqa: E402
import exports  # noqa: E402

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


# --------------------------------------------------------------------------
# Every layout and encoding, no hints
# --------------------------------------------------------------------------

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
        assert isinstance(reason, str) and reason


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


# --------------------------------------------------------------------------
# Specific pitfalls
# --------------------------------------------------------------------------

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


def test_a_csv_cell_damaged_to_scientific_notation_is_reported_not_guessed(tmp_path):
    path, _ = exports.write_excel_csv_ansi(tmp_path)
    index = ps.load_index(path)
    assert [(r, c, cell) for r, c, cell, _ in index.unusable] == [(3, "טלפון", "5.41E+08")]
    assert index.lookup("0541000000").total == 0
    assert index.lookup("0523334444").contact.name == "רונית אברהם"


def test_a_number_that_libphonenumber_calls_invalid_is_still_indexed(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    assert ps.load_index(path).lookup("0501234567").contact.name == "John Smith"


# --------------------------------------------------------------------------
# Sheets and overrides
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------

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
    _assert_file_error(tmp_path / "nowhere.csv",
                       r"not found|no such|does not exist|missing|cannot open|can't open")


def test_an_empty_file_is_a_file_error_saying_it_is_empty(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"")
    _assert_file_error(path, r"empty")


def test_a_header_only_file_is_a_file_error(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes("שם,חברה,טלפון\r\n".encode("windows-1255"))
    _assert_file_error(path, r"no (contact|row|data|record)|empty|only|header")


def test_a_file_without_a_phone_column_is_a_file_error_mentioning_phone(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Name,Company,E-mail\r\nDana Levi,Levi Ltd,dana@levi.example\r\n")
    _assert_file_error(path, r"phone")


def test_a_google_file_with_only_labels_and_no_phone_values_has_no_phone_column(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(
        b"First Name,Last Name,Labels,E-mail 1 - Label,E-mail 1 - Value\r\n"
        b"Dana,Levi,* myContacts,* Work,dana@levi.example\r\n")
    _assert_file_error(path, r"phone")


def test_a_truncated_workbook_is_a_file_error(tmp_path):
    good, _ = exports.write_xlsx(tmp_path)
    path = tmp_path / "half-saved.xlsx"
    path.write_bytes(good.read_bytes()[:300])
    _assert_file_error(path, r".")


def test_an_unknown_override_column_message_is_one_line(tmp_path):
    path, _ = exports.write_excel_csv_ansi(tmp_path)
    message = _assert_file_error(path, r"כתובת|column", name_column="כתובת")
    assert "כתובת" in message
