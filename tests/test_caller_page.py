"""The caller's page a pop-up links to, over HTTP: the signed link the pop-up gives when
no URL column or template does (an HMAC bound to the number and an expiry, never the
Voicenter token; a tampered or expired one gets the 403 page saying so); the page of
a known caller (every column and every contact of the number, from each kind of
source the index reads: CSV, .xlsx with and without --sheet, .ods and .xls, a vCard, a
link) and of an unknown one, in the browser's language; notes and marks on the
caller's calls; the office login and forms from elsewhere; contacts added from the
page (the additions file: kept apart, bounded, read with its own settings, written
with no formula a spreadsheet would run); and a page that cannot be built, as the
HTML error page in the page's language."""

from __future__ import annotations

import csv
import datetime as dt
import html
import re
import shutil
import time
import urllib.parse

import pytest
from hypothesis import given, settings, strategies as st

import libreoffice
import popup_server as ps
import vcards
from conftest import (HEBREW, MODULE, OFFICE_PASSWORD, SAMPLE_CONTACTS, caller_page_path,
                      post_caller_form, start_as_a_user_would, wait_until, write_contacts)
from linksite import Page

HEADER = ("name", "company", "phone", "email", "notes")


def _office(tmp_path):
    return write_contacts(tmp_path / "office" / "contacts.csv", [
        ("Ann Office", "Ann & Co", "050-111-1111", "ann@example.com", "likes mornings"),
        ("Front Desk", "Shared Clinic", "03-555-2222", "", ""),
        ("Dr. Second", "Shared Clinic", "03-555-2222", "", "second in file order"),
    ], header=HEADER)


def _link(server, phone, **params):
    answer = server.lookup(phone, **params)
    return answer, answer["URL"]


def _form_token(page_text):
    return re.search(r'name="csrf" value="([^"]*)"', page_text).group(1)


# The pop-up's link --------------------------------------------------------------------


def test_a_pop_up_without_a_url_carries_a_signed_link_to_the_callers_page(start_server,
                                                                         tmp_path):
    server = start_server(_office(tmp_path), "--calls-db", tmp_path / "calls.sqlite")
    found, url = _link(server, "0501111111", ivrid="call-1", statusCall="Ringing")
    assert found["TOTAL"] == 1
    assert re.fullmatch(re.escape(server.url) + r"/caller/\+972501111111\?e=\d+&s=[\w-]{22}",
                        url), url
    missing, missing_url = _link(server, "0509999871")
    assert missing["TOTAL"] == 0
    assert missing_url.startswith(server.url + "/caller/+972509999871?e="), missing_url
    assert server.lookup("anonymous")["URL"] == ""  # withheld: no number, no page
    assert "token" not in url and "token" not in missing_url
    # The calls keep what the pop-up would have answered without it: no CRM link.
    day = dt.date.today().isoformat()
    csv_text = wait_until(lambda: (lambda text: "call-1" in text and text)(
        server.get("/calls.csv", {"day": day}).text), what="the call in /calls.csv")
    assert "/caller/" not in csv_text


def test_a_url_column_or_template_still_wins(start_server, tmp_path):
    path = write_contacts(tmp_path / "c.csv", [("Ann", "", "050-111-1111",
                                                "https://crm.example/ann"),
                                               ("Ben", "", "050-222-2222", "")],
                          header=("name", "company", "phone", "url"))
    server = start_server(path, "--url-template", "https://crm.example/t/{e164}",
                          "--no-match-url", "https://crm.example/new?p={phone}")
    assert server.lookup("0501111111")["URL"] == "https://crm.example/ann"
    assert server.lookup("0502222222")["URL"] == "https://crm.example/t/%2B972502222222"
    assert server.lookup("0509999871")["URL"] == "https://crm.example/new?p=0509999871"
    column_only = start_server(path)  # Ben's empty cell, no template: his page
    assert column_only.lookup("0501111111")["URL"] == "https://crm.example/ann"
    assert column_only.lookup("0502222222")["URL"].startswith(column_only.url + "/caller/")


def test_the_links_base_is_public_url_else_the_request_believing_only_trusted_proxies(
        start_server, tmp_path):
    office = _office(tmp_path)
    public = start_server(office, "--public-url", "https://popup.example.com/")
    assert public.lookup("0501111111")["URL"].startswith(
        "https://popup.example.com/caller/+972501111111?e=")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "office.example"}
    plain = start_server(office)
    answer = plain.get("/popup", {"phone": "0501111111"}, headers=forwarded).json()
    assert answer["URL"].startswith(plain.url + "/caller/"), answer
    proxied = start_server(office, "--trusted-proxy", "127.0.0.1")
    answer = proxied.get("/popup", {"phone": "0501111111"}, headers=forwarded).json()
    assert answer["URL"].startswith("https://office.example/caller/"), answer


def test_the_pop_ups_links_are_caller_links_that_verify():
    secret = b"s" * 43
    links = ps.CallerLinks(secret, 30)
    made = links.link("https://popup.example.com", "+972501111111")
    after = int(time.time()) // 3600 * 3600  # (an hour may begin in between)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(made).query)
    assert ps.verify_caller_link(secret, "+972501111111", query["e"][0],
                                 query["s"][0]) == "ok"
    again = links.link("https://popup.example.com", "+972501111111")
    assert again is made or int(time.time()) // 3600 * 3600 != after


# Signed links -------------------------------------------------------------------------

