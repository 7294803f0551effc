"""Calling a missed caller back, over HTTP, against the real server and the Voicenter
stand-in (tests/voicenter_standin.py): the agents named from Voicenter's extension
list, "my extension", POST /callback and each of Voicenter's answers in words, the
pending "being called back" until the leg-2 CDR, the rate limit, and the API code
kept out of every output; and rules that hold for every input: whatever Voicenter
answers is one of the pages' sentences or a clean failure, whatever a browser posts
to /callback is answered with a redirect or a refusal page, never a 5xx."""

from __future__ import annotations

import html
import re
import time

import pytest
from hypothesis import given, settings, strategies as st

import popup_server
from conftest import (OFFICE_PASSWORD, SAMPLE_CONTACTS, free_port, israel_epoch,
                      wait_until)
from voicenter_standin import CODE, VoicenterStandIn

TOKEN = "callback-token-123"
JOHN = "+972722776772"  # John Doe in the sample contacts


def _voicenter_args(standin, code=CODE):
    return ("--voicenter-code", code, "--voicenter-api", standin.url,
            "--voicenter-monitor", standin.url)


@pytest.fixture
def office(start_server, tmp_path, log_in, voicenter):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD,
                          *_voicenter_args(voicenter))
    wait_until(lambda: server.health()["voicenter"].startswith("ok"),
               what="the extension list")
    return server, log_in(server), voicenter


def _missed(server, client, phone="0722776772", ivrid="miss-1"):
    for phase in ("Ringing", "Hangup"):
        assert server.get("/popup", {"token": TOKEN, "phone": phone, "ivrid": ivrid,
                                     "statusCall": phase}).status == 200
    wait_until(lambda: f'data-ivrid="{ivrid}"' in client.get("/").text and
               'class="waiting"' in client.get("/").text, what="the missed call")


def _with_extension(client, sip):
    """The client's requests from now on carry the extension cookie it was given."""
    resp = client.post_form("/callback/extension", {"extension": sip, "next": "/calls"})
    assert resp.status == 303 and resp.header("Location") == "/calls", resp
    cookie = resp.header("Set-Cookie")
    assert cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    client.cookie += "; " + cookie.split(";")[0]
    return resp


def _answer(page):
    found = re.search(r'<p id="callback-answer"[^>]*>(.*?)</p>', page, re.S)
    return html.unescape(found.group(1)) if found else None


def _can_only_dial_from_this_device(client):
    """The calls page and John's page offer the tel: link and no call-back button."""
    page = client.get("/", headers={"Accept-Language": "en"}).text
    waiting = re.search(r'<table id="waiting">.*?</table>', page, re.S).group(0)
    assert f'<a href="tel:{JOHN}">dial from this device</a>' in waiting
    assert 'action="/callback"' not in page and 'id="extension-form"' not in page
    caller = client.get("/caller/0722776772").text
    assert f'href="tel:{JOHN}"' in caller and 'action="/callback"' not in caller


def _call_back(client, number=JOHN, **fields):
    resp = client.post_form("/callback", {"number": number, "next": "/calls", **fields},
                            headers={"Accept-Language": "en"})
    assert resp.status == 303, resp
    return _answer(client.get(resp.header("Location"),
                              headers={"Accept-Language": "en"}).text)


# The agents and their extensions ------------------------------------------------------


def test_agents_are_named_from_voicenters_list_and_agents_file_wins(
        start_server, tmp_path, voicenter, log_in):
    agents = tmp_path / "agents.csv"
    agents.write_text("extension,name\nSIPSIP2,Walter (desk)\n", encoding="utf-8")
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD,
                          "--agents", agents, *_voicenter_args(voicenter))
    client = log_in(server)
    wait_until(lambda: server.health()["voicenter"].startswith("ok: 4 extensions"),
               what="the extension list")
    [asked] = voicenter.requests_to("/Comet/api/GetExtensions")
    assert asked["code"] == CODE and str(asked["showAll"]) == "1"
    for ivrid, sip in (("a1", "KGpK4iWq"), ("a2", "SIPSIP2"), ("a3", "NoUser44"),
                       ("a4", "UNKNOWN9")):
        for phase in ("Ringing", "Answer", "Hangup"):
            server.get("/popup", {"token": TOKEN, "phone": "0501234567", "ivrid": ivrid,
                                  "statusCall": phase, "extenUser": sip})
    wait_until(lambda: client.get("/calls.csv").text.count("\n") >= 5, what="4 calls")
    csv_text = client.get("/calls.csv").body.decode("utf-8-sig")
    assert "דנה לוי" in csv_text              # the user's name
    assert "Walter (desk)" in csv_text        # --agents wins
    assert "Walter Melon" not in csv_text
    assert "Reception" in csv_text            # no user: the extension's name
    assert "UNKNOWN9" in csv_text             # not in the list: the code as sent
    page = client.get("/").text
    assert '<td class="agent"><bdi>דנה לוי</bdi></td>' in page
    caller = client.get("/caller/0501234567").text
    assert "דנה לוי" in caller and "KGpK4iWq" not in caller


