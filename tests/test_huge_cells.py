"""Issue 11, item 2: a cell, a row and a file have sane limits. A cell longer than any
contact's could be is skipped unread and reported with its row and column; a file
with a row too long is refused and the contacts loaded before stay served."""

from __future__ import annotations

import codecs
import csv
import io
import os

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import popup_server as ps  # _scan_cells and _WithoutCuts: the scanner is the unit here
from conftest import wait_until, write_contacts

HEADER = "name,company,phone\n"
MB = 1024 * 1024


def check(run_cli, path):
    result = run_cli(path, "--check")
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def test_a_phone_cell_of_megabytes_is_skipped_and_reported_with_row_and_column(
        run_cli, tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes((HEADER + "Alice,Co,050-111-1111\nBob,Co,").encode()
                     + b"1234567890" * 300_000 + b"\nCarol,Co,050-333-3333\n")
    status, out, err = check(run_cli, path)
    assert status == 0, err
    assert "cells too long, skipped: 1" in out.splitlines(), out
    assert "  row 3, phone: 3,000,000 bytes, more than the 16,384 a cell may hold" \
        in out.splitlines(), out
    assert "2 contacts can be found" in out.splitlines(), out


def test_a_quoted_name_of_megabytes_spanning_lines_is_skipped_and_the_rows_after_it_stay(
        run_cli, tmp_path):
    """The cell holds delimiters, quotes and line breaks: the rows after it must be
    read exactly as pandas reads them, not shifted."""
    path = tmp_path / "contacts.csv"
    huge = '"' + 'Bob ""the"" builder,\r\n' * (MB // 20) + '"'
    path.write_text(HEADER + f"Alice,Co,050-111-1111\r\n{huge},Bob Co,050-222-2222\r\n"
                    "Carol,Co,050-333-3333\r\n", encoding="utf-8", newline="")
    status, out, err = check(run_cli, path)
    assert status == 0, err
    lines = out.splitlines()
    assert "cells too long, skipped: 1" in lines, out
    assert any(line.startswith("  row 3, name: ") for line in lines), out
    assert "3 contacts can be found" in lines and "rows read: 3" in lines, out


def test_a_long_notes_column_the_index_does_not_use_is_skipped_without_a_word(
        run_cli, tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text("name,notes,phone\nAlice," + "n" * 40_000 + ",050-111-1111\n",
                    encoding="utf-8")
    status, out, err = check(run_cli, path)
    assert status == 0, err
    assert "cells too long, skipped: 0" in out.splitlines(), out
    assert "1 contacts can be found" in out.splitlines(), out


def test_a_phone_cell_longer_than_any_phone_cell_could_be_is_not_parsed(run_cli, tmp_path):
    numbers = " / ".join(["050-222-2222"] * 60)
    path = write_contacts(tmp_path / "contacts.csv", [("Alice", "Co", "050-111-1111"),
                                                     ("Bob", "Co", numbers)])
    status, out, err = check(run_cli, path)
    assert status == 0, err
    assert any(line.startswith("  row 3, phone: ") and line.endswith(
        f"{len(numbers)} characters: longer than any phone cell could be")
        for line in out.splitlines()), out


def test_a_header_with_a_huge_cell_refuses_the_file(run_cli, tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"name,company,phone" + b"x" * (2 * MB) + b"\nAlice,Co,050-111-1111\n")
    status, out, err = check(run_cli, path)
    assert status == 2
    assert "the header row has a cell of more than 16,384 bytes" in err, err


def test_an_xlsx_cell_of_thirty_thousand_characters_is_skipped_and_reported(
        run_cli, tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["name", "company", "phone"])
    sheet.append(["Alice", "Alice Co", "050-111-1111"])
    sheet.append(["B" * 30_000, "Bob Co", "050-222-2222"])  # Excel holds 32,767 at most
    path = tmp_path / "contacts.xlsx"
    book.save(path)
    status, out, err = check(run_cli, path)
    assert status == 0, err
    assert "  row 3, name: 30,000 bytes, more than the 16,384 a cell may hold" \
        in out.splitlines(), out
    assert "2 contacts can be found" in out.splitlines(), out


def test_the_server_swaps_in_a_file_with_a_huge_cell_and_keeps_the_old_one_for_a_huge_row(
        start_server, tmp_path):
    path = tmp_path / "data" / "contacts.csv"
    path.parent.mkdir()
    path.write_text(HEADER + "Alice,Co,050-111-1111\n", encoding="utf-8")
    server = start_server(path, "--reload-interval", "0.2")
    assert server.lookup("0501111111")["CLIENTNAME"] == "Alice"

    # A file with one phone cell of 4 MB: served, without that cell.
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes((HEADER + "Bob,Bob Co,050-222-2222\nEve,Co,").encode()
                    + b"5" * (4 * MB) + b"\nCarol,Co,050-333-3333\n")
    os.replace(tmp, path)
    assert wait_until(lambda: server.lookup("0503333333")["CLIENTNAME"] == "Carol")
    assert server.lookup("0502222222")["CLIENTNAME"] == "Bob"
    assert server.lookup("5" * 15)["TOTAL"] == 0

    # A row of 2 MB of short cells: refused; Bob and Carol stay served.
    tmp.write_bytes((HEADER + "Dan,Co,050-444-4444\nEve,Co,").encode() + b"1," * MB)
    os.replace(tmp, path)
    assert wait_until(lambda: server.health()["last_error"] is not None)
    assert "row 3 is longer than 1,048,576 bytes" in server.log_text()
    assert server.lookup("0502222222")["CLIENTNAME"] == "Bob"
    assert server.lookup("0504444444")["TOTAL"] == 0
    assert server.proc.poll() is None


# The scan against pandas itself, with a tiny cell limit and tiny pieces -------------

def _field(text, quote):
    return '"' + text.replace('"', '""') + '"' if quote else text


short_text = st.text(alphabet='ab1 ,"\r\n', max_size=3)
long_text = st.text(alphabet='ab1 ,"\r\n', min_size=40, max_size=60)


@st.composite
def csv_files(draw):
    columns = draw(st.integers(1, 3))
    rows = [[f"h{i}" for i in range(columns)]]
    for _ in range(draw(st.integers(1, 6))):
        row = []
        for _ in range(columns):
            text = draw(st.one_of(short_text, long_text))
            needs_quotes = any(ch in text for ch in ',"\r\n')
            row.append(_field(text, needs_quotes or draw(st.booleans())))
        rows.append(row)
    line_break = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = line_break.join(",".join(row) for row in rows) + draw(
        st.sampled_from(["", line_break]))
    if draw(st.booleans()):  # a stray quote inside an unquoted cell: text to pandas
        text = text.replace("ab", 'a"b', 1)
    return text


def read(source):
    return pd.read_csv(source, dtype=str, na_filter=False, skip_blank_lines=False,
                       index_col=False, engine="c")


@pytest.mark.filterwarnings("ignore::pandas.errors.ParserWarning")
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=csv_files(), piece=st.integers(1, 9))
def test_the_scan_finds_the_cells_pandas_reads_and_leaves_the_rest_as_pandas_reads_it(
        tmp_path, monkeypatch, text, piece):
    monkeypatch.setattr(ps, "MAX_CELL_BYTES", 16)
    monkeypatch.setattr(ps, "_SCAN_BYTES", piece)
    path = tmp_path / "scan.csv"
    path.write_bytes(text.encode())
    try:
        whole = read(path)
    except pd.errors.ParserError:
        return  # pandas cannot read it either: the loader says so
    try:
        scan = ps._scan_cells(path, ",", "utf-8")
    except ps.ContactsFileError as error:
        assert "header" in str(error)
        return
    found = {(row - 1, column) for row, column, _ in scan.oversized
             if row - 1 < len(whole) and column < whole.shape[1]}
    # Every cell pandas reads as longer than 40 characters is found, and every cell
    # found is one pandas reads as longer than 7 (a quoted cell's quotes count).
    assert {(row, column) for row in range(len(whole)) for column in range(whole.shape[1])
            if len(whole.iat[row, column]) >= 40} <= found
    assert all(len(whole.iat[row, column]) >= 7 for row, column in found)
    with io.BufferedReader(ps._WithoutCuts(path, scan.cuts, scan.space)) as stream:
        cut = read(stream)
    expected = whole.copy()
    for row, column in found:
        expected.iat[row, column] = " "
    pd.testing.assert_frame_equal(cut, expected)


def test_a_utf16_file_is_scanned_in_two_byte_units(tmp_path):
    path = tmp_path / "contacts.txt"
    text = "name\tphone\r\nAlice\t050-111-1111\r\n\"" + "ב" * 20_000 + "\"\t050-222-2222\r\n"
    path.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    index = ps.load_index(path)
    assert index.oversized == ((3, "name", 40_004),)  # the quotes are the cell's too
    assert index.lookup("0502222222").total == 1 and index.contacts == 2


def test_csv_module_written_files_load_as_before(tmp_path):
    """A file of ordinary rows is read exactly as pandas reads it: nothing cut."""
    path = tmp_path / "contacts.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "company", "phone"])
        for i in range(3000):
            writer.writerow([f'Person "{i}", Jr.', f"Co\n{i}", f"050-{i:07d}"])
    scan = ps._scan_cells(path, ",", "utf-8")
    assert scan.cuts == [] and scan.oversized == []
