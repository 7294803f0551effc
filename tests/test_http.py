"""Issue 2: the /popup endpoint answers Voicenter the way Voicenter expects.

Every test starts the real server (``python popup_server.py``) and talks HTTP to it.
"""

from __future__ import annotations

import urllib.parse

import pytest

from conftest import (assert_json_error, assert_popup_answer,
                      free_port, http_request)

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

ALL_FLAGS = [
    "--host", "--port", "--region", "--url-template", "--no-match-url", "--match-digits",
    "--encoding", "--delimiter", "--sheet", "--name-column", "--company-column",
    "--phone-columns", "--url-column", "--token", "--token-file", "--allow-ip",
    "--trusted-proxy", "--max-body", "--reload-interval", "--log-numbers", "--threads",
    "--calls-db", "--calls-keep-days", "--check",
]


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


# --------------------------------------------------------------------------
# The three request formats on the sample data
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# statusCall vs status, unknown fields
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# The shape of the answer
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Missing, empty, withheld and unknown numbers
# --------------------------------------------------------------------------

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
    # No --no-match-url: the link to the caller's own page (issue 13).
    assert answer["URL"].startswith(server.url + "/caller/+972509999871?e="), answer


# --------------------------------------------------------------------------
# Number matching
# --------------------------------------------------------------------------

@pytest.fixture
def matching_server(start_server, make_contacts):
    path = make_contacts([
        ["Other Person", "Elsewhere", "03-555-1212"],
        ["John Doe", "Voicenter", "072-277-6772"],
    ])
    return start_server(path)


@pytest.mark.parametrize("phone", ["0722776772", "972722776772", "+972722776772",
                                   "+972-72-277-6772", "00972722776772", "(072) 277-6772",
                                   "072-277-6772", " 0722776772 "])
def test_equivalent_forms_of_an_israeli_number_all_match(matching_server, phone):
    answer = matching_server.lookup(phone)
    assert answer["TOTAL"] == 1, (phone, answer)
    assert answer["CLIENTNAME"] == "John Doe", (phone, answer)


def test_equivalent_forms_match_in_json_and_form_too(matching_server):
    for phone in ("+972-72-277-6772", "00972722776772", "(072) 277-6772"):
        js = matching_server.post_json("/popup", {"phone": phone})
        form = matching_server.post_form("/popup", {"phone": phone})
        for resp in (js, form):
            assert resp.status == 200, (phone, resp)
            assert resp.json()["CLIENTNAME"] == "John Doe", (phone, resp)


@pytest.mark.parametrize("phone", ["+12125551234", "0012125551234", "+1 (212) 555-1234"])
def test_foreign_number_stored_with_country_code_matches_international_forms(
        start_server, make_contacts, phone):
    path = make_contacts([["Local Person", "IL Ltd", "050-111-2233"],
                          ["Jane Roe", "NY Corp", "+1 212 555 1234"]])
    srv = start_server(path)
    answer = srv.lookup(phone)
    assert answer["TOTAL"] == 1, answer
    assert (answer["CLIENTNAME"], answer["COMPANY"]) == ("Jane Roe", "NY Corp"), answer


def test_foreign_number_stored_without_country_code_is_found_by_trailing_digits(
        start_server, make_contacts):
    path = make_contacts([["Local Person", "IL Ltd", "050-111-2233"],
                          ["Jane Roe", "NY Corp", "212-555-1234"]])
    srv = start_server(path)
    answer = srv.lookup("+12125551234")
    assert answer["TOTAL"] == 1, answer
    assert answer["CLIENTNAME"] == "Jane Roe", answer


@pytest.mark.parametrize("first,second", [("Zed First", "Adam Second"),
                                          ("Adam First", "Zed Second")])