def test_an_extension_list_refused_for_the_address_is_said_so(start_server, tmp_path,
                                                              voicenter, log_in):
    voicenter.mode["extensions"] = "403"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD,
                          *_voicenter_args(voicenter))
    client = log_in(server)
    health = wait_until(lambda: "failed" in server.health()["voicenter"] and
                        server.health(), what="the refusal on /health")
    assert ("Voicenter refused this server (HTTP 403): its address is not authorised; "
            "authorise this server's public IP address in Voicenter's CPanel, under API "
            "Settings") in health["voicenter"]
    page = client.get("/", headers={"Accept-Language": "en"}).text
    assert re.search(r'id="voicenter-status" class="error">Voicenter:\s+this server was '
                     r"refused at \d\d:\d\d: its address is not authorised; authorise "
                     r"this server's public IP address in Voicenter's CPanel, under API "
                     r"Settings\s+\(agents are shown by their extension\)",
                     html.unescape(page)), page
    assert "could not be fetched" not in page
    hebrew = client.get("/", headers={"Accept-Language": "he"}).text
    assert "השרת הזה נדחה ב-" in hebrew and "תחת הגדרות API" in hebrew
    _missed(server, client)
    _can_only_dial_from_this_device(client)


def test_a_failing_list_keeps_the_last_good_one(voicenter):
    """Each fetch of the list (at start, then every 15 minutes) that fails keeps the
    names fetched before and says why; here fetched in-process, at once."""
    config = popup_server.parse_config(["--voicenter-code", CODE, "--voicenter-monitor",
                                        voicenter.url], {})
    extensions = popup_server.VoicenterExtensions(config)
    assert extensions.health() == "the extension list is being fetched from Voicenter"
    assert extensions.fetch() and extensions.names["SIPSIP2"] == "Walter Melon"
    voicenter.mode["extensions"] = "500"
    assert not extensions.fetch()
    assert extensions.names["SIPSIP2"] == "Walter Melon"
    assert "HTTP 500" in extensions.health()
    assert "still using the 4 extensions fetched at" in extensions.health()
    voicenter.mode["extensions"], voicenter.code = "ok", "the code changed"
    assert not extensions.fetch() and extensions.problem_kind == "empty"
    assert [e.name for e in extensions.extensions] == ["John Doe", "Reception",
                                                       "Walter Melon", "דנה לוי"]
    voicenter.code = CODE
    voicenter.extensions[0]["UserName"] = "John Renamed"
    assert extensions.fetch() and extensions.problem is None
    assert extensions.names["SIPSIP1"] == "John Renamed"


# Calling back -------------------------------------------------------------------------


