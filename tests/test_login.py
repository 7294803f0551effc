"""The office pages' own login: the HTML login page, a signed session cookie (Secure
behind a trusted TLS proxy), sending a browser back only to a local path, logout,
CSRF and Origin checks; sessions across restarts and password changes; wrong
passwords slowing the address that sends them (a minute at most, each refusal
answered at once and logged, rate-limited) and password checks bounded for everyone,
so the office is never locked out; a password made at the first start (printed once,
only its hash kept); and `popup-server password`, from the terminal or stdin, ending
every session."""

from __future__ import annotations

import http.client
import os
import re
import select
import subprocess
import sys
import time
import urllib.parse

import pytest

import popup_server as ps
from conftest import (MODULE, OFFICE_PASSWORD, SAMPLE_CONTACTS, Response, free_port,
                      printed_password, start_as_a_user_would, subprocess_env,
                      wait_until)
from office_loads import LoginFlood


def _office(start_server, *args):
    return start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD, *args)


def _login(server, password=OFFICE_PASSWORD, headers=None, next_path="/"):
    """POST /login as an English browser of the server's own pages would. Told "busy"
    (503: over LOGIN_CHECKS_A_SECOND password checks from everyone, a burst of them
    taking the half not kept for one trying again), it tries again after the
    Retry-After, as that page says; the bound itself is what the flood test tests."""
    for _ in range(3):
        answer = server.post_form("/login", {"password": password, "next": next_path},
                                  headers={"Origin": server.url, "Accept-Language": "en",
                                           **(headers or {})})
        if answer.status != 503:
            return answer
        assert "busy checking other sign-ins" in answer.text, answer
        time.sleep(float(answer.header("Retry-After")))
    return answer


