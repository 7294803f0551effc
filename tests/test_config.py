"""Starting the program: each setting from its flag, else its POPUP_* variable, else the
--config file, else its default; --help and --version; a setting it cannot use
refused in one line naming it, with exit status 2; the layout a wheel installs (its
package data read, nothing written there; what the built wheel does once installed
is checked by .ci/installed-check.sh); and the internals of waitress and bottle the
module reaches into, still there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import popup_server as ps
from conftest import (MODULE, SAMPLE_CONTACTS, assert_json_error, free_port,
                      http_request, subprocess_env, write_contacts)

ROOT = MODULE.parent


def _stderr_lines(done) -> list[str]:
    return [line for line in done.stderr.decode("utf-8", "replace").splitlines()
            if line.strip()]


def _report_value(done, label: str) -> str:
    """The value of one `label: value` line of a --check report."""
    out = done.stdout.decode("utf-8", "replace")
    assert done.returncode == 0, (done.returncode, out, done.stderr)
    for line in out.splitlines():
        if line.startswith(label + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label!r} line in:\n{out}")


# --version and --help -----------------------------------------------------------------


def test_version_is_the_changelogs_first_entry_and_the_packages(run_cli):
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    first_entry = re.search(r"^## (\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(
        encoding="utf-8"), re.M).group(1)
    assert done.stdout.decode() == f"popup-server {first_entry}\n"
    # The wheel takes its version from the module: one place to change it.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "popup_server.__version__"}

ALL_FLAGS = [
    "--host", "--port", "--region", "--url-template", "--no-match-url", "--match-digits",
    "--encoding", "--delimiter", "--sheet", "--name-column", "--company-column",
    "--phone-columns", "--url-column", "--token", "--token-file", "--allow-ip",
    "--trusted-proxy", "--max-body", "--reload-interval", "--log-numbers", "--threads",
    "--calls-db", "--calls-keep-days", "--check",
]


def test_help_exits_zero_and_mentions_every_flag(run_cli):
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("utf-8", "replace")
    missing = [flag for flag in ALL_FLAGS if flag not in out]
    assert not missing, (missing, out)


def test_help_shows_the_config_file_and_the_precedence(run_cli):
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.decode("utf-8", "replace").split())
    for words in ("--config FILE", "POPUP_CONFIG", "--version",
                  "Each setting comes from the first of: its flag, its environment "
                  "variable (POPUP_...), the --config file, its default."):
        assert words in out, (words, out)


# A flag, else its variable, else the --config file, else the default ------------------


@pytest.fixture
def columns_file(tmp_path):
    """Contacts whose name could come from four columns: which one a --check report
    names shows which setting won."""
    return write_contacts(tmp_path / "contacts.csv",
                          [["Default", "File", "Env", "Flag", "Acme", "03-555-1234"]],
                          header=("name", "from file", "from env", "from flag",
                                  "company", "phone"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_setting_comes_from_flag_then_environment_then_file_then_default(
        run_cli, tmp_path, columns_file):
    config = _write(tmp_path / "popup.toml",
                    f'contacts = "{columns_file.as_posix()}"\n'
                    'name-column = "from file"\n')
    env = {"POPUP_NAME_COLUMN": "from env"}

    assert _report_value(run_cli(columns_file, "--check"), "name column") == "name"
    assert _report_value(run_cli("--config", config, "--check"),
                         "name column") == "from file"
    assert _report_value(run_cli("--config", config, "--check", env=env),
                         "name column") == "from env"
    assert _report_value(run_cli("--config", config, "--check", "--name-column",
                                 "from flag", env=env), "name column") == "from flag"
    # A variable set but empty is not set: the file's value stands.
    assert _report_value(run_cli("--config", config, "--check",
                                 env={"POPUP_NAME_COLUMN": ""}), "name column") == "from file"


def test_popup_config_names_the_file_and_the_flag_wins_over_it(run_cli, tmp_path,
                                                                 columns_file):
    by_env = _write(tmp_path / "env.toml", 'name_column = "from env"\n')
    by_flag = _write(tmp_path / "flag.toml", 'name_column = "from flag"\n')
    env = {"POPUP_CONFIG": str(by_env)}
    assert _report_value(run_cli(columns_file, "--check", env=env),
                         "name column") == "from env"
    assert _report_value(run_cli(columns_file, "--check", "--config", by_flag, env=env),
                         "name column") == "from flag"


def test_list_values_and_underscore_keys_are_read(run_cli, tmp_path):
    path = write_contacts(tmp_path / "contacts.csv", [["Ada", "03-555-1234", "052-555-1234",
                                                        "04-555-1234"]],
                          header=("name", "home", "mobile", "work"))
    config = _write(tmp_path / "popup.toml", 'phone_columns = ["mobile", "work"]\n')
    assert _report_value(run_cli(path, "--config", config, "--check"),
                         "phone columns") == "mobile, work"


def test_the_server_serves_with_the_files_settings(start_server, tmp_path):
    contacts = write_contacts(tmp_path / "office" / "contacts.csv",
                              [["Ada Lovelace", "Engines", "03-555-1234"]])
    config = _write(tmp_path / "popup.toml", "\n".join([
        "# as a service would keep it",
        f'contacts = "{contacts.as_posix()}"',
        'url-template = "https://crm.example.com/from-file/{phone}"',
        'allow-ip = ["127.0.0.1", "10.0.0.0/8"]',
        "max-body = 2048",
        "log-numbers = true",
        ""]))
    srv = start_server(None, "--config", config)
    answer = srv.lookup("035551234")
    assert answer["CLIENTNAME"] == "Ada Lovelace"
    assert answer["URL"] == "https://crm.example.com/from-file/035551234"
    assert srv.health()["source"] == "contacts.csv"
    big = srv.post_form(data={"phone": "035551234", "pad": "x" * 4096})
    assert big.status == 413, big

    env_wins = start_server(None, "--config", config,
                            env={"POPUP_URL_TEMPLATE": "https://crm.example.com/env/{phone}"})
    assert env_wins.lookup("035551234")["URL"] == "https://crm.example.com/env/035551234"


def test_an_allowlist_from_the_file_refuses_other_clients(start_server, tmp_path):
    config = _write(tmp_path / "popup.toml", 'allow_ip = "203.0.113.0/24"\n')
    srv = start_server(SAMPLE_CONTACTS, "--config", config)
    assert srv.get("/popup", {"phone": "0722776772"}).status == 403


def test_popup_port_variable_sets_the_port(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    port = free_port()
    srv = start_server(path, env={"POPUP_PORT": str(port)})
    assert srv.port == port
    assert srv.lookup("0722776772")["CLIENTNAME"] == "John Doe"


def test_port_flag_wins_over_popup_port_variable(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    env_port, flag_port = free_port(), free_port()
    while flag_port == env_port:
        flag_port = free_port()
    srv = start_server(path, "--port", str(flag_port), env={"POPUP_PORT": str(env_port)})
    assert srv.lookup("0722776772")["CLIENTNAME"] == "John Doe"
    with pytest.raises(OSError):
        http_request("GET", f"http://127.0.0.1:{env_port}/health", timeout=2)


def test_url_template_and_no_match_url_variables_apply(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, env={"POPUP_URL_TEMPLATE": "https://env.example/c/{phone}",
                                  "POPUP_NO_MATCH_URL": "https://env.example/new/{phone}"})
    assert srv.lookup("0722776772")["URL"] == "https://env.example/c/0722776772"
    assert srv.lookup("0509999871")["URL"] == "https://env.example/new/0509999871"


def test_url_template_flag_wins_over_its_variable(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, "--url-template", "https://flag.example/{phone}",
                       env={"POPUP_URL_TEMPLATE": "https://env.example/{phone}"})
    assert srv.lookup("0722776772")["URL"] == "https://flag.example/0722776772"


def test_token_variable_applies_and_token_flag_wins_over_it(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, env={"POPUP_TOKEN": "envsecret"})
    assert srv.get("/popup", {"phone": "0722776772"}).status == 403
    assert srv.lookup("0722776772", token="envsecret")["CLIENTNAME"] == "John Doe"

    srv2 = start_server(path, "--token", "flagsecret", env={"POPUP_TOKEN": "envsecret"})
    assert srv2.get("/popup", {"phone": "0722776772", "token": "envsecret"}).status == 403
    assert srv2.lookup("0722776772", token="flagsecret")["CLIENTNAME"] == "John Doe"


def test_max_body_variable_applies(start_server, make_contacts):
    path = make_contacts([["John Doe", "Voicenter", "072-277-6772"]])
    srv = start_server(path, env={"POPUP_MAX_BODY": "1024"})
    small = srv.post_json("/popup", {"phone": "0722776772"})
    assert small.status == 200, small
    big = srv.post_json("/popup", {"phone": "0722776772", "pad": "x" * 2000})
    assert_json_error(big, 413)


# A setting it cannot use: one line, exit status 2 -------------------------------------


@pytest.mark.parametrize("text, line, words", [
    pytest.param('# popup-server\nport = 8080\nprot = 9000\n', 3,
                 ['unknown key "prot"', 'did you mean "port"'], id="unknown-key"),
    pytest.param('host = "127.0.0.1"\n\nport = "8080"\n', 3,
                 ["port", "whole number", "not text"], id="text-for-a-number"),
    pytest.param('log-numbers = "yes"\n', 1, ["log-numbers", "true or false"],
                 id="text-for-a-switch"),
    pytest.param('allow-ip = ["10.0.0.0/8", 10]\n', 1, ["allow-ip", "list"],
                 id="number-in-a-list"),
    pytest.param('region = "IL"\nthreads = 0\n', 2, ["threads", "between 1 and 256"],
                 id="value-the-option-refuses"),
    pytest.param('region = "IL"\n\n[server]\nport = 8080\n', 3,
                 ['unknown key "server"', "top of the file"], id="a-table"),
    pytest.param('url-template = "a"\nurl_template = "b"\n', 2, ["given twice"],
                 id="hyphen-and-underscore-both"),
    pytest.param('port = 8080\nhost = \n', 2, ["not a valid TOML file"], id="not-toml"),
])
def test_a_bad_config_file_is_one_line_naming_file_key_and_line(run_cli, tmp_path,
                                                                 text, line, words):
    config = _write(tmp_path / "service.toml", text)
    done = run_cli(SAMPLE_CONTACTS, "--config", config, "--check")
    lines = _stderr_lines(done)
    assert done.returncode == 2, (done.returncode, lines)
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert "service.toml" in lines[0] and f"line {line}" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not done.stdout.strip(), done.stdout  # nothing was loaded


def test_a_missing_config_file_is_one_line_naming_it(run_cli, tmp_path):
    done = run_cli(SAMPLE_CONTACTS, "--check",
                   env={"POPUP_CONFIG": str(tmp_path / "nowhere.toml")})
    lines = _stderr_lines(done)
    assert done.returncode == 2 and len(lines) == 1, lines
    assert "nowhere.toml" in lines[0] and "cannot read" in lines[0], lines


def _assert_one_line_startup_error(done, name: str) -> None:
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, (done.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert name in lines[0], stderr


def test_missing_contacts_file_exits_2_with_one_line_naming_it(run_cli, tmp_path):
    missing = tmp_path / "no-such-dir" / "missing-contacts.csv"
    done = run_cli(missing, "--host", "127.0.0.1", "--port", free_port(),
                   "--token", "", "--calls-db", "")
    _assert_one_line_startup_error(done, "missing-contacts.csv")


def test_file_without_phone_column_exits_2_with_one_line_naming_it(run_cli, make_contacts):
    path = make_contacts([["Alice", "Acme"], ["Bob", "Beta"]], header=("name", "company"),
                         name="nophones.csv")
    done = run_cli(path, "--host", "127.0.0.1", "--port", free_port(),
                   "--token", "", "--calls-db", "")
    _assert_one_line_startup_error(done, "nophones.csv")


def test_an_agents_file_that_cannot_be_read_is_one_line(run_cli, tmp_path):
    bad = tmp_path / "agents.csv"
    bad.write_text("101\n", encoding="utf-8")
    result = run_cli(SAMPLE_CONTACTS, "--agents", bad, "--check")
    assert result.returncode == 2
    assert f"{bad}, line 1: write agents as two columns" in result.stderr.decode()


def test_an_unknown_time_zone_is_refused_in_one_line(run_cli):
    result = run_cli(SAMPLE_CONTACTS, "--timezone", "Mars/Olympus", "--check")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1].endswith(
        "'Mars/Olympus' is not a time zone this machine knows (e.g. Asia/Jerusalem, "
        "Europe/London, UTC)")


def test_public_url_must_be_an_http_address(run_cli):
    for bad in ("popup.example.com", "ftp://x", "https://x/?a=1", "https://u@x"):
        result = run_cli(SAMPLE_CONTACTS, "--public-url", bad, "--check")
        assert result.returncode == 2 and b"--public-url" in result.stderr, (bad, result)


# The installed layout: what a wheel installs, run without building one ----------------


def test_a_copy_laid_out_as_installed_uses_its_package_data_and_writes_nothing_there(
        tmp_path):
    """site-packages/popup_server.py + popup_server_data/{views,data}: the sample and
    the templates are found there, and the calls and the made token go to the user's
    data folder, never into the package."""
    site = tmp_path / "site-packages"
    site.mkdir()
    shutil.copy(MODULE, site / "popup_server.py")
    shutil.copytree(ROOT / "views", site / "popup_server_data" / "views")
    (site / "popup_server_data" / "data").mkdir()
    shutil.copy(SAMPLE_CONTACTS, site / "popup_server_data" / "data" / "contacts.csv")
    shipped = sorted(p for p in (site / "popup_server_data").rglob("*") if p.is_file())
    home = tmp_path / "home"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = subprocess_env({"HOME": str(home), "XDG_DATA_HOME": str(home / "data")})
    argv = [sys.executable, str(site / "popup_server.py")]

    check = subprocess.run(argv + ["--check"], cwd=run_dir, env=env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60)
    assert _report_value(check, "file") == str(
        site / "popup_server_data" / "data" / "contacts.csv")

    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(argv + ["--host", "127.0.0.1", "--port", str(port)],
                                cwd=run_dir, env=env, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                http_request("GET", f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.1)
        state = home / "data" / "popup-server" / "state"
        token = (state / ".popup-token").read_text(encoding="utf-8").strip()
        base = f"http://127.0.0.1:{port}"
        found = http_request("GET", f"{base}/popup?token={token}&phone=0722776772"
                             "&ivrid=layout-1&statusCall=Ringing")
        assert found.json()["CLIENTNAME"] == "John Doe", found
        page = http_request("GET", f"{base}/login?next=/calls")
        assert page.status == 200 and "<html" in page.text.lower(), page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()
    assert (state / "calls.sqlite").is_file()
    assert sorted(p for p in (site / "popup_server_data").rglob("*")
                  if p.is_file()) == shipped
    assert not (site / "views").exists() and not (site / "data").exists()
    assert not (run_dir / "calls.sqlite").exists()


# The internals of waitress and bottle the module reaches into -------------------------


def test_the_installed_waitress_has_every_internal_the_patches_use():
    assert ps.waitress_differences() == []


def test_another_waitress_version_or_a_missing_internal_is_reported():
    missing = (("waitress.channel", "HTTPChannel", ("outbuf_lock", "no_such_attribute")),
               ("waitress.server", "NoSuchServer", ()))
    assert ps.waitress_differences("4.0.0", missing) == [
        "waitress 4.0.0, not 3.0.x", "HTTPChannel has no no_such_attribute",
        "waitress.server.NoSuchServer is gone"]


def test_bottle_keeps_headers_where_popup_writes_them():
    assert ps.bottle_headers_direct()


def test_the_package_allows_only_the_waitress_series_the_patches_were_written_for():
    # Another series would run with stock waitress: pop-ups sharing the office's
    # threads. The package must not let `pip install` pick one.
    project = tomllib.loads((MODULE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    wanted = Requirement(next(spec for spec in project["project"]["dependencies"]
                              if spec.startswith("waitress")))
    major, minor = (int(part) for part in ps._WAITRESS_SERIES.split(".")[:2])
    assert wanted.specifier.contains(f"{major}.{minor}.2")
    assert not wanted.specifier.contains(f"{major}.{minor + 1}.0")
    assert not wanted.specifier.contains(f"{major + 1}.0.0")