def test_a_missed_caller_is_called_back_and_resolved_by_the_leg_2_cdr(office):
    server, client, voicenter = office
    _missed(server, client)
    page = client.get("/").text
    waiting = re.search(r'<table id="waiting">.*?</table>', page, re.S).group(0)
    assert 'action="/callback"' in waiting and 'href="tel:' not in waiting
    assert "Walter Melon · 12" in page         # the extension choice, by name
    assert _call_back(client).startswith("Choose your extension first")
    assert voicenter.requests_to("/ForwardDialer/click2call.aspx") == []
    _with_extension(client, "SIPSIP2")
    assert 'value="SIPSIP2" selected' in client.get("/").text
    mark = server.log_mark()
    assert _call_back(client, "072-277-6772") == \
        "Voicenter is ringing your phone, then \u2068John Doe\u2069."
    [asked] = voicenter.requests_to("/ForwardDialer/click2call.aspx")
    assert asked == {"code": CODE, "phone": "SIPSIP2", "target": "972722776772",
                     "action": "call", "format": "json", "language": "en",
                     "var_popupserver": "callback"}
    logged = server.wait_for_log("call-back by session", mark)
    assert "from extension SIPSIP2 to *********772" in logged
    assert "722776772" not in logged
    row = re.search(r'<tr class="waiting" data-number="\+972722776772">.*?</tr>',
                    client.get("/").text, re.S).group(0)
    assert re.search(r"being called back by \u2068Walter Melon\u2069, \d\d:\d\d", row)
    assert _answer(client.get("/").text) is None  # said once
    # The CDR of the call's second leg once the call ends: our construction with the
    # names of Voicenter's CDR guide (cdr-notification SKILL.md: the type 'Click2Call
    # leg2', the agent in callerextension as in its outgoing example), its `time` an
    # epoch of Israel's wall-clock as that guide documents; the var_ the request set
    # comes back as a field of that name (our guess: the guide says only that var_*
    # appear in the CDR). The leg began when the agent answered the first, a second or
    # more after the click (a CDR's time is in whole seconds).
    time.sleep(1.1)
    cdr = {"ivruniqueid": "20261204c2c000001", "type": "Click2Call leg2",
           "status": "ANSWER", "caller": "0722776773", "target": "0722776772",
           "time": israel_epoch(time.time()), "duration": 42,
           "callerextension": "SIPSIP2", "var_popupserver": "callback"}
    assert server.post_json(f"/cdr?token={TOKEN}", cdr).json()["Err"] == 0
    wait_until(lambda: 'class="waiting"' not in client.get("/").text,
               what="the caller resolved by the leg-2 CDR")
    assert 'class="resolved called-back"' in client.get("/").text


def test_an_unanswered_call_back_leaves_the_caller_waiting_without_the_note(office):
    """Voicenter rang the caller, who did not answer: the leg-2 CDR (NOANSWER) is an
    outgoing call, which does not resolve them; "being called back" ends with it."""
    server, client, voicenter = office
    _missed(server, client)
    _with_extension(client, "SIPSIP1")
    assert _call_back(client).startswith("Voicenter is ringing your phone")
    assert "being called back by \u2068John Doe\u2069" in client.get("/").text
    time.sleep(1.1)  # the leg begins a second or more after the click
    assert server.post_json(f"/cdr?token={TOKEN}", {
        "ivruniqueid": "20261204c2c000001", "type": "Click2Call leg2",
        "status": "NOANSWER", "caller": "0722776773", "target": "0722776772",
        "time": int(time.time()), "duration": 0, "extenUser": "SIPSIP1",
        "direction": "outgoing"}).json()["Err"] == 0
    wait_until(lambda: "being called back" not in client.get("/").text,
               what="the pending note gone")
    assert 'class="waiting" data-number="+972722776772"' in client.get("/").text
    assert "being called back" not in client.get("/caller/0722776772").text


@pytest.mark.parametrize("language,dial,button", [
    ("en", "dial from this device", "Call back from my extension"),
    ("he", "חיוג מהמכשיר הזה", "חיוג חוזר מהשלוחה שלי"),
])
def test_the_tel_link_and_the_call_back_button_say_which_phone_rings(office, language,
                                                                     dial, button):
    """The day's calls dial from the browser's own device (tel:); the waiting caller's
    button has Voicenter ring the agent's extension: their words differ."""
    server, client, voicenter = office
    _missed(server, client)
    page = client.get("/", headers={"Accept-Language": language}).text
    waiting = re.search(r'<table id="waiting">.*?</table>', page, re.S).group(0)
    calls = re.search(r'<table id="calls">.*?</table>', page, re.S).group(0)
    assert re.search(rf'<button type="submit" title="[^"]+">{button}</button>', waiting)
    assert f'<a href="tel:{JOHN}">{dial}</a>' in calls and button not in calls
    caller = client.get("/caller/0722776772", headers={"Accept-Language": language}).text
    assert f'<a href="tel:{JOHN}">{dial}</a>' in caller and f">{button}</button>" in caller