SECRET = b"a-page-secret-for-the-tests-only"


def _parts(link):
    parts = urllib.parse.urlsplit(link)
    query = dict(urllib.parse.parse_qsl(parts.query))
    return parts, query["e"], query["s"]


def test_a_link_verifies_for_its_number_until_it_expires():
    now = 1_800_000_000
    link = ps.CallerLinks(SECRET, 30).link("https://popup.example.com", "+972722776772",
                                          now=now)
    parts, expires, signature = _parts(link)
    assert link.startswith("https://popup.example.com/caller/+972722776772?e=")
    assert int(expires) == now + 30 * 86400
    verify = ps.verify_caller_link
    assert verify(SECRET, "+972722776772", expires, signature, now=now) == "ok"
    assert verify(SECRET, "+972722776773", expires, signature, now=now) == "tampered"
    assert verify(SECRET, "+972722776772", str(int(expires) + 86400), signature,
                  now=now) == "tampered"
    assert verify(SECRET, "+972722776772", expires, signature[:-1] + "A"
                  if signature[-1] != "A" else signature[:-1] + "B", now=now) == "tampered"
    assert verify(b"another secret", "+972722776772", expires, signature,
                  now=now) == "tampered"
    assert verify(SECRET, "+972722776772", expires, signature,
                  now=int(expires) + 1) == "expired"
    for bad_expiry, bad_signature in (("", signature), ("-1", signature), ("1e9", signature),
                                      (expires, ""), (expires, "שלום"), (None, None),
                                      ("9" * 40, signature)):
        assert verify(SECRET, "+972722776772", bad_expiry, bad_signature,
                      now=now) == "tampered"
    short = ps.CallerLinks(SECRET, 1).link("http://h:8080", "0722776772", now=now)
    assert int(_parts(short)[1]) == now + 86400


def _server_and_secret(start_server, tmp_path, *args):
    state = tmp_path / "state"
    server = start_server(SAMPLE_CONTACTS, "--state-dir", state, "--token", "voicenter-token-123",
                          "--office-password", OFFICE_PASSWORD, *args)
    return server, (state / "page-secret").read_text().strip().encode("utf-8")


def test_a_signed_link_opens_that_callers_page_only_without_a_login(start_server,
                                                                     tmp_path):
    server, secret = _server_and_secret(start_server, tmp_path)
    link = ps.CallerLinks(secret, 30).link(server.url, "+972722776772")
    assert "voicenter-token-123" not in link
    path = link[len(server.url):]
    page = server.get(path)
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    assert "+972722776772" in page.text
    assert "default-src 'none'" in page.header("Content-Security-Policy")
    assert page.header("Referrer-Policy") == "same-origin"
    # The same signature on another number, or another page: the login is needed.
    other = path.replace("+972722776772", "+972541234567")
    refused = server.get(other)
    assert refused.status == 403 and 'data-reason="tampered"' in refused.text
    assert refused.header("Content-Type").startswith("text/html")
    assert "+972541234567" not in refused.text
    query = path.split("?", 1)[1]
    assert server.get("/?" + query).status == 303
    assert server.get("/calls.csv?" + query).status == 303
    assert server.get("/caller/+972722776772").status == 303  # no link: the login


def test_a_signed_link_opens_its_own_callers_page_only(start_server, tmp_path):
    server = start_server(_office(tmp_path), "--office-password", OFFICE_PASSWORD)
    _, url = _link(server, "0501111111")
    assert server.get(caller_page_path(url)).status == 200
    other = caller_page_path(url).replace("972501111111", "972502222222")
    for path in (other, caller_page_path(url)[:-2], caller_page_path(url).replace("?e=", "?e=9")):
        refused = server.get(path)
        assert refused.status == 403 and refused.header("Content-Type").startswith(
            "text/html"), (path, refused)
        assert 'data-reason="tampered"' in refused.text
    for path in ("/caller/+972501111111", "/calls", "/"):  # no link: the login
        resp = server.get(path)
        assert resp.status == 303 and resp.header("Location").startswith("/login"), path


def test_an_expired_link_is_refused_saying_so(start_server, tmp_path):
    server, secret = _server_and_secret(start_server, tmp_path, "--link-days", "7")
    old = ps.CallerLinks(secret, 7).link(server.url, "+972722776772",
                                         now=time.time() - 8 * 86400)
    resp = server.get(old[len(server.url):])
    assert resp.status == 403 and 'data-reason="expired"' in resp.text
    assert "valid for 7 days" in resp.text and "John" not in resp.text


def test_an_expired_link_gets_the_403_page_saying_so(start_server, tmp_path):
    server = start_server(_office(tmp_path))
    secret = (tmp_path / "state" / "page-secret").read_text().strip().encode()
    old = ps.CallerLinks(secret, 1).link(server.url, "+972501111111",
                                         now=time.time() - 3 * 86400)
    refused = server.get(caller_page_path(old))
    assert refused.status == 403 and 'data-reason="expired"' in refused.text
    _, fresh = _link(server, "0501111111")  # the pop-up's own link opens the page
    assert "Ann Office" in server.get(caller_page_path(fresh)).text


@pytest.mark.parametrize("expires", ["%C2%B2", "%D9%A3"])  # a superscript two, an Arabic three
def test_a_link_expiry_of_non_ascii_digits_is_tampered_never_a_5xx(start_server, expires):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD)
    resp = server.get(f"/caller/+972722776772?e={expires}&s=x")
    assert resp.status == 403 and 'data-reason="tampered"' in resp.text, resp.text


