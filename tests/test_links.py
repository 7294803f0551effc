"""Issue 13 item 5: signed links to one caller's page (an HMAC bound to the number
and an expiry, never the Voicenter token), and the 403 page saying what went wrong."""
import time
import urllib.parse

import popup_server as ps
from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS

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


def test_an_expired_link_is_refused_saying_so(start_server, tmp_path):
    server, secret = _server_and_secret(start_server, tmp_path, "--link-days", "7")
    old = ps.CallerLinks(secret, 7).link(server.url, "+972722776772",
                                         now=time.time() - 8 * 86400)
    resp = server.get(old[len(server.url):])
    assert resp.status == 403 and 'data-reason="expired"' in resp.text
    assert "valid for 7 days" in resp.text and "John" not in resp.text


def test_a_signed_in_browser_opens_any_callers_page(start_server, tmp_path, log_in):
    server, _secret = _server_and_secret(start_server, tmp_path)
    client = log_in(server)
    assert client.get("/caller/+972541234567").status == 200


def test_public_url_must_be_an_http_address(run_cli):
    for bad in ("popup.example.com", "ftp://x", "https://x/?a=1", "https://u@x"):
        result = run_cli(SAMPLE_CONTACTS, "--public-url", bad, "--check")
        assert result.returncode == 2 and b"--public-url" in result.stderr, (bad, result)