def test_the_extension_may_be_named_in_the_post_and_hebrew_is_passed_on(office):
    server, client, voicenter = office
    resp = client.post_form("/callback", {"number": "0722776772", "extension": "KGpK4iWq"},
                            headers={"Accept-Language": "he"})
    assert resp.status == 303 and resp.header("Location") == "/calls"
    assert "popup_extension_" in resp.header("Set-Cookie")
    page = client.get("/calls", headers={"Accept-Language": "he"}).text
    assert _answer(page) == "Voicenter מצלצל לטלפון שלך, ואחר כך מחייג אל \u2068John Doe\u2069."
    [asked] = voicenter.requests_to("/ForwardDialer/click2call.aspx")
    assert (asked["phone"], asked["language"]) == ("KGpK4iWq", "he")


def test_the_callers_page_calls_back_for_a_signed_in_user(office):
    server, client, voicenter = office
    _with_extension(client, "KGpK4iWq")
    page = client.get("/caller/0722776772").text
    assert 'id="callback-form"' in page and "דנה לוי" in page
    resp = client.post_form("/callback", {"number": JOHN, "next": "/caller/%2B972722776772"},
                            headers={"Accept-Language": "en"})
    assert resp.header("Location") == "/caller/%2B972722776772"
    after = client.get(resp.header("Location"), headers={"Accept-Language": "en"}).text
    assert _answer(after) == "Voicenter is ringing your phone, then \u2068John Doe\u2069."
    assert re.search(r"being called back by \u2068דנה לוי\u2069, \d\d:\d\d", after)


def test_with_the_login_off_this_machine_calls_back_from_its_own_pages(
        start_server, tmp_path, voicenter):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, *_voicenter_args(voicenter))
    wait_until(lambda: server.health()["voicenter"].startswith("ok"), what="the list")
    form = {"number": "0722776772", "extension": "SIPSIP1", "next": "/calls"}
    refused = server.post_form("/callback", form, headers={"Origin": "http://evil.example"})
    assert refused.status == 403
    resp = server.post_form("/callback", form, headers={"Origin": server.url})
    assert resp.status == 303
    cookie = resp.header("Set-Cookie").split(";")[0]
    page = server.get("/calls", headers={"Cookie": cookie, "Accept-Language": "en"}).text
    assert _answer(page) == "Voicenter is ringing your phone, then \u2068John Doe\u2069."
    assert 'value="SIPSIP1" selected' in page
    assert len(voicenter.requests_to("/ForwardDialer/click2call.aspx")) == 1


def test_without_a_code_nothing_changes(start_server, tmp_path, log_in, voicenter):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD,
                          "--voicenter-api", voicenter.url, "--voicenter-monitor",
                          voicenter.url)
    client = log_in(server)
    _missed(server, client)
    page = client.get("/").text
    assert 'href="tel:' + JOHN + '"' in page and "/callback" not in page
    assert "voicenter-status" not in page
    assert server.health()["voicenter"] == "off"
    refused = client.post_form("/callback", {"number": JOHN})
    assert refused.status == 404
    assert refused.json()["MESSAGE"].startswith("calling back is off"), refused
    assert voicenter.requests == []


# Each of Voicenter's answers, in words ------------------------------------------------


@pytest.mark.parametrize("error,sentence", [
    (1, "Voicenter refused the call: the request was not valid"),
    (2, "Voicenter had an error and placed no call"),
    (3, "Your phone is offline"),
    (4, "Your extension may not use Click2Call"),
    (7, "Voicenter refused the call (error 7)"),
])
def test_each_errorcode_is_a_sentence_and_nothing_is_marked(office, error, sentence):
    server, client, voicenter = office
    _missed(server, client)
    _with_extension(client, "SIPSIP1")
    voicenter.click2call_error = error
    said = _call_back(client)
    assert said.startswith(sentence) and said.endswith("."), said
    assert "being called back" not in client.get("/").text
    assert 'class="waiting"' in client.get("/").text
    # Nothing was dialled, so trying again at once is not a repeat.
    voicenter.click2call_error = 0
    assert _call_back(client).startswith("Voicenter is ringing your phone")


