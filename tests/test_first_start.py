"""Issue 21, "First start, said plainly": the start-up output ends with a short block
saying what to give Voicenter and the office, the password when just made, and the
state folder; the address Voicenter needs is never guessed (no host name, no
127.0.0.1 given as if Voicenter could reach it)."""
import re
import socket
from pathlib import Path

import popup_server as ps
from conftest import SAMPLE_CONTACTS, wait_until
from test_state_dir import _start_as_a_user_would as start_as_a_user_would


def _closing_block(server):
    """The lines from "Ready. To set up:" to the end of the start-up output."""
    text = wait_until(lambda: "State folder:" in server.stderr_text()
                      and server.stderr_text(), what="the closing block")
    block = text[text.index("Ready. To set up:"):].splitlines()
    return block[:[n for n, line in enumerate(block) if "State folder:" in line][0] + 1], text


def _login(server, password):
    return server.post_form("/login", {"password": password, "next": "/"})


def test_a_first_start_ends_with_what_to_do_and_the_password_once(tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    server = start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, env=env)
    try:
        block, output = _closing_block(server)
        assert output.rstrip().endswith(block[-1]), "the block is not the end"
        assert len(block) <= 8, block
        fields = dict(re.match(r"  ([^:]+?): +(.*)$", line).groups() for line in block[1:]
                      if re.match(r"  [A-Z][\w' -]+: {2,}", line))
        state = Path(fields["State folder"])
        token = (state / ".popup-token").read_text().strip()
        assert fields["Voicenter's pop-up URL"] == f"http://ADDRESS/popup?token={token}"
        assert fields["Voicenter's CDR URL"] == f"http://ADDRESS/cdr?token={token}"
        assert fields["Office pages"].startswith(f"http://127.0.0.1:{server.port}/  (on "
                                                 "this machine; sign in")
        assert any("listens on 127.0.0.1 only" in line and "--public-url" in line
                   for line in block)
        password = re.match(r"(\S+)  \(made now and shown only this once",
                            fields["Office password"]).group(1)
        assert output.count(password) == 1  # in the block only
        assert (state / "office-password").is_file()
        assert _login(server, password).status == 303
        hostname = socket.gethostname()
        assert not any(hostname in line for line in output.splitlines()
                       if "Voicenter" in line or "Office pages" in line)
    finally:
        server.stop()
    again = start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, "--public-url",
                                  "https://popup.example.com", env=env, port=server.port)
    try:
        block, output = _closing_block(again)
        assert f"  Voicenter's pop-up URL:  https://popup.example.com/popup?token={token}" \
            in block
        assert "  Office pages:            https://popup.example.com/  (sign in with the " \
            "office password)" in block
        assert password not in output and not any("ADDRESS" in line for line in block)
        assert any(line.startswith("  Office password:         the one made at the first "
                                   "start") for line in block)
    finally:
        again.stop()


def test_listening_everywhere_says_what_the_address_must_be_never_the_host_name():
    config = ps.parse_config(["--host", "0.0.0.0", "--state-dir", "/srv/popup",
                              "--token", "T0ken-long-enough-1234"], {})
    lines = ps.setup_lines(config, 8080, "made-password-1")
    text = "\n".join(lines)
    assert "  Voicenter's pop-up URL:  http://ADDRESS:8080/popup?token=T0ken-long-enough-1234" \
        in lines
    assert "ADDRESS: this server's address as the agents' browsers and Voicenter reach " \
        "it" in text
    assert socket.gethostname() not in text and "127.0.0.1" not in text
    assert "  State folder:            /srv/popup" in lines
    assert "made-password-1  (made now" in text