def _post_from(address, server, password, timeout=30.0):
    """POST /login on a connection that leaves from `address` (any of 127.0.0.0/8)."""
    body = urllib.parse.urlencode({"password": password, "next": "/"})
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout,
                                            source_address=(address, 0))
    try:
        connection.request("POST", "/login", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Accept-Language": "en"})
        answer = connection.getresponse()
        return Response(answer.status, answer.reason, answer.headers, answer.read())
    finally:
        connection.close()


# Signing in and out -------------------------------------------------------------------


def test_a_browser_without_a_session_gets_the_html_login_page_never_json(start_server):
    server = _office(start_server)
    for path in ("/", "/calls?day=2026-11-26", "/calls.csv"):
        resp = server.get(path)
        assert resp.status == 303, (path, resp)
        location = resp.header("Location")
        assert location.startswith("/login?next="), location
        page = server.get(location)
        assert page.status == 200 and page.header("Content-Type").startswith("text/html")
        assert '<form method="post" action="/login"' in page.text
        assert 'type="password"' in page.text and "John Doe" not in page.text


def test_the_right_password_opens_the_page_asked_for_with_a_safe_cookie(start_server):
    server = _office(start_server)
    wrong = _login(server, "not-the-password")
    assert wrong.status == 401 and wrong.header("Content-Type").startswith("text/html")
    assert "Wrong password." in wrong.text and wrong.header("Set-Cookie") is None
    resp = _login(server, next_path="/calls?day=2026-11-26")
    assert resp.status == 303 and resp.header("Location") == "/calls?day=2026-11-26"
    cookie = resp.header("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert re.search(r"Max-Age=\d+", cookie)
    session = cookie.split(";")[0]
    page = server.get("/calls?day=2026-11-26", headers={"Cookie": session})
    assert page.status == 200 and "John Doe" not in page.text and "Calls of" in page.text
    forged = session[:-3] + ("AAA" if not session.endswith("AAA") else "BBB")
    assert server.get("/", headers={"Cookie": forged}).status == 303


def test_the_cookie_is_secure_when_the_trusted_proxy_says_tls(start_server):
    server = _office(start_server, "--trusted-proxy", "127.0.0.1")
    over_tls = _login(server, headers={"X-Forwarded-Proto": "https",
                                       "X-Forwarded-For": "203.0.113.9",
                                       "Origin": "https://" + server.url.split("//")[1]})
    assert over_tls.status == 303 and "; Secure" in over_tls.header("Set-Cookie")
    untrusted = _office(start_server)  # no --trusted-proxy: the header is not believed
    plain = _login(untrusted, headers={"X-Forwarded-Proto": "https"})
    assert plain.status == 303 and "Secure" not in plain.header("Set-Cookie")


def test_the_login_sends_a_browser_back_only_to_a_local_path(start_server):
    server = _office(start_server)
    for goal in ("//evil.example/x", "https://evil.example/", "/\\evil.example",
                 "javascript:alert(1)", "calls"):
        resp = _login(server, next_path=goal)
        assert resp.status == 303 and resp.header("Location") == "/", (goal, resp)
    login_page = server.get("/login", {"next": "//evil.example/"})
    assert "evil.example" not in login_page.text


def test_logout_ends_the_session_and_needs_the_forms_token(start_server, log_in):
    server = _office(start_server)
    client = log_in(server)
    refused = server.post_form("/logout", {"csrf": "wrong"},
                               headers={"Cookie": client.cookie, "Origin": server.url})
    assert refused.status == 403 and "This form was refused" in refused.text
    assert client.get("/").status == 200
    cross_site = server.post_form("/logout", {"csrf": client.csrf},
                                  headers={"Cookie": client.cookie,
                                           "Origin": "https://evil.example"})
    assert cross_site.status == 403 and client.get("/").status == 200
    resp = client.post_form("/logout")
    assert resp.status == 303 and resp.header("Location") == "/login"
    assert "Max-Age=0" in resp.header("Set-Cookie")
    assert client.get("/").status == 303  # the old cookie no longer opens the page


def test_a_login_posted_from_another_site_is_refused(start_server):
    server = _office(start_server)
    resp = _login(server, headers={"Origin": "https://evil.example"})
    assert resp.status == 403 and resp.header("Set-Cookie") is None
    assert resp.header("Content-Type").startswith("text/html")


def test_with_the_login_off_allow_ip_still_rules(start_server):
    refused = start_server(SAMPLE_CONTACTS, "--allow-ip", "10.0.0.0/8").get("/")
    assert refused.status == 403 and "John Doe" not in refused.text
    assert start_server(SAMPLE_CONTACTS).get("/login").status == 303  # nothing to sign in to


# Sessions across restarts and new passwords -------------------------------------------


def test_a_made_password_is_printed_once_and_only_its_hash_is_kept(tmp_path):
    state = tmp_path / "state"
    args = (SAMPLE_CONTACTS, "--state-dir", state, "--calls-db", "", "--token", "")
    first = start_as_a_user_would(tmp_path, *args)  # no --office-password at all
    try:
        log = first.wait_for_log("State folder:")
        password = re.search(r"  Office password: +(\S+)  \(made now and shown only "
                             r"this once", log).group(1)
        kept = (state / "office-password").read_text()
        assert password not in kept and kept.startswith("scrypt$")
        assert _login(first, password).status == 303
    finally:
        first.stop()
    second = start_as_a_user_would(tmp_path, *args)
    try:
        assert "shown only this once" not in second.wait_for_log("State folder:")
        assert _login(second, password).status == 303
    finally:
        second.stop()


def test_a_new_password_ends_every_session(start_server, tmp_path, log_in):
    state = tmp_path / "state"
    first = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                         "--office-password", OFFICE_PASSWORD)
    client = log_in(first)
    first.stop()
    second = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                          "--office-password", "another-password-0987")
    assert second.get("/", headers={"Cookie": client.cookie}).status == 303


def test_a_session_outlives_a_restart_with_the_same_password_and_ends_with_a_new_one(
        start_server, log_in, tmp_path):
    state = tmp_path / "kept-state"
    first = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                         "--office-password", OFFICE_PASSWORD)
    client = log_in(first)
    first.stop()
    again = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                         "--office-password", OFFICE_PASSWORD)
    resp = again.get("/calls", headers={"Cookie": client.cookie})
    assert resp.status == 200, (resp.status, resp.header("Location"))
    again.stop()
    changed = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                           "--office-password", OFFICE_PASSWORD + "-new")
    resp = changed.get("/calls", headers={"Cookie": client.cookie})
    assert resp.status == 303 and resp.header("Location").startswith("/login"), resp.status