@pytest.mark.parametrize("mode", ["500", "not-json", "hang"])
def test_voicenter_down_says_nothing_was_dialled_never_a_500(office, mode):
    server, client, voicenter = office
    _with_extension(client, "SIPSIP1")
    voicenter.mode["click2call"] = mode
    # A hang guard: the form's answer comes within the client's 15 s timeout, so the
    # server gave up at its own 10 s limit, not after the hanging stand-in's 30 s.
    assert _call_back(client) == "Voicenter could not be reached; nothing was dialled."
    assert server.get("/health").status == 200
    assert server.lookup("0722776772", token=TOKEN)["TOTAL"] == 1


def test_a_refused_connection_says_nothing_was_dialled(start_server, tmp_path, voicenter,
                                                       log_in):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD,
                          "--voicenter-code", CODE, "--voicenter-monitor", voicenter.url,
                          "--voicenter-api", f"http://127.0.0.1:{free_port()}")
    client = log_in(server)
    wait_until(lambda: server.health()["voicenter"].startswith("ok"), what="the list")
    mark = server.log_mark()
    assert _call_back(client, extension="SIPSIP1") == \
        "Voicenter could not be reached; nothing was dialled."
    logged = server.wait_for_log("Connection refused", mark)
    assert re.search(r"call-back by session \S+ from extension SIPSIP1 to \*+772: nothing "
                     r"dialled: .*Connection refused", logged), logged


@pytest.mark.parametrize("status", ["403", "401"])
def test_voicenter_refusing_this_servers_address_is_said_as_a_refusal(office, status):
    """Voicenter's guide: "403/401 from Voicenter: server IP not whitelisted, add IP in
    CPanel -> API Settings". Reached, and refused: never "could not be reached"."""
    server, client, voicenter = office
    _missed(server, client)
    _with_extension(client, "SIPSIP1")
    voicenter.mode["click2call"] = status
    mark = server.log_mark()
    assert _call_back(client) == (
        "Voicenter refused this server: its address is not authorised for Voicenter's "
        "API. Authorise this server's public IP address in Voicenter's CPanel, under API "
        "Settings. Nothing was dialled.")
    logged = server.wait_for_log(f"HTTP {status}", mark)
    assert re.search(r"call-back by session \S+ from extension SIPSIP1 to \*+772: nothing "
                     rf"dialled: Voicenter refused this server \(HTTP {status}\): its "
                     r"address is not authorised", logged), logged
    resp = client.post_form("/callback", {"number": JOHN, "next": "/calls"},
                            headers={"Accept-Language": "he"})
    hebrew = _answer(client.get(resp.header("Location"),
                                headers={"Accept-Language": "he"}).text)
    assert hebrew.startswith("Voicenter דחה את השרת הזה") and "הגדרות API" in hebrew
    assert "being called back" not in client.get("/").text


def test_an_xml_answer_is_not_taken_for_success(office):
    """Without format=json Voicenter answers XML; the server always asks for JSON, and
    an XML answer (a proxy, an old endpoint) reads as 'could not be reached'."""
    server, client, voicenter = office
    import json as json_module
    import urllib.request
    xml = urllib.request.urlopen(urllib.request.Request(
        voicenter.url + "/ForwardDialer/click2call.aspx", method="POST",
        data=json_module.dumps({"code": CODE, "phone": "SIPSIP1", "target": "972501234567",
                                "action": "call"}).encode()), timeout=5).read().decode()
    assert xml.startswith("<?xml") and "<ERRORCODE>0</ERRORCODE>" in xml
    _with_extension(client, "SIPSIP1")
    voicenter.mode["click2call"] = "ok"
    original = voicenter._click2call

    def xml_only(handler, fields):
        original(handler, {key: value for key, value in fields.items()
                           if key != "format"})
    voicenter._click2call = xml_only
    assert _call_back(client) == "Voicenter could not be reached; nothing was dialled."


# Refusals, repeats and the workers ----------------------------------------------------


def test_a_double_click_dials_once_and_call_backs_are_rate_limited(office):
    server, client, voicenter = office
    _with_extension(client, "SIPSIP1")
    assert _call_back(client).startswith("Voicenter is ringing")
    assert _call_back(client) == ("\u2068John Doe\u2069 was called back from this browser moments "
                                  "ago; not dialled again.")
    assert len(voicenter.requests_to("/ForwardDialer/click2call.aspx")) == 1
    said = [_call_back(client, f"050-123-45{n:02d}") for n in range(6)]
    assert said[-1].startswith("Too many call-backs from this browser")
    assert len(voicenter.requests_to("/ForwardDialer/click2call.aspx")) == 6


