"""/popup answers Voicenter as Voicenter expects, in the three formats it sends: a GET with
statusCall, a form POST and a JSON POST with status. The answer's five fields and their
JSON types, every call phase, fields it does not know, a missing, withheld or unknown
caller id, the link it gives (a URL template, a URL column, a no-match URL; only web
links), every refusal as JSON with STATUS "ERROR" and a MESSAGE, bodies beyond
--max-body; and the hand-made request decoders and answer encoder, the same as the
standard library's for every input."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given, settings, strategies as st

import popup_server as ps  # _json_bytes, _form_fields, _unquote: checked against the stdlib
from conftest import (SAMPLE_CONTACTS, assert_json_error, assert_no_contact_data,
                      assert_popup_answer)

GET_EXAMPLE = {
    "phone": "0722776772",
    "ivrid": "202010111sdsd3684752bcb3d",
    "extenUser": "SIPSIPl",
    "did": "0722776773",
    "statusCall": "Ringing",
}

FORM_EXAMPLE = {
    "phone": "0722776772",
    "ivrid": "202010111sdsd3684752bcb3d",
    "extenUser": "SIPSIPl",
    "did": "0722776773",
    "status": "Ringing",
}

JSON_EXAMPLE = {
    "phone": "972722776772", "callerName": "Queue Testing",
    "ivrid": "20220916103546022555eb61e755c08a", "extenUser": "KGpK4iWq",
    "did": "0776707528", "status": "Ringing", "direction": "Incoming",
    "recordFile": "20220916103546022555eb61e755c08a-user-972722776772-0776707528.mp3",
    "isMuted": False, "callStarted": 1663324548, "isAnswered": False, "callAnswered": 0,
    "currentCall": {"callStarted": 1663324548, "calldurationinterval": 1663324548,
                    "callAnswered": 0, "answered": 0, "callername": "Queue Testing",
                    "callerphone": "972722776772"},
}


def assert_john_doe(answer: dict) -> None:
    assert_popup_answer(answer)
    assert answer["CLIENTNAME"] == "John Doe", answer
    assert answer["COMPANY"] == "Voicenter", answer
    assert answer["TOTAL"] >= 1, answer


def assert_not_found(answer: dict) -> None:
    assert_popup_answer(answer)
    assert answer["TOTAL"] == 0, answer
    assert answer["CLIENTNAME"] == "", answer
    assert answer["COMPANY"] == "", answer


# The three request formats on the sample data -----------------------------------------


def test_get_request_in_voicenter_format_answers_john_doe_from_sample_file(server):
    resp = server.get("/popup", GET_EXAMPLE)
    assert resp.status == 200, resp
    assert_john_doe(resp.json())


def test_form_post_in_voicenter_format_answers_john_doe_from_sample_file(server):
    resp = server.post_form("/popup", FORM_EXAMPLE)
    assert resp.status == 200, resp
    assert_john_doe(resp.json())


def test_json_post_of_the_full_voicenter_example_answers_john_doe(server):
    resp = server.post_json("/popup", JSON_EXAMPLE)
    assert resp.status == 200, resp
    assert_john_doe(resp.json())


def test_json_post_with_phone_as_a_number_answers_john_doe(server):
    body = dict(JSON_EXAMPLE, phone=972722776772)
    resp = server.post_json("/popup", body)
    assert resp.status == 200, resp
    assert_john_doe(resp.json())


def test_a_raw_utf8_form_body_is_read_as_utf8(start_server):
    server = start_server(SAMPLE_CONTACTS)
    resp = server.request("POST", "/popup", body="phone=0722776772&extenUser=דנה".encode(),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200 and resp.json()["CLIENTNAME"] == "John Doe"


def test_server_without_contacts_argument_serves_the_shipped_sample_file(start_server):
    # cwd is a temporary directory: the default must be relative to the module.
    srv = start_server(None)
    assert_john_doe(srv.lookup("0722776772"))
    assert srv.health()["source"] == "contacts.csv"


@pytest.mark.parametrize("phase", ["Ringing", "Answer", "Hangup"])
def test_every_call_phase_is_answered_in_all_three_formats(server, phase):
    get = server.get("/popup", dict(GET_EXAMPLE, statusCall=phase))
    form = server.post_form("/popup", dict(FORM_EXAMPLE, status=phase))
    js = server.post_json("/popup", dict(JSON_EXAMPLE, status=phase,
                                         isAnswered=phase != "Ringing"))
    for resp in (get, form, js):
        assert resp.status == 200, (phase, resp)
        assert_john_doe(resp.json())


# statusCall or status, and fields it does not know ------------------------------------


@pytest.fixture
def status_server(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    return start_server(path, "--url-template", "https://crm.example/c?s={status}")


def _status_in_url(answer: dict) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(answer["URL"]).query)
    return query.get("s", [""])[0]


def test_get_status_is_read_from_statusCall(status_server):
    answer = status_server.lookup("0722776772", statusCall="Answer")
    assert _status_in_url(answer) == "Answer", answer


def test_form_status_is_read_from_status(status_server):
    resp = status_server.post_form("/popup", dict(FORM_EXAMPLE, status="Hangup"))
    assert resp.status == 200, resp
    assert _status_in_url(resp.json()) == "Hangup", resp


def test_json_status_is_read_from_status(status_server):
    resp = status_server.post_json("/popup", dict(JSON_EXAMPLE, status="Answer"))
    assert resp.status == 200, resp
    assert _status_in_url(resp.json()) == "Answer", resp


def test_either_status_field_name_is_accepted_in_any_format(status_server):
    get = status_server.lookup("0722776772", status="Hangup")
    assert _status_in_url(get) == "Hangup", get
    form = status_server.post_form("/popup", {"phone": "0722776772", "statusCall": "Answer"})
    assert form.status == 200, form
    assert _status_in_url(form.json()) == "Answer", form


def test_unknown_fields_are_ignored_in_every_format(server):
    get = server.get("/popup", dict(GET_EXAMPLE, foo="bar", callerName="x", queueId="7"))
    form = server.post_form("/popup", dict(FORM_EXAMPLE, foo="bar", custom="{}"))
    body = dict(JSON_EXAMPLE, foo={"nested": [1, 2, {"x": None}]}, extra=[1, "a"],
                currentCall=dict(JSON_EXAMPLE["currentCall"], queueid=17,
                                 customdata={"crm": "x"}, dialednumber="0501234567"))
    js = server.post_json("/popup", body)
    for resp in (get, form, js):
        assert resp.status == 200, resp
        assert_john_doe(resp.json())


# The shape of the answer --------------------------------------------------------------


def test_answer_has_all_five_fields_with_the_right_types_when_found_and_not(server):
    found = server.lookup("0722776772")
    missing = server.lookup("0509999871")
    for answer in (found, missing):
        assert set(answer) >= {"STATUS", "TOTAL", "CLIENTNAME", "COMPANY", "URL"}, answer
        assert_popup_answer(answer)


def _content_type_is_json_utf8(resp) -> None:
    ctype = resp.header("Content-Type") or ""
    parts = [p.strip().lower() for p in ctype.split(";")]
    assert parts[0] == "application/json", ctype
    assert "charset=utf-8" in parts[1:], ctype


def test_answers_are_application_json_with_utf8_charset(server):
    for resp in (server.get("/popup", GET_EXAMPLE),
                 server.post_form("/popup", FORM_EXAMPLE),
                 server.post_json("/popup", JSON_EXAMPLE),
                 server.get("/popup", {"phone": "0509999871"}),
                 server.get("/popup", {"ivrid": "x"})):
        _content_type_is_json_utf8(resp)


def test_hebrew_name_and_company_come_out_as_raw_utf8(start_server, make_contacts):
    name, company = "ישראל ישראלי", "חברת בדיקה בע\"מ"
    path = make_contacts([[name, company, "050-765-4321"]])
    srv = start_server(path)
    resp = srv.get("/popup", {"phone": "0507654321"})
    assert resp.status == 200, resp
    assert name.encode("utf-8") in resp.body, resp.body
    assert company.replace('"', '\\"').encode("utf-8") in resp.body, resp.body
    assert b"\\u05" not in resp.body, resp.body
    answer = resp.json()
    assert answer["CLIENTNAME"] == name and answer["COMPANY"] == company, answer


@settings(max_examples=300)
@given(st.text(), st.text(), st.text(), st.integers(0, 10**6))
def test_the_hand_assembled_answer_is_exactly_what_json_dumps_writes(name, company, url,
                                                                     total):
    answer = ps.PopupAnswer(total, name, company, url, None)
    assert answer.json_bytes() == ps._json_bytes(answer.as_dict())


# Missing, empty, withheld and unknown numbers -----------------------------------------


def test_missing_phone_is_a_400_error_with_message_in_every_format(server):
    get = server.get("/popup", {"ivrid": "x", "statusCall": "Ringing"})
    bare = server.get("/popup")
    form = server.post_form("/popup", {"ivrid": "x", "status": "Ringing"})
    body = {k: v for k, v in JSON_EXAMPLE.items() if k != "phone"}
    js = server.post_json("/popup", body)
    for resp in (get, bare, form, js):
        assert_json_error(resp, 400)


@pytest.mark.parametrize("phone", ["", "anonymous", "restricted", "private", "unknown",
                                   "Unknown", "***", "Anonymous", "PRIVATE"])
def test_empty_or_withheld_caller_id_is_ok_with_no_match(server, phone):
    assert_not_found(server.lookup(phone))
    resp = server.post_json("/popup", dict(JSON_EXAMPLE, phone=phone))
    assert resp.status == 200, resp
    assert_not_found(resp.json())
    resp = server.post_form("/popup", dict(FORM_EXAMPLE, phone=phone))
    assert resp.status == 200, resp
    assert_not_found(resp.json())


def test_unknown_number_is_ok_with_total_zero_and_empty_fields(server):
    answer = server.lookup("0509999871")
    assert_not_found(answer)
    # No --no-match-url: the link to the caller's own page.
    assert answer["URL"].startswith(server.url + "/caller/+972509999871?e="), answer


# The link in URL ----------------------------------------------------------------------

TEMPLATE = ("https://crm.example/c?p={phone}&e={e164}&n={name}&co={company}"
            "&i={ivrid}&d={did}&u={extenUser}&s={status}&id={id}")


def test_url_template_fills_every_placeholder_url_encoded(start_server, make_contacts):
    path = make_contacts([["C 17/x", "דנה לוי", "A&B Ltd #1", "072-277-6772"]],
                         header=("id", "name", "company", "phone"))
    srv = start_server(path, "--url-template", TEMPLATE)
    resp = srv.get("/popup", {"phone": "0722776772", "ivrid": "2024 01&x", "did": "0776707528",
                              "extenUser": "a+b", "statusCall": "Ringing"})
    assert resp.status == 200, resp
    url = resp.json()["URL"]
    assert url.startswith("https://crm.example/c?"), url
    # Encoded: no raw space, no raw Hebrew, no '#' fragment.
    assert " " not in url and "#" not in url, url
    assert all(ord(ch) < 128 for ch in url), url
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query, keep_blank_values=True)
    got = {k: v[0] for k, v in query.items()}
    assert got == {
        "p": "0722776772", "e": "+972722776772", "n": "דנה לוי", "co": "A&B Ltd #1",
        "i": "2024 01&x", "d": "0776707528", "u": "a+b", "s": "Ringing", "id": "C 17/x",
    }, url


def test_url_template_uses_json_fields_too(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, "--url-template",
                       "https://crm.example/c?i={ivrid}&d={did}&u={extenUser}&s={status}")
    resp = srv.post_json("/popup", JSON_EXAMPLE)
    assert resp.status == 200, resp
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(resp.json()["URL"]).query)
    assert {k: v[0] for k, v in query.items()} == {
        "i": "20220916103546022555eb61e755c08a", "d": "0776707528",
        "u": "KGpK4iWq", "s": "Ringing"}, resp


def test_per_row_url_column_wins_over_template(start_server, make_contacts):
    path = make_contacts([["With Link", "A", "050-111-1111", "https://crm.example/contact/42"],
                          ["No Link", "B", "050-222-2222", ""]],
                         header=("name", "company", "phone", "crm_link"))
    srv = start_server(path, "--url-column", "crm_link",
                       "--url-template", "https://template.example/?p={phone}")
    assert srv.lookup("0501111111")["URL"] == "https://crm.example/contact/42"
    assert srv.lookup("0502222222")["URL"] == "https://template.example/?p=0502222222"


def test_no_match_url_is_answered_for_unknown_numbers_only(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, "--no-match-url", "https://crm.example/new?p={phone}",
                       "--url-template", "https://crm.example/c?p={phone}")
    missing = srv.lookup("0509999871")
    assert_not_found(missing)
    assert missing["URL"] == "https://crm.example/new?p=0509999871", missing
    found = srv.lookup("0722776772")
    assert found["URL"] == "https://crm.example/c?p=0722776772", found

LINKS = [  # (phone, URL cell, what the pop-up sends)
    ("0501111001", "javascript:alert(document.cookie)", ""),
    ("0501111002", "data:text/html,<script>alert(1)</script>", ""),
    ("0501111003", " JavaScript:alert(1)", ""),
    ("0501111004", "vbscript:msgbox(1)", ""),
    ("0501111005", "//evil.example/x", ""),
    ("0501111006", "crm.example.com/contact/6", ""),
    ("0501111007", "https://crm.example.com/contact/7", "https://crm.example.com/contact/7"),
    ("0501111008", "HTTP://crm.example.com/8", "HTTP://crm.example.com/8"),
    ("0501111009", "  https://crm.example.com/9", "https://crm.example.com/9"),
    ("0501111010", "", ""),
]


@pytest.fixture
def links_file(make_contacts):
    return make_contacts([[f"Person {n}", "Co", phone, url]
                          for n, (phone, url, _sent) in enumerate(LINKS)],
                         header=("name", "company", "phone", "url"))


def test_the_popup_sends_only_web_links_from_the_url_column(start_server, links_file):
    srv = start_server(links_file)
    for phone, cell, sent in LINKS:
        answer = srv.lookup(phone)
        # A link refused leaves the URL to the caller's own page.
        sent = sent or f"{srv.url}/caller/+972{phone[1:]}?e="
        assert answer["TOTAL"] == 1 and answer["URL"].startswith(sent), (cell, answer)


def test_check_warns_about_the_links_it_will_not_send(run_cli, links_file):
    result = run_cli(links_file, "--check")
    out = result.stdout.decode()
    assert result.returncode == 0, out
    warning = next(line for line in out.splitlines() if "not http: or https: links" in line)
    assert warning.startswith("warning: 6 contact URLs"), warning
    assert "row 2 'javascript:alert(document.cookie)'" in warning, warning
    assert "row 3 'data:text/html" in warning and "and 3 more" in warning, warning


@pytest.mark.parametrize("option", ["--url-template", "--no-match-url"])
@pytest.mark.parametrize("template", ["/contact/{id}", "//evil.example/{phone}"])
def test_a_template_that_is_not_a_web_link_is_refused_at_start(run_cli, contacts,
                                                               option, template):
    result = run_cli(contacts, option, template, "--check")
    assert result.returncode == 2, result
    assert b"must start with http:// or https://" in result.stderr, result.stderr


# Every refusal is JSON with STATUS "ERROR" and a MESSAGE ------------------------------


@pytest.fixture
def open_server(start_server, contacts):
    return start_server(contacts, "--max-body", "1024")


@pytest.mark.parametrize("body", [b'{"phone": ', b"{'phone': '0722776772'}", b"nul",
                                  b'{"phone": "0722776772",}', b"\x00\x01", b"{]"])
def test_malformed_json_is_a_400_json_error(open_server, body):
    resp = open_server.request("POST", "/popup", body=body,
                               headers={"Content-Type": "application/json"})
    assert_json_error(resp, 400)


@pytest.mark.parametrize("body", [b'["0722776772"]', b'"0722776772"', b"972722776772",
                                  b"null", b"true", b'[{"phone": "0722776772"}]'])
def test_json_body_that_is_not_an_object_is_a_400_json_error(open_server, body):
    resp = open_server.request("POST", "/popup", body=body,
                               headers={"Content-Type": "application/json"})
    assert_json_error(resp, 400)
    assert_no_contact_data(resp)


@pytest.mark.parametrize("phone", [{"number": "0722776772"}, ["0722776772"], True, False,
                                   None, [], {}])
def test_phone_that_is_not_a_string_or_number_is_a_400_json_error(open_server, phone):
    resp = open_server.post_json("/popup", {"phone": phone, "status": "Ringing"})
    assert_json_error(resp, 400)
    assert_no_contact_data(resp)


@pytest.mark.parametrize("body", [b'{"phone": "0722776772", "callerName": "\xff\xfe"}',
                                  b'{"phone": "\xc3\x28"}',
                                  b'{"phone": "0722776772", "x": "\xed\xa0\x80"}'])
def test_json_body_that_is_not_utf8_is_a_400_json_error(open_server, body):
    resp = open_server.request("POST", "/popup", body=body,
                               headers={"Content-Type": "application/json; charset=utf-8"})
    assert_json_error(resp, 400)


@pytest.mark.parametrize("path", ["/nope", "/popup/extra", "/index.php", "/healthz",
                                  "/popup_server.py", "/data/contacts.csv",
                                  "/../popup_server.py", "/%2e%2e/popup_server.py",
                                  "/data/../popup_server.py", "/tests/conftest.py",
                                  "/requirements.txt", "/.git/config", "/data/"])
def test_unknown_paths_are_404_json_and_never_serve_files(open_server, path):
    resp = open_server.request("GET", path)
    assert_json_error(resp, 404)
    for leak in (b"import ", b"def ", b"John Doe", b"Voicenter", b"[core]", b"bottle=="):
        assert leak not in resp.body, (path, resp)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_on_popup_are_405_json(open_server, method):
    resp = open_server.request(method, "/popup?phone=0722776772", body=b'{"phone": "1"}',
                               headers={"Content-Type": "application/json"})
    assert_json_error(resp, 405)
    assert_no_contact_data(resp)


def test_body_under_max_body_is_answered(open_server):
    small = open_server.post_json("/popup", {"phone": "0722776772", "pad": "x" * 500})
    assert small.status == 200, small
    assert small.json()["CLIENTNAME"] == "John Doe"


@pytest.mark.parametrize("size", [1100, 5000, 30_000])
@pytest.mark.parametrize("kind", ["json", "form"])
def test_body_over_max_body_is_413_json(open_server, size, kind):
    if kind == "json":
        resp = open_server.post_json("/popup", {"phone": "0722776772", "pad": "x" * size})
    else:
        resp = open_server.post_form("/popup", {"phone": "0722776772", "pad": "y" * size})
    assert_json_error(resp, 413)
    assert_no_contact_data(resp)


# The request decoders, against the standard library -----------------------------------


# The request decoders are hand-made for speed; the standard library is the reference.
query_text = st.lists(st.sampled_from(list("ab=&+%2B0Fe7Dz9 ") + ["%D7", "%A9", "%2B"]),
                      max_size=30).map("".join)


@settings(max_examples=500)
@given(query_text)
def test_query_decoding_is_exactly_parse_qsl(text):
    from urllib.parse import parse_qsl
    import bottle
    try:
        expected = dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        with pytest.raises(bottle.HTTPError) as refused:
            ps._form_fields(text, "query string")
        assert refused.value.status_code == 400
        return
    assert ps._form_fields(text, "query string") == expected


def decoded_or_refused(decode, text):
    try:
        return decode(text)
    except UnicodeDecodeError:  # not UTF-8 once decoded: _form_fields answers 400
        return UnicodeDecodeError


# Text around the escapes: anything, and the invalid kinds (a lone UTF-8 byte, a
# sequence cut short, a stray % or a bad hex digit) that plain text finds only by luck.
around_escapes = st.one_of(st.text(max_size=10), st.lists(st.sampled_from(
    ["%80", "%ff", "%D7", "%d7%", "%E2%82", "%", "%4", "%zz", "%%", "+", "a", "é"]),
    max_size=5).map("".join))


@settings(max_examples=500)
@given(st.text(max_size=30).map(lambda t: t.encode("utf-8").hex("%", 1)), around_escapes)
def test_percent_decoding_is_exactly_unquote_plus(escaped, plain):
    """Valid escapes decode as unquote_plus() decodes them; escapes that are not UTF-8
    are refused exactly when unquote_plus(errors="strict") refuses them."""
    from urllib.parse import unquote_plus
    text = ("%" + escaped if escaped else "") + plain
    assert decoded_or_refused(ps._unquote, text) == decoded_or_refused(
        lambda t: unquote_plus(t, errors="strict"), text)