def test_a_signed_out_session_stays_signed_out_after_a_restart(start_server, log_in,
                                                                tmp_path):
    state = tmp_path / "kept-state"
    first = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                         "--office-password", OFFICE_PASSWORD)
    gone, kept = log_in(first), log_in(first)
    assert gone.post_form("/logout").status == 303
    first.stop()
    again = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                         "--office-password", OFFICE_PASSWORD)
    resp = again.get("/calls", headers={"Cookie": gone.cookie})
    assert resp.status == 303 and resp.header("Location").startswith("/login"), resp
    assert again.get("/calls", headers={"Cookie": kept.cookie}).status == 200
    assert (state / "revoked_sessions").stat().st_mode & 0o077 == 0


def test_a_return_to_an_old_password_brings_none_of_its_sessions_back(
        start_server, log_in, tmp_path):
    state = tmp_path / "kept-state"
    for password in (OFFICE_PASSWORD, OFFICE_PASSWORD + "-new"):
        server = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                              "--office-password", password)
        if password == OFFICE_PASSWORD:
            client = log_in(server)
        server.stop()
    back = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                        "--office-password", OFFICE_PASSWORD)
    resp = back.get("/calls", headers={"Cookie": client.cookie})
    assert resp.status == 303 and resp.header("Location").startswith("/login"), resp
    assert log_in(back).get("/calls").status == 200  # a new login works at once


def test_the_revoked_sessions_file_is_bounded_and_pruned(tmp_path):
    path = tmp_path / "revoked_sessions"
    now = 1_800_000_000
    revoked = ps.RevokedSessions.open(path, "tag", kept=3, now=now)
    for number in range(20):
        revoked.revoke(f"nonce{number}", now + ps.SESSION_SECONDS - 100 + number, now=now)
    assert len(path.read_text().splitlines()) <= 2 * 3 + 3
    again = ps.RevokedSessions.open(path, "tag", kept=3, now=now)
    # Beyond the bound the oldest are folded into "started until": still revoked.
    for number in range(20):
        expires = now + ps.SESSION_SECONDS - 100 + number
        assert again.is_revoked(f"nonce{number}", expires), number
    assert not again.is_revoked("another", now + ps.SESSION_SECONDS)
    # Once every one of them would have expired, nothing of them is kept.
    later = ps.RevokedSessions.open(path, "tag", kept=3, now=now + ps.SESSION_SECONDS + 60)
    assert path.read_text() == "password tag\n"
    assert not later.ended and later.until == 0
    # A new password revokes every session started until then, and only those.
    new = ps.RevokedSessions.open(path, "other", kept=3, now=now + 1000)
    assert new.is_revoked("x", now + 1000 + ps.SESSION_SECONDS)
    assert not new.is_revoked("y", now + 1001 + ps.SESSION_SECONDS)
    new.revoke_all(now=now + 2000)
    assert ps.RevokedSessions.open(path, "other", now=now + 2001).is_revoked(
        "z", now + 1500 + ps.SESSION_SECONDS)


# Wrong passwords never lock the office out --------------------------------------------


def test_wrong_passwords_are_limited_per_address(start_server):
    server = _office(start_server, "--trusted-proxy", "127.0.0.1")
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    for _ in range(4):
        assert _login(server, "guess", headers=attacker).status == 401
    blocked = _login(server, headers=attacker)  # even the right password now waits
    assert blocked.status == 429 and "Too many wrong passwords" in blocked.text
    assert int(blocked.header("Retry-After")) > 0 and blocked.header("Set-Cookie") is None
    other = _login(server, headers={"X-Forwarded-For": "203.0.113.67"})
    assert other.status == 303  # another address is not held back


