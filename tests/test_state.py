"""The server's own files, and what its first start says: one state folder (--state-dir;
by default one per user, under XDG_DATA_HOME) holding the token, the page secret, the
password hash and the calls, locked while a server runs and its owner's only; an
earlier version's per-port folder, token file and calls database picked up once
(copied, never lost); and the start-up output's closing block, saying what to give
Voicenter and the office, the password when just made, never a guessed address."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import popup_server as ps
from conftest import (MODULE, SAMPLE_CONTACTS, LoggedIn, ServerHandle, caller_page_path,
                      free_port, http_request, post_caller_form, printed_password,
                      start_as_a_user_would,
                      subprocess_env, wait_until, write_contacts)

JOHN = ["John Doe", "Voicenter", "072-277-6772"]
OLD_TOKEN = "Qm9fR2l2ZVRoaXNUb2tlblRvVm9pY2VudGVy"


# The state folder ---------------------------------------------------------------------


def test_the_state_folder_holds_the_servers_files_owner_only_and_is_printed(tmp_path):
    state = tmp_path / "the-state"
    server = start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, "--state-dir", state)
    try:
        log = server.wait_for_log("status:")
        assert f"state folder: {state}" in log
        assert f"  Office pages:            http://127.0.0.1:{server.port}/  (on this " \
            "machine; sign in with the office password)" in log
    finally:
        server.stop()
    assert {p.name for p in state.iterdir()} >= {
        ".popup-token", "page-secret", "office-password", "calls.sqlite"}
    if os.name != "nt":
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        for name in (".popup-token", "page-secret", "office-password"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name


def _user_env(tmp_path, name="xdg"):
    data_home = tmp_path / name
    return data_home, {"XDG_DATA_HOME": str(data_home), "HOME": str(tmp_path / "home")}


def _office_day(server, token, password):
    """What an office keeps in its state: a call, an added contact, a signed link.
    Returns the link's path."""
    assert server.lookup("0722776772", token=token, ivrid="kept-call-1",
                         statusCall="Hangup")["CLIENTNAME"] == "John Doe"
    url = server.lookup("0509999871", token=token)["URL"]
    assert post_caller_form(server, url, "/contact", {"name": "Kept Addition",
                                           "phone": "050-999-9871"}).status == 303
    client = LoggedIn(server, password)
    wait_until(lambda: "kept-call-1" in client.get("/calls.csv").text, what="the call")
    return caller_page_path(url)


def _everything_kept(server, token, password, link_path):
    assert server.lookup("0722776772", token=token)["CLIENTNAME"] == "John Doe"
    assert server.lookup("0509999871", token=token)["CLIENTNAME"] == "Kept Addition"
    client = LoggedIn(server, password)  # the same password
    assert "kept-call-1" in client.get("/calls.csv").text
    page = server.get(link_path)  # a link sent before: the same page secret
    assert page.status == 200 and "Kept Addition" in page.text, page


def test_the_default_is_one_folder_per_user_and_a_moved_port_keeps_everything(tmp_path):
    data_home, env = _user_env(tmp_path)
    state = data_home / "popup-server" / "state"
    path = write_contacts(tmp_path / "a" / "contacts.csv", [JOHN])
    first = start_as_a_user_would(tmp_path, path, env=env)
    try:
        assert f"state folder: {state}" in first.wait_for_log("state folder")
        token = (state / ".popup-token").read_text().strip()
        password = printed_password(first)
        link_path = _office_day(first, token, password)
    finally:
        first.stop()
    moved = tmp_path / "b" / "contacts.csv"
    moved.parent.mkdir()
    shutil.move(path, moved)  # the office moves its file, and the server to 8081
    second = start_as_a_user_would(tmp_path, moved, env=env)
    try:
        assert second.port != first.port
        assert f"state folder: {state}" in second.log_text()
        assert "(made now" not in second.log_text()
        _everything_kept(second, token, password, link_path)
    finally:
        second.stop()
    assert not (moved.parent / ".popup-token").exists()
    assert not list((data_home / "popup-server").glob("port-*"))


