"""Issue 21 over HTTP: the "what Voicenter sent" page (/sent: login, no token, flags,
escaping, its bound of 200), the calls page's edit form going back to its day, line,
page and row, a locked database on a page's form as an HTML page in the page's
language, each 405 naming its own route, Latin snippets isolated in Hebrew texts, the
additions' labels in the page's language, Scientific-formatted .xlsx cells, fax numbers
kept off the index, the proxy examples of docs/production.md giving https:// links, and
its systemd unit keeping its state where the unit lets it write. The
browser test of /sent is test_inspect_browser.py."""
import configparser
import datetime as dt
import html
import os
import re
import shlex
import sqlite3
import time
import urllib.parse
from pathlib import Path

import pytest

import popup_server as ps
from conftest import (OFFICE_PASSWORD, SAMPLE_CONTACTS, TEST_ZONE, wait_until,
                      write_contacts)

TOKEN = "inspect-token-0123456789"
HEBREW = {"Accept-Language": "he-IL,he;q=0.9"}
PRODUCTION = Path(__file__).resolve().parent.parent / "docs" / "production.md"


@pytest.fixture
def office(start_server, tmp_path, log_in):
    contacts = write_contacts(tmp_path / "contacts.csv", [
        ("Dana Levi", "Levi Optics", "054-123-4567"),
        ("<img src=x onerror=alert(1)>", "<b>Bold & Co</b>", "052-765-4321"),
    ])
    server = start_server(contacts, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD)
    return server, log_in(server)


def _sent_rows(page):
    return re.findall(r'<tr class="(popup|cdr)[^"]*" data-kind="[^"]*" data-flag="([^"]*)">'
                      r'(.*?)</tr>', page, re.S)


# What Voicenter sent ----------------------------------------------------------------

def test_the_sent_page_needs_the_office_login(office):
    server, client = office
    refused = server.get("/sent")
    assert refused.status == 303
    assert refused.header("Location") == "/login?next=%2Fsent"
    page = client.get("/sent")
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    assert "script-src" not in page.header("Content-Security-Policy")
    assert "default-src 'none'" in page.header("Content-Security-Policy")
    assert 'id="nothing-sent"' in page.text
    assert 'href="/sent"' in client.get("/calls").text  # linked from the calls page


def test_each_request_is_shown_as_read_and_never_with_its_token(office):
    server, client = office
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "c-1",
                                 "statusCall": "Ringing", "campaign": "spring"}).status == 200
    assert server.post_form(f"/popup?token={TOKEN}", {
        "phone": "972541234567", "ivrid": "c-1", "status": "Talking",
        "extenUser": "201"}).status == 200
    assert server.post_json("/popup", {"phone": "+972541234567", "ivrid": "c-1",
                                       "status": "Hangup"},
                            headers={"X-Popup-Token": TOKEN}).status == 200
    wrong = "wrong-token-" + "9" * 12
    assert server.get("/popup", {"token": wrong, "phone": "0541234567",
                                 "statusCall": "Ringing"}).status == 403
    assert server.post_json(f"/cdr?token={TOKEN}", {
        "ivruniqueid": "c-1", "type": "Incoming Call", "status": "ANSWER",
        "caller": "0541234567", "time": int(time.time()) - 60, "duration": 42}).status == 200
    page = client.get("/sent").text
    assert TOKEN not in page and wrong not in page
    rows = _sent_rows(page)
    assert [kind for kind, _flag, _row in rows] == ["cdr", "popup", "popup", "popup", "popup"]
    assert all(flag == "" for _kind, flag, _row in rows)
    cdr, refused, by_json, by_form, by_query = (row for _kind, _flag, row in rows)
    assert "GET, query" in by_query and "POST, form" in by_form and "POST, JSON" in by_json
    for row in (by_query, by_form, by_json):
        assert "+972541234567" in row and "<b>1</b>" in row and "Dana Levi" in row
        assert "<b>OK</b> TOTAL 1" in row and "a signed link" in row
    assert "Ringing</bdi> →\n    ringing" in by_query
    assert "Talking</bdi> →\n    answered" in by_form
    assert "Hangup</bdi> →\n    hung up" in by_json
    assert "<b>ERROR</b> 403: missing or wrong token" in refused
    assert "Incoming Call · ANSWER" in cdr and "incoming" in cdr and "+972541234567" in cdr
    assert "<b>Err 0</b> stored" in cdr and "call started" in cdr