def test_a_double_clicks_second_answer_leaves_the_first_shown(office):
    """Both clicks' answers come before the page: it says what the first did."""
    server, client, voicenter = office
    _with_extension(client, "SIPSIP1")
    for _ in range(2):
        resp = client.post_form("/callback", {"number": JOHN, "next": "/calls"},
                                headers={"Accept-Language": "en"})
        assert resp.status == 303, resp
    page = client.get("/calls", headers={"Accept-Language": "en"}).text
    assert _answer(page) == "Voicenter is ringing your phone, then \u2068John Doe\u2069."
    assert len(voicenter.requests_to("/ForwardDialer/click2call.aspx")) == 1
    # Once said, a click again is told it was not dialled again.
    assert _call_back(client) == ("\u2068John Doe\u2069 was called back from this browser moments "
                                  "ago; not dialled again.")


def test_call_backs_refused_before_voicenter_is_asked_are_logged(office):
    server, client, voicenter = office
    mark = server.log_mark()
    assert _call_back(client).startswith("Choose your extension first")
    _with_extension(client, "SIPSIP1")
    assert _call_back(client, "abc-555").startswith("That is not a phone number")
    for n in range(7):
        said = _call_back(client, f"050-123-45{n:02d}")
    assert said.startswith("Too many call-backs")
    logged = server.wait_for_log("callback.too_many", mark)
    # Why, in the page's English words, then the text's key.
    assert re.search(r"call-back by session (\S+) from extension - to \*+772 not placed: "
                     r"Choose your extension first .*\[callback\.choose_first\]",
                     logged), logged
    assert re.search(r"call-back by session \S+ from extension SIPSIP1 to 555 not "
                     r"placed: That is not a phone number.*\[callback\.bad_number\]",
                     logged), logged
    assert re.search(r"call-back by session \S+ from extension SIPSIP1 to \*+506 not "
                     r"placed: Too many call-backs.*\[callback\.too_many\]", logged), logged
    assert "722776772" not in logged and "501234506" not in logged


def test_refusals_without_login_origin_csrf_or_from_a_signed_link(office):
    server, client, voicenter = office
    form = {"number": JOHN, "extension": "SIPSIP1", "next": "/calls"}
    anonymous = server.post_form("/callback", form, headers={"Origin": server.url})
    assert anonymous.status == 303 and anonymous.header("Location").startswith("/login")
    forged = client.post_form("/callback", {**form, "csrf": "forged"})
    other_site = client.post_form("/callback", form,
                                  headers={"Origin": "https://evil.example"})
    no_origin = server.post_form("/callback", {**form, "csrf": client.csrf},
                                 headers={"Cookie": client.cookie})
    for resp in (forged, other_site, no_origin):
        assert resp.status == 403 and resp.header("Content-Type").startswith("text/html")
    # A signed caller link (the pop-up's) opens one caller's page, never a call.
    link = server.lookup("0722776772", token=TOKEN)["URL"]
    path_and_query = link[link.index("/caller/"):]
    by_link = server.get(path_and_query).text
    assert 'action="/callback"' not in by_link
    number_path, query = path_and_query.split("?")
    for resp in (server.post_form("/callback?" + query, form, headers={"Origin": server.url}),
                 server.post_form(number_path + "/callback?" + query, form,
                                  headers={"Origin": server.url})):
        assert resp.status in (303, 403, 404, 405), resp
        assert not (resp.header("Location") or "").startswith("/calls")
    # The pop-up's token does not start one either.
    with_token = server.post_form(f"/callback?token={TOKEN}", form,
                                  headers={"Origin": server.url})
    assert with_token.header("Location", "").startswith("/login")
    assert voicenter.requests_to("/ForwardDialer/click2call.aspx") == []


