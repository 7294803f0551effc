"""`popup_server.py FILE --check`: the report a user reads before going live, line by
line (the file, its encoding and delimiter, the columns chosen, the rows skipped and
the numbers reported, with their spreadsheet rows), and its exit status. Runs the
module as a user does, in a subprocess, on files written by tests/exports.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import exports
from conftest import MODULE, subprocess_env


def run_check(tmp_path, *args, env_extra=None):
    return subprocess.run(
        [sys.executable, str(MODULE), *map(str, args),
         "--token", "", "--calls-db", "", "--check"],
        cwd=tmp_path, env=subprocess_env(env_extra), capture_output=True,
        encoding="utf-8", errors="replace", timeout=120,
    )


def report_lines(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def value_of(lines, key):
    """The text after "key: " on the line starting with it."""
    hits = [line for line in lines if line.startswith(key + ":")]
    assert len(hits) == 1, (key, lines)
    return hits[0][len(key) + 1:].strip()


REPORT_KEYS = ["file", "encoding", "delimiter", "name column", "company column",
               "phone columns", "url column", "rows read"]


# --------------------------------------------------------------------------
# Good files
# --------------------------------------------------------------------------

def test_check_of_a_hebrew_excel_csv_reports_every_line_in_order(tmp_path):
    path, _ = exports.write_excel_csv_ansi(tmp_path)
    result = run_check(tmp_path, path)
    lines = report_lines(result)
    assert value_of(lines, "file").endswith(path.name)
    assert value_of(lines, "encoding") == "windows-1255"
    assert value_of(lines, "delimiter") == "','"
    assert value_of(lines, "name column") == "שם"
    assert value_of(lines, "company column") == "חברה"
    assert value_of(lines, "phone columns") == "טלפון, נייד"
    assert value_of(lines, "url column") == "(none)"
    assert value_of(lines, "rows read") == "5"
    assert "4 contacts can be found" in lines
    assert value_of(lines, "numbers indexed") == "6"
    assert value_of(lines, "numbers shared by several contacts") == "0"
    assert value_of(lines, "rows skipped") == "1"
    assert value_of(lines, "numbers not used") == "1"
    starts = [next(i for i, line in enumerate(lines) if line.startswith(k + ":"))
              for k in REPORT_KEYS]
    assert starts == sorted(starts), lines
    found_at = lines.index("4 contacts can be found")
    assert found_at > starts[-1]
    assert found_at < lines.index("rows skipped: 1") < lines.index("numbers not used: 1")


def test_check_lists_skipped_rows_with_their_spreadsheet_row_number(tmp_path):
    path, _ = exports.write_excel_csv_ansi(tmp_path)
    lines = report_lines(run_check(tmp_path, path))
    after = lines[lines.index("rows skipped: 1") + 1]
    assert after == "  row 5: no usable phone number", lines


def test_check_reports_a_number_damaged_to_scientific_notation(tmp_path):
    path, _ = exports.write_excel_csv_ansi(tmp_path)
    lines = report_lines(run_check(tmp_path, path))
    after = lines[lines.index("numbers not used: 1") + 1]
    assert after.startswith("  row 3, טלפון: '5.41E+08' in scientific notation: Excel "
                            "has dropped its last digits"), lines


def test_check_of_a_workbook_reports_the_scientific_cell_and_the_skipped_row(tmp_path):
    path, _ = exports.write_xlsx(tmp_path)
    lines = report_lines(run_check(tmp_path, path))
    assert value_of(lines, "encoding") == "xlsx"
    assert value_of(lines, "delimiter") == "(xlsx)"
    assert value_of(lines, "name column") == "Client Name"
    assert value_of(lines, "company column") == "Company Name"
    assert set(value_of(lines, "phone columns").split(", ")) >= {"Phone Number", "Tel.", "Mobile"}
    assert "4 contacts can be found" in lines
    assert "numbers not used: 1" in lines
    after = lines[lines.index("numbers not used: 1") + 1]
    assert after.startswith("  row 4, Mobile: '5.41E+08' in scientific notation"), lines
    assert lines[lines.index("rows skipped: 1") + 1] == "  row 6: no usable phone number"


def test_check_of_an_outlook_export_counts_the_shared_switchboard(tmp_path):
    path, _ = exports.write_outlook_csv(tmp_path)
    lines = report_lines(run_check(tmp_path, path))
    assert value_of(lines, "encoding") == "windows-1255"
    assert value_of(lines, "company column") == "Company"
    assert "4 contacts can be found" in lines
    assert value_of(lines, "numbers shared by several contacts") == "1"
    name = value_of(lines, "name column")
    assert "First Name" in name and "Last Name" in name and "Yomi" not in name
    phones = value_of(lines, "phone columns").split(", ")
    assert {"Home Phone", "Business Phone", "Mobile Phone", "Company Main Phone"} <= set(phones)


def test_check_of_excel_unicode_text_reports_utf16_and_tab(tmp_path):
    path, _ = exports.write_excel_unicode_text(tmp_path)
    lines = report_lines(run_check(tmp_path, path))
    assert value_of(lines, "encoding") == "utf-16"
    assert value_of(lines, "delimiter") == r"'\t'"
    assert value_of(lines, "name column") == "שם מלא"
    assert "3 contacts can be found" in lines


def test_check_of_a_google_export_joins_first_and_last_name_columns(tmp_path):
    path, _ = exports.write_google_csv(tmp_path)
    lines = report_lines(run_check(tmp_path, path))
    assert value_of(lines, "encoding") == "utf-8"
    name = value_of(lines, "name column")
    assert name.startswith("First Name + ") and name.endswith(" + Last Name")
    assert "Phonetic" not in name
    assert value_of(lines, "company column") == "Organization Name"
    assert "4 contacts can be found" in lines
    assert lines[lines.index("rows skipped: 1") + 1].startswith("  row 5: ")


def test_check_of_a_semicolon_file_reports_the_semicolon(tmp_path):
    path, _ = exports.write_excel_csv_semicolon(tmp_path)
    lines = report_lines(run_check(tmp_path, path))
    assert value_of(lines, "delimiter") == "';'"
    assert value_of(lines, "company column") == "עסק"
    assert value_of(lines, "numbers shared by several contacts") == "1"


def test_check_lists_at_most_twenty_skipped_rows_then_how_many_more(tmp_path):
    path = tmp_path / "contacts.csv"
    rows = ["Name,Phone", "Dana Levi,054-1234567"]
    rows += [f"Nobody {i}," for i in range(25)]
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))
    lines = report_lines(run_check(tmp_path, path))
    assert "1 contacts can be found" in lines or "1 contact can be found" in lines
    start = lines.index("rows skipped: 25")
    listed = lines[start + 1:start + 21]
    assert [line.split(":")[0] for line in listed] == [f"  row {r}" for r in range(3, 23)]
    assert lines[start + 21] == "  ... and 5 more"


def test_check_with_sheet_reads_that_sheet(tmp_path):
    path, sheets = exports.write_xlsx_two_sheets(tmp_path)
    lines = report_lines(run_check(tmp_path, path, "--sheet", "Clients"))
    assert value_of(lines, "name column") == "Client Name"
    assert "2 contacts can be found" in lines


def test_check_takes_the_sheet_from_the_environment_too(tmp_path):
    path, sheets = exports.write_xlsx_two_sheets(tmp_path)
    lines = report_lines(run_check(tmp_path, path, env_extra={"POPUP_SHEET": "Clients"}))
    assert value_of(lines, "name column") == "Client Name"


def test_check_uses_column_overrides_from_the_command_line(tmp_path):
    path = tmp_path / "crm.csv"
    path.write_bytes(b"Customer,Org,Line A,Line B\r\n"
                     b"Ruth Gal,Gal Books,03-6111111,054-6111111\r\n"
                     b"Amos Or,,,050-6222222\r\n")
    lines = report_lines(run_check(tmp_path, path, "--name-column", "Customer",
                                   "--company-column", "Org",
                                   "--phone-columns", "Line A,Line B"))
    assert value_of(lines, "name column") == "Customer"
    assert value_of(lines, "company column") == "Org"
    assert value_of(lines, "phone columns") == "Line A, Line B"
    assert "2 contacts can be found" in lines
    assert value_of(lines, "numbers indexed") == "3"


# --------------------------------------------------------------------------
# Files that cannot be used
# --------------------------------------------------------------------------

def test_check_of_rows_that_have_no_number_at_all_exits_one(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Name,Phone\r\nDana Levi,\r\nYossi Cohen,n/a\r\n")
    result = run_check(tmp_path, path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 contacts can be found" in result.stdout.splitlines()
    assert "Traceback" not in result.stderr + result.stdout


def test_check_of_a_file_without_a_phone_column_exits_two_saying_phone(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Name,Company,E-mail\r\nDana Levi,Levi Ltd,dana@levi.example\r\n")
    result = run_check(tmp_path, path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "phone" in result.stderr.lower()
    assert path.name in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("content", [None, b"", "שם,טלפון\r\n".encode("windows-1255")],
                         ids=["missing", "empty", "header-only"])
def test_check_of_an_unusable_file_exits_two_with_one_line_naming_it(tmp_path, content):
    path = tmp_path / "contacts.csv"
    if content is not None:
        path.write_bytes(content)
    result = run_check(tmp_path, path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    message = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(message) == 1, result.stderr
    assert path.name in message[0]


def test_check_of_a_truncated_workbook_exits_two_without_a_traceback(tmp_path):
    good, _ = exports.write_xlsx(tmp_path)
    path = tmp_path / "half-saved.xlsx"
    path.write_bytes(good.read_bytes()[:300])
    result = run_check(tmp_path, path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert path.name in result.stderr
