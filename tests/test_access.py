"""Who may ask, and what the log keeps of it: the pop-up's token (in the query or a
header, in every format; made and kept in the state folder, or read from --token-file,
never through a symbolic link nor from a file others can read), --allow-ip,
--trusted-proxy and the forwarded addresses it believes (never one it cannot read),
CORS and the Chrome extension's private-network preflight, the Host a page is asked
under while the office login is off (DNS rebinding), and the request log: only a
number's last three digits, never the token, the peer's own address."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import time

import pytest

import popup_server as ps  # AccessLog: the request log's lines, written in-process
from conftest import (HEBREW, JOHN_ROW, MODULE, OFFICE_PASSWORD, SAMPLE_CONTACTS,
                      assert_json_error, assert_no_contact_data, free_port, http_request,
                      subprocess_env, voicenter_fixture, write_contacts)

TOKEN = "s3cret-T0ken"


@pytest.fixture
def token_server(start_server, contacts):
    return start_server(contacts, "--token", TOKEN)


# The token ----------------------------------------------------------------------------


def test_missing_token_is_refused_with_403_json_without_contact_data(token_server):
    resp = token_server.get("/popup", {"phone": "0722776772"})
    assert_json_error(resp, 403)
    assert_no_contact_data(resp)


@pytest.mark.parametrize("wrong", ["wrong", TOKEN[:-1], TOKEN + "X", TOKEN.upper(), "x" * 12])
def test_wrong_token_is_refused_in_query_and_in_header(token_server, wrong):
    resp = token_server.get("/popup", {"phone": "0722776772", "token": wrong})
    assert_json_error(resp, 403)
    assert_no_contact_data(resp)
    resp = token_server.get("/popup", {"phone": "0722776772"},
                            headers={"X-Popup-Token": wrong})
    assert_json_error(resp, 403)
    assert_no_contact_data(resp)


def test_empty_token_value_is_refused(token_server):
    resp = token_server.request("GET", "/popup?phone=0722776772&token=")
    assert_json_error(resp, 403)
    assert_no_contact_data(resp)


def test_missing_or_wrong_token_is_refused_on_posts_too(token_server):
    for resp in (token_server.post_form("/popup?token=nope", {"phone": "0722776772"}),
                 token_server.post_json("/popup?token=nope", {"phone": "0722776772"}),
                 token_server.post_json("/popup", {"phone": "0722776772"}),
                 token_server.post_form("/popup", {"phone": "0722776772"})):
        assert_json_error(resp, 403)
        assert_no_contact_data(resp)


def test_token_in_query_string_grants_access(token_server):
    answer = token_server.lookup("0722776772", token=TOKEN)
    assert answer["CLIENTNAME"] == "John Doe", answer


def test_token_in_header_grants_access(token_server):
    resp = token_server.get("/popup", {"phone": "0722776772"},
                            headers={"X-Popup-Token": TOKEN})
    assert resp.status == 200, resp
    assert resp.json()["CLIENTNAME"] == "John Doe", resp


def test_token_in_url_or_header_grants_access_to_form_and_json_posts(token_server):
    form = token_server.post_form(f"/popup?token={TOKEN}",
                                  {"phone": "0722776772", "status": "Ringing"})
    js = token_server.post_json(f"/popup?token={TOKEN}",
                                {"phone": "972722776772", "status": "Answer"})
    hdr = token_server.post_json("/popup", {"phone": "972722776772"},
                                 headers={"X-Popup-Token": TOKEN})
    for resp in (form, js, hdr):
        assert resp.status == 200, resp
        assert resp.json()["CLIENTNAME"] == "John Doe", resp


def test_health_needs_no_token_and_shows_no_contact_data(token_server):
    resp = token_server.get("/health")
    assert resp.status == 200, resp
    body = resp.json()
    assert body["status"] == "ok", body
    assert body["contacts"] == 2, body
    assert_no_contact_data(resp)
    assert b"2776772" not in resp.body and b"1234987" not in resp.body, resp


def test_explicit_empty_token_disables_the_check_with_a_warning(start_server, tmp_path):
    directory = tmp_path / "book"
    path = write_contacts(directory / "contacts.csv", [JOHN_ROW])
    srv = start_server(path, "--token", "")
    assert srv.lookup("0722776772")["CLIENTNAME"] == "John Doe"
    log = srv.log_text()
    assert (f"WARNING the token check is OFF: anyone who can reach port {srv.port} can "
            "look up contacts") in log, log
    assert sorted(p.name for p in directory.iterdir()) == ["contacts.csv"]


# A token made, or read from --token-file ----------------------------------------------


def _generated_token(srv, directory, before):
    """The one new file in ``directory`` whose content the start-up log shows."""
    deadline = time.monotonic() + 5
    while True:
        log = srv.log_text()
        new = [p for p in sorted(directory.iterdir()) if p.is_file() and p.name not in before]
        found = [p for p in new if p.read_text(errors="replace").strip()
                 and p.read_text(errors="replace").strip() in log]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1, (new, log)
    return found[0], found[0].read_text().strip()


def test_without_token_one_is_generated_stored_0600_in_the_state_folder_and_logged_in_url(
        start_server, tmp_path):
    directory = tmp_path / "book"
    path = write_contacts(directory / "contacts.csv", [JOHN_ROW])
    srv = start_server(path, "--state-dir", tmp_path / "state", disable_token=False)
    token_file, token = _generated_token(srv, tmp_path / "state", set())
    assert sorted(p.name for p in directory.iterdir()) == ["contacts.csv"]
    assert len(token) >= 16, token
    mode = stat.S_IMODE(os.stat(token_file).st_mode)
    assert mode == 0o600, oct(mode)
    log = srv.log_text()
    assert any("http" in line and f"token={token}" in line for line in log.splitlines()), log
    assert_json_error(srv.get("/popup", {"phone": "0722776772"}), 403)
    assert srv.lookup("0722776772", token=token)["CLIENTNAME"] == "John Doe"


def test_generated_token_survives_a_restart(start_server, tmp_path):
    directory = tmp_path / "book"
    path = write_contacts(directory / "contacts.csv", [JOHN_ROW])
    first = start_server(path, "--state-dir", tmp_path / "state", disable_token=False)
    token_file, token = _generated_token(first, tmp_path / "state", set())
    first.stop()

    second = start_server(path, "--state-dir", tmp_path / "state", disable_token=False)
    assert token_file.read_text().strip() == token
    assert f"token={token}" in second.wait_for_log(f"token={token}")
    assert second.lookup("0722776772", token=token)["CLIENTNAME"] == "John Doe"


def test_token_file_flag_chooses_where_the_generated_token_is_stored(start_server, tmp_path):
    directory = tmp_path / "book"
    path = write_contacts(directory / "contacts.csv", [JOHN_ROW])
    token_file = tmp_path / "secrets" / "popup.token"
    token_file.parent.mkdir()
    srv = start_server(path, "--token-file", token_file, disable_token=False)
    deadline = time.monotonic() + 5
    while not token_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert token_file.exists()
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token
    assert sorted(p.name for p in directory.iterdir()) == ["contacts.csv"]
    assert_json_error(srv.get("/popup", {"phone": "0722776772"}), 403)
    assert srv.lookup("0722776772", token=token)["CLIENTNAME"] == "John Doe"


def test_token_file_content_is_used_when_the_file_already_exists(start_server, tmp_path):
    path = write_contacts(tmp_path / "book" / "contacts.csv", [JOHN_ROW])
    token_file = tmp_path / "popup.token"
    token_file.write_text("preset-token-0123456789\n")
    os.chmod(token_file, 0o600)
    srv = start_server(path, "--token-file", token_file, disable_token=False)
    assert srv.lookup("0722776772", token="preset-token-0123456789")["CLIENTNAME"] == "John Doe"
    assert_json_error(srv.get("/popup", {"phone": "0722776772"}), 403)

GOOD_TOKEN = "Qm9fR2l2ZVRoaXNUb2tlblRvVm9pY2VudGVy"


def start_with_token_file(tmp_path, token_file, timeout=20):
    """Start the server on the token file; (exit status or None if it served, log)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(MODULE), str(SAMPLE_CONTACTS), "--host", "127.0.0.1",
         "--port", str(port), "--calls-db", "", "--token-file", str(token_file),
         "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env=subprocess_env())
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                http_request("GET", f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
    finally:
        served = proc.poll() is None
        if served:
            proc.terminate()
        output = proc.communicate(timeout=20)[0].decode("utf-8", "replace")
    return (None if served else proc.returncode), output


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_token_file_others_can_read_is_refused_and_chmod_600_keeps_the_url(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(GOOD_TOKEN + "\n")
    token_file.chmod(0o644)
    status, output = start_with_token_file(tmp_path, token_file)
    assert status == 2, output
    assert f"{token_file}: the token file can be read or changed by other users " \
           f"(mode 644)" in output and f"chmod 600 {token_file}" in output, output
    assert GOOD_TOKEN not in output
    token_file.chmod(0o600)
    status, output = start_with_token_file(tmp_path, token_file)
    assert status is None, output
    assert f"/popup?token={GOOD_TOKEN}" in output  # the URL Voicenter has still works
    assert token_file.read_text() == GOOD_TOKEN + "\n"


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_symbolic_link_in_place_of_the_token_file_is_never_followed(tmp_path,
                                                                      target_exists):
    victim = tmp_path / "victim.txt"
    if target_exists:
        victim.write_text("\n")  # empty: the old code wrote a token through the link
    link = tmp_path / ".popup-token"
    link.symlink_to(victim)
    status, output = start_with_token_file(tmp_path, link)
    assert status == 2, output
    assert str(link) in output and "symbolic link" in output, output
    assert victim.exists() == target_exists
    if target_exists:
        assert victim.read_text() == "\n"


def test_a_short_token_in_the_token_file_is_used_with_a_warning(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("abc123\n")
    token_file.chmod(0o600)
    status, output = start_with_token_file(tmp_path, token_file)
    assert status is None, output
    assert "/popup?token=abc123" in output
    assert f"WARNING the token from {token_file} has only 6 characters" in output, output


# --allow-ip, and the addresses a proxy forwards ---------------------------------------


def test_allow_ip_without_the_peer_refuses_it_with_403(start_server, contacts):
    srv = start_server(contacts, "--allow-ip", "10.0.0.0/8")
    resp = srv.get("/popup", {"phone": "0722776772"})
    assert_json_error(resp, 403)
    assert_no_contact_data(resp)
    assert_json_error(srv.post_json("/popup", {"phone": "0722776772"}), 403)


@pytest.mark.parametrize("allowed", [["127.0.0.1"], ["127.0.0.0/8"],
                                     ["10.0.0.0/8", "127.0.0.1/32"]])
def test_allow_ip_with_the_peer_allows_it(start_server, contacts, allowed):
    args = [word for cidr in allowed for word in ("--allow-ip", cidr)]
    srv = start_server(contacts, *args)
    assert srv.lookup("0722776772")["CLIENTNAME"] == "John Doe"

FORGED = [
    {"X-Forwarded-For": "10.1.2.3"},
    {"X-Forwarded-For": "127.0.0.1, 10.1.2.3"},
    {"X-Real-IP": "10.1.2.3"},
    {"Forwarded": "for=10.1.2.3"},
    {"X-Forwarded-For": "10.1.2.3", "X-Real-IP": "10.1.2.3", "Forwarded": "for=10.1.2.3",
     "X-Client-IP": "10.1.2.3", "True-Client-IP": "10.1.2.3"},
]


@pytest.mark.parametrize("headers", FORGED)
def test_forged_forwarding_headers_from_untrusted_peer_do_not_pass_allow_list(
        start_server, contacts, headers):
    srv = start_server(contacts, "--allow-ip", "10.0.0.0/8")
    resp = srv.get("/popup", {"phone": "0722776772"}, headers=headers)
    assert_json_error(resp, 403)
    assert_no_contact_data(resp)


def test_trusted_proxy_makes_x_forwarded_for_believed(start_server, contacts):
    srv = start_server(contacts, "--allow-ip", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1")
    assert_json_error(srv.get("/popup", {"phone": "0722776772"}), 403)
    resp = srv.get("/popup", {"phone": "0501234987"}, headers={"X-Forwarded-For": "10.9.8.7"})
    assert resp.status == 200, resp
    assert resp.json()["CLIENTNAME"] == "Masked Caller"


def test_trusted_proxy_does_not_believe_addresses_the_client_put_before_it(
        start_server, contacts):
    # The client forged "10.9.8.7"; the trusted proxy appended the real peer.
    srv = start_server(contacts, "--allow-ip", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1")
    resp = srv.get("/popup", {"phone": "0722776772"},
                   headers={"X-Forwarded-For": "10.9.8.7, 203.0.113.5"})
    assert_json_error(resp, 403)
    assert_no_contact_data(resp)


def test_an_untrusted_peer_cannot_forge_x_forwarded_for_when_another_proxy_is_trusted(
        start_server, contacts):
    # 127.0.0.1 is not the trusted proxy here, so its X-Forwarded-For must be ignored.
    srv = start_server(contacts, "--allow-ip", "10.0.0.0/8",
                       "--trusted-proxy", "192.0.2.1")
    for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
        value = "for=10.9.8.7" if header == "Forwarded" else "10.9.8.7"
        resp = srv.get("/popup", {"phone": "0722776772"}, headers={header: value})
        assert_json_error(resp, 403)
        assert "Widget Works" not in resp.text

UNREADABLE = ["unknown", "10.9.9.9:1234", "[10.9.9.9]:80", "[2001:db8::1]:443",
              "garbage", "", "10.9.8.7, unknown", "unknown, 127.0.0.1", "10.9.8.7,,"]

READABLE = ["10.9.8.7", "[10.9.8.7]", " 10.9.8.7 ", "203.0.113.5, 10.9.8.7",
            "::ffff:10.9.8.7", "10.9.8.7, 127.0.0.1"]


def test_an_unreadable_forwarded_address_is_refused_not_taken_for_the_proxy(
        start_server, contacts):
    # The proxy itself is inside --allow-ip: reading an entry as the proxy let it in.
    srv = start_server(contacts, "--allow-ip", "127.0.0.1", "--allow-ip", "10.0.0.0/8",
                       "--trusted-proxy", "127.0.0.1")

    def status(forwarded):
        resp = srv.get("/popup", {"phone": "0722776772"},
                       headers={"X-Forwarded-For": forwarded})
        if resp.status == 403:
            assert "X-Forwarded-For" in assert_json_error(resp, 403)["MESSAGE"], resp
            assert "John" not in resp.text
        return resp.status

    assert {value: status(value) for value in UNREADABLE} == dict.fromkeys(UNREADABLE, 403)
    assert {value: status(value) for value in READABLE} == dict.fromkeys(READABLE, 200)


def test_an_unreadable_forwarded_address_is_refused_without_an_allowlist_too(
        start_server, contacts):
    srv = start_server(contacts, "--trusted-proxy", "127.0.0.1")
    for path in ("/popup?phone=0722776772", "/calls"):  # the page: loopback only
        resp = srv.request("GET", path, headers={"X-Forwarded-For": "unknown"})
        assert_json_error(resp, 403)
        assert "John" not in resp.text


# CORS and the Chrome extension's preflight --------------------------------------------

ORIGIN = "chrome-extension://abcdefghijklmnop"


def _allows(header_value: str | None, *items: str) -> bool:
    value = (header_value or "").lower()
    listed = {v.strip() for v in value.split(",")}
    return "*" in listed or all(item.lower() in listed for item in items)


def test_options_preflight_is_answered_with_cors_headers(start_server, contacts):
    srv = start_server(contacts)
    resp = srv.request("OPTIONS", "/popup", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-popup-token"})
    assert resp.status == 204, resp
    assert resp.header("Access-Control-Allow-Origin") in ("*", ORIGIN), resp.headers
    assert _allows(resp.header("Access-Control-Allow-Methods"), "GET", "POST"), resp.headers
    assert _allows(resp.header("Access-Control-Allow-Headers"),
                   "content-type", "x-popup-token"), resp.headers


def test_options_preflight_needs_no_token(token_server):
    # Browsers never send custom headers (the token header) on a preflight.
    resp = token_server.request("OPTIONS", "/popup", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-popup-token"})
    assert resp.status == 204, resp
    assert resp.header("Access-Control-Allow-Origin") in ("*", ORIGIN), resp.headers
    assert_no_contact_data(resp)


def test_popup_answers_carry_cors_headers(start_server, contacts):
    srv = start_server(contacts)
    get = srv.get("/popup", {"phone": "0722776772"}, headers={"Origin": ORIGIN})
    js = srv.post_json("/popup", {"phone": "0722776772"}, headers={"Origin": ORIGIN})
    for resp in (get, js):
        assert resp.status == 200, resp
        assert resp.header("Access-Control-Allow-Origin") in ("*", ORIGIN), resp.headers
        assert resp.header("Content-Type") == "application/json; charset=utf-8", resp.headers


def test_the_extensions_private_network_preflight_is_allowed(server):
    headers = voicenter_fixture("preflight.json")["headers"]
    resp = server.request("OPTIONS", "/popup?phone=0722776772", headers=headers)
    assert resp.status == 204, resp
    assert resp.header("Access-Control-Allow-Private-Network") == "true"
    assert resp.header("Access-Control-Allow-Origin") in ("*", headers["Origin"])
    assert "POST" in resp.header("Access-Control-Allow-Methods")
    assert "content-type" in resp.header("Access-Control-Allow-Headers").lower()
    plain = {k: v for k, v in headers.items() if "Private" not in k}
    resp = server.request("OPTIONS", "/popup", headers=plain)
    assert resp.status == 204 and resp.header("Access-Control-Allow-Private-Network") is None
    resp = server.post_json("/popup", voicenter_fixture("popup-json-phases.json")["phases"][0],
                            headers={"Origin": headers["Origin"]})
    assert resp.status == 200 and resp.header("Access-Control-Allow-Origin") == "*"
    assert resp.json()["CLIENTNAME"] == "John Doe"


# With the login off, the office pages answer only under this machine's names ----------


@pytest.mark.parametrize("path", ["/", "/calls?day=2026-11-26", "/calls.csv", "/sent",
                                  "/caller/+972722776772"])
def test_with_the_login_off_another_sites_name_gets_a_page_saying_what_to_open(
        start_server, contacts, path):
    # DNS rebinding: evil.example's page, its name now leading to 127.0.0.1, reads
    # what this server answers as if it were its own.
    server = start_server(contacts, "--office-password", "")
    for host in ("evil.example", f"evil.example:{server.port}", "127.0.0.1.evil.example",
                 "localhost.evil.example", "xn--e1a.example"):
        resp = server.get(path, headers={"Host": host})
        assert resp.status == 421, (host, resp)
        assert resp.header("Content-Type").startswith("text/html"), resp
        assert 'data-reason="host"' in resp.text and "John Doe" not in resp.text
        assert f"http://127.0.0.1:{server.port}/" in resp.text, resp.text
    hebrew = server.get(path, headers={"Host": "evil.example", **HEBREW})
    assert hebrew.status == 421 and "הדף התבקש בשם שאינו של שרת זה" in hebrew.text


def test_with_the_login_off_a_mark_posted_under_another_name_is_refused(
        start_server, contacts, tmp_path):
    server = start_server(contacts, "--office-password", "", "--calls-db",
                          tmp_path / "calls.sqlite")
    server.get("/popup", {"phone": "0722776772", "ivrid": "r1", "statusCall": "Ringing"})
    resp = server.post_form("/calls/mark", {"ivrid": "r1", "mark": "handled"},
                            headers={"Host": "evil.example",
                                     "Origin": "http://evil.example"})
    assert resp.status == 421 and 'data-reason="host"' in resp.text, resp


def test_with_the_login_off_the_machines_own_names_and_addresses_open_the_pages(
        start_server, contacts):
    import socket
    server = start_server(contacts, "--office-password", "",
                          "--public-url", "https://Office.Example:8443/")
    machine = socket.gethostname()
    for host in ("127.0.0.1", f"127.0.0.1:{server.port}", f"localhost:{server.port}",
                 "LOCALHOST.", "[::1]", f"[::1]:{server.port}", "office.example",
                 "office.example:8443", machine, f"{machine}:{server.port}",
                 "192.168.1.20:8080"):
        resp = server.get("/", headers={"Host": host})
        assert resp.status == 200, (host, resp)
    assert server.get("/calls.csv", headers={"Host": "office.example"}).status == 200


def test_with_the_login_on_the_host_is_not_what_guards_the_pages(start_server, contacts,
                                                                   log_in):
    server = start_server(contacts, "--office-password", OFFICE_PASSWORD)
    client = log_in(server)
    assert client.get("/", headers={"Host": "crm.office.example"}).status == 200


# The request log ----------------------------------------------------------------------


def test_request_log_names_the_peer_address(start_server, contacts):
    srv = start_server(contacts)
    mark = srv.log_mark()
    assert srv.get("/popup", {"phone": "0501234987"}).status == 200
    log = srv.wait_for_log("127.0.0.1", since=mark)
    assert "127.0.0.1" in log, log


def test_forged_forwarding_headers_do_not_change_the_logged_address(start_server, contacts):
    srv = start_server(contacts)
    mark = srv.log_mark()
    resp = srv.get("/popup", {"phone": "0501234987"},
                   headers={"X-Forwarded-For": "203.0.113.77", "X-Real-IP": "198.51.100.77",
                            "Forwarded": "for=192.0.2.77"})
    assert resp.status == 200, resp
    log = srv.wait_for_log("987", since=mark)
    assert "987" in log, log
    for forged in ("203.0.113.77", "198.51.100.77", "192.0.2.77"):
        assert forged not in log, log


def test_a_forwarded_address_cannot_write_words_into_the_log(start_server, contacts):
    # An IPv6 zone may hold any text: the log shows the address, not the header's words.
    srv = start_server(contacts, "--trusted-proxy", "127.0.0.1")
    mark = srv.log_mark()
    forged = "fe80::1%x total=9 caller=0509999999 client=203.0.113.9"
    resp = srv.get("/popup", {"phone": "0501234987"}, headers={"X-Forwarded-For": forged})
    assert resp.status == 200, resp
    log = srv.wait_for_log("987", since=mark)
    line = next(line for line in log.splitlines() if "987" in line)
    assert line.endswith("client=fe80::1"), line
    assert "203.0.113.9" not in log and "0509999999" not in log, log


def _send_masked_caller(srv, **extra_query):
    q = "".join(f"&{k}={v}" for k, v in extra_query.items())
    resp = [srv.request("GET", f"/popup?phone=0501234987{q}"),
            srv.post_form(f"/popup?x=1{q}", {"phone": "0501234987"}),
            srv.post_json(f"/popup?x=1{q}", {"phone": "972501234987"})]
    for r in resp:
        assert r.status == 200, r
        assert r.json()["CLIENTNAME"] == "Masked Caller", r


def _wait_for_request_lines(srv, mark, needle, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        log = srv.log_since(mark)
        if log.count(needle) >= count or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def test_request_log_shows_only_the_last_three_digits_of_the_number(start_server, contacts):
    srv = start_server(contacts)
    mark = srv.log_mark()
    _send_masked_caller(srv)
    log = _wait_for_request_lines(srv, mark, "987", 3)
    assert log.count("987") >= 3, log
    for leak in ("0501234987", "501234987", "234987"):
        assert leak not in log, (leak, log)


def test_log_numbers_flag_logs_the_whole_number(start_server, contacts):
    srv = start_server(contacts, "--log-numbers")
    mark = srv.log_mark()
    _send_masked_caller(srv)
    log = _wait_for_request_lines(srv, mark, "501234987", 3)
    assert "501234987" in log, log


def test_request_log_never_contains_the_token(start_server, contacts):
    srv = start_server(contacts, "--token", "TOPSECRET-abc123")
    mark = srv.log_mark()
    _send_masked_caller(srv, token="TOPSECRET-abc123")
    resp = srv.get("/popup", {"phone": "0501234987"}, headers={"X-Popup-Token": "TOPSECRET-abc123"})
    assert resp.status == 200, resp
    log = _wait_for_request_lines(srv, mark, "987", 4)
    assert log.count("987") >= 4, log
    time.sleep(0.3)
    log = srv.log_since(mark)
    assert "TOPSECRET-abc123" not in log, log
    assert "TOPSECRET" not in log, log

SECRET = "TOPSECRET-xyz789"


@pytest.mark.parametrize("method,path", [
    ("GET", f"/popup;token={SECRET}"),
    ("GET", f"/popup;token={SECRET}?phone=0722776772"),
    ("GET", f"/popup/{SECRET}"),
    ("GET", f"/{SECRET}"),
    ("GET", f"/popup%3Btoken%3D{SECRET}"),
    ("POST", f"/calls.csv;token={SECRET}"),
    ("DELETE", f"/health;{SECRET}"),
])
def test_no_path_a_client_writes_puts_the_token_in_the_log(start_server, contacts,
                                                           method, path):
    srv = start_server(contacts, "--token", SECRET)
    mark = srv.log_mark()
    resp = srv.request(method, path, headers={"X-Popup-Token": SECRET})
    assert resp.status in (404, 405), resp
    log = srv.wait_for_log(f" {resp.status} ", since=mark)
    assert f" {resp.status} " in log, log
    assert SECRET not in log and "TOPSECRET" not in log, log


def test_a_404_still_says_which_route_the_path_began_with(start_server, contacts):
    srv = start_server(contacts, "--token", SECRET)
    mark = srv.log_mark()
    assert srv.get(f"/popup;token={SECRET}").status == 404
    log = srv.wait_for_log(" 404 ", since=mark)
    assert "GET /popup... 404" in log, log


def test_the_access_log_writes_each_request_masked_and_escaped():
    stream = io.StringIO()
    access_log = ps.AccessLog(stream)
    access_log.popup("GET", {"phone": "0722776772", "statusCall": "Ringing\r\nFAKE",
                             "ivrid": "abc"}, 1, 0.0004, "127.0.0.1")
    access_log.write("GET /nowhere 404 no such page")
    access_log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(" INFO GET /popup 200 Ringing\\r\\nFAKE ivrid=abc total=1 "
                             "caller=*******772 0.4ms client=127.0.0.1"), lines
    assert lines[1].endswith(" INFO GET /nowhere 404 no such page"), lines
    assert "0722776772" not in stream.getvalue()