def test_shared_number_counts_both_and_answers_the_first_in_file_order(
        start_server, make_contacts, first, second):
    path = make_contacts([["Someone Else", "X", "03-555-1212"],
                          [first, "First Co", "050-123-4567"],
                          [second, "Second Co", "+972501234567"]])
    srv = start_server(path)
    answer = srv.lookup("0501234567")
    assert answer["TOTAL"] == 2, answer
    assert answer["CLIENTNAME"] == first, answer
    assert answer["COMPANY"] == "First Co", answer


# --------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Environment variables
# --------------------------------------------------------------------------

def test_popup_port_variable_sets_the_port(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    port = free_port()
    srv = start_server(path, env={"POPUP_PORT": str(port)})
    assert srv.port == port
    assert srv.lookup("0722776772")["CLIENTNAME"] == "John Doe"


def test_port_flag_wins_over_popup_port_variable(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    env_port, flag_port = free_port(), free_port()
    while flag_port == env_port:
        flag_port = free_port()
    srv = start_server(path, "--port", str(flag_port), env={"POPUP_PORT": str(env_port)})
    assert srv.lookup("0722776772")["CLIENTNAME"] == "John Doe"
    with pytest.raises(OSError):
        http_request("GET", f"http://127.0.0.1:{env_port}/health", timeout=2)


def test_url_template_and_no_match_url_variables_apply(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, env={"POPUP_URL_TEMPLATE": "https://env.example/c/{phone}",
                                  "POPUP_NO_MATCH_URL": "https://env.example/new/{phone}"})
    assert srv.lookup("0722776772")["URL"] == "https://env.example/c/0722776772"
    assert srv.lookup("0509999871")["URL"] == "https://env.example/new/0509999871"


def test_url_template_flag_wins_over_its_variable(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, "--url-template", "https://flag.example/{phone}",
                       env={"POPUP_URL_TEMPLATE": "https://env.example/{phone}"})
    assert srv.lookup("0722776772")["URL"] == "https://flag.example/0722776772"


def test_token_variable_applies_and_token_flag_wins_over_it(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, env={"POPUP_TOKEN": "envsecret"})
    assert srv.get("/popup", {"phone": "0722776772"}).status == 403
    assert srv.lookup("0722776772", token="envsecret")["CLIENTNAME"] == "John Doe"

    srv2 = start_server(path, "--token", "flagsecret", env={"POPUP_TOKEN": "envsecret"})
    assert srv2.get("/popup", {"phone": "0722776772", "token": "envsecret"}).status == 403
    assert srv2.lookup("0722776772", token="flagsecret")["CLIENTNAME"] == "John Doe"


def test_max_body_variable_applies(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, env={"POPUP_MAX_BODY": "1024"})
    small = srv.post_json("/popup", {"phone": "0722776772"})
    assert small.status == 200, small
    big = srv.post_json("/popup", {"phone": "0722776772", "pad": "x" * 2000})
    assert_json_error(big, 413)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def test_help_exits_zero_and_mentions_every_flag(run_cli):
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("utf-8", "replace")
    missing = [flag for flag in ALL_FLAGS if flag not in out]
    assert not missing, (missing, out)


def _assert_one_line_startup_error(done, name: str) -> None:
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, (done.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert name in lines[0], stderr


def test_missing_contacts_file_exits_2_with_one_line_naming_it(run_cli, tmp_path):
    missing = tmp_path / "no-such-dir" / "missing-contacts.csv"
    done = run_cli(missing, "--host", "127.0.0.1", "--port", free_port(),
                   "--token", "", "--calls-db", "")
    _assert_one_line_startup_error(done, "missing-contacts.csv")


def test_file_without_phone_column_exits_2_with_one_line_naming_it(run_cli, make_contacts):
    path = make_contacts([["Alice", "Acme"], ["Bob", "Beta"]], header=("name", "company"),
                         name="nophones.csv")
    done = run_cli(path, "--host", "127.0.0.1", "--port", free_port(),
                   "--token", "", "--calls-db", "")
    _assert_one_line_startup_error(done, "nophones.csv")

