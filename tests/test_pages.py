"""What every office page shares: each text in English and Hebrew (views/texts.toml, the
same placeholders, every key used), the language from Accept-Language or --lang,
right to left in Hebrew with names, numbers, paths and options isolated, the security
headers and escaping of every HTML page, times written in the page's language and the
office's zone (an Israeli office on a UTC machine), each 405 naming its own route; and
the "what Voicenter sent" page (/sent: the office login, no token, flags, escaping,
its bound of 200)."""

from __future__ import annotations

import datetime as dt
import html
import re
import string
import time
import zoneinfo
from pathlib import Path

import pytest

import popup_server as ps
from conftest import HEBREW, OFFICE_PASSWORD, SAMPLE_CONTACTS, TEST_ZONE, write_contacts


# Every text in both languages ---------------------------------------------------------


def _placeholders(text):
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("key", sorted(ps.page_texts()))
def test_every_text_has_both_languages_with_the_same_placeholders(key):
    entry = ps.page_texts()[key]
    assert len(entry) == len(ps.LANGUAGES), key
    assert all(isinstance(text, str) and text.strip() for text in entry), key
    assert len({frozenset(_placeholders(text)) for text in entry}) == 1, key


def test_the_texts_file_holds_each_key_once_in_every_language_and_nothing_else():
    import tomllib
    table = tomllib.loads(ps.TEXTS_FILE.read_text(encoding="utf-8"))  # a repeat: an error
    assert all(sorted(entry) == sorted(ps.LANGUAGES) for entry in table.values())
    assert list(table) == list(ps.page_texts())
    with pytest.raises(tomllib.TOMLDecodeError):  # why a key cannot be written twice
        tomllib.loads('["a.b"]\nen = "x"\n["a.b"]\nen = "y"\n')


def test_every_text_is_used_by_a_page_or_the_module():
    """A key no template and no code asks for is a text nobody reads (or a typo of a
    key that is asked for). Keys made from a family's prefix ("outcome." + outcome)
    count as used when the family's prefix is."""
    sources = Path(ps.__file__).read_text(encoding="utf-8") + "".join(
        view.read_text(encoding="utf-8") for view in Path(ps.VIEWS[0]).glob("*.tpl"))
    families = set(re.findall(r"""["']([a-z_]+\.)["']\s*\+|f["']([a-z_]+\.)\{""", sources))
    prefixes = {prefix for pair in families for prefix in pair if prefix}
    unused = [key for key in ps.page_texts() if f'"{key}"' not in sources
              and f"'{key}'" not in sources and not key.startswith(tuple(prefixes))]
    assert unused == []


def test_the_calendar_words_come_in_full():
    for language in ps.LANGUAGES:
        texts = ps.PageTexts(language)
        assert len(texts("weekdays").split()) == 7 and len(texts("months").split()) == 12


# The page's language, its direction and its headers -----------------------------------


@pytest.mark.parametrize("header,expected", [
    ("he-IL,he;q=0.9,en-US;q=0.8,en;q=0.7", "he"),
    ("en-US,en;q=0.9,he;q=0.8", "en"),
    ("fr-FR, fr;q=0.9, he;q=0.5", "he"),
    ("en;q=0.1, he;q=0.2", "he"),
    ("he;q=0, en;q=0.1", "en"),
    ("iw", "he"),
    ("HE-il", "he"),
    ("fr, de", "en"),
    ("", "en"),
    (None, "en"),
    ("*", "en"),
    ("he;q=abc, en;q=0.5", "en"),
    ("he;q=nan, en;q=0.5", "en"),
    ("he;q=2", "en"),
    (";;;,,,=", "en"),
])
def test_the_language_follows_accept_language_and_its_q_values(header, expected):
    assert ps.choose_language(header) == expected
    assert ps.choose_language(header, "he") == "he"
    assert ps.choose_language(header, "en") == "en"


def _assert_safe_headers(resp):
    policy = resp.header("Content-Security-Policy")
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy and "unsafe-inline" not in policy
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert f'<style nonce="{nonce}">' in resp.text
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("Referrer-Policy") == "same-origin"


def test_the_login_page_is_hebrew_right_to_left_or_english(start_server):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD)
    hebrew = server.get("/login", headers=HEBREW)
    assert '<html lang="he" dir="rtl">' in hebrew.text and "סיסמת המשרד" in hebrew.text
    _assert_safe_headers(hebrew)
    english = server.get("/login", headers={"Accept-Language": "en-GB"})
    assert '<html lang="en" dir="ltr">' in english.text and "Office password" in english.text
    _assert_safe_headers(english)


def test_lang_forces_one_language(start_server):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD,
                          "--lang", "he")
    page = server.get("/login", headers={"Accept-Language": "en-US"})
    assert '<html lang="he" dir="rtl">' in page.text


def test_the_calls_page_in_hebrew_keeps_names_and_numbers_isolated(start_server, tmp_path):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite")
    server.get("/popup", {"phone": "0722776772", "ivrid": "he-1", "statusCall": "Ringing"})
    page = server.get("/", {"try": "0722776772"}, headers=HEBREW)
    assert page.status == 200 and '<html lang="he" dir="rtl">' in page.text
    assert "בדיקת מספר" in page.text and "Try a number" not in page.text
    assert "<bdi><b>John Doe</b></bdi>" in page.text
    _assert_safe_headers(page)
    english = server.get("/", headers={"Accept-Language": "en"})
    assert "Try a number" in english.text and "בדיקת מספר" not in english.text


def test_a_name_holding_markup_is_shown_as_text(start_server, make_contacts):
    path = make_contacts([["<script>alert(1)</script>", "<b>Co</b>", "072-277-6772"]])
    server = start_server(path)
    for headers in (HEBREW, {}):
        page = server.get("/", {"try": "0722776772"}, headers=headers)
        assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)" in page.text