@pytest.mark.parametrize("fields,flag", [
    ({"statusCall": "Connected"}, "sent.flag_phase"),
    ({"status": "RINGING_NOW"}, "sent.flag_phase"),
    ({}, "sent.flag_no_phase"),  # a call's request, its phase in no field read
])
def test_a_phase_this_server_does_not_know_is_flagged_on_both_pages(office, fields, flag):
    server, client = office
    for known in ("ringing", "TALKING", "Answer", "answered", "HangUp"):
        assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "k",
                                     "statusCall": known}).status == 200
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567"}).status == 200
    calls = client.get("/calls").text
    assert 'id="flag-phases"' not in calls
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "u",
                                 **fields}).status == 200
    flags = [flag for _kind, flag, _row in _sent_rows(client.get("/sent").text)]
    assert flags == [flag] + [""] * 6
    calls = client.get("/calls").text
    status = re.search(r'<div class="status" id="status">(.*?)</div>', calls, re.S).group(1)
    assert re.search(r'id="flag-phases">Pop-up requests whose phase this server could '
                     r'not read: 1\. <a href="/sent">see what Voicenter sent</a>', status)
    hebrew = client.get("/calls", headers=HEBREW).text
    assert "בקשות חלון קופץ שהשלב שלהן לא הובן: 1." in hebrew


def test_the_fields_of_a_pop_up_without_a_phase_are_named(office):
    server, client = office
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "g-1",
                                 "Status": "Ringing", "campaign": "spring"}).status == 200
    (_kind, flag, row), = _sent_rows(client.get("/sent").text)
    assert flag == "sent.flag_no_phase"
    others = re.search(r'not read: <bdi dir="ltr">([^<]*)</bdi>', row).group(1)
    assert others.split(", ") == ["Status", "campaign"]  # never the token's name


def test_a_json_pop_ups_fields_not_read_are_named(office):
    server, client = office
    assert server.post_json(f"/popup?token={TOKEN}", {
        "phone": "0541234567", "ivrid": "j-1", "Status": "Ringing",
        "currentCall": {"callStarted": 1}, "token": TOKEN}).status == 200
    assert server.post_json(f"/popup?token={TOKEN}", {"Phone": "0541234567"}).status == 400
    rows = _sent_rows(client.get("/sent").text)
    (_kind, _flag, refused), (_kind2, flag, read) = rows
    assert flag == "sent.flag_no_phase"  # "Status" is not "status"
    others = re.search(r'not read: <bdi dir="ltr">([^<]*)</bdi>', read).group(1)
    assert others.split(", ") == ["Status", "currentCall"]
    assert "ERROR</b> 400: the request has no phone field" in refused
    assert "Phone" in refused and TOKEN not in client.get("/sent").text


@pytest.mark.parametrize("sent_time,flag", [("yesterday", "sent.flag_time"),
                                            (None, "sent.flag_no_time"),
                                            ("99999999999999", "sent.flag_time")])
def test_a_cdr_time_this_server_cannot_read_is_flagged(office, sent_time, flag):
    server, client = office
    cdr = {"ivruniqueid": "t-1", "type": "Incoming Call", "status": "NOANSWER",
           "caller": "0541234567"}
    if sent_time is not None:
        cdr["time"] = sent_time
    assert server.post_json(f"/cdr?token={TOKEN}", cdr).status == 200
    rows = _sent_rows(client.get("/sent").text)
    assert [(kind, got) for kind, got, _row in rows] == [("cdr", flag)]
    assert 'id="flag-times"' in client.get("/calls").text


def test_a_queue_cdr_is_read_as_an_incoming_call_not_flagged(office):
    # Voicenter's documented type "Queue" (voicenter-apis.md, cdr-notification guide)
    server, client = office
    cdr = {"ivruniqueid": "q-1", "type": "Queue", "status": "ABANDONE",
           "caller": "0549998877", "time": time.time() - 60}
    assert server.post_json(f"/cdr?token={TOKEN}", cdr).status == 200
    page = client.get("/sent", headers={"Accept-Language": "en"}).text
    assert "direction not understood" not in page and "incoming" in page, page



def test_sent_writes_its_times_as_every_page_does_in_the_pages_language_and_zone(office):
    server, client = office
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "w-1",
                                 "statusCall": "Ringing"}).status == 200
    assert server.post_json(f"/cdr?token={TOKEN}", {
        "ivruniqueid": "w-0", "type": "Incoming Call", "status": "ANSWER",
        "caller": "0541234567", "time": int(time.time()) - 3 * 86400,
        "duration": 42}).status == 200
    for headers, month, zone in (
            ({"Accept-Language": "en"}, r"[A-Z][a-z]+", "Times in"),
            (HEBREW, r"ב[א-ת]+", "השעות לפי")):
        page = client.get("/sent", headers=headers).text
        assert f'id="time-zone">{zone} \u2068{TEST_ZONE}\u2069</p>' in page, page
        assert not re.search(r"\d{4}-\d\d-\d\d", page), page  # nothing ISO-style
        received = re.findall(r'<td class="when">([^<]*)</td>', page)
        assert len(received) == 2 and all(re.fullmatch(r"\d\d:\d\d:\d\d", when)
                                          for when in received), received  # today's
        started = re.search(r'<bdi class="started">([^<]*)</bdi>', page).group(1)
        assert re.fullmatch(r"\d{1,2} " + month + r" \d{4}, \d\d:\d\d:\d\d", started), \
            started  # three days ago: with its date, in the page's language