def test_a_second_server_on_the_same_folder_stops_at_once_naming_the_first(
        tmp_path, run_cli):
    _data_home, env = _user_env(tmp_path)
    state = _data_home / "popup-server" / "state"
    first = start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, env=env)
    try:
        second = run_cli(SAMPLE_CONTACTS, "--host", "127.0.0.1", "--port",
                         str(free_port()), env={**env, "POPUP_STATE_DIR": ""})
        assert second.returncode == 2, second
        lines = second.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in lines[0], lines
        assert str(state) in lines[0] and f"process {first.proc.pid}" in lines[0]
        assert "--state-dir" in lines[0] and "remove" not in lines[0]
        assert "file:" not in second.stdout.decode() + second.stderr.decode()  # at once
        assert first.health()["status"] == "ok"  # the first is untouched
        told = run_cli(SAMPLE_CONTACTS, "--port", "0", "--state-dir", state)
        assert told.returncode == 2 and f"process {first.proc.pid}" in told.stderr.decode()
    finally:
        first.stop()
    third = start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, env=env)  # free again
    third.stop()


def test_two_first_starts_at_once_leave_one_server_and_its_printed_password(tmp_path):
    data_home, env = _user_env(tmp_path)
    state = data_home / "popup-server" / "state"
    log_dir = tmp_path / "raced"
    log_dir.mkdir()
    procs = []
    for n in range(2):
        port = free_port()
        out, err = log_dir / f"{n}.stdout", log_dir / f"{n}.stderr"
        argv = [sys.executable, str(MODULE), str(SAMPLE_CONTACTS), "--host", "127.0.0.1",
                "--port", str(port)]
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(argv, cwd=tmp_path, stdout=stdout, stderr=stderr,
                                    stdin=subprocess.DEVNULL,
                                    env=subprocess_env(env))
        procs.append(ServerHandle(proc, port, out, err, argv))
    try:
        def settled():
            running = [h for h in procs if h.proc.poll() is None]
            if len(running) != 1:
                return None
            try:
                return http_request("GET", running[0].url + "/health", timeout=1)
            except OSError:
                return None
        wait_until(settled, timeout=30, what="one server to run and one to stop")
        (winner,) = [h for h in procs if h.proc.poll() is None]
        (loser,) = [h for h in procs if h is not winner]
        assert loser.proc.wait(timeout=10) == 2
        refused = loser.stderr_text().strip().splitlines()
        assert len(refused) == 1 and str(state) in refused[0], refused
        assert f"process {winner.proc.pid}" in refused[0] and "remove" not in refused[0]
        assert "password" not in loser.log_text()
        password = printed_password(winner)
        assert LoggedIn(winner, password).get("/calls").status == 200
    finally:
        for handle in procs:
            handle.stop()
    assert [p.name for p in state.iterdir() if p.name == "office-password"] == [
        "office-password"]