def test_a_signed_in_browser_opens_any_callers_page(start_server, tmp_path, log_in):
    server, _secret = _server_and_secret(start_server, tmp_path)
    client = log_in(server)
    assert client.get("/caller/+972541234567").status == 200


def test_a_signed_in_office_opens_any_callers_page_without_a_link(start_server, tmp_path,
                                                                  log_in):
    server = start_server(_office(tmp_path), "--office-password", OFFICE_PASSWORD)
    client = log_in(server)
    page = client.get("/caller/050-111-1111")
    assert page.status == 200 and "Ann Office" in page.text
    # The way back to the day's calls, which a signed link alone does not open.
    assert '<a href="/calls" id="calls-link">' in page.text
    _, url = _link(server, "0501111111")
    assert 'id="calls-link"' not in server.get(caller_page_path(url)).text
    assert client.get("/caller/not-a-number").status == 404


def test_forms_from_elsewhere_or_without_the_token_are_refused(start_server, tmp_path):
    server = start_server(_office(tmp_path), "--office-password", OFFICE_PASSWORD)
    _, url = _link(server, "0509999871")
    fields = {"name": "Mallory", "phone": "050-999-9871"}
    assert post_caller_form(server, url, "/contact", fields, origin="https://evil.example").status == 403
    parts = urllib.parse.urlsplit(url)
    no_token = server.post_form(parts.path + "/contact?" + parts.query, fields,
                                headers={"Origin": server.url})
    assert no_token.status == 403 and 'data-reason="form"' in no_token.text
    other = server.post_form("/caller/+972509999871/contact", fields,
                             headers={"Origin": server.url})  # no link, no session
    assert other.status == 303 and other.header("Location").startswith("/login")
    assert not (tmp_path / "state" / "additions.csv").exists()


@pytest.mark.parametrize("origin", ["http://[x", "http://[::1"])
def test_a_malformed_origin_on_a_form_is_refused_never_a_5xx(start_server, origin):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD)
    for path in ("/login", "/logout"):
        resp = server.request("POST", path, body=b"csrf=1&password=x",
                              headers={"Origin": origin,
                                       "Content-Type": "application/x-www-form-urlencoded"})
        assert 400 <= resp.status < 500, (path, resp.status, resp.text)


# The page -----------------------------------------------------------------------------


