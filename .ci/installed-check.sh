#!/usr/bin/env bash
# CI: the installed command, as a user gets it. Builds a wheel of this checkout,
# installs it into a fresh venv outside the checkout, and runs `popup-server` from
# there: --version, --check on the sample shipped in the package and on a given file,
# and real pop-up lookups against a started server (loopback, free port). Any failure
# exits 1.
set -uo pipefail
checkout="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
server_pid=""

stop_server() {  # SIGTERM, as systemd sends; the server exits 0 after closing cleanly
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null
  local status=0
  wait "$server_pid" || status=$?
  server_pid=""
  return "$status"
}
cleanup() { stop_server >/dev/null 2>&1; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "installed-check: $*" >&2; exit 1; }

echo "installed-check: building the wheel and installing it into a fresh venv"
python3 -m pip wheel -q --no-deps -w "$work/wheel" "$checkout" || fail "building the wheel failed"
wheel="$(ls "$work"/wheel/popup_server-*.whl)" || fail "no wheel was built"
python3 -m venv "$work/venv" || fail "python3 -m venv failed"
"$work/venv/bin/pip" install -q --disable-pip-version-check -c "$checkout/requirements.txt" \
  "$wheel" || fail "installing the wheel failed"

bin="$work/venv/bin"
py="$bin/python"
# Away from the checkout, with a home of its own: what the command writes by default
# lands there, and nothing may land in site-packages.
mkdir -p "$work/home" "$work/run"
cd "$work/run"
export HOME="$work/home"
unset XDG_DATA_HOME
env_keep=$(env | grep -o '^POPUP_[A-Z_]*' || true)
for name in $env_keep; do unset "$name"; done
state="$HOME/.local/share/popup-server/state"  # one state folder per user

site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
module="$("$py" -c 'import popup_server; print(popup_server.__file__)')"
[ "$module" = "$site/popup_server.py" ] || fail "popup_server imported from $module, not from $site"
[ -f "$site/popup_server_data/views/calls.tpl" ] || fail "views/calls.tpl is not in the package"
[ -f "$site/popup_server_data/views/texts.toml" ] || fail "views/texts.toml (the pages' texts) is not in the package"
[ -f "$site/popup_server_data/data/contacts.csv" ] || fail "the sample contacts are not in the package"
for generic in views data; do
  [ ! -e "$site/$generic" ] || fail "the wheel put a top-level '$generic' into site-packages"
done

want="popup-server $(sed -n 's/^__version__ = "\(.*\)".*/\1/p' "$checkout/popup_server.py")"
got="$("$bin/popup-server" --version)" || fail "popup-server --version failed"
[ "$got" = "$want" ] || fail "popup-server --version printed '$got', expected '$want'"
echo "installed-check: $got"

out="$("$bin/popup-server" --check)" || fail "popup-server --check on the shipped sample failed: $out"
grep -qF "file: $site/popup_server_data/data/contacts.csv" <<<"$out" \
  || fail "--check did not read the sample shipped in the package: $out"
grep -q "^12 contacts can be found" <<<"$out" || fail "the shipped sample did not load whole: $out"

printf 'name,company,phone\nAda Lovelace,Engines,03-555-1234\n' >"$work/run/given.csv"
out="$("$bin/popup-server" "$work/run/given.csv" --check)" || fail "popup-server FILE --check failed: $out"
grep -q "^1 contacts can be found" <<<"$out" || fail "--check on a given file: $out"

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_server LOG ARGS...: starts popup-server on a free loopback port, waits (at most
# 60 s) until /health answers; sets $port and $server_pid.
start_server() {
  local log="$1"; shift
  port="$(free_port)"
  "$bin/popup-server" --host 127.0.0.1 --port "$port" "$@" >"$log" 2>&1 &
  server_pid=$!
  for _ in $(seq 120); do
    kill -0 "$server_pid" 2>/dev/null || { server_pid=""; fail "popup-server exited at start-up: $(cat "$log")"; }
    "$py" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=1)" \
      2>/dev/null && return 0
    sleep 0.5
  done
  fail "popup-server did not answer /health within 60 s: $(cat "$log")"
}

# lookup TOKEN: one pop-up request for the sample's John Doe, and the calls page.
lookup() {
  "$py" - "$port" "$1" <<'PY' || fail "the pop-up lookup against the installed command failed"
import json, sys, urllib.request
port, token = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
with urllib.request.urlopen(f"{base}/popup?token={token}&phone=0722776772"
                            "&statusCall=Ringing&ivrid=ci-1", timeout=10) as answer:
    body = json.load(answer)
assert body["STATUS"] == "OK" and body["CLIENTNAME"] == "John Doe", body
with urllib.request.urlopen(f"{base}/calls?token={token}", timeout=10) as page:
    html = page.read().decode("utf-8")
assert page.status == 200 and "<html" in html.lower(), html[:300]
print(f"installed-check: /popup answered {body}; the calls page rendered")
PY
}

# 1. A token given, calls recorded where an installed command keeps them by default.
start_server "$work/server-1.log" --token ci-token
lookup ci-token
stop_server || fail "popup-server did not exit 0 on SIGTERM: $(cat "$work/server-1.log")"
"$py" - "$state/calls.sqlite" <<'PY' || fail "the call was not recorded in $state/calls.sqlite"
import sqlite3, sys
count = sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM events").fetchone()[0]
assert count >= 1, count
PY

# 2. No token given: the made token is kept beside the calls, not in site-packages.
start_server "$work/server-2.log"
[ -s "$state/.popup-token" ] || fail "the made token is not in $state: $(cat "$work/server-2.log")"
lookup "$(cat "$state/.popup-token")"
stop_server || fail "popup-server did not exit 0 on SIGTERM: $(cat "$work/server-2.log")"

written="$(find "$site/popup_server_data" -type f ! -name '*.tpl' ! -name texts.toml ! -name contacts.csv)"  # what the wheel ships
[ -z "$written" ] || fail "the command wrote into site-packages: $written"
echo "installed-check: passed"
