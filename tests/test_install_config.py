"""Issue 15: --version, the --config file (precedence, errors) and the installed layout.

Everything runs the real program: ``python popup_server.py ...`` as a process, a TOML
file on disk, HTTP on a free loopback port. What the built wheel does once installed
is checked by .ci/installed-check.sh (it needs a wheel build and PyPI).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from conftest import (MODULE, SAMPLE_CONTACTS, free_port, http_request, subprocess_env,
                      write_contacts)

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


# --------------------------------------------------------------------------
# --version
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# --config: values, precedence
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# --config: errors
# --------------------------------------------------------------------------

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


def test_help_shows_the_config_file_and_the_precedence(run_cli):
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.decode("utf-8", "replace").split())
    for words in ("--config FILE", "POPUP_CONFIG", "--version",
                  "Each setting comes from the first of: its flag, its environment "
                  "variable (POPUP_...), the --config file, its default."):
        assert words in out, (words, out)


# --------------------------------------------------------------------------
# The installed layout: what a wheel installs, run without building one
# --------------------------------------------------------------------------

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