def test_a_known_callers_page_shows_every_column_and_every_contact_of_the_number(
        start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0501111111")
    page = server.get(caller_page_path(url))
    assert page.status == 200 and page.header("Content-Type").startswith("text/html")
    assert "default-src 'none'" in page.header("Content-Security-Policy")
    text = page.text
    assert '<bdi id="caller-name">Ann Office</bdi>' in text
    assert "Ann &amp; Co" in text and "likes mornings" in text
    for header in HEADER:
        assert f"<th><bdi>{header}</bdi></th>" in text, header
    assert 'href="tel:+972501111111"' in text and 'href="https://wa.me/972501111111"' in text
    assert 'href="mailto:ann@example.com"' in text
    _, shared = _link(server, "035552222")
    text = server.get(caller_page_path(shared)).text
    assert "2 contacts have this number" in text
    assert text.index("Front Desk") < text.index("Dr. Second")


@pytest.mark.parametrize("cell", [
    "a?cc=victim@evil.example", "a@b.example?bcc=victim@evil.example",
    "a&cc=victim@evil.example", "a%3Fcc=victim@evil.example", "a,victim@evil.example",
    "a;victim@evil.example", "a#x@evil.example", "a:b@evil.example"])
def test_only_a_plain_address_becomes_a_mailto_link(start_server, tmp_path, cell):
    contacts = write_contacts(tmp_path / "office" / "contacts.csv", [
        ("Ann Office", "Ann & Co", "050-111-1111", cell, ""),
        ("Bob Plain", "", "050-222-2222", "bob.o+office_1@mail.example.co.il", "")],
        header=HEADER)
    server = start_server(contacts)
    text = server.get(caller_page_path(_link(server, "0501111111")[1])).text
    assert "mailto:" not in text
    assert f'<bdi class="cell">{html.escape(cell, quote=True)}</bdi>' in text, text
    text = server.get(caller_page_path(_link(server, "0502222222")[1])).text
    assert 'href="mailto:bob.o+office_1@mail.example.co.il"' in text


def test_an_unknown_callers_page_has_both_forms_of_the_number_and_the_add_form(
        start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0509999871")
    text = server.get(caller_page_path(url)).text
    assert 'id="caller-national">050-999-9871<' in text
    assert 'id="caller-international">+972 50-999-9871<' in text
    assert 'id="add-form"' in text and 'name="phone" id="add-phone" value="050-999-9871"' in text


def test_the_page_is_in_hebrew_right_to_left_for_a_hebrew_browser_or_lang_he(
        start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0509999871")
    hebrew = server.get(caller_page_path(url), headers={"Accept-Language": "he-IL,he;q=0.9"}).text
    assert '<html lang="he" dir="rtl">' in hebrew and "הוספה כאיש קשר" in hebrew
    assert '<bdi dir="ltr" id="caller-national">' in hebrew  # the number keeps its order
    forced = start_server(_office(tmp_path), "--lang", "he")
    _, url = _link(forced, "0509999871")
    assert '<html lang="he" dir="rtl">' in forced.get(
        caller_page_path(url), headers={"Accept-Language": "en"}).text


# Each kind of source ------------------------------------------------------------------


#: The first sheet's contact, and the one on the sheet named "Contacts" (the second).
FIRST_SHEET = ("Sheet Person", "Sheet Co", "050-333-3333", "0503333333")
NAMED_SHEET = ("Named Sheet Person", "Named Co", "050-444-4444", "0504444444")


def _from(source, row):
    """How the caller's page names a contact's place (caller.from, the name isolated)."""
    return f"From \u2068{source}\u2069, row {row}"


@pytest.fixture(scope="module")
def workbooks(tmp_path_factory):
    """{"xlsx", "ods", "xls": path}: one workbook of two sheets (an "Other" sheet
    first, then "Contacts"), saved by openpyxl and by LibreOffice itself."""
    import openpyxl
    folder = tmp_path_factory.mktemp("workbooks")
    book = openpyxl.Workbook()
    first = book.active
    first.title = "Other"
    first.append(["Name", "Company", "Phone", "Notes"])
    first.append([*FIRST_SHEET[:3], "on the first sheet"])
    named = book.create_sheet("Contacts")
    named.append(["Name", "Company", "Phone", "Notes"])
    named.append(["Someone Else", "", "050-555-0000", ""])
    named.append([*NAMED_SHEET[:3], "on the sheet named Contacts"])
    xlsx = folder / "book" / "contacts.xlsx"
    xlsx.parent.mkdir()
    book.save(xlsx)
    libreoffice.needed()
    return {"xlsx": xlsx, **{kind: libreoffice.convert(xlsx, kind, folder / kind)
                             for kind in ("ods", "xls")}}


def _caller_page(server, phone, **headers):
    """The caller's page the pop-up for `phone` links to, asserted 200 HTML."""
    answer = server.lookup(phone)
    page = server.get(caller_page_path(answer["URL"]), headers=headers)
    assert page.status == 200, (phone, page, server.log_text()[-2000:])
    assert page.header("Content-Type").startswith("text/html"), page
    return answer, page.text


def test_the_callers_page_opens_for_a_contact_of_every_kind_of_source(
        start_server, tmp_path, workbooks, site):
    csv_path = write_contacts(tmp_path / "office" / "customers.csv", [
        ("CSV Person", "CSV Co", "050-111-1111")])
    vcf, people = vcards.write_iphone(tmp_path)  # Hebrew names, grouped TELs, a photo
    site.pages["/people.csv"] = Page("name,company,phone\nLink Person,Link Co,"
                                     "050-222-2222\n")
    server = start_server(csv_path, workbooks["xlsx"], workbooks["ods"], workbooks["xls"],
                          vcf, f"{site.url}/people.csv")

    _, text = _caller_page(server, "0501111111")
    assert '<bdi id="caller-name">CSV Person</bdi>' in text and _from("customers.csv", 2) in text

    answer, text = _caller_page(server, FIRST_SHEET[3])  # the same sheet in three files
    assert answer["TOTAL"] == 3 and "3 contacts have this number" in text
    for name in ("contacts.xlsx", "contacts.ods", "contacts.xls"):
        assert _from(name, 2) in text, name
    assert "on the first sheet" in text

    dan = people[1]  # (the first card has a URL: her pop-up opens her CRM)
    _, text = _caller_page(server, dan["numbers"][1])
    assert f'<bdi id="caller-name">{dan["name"]}</bdi>' in text
    assert _from("Contacts.vcf", dan["card"]) in text and "052-765-4321" in text

    answer, text = _caller_page(server, "0502222222")
    assert answer["CLIENTNAME"] == "Link Person"
    assert '<bdi id="caller-name">Link Person</bdi>' in text and "Link Co" in text

    # The additions file: a contact added from an unknown caller's page.
    _, url = (lambda a: (a, a["URL"]))(server.lookup("0509999871"))
    assert post_caller_form(server, url, "/contact", {"name": "Added Person",
                                           "phone": "050-999-9871"}).status == 303
    _, text = _caller_page(server, "0509999871")
    assert '<bdi id="caller-name">Added Person</bdi>' in text
    assert _from("additions.csv", 2) in text and 'name="row" value="2"' in text
    assert "could not read" not in server.log_text()


def test_with_sheet_the_callers_page_reads_that_sheet_of_each_workbook(
        start_server, workbooks):
    server = start_server(workbooks["xlsx"], workbooks["ods"], workbooks["xls"],
                          "--sheet", "Contacts")
    answer, text = _caller_page(server, NAMED_SHEET[3])
    assert (answer["TOTAL"], answer["CLIENTNAME"]) == (3, NAMED_SHEET[0])
    assert f'<bdi id="caller-name">{NAMED_SHEET[0]}</bdi>' in text
    for name in ("contacts.xlsx", "contacts.ods", "contacts.xls"):
        assert _from(name, 3) in text, name
    assert "on the sheet named Contacts" in text and "Add as a contact" not in text


def test_a_ragged_csv_row_does_not_empty_the_callers_page(start_server, tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("name,company,phone\nRagged Person,Co,050-111-1111\n"
                    "Too,Many,050-222-2222,cells,here\n", "utf-8")
    server = start_server(path)
    answer, text = _caller_page(server, "0501111111")
    assert answer["CLIENTNAME"] == "Ragged Person"
    assert '<bdi id="caller-name">Ragged Person</bdi>' in text


# A source that cannot be read now -----------------------------------------------------


def _unread_note(source):
    """The caller's page's line saying `source` could not be read (caller.unread)."""
    return (f'data-source="{source}">\u2068{source}\u2069 could not be read just now, '
            "so from it this page shows only what the pop-up knows")


def _office_page(client, number, **headers):
    """The caller's page of `number` (E.164) as the office sees it, asserted 200."""
    page = client.get(f"/caller/{number}", headers=headers)
    assert page.status == 200, (page, client.server.log_text()[-2000:])
    return page.text


def _assert_named_from_the_served_index(server, text, source):
    assert '<bdi id="caller-name">Bakery Ltd</bdi>' in text, server.log_text()[-2000:]
    assert _unread_note(source) in text
    assert 'href="https://crm.example.com/c/7"' in text  # its link, as the pop-up has it
    assert "Nobody in the contacts has this number" not in text
    assert 'id="add-form"' not in text and "Add as a contact" not in text


@pytest.mark.parametrize("breaking", ["deleted", "only its header"])
def test_while_a_file_cannot_be_read_the_callers_page_names_whom_the_pop_up_names(
        start_server, tmp_path, log_in, breaking):
    path = write_contacts(tmp_path / "office" / "customers.csv", [
        ("", "Bakery Ltd", "077-444-5555", "https://crm.example.com/c/7"),
        ("Other Person", "", "050-111-1111", ""),
        ("Its Baker", "Bakery Ltd", "077-444-5555", "")],
        header=("name", "company", "phone", "crm"))
    other = write_contacts(tmp_path / "office" / "more.csv", [("More", "", "050-222-2222")])
    server = start_server(path, other, "--office-password", OFFICE_PASSWORD)
    client = log_in(server)
    if breaking == "deleted":
        path.unlink()
    else:
        path.write_text("name,company,phone,crm\n", "utf-8")
    wait_until(lambda: server.health()["last_error"], what="the source's failure")

    answer = server.lookup("0774445555")
    assert (answer["TOTAL"], answer["CLIENTNAME"]) == (2, "Bakery Ltd")
    assert answer["URL"] == "https://crm.example.com/c/7"
    text = _office_page(client, "+972774445555")
    _assert_named_from_the_served_index(server, text, "customers.csv")
    assert "Of its 2 contacts holding this number, only the first is shown." in text
    hebrew = _office_page(client, "+972774445555", **HEBREW)
    assert '<bdi id="caller-name">Bakery Ltd</bdi>' in hebrew
    assert "לא ניתן היה לקרוא את \u2068customers.csv\u2069 כרגע" in hebrew
    assert "הוספה כאיש קשר" not in hebrew

    _, text = _caller_page(server, "0502222222")  # another source's contact, read whole
    assert '<bdi id="caller-name">More</bdi>' in text and _from("more.csv", 2) in text
    assert _unread_note("customers.csv") in text  # the failing source is still named


def test_while_a_link_fails_the_callers_page_names_whom_the_pop_up_names(
        start_server, site, log_in):
    site.pages["/c.csv"] = Page("name,company,phone,crm\n,Bakery Ltd,077-444-5555,"
                                "https://crm.example.com/c/7\n")
    link = f"http://user:pw-9s3cr3t@127.0.0.1:{site.port}/c.csv?key=k3y-9s3cr3t"
    server = start_server(link, "--url-interval", "0.2", "--office-password",
                          OFFICE_PASSWORD)
    client = log_in(server)
    site.pages["/c.csv"] = Page("boom", status=500)
    failing = wait_until(lambda: server.health()["sources"][0]["last_error"],
                         what="the link's failure")
    shown = server.health()["sources"][0]["source"]  # as /health names it: redacted
    assert "9s3cr3t" not in shown, failing

    assert server.lookup("0774445555")["CLIENTNAME"] == "Bakery Ltd"
    text = _office_page(client, "+972774445555")
    _assert_named_from_the_served_index(server, text, shown)
    assert "9s3cr3t" not in text


# Notes and marks on the caller's calls ------------------------------------------------


def test_a_note_and_mark_on_a_call_show_on_the_page_and_in_calls_csv(start_server,
                                                                     tmp_path):
    server = start_server(_office(tmp_path), "--calls-db", tmp_path / "calls.sqlite")
    _, url = _link(server, "0501111111", ivrid="call-7", statusCall="Ringing")
    server.lookup("0501111111", ivrid="call-7", statusCall="Hangup")
    wait_until(lambda: 'data-ivrid="call-7"' in server.get(caller_page_path(url)).text,
               what="the call on the caller's page")
    saved = post_caller_form(server, url, "/call", {"ivrid": "call-7", "mark": "called back",
                                         "note": "rang back, <b>sorted</b>"})
    assert saved.status == 303 and saved.header("Location").endswith("#calls"), saved
    page = server.get(caller_page_path(url)).text
    assert "rang back, &lt;b&gt;sorted&lt;/b&gt;" in page
    assert '<option value="called back" selected>' in page
    day = dt.date.today().isoformat()
    rows = server.get("/calls.csv", {"day": day}).text.splitlines()
    assert rows[1].endswith('called back,"rang back, <b>sorted</b>",,'), rows  # 2 more cols


def test_a_link_notes_only_its_own_callers_calls(start_server, tmp_path):
    server = start_server(_office(tmp_path), "--calls-db", tmp_path / "calls.sqlite")
    server.lookup("0501111111", ivrid="ann-call", statusCall="Hangup")
    _, other = _link(server, "0509999871", ivrid="other-call", statusCall="Hangup")
    wait_until(lambda: 'data-ivrid="other-call"' in server.get(caller_page_path(other)).text,
               what="the call on the caller's page")
    refused = post_caller_form(server, other, "/call", {"ivrid": "ann-call", "mark": "handled"})
    assert refused.status == 404, refused
    bad_mark = post_caller_form(server, other, "/call", {"ivrid": "other-call", "mark": "done"})
    assert bad_mark.status == 400, bad_mark


# Contacts added from the page ---------------------------------------------------------


def test_an_added_contact_is_found_at_once_kept_apart_and_survives_a_restart(
        start_server, tmp_path, run_cli):
    office = _office(tmp_path)
    office_bytes = office.read_bytes()
    server = start_server(office)
    _, url = _link(server, "0509999871")
    saved = post_caller_form(server, url, "/contact", {
        "name": "<script>alert(1)</script>", "company": "New Co",
        "phone": "050-999-9871", "notes": "first call\nwants a quote"})
    assert saved.status == 303, saved
    assert saved.header("Location") == caller_page_path(url) + "#contacts"
    answer = server.lookup("0509999871")  # no wait: served before the answer
    assert (answer["TOTAL"], answer["CLIENTNAME"], answer["COMPANY"]) == (
        1, "<script>alert(1)</script>", "New Co")
    page = server.get(caller_page_path(url)).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "wants a quote" in page and "additions.csv\u2069, row 2" in page
    assert office.read_bytes() == office_bytes
    additions = tmp_path / "state" / "additions.csv"
    assert additions.read_text("utf-8").startswith("Name,Company,Phone,Notes")
    health = server.health()
    assert [s["source"] for s in health["sources"]] == ["contacts.csv", "additions.csv"]
    assert not list(additions.parent.glob("*.part"))

    server.stop()
    again = start_server(office)
    assert again.lookup("0509999871")["CLIENTNAME"] == "<script>alert(1)</script>"
    check = run_cli(office, "--check")
    assert check.returncode == 0, check
    out = check.stdout.decode()
    assert f"== {additions}" in out and "in total: 4 contacts" in out, out


def test_an_added_contact_is_edited_and_removed_from_its_page(start_server, tmp_path):
    office = _office(tmp_path)
    server = start_server(office)
    _, url = _link(server, "0509999871")
    assert post_caller_form(server, url, "/contact", {"name": "Newcomer",
                                           "phone": "0509999871"}).status == 303
    edited = post_caller_form(server, url, "/contact", {"row": "2", "name": "Renamed",
                                             "company": "Co", "phone": "+972509999871"})
    assert edited.status == 303, edited
    assert server.lookup("0509999871")["CLIENTNAME"] == "Renamed"
    removed = post_caller_form(server, url, "/contact", {"row": "2", "remove": "1"})
    assert removed.status == 303, removed
    assert server.lookup("0509999871")["TOTAL"] == 0
    assert [s["source"] for s in server.health()["sources"]] == ["contacts.csv"]
    assert 'id="add-form"' in server.get(caller_page_path(url)).text
    assert post_caller_form(server, url, "/contact", {"name": "Back again",
                                           "phone": "050-999-9871"}).status == 303
    assert server.lookup("0509999871")["CLIENTNAME"] == "Back again"


def test_a_link_changes_only_its_own_callers_contacts(start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, first = _link(server, "0509999871")
    _, second = _link(server, "0508888872")
    assert post_caller_form(server, first, "/contact", {"name": "First",
                                             "phone": "0509999871"}).status == 303
    wrong_phone = post_caller_form(server, second, "/contact", {"name": "Sneaky",
                                                     "phone": "0509999871"})
    assert wrong_phone.status == 400 and "must be this caller" in wrong_phone.text
    not_its_row = post_caller_form(server, second, "/contact", {"row": "2", "remove": "1"})
    assert not_its_row.status == 400 and "no longer in the added contacts" in not_its_row.text
    assert server.lookup("0509999871")["CLIENTNAME"] == "First"


@pytest.mark.parametrize("fields,problem", [
    ({"phone": "0509999871"}, "Give a name or a company."),
    ({"name": "x" * 201, "phone": "0509999871"}, "at most 200 characters"),
    ({"name": "Ann", "notes": "n" * 2001, "phone": "0509999871"}, "at most 2000"),
    ({"name": "Ann", "phone": "not a number"}, "must be this caller"),
    ({"name": "Ann", "phone": "0509999871", "row": "x1"}, "no longer"),
])
def test_a_bad_add_form_is_refused_on_the_page_and_nothing_is_written(
        start_server, tmp_path, fields, problem):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0509999871")
    refused = post_caller_form(server, url, "/contact", fields)
    assert refused.status == 400 and problem in refused.text, refused
    assert 'id="caller-problem"' in refused.text
    assert not (tmp_path / "state" / "additions.csv").exists()
    assert server.lookup("0509999871")["TOTAL"] == 0


def test_hostile_text_in_an_addition_stays_one_contact(start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0509999871")
    name = 'Quote " comma, semi; \x00nul\r\nnewline'
    assert post_caller_form(server, url, "/contact", {"name": name, "phone": "0509999871",
                                           "notes": "a\r\nb,\"c\""}).status == 303
    answer = server.lookup("0509999871")
    assert answer["TOTAL"] == 1 and answer["CLIENTNAME"] == 'Quote " comma, semi;  nul  newline'
    assert server.health()["sources"][1]["contacts"] == 1


def test_the_additions_are_bounded_for_a_number_and_in_all(start_server, tmp_path):
    # Anyone holding one caller's link may add contacts with that caller's number:
    # ADDITIONS_PER_NUMBER of them, then a sentence in the page's language; removing
    # one makes room. The file as a whole holds ADDITIONS_MAX.
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0509999871")
    for n in range(ps.ADDITIONS_PER_NUMBER):
        assert post_caller_form(server, url, "/contact", {"name": f"Person {n}",
                                               "phone": "050-999-9871"}).status == 303
    additions = tmp_path / "state" / "additions.csv"
    kept = additions.read_bytes()
    page = server.get(caller_page_path(url)).text
    parts = urllib.parse.urlsplit(url)
    for language, sentence in (
            ("en", f"this number already has {ps.ADDITIONS_PER_NUMBER} added contacts"),
            ("he", f"למספר הזה כבר יש {ps.ADDITIONS_PER_NUMBER} אנשי קשר שנוספו")):
        refused = server.post_form(
            parts.path + "/contact?" + parts.query,
            {"csrf": _form_token(page), "name": "One more", "phone": "050-999-9871"},
            headers={"Origin": server.url, "Accept-Language": language})
        assert refused.status == 400 and sentence in refused.text, refused
        assert f'<html lang="{language}"' in refused.text
    assert additions.read_bytes() == kept
    assert server.lookup("0509999871")["TOTAL"] == ps.ADDITIONS_PER_NUMBER
    assert post_caller_form(server, url, "/contact", {"row": "2", "remove": "1"}).status == 303
    assert post_caller_form(server, url, "/contact", {"name": "One more",
                                           "phone": "050-999-9871"}).status == 303

    full = tmp_path / "full"
    write_contacts(full / "state" / "additions.csv", [
        (f"Added {n}", "", f"03-{n:07d}", "") for n in range(ps.ADDITIONS_MAX)],
        header=("Name", "Company", "Phone", "Notes"))
    server = start_server(_office(tmp_path), "--state-dir", full / "state")
    _, url = _link(server, "0501234567")
    refused = post_caller_form(server, url, "/contact", {"name": "Newcomer", "phone": "0501234567"})
    assert refused.status == 400, refused
    assert f"the added contacts are full ({ps.ADDITIONS_MAX} of them)" in refused.text
    assert server.lookup("0501234567")["TOTAL"] == 0

OFFICE_OPTIONS = ("--encoding", "windows-1255", "--delimiter", ";",
                  "--name-column", "First Name+Last Name", "--phone-columns", "Mobile")


def _cp1255_office(tmp_path):
    path = tmp_path / "office" / "outlook.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes("First Name;Last Name;Mobile\r\nדני;כהן;050-111-1111\r\n"
                     .encode("cp1255"))
    return path


def test_the_additions_file_is_read_with_its_own_settings_not_the_office_files(
        start_server, tmp_path, run_cli):
    office = _cp1255_office(tmp_path)
    server = start_server(office, *OFFICE_OPTIONS)
    assert server.lookup("0501111111")["CLIENTNAME"] == "דני כהן"
    url = server.lookup("0509999871")["URL"]
    saved = post_caller_form(server, url, "/contact", {"name": "נועה לוי", "company": "אקמה",
                                            "phone": "050-999-9871"})
    assert saved.status == 303, saved
    answer = server.lookup("0509999871")
    assert (answer["TOTAL"], answer["CLIENTNAME"], answer["COMPANY"]) == (
        1, "נועה לוי", "אקמה")
    _, text = _caller_page(server, "0509999871")
    assert '<bdi id="caller-name">נועה לוי</bdi>' in text
    _, text = _caller_page(server, "0501111111")  # the office's file, as before
    assert '<bdi id="caller-name">דני כהן</bdi>' in text
    server.stop()
    again = start_server(office, *OFFICE_OPTIONS)  # kept, and served at the next start
    assert again.lookup("0509999871")["CLIENTNAME"] == "נועה לוי"
    check = run_cli(office, "--check", *OFFICE_OPTIONS)
    assert check.returncode == 0, check
    assert "in total: 2 contacts" in check.stdout.decode("utf-8")


def test_a_phone_the_index_would_not_find_is_refused_and_nothing_is_kept(
        start_server, tmp_path, run_cli):
    office = write_contacts(tmp_path / "office.csv", [("Ann", "", "050-111-1111")])
    server = start_server(office)
    url = server.lookup("0509999871")["URL"]
    refused = post_caller_form(server, url, "/contact", {"name": "Slashed", "phone": "050/999/9871"})
    assert refused.status == 400 and "must be this caller" in refused.text, refused
    assert not (tmp_path / "state" / "additions.csv").exists()  # "not saved" is true
    assert post_caller_form(server, url, "/contact", {"name": "Dashed", "phone": "050-999-9871"}
                 ).status == 303
    other = server.lookup("0508888872")["URL"]
    assert post_caller_form(server, other, "/contact", {"name": "Slashed", "phone": "050/888/8872"}
                 ).status == 400
    with open(tmp_path / "state" / "additions.csv", encoding="utf-8") as handle:
        assert "Slashed" not in handle.read()
    assert server.lookup("0509999871")["CLIENTNAME"] == "Dashed"
    check = run_cli(office, "--check")
    assert check.returncode == 0, check

FORMULAS = ['=HYPERLINK("https://evil.example","click")', "+cmd|' /C calc'!A0",
            "@SUM(1+1)", "-2+3"]


def test_the_additions_file_keeps_no_cell_a_spreadsheet_would_run(start_server,
                                                                   tmp_path):
    server = start_server(write_contacts(tmp_path / "office.csv",
                                         [("Ann", "", "050-111-1111")]))
    url = server.lookup("0509999871")["URL"]
    saved = post_caller_form(server, url, "/contact", {
        "name": FORMULAS[0], "company": FORMULAS[1], "notes": FORMULAS[2] + "\n" + FORMULAS[3],
        "phone": "+972-50-999-9871"})
    assert saved.status == 303, saved
    other = server.lookup("0508888872")["URL"]
    assert post_caller_form(server, other, "/contact", {"name": FORMULAS[3], "company": " " + FORMULAS[2],
                                             "phone": "0508888872"}).status == 303
    with open(tmp_path / "state" / "additions.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Name", "Company", "Phone", "Notes"]
    for row in rows[1:]:
        for cell in row:
            first = cell.lstrip()[:1]
            assert not first or first not in "=+-@" or cell.startswith("'"), (cell, rows)
    assert rows[1][0] == "'" + FORMULAS[0] and rows[1][2] == "'+972-50-999-9871"
    # Still the caller's contact: found by the pop-up, and editable from its page.
    assert server.lookup("0509999871")["TOTAL"] == 1
    _, text = _caller_page(server, "0509999871")
    assert 'name="row" value="2"' in text
    edited = post_caller_form(server, url, "/contact", {"row": "2", "name": "=1+1",
                                             "phone": "+972509999871"})
    assert edited.status == 303, edited
    assert server.lookup("0509999871")["CLIENTNAME"] == "'=1+1"


#: Text made mostly of what starts formulas, spaces and look-alikes of the signs.
_FORMULA_TEXT = st.text(alphabet=st.sampled_from(
    list("=+-@ \t'\"|!A1(),;") + ["\uff1d", "\uff0b", "\ufe62", "\u200b", "\u00a0", "א"]),
    max_size=12) | st.text(max_size=12)


@pytest.fixture(scope="module")
def formula_server(start_module_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("formulas")
    office = write_contacts(base / "office.csv", [("Ann", "", "050-111-1111")])
    server = start_module_server(office, "--state-dir", base / "state")
    url = server.lookup("0509999871")["URL"]
    assert post_caller_form(server, url, "/contact", {"name": "first", "phone": "0509999871"}
                 ).status == 303
    return server, url, base / "state" / "additions.csv"


@settings(max_examples=40, deadline=None)
@given(name=_FORMULA_TEXT, company=_FORMULA_TEXT, notes=_FORMULA_TEXT)
def test_no_cell_of_the_additions_file_is_a_formula_whatever_is_typed(
        formula_server, name, company, notes):
    server, url, path = formula_server
    saved = post_caller_form(server, url, "/contact", {"row": "2", "name": name or "x",
                                            "company": company, "notes": notes,
                                            "phone": "+972509999871"})
    assert saved.status in (303, 400), saved
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 2, rows
    for cell in rows[1]:
        assert ps._no_formula(cell) == cell, (cell, rows)  # /calls.csv would write it so
    if saved.status == 303:
        assert server.lookup("0509999871")["CLIENTNAME"] == (rows[1][0] or rows[1][1])


# A page that cannot be built ----------------------------------------------------------


def test_an_error_building_a_page_is_the_html_error_page_in_its_language(tmp_path):
    """A checkout whose caller's page template is damaged (a half-copied upgrade)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(MODULE, checkout / "popup_server.py")
    shutil.copytree(MODULE.parent / "views", checkout / "views")
    shutil.copytree(MODULE.parent / "data", checkout / "data")
    for name in ("caller.tpl", "calls.tpl"):
        (checkout / "views" / name).write_text('% rebase("layout", title=t("no.such.key"))\n'
                                               "{{undefined_name}}\n", "utf-8")
    server = start_as_a_user_would(
        tmp_path, checkout / "data" / "contacts.csv", "--state-dir", tmp_path / "state",
        "--token", "", "--office-password", "", "--calls-db", "", module=checkout / "popup_server.py")
    try:
        _error_pages(server)
    finally:
        server.stop()


def _error_pages(server):
    url = server.lookup("0722776772")["URL"]
    for path in (caller_page_path(url), "/calls"):
        for language, words in (("he-IL,he;q=0.9", ('lang="he" dir="rtl"', "משהו השתבש")),
                                ("en", ('lang="en"', "Something went wrong"))):
            page = server.get(path, headers={"Accept-Language": language})
            assert page.status == 500, (path, page)
            assert page.header("Content-Type").startswith("text/html"), (path, page)
            assert '"STATUS"' not in page.text
            for word in words:
                assert word in page.text, (path, language, page.text[:500])
    log = wait_until(lambda: "no.such.key" in server.log_text() and server.log_text(),
                     what="the error in the log")
    assert "building the page" in log and "Traceback" in log