def test_a_browser_waiting_for_voicenter_holds_one_worker_and_no_more(office):
    """While Voicenter hangs on one call-back, the same browser's next one is refused
    at once (it would hold a second worker thread) and pop-ups are answered."""
    import threading
    server, client, voicenter = office
    _with_extension(client, "SIPSIP1")
    voicenter.mode["click2call"] = "hang"
    first = {}
    thread = threading.Thread(target=lambda: first.update(said=_call_back(client)))
    thread.start()
    try:
        wait_until(lambda: voicenter.requests_to("/ForwardDialer/click2call.aspx"),
                   what="the first call-back at Voicenter")
        resp = client.post_form("/callback", {"number": "0501234567", "next": "/calls"},
                                headers={"Accept-Language": "en"})
        assert resp.status == 303
        assert _answer(client.get("/").text) == ("A call-back from this browser is being "
                                                 "placed; wait for its answer.")
        assert server.lookup("0722776772", token=TOKEN)["TOTAL"] == 1
    finally:
        thread.join(30)
    assert first["said"] == "Voicenter could not be reached; nothing was dialled."
    assert len(voicenter.requests_to("/ForwardDialer/click2call.aspx")) == 1
    assert _answer(client.get("/").text) is None  # each answer shown once


def test_call_backs_waiting_for_voicenter_never_keep_the_forms_waiting(office, log_in):
    """Two browsers' call-backs hang at Voicenter (each up to its 10 s): a third
    browser's form (signing out) is still answered, not "busy": call-backs wait in a
    lane of their own."""
    import threading
    server, client, voicenter = office
    voicenter.mode["click2call"] = "hang"
    callers = [client, log_in(server)]
    for browser in callers:
        _with_extension(browser, "SIPSIP1")
    threads = [threading.Thread(target=_call_back, args=(browser, number))
               for browser, number in zip(callers, (JOHN, "0501234567"))]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(voicenter.requests_to("/ForwardDialer/click2call.aspx"))
                   == 2, what="both call-backs at Voicenter")
        other = log_in(server)
        assert other.post_form("/logout").status == 303
        assert server.lookup("0722776772", token=TOKEN)["TOTAL"] == 1
    finally:
        for thread in threads:
            thread.join(30)


# The API code -------------------------------------------------------------------------


def test_a_wrong_code_is_reported_and_the_code_never_shown(start_server, tmp_path,
                                                             voicenter, log_in):
    wrong = "wrong-code-Zq81xPp0"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                          "--token", TOKEN, "--office-password", OFFICE_PASSWORD,
                          *_voicenter_args(voicenter, wrong))
    client = log_in(server)
    health = wait_until(lambda: "failed" in server.health()["voicenter"] and
                        server.health(), what="the failure on /health")
    assert "empty" in health["voicenter"] and "--voicenter-code" in health["voicenter"]
    assert server.lookup("0722776772", token=TOKEN)["TOTAL"] == 1  # pop-ups still work
    page = client.get("/", headers={"Accept-Language": "en"}).text
    assert re.search(r'id="voicenter-status" class="error">Voicenter:\s+the extension '
                     r'list came empty at \d\d:\d\d: is --voicenter-code right\?', page)
    hebrew = client.get("/", headers={"Accept-Language": "he"}).text
    assert "רשימת השלוחות התקבלה ריקה" in hebrew
    assert _call_back(client, extension="SIPSIP1").startswith(
        "Voicenter's extension list has not come yet")
    # No list, so no extension could ring: the waiting caller keeps the link that dials
    # from this device, and no button that cannot work is shown.
    _missed(server, client)
    _can_only_dial_from_this_device(client)
    for text in (page, hebrew, str(health), server.get("/health").text,
                 client.get("/calls.csv").text, client.get("/caller/0722776772").text,
                 server.get("/popup", {"token": TOKEN, "phone": "0722776772"}).text):
        assert wrong not in text
    server.stop()
    assert wrong not in server.log_text()


def test_the_code_never_appears_in_any_output(office, run_cli):
    server, client, voicenter = office
    _missed(server, client)
    _with_extension(client, "SIPSIP1")
    _call_back(client)
    voicenter.click2call_error = 3
    _call_back(client, "0501234567")
    voicenter.mode["click2call"] = "500"
    _call_back(client, "0521234567")
    outputs = [client.get(path).text for path in ("/", "/calls", "/caller/0722776772",
                                                  "/calls.csv", "/login")]
    outputs += [server.get("/health").text, server.get("/nowhere").text,
                server.lookup("0722776772", token=TOKEN)["URL"]]
    server.stop()
    outputs.append(server.log_text())
    assert "call-back by session" in outputs[-1]
    for text in outputs:
        assert CODE not in text
    help_text = run_cli("--help", env={"POPUP_VOICENTER_CODE": CODE})
    assert CODE not in (help_text.stdout + help_text.stderr).decode()
    bad = run_cli("--voicenter-code", CODE, "--voicenter-api", "ftp://x", "--check")
    assert bad.returncode != 0 and CODE not in (bad.stdout + bad.stderr).decode()