def test_a_hostile_value_is_shown_as_text(office):
    server, client = office
    hostile = '"><script>alert(1)</script>'
    assert server.get("/popup", {"token": TOKEN, "phone": "0527654321", "ivrid": hostile,
                                 "statusCall": hostile, hostile: "x"}).status == 200
    assert server.post_json(f"/cdr?token={TOKEN}", {
        "ivruniqueid": hostile, "type": hostile, "status": "<i>", "caller": hostile,
        "time": hostile}).status == 200
    page = client.get("/sent").text
    assert "<script>" not in page and "<img" not in page and "<i>" not in page
    escaped = html.escape(hostile)
    assert page.count(escaped) >= 5  # ivrids, phase, the field's name, the CDR's type
    assert html.escape("<img src=x onerror=alert(1)>") in page  # the contact's name


def test_only_the_last_200_requests_are_kept(office):
    server, client = office
    for n in range(205):
        assert server.get("/popup", {"token": TOKEN, "phone": f"05000{n:05d}",
                                     "ivrid": f"bound-{n}", "statusCall": "Ringing"}
                          ).status == 200
    page = client.get("/sent").text
    ivrids = re.findall(r'class="muted ivrid">([^<]*)<', page)
    assert ivrids == [f"bound-{n}" for n in range(204, 4, -1)]  # newest first


# The calls page's edit form -----------------------------------------------------------

def test_the_edit_form_goes_back_to_its_day_line_page_and_row(office):
    server, client = office
    day = dt.date.today() - dt.timedelta(days=2)
    noon = dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc).timestamp()
    for n, caller in enumerate(("0541234567", "0527654321", "0509998877")):
        assert server.post_json(f"/cdr?token={TOKEN}", {
            "ivruniqueid": f"old-{n}", "type": "Incoming Call", "status": "ANSWER",
            "caller": caller, "did": "0722776773", "time": int(noon) + n * 60,
            "duration": 30}).status == 200
    query = {"day": day.isoformat(), "did": "0722776773", "calls": 1, "edit": "old-0"}
    page = client.get("/calls", query).text
    form = re.search(r'<form method="post" action="/calls/mark" class="mark-form">(.*?)'
                     r'</form>', page, re.S).group(1)
    goal = html.unescape(re.search(r'name="next" value="([^"]*)"', form).group(1))
    assert goal == f"/calls?day={day.isoformat()}&did=0722776773&calls=1#call-old-0"
    done = client.post_form("/calls/mark", {"ivrid": "old-0", "mark": "called back",
                                            "note": "left a message", "next": goal})
    assert done.status == 303 and done.header("Location") == goal
    back = client.get(goal.partition("#")[0]).text
    assert 'id="call-old-0"' in back and "left a message" in back


# A locked database on a page's form -----------------------------------------------------

@pytest.fixture
def locked(tmp_path):
    """Lock the calls database as another program writing to it would (no other
    writer gets in) until the test ends."""
    holders = []

    def lock():
        connection = sqlite3.connect(tmp_path / "calls.sqlite", isolation_level=None,
                                     timeout=10)
        connection.execute("BEGIN IMMEDIATE")
        holders.append(connection)

    yield lock
    for connection in holders:
        connection.rollback()
        connection.close()


def _recorded(client, ivrid):
    wait_until(lambda: f'data-ivrid="{ivrid}"' in client.get("/calls").text,
               what=f"{ivrid} recorded")


def test_a_locked_database_on_a_mark_is_a_page_in_the_pages_language(office, locked):
    server, client = office
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "l-1",
                                 "statusCall": "Hangup"}).status == 200
    _recorded(client, "l-1")
    locked()
    goal = "/calls?did=0722776773#call-l-1"
    for headers, words in ((HEBREW, "עסוק, נסו שוב"), ({}, "Busy, try again")):
        resp = client.post_form("/calls/mark", {"ivrid": "l-1", "mark": "handled",
                                                "next": goal}, headers=headers)
        assert resp.status == 503 and resp.header("Content-Type").startswith("text/html")
        assert words in resp.text and resp.header("Retry-After")
        assert html.escape(goal) in resp.text  # the way back to the row
        assert "internal error" not in resp.text and "STATUS" not in resp.text