_LATIN_SNIPPET = re.compile(r"(?<![\u0590-\u05ff\w-])(?:--|/)[A-Za-z][\w./-]*"
                            r"|\{\w+\}–\{\w+\}")


def test_every_latin_snippet_of_a_hebrew_text_is_isolated():
    for key, (_english, hebrew) in ps.page_texts().items():
        bare = re.sub("\u2066[^\u2069]*\u2069|\u2068[^\u2069]*\u2069", "", hebrew)
        assert not _LATIN_SNIPPET.search(bare), (key, hebrew)

TOKEN = "inspect-token-0123456789"


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


def test_the_hebrew_calls_page_isolates_its_paths_and_options(office):
    _server, client = office
    page = client.get("/calls", headers=HEBREW).text
    assert "\u2066/cdr\u2069" in page and "\u2066/popup\u2069" in page
    assert '<a href="health" dir="ltr" id="health-link">/health</a>' in page
    assert '<pre dir="ltr" id="cdr-url">' in page


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


# Times in the office's zone, written in the page's language ---------------------------

ISRAEL = zoneinfo.ZoneInfo("Asia/Jerusalem")


def _israeli_office_on_a_utc_machine(start_server, tmp_path, *args):
    return start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                        "--calls-keep-days", "3650", *args, env={"TZ": "UTC"},
                        office_zone=False)


def _cdr(server, ivrid, at, caller="0722776772"):
    # `time` as Voicenter's guide documents it: Israel's wall-clock written as if it
    # were UTC (a CDR arriving long after its call is read that way).
    israel_clock = at.astimezone(ISRAEL).replace(tzinfo=dt.timezone.utc).timestamp()
    resp = server.post_json("/cdr", {"ivruniqueid": ivrid, "time": israel_clock,
                                     "caller": caller, "status": "NOANSWER"})
    assert resp.status == 200, resp


def test_a_utc_machine_shows_an_israeli_office_israels_time(start_server, tmp_path):
    server = _israeli_office_on_a_utc_machine(start_server, tmp_path)
    _cdr(server, "at-0420", dt.datetime(2026, 1, 15, 4, 20, tzinfo=ISRAEL))
    # 00:30 in Israel is 22:30 UTC of the day before: Israel's day holds it.
    _cdr(server, "after-midnight", dt.datetime(2026, 1, 15, 0, 30, tzinfo=ISRAEL))
    page = server.get("/calls", {"day": "2026-01-15"},
                      headers={"Accept-Language": "en"}).text
    times = dict(re.findall(r'id="call-([\w-]+)"[^>]*>\s*<td>([^<]*)</td>', page))
    assert times == {"at-0420": "04:20:00", "after-midnight": "00:30:00"}
    assert "Times in \u2068Asia/Jerusalem\u2069" in page
    csv_text = server.get("/calls.csv", {"day": "2026-01-15"}).text
    assert "2026-01-15 04:20:00" in csv_text and "02:20" not in csv_text


def test_the_callers_page_writes_its_times_in_the_pages_language(start_server, tmp_path):
    server = _israeli_office_on_a_utc_machine(start_server, tmp_path)
    _cdr(server, "jan", dt.datetime(2026, 1, 15, 4, 20, tzinfo=ISRAEL))
    english = server.get("/caller/+972722776772", headers={"Accept-Language": "en"}).text
    assert "15 January 2026, 04:20" in english and "2026-01-15" not in english
    assert "Times in \u2068Asia/Jerusalem\u2069" in english
    hebrew = server.get("/caller/+972722776772", headers={"Accept-Language": "he"}).text
    assert "15 בינואר 2026, 04:20" in hebrew and "השעות לפי \u2068Asia/Jerusalem\u2069" in hebrew


def test_loaded_at_is_a_time_of_the_zone_not_iso(start_server, tmp_path):
    server = _israeli_office_on_a_utc_machine(start_server, tmp_path)
    page = server.get("/calls", headers={"Accept-Language": "en"}).text
    loaded = re.search(r'id="loaded-at">([^<]*)<', page).group(1)
    health = server.health()["loaded_at"]  # /health keeps its ISO time, for monitors
    assert re.fullmatch(r"\d\d:\d\d", loaded) and "T" not in loaded
    israel_now = dt.datetime.fromisoformat(health).astimezone(ISRAEL)
    assert loaded == israel_now.strftime("%H:%M")


def test_timezone_given_still_wins_and_a_country_of_many_zones_keeps_the_machines(
        start_server, tmp_path):
    tokyo = _israeli_office_on_a_utc_machine(start_server, tmp_path, "--timezone",
                                             "Asia/Tokyo")
    assert "Times in \u2068Asia/Tokyo\u2069" in tokyo.get(
        "/calls", headers={"Accept-Language": "en"}).text
    american = start_server(SAMPLE_CONTACTS, "--region", "US", env={"TZ": "UTC"},
                            office_zone=False)
    assert "Times in \u2068UTC\u2069" in american.get(
        "/calls", headers={"Accept-Language": "en"}).text


def test_the_default_zone_is_the_countrys_when_it_has_one():
    assert ps.region_time_zone("IL") == ISRAEL
    assert ps.region_time_zone("FR") == zoneinfo.ZoneInfo("Europe/Paris")
    for several in ("US", "RU", "AU", "BR", "PS"):
        assert ps.region_time_zone(several) is None, several
    assert ps.parse_config([], {}).timezone == ISRAEL
    assert ps.parse_config(["--timezone", "UTC"], {}).timezone == zoneinfo.ZoneInfo("UTC")


# What Voicenter sent (/sent) ----------------------------------------------------------


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
