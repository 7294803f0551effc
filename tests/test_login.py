"""Issue 14 item 5: the office pages' own login: HTML login page, signed session
cookie, logout, CSRF and Origin checks, failed logins limited per address."""
import re

import popup_server as ps

from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS
from test_state_dir import _start_as_a_user_would as start_as_a_user_would


def _office(start_server, *args):
    return start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD, *args)


def _login(server, password=OFFICE_PASSWORD, next_path="/", headers=None):
    return server.post_form("/login", {"password": password, "next": next_path},
                            headers={"Origin": server.url, **(headers or {})})


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


def test_with_the_login_off_allow_ip_still_rules(start_server):
    refused = start_server(SAMPLE_CONTACTS, "--allow-ip", "10.0.0.0/8").get("/")
    assert refused.status == 403 and "John Doe" not in refused.text
    assert start_server(SAMPLE_CONTACTS).get("/login").status == 303  # nothing to sign in to


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
