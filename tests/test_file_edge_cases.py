"""Files and requests that once went wrong: each test pins the behaviour a user sees."""
import datetime as dt
import sqlite3
import time
import zipfile

import pytest

import popup_server as ps
from conftest import SAMPLE_CONTACTS

IL = ps.number_rules("IL")


def write(tmp_path, text, name="contacts.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_a_trailing_delimiter_on_every_row_does_not_shift_the_columns(tmp_path):
    path = write(tmp_path, "Name,Company,Phone\nJohn Doe,Voicenter,0722776772,\n"
                           "Dana Levi,Galil,052-7654321,\n")
    index = ps.load_index(path)
    assert index.contacts == 2
    contact = index.lookup("0527654321").contact
    assert (contact.name, contact.company) == ("Dana Levi", "Galil")


@pytest.mark.parametrize("cell", ["054-1234567 home", "054-1234567 (mobile)",
                                  "home: 054-1234567", "נייד 054-1234567"])
def test_a_label_beside_a_number_is_dropped_not_dialled(cell):
    assert ps.cell_keys(cell, IL) == ([972541234567], [])


def test_words_in_a_phone_cell_are_reported_not_read_as_a_keypad(tmp_path):
    path = write(tmp_path, "Name,Phone\nJohn,054-1234567 call after 5pm\nDana,052-7654321\n")
    index = ps.load_index(path)
    assert [u[0] for u in index.unusable] == [2]
    assert "words" in index.unusable[0][3]
    assert index.lookup("0541234567").total == 0


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


def test_repeated_headers_in_a_workbook_are_all_indexed(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    path = tmp_path / "twice.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["Name", "Phone", "Phone"])
    book.active.append(["John", "0722776772", "0541234567"])
    book.save(path)
    assert ps.load_index(path).lookup("0541234567").contact.name == "John"


def test_name_column_with_a_plus_joins_every_part(tmp_path):
    path = write(tmp_path, "Title,First Name,Last Name,Phone\nDr.,Dana,Levi,0722776772\n")
    index = ps.load_index(path, name_column="Title+First Name+Last Name")
    assert index.lookup("0722776772").contact.name == "Dr. Dana Levi"


def test_row_numbers_count_blank_rows_as_a_spreadsheet_does(tmp_path):
    path = write(tmp_path, "Name,Phone\nJohn,0722776772\n\nDana,oops\nNoa,0541234567\n")
    index = ps.load_index(path)
    assert index.lookup("0541234567").contact.row == 5
    assert index.skipped == ((4, "no usable phone number"),)


def test_an_encoding_given_by_its_windows_name_gets_the_hebrew_checks(tmp_path):
    path = write(tmp_path, "שם,טלפון\nדנה,0722776772\n", encoding="cp1255")
    index = ps.load_index(path, encoding="cp1255")
    assert index.encoding == "windows-1255"
    assert index.lookup("0722776772").contact.name == "דנה"


def test_a_call_that_crosses_midnight_belongs_to_the_day_it_began(tmp_path):
    db = tmp_path / "calls #1.sqlite"  # a name with a URI character in it, too
    recorder = ps.CallRecorder(db, keep_days=90).start()
    answer = ps.PopupAnswer(1, "John", "", "", 972722776772)
    for phase in ("Ringing", "Hangup"):
        recorder.record({"phone": "0722776772", "ivrid": "night", "status": phase}, answer)
    recorder.close()
    today = dt.date.today()
    midnight = dt.datetime.combine(today, dt.time()).astimezone().timestamp()
    connection = sqlite3.connect(db)
    with connection:
        connection.execute("UPDATE events SET received_at = ? WHERE phase = 'ringing'",
                           (midnight - 10,))
        connection.execute("UPDATE events SET received_at = ? WHERE phase = 'hangup'",
                           (midnight + 10,))
    connection.close()
    assert [c.ivrid for c in ps.calls_of_day(db, today - dt.timedelta(days=1))] == ["night"]
    assert ps.calls_of_day(db, today) == []


def test_withheld_callers_are_not_counted_as_one_caller_who_tried_many_times(tmp_path):
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90).start()
    answer = ps.PopupAnswer(0, "", "", "", None)
    for n in range(3):
        recorder.record({"phone": "", "ivrid": f"w{n}", "status": "Ringing"}, answer)
    recorder.close()
    assert [c.tries for c in ps.calls_of_day(db, dt.date.today())] == [1, 1, 1]


def test_the_csv_never_hands_excel_a_formula():
    call = ps.Call(ivrid="x", started=dt.datetime.now().astimezone(), caller="=HYPERLINK(1)",
                   e164="", name="+cmd", company="@x", url="", did="", answered_at=None,
                   answered_by="-1", ended_at=None, outcome="missed")
    row = ps.calls_csv([call]).splitlines()[1]
    assert "'=HYPERLINK(1)" in row and "'+cmd" in row and "'@x" in row and "'-1" in row


def test_health_names_the_problem_without_quoting_the_file(start_server, tmp_path):
    contacts = write(tmp_path, "name,phone\nJohn Doe,0722776772\n")
    server = start_server(contacts, "--reload-interval", "0.2")
    contacts.write_text("Secret Person,0541234567\nOther,0509999999\n")  # no header row
    deadline = time.monotonic() + 10
    while server.health()["last_error"] is None and time.monotonic() < deadline:
        time.sleep(0.1)
    message = server.health()["last_error"]
    assert message == "contacts.csv: has no phone column"
    assert "Secret" not in server.get("/health").text and str(tmp_path) not in message


def test_a_raw_utf8_form_body_is_read_as_utf8(start_server):
    server = start_server(SAMPLE_CONTACTS)
    resp = server.request("POST", "/popup", body="phone=0722776772&extenUser=דנה".encode(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200 and resp.json()["CLIENTNAME"] == "John Doe"


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_a_day_far_outside_the_calendar_is_a_400_not_a_crash(start_server, day):
    server = start_server(SAMPLE_CONTACTS)
    for path in ("/calls", "/calls.csv"):
        resp = server.get(path, {"day": day})
        assert resp.status == 400 and resp.json()["STATUS"] == "ERROR"
