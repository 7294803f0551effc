"""The examples docs/production.md gives work as written: its proxy examples (nginx and
Caddy) give https:// links, and its systemd unit keeps the server's state where
ProtectSystem=strict lets it write."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import urllib.parse
from pathlib import Path

import pytest

from conftest import SAMPLE_CONTACTS

PRODUCTION = Path(__file__).resolve().parent.parent / "docs" / "production.md"


# The proxy examples (docs/production.md) ---------------------------------------------


#: What nginx puts in place of the variables the docs' block uses, for a browser at
#: 198.51.100.7 asking https://popup.example.com/ (no X-Forwarded-For of its own).
NGINX_VARIABLES = {"$proxy_add_x_forwarded_for": "198.51.100.7", "$remote_addr":
                   "198.51.100.7", "$host": "popup.example.com", "$http_host":
                   "popup.example.com", "$scheme": "https", "$server_port": "443"}


#: What Caddy 2.5 and later send a backend by themselves (reverse_proxy's documented
#: defaults), the Host passed through as received.
CADDY_HEADERS = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "popup.example.com", "Host": "popup.example.com"}


def _docs_block(start):
    text = PRODUCTION.read_text(encoding="utf-8")
    section = text[text.index("## TLS in front (Caddy or nginx)"):]
    block = section[section.index(start) + len(start):]
    return block[:block.index("```")]


def _nginx_headers():
    headers = {}
    for name, value in re.findall(r"^\s*proxy_set_header\s+(\S+)\s+(.+?);",
                                  _docs_block("```nginx\n"), re.M):
        for variable in re.findall(r"\$\w+", value):
            assert variable in NGINX_VARIABLES, f"the test does not know {variable}"
            value = value.replace(variable, NGINX_VARIABLES[variable])
        headers[name] = value
    return headers


def _caddy_headers():
    block = _docs_block("```\n")
    assert re.search(r"reverse_proxy 127\.0\.0\.1:8080", block)
    assert "header_up" not in block  # nothing changes Caddy's own headers
    return CADDY_HEADERS


@pytest.mark.parametrize("headers", [_nginx_headers, _caddy_headers])
def test_the_docs_proxy_examples_give_https_links(start_server, headers):
    sent = headers()
    server = start_server(SAMPLE_CONTACTS, "--trusted-proxy", "127.0.0.1")
    answer = server.get("/popup", {"phone": "0722776772"}, headers=sent).json()
    assert answer["URL"].startswith("https://popup.example.com/caller/+972722776772?e="), \
        (sent, answer)
    assert urllib.parse.urlsplit(answer["URL"]).scheme == "https"


# The systemd unit (docs/production.md) ----------------------------------------------


def _systemd_unit():
    """The [Service] settings of the docs' unit, as a dict."""
    block = PRODUCTION.read_text(encoding="utf-8")
    block = block[block.index("## systemd (Linux)"):]
    block = block[block.index("```ini\n") + 7:]
    unit = configparser.ConfigParser(interpolation=None)
    unit.optionxform = str  # systemd's keys are CamelCase
    unit.read_string(block[:block.index("```")])
    return dict(unit["Service"])


def test_the_docs_systemd_unit_keeps_its_state_where_protectsystem_lets_it_write(
        tmp_path):
    """The unit's command line as systemd runs it: ProtectSystem=strict leaves it only
    its StateDirectory= (and any ReadWritePaths=) to write, and the user's home is
    read-only. The system's folders are mapped into tmp_path; the home stays empty."""
    unit = _systemd_unit()
    assert unit["ProtectSystem"] == "strict" and unit["User"] == "popup", unit
    root, home = tmp_path / "root", tmp_path / "home"
    writable = [f"/var/lib/{unit['StateDirectory']}",
                *unit.get("ReadWritePaths", "").split()]
    state = root / writable[0].lstrip("/")
    state.mkdir(parents=True, mode=int(unit.get("StateDirectoryMode", "0755"), 8))
    home.mkdir()
    python, program, *args = shlex.split(unit["ExecStart"])
    assert python == f"{unit['WorkingDirectory']}/.venv/bin/python", python
    assert program == "popup_server.py", program
    args = [str(root / arg.lstrip("/")) if arg.startswith("/") else arg for arg in args]
    contacts = Path(args[0])
    contacts.parent.mkdir(parents=True)
    import openpyxl
    book = openpyxl.Workbook()
    book.active.append(["Name", "Company", "Phone"])
    book.active.append(["Avi Barak", "Barak Ltd", "03-555-6789"])
    book.save(contacts)
    if os.geteuid() != 0:
        home.chmod(0o555)  # as the unit has it (root would write anyway: see below)
    from conftest import start_as_a_user_would as _start_as_a_user_would
    server = _start_as_a_user_would(tmp_path, *args, env={
        "HOME": str(home), "XDG_DATA_HOME": str(home / ".local" / "share")})
    try:
        assert f"state folder: {state}\n" in server.log_text(), server.log_text()
        token = (state / ".popup-token").read_text().strip()
        answer = server.lookup("035556789", token=token, ivrid="unit-call",
                               statusCall="Ringing")
        assert answer["CLIENTNAME"] == "Avi Barak", answer
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log_text()
    assert {p.name for p in state.iterdir()} >= {
        ".popup-token", "page-secret", "office-password", "calls.sqlite", "server.lock"}
    assert not list(home.rglob("*")), list(home.rglob("*"))  # nothing outside it