def test_ten_wrong_passwords_then_the_right_one_works_within_a_minute(start_server):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD,
                          "--trusted-proxy", "127.0.0.1")
    office = {"X-Forwarded-For": "203.0.113.66"}  # everyone behind the office's NAT
    answers = [_login(server, f"guess-{n}", office) for n in range(10)]
    for answer in answers:
        assert answer.header("Content-Type").startswith("text/html"), answer
        assert answer.header("Set-Cookie") is None
    assert [a.status for a in answers[:3]] == [401] * 3
    assert all("Wrong password." in a.text and "Wait" not in a.text for a in answers[:3])
    assert answers[3].status == 401 and "Wait 2 seconds before the next try" in answers[3].text
    waiting = [a for a in answers[4:] if a.status == 429]
    assert waiting and all(a.status in (401, 429) for a in answers[4:])
    for answer in waiting:  # refused at once, the wait said in words and in Retry-After
        seconds = int(answer.header("Retry-After"))
        assert 1 <= seconds <= 60
        assert re.search(r"try again in (\d+ seconds|1 second|a minute)\.", answer.text)
    hebrew = _login(server, "guess-he", {**office, "Accept-Language": "he"})
    if hebrew.status == 429:  # the wait said in the page's language
        assert re.search(r"נסו שוב בעוד (\d+ שניות|שנייה אחת|דקה)\.", hebrew.text), hebrew.text
    else:
        assert "הסיסמה שגויה. המתינו" in hebrew.text
    # Another address is never held back; the office's own gets in within a minute.
    assert _login(server, OFFICE_PASSWORD, {"X-Forwarded-For": "203.0.113.67"}).status == 303
    wait_until(lambda: _login(server, OFFICE_PASSWORD, office).status == 303,
               timeout=ps.LOGIN_LONGEST_WAIT + 10, what="the right password to work again")
    log = server.wait_for_log("waits")
    refusals = log.count("office login refused:")
    assert refusals >= 10, log  # every wrong password and every refused wait is logged
    assert "203.0.113.66" in log and OFFICE_PASSWORD not in log
    assert "guess-" not in log


def test_the_wait_grows_to_a_minute_and_tries_during_it_never_lengthen_it():
    limiter = ps.LoginLimiter()
    waits = [limiter.failed("198.51.100.7", now=1000.0 + n * 100) for n in range(10)]
    assert waits == [0, 0, 0, 2, 4, 8, 16, 32, 60, 60]
    last = 1000.0 + 9 * 100
    for second in range(60):  # asking during the wait neither counts nor extends it
        assert limiter.wait_left("198.51.100.7", now=last + second) == 60 - second
    assert limiter.wait_left("198.51.100.7", now=last + 60) == 0
    assert limiter.wait_left("198.51.100.8", now=last) == 0  # another address
    limiter.failed("2001:db8:1:2::5", now=0)
    for _ in range(4):
        limiter.failed("2001:db8:1:2::77", now=0)  # the same /64
    assert limiter.wait_left("2001:db8:1:2::5", now=0) == 4
    assert limiter.failed("198.51.100.7", now=last + ps.LOGIN_FORGET_AFTER) == 0  # forgotten
    limiter.succeeded("2001:db8:1:2::5")
    assert limiter.wait_left("2001:db8:1:2::77", now=0) == 0


def test_a_flood_from_many_addresses_is_answered_at_once_and_the_office_gets_in(
        start_server):
    # Wrong passwords from a new loopback address each time, 64 in flight: beyond
    # LOGIN_CHECKS_A_SECOND from everyone, a guess gets the login page's "busy" (503)
    # unchecked, so none waits out the login lane for the office's "Busy, one moment"
    # page. The office, told "busy" once, is checked when it tries again.
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD)
    flood = LoginFlood(server.port, connections=64)
    flood.start()
    try:
        wait_until(lambda: "503" in flood.statuses, timeout=30, what="a guess told busy")
        tries = []
        while len(tries) < 3 and 303 not in tries:
            answer = _post_from("127.0.0.1", server, OFFICE_PASSWORD)  # its hang guard
            tries.append(answer.status)
            if answer.status == 503:
                assert "busy checking other sign-ins" in answer.text, answer
                time.sleep(float(answer.header("Retry-After")))  # as its page says
        assert tries[-1] == 303, tries
    finally:
        flood.stop()
    statuses = set(flood.statuses)
    assert {"401", "503"} <= statuses <= {"401", "503"}, statuses
    assert flood.waited_out == 0, flood.waited_out
    log = server.log_text()
    assert 0 < log.count("office login refused:") <= ps.LOGIN_REFUSALS_LOGGED + 1, log
    assert "password checks a second from everyone" in log, log