def test_a_locked_database_on_a_callers_forms_is_a_page_in_the_pages_language(
        office, locked):
    server, client = office
    assert server.get("/popup", {"token": TOKEN, "phone": "0541234567", "ivrid": "l-2",
                                 "statusCall": "Hangup"}).status == 200
    _recorded(client, "l-2")
    locked()
    note = client.post_form("/caller/+972541234567/call", {"ivrid": "l-2", "note": "hi"},
                            headers=HEBREW)
    assert note.status == 503 and note.header("Content-Type").startswith("text/html")
    assert "עסוק, נסו שוב" in note.text and 'href="/caller/+972541234567"' in note.text
    added = client.post_form("/caller/+972509998877/contact",
                             {"name": "נועה", "phone": "050-999-8877"}, headers=HEBREW)
    assert added.status == 303
    page = client.get(added.header("Location").partition("#")[0], headers=HEBREW)
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    assert "נועה" in page.text


# 405s ------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path,named", [
    ("GET", f"/cdr?token={TOKEN}", "/cdr takes POST"),
    ("DELETE", "/popup", "/popup takes GET, OPTIONS or POST"),
    ("POST", "/health", "/health takes GET"),
    ("GET", "/calls/mark", "/calls/mark takes POST"),
    ("PUT", "/sent", "/sent takes GET"),
    ("GET", "/caller/+972541234567/contact", "/caller/<number>/contact takes POST"),
])
def test_each_405_names_its_own_route(office, method, path, named):
    server, _client = office
    resp = server.request(method, path)
    assert resp.status == 405, resp
    body = resp.json()
    assert body.get("MESSAGE", body.get("Errdesc")) == f"method not allowed here: {named}"


# Hebrew pages: Latin snippets are not mirrored ------------------------------------------

_LATIN_SNIPPET = re.compile(r"(?<![\u0590-\u05ff\w-])(?:--|/)[A-Za-z][\w./-]*"
                            r"|\{\w+\}–\{\w+\}")


def test_every_latin_snippet_of_a_hebrew_text_is_isolated():
    for key, (_english, hebrew) in ps.page_texts().items():
        bare = re.sub("\u2066[^\u2069]*\u2069|\u2068[^\u2069]*\u2069", "", hebrew)
        assert not _LATIN_SNIPPET.search(bare), (key, hebrew)


def test_the_hebrew_calls_page_isolates_its_paths_and_options(office):
    _server, client = office
    page = client.get("/calls", headers=HEBREW).text
    assert "\u2066/cdr\u2069" in page and "\u2066/popup\u2069" in page
    assert '<a href="health" dir="ltr" id="health-link">/health</a>' in page
    assert '<pre dir="ltr" id="cdr-url">' in page


# Form labels and the added contact's fields in the page's language -------------------------

def test_an_added_contacts_fields_are_named_in_the_pages_language(office):
    _server, client = office
    added = client.post_form("/caller/+972509998877/contact", {
        "name": "נועה כהן", "company": "כהן בע\"מ", "phone": "050-999-8877",
        "notes": "מעדיפה וואטסאפ"}, headers=HEBREW)
    assert added.status == 303, added
    hebrew = client.get("/caller/+972509998877", headers=HEBREW).text
    headers = re.findall(r"<tr><th><bdi>([^<]*)</bdi></th>", hebrew)
    assert headers == ["שם", "חברה", "טלפון", "הערות"]
    english = client.get("/caller/+972509998877").text
    assert re.findall(r"<tr><th><bdi>([^<]*)</bdi></th>", english) == [
        "Name", "Company", "Phone", "Notes"]
    labels = re.findall(r"<label>([^<]*)<", hebrew)
    assert labels and all(re.search("[\u0590-\u05ff]", label) for label in labels), labels


# Scientific-formatted .xlsx cells -------------------------------------------------------

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
    import libreoffice
    if not libreoffice.SOFFICE:
        if libreoffice.required():
            pytest.fail("LibreOffice (soffice) is required here and missing")
        pytest.skip("LibreOffice (soffice) is not installed")
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


# Fax numbers ----------------------------------------------------------------------------

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


# The proxy examples (docs/production.md) ----------------------------------------