def test_a_config_file_error_never_shows_the_code(run_cli, tmp_path):
    config = tmp_path / "popup.toml"
    config.write_text("voicenter-code = 987654321\n", encoding="utf-8")
    result = run_cli("--config", config, "--check")
    said = (result.stdout + result.stderr).decode()
    assert result.returncode == 2 and "line 1: voicenter-code" in said
    assert "987654321" not in said


@pytest.mark.parametrize("option", ["--voicenter-api", "--voicenter-monitor"])
def test_the_code_is_never_sent_over_plain_http_to_another_machine(run_cli, option):
    result = run_cli(option, "http://api.voicenter.example", "--check")
    said = (result.stdout + result.stderr).decode()
    assert result.returncode == 2 and "must be https" in said, said
    assert run_cli(option, "http://127.0.0.1:9", "--check").returncode == 0


# For every input ----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=12)

ANSWER_FIELDS = st.sampled_from(["ERRORCODE", "ERRORMESSAGE", "CALLID", "ERR", "DESC",
                                 "EXTENSIONS", "SIP", "Name", "UserName", "SpeedDial"])


def _said(key, values):
    """The sentence in English and Hebrew (a KeyError or a format error fails)."""
    return [popup_server.PageTexts(language)(key, **values)
            for language in popup_server.LANGUAGES]


@settings(max_examples=400)
@given(st.dictionaries(ANSWER_FIELDS | st.text(max_size=8), JSON, max_size=5)
       | st.fixed_dictionaries({"ERRORCODE": JSON, "CALLID": JSON,
                                "ERRORMESSAGE": JSON}))
def test_any_click2call_answer_is_one_of_the_sentences(answer):
    key, values = popup_server.click2call_answer(answer)
    assert key in popup_server.page_texts()
    for sentence in _said(key, {**values, "who": "John Doe", "agent": "Dana"}):
        assert sentence and "{" not in sentence
    if key == "callback.ringing":
        assert int(str(answer["ERRORCODE"]).strip()) == 0

EXTENSION = st.fixed_dictionaries({}, optional={
    "SIP": JSON | st.from_regex(r"[A-Za-z0-9]{1,10}", fullmatch=True),
    "Name": JSON, "UserName": JSON, "SpeedDial": JSON})


@settings(max_examples=400)
@given(st.fixed_dictionaries({"ERR": st.sampled_from([0, "0", 1, None]) | JSON,
                              "EXTENSIONS": st.lists(EXTENSION | JSON, max_size=5) | JSON})
       | st.dictionaries(ANSWER_FIELDS, JSON, max_size=4))
def test_any_extension_list_answer_is_a_list_of_named_extensions_or_a_failure(answer):
    try:
        extensions = popup_server.extensions_of(answer)
    except popup_server.VoicenterUnreachable as error:
        assert str(error)
        return
    assert extensions
    for extension in extensions:
        assert popup_server._SIP_CODE.fullmatch(extension.sip)
        assert extension.name and len(extension.name) <= 80
    assert len({extension.sip for extension in extensions}) == len(extensions)


@pytest.fixture(scope="module")
def calling_server(start_module_server):
    standin = VoicenterStandIn().start()
    server = start_module_server(SAMPLE_CONTACTS, "--voicenter-code", CODE,
                                 "--voicenter-api", standin.url, "--voicenter-monitor",
                                 standin.url)
    yield server
    standin.stop()


@settings(max_examples=80)
@given(number=st.text(max_size=50) | st.from_regex(r"\+?[0-9 ()\-]{0,20}", fullmatch=True),
       extension=st.text(max_size=20) | st.sampled_from(["SIPSIP1", "", "KGpK4iWq"]))
def test_any_post_to_callback_is_answered_never_a_5xx(calling_server, number, extension):
    resp = calling_server.post_form("/callback", {"number": number, "extension": extension},
                                    headers={"Origin": calling_server.url})
    assert resp.status in (303, 400, 413), resp
    if resp.status == 303:
        assert resp.header("Location") == "/calls"
