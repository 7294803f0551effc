"""Issue 13 over HTTP: the pop-up's default link to the caller's page, the page
itself (known and unknown callers), the additions file, notes on calls, and access
(signed links, the login, forms from elsewhere, escaping, CSP). The browser tests are
in test_caller_browser.py."""
import datetime as dt
import html
import re
import time
import urllib.parse

import pytest

import popup_server as ps
from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS, wait_until, write_contacts

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


def _path_of(url):
    parts = urllib.parse.urlsplit(url)
    return parts.path + "?" + parts.query


def _form_token(page_text):
    return re.search(r'name="csrf" value="([^"]*)"', page_text).group(1)


def _post(server, url, path_suffix, fields, origin=None):
    """POST a caller page's form as its browser would: to the page's path + suffix,
    with the link's ?e=&s= and the page's own token."""
    page = server.get(_path_of(url))
    assert page.status == 200, page
    parts = urllib.parse.urlsplit(url)
    return server.post_form(parts.path + path_suffix + "?" + parts.query,
                            {"csrf": _form_token(page.text), **fields},
                            headers={"Origin": origin or server.url})


# The pop-up's link ------------------------------------------------------------------

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


# The page ---------------------------------------------------------------------------

def test_a_known_callers_page_shows_every_column_and_every_contact_of_the_number(
        start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0501111111")
    page = server.get(_path_of(url))
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
    text = server.get(_path_of(shared)).text
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
    text = server.get(_path_of(_link(server, "0501111111")[1])).text
    assert "mailto:" not in text
    assert f'<bdi class="cell">{html.escape(cell, quote=True)}</bdi>' in text, text
    text = server.get(_path_of(_link(server, "0502222222")[1])).text
    assert 'href="mailto:bob.o+office_1@mail.example.co.il"' in text


def test_an_unknown_callers_page_has_both_forms_of_the_number_and_the_add_form(
        start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0509999871")
    text = server.get(_path_of(url)).text
    assert 'id="caller-national">050-999-9871<' in text
    assert 'id="caller-international">+972 50-999-9871<' in text
    assert 'id="add-form"' in text and 'name="phone" id="add-phone" value="050-999-9871"' in text


def test_the_page_is_in_hebrew_right_to_left_for_a_hebrew_browser_or_lang_he(
        start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0509999871")
    hebrew = server.get(_path_of(url), headers={"Accept-Language": "he-IL,he;q=0.9"}).text
    assert '<html lang="he" dir="rtl">' in hebrew and "הוספה כאיש קשר" in hebrew
    assert '<bdi dir="ltr" id="caller-national">' in hebrew  # the number keeps its order
    forced = start_server(_office(tmp_path), "--lang", "he")
    _, url = _link(forced, "0509999871")
    assert '<html lang="he" dir="rtl">' in forced.get(
        _path_of(url), headers={"Accept-Language": "en"}).text


# Access -----------------------------------------------------------------------------

def test_a_signed_link_opens_its_own_callers_page_only(start_server, tmp_path):
    server = start_server(_office(tmp_path), "--office-password", OFFICE_PASSWORD)
    _, url = _link(server, "0501111111")
    assert server.get(_path_of(url)).status == 200
    other = _path_of(url).replace("972501111111", "972502222222")
    for path in (other, _path_of(url)[:-2], _path_of(url).replace("?e=", "?e=9")):
        refused = server.get(path)
        assert refused.status == 403 and refused.header("Content-Type").startswith(
            "text/html"), (path, refused)
        assert 'data-reason="tampered"' in refused.text
    for path in ("/caller/+972501111111", "/calls", "/"):  # no link: the login
        resp = server.get(path)
        assert resp.status == 303 and resp.header("Location").startswith("/login"), path


def test_an_expired_link_gets_the_403_page_saying_so(start_server, tmp_path):
    server = start_server(_office(tmp_path))
    secret = (tmp_path / "state" / "page-secret").read_text().strip().encode()
    old = ps.CallerLinks(secret, 1).link(server.url, "+972501111111",
                                         now=time.time() - 3 * 86400)
    refused = server.get(_path_of(old))
    assert refused.status == 403 and 'data-reason="expired"' in refused.text
    _, fresh = _link(server, "0501111111")  # the pop-up's own link opens the page
    assert "Ann Office" in server.get(_path_of(fresh)).text


def test_a_signed_in_office_opens_any_callers_page_without_a_link(start_server, tmp_path,
                                                                  log_in):
    server = start_server(_office(tmp_path), "--office-password", OFFICE_PASSWORD)
    client = log_in(server)
    page = client.get("/caller/050-111-1111")
    assert page.status == 200 and "Ann Office" in page.text
    assert client.get("/caller/not-a-number").status == 404


def test_forms_from_elsewhere_or_without_the_token_are_refused(start_server, tmp_path):
    server = start_server(_office(tmp_path), "--office-password", OFFICE_PASSWORD)
    _, url = _link(server, "0509999871")
    fields = {"name": "Mallory", "phone": "050-999-9871"}
    assert _post(server, url, "/contact", fields, origin="https://evil.example").status == 403
    parts = urllib.parse.urlsplit(url)
    no_token = server.post_form(parts.path + "/contact?" + parts.query, fields,
                                headers={"Origin": server.url})
    assert no_token.status == 403 and 'data-reason="form"' in no_token.text
    other = server.post_form("/caller/+972509999871/contact", fields,
                             headers={"Origin": server.url})  # no link, no session
    assert other.status == 303 and other.header("Location").startswith("/login")
    assert not (tmp_path / "state" / "additions.csv").exists()


# Additions --------------------------------------------------------------------------

def test_an_added_contact_is_found_at_once_kept_apart_and_survives_a_restart(
        start_server, tmp_path, run_cli):
    office = _office(tmp_path)
    office_bytes = office.read_bytes()
    server = start_server(office)
    _, url = _link(server, "0509999871")
    saved = _post(server, url, "/contact", {
        "name": "<script>alert(1)</script>", "company": "New Co",
        "phone": "050-999-9871", "notes": "first call\nwants a quote"})
    assert saved.status == 303, saved
    assert saved.header("Location") == _path_of(url) + "#contacts"
    answer = server.lookup("0509999871")  # no wait: served before the answer
    assert (answer["TOTAL"], answer["CLIENTNAME"], answer["COMPANY"]) == (
        1, "<script>alert(1)</script>", "New Co")
    page = server.get(_path_of(url)).text
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
    assert _post(server, url, "/contact", {"name": "Newcomer",
                                           "phone": "0509999871"}).status == 303
    edited = _post(server, url, "/contact", {"row": "2", "name": "Renamed",
                                             "company": "Co", "phone": "+972509999871"})
    assert edited.status == 303, edited
    assert server.lookup("0509999871")["CLIENTNAME"] == "Renamed"
    removed = _post(server, url, "/contact", {"row": "2", "remove": "1"})
    assert removed.status == 303, removed
    assert server.lookup("0509999871")["TOTAL"] == 0
    assert [s["source"] for s in server.health()["sources"]] == ["contacts.csv"]
    assert 'id="add-form"' in server.get(_path_of(url)).text
    assert _post(server, url, "/contact", {"name": "Back again",
                                           "phone": "050-999-9871"}).status == 303
    assert server.lookup("0509999871")["CLIENTNAME"] == "Back again"


def test_a_link_changes_only_its_own_callers_contacts(start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, first = _link(server, "0509999871")
    _, second = _link(server, "0508888872")
    assert _post(server, first, "/contact", {"name": "First",
                                             "phone": "0509999871"}).status == 303
    wrong_phone = _post(server, second, "/contact", {"name": "Sneaky",
                                                     "phone": "0509999871"})
    assert wrong_phone.status == 400 and "must be this caller" in wrong_phone.text
    not_its_row = _post(server, second, "/contact", {"row": "2", "remove": "1"})
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
    refused = _post(server, url, "/contact", fields)
    assert refused.status == 400 and problem in refused.text, refused
    assert 'id="caller-problem"' in refused.text
    assert not (tmp_path / "state" / "additions.csv").exists()
    assert server.lookup("0509999871")["TOTAL"] == 0


def test_hostile_text_in_an_addition_stays_one_contact(start_server, tmp_path):
    server = start_server(_office(tmp_path))
    _, url = _link(server, "0509999871")
    name = 'Quote " comma, semi; \x00nul\r\nnewline'
    assert _post(server, url, "/contact", {"name": name, "phone": "0509999871",
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
        assert _post(server, url, "/contact", {"name": f"Person {n}",
                                               "phone": "050-999-9871"}).status == 303
    additions = tmp_path / "state" / "additions.csv"
    kept = additions.read_bytes()
    page = server.get(_path_of(url)).text
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
    assert _post(server, url, "/contact", {"row": "2", "remove": "1"}).status == 303
    assert _post(server, url, "/contact", {"name": "One more",
                                           "phone": "050-999-9871"}).status == 303

    full = tmp_path / "full"
    write_contacts(full / "state" / "additions.csv", [
        (f"Added {n}", "", f"03-{n:07d}", "") for n in range(ps.ADDITIONS_MAX)],
        header=("Name", "Company", "Phone", "Notes"))
    server = start_server(_office(tmp_path), "--state-dir", full / "state")
    _, url = _link(server, "0501234567")
    refused = _post(server, url, "/contact", {"name": "Newcomer", "phone": "0501234567"})
    assert refused.status == 400, refused
    assert f"the added contacts are full ({ps.ADDITIONS_MAX} of them)" in refused.text
    assert server.lookup("0501234567")["TOTAL"] == 0


# Notes on calls -----------------------------------------------------------------------

def test_a_note_and_mark_on_a_call_show_on_the_page_and_in_calls_csv(start_server,
                                                                     tmp_path):
    server = start_server(_office(tmp_path), "--calls-db", tmp_path / "calls.sqlite")
    _, url = _link(server, "0501111111", ivrid="call-7", statusCall="Ringing")
    server.lookup("0501111111", ivrid="call-7", statusCall="Hangup")
    wait_until(lambda: 'data-ivrid="call-7"' in server.get(_path_of(url)).text,
               what="the call on the caller's page")
    saved = _post(server, url, "/call", {"ivrid": "call-7", "mark": "called back",
                                         "note": "rang back, <b>sorted</b>"})
    assert saved.status == 303 and saved.header("Location").endswith("#calls"), saved
    page = server.get(_path_of(url)).text
    assert "rang back, &lt;b&gt;sorted&lt;/b&gt;" in page
    assert '<option value="called back" selected>' in page
    day = dt.date.today().isoformat()
    rows = server.get("/calls.csv", {"day": day}).text.splitlines()
    assert rows[1].endswith('called back,"rang back, <b>sorted</b>",,'), rows  # 2 more cols


def test_a_link_notes_only_its_own_callers_calls(start_server, tmp_path):
    server = start_server(_office(tmp_path), "--calls-db", tmp_path / "calls.sqlite")
    server.lookup("0501111111", ivrid="ann-call", statusCall="Hangup")
    _, other = _link(server, "0509999871", ivrid="other-call", statusCall="Hangup")
    wait_until(lambda: 'data-ivrid="other-call"' in server.get(_path_of(other)).text,
               what="the call on the caller's page")
    refused = _post(server, other, "/call", {"ivrid": "ann-call", "mark": "handled"})
    assert refused.status == 404, refused
    bad_mark = _post(server, other, "/call", {"ivrid": "other-call", "mark": "done"})
    assert bad_mark.status == 400, bad_mark


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


@pytest.mark.parametrize("expires", ["%C2%B2", "%D9%A3"])  # a superscript two, an Arabic three
def test_a_link_expiry_of_non_ascii_digits_is_tampered_never_a_5xx(start_server, expires):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD)
    resp = server.get(f"/caller/+972722776772?e={expires}&s=x")
    assert resp.status == 403 and 'data-reason="tampered"' in resp.text, resp.text


@pytest.mark.parametrize("origin", ["http://[x", "http://[::1"])
def test_a_malformed_origin_on_a_form_is_refused_never_a_5xx(start_server, origin):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD)
    for path in ("/login", "/logout"):
        resp = server.request("POST", path, body=b"csrf=1&password=x",
                              headers={"Origin": origin,
                                       "Content-Type": "application/x-www-form-urlencoded"})
        assert 400 <= resp.status < 500, (path, resp.status, resp.text)
