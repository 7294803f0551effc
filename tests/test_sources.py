"""Contacts from more than one local file: an http(s) link (against a real site on
loopback, tests/linksite.py: Google Sheets' link shapes, ETags and Last-Modified,
failures that keep the last good contacts, redirects, size and time bounds, a
password that never shows), several sources served as one (files of each kind and a
link, one failing while the others update), and a source the program adds and
reloads itself."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given, strategies as st

import popup_server as ps
from conftest import health_of, wait_until, write_contacts
from linksite import LinkSite, Page
from vcards import write_iphone

HEADER = "name,company,phone\n"
ALICE = HEADER + "Alice Link,Link Co,050-111-1111\n"
BOB = HEADER + "Bob Link,Link Co,050-222-2222\n"
SECRETS = ("pw-s3cret", "tok-s3cret", "key-s3cret")


@pytest.fixture
def state(tmp_path):
    """The environment naming the test's state folder (POPUP_STATE_DIR), where a
    link's last good download is kept: the servers and `--check` runs given it share
    that folder."""
    return {"POPUP_STATE_DIR": str(tmp_path / "state")}


def name_of(server, phone):
    return server.lookup(phone)["CLIENTNAME"]


def answers(server, phone, name):
    return lambda: name_of(server, phone) == name


# A link's shape and its secrets (pure functions) --------------------------------------

SHEET = "1AbC-dEf_123"
PUBLISHED = "2PACX-1vQxyz_AB-c"


@pytest.mark.parametrize("link, export", [
    (f"https://docs.google.com/spreadsheets/d/{SHEET}/edit#gid=123",
     f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv&gid=123"),
    (f"https://docs.google.com/spreadsheets/d/{SHEET}/edit?usp=sharing",
     f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv&gid=0"),
    (f"https://docs.google.com/spreadsheets/d/{SHEET}/edit?gid=55#gid=55",
     f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv&gid=55"),
    (f"http://docs.google.com/spreadsheets/u/1/d/{SHEET}/view",
     f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv&gid=0"),
    (f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv",
     f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv&gid=0"),
    (f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv&gid=9",
     f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv&gid=9"),
    (f"https://docs.google.com/spreadsheets/d/e/{PUBLISHED}/pubhtml",
     f"https://docs.google.com/spreadsheets/d/e/{PUBLISHED}/pub?output=csv"),
    (f"https://docs.google.com/spreadsheets/d/e/{PUBLISHED}/pubhtml?gid=7&single=true",
     f"https://docs.google.com/spreadsheets/d/e/{PUBLISHED}/pub?gid=7&single=true&output=csv"),
    (f"https://docs.google.com/spreadsheets/d/e/{PUBLISHED}/pub?output=csv",
     f"https://docs.google.com/spreadsheets/d/e/{PUBLISHED}/pub?output=csv"),
    (f"https://docs.google.com/spreadsheets/d/{SHEET}/edit?resourcekey=RK#gid=3",
     f"https://docs.google.com/spreadsheets/d/{SHEET}/export?format=csv&gid=3&resourcekey=RK"),
])
def test_every_google_sheets_link_shape_becomes_its_csv_export(link, export):
    assert ps.sheet_export_url(link) == export


@pytest.mark.parametrize("link", [
    "https://example.com/spreadsheets/d/abc/edit#gid=1",  # not Google: as it is
    "https://docs.google.com/document/d/abc/edit",       # a Google document, not a sheet
    "http://127.0.0.1:8080/spreadsheets/d/abc/export?format=csv&gid=4",
])
def test_other_links_are_left_as_they_are(link):
    assert ps.sheet_export_url(link) == link


@pytest.mark.parametrize("text, shown", [
    ("https://user:pw-s3cret@example.com/c.csv", "https://***@example.com/c.csv"),
    ("https://example.com/c.csv?token=tok-s3cret&format=csv",
     "https://example.com/c.csv?token=***&format=csv"),
    ("https://example.com/c.csv?api_key=key-s3cret;gid=4#access_token=tok-s3cret",
     "https://example.com/c.csv?api_key=***;gid=4#access_token=***"),
    ("https://example.com/c.csv?key-s3cret", "https://example.com/c.csv?***"),
    ("a.csv|http://u:pw-s3cret@h/x?sig=tok-s3cret|b.vcf",
     "a.csv|http://***@h/x?sig=***|b.vcf"),
    ("failed: https://u:p@w-s3cret@h:81/x.csv?Key=key-s3cret (no answer)",
     "failed: https://***@h:81/x.csv?Key=*** (no answer)"),
    ("/home/me/contacts.csv", "/home/me/contacts.csv"),
])
def test_redact_url_hides_passwords_tokens_and_keys(text, shown):
    assert ps.redact_url(text) == shown


#: Characters that once ended a link for redact_url(), leaving the rest of a password
#: shown: quotes, < > |, a space.
ODD_PASSWORD = "pw\"s3'c<r>e|t x"


@given(user=st.tuples(st.text(max_size=8), st.text(max_size=8)),
       password=st.tuples(st.text(max_size=12), st.text(max_size=12)),
       query=st.sampled_from(["", "?format=csv", "?token=t0k&gid=3"]),
       around=st.sampled_from(["{}", "link {} failed: no answer", "POPUP_CONTACTS='{}': x",
                               "a.csv|{}|b.vcf"]))
def test_a_links_user_and_password_never_show_whatever_they_hold(user, password, query,
                                                                  around):
    # Any character: quotes, < > |, spaces, @, and an unencoded / ? or # (which ends
    # a link's authority for urllib: such a password is never sent, but is printed).
    # The markers U5ER and PA55 stand for what must never show.
    user, password = "U5ER".join(user), "PA55".join(password)
    link = f"https://{user}:{password}@sheets.example/c.csv{query}"
    shown = ps.redact_url(around.format(link))
    for secret in ("U5ER", "PA55", "t0k"):
        assert secret not in shown, (secret, shown)
    assert shown.startswith(around.partition("{}")[0] + "https://***@"), shown
    if not any(c in f"{user}:{password}" for c in "?#"):
        expected = "https://***@sheets.example/c.csv" + query.replace("t0k", "***")
        assert shown == around.format(expected)
    # else its @ may be one of a query: what follows it is hidden as a query's values


@pytest.mark.parametrize("password", ["s3c r3t/x", "s3c#w r3t", "s3c r3t?x", "s3c@r3t/x y",
                                      "s3c y://r3t"])
def test_a_password_holding_a_space_and_a_slash_or_hash_never_shows(run_cli, state,
                                                                    password):
    # urllib refuses such a link (the download breaks off): the message names it.
    link = f"http://me:{password}@127.0.0.1:9/c.csv"
    check = run_cli(link, "--check", env=state)
    assert check.returncode == 2, check
    printed = check.stdout.decode() + check.stderr.decode()
    assert "http://***@" in printed and "broke off" in printed, printed
    assert "s3c" not in printed and "r3t" not in printed, printed


@pytest.mark.parametrize("link, site", [
    ("http://me:s3c r3t/x@127.0.0.1:9/c.csv", "http://127.0.0.1:9/"),
    ("https://me:s3c@r3t/x@sheets.example/c.csv", "https://sheets.example/"),
    ("https://me:s3c#r3t@sheets.example/c.csv", "https://***/"),
])
def test_health_names_only_the_site_of_a_link_whatever_its_password_holds(link, site):
    shown = ps.public_link(link)
    assert shown.startswith(site + " (link ") and "s3c" not in shown and "r3t" not in shown


def test_a_password_holding_quotes_brackets_a_bar_and_a_space_never_shows(
        start_server, site, state, run_cli):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    link = f"http://me:{ODD_PASSWORD}@127.0.0.1:{site.port}/c.csv"
    server = start_server(link, "--url-interval", "0.2", env=state)
    assert name_of(server, "0501111111") == "Alice Link"
    site.pages["/c.csv"] = Page("nope", status=500)
    wait_until(lambda: server.get("/health").status == 503, what="/health 503")
    wait_until(lambda: "500" in server.log_text(), what="the failed poll's log line")
    check = run_cli(link, "--check", env=state)
    assert check.returncode == 2, check
    shown = [server.log_text(), server.get("/health").text,
             check.stdout.decode(), check.stderr.decode()]
    assert "http://***@127.0.0.1" in shown[0] and "http://***@127.0.0.1" in shown[3], shown
    for text in shown:
        for piece in ("s3'c", "<r>", "e|t", "t x", ODD_PASSWORD):
            assert piece not in text, (piece, text)


# Downloading a link, against the loopback site ----------------------------------------


def test_a_link_is_served_and_its_changes_polled_with_etags(start_server, site, state):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    server = start_server(f"{site.url}/c.csv", "--url-interval", "0.2", env=state)
    assert name_of(server, "0501111111") == "Alice Link"
    wait_until(lambda: site.statuses("/c.csv").count(304) >= 2, what="304 answers")
    assert all(headers.get("If-None-Match") == '"v1"'
               for _path, headers in site.requests[1:]), site.requests
    site.pages["/c.csv"] = Page(BOB, etag='"v2"')
    wait_until(answers(server, "0502222222", "Bob Link"), what="Bob after the change")
    assert server.lookup("0501111111")["TOTAL"] == 0
    health = server.health()
    assert health["status"] == "ok" and health["contacts"] == 1, health
    assert health["source"].startswith(f"{site.url}/ (link "), health
    assert "c.csv" not in health["source"], health  # no part of the path: it may be a key


def test_last_modified_is_sent_back_and_a_304_keeps_the_contacts(start_server, site,
                                                                 state):
    site.pages["/c.csv"] = Page(ALICE, last_modified=1_700_000_000)
    server = start_server(f"{site.url}/c.csv", "--url-interval", "0.2", env=state)
    wait_until(lambda: site.statuses("/c.csv").count(304) >= 2, what="304 answers")
    assert site.requests[-1][1].get("If-Modified-Since") == \
        site.pages["/c.csv"].last_modified
    assert name_of(server, "0501111111") == "Alice Link"
    assert server.health()["status"] == "ok"


def test_a_failing_link_keeps_its_contacts_and_is_logged_once(start_server, site, state):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    server = start_server(f"{site.url}/c.csv", "--url-interval", "0.2", env=state)
    site.pages["/c.csv"] = Page("boom", status=500)
    wait_until(lambda: site.statuses("/c.csv").count(500) >= 4, what="several 500s")
    resp = server.get("/health")
    assert resp.status == 503, resp
    assert resp.json()["sources"][0]["last_error"].endswith("answered 500 Internal Server "
                                                            "Error"), resp
    assert name_of(server, "0501111111") == "Alice Link"
    assert server.log_text().count("answered 500") == 1, server.log_text()
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')  # back as it was: a 304
    wait_until(lambda: server.get("/health").status == 200, what="/health 200 again")
    assert "works again" in server.log_text()


def test_a_bad_download_keeps_the_last_good_contacts(start_server, site, state):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    server = start_server(f"{site.url}/c.csv", "--url-interval", "0.2", env=state)
    site.pages["/c.csv"] = Page("<html><body>Sign in</body></html>", etag='"login"',
                                content_type="text/html")
    wait_until(lambda: server.get("/health").status == 503, what="/health 503")
    assert name_of(server, "0501111111") == "Alice Link"
    site.pages["/c.csv"] = Page(BOB, etag='"v2"')
    wait_until(answers(server, "0502222222", "Bob Link"), what="Bob once mended")
    assert server.get("/health").status == 200


def test_a_slow_answer_beyond_the_timeout_fails(start_server, site, state):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    server = start_server(f"{site.url}/c.csv", "--url-interval", "0.2",
                          "--url-timeout", "0.5", env=state)
    site.pages["/c.csv"] = Page(BOB, etag='"v2"', delay=3)
    body = wait_until(lambda: (lambda r: r.json() if r.status == 503 else None)(
        server.get("/health")), what="/health 503 after a slow answer")
    assert body["last_error"].endswith("answer within --url-timeout"), body
    assert "(0.5 s)" in server.log_text()
    assert name_of(server, "0501111111") == "Alice Link"


def test_redirects_are_followed_within_a_bound(start_server, site, state):
    site.pages["/old"] = Page(status=302, location="/moved")
    site.pages["/moved"] = Page(status=301, location=f"{site.url}/new.csv")
    site.pages["/new.csv"] = Page(ALICE)
    server = start_server(f"{site.url}/old", "--url-interval", "0.2", env=state)
    assert name_of(server, "0501111111") == "Alice Link"
    site.pages["/old"] = Page(status=302, location="/old")  # a loop, now
    body = wait_until(lambda: (lambda r: r.json() if r.status == 503 else None)(
        server.get("/health")), what="/health 503 on a redirect loop")
    assert "redirects were not followed" in body["last_error"], body
    assert len(site.statuses("/old")) < 30
    site.pages["/old"] = Page(status=302, location="ftp://127.0.0.1/c.csv")
    wait_until(lambda: "not http or https" in server.get("/health").json()["last_error"],
               what="a redirect to ftp refused")
    assert name_of(server, "0501111111") == "Alice Link"


@pytest.fixture
def other_site():
    """A second site, on another loopback address: another host."""
    site = LinkSite("127.0.0.2").start()
    yield site
    site.stop()


def test_a_redirect_to_another_host_is_not_followed_unless_allowed(start_server, site,
                                                                    other_site, state):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    other_site.pages["/elsewhere.csv"] = Page(BOB)
    server = start_server(f"{site.url}/c.csv", "--url-interval", "0.2", env=state)
    assert name_of(server, "0501111111") == "Alice Link"
    site.pages["/c.csv"] = Page(status=302, location=f"{other_site.url}/elsewhere.csv")
    body = wait_until(lambda: (lambda r: r.json() if r.status == 503 else None)(
        server.get("/health")), what="/health 503 on a redirect to another host")
    assert "redirected to another host, which is not followed" in body["last_error"], body
    assert "(127.0.0.2: --link-redirect-hosts allows it)" in server.log_text()
    assert other_site.requests == []  # never asked
    assert name_of(server, "0501111111") == "Alice Link"  # the last good contacts stay
    server.stop()
    allowed = start_server(f"{site.url}/c.csv", "--link-redirect-hosts", "127.0.0.2",
                           env={"POPUP_STATE_DIR": str(state["POPUP_STATE_DIR"]) + "-2"})
    assert name_of(allowed, "0502222222") == "Bob Link"
    assert [path for path, _ in other_site.requests] == ["/elsewhere.csv"]


@pytest.mark.parametrize("link, new, hosts, followed", [
    ("http://127.0.0.1:8000/a", "http://127.0.0.1:9000/b", (), True),   # same host
    ("http://127.0.0.1:8000/a", "http://localhost:8000/b", (), False),  # another name
    ("http://127.0.0.1:8000/a", "http://localhost:8000/b", ("localhost",), True),
    ("https://Files.Example.com/a", "https://files.example.com./b", (), True),
    ("https://files.example.com/a", "http://169.254.169.254/latest", (), False),
    ("https://files.example.com/a", "https://a.cdn.example.net/b", ("*.cdn.example.net",),
     True),
    ("https://files.example.com/a", "https://cdn.example.net.evil.example/b",
     ("*.cdn.example.net",), False),
    ("https://files.example.com/a", "http://[::1]:81/b", ("[::1]",), True),
    ("https://docs.google.com/spreadsheets/d/x/export?format=csv",
     "https://doc-0s-7c-sheets.googleusercontent.com/export/x", (), True),
    ("https://docs.google.com/spreadsheets/d/x/export?format=csv",
     "https://accounts.google.com/ServiceLogin", (), False),
    ("https://drive.google.com/uc?id=x&export=download",
     "https://drive.usercontent.google.com/download?id=x", (), True),
    ("https://files.example.com/a", "https://x.googleusercontent.com/b", (), False),
])
def test_redirects_stay_on_the_links_own_host_and_those_allowed(link, new, hosts,
                                                                 followed):
    assert ps._Redirects(link, ps._host_names(",".join(hosts))).allows(new) is followed


@pytest.mark.parametrize("value", ["a b", "http://x.example", "x.example/path", "*", "*."])
def test_a_redirect_host_that_is_no_host_name_is_refused_at_start(run_cli, value):
    result = run_cli("--link-redirect-hosts", value, "--check")
    assert result.returncode == 2, result
    assert b"--link-redirect-hosts" in result.stderr or b"LINK_REDIRECT" in result.stderr, \
        result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("send_length", [True, False])
def test_an_oversized_body_is_refused_and_the_contacts_kept(start_server, site, state,
                                                            send_length):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    server = start_server(f"{site.url}/c.csv", "--url-interval", "0.2",
                          "--url-max-bytes", "4096", env=state)
    big = BOB + "".join(f"Person {n},Co,050-3{n:06d}\n" for n in range(2000))
    site.pages["/c.csv"] = Page(big, etag='"big"', send_length=send_length)
    body = wait_until(lambda: (lambda r: r.json() if r.status == 503 else None)(
        server.get("/health")), what="/health 503 on an oversized body")
    assert body["last_error"].endswith("more than --url-max-bytes"), body
    assert "--url-max-bytes (4,096" in server.log_text()
    assert name_of(server, "0501111111") == "Alice Link"
    assert server.lookup("0502222222")["TOTAL"] == 0


def test_a_google_sheets_shaped_export_is_read(start_server, site, state):
    # As Google does: the export redirects to googleusercontent.com, which sends the CSV.
    site.pages[f"/spreadsheets/d/{SHEET}/export?format=csv&gid=7"] = Page(
        status=307, location="/googleusercontent/export/abc")
    site.pages["/googleusercontent/export/abc"] = Page(
        "\ufeffשם,חברה,טלפון\nנועה כהן,אקמה,054-123-4567\n")
    server = start_server(f"{site.url}/spreadsheets/d/{SHEET}/export?format=csv&gid=7",
                          env=state)
    assert name_of(server, "0541234567") == "נועה כהן"


def test_secrets_of_a_link_never_show(start_server, site, state, run_cli):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    link = (f"http://me:{SECRETS[0]}@127.0.0.1:{site.port}/c.csv?token={SECRETS[1]}"
            f"&key={SECRETS[2]}")
    server = start_server(link, "--url-interval", "0.2", env=state)
    assert name_of(server, "0501111111") == "Alice Link"
    assert site.requests[0][1]["Authorization"] == "Basic bWU6cHctczNjcmV0"  # me:pw-s3cret
    site.pages["/c.csv"] = Page("nope", status=500)
    wait_until(lambda: server.get("/health").status == 503, what="/health 503")
    check = run_cli(link, "--check", env=state)
    assert check.returncode == 2, check
    shown = [server.log_text(), server.get("/health").text,
             check.stdout.decode(), check.stderr.decode()]
    assert "token=***" in shown[0] and "500" in shown[3], shown
    for text in shown:
        assert not any(secret in text for secret in SECRETS), text


def test_a_start_while_the_link_fails_serves_the_kept_download(start_server, site, state,
                                                              run_cli):
    site.pages["/c.csv"] = Page(ALICE, etag='"v1"')
    first = start_server(f"{site.url}/c.csv", env=state)
    assert name_of(first, "0501111111") == "Alice Link"
    first.stop()
    site.pages["/c.csv"] = Page("down", status=503)
    again = start_server(f"{site.url}/c.csv", env=state)
    assert name_of(again, "0501111111") == "Alice Link"
    assert "serving its copy downloaded at" in again.log_text()
    resp = again.get("/health")
    assert resp.status == 503 and "503" in resp.json()["last_error"], resp


def test_a_first_start_while_the_link_fails_says_why_in_one_line(site, state, run_cli):
    site.pages["/c.csv"] = Page("down", status=500)
    result = run_cli(f"{site.url}/c.csv?token={SECRETS[1]}", "--port", "0",
                     "--token", "", "--calls-db", "", env=state)
    assert result.returncode == 2, result
    lines = result.stderr.decode().strip().splitlines()
    assert lines[-1] == (f"popup_server: {site.url}/c.csv?token=***: the site answered "
                         "500 Internal Server Error"), lines
    assert "Traceback" not in result.stderr.decode()


@pytest.mark.parametrize("where", ["argument", "variable", "config file"])
def test_a_link_of_another_scheme_is_refused_without_its_password(run_cli, state,
                                                                  tmp_path, where):
    link = f"ftp://me:{SECRETS[0]}@127.0.0.1/c.csv"
    args, env = ["--check"], dict(state)
    if where == "argument":
        args.append(link)
    elif where == "variable":
        env["POPUP_CONTACTS"] = f"a.csv|{link}"
    else:
        (tmp_path / "popup.toml").write_text(f'contacts = ["a.csv", "{link}"]\n')
        args += ["--config", tmp_path / "popup.toml"]
    result = run_cli(*args, env=env)
    assert result.returncode == 2, result
    err = result.stderr.decode()
    assert "only http:// and https:// links" in err and SECRETS[0] not in err, err
    assert "ftp://***@127.0.0.1/c.csv" in err, err


def test_a_site_trickling_its_headers_is_cut_at_the_timeout(tmp_path):
    # A header line every 0.3 s: each read is quick, so only a deadline for the whole
    # answer ends it (before, the download, the poller and start-up waited forever).
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        connection, _ = listener.accept()
        with connection:
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.3):
                try:
                    connection.sendall(b"X-Slow: yes\r\n")
                except OSError:
                    return
    site = threading.Thread(target=trickle, daemon=True)
    site.start()
    outcome = []

    def download():
        try:
            ps.download_link(f"http://127.0.0.1:{listener.getsockname()[1]}/c.csv",
                             tmp_path / "c.csv", timeout=1.5, max_bytes=1 << 20)
        except ps.DownloadFailed as error:
            outcome.append(str(error))
    downloader = threading.Thread(target=download, daemon=True)
    downloader.start()
    downloader.join(30)
    stop.set()
    listener.close()
    assert not downloader.is_alive(), "the download never ended"
    assert outcome == ["no whole answer within --url-timeout (1.5 s)"], outcome


@pytest.mark.parametrize("old, new, kept", [
    ("http://u:p@127.0.0.1:8000/a", "http://127.0.0.1:8000/b", True),
    ("http://u:p@127.0.0.1:8000/a", "https://127.0.0.1:8000/b", True),
    ("http://u:p@127.0.0.1:8000/a", "http://127.0.0.1:8001/b", False),  # another port
    ("https://u:p@example.com/a", "http://example.com/b", False),  # down to plain http
    ("https://u:p@example.com/a", "https://example.com:443/b", True),
    ("https://u:p@example.com/a", "https://other.example.com/b", False),
])
def test_a_links_password_follows_a_redirect_only_to_the_same_site(old, new, kept):
    assert ps._same_site(old, new) is kept


# Several sources served as one --------------------------------------------------------

COLUMNS = ("name", "company", "phone")


def customers(tmp_path, *rows):
    return write_contacts(tmp_path / "book" / "customers.csv", rows or [
        ("Alice Customer", "Acme", "050-111-1111"),
        ("Office Customers", "Acme", "072-277-6772")], header=COLUMNS)


def test_files_of_several_kinds_and_a_link_are_served_as_one(start_server, site, state,
                                                             tmp_path):
    csv_path = customers(tmp_path)
    vcf_path, _people = write_iphone(tmp_path)  # Dan Levi holds 072-277-6772 too
    site.pages["/suppliers.csv"] = Page("name,company,phone\nBob Supplier,Bolts,"
                                        "050-222-2222\nSupplier Desk,Bolts,0722776772\n")
    link = f"{site.url}/suppliers.csv"
    server = start_server(csv_path, vcf_path, link, env=state)
    shared = server.lookup("+972722776772")
    assert (shared["CLIENTNAME"], shared["TOTAL"]) == ("Office Customers", 3), shared
    assert server.lookup("0541234567")["CLIENTNAME"] == "נועה כהן"
    assert server.lookup("0502222222")["CLIENTNAME"] == "Bob Supplier"
    status, body = health_of(server)
    assert status == 200 and body["contacts"] == 2 + 3 + 2, body
    assert [(s["source"], s["contacts"], s["last_error"]) for s in body["sources"]] == [
        ("customers.csv", 2, None), ("Contacts.vcf", 3, None),
        (ps.public_link(f"{site.url}/suppliers.csv"), 2, None)], body
    assert body["sources"][2]["source"].startswith(f"{site.url}/ (link "), body
    assert "suppliers" not in body["sources"][2]["source"], body  # no part of the path
    assert all(s["loaded_at"] for s in body["sources"]), body
    assert str(tmp_path) not in server.get("/health").text

    # The first source named wins the pop-up (after the first server: one a state folder).
    server.stop()
    other = start_server(link, csv_path, env=state)
    assert other.lookup("0722776772")["CLIENTNAME"] == "Supplier Desk"


def test_a_broken_source_keeps_its_contacts_while_the_others_update(start_server,
                                                                    tmp_path):
    first = customers(tmp_path)
    second = write_contacts(tmp_path / "book" / "phone.csv",
                            [("Bob Phone", "", "050-222-2222")], header=COLUMNS)
    server = start_server(first, second, "--reload-interval", "0.2")
    first.write_text("name,company\nAlice Customer,Acme\n", encoding="utf-8")  # no phone
    status, body = wait_until(lambda: (lambda h: h if h[0] == 503 else None)(
        health_of(server)), what="/health 503 once the first file broke")
    assert body["sources"][0]["last_error"].startswith("customers.csv: "), body
    assert body["sources"][1]["last_error"] is None, body
    assert body["contacts_file"] == ("1 of 2 sources fail to load; still serving their "
                                     "last good contacts"), body
    write_contacts(second, [("Bob Phone", "", "050-222-2222"),
                            ("Carol Phone", "", "050-333-3333")], header=COLUMNS)
    wait_until(lambda: server.lookup("0503333333")["CLIENTNAME"] == "Carol Phone",
               what="the second file's new contact")
    assert server.lookup("0501111111")["CLIENTNAME"] == "Alice Customer"
    assert health_of(server)[0] == 503
    customers(tmp_path)
    wait_until(lambda: health_of(server)[0] == 200, what="/health 200 once mended")
    assert health_of(server)[1]["contacts"] == 4


@pytest.mark.parametrize("how", ["variable", "config list", "config string"])
def test_several_sources_from_the_variable_or_the_config_file(start_server, tmp_path, how):
    first = customers(tmp_path)
    second = write_contacts(tmp_path / "book" / "phone.csv",
                            [("Bob Phone", "", "050-222-2222")], header=COLUMNS)
    args, env = [], {}
    if how == "variable":
        env["POPUP_CONTACTS"] = f"{first}|{second}"
    else:
        value = f'["{first}", "{second}"]' if how == "config list" \
            else f'"{first} | {second}"'
        (tmp_path / "popup.toml").write_text(f"contacts = {value}\n", encoding="utf-8")
        args = ["--config", tmp_path / "popup.toml"]
    server = start_server(None, *args, env=env)
    assert server.lookup("0501111111")["CLIENTNAME"] == "Alice Customer"
    assert server.lookup("0502222222")["CLIENTNAME"] == "Bob Phone"
    assert len(server.health()["sources"]) == 2


def test_check_reports_each_source_and_the_total(run_cli, tmp_path):
    first = customers(tmp_path)
    vcf_path, _people = write_iphone(tmp_path)
    result = run_cli("--check", first, "--region", "IL", vcf_path)  # options between
    out = result.stdout.decode()
    assert result.returncode == 0, result
    assert f"== {first}\nfile: {first}\n" in out and f"== {vcf_path}\n" in out, out
    assert "2 contacts can be found" in out and "3 contacts can be found" in out, out
    assert out.rstrip().endswith("== in total: 5 contacts can be found in 2 of 2 sources, "
                                 "6 distinct numbers"), out  # 072-277-6772 in both

    missing = tmp_path / "gone.csv"
    result = run_cli(first, missing, "--check")
    assert result.returncode == 2, result
    assert "in 1 of 2 sources" in result.stdout.decode()
    assert result.stderr.decode().strip() == f"popup_server: {missing}: no such file", result


def test_template_columns_of_several_sources_fill_each_contact_link(start_server, tmp_path):
    first = write_contacts(tmp_path / "a.csv", [("Ann", "", "050-111-1111", "7", "north")],
                           header=("name", "company", "phone", "id", "region"))
    second = write_contacts(tmp_path / "b.csv", [("Ben", "south", "050-222-2222")],
                            header=("name", "Region", "phone"))
    third = write_contacts(tmp_path / "c.csv", [("Cat", "", "050-333-3333")], header=COLUMNS)
    server = start_server(first, second, third,
                          "--url-template", "https://crm.example.com/{id}?r={region}")
    urls = [server.lookup(phone)["URL"] for phone in
            ("0501111111", "0502222222", "0503333333")]
    assert urls == ["https://crm.example.com/7?r=north", "https://crm.example.com/?r=south",
                    "https://crm.example.com/?r="], urls


def test_the_program_adds_a_last_source_and_reloads_it_at_once(tmp_path):
    first = customers(tmp_path)
    config = ps.parse_config([str(first), "--token", "", "--calls-db", ""], environ={})
    holder = ps.ContactsHolder(config)
    added = write_contacts(tmp_path / "state" / "additions.csv",
                           [("Added Alice", "", "050-111-1111"),
                            ("Added Dana", "", "050-444-4444")], header=COLUMNS)
    with holder.watching():
        holder.add_source(added)
        match = holder.index.lookup("0501111111")
        assert (match.total, match.contact.name) == (2, "Alice Customer")  # added last
        assert holder.index.lookup("0504444444").contact.name == "Added Dana"
        write_contacts(added, [("Added Dana", "", "050-444-4444"),
                               ("Added Eve", "", "050-555-5555")], header=COLUMNS)
        assert holder.reload_source(added) is True  # at once: no settle wait
        assert holder.index.lookup("0505555555").contact.name == "Added Eve"
        assert holder.index.lookup("0501111111").total == 1
    health = holder.health()
    assert [s["source"] for s in health["sources"]] == ["customers.csv", "additions.csv"]
    assert health["contacts"] == 4, health