def test_checks_beyond_the_rate_are_refused_and_half_is_kept_for_one_trying_again():
    checks = ps.LoginChecks(rate=4, saved=8)
    fresh = [f"198.51.100.{n}" for n in range(20)]
    taken = [checks.take(address, now=100.0) for address in fresh]
    assert taken == [True] * 4 + [False] * 16  # down to the half kept back
    assert checks.take(fresh[4], now=100.0)  # told busy: it tries again, from that half
    assert checks.take(fresh[5], now=100.0)
    assert not checks.take("203.0.113.9", now=100.0)  # a new one: not from that half
    assert not checks.take("203.0.113.10", now=100.25)  # the check gained goes back to it
    assert checks.take(fresh[6], now=100.25)
    assert checks.take("203.0.113.11", now=102.0)  # 8 saved up again
    late = ps.LoginChecks(rate=4, saved=8)
    for n in range(5):  # 4 checked, the fifth told busy
        late.take(f"198.51.100.{n}", now=0.0)
    remembered = ps.LOGIN_BUSY_REMEMBERED
    for n in range(4):  # saved up again, and down to the half kept back
        assert late.take(f"192.0.2.{n}", now=remembered)
    assert not late.take("198.51.100.4", now=remembered)  # forgotten: a new one again
    assert late.take("198.51.100.4", now=remembered)  # told busy just now: it tries again


def test_refusals_beyond_the_limit_are_counted_in_one_line(caplog):
    refusals = ps.RefusalLog(limit=3, window=60.0)
    with caplog.at_level("WARNING", logger="popup_server"):
        for n in range(10):
            refusals.refused("wrong password from %s", f"192.0.2.{n}", now=5.0 + n)
        refusals.flush()
    lines = [record.getMessage() for record in caplog.records]
    assert lines[:3] == [f"office login refused: wrong password from 192.0.2.{n}"
                         for n in range(3)]
    assert lines[3:] == ["office login refused 7 more times in the last minute (not "
                         "logged one by one)"]


# `popup-server password` --------------------------------------------------------------


def _password_command(state, *args, stdin=b""):
    return subprocess.run([sys.executable, str(MODULE), "password", "--state-dir",
                           str(state), *map(str, args)], input=stdin, capture_output=True,
                          timeout=60, env=subprocess_env())


def test_the_password_command_from_stdin_ends_every_session_of_a_running_server(
        tmp_path):
    state = tmp_path / "state"
    server = start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, "--state-dir", state,
                                   "--calls-db", "", "--token", "")
    try:
        made = printed_password(server)
        signed_in = _login(server, made)
        assert signed_in.status == 303
        cookie = signed_in.header("Set-Cookie").split(";")[0]
        assert server.get("/calls", headers={"Cookie": cookie}).status == 200
        result = _password_command(state, stdin=b"a new office password 42\n")
        assert result.returncode == 0, result.stderr
        assert b"a new office password 42" not in result.stdout + result.stderr
        assert b"The office password is changed" in result.stdout
        kept = (state / "office-password").read_text()
        assert kept.startswith("scrypt$") and "a new office password" not in kept
        if os.name != "nt":
            assert (state / "office-password").stat().st_mode & 0o077 == 0
        wait_until(lambda: server.get("/calls", headers={"Cookie": cookie}).status == 303,
                   what="the old session to end")
        assert _login(server, "a new office password 42").status == 303
        assert _login(server, made).status == 401
        assert "the office password was changed" in server.log_text()
    finally:
        server.stop()
    again = start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, "--state-dir", state,
                                  "--calls-db", "", "--token", "")
    try:
        assert _login(again, "a new office password 42").status == 303
    finally:
        again.stop()


def test_the_password_command_refuses_what_it_cannot_use(tmp_path):
    state = tmp_path / "state"
    short = _password_command(state, stdin=b"short\n")
    assert short.returncode == 2 and b"at least 8 characters" in short.stderr
    assert not (state / "office-password").exists()
    given = _password_command(state, "--office-password", "x" * 20, stdin=b"y" * 20)
    assert given.returncode == 2 and b"given by --office-password" in given.stderr


#: office-password files a server cannot use: not one line of text, not a hash, and
#: hashes no password can be checked against (each login would say "Wrong password").
DAMAGED_PASSWORD_FILES = {
    "binary": b"\x00\xff\xfe scrypt$" * 8,
    "plain text": b"hunter2-the-password-itself\n",
    "scrypt$bad": b"scrypt$bad\n",
    "cost not a power of 2": ps.hash_password("x" * 12).replace(
        "scrypt$16384$", "scrypt$16383$").encode() + b"\n",
    "cost beyond memory": ps.hash_password("x" * 12).replace(
        "scrypt$16384$", "scrypt$1048576$").encode() + b"\n",
    "hash not base64": ps.hash_password("x" * 12)[:-8].encode() + b"!!!!!!!!\n",
    "hash cut short": ps.hash_password("x" * 12)[:-30].encode() + b"\n",
}