#: What nginx puts in place of the variables the docs' block uses, for a browser at
#: 198.51.100.7 asking https://popup.example.com/ (no X-Forwarded-For of its own).
NGINX_VARIABLES = {"$proxy_add_x_forwarded_for": "198.51.100.7", "$remote_addr":
                   "198.51.100.7", "$host": "popup.example.com", "$http_host":
                   "popup.example.com", "$scheme": "https", "$server_port": "443"}
#: What Caddy 2.5 and later send a backend by themselves (reverse_proxy's documented
#: defaults), the Host passed through as received.
CADDY_HEADERS = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "popup.example.com", "Host": "popup.example.com"}


def _docs_block(start):
    text = PRODUCTION.read_text(encoding="utf-8")
    section = text[text.index("## TLS in front (Caddy or nginx)"):]
    block = section[section.index(start) + len(start):]
    return block[:block.index("```")]


def _nginx_headers():
    headers = {}
    for name, value in re.findall(r"^\s*proxy_set_header\s+(\S+)\s+(.+?);",
                                  _docs_block("```nginx\n"), re.M):
        for variable in re.findall(r"\$\w+", value):
            assert variable in NGINX_VARIABLES, f"the test does not know {variable}"
            value = value.replace(variable, NGINX_VARIABLES[variable])
        headers[name] = value
    return headers


def _caddy_headers():
    block = _docs_block("```\n")
    assert re.search(r"reverse_proxy 127\.0\.0\.1:8080", block)
    assert "header_up" not in block  # nothing changes Caddy's own headers
    return CADDY_HEADERS


@pytest.mark.parametrize("headers", [_nginx_headers, _caddy_headers])
def test_the_docs_proxy_examples_give_https_links(start_server, headers):
    sent = headers()
    server = start_server(SAMPLE_CONTACTS, "--trusted-proxy", "127.0.0.1")
    answer = server.get("/popup", {"phone": "0722776772"}, headers=sent).json()
    assert answer["URL"].startswith("https://popup.example.com/caller/+972722776772?e="), \
        (sent, answer)
    assert urllib.parse.urlsplit(answer["URL"]).scheme == "https"


# The systemd unit (docs/production.md) ------------------------------------------

def _systemd_unit():
    """The [Service] settings of the docs' unit, as a dict."""
    block = PRODUCTION.read_text(encoding="utf-8")
    block = block[block.index("## systemd (Linux)"):]
    block = block[block.index("```ini\n") + 7:]
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # systemd's keys are CamelCase
    unit.read_string(block[:block.index("```")])
    return dict(unit["Service"])


def test_the_docs_systemd_unit_keeps_its_state_where_protectsystem_lets_it_write(
        tmp_path):
    """The unit's command line as systemd runs it: ProtectSystem=strict leaves it only
    its StateDirectory= (and any ReadWritePaths=) to write, and the user's home is
    read-only. The system's folders are mapped into tmp_path; the home stays empty."""
    unit = _systemd_unit()
    assert unit["ProtectSystem"] == "strict" and unit["User"] == "popup", unit
    root, home = tmp_path / "root", tmp_path / "home"
    writable = [f"/var/lib/{unit['StateDirectory']}",
                *unit.get("ReadWritePaths", "").split()]
    state = root / writable[0].lstrip("/")
    state.mkdir(parents=True, mode=int(unit.get("StateDirectoryMode", "0755"), 8))
    home.mkdir()
    python, program, *args = shlex.split(unit["ExecStart"])
    assert python == f"{unit['WorkingDirectory']}/.venv/bin/python", python
    assert program == "popup_server.py", program
    args = [str(root / arg.lstrip("/")) if arg.startswith("/") else arg for arg in args]
    contacts = Path(args[0])
    contacts.parent.mkdir(parents=True)
    import openpyxl
    book = openpyxl.Workbook()
    book.active.append(["Name", "Company", "Phone"])
    book.active.append(["Avi Barak", "Barak Ltd", "03-555-6789"])
    book.save(contacts)
    if os.geteuid() != 0:
        home.chmod(0o555)  # as the unit has it (root would write anyway: see below)
    from test_state_dir import _start_as_a_user_would
    server = _start_as_a_user_would(tmp_path, *args, env={
        "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")})
    try:
        assert f"state folder: {state}\n" in server.log_text(), server.log_text()
        token = (state / ".popup-token").read_text().strip()
        answer = server.lookup("035556789", token=token, ivrid="unit-call",
                               statusCall="Ringing")
        assert answer["CLIENTNAME"] == "Avi Barak", answer
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log_text()
    assert {p.name for p in state.iterdir()} >= {
        ".popup-token", "page-secret", "office-password", "calls.sqlite", "server.lock"}
    assert not list(home.rglob("*")), list(home.rglob("*"))  # nothing outside it