def test_a_state_folder_that_cannot_be_made_is_one_line_and_exit_2(run_cli, tmp_path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("x")
    result = run_cli(SAMPLE_CONTACTS, "--host", "127.0.0.1", "--port", "0",
                     "--state-dir", in_the_way / "state")
    assert result.returncode == 2, result
    err = result.stderr.decode()
    assert f"{in_the_way / 'state'}: cannot make the state folder" in err
    assert "Traceback" not in err


def test_files_the_server_writes_are_its_owners_only_in_a_shared_state_folder(
        start_server, tmp_path):
    state = tmp_path / "shared-state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)  # whatever the umask: a folder others may read
    server = start_server(SAMPLE_CONTACTS, "--state-dir", state,
                          "--calls-db", state / "calls.sqlite")
    server.get("/popup", params={"phone": "0722776772", "ivrid": "u1", "status": "Ringing"})
    wait_until(lambda: (state / "calls.sqlite").exists(), what="the calls database")
    for path in state.iterdir():
        assert path.stat().st_mode & 0o077 == 0, (path.name, oct(path.stat().st_mode))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700  # tightened, and said so
    assert f"made the state folder {state} its owner's only (it was mode 755)" \
        in server.log_text()


def test_a_state_folder_every_user_shares_is_refused_in_one_line(run_cli, tmp_path):
    shared = tmp_path / "like-tmp"
    shared.mkdir()
    shared.chmod(0o1777)  # sticky and open to all, as /tmp
    result = run_cli(SAMPLE_CONTACTS, "--host", "127.0.0.1", "--port", "0",
                     "--state-dir", shared)
    assert result.returncode == 2, result
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and f"{shared}: the state folder is shared with other users" \
        in lines[0], lines
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777 and not list(shared.iterdir())


# What an earlier version kept elsewhere -----------------------------------------------


def _port_folder_of_an_earlier_version(tmp_path, data_home, port):
    """A per-port state folder as the version before kept it (its default was
    <user data>/popup-server/port-PORT), made by the server with that folder given,
    holding a day of the office. Returns (token, password, link path)."""
    folder = data_home / "popup-server" / f"port-{port}"
    path = write_contacts(tmp_path / f"office-{port}" / "contacts.csv", [JOHN])
    server = start_as_a_user_would(tmp_path, path, "--state-dir", folder)
    try:
        token = (folder / ".popup-token").read_text().strip()
        password = printed_password(server)
        link_path = _office_day(server, token, password)
    finally:
        server.stop()
    return path, token, password, link_path


def _tree(folder):
    """Every file of `folder` and its bytes (not the lock, nor SQLite's own -wal and
    -shm, which a reader of the database may leave beside it)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != "server.lock"
            and not p.name.endswith(("-wal", "-shm"))}


def test_an_upgrade_adopts_the_per_port_folder_of_its_port_once_and_deletes_nothing(
        tmp_path):
    data_home, env = _user_env(tmp_path)
    port = free_port()
    path, token, password, link_path = _port_folder_of_an_earlier_version(
        tmp_path, data_home, port)
    _port_folder_of_an_earlier_version(tmp_path, data_home, port + 1)  # another office's
    old = data_home / "popup-server" / f"port-{port}"
    before = _tree(old)
    state = data_home / "popup-server" / "state"
    upgraded = start_as_a_user_would(tmp_path, path, env=env, port=port)
    try:
        assert f"copied the state folder of an earlier version, {old}, into {state}" \
            in upgraded.log_text()
        assert "password, shown only this once" not in upgraded.log_text()
        _everything_kept(upgraded, token, password, link_path)
    finally:
        upgraded.stop()
    assert _tree(old) == before  # left as it was
    again = start_as_a_user_would(tmp_path, path, env=env)  # another port: the same folder
    try:
        assert "earlier version" not in again.log_text()  # said once
        _everything_kept(again, token, password, link_path)
    finally:
        again.stop()


def test_an_upgrade_adopts_the_only_per_port_folder_else_none_saying_why(tmp_path):
    data_home, env = _user_env(tmp_path, "one")
    port = free_port()
    path, token, password, link_path = _port_folder_of_an_earlier_version(
        tmp_path, data_home, port)
    moved = start_as_a_user_would(tmp_path, path, env=env)  # on another port
    try:
        assert f"copied the state folder of an earlier version, " \
               f"{data_home / 'popup-server' / f'port-{port}'}" in moved.log_text()
        _everything_kept(moved, token, password, link_path)
    finally:
        moved.stop()
    several, env = _user_env(tmp_path, "several")
    for other in (port, port + 1):
        _port_folder_of_an_earlier_version(tmp_path, several, other)
    fresh = start_as_a_user_would(tmp_path, path, env=env, port=free_port())
    try:
        log = fresh.log_text()
        assert "copied the state folder" not in log
        assert "none of them for port" in log and "--state-dir" in log
        assert f"port-{port}" in log and f"port-{port + 1}" in log
        assert fresh.get("/popup", {"phone": "0722776772", "token": token}).status == 403
    finally:
        fresh.stop()


def test_an_old_token_beside_the_contacts_file_is_copied_once_and_keeps_the_url(
        start_server, tmp_path):
    path = write_contacts(tmp_path / "book" / "contacts.csv", [JOHN])
    old = path.parent / ".popup-token"
    old.write_text(OLD_TOKEN + "\n")
    old.chmod(0o600)
    state = tmp_path / "state"
    first = start_server(path, "--state-dir", state, disable_token=False)
    assert first.lookup("0722776772", token=OLD_TOKEN)["CLIENTNAME"] == "John Doe"
    assert f"kept the token of {old} in {state / '.popup-token'}" in first.log_text()
    first.stop()
    assert (state / ".popup-token").read_text().strip() == OLD_TOKEN
    assert old.read_text() == OLD_TOKEN + "\n"  # left as it was
    old.unlink()  # even gone, the state folder keeps the URL alive
    second = start_server(path, "--state-dir", state, disable_token=False)
    assert second.lookup("0722776772", token=OLD_TOKEN)["CLIENTNAME"] == "John Doe"
    assert "kept the token of" not in second.log_text()  # logged once


def test_token_and_token_file_still_win_over_an_old_token(start_server, tmp_path):
    path = write_contacts(tmp_path / "book" / "contacts.csv", [JOHN])
    old = path.parent / ".popup-token"
    old.write_text(OLD_TOKEN + "\n")
    old.chmod(0o600)
    elsewhere = tmp_path / "secrets" / "token"
    server = start_server(path, "--state-dir", tmp_path / "s1", "--token-file", elsewhere,
                          disable_token=False)
    made = wait_until(lambda: elsewhere.is_file() and elsewhere.read_text().strip(),
                      what="the new token file")
    assert made != OLD_TOKEN
    assert server.get("/popup", {"phone": "0722776772", "token": OLD_TOKEN}).status == 403
    given = start_server(path, "--state-dir", tmp_path / "s2", "--token", "given-token-1234567")
    assert given.lookup("0722776772", token="given-token-1234567")["TOTAL"] == 1
    assert not (tmp_path / "s2" / ".popup-token").exists()


def _checkout_copy(tmp_path):
    """The program laid out as a checkout in tmp_path/checkout (module, views, data)."""
    checkout = tmp_path / "checkout"
    (checkout / "data").mkdir(parents=True)
    shutil.copy(MODULE, checkout / "popup_server.py")
    shutil.copytree(MODULE.parent / "views", checkout / "views")
    shutil.copy(SAMPLE_CONTACTS, checkout / "data" / "contacts.csv")
    return checkout


def test_an_old_calls_database_beside_the_program_is_copied_once_and_kept(tmp_path):
    checkout = _checkout_copy(tmp_path)
    module = checkout / "popup_server.py"
    old_db = checkout / "data" / "calls.sqlite"
    common = ("--token", "", "--office-password", "")
    # Today's default: the calls recorded in data/calls.sqlite beside the program.
    before = start_as_a_user_would(tmp_path, "--calls-db", old_db, "--state-dir",
                                    tmp_path / "unused", *common, module=module)
    before.get("/popup", {"phone": "0722776772", "ivrid": "old-call-1",
                          "statusCall": "Ringing"})
    wait_until(lambda: "John Doe" in before.get("/calls.csv").text, what="the old call")
    before.stop()
    old_bytes = old_db.read_bytes()

    state = tmp_path / "state"
    after = start_as_a_user_would(tmp_path, "--state-dir", state, *common, module=module)
    try:
        assert "John Doe" in after.get("/calls.csv").text
        assert f"copied the call history of {old_db} into {state / 'calls.sqlite'}" \
            in after.log_text()
    finally:
        after.stop()
    assert old_db.read_bytes() == old_bytes  # left as it was
    again = start_as_a_user_would(tmp_path, "--state-dir", state, *common, module=module)
    try:
        assert "John Doe" in again.get("/calls.csv").text
        assert "copied the call history" not in again.log_text()  # logged once
    finally:
        again.stop()
    # --calls-db still wins: nothing is copied for a server told where to record.
    told = start_as_a_user_would(tmp_path, "--state-dir", tmp_path / "state2", "--calls-db",
                                  tmp_path / "new.sqlite", *common, module=module)
    try:
        assert "John Doe" not in told.get("/calls.csv").text
    finally:
        told.stop()
    assert not (tmp_path / "state2" / "calls.sqlite").exists()


# The first start ----------------------------------------------------------------------


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
