"""Issue 14 item 6: the server's own files in one state folder (--state-dir), its
default keyed by the port, and an upgrade picking up the token file beside the
contacts file and data/calls.sqlite beside the program (copied, never lost)."""
import os
import shutil
import stat
import subprocess
import sys

import conftest
from conftest import MODULE, SAMPLE_CONTACTS, wait_until, write_contacts

JOHN = ["John Doe", "Voicenter", "072-277-6772"]
OLD_TOKEN = "Qm9fR2l2ZVRoaXNUb2tlblRvVm9pY2VudGVy"


def _start_as_a_user_would(tmp_path, *args, module=MODULE, env=None, port=None):
    """The server started with only `args` (no --state-dir, --calls-db or --token
    added, unlike the fixtures), on a loopback port; stopped by the caller."""
    port = port or conftest.free_port()
    log_dir = tmp_path / "server-logs"
    log_dir.mkdir(exist_ok=True)
    number = len(list(log_dir.glob("*.stdout")))
    out, err = log_dir / f"raw-{number}.stdout", log_dir / f"raw-{number}.stderr"
    argv = [sys.executable, str(module), *map(str, args), "--host", "127.0.0.1",
            "--port", str(port)]
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=stdout, stderr=stderr,
                                stdin=subprocess.DEVNULL, env=conftest.subprocess_env(env))
    handle = conftest.ServerHandle(proc, port, out, err, argv)

    def answers():
        assert proc.poll() is None, handle.log_text()
        try:
            return conftest.http_request("GET", handle.url + "/health", timeout=1)
        except OSError:
            return None
    wait_until(answers, what="the server to start")
    return handle


def test_the_state_folder_holds_the_servers_files_owner_only_and_is_printed(tmp_path):
    state = tmp_path / "the-state"
    server = _start_as_a_user_would(tmp_path, SAMPLE_CONTACTS, "--state-dir", state)
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


def test_the_default_follows_the_port_not_the_contacts_file(tmp_path):
    data_home = tmp_path / "xdg"
    env = {"XDG_DATA_HOME": str(data_home), "HOME": str(tmp_path / "home")}
    path = write_contacts(tmp_path / "a" / "contacts.csv", [JOHN])
    first = _start_as_a_user_would(tmp_path, path, env=env)
    port = first.port
    try:
        state = data_home / "popup-server" / f"port-{port}"
        assert f"state folder: {state}" in first.wait_for_log("state folder")
        token = (state / ".popup-token").read_text().strip()
        assert (state / "calls.sqlite").exists()
    finally:
        first.stop()
    moved = tmp_path / "b" / "contacts.csv"
    moved.parent.mkdir()
    shutil.move(path, moved)  # the office moves its file: the URL must keep working
    second = _start_as_a_user_would(tmp_path, moved, env=env, port=port)
    other = _start_as_a_user_would(tmp_path, moved, env=env)  # another port
    try:
        assert second.lookup("0722776772", token=token)["CLIENTNAME"] == "John Doe"
        other_token = (data_home / "popup-server" / f"port-{other.port}" /
                       ".popup-token").read_text().strip()
        assert other_token != token
        assert other.get("/popup", {"phone": "0722776772", "token": token}).status == 403
    finally:
        second.stop()
        other.stop()
    assert not (moved.parent / ".popup-token").exists()


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
    before = _start_as_a_user_would(tmp_path, "--calls-db", old_db, "--state-dir",
                                    tmp_path / "unused", *common, module=module)
    before.get("/popup", {"phone": "0722776772", "ivrid": "old-call-1",
                          "statusCall": "Ringing"})
    wait_until(lambda: "John Doe" in before.get("/calls.csv").text, what="the old call")
    before.stop()
    old_bytes = old_db.read_bytes()

    state = tmp_path / "state"
    after = _start_as_a_user_would(tmp_path, "--state-dir", state, *common, module=module)
    try:
        assert "John Doe" in after.get("/calls.csv").text
        assert f"copied the call history of {old_db} into {state / 'calls.sqlite'}" \
            in after.log_text()
    finally:
        after.stop()
    assert old_db.read_bytes() == old_bytes  # left as it was
    again = _start_as_a_user_would(tmp_path, "--state-dir", state, *common, module=module)
    try:
        assert "John Doe" in again.get("/calls.csv").text
        assert "copied the call history" not in again.log_text()  # logged once
    finally:
        again.stop()
    # --calls-db still wins: nothing is copied for a server told where to record.
    told = _start_as_a_user_would(tmp_path, "--state-dir", tmp_path / "state2", "--calls-db",
                                  tmp_path / "new.sqlite", *common, module=module)
    try:
        assert "John Doe" not in told.get("/calls.csv").text
    finally:
        told.stop()
    assert not (tmp_path / "state2" / "calls.sqlite").exists()


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