@pytest.mark.parametrize("damage", list(DAMAGED_PASSWORD_FILES))
def test_a_damaged_password_file_stops_the_start_pointing_to_the_password_command(
        run_cli, tmp_path, damage):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    password_file = state / "office-password"
    password_file.write_bytes(DAMAGED_PASSWORD_FILES[damage])
    password_file.chmod(0o600)
    start = ("--state-dir", state, "--host", "127.0.0.1", "--port", free_port(),
             "--token", "", "--calls-db", "", SAMPLE_CONTACTS)
    refused = run_cli(*start)
    lines = [line for line in refused.stderr.decode().splitlines()
             if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO ", line)]
    assert refused.returncode == 2 and len(lines) == 1, (refused.stderr, refused.stdout)
    assert lines[0].startswith(f"popup_server: {password_file}: the office password "
                               "file does not hold "), lines
    assert lines[0].endswith(f"set a new one: python popup_server.py password "
                             f"--state-dir {state}"), lines
    assert "delete" not in lines[0], lines
    assert password_file.read_bytes() == DAMAGED_PASSWORD_FILES[damage]  # left alone


def test_a_damaged_password_file_written_while_the_server_runs_keeps_the_password(
        tmp_path):
    state = tmp_path / "state"
    server = start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, "--state-dir", state,
                                   "--calls-db", "", "--token", "")
    try:
        made = printed_password(server)
        (state / "office-password").write_bytes(DAMAGED_PASSWORD_FILES["scrypt$bad"])
        wait_until(lambda: _login(server, made).status == 303 and "does not hold a "
                   "password hash; the office password stays as it was" in
                   server.log_text(), what="the damaged file to be read and refused")
        assert f"(set a new one: python popup_server.py password --state-dir {state})" \
            in server.log_text()
        mended = _password_command(state, stdin=b"a mended password 42\n")  # as it says
        assert mended.returncode == 0, mended.stderr
        wait_until(lambda: _login(server, "a mended password 42").status == 303,
                   what="the mended password")
    finally:
        server.stop()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root, to give the state folder to another user")
def test_the_password_command_refuses_a_state_folder_of_another_user(tmp_path):
    """As root on a service's folder (README, "systemd"): a password file root wrote
    would be root's own, mode 600, and the service's server could not read it."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    refused = _password_command(state, stdin=b"a new office password 42\n")
    assert refused.returncode == 2, refused
    assert refused.stderr.decode().startswith(f"popup_server: {state}: the state folder "
                                              "belongs to user "), refused.stderr
    assert b"run this command as that user: sudo -u " in refused.stderr
    assert list(state.iterdir()) == []


def _typed(argv, lines, timeout=60.0):
    """Run `argv` on a terminal, typing each of `lines` after each prompt; returns
    (exit status, everything the terminal showed)."""
    pty = pytest.importorskip("pty")  # POSIX terminals only
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower,
                            env=subprocess_env(), start_new_session=True)
    os.close(follower)
    shown, deadline = b"", time.monotonic() + timeout
    try:
        for line in lines:
            prompts = shown.count(b": ")
            while shown.count(b": ") == prompts and time.monotonic() < deadline:
                if select.select([leader], [], [], 0.2)[0]:
                    shown += os.read(leader, 4096)
            os.write(leader, line + b"\n")
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    shown += os.read(leader, 4096)
                except OSError:
                    break
        return proc.wait(timeout=10), shown
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()


def test_the_password_command_asks_twice_on_a_terminal_and_never_shows_it(tmp_path):
    state = tmp_path / "state"
    argv = [sys.executable, str(MODULE), "password", "--state-dir", str(state)]
    status, shown = _typed(argv, [b"typed twice 12345", b"typed twice 12345"])
    assert status == 0, shown
    assert b"New office password:" in shown and b"typed twice" not in shown
    kept = (state / "office-password").read_text()
    assert ps.password_matches("typed twice 12345", kept.strip())
    status, shown = _typed(argv, [b"one password 123", b"another one 456"])
    assert status == 2 and b"the two passwords differ" in shown
    assert (state / "office-password").read_text() == kept
