#!/usr/bin/env python3
"""popup-server: pop up the caller's details from the office's contacts file.

Voicenter calls a URL of your choosing on every phase of a call (Ringing, Talking,
Hangup); this server answers with the caller's name, company and CRM link, looked up
in the office's contacts (CSV, Excel, LibreOffice, a phone's vCard or a link to one)
that it loads at start-up and reloads whenever they change; it keeps the day's calls
for the office's pages, and with the account's code calls Voicenter back (Click2Call,
the extension list, the Call Log).

Run it (installed with pip or pipx, the command is `popup-server`, the same program):
    python popup_server.py [CONTACTS ...] [options]       (python popup_server.py --help)
    python popup_server.py contacts.xlsx --check          (report how the file loads)
    python popup_server.py --config /etc/popup-server.toml
    python popup_server.py password                       (set the office password)
    python popup_server.py --version

Routes (ROUTES, in chapter V, is the table):
    GET|POST /popup          the pop-up's answer: {"STATUS", "TOTAL", "CLIENTNAME",
                             "COMPANY", "URL"}; OPTIONS /popup, the CORS preflight
    GET /health              status for monitors (never contact data, never a secret)
    POST /cdr                Voicenter's CDR after each call ({"Err": 0, ...})
    GET / or /calls          the day's calls, missed callers first (HTML)
    GET /calls.csv           the day's calls as CSV; POST /calls/mark, a call's mark
    GET /sent                what Voicenter sent: the last pop-ups and CDRs, as read
    GET /caller/<number>     a caller's page (a pop-up's signed link, or the login);
                             POST .../contact and .../call, its forms
    POST /callback           call a caller back (Click2Call; POST /callback/extension
                             chooses this browser's own extension)
    GET|POST /login, POST /logout   the office pages' login

The module reads top to bottom in six chapters, each using only itself and those
above: I. foundations, II. configuration, III. contacts, IV. calls, V. the web,
VI. running (docs/code.md has the map).

Options: each one in the settings table OPTIONS (chapter II) also has an environment
variable, POPUP_ + its name in capitals (POPUP_PORT for --port, POPUP_CONTACTS for the
sources), and a key in the --config file (POPUP_CONFIG), TOML, named as the option
without its dashes (port = 8080, url-template = "..."); `--help` lists them all with
their defaults. A setting comes from the first of: its flag, its variable, the config
file, its default.
"""
from __future__ import annotations

import argparse
import atexit
import binascii
import bisect
import codecs
import collections
import contextlib
import ctypes
import csv
import dataclasses
import datetime as dt
import difflib
import enum
import errno
import base64
import functools
import gc
import hashlib
import heapq
import hmac
import http.client
import io
import itertools
import ipaddress
import json
import logging
import math
import operator
import os
import random
import re
import secrets
import shutil
import socket
import sqlite3
import struct
import stat
import sys
import tempfile
import threading
import time
import tomllib
import types
import typing
import unicodedata
import zoneinfo
from pathlib import Path
import urllib.error
import urllib.parse
import urllib.request
from urllib.parse import quote, unquote, urlencode, urlsplit

import bottle
import numpy as np
import pandas as pd
import phonenumbers

log = logging.getLogger("popup_server")

__version__ = "1.0.0"  # the one place the version is written (pyproject.toml reads it)

#: What a program embedding this module may use: load a file and look callers up
#: (load_index(...).lookup(caller_id)), normalise a number, or run the server.
__all__ = [
    "load_index", "normalize_number", "load_report", "ContactIndex", "Contact", "Match",
    "Config", "DEFAULTS", "parse_config", "create_app", "ContactsHolder", "CallRecorder",
    "create_server", "main", "ExitStatus", "PopupError", "ConfigError",
    "ContactsFileError", "__version__",
]


###############################################################################
###############################################################################
# I. Foundations ##############################################################
###############################################################################
###############################################################################
# Constants, errors and the small helpers that every chapter below uses.


###############################################################################
# Constants ###################################################################
###############################################################################
# Paths, limits and texts several chapters share (a section's own constants open it).

HERE = Path(__file__).resolve().parent

#: A checkout has views/ and data/ beside the module; an installed wheel keeps them in
#: popup_server_data/ beside it, so that site-packages gets no folder named "views".
PACKAGE_DATA = HERE / "popup_server_data"
INSTALLED = PACKAGE_DATA.is_dir()
RESOURCES = PACKAGE_DATA if INSTALLED else HERE
DEFAULT_CONTACTS = RESOURCES / "data" / "contacts.csv"

#: Bottle caches compiled templates by the identity of this list: one list, one cache.
VIEWS = [str(RESOURCES / "views")]
TOKEN_FILE_NAME = ".popup-token"
STATE_FOLDER_NAME = "state"  # the default state folder, in user_data_dir()
CALLS_FILE_NAME = "calls.sqlite"
ENV_PREFIX = "POPUP_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"

#: A caller id with fewer digits than this is an extension or junk, never looked up;
#: a cell with fewer is reported as "too short" rather than indexed.
MIN_NUMBER_DIGITS = 5

#: E.164 allows 15 digits; longer runs of digits are not one phone number.
MAX_NUMBER_DIGITS = 15

#: How many lines of skipped rows / unusable numbers --check and the log show.
REPORT_LIMIT = 20
JSON_TYPE = "application/json; charset=utf-8"

LANGUAGES = ("en", "he")
RIGHT_TO_LEFT = ("he",)


class ExitStatus(enum.IntEnum):
    """What main() returns, for scripts and service managers."""

    SUCCESS = 0
    NO_CONTACTS = 1   # --check: the file loads, but no contact has a usable number
    ERROR = 2         # a setting, the contacts file, or the port cannot be used


###############################################################################
# Errors ######################################################################
###############################################################################
# One base error, raised in domain code, turned into one line or a JSON answer at the
# edges.


class PopupError(Exception):
    """Base of every error this program reports to a person in one line."""


class ConfigError(PopupError):
    """An option or environment variable has a value that cannot work."""


class ContactsFileError(PopupError):
    """The contacts file cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


###############################################################################
# Text fit to show ############################################################
###############################################################################
# What may reach a log, a page or the terminal: clipped, escaped, numbers masked, and
# links without the secrets they hold.


def _clip(text, width=60):
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _loggable(value, width=80):
    text = value if type(value) is str else str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= width else text[: width - 1] + "…"


def _mask(number, log_numbers):
    if not number:
        return "-"
    if log_numbers:
        return _loggable(number)
    digits = number if number.isdigit() else "".join(ch for ch in number if ch.isdigit())
    return "*" * (len(digits) - 3) + digits[-3:] if digits else "-"


#: Query parameters whose values may be shown; any other value may be a secret
#: (token=, key=, sig=, ...) and is shown as ***.
_HARMLESS_QUERY_KEYS = frozenset({"format", "output", "gid", "usp", "single", "range",
                                  "sheet"})
_LINK_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: A link's host, path, query and fragment in a text: up to a space, the sources'
#: separator (a URL carries it only encoded) or the next link.
_AUTHORITY = re.compile(r"[^/?#]*")
_LINK_REST = re.compile(r"(?:(?![A-Za-z][A-Za-z0-9+.-]*://)[^\s|])*")


def redact_url(text):
    """`text` with every link in it safe to show (logs, --check, errors): its user name
    and password, and every query or fragment value but a few harmless ones (format,
    gid, ...), become ***. The one function that hides a link's secrets.

    The user name and password are found whatever characters they hold (quotes, < > |,
    spaces, @ / ? #): they run to the last @ of the text after the link's start
    (_credentials_end()). Text that only looks like them is hidden too (an @ in a
    query, a later link's password): hiding too much is safe, too little is not."""
    text, shown, at = str(text), [], 0
    while (start := _LINK_START.search(text, at)) is not None:
        shown.append(text[at:start.start()])
        rest = start.end()
        after = _credentials_end(text, rest)
        tail = _LINK_REST.match(text, after).end()
        if _past_the_authority(text[rest:after]):  # what follows the @ may be a query
            shown.append(text[start.start():rest] + "***@" + _redact_query(text[after:tail]))
        else:
            shown.append(_redact_link(text[start.start():rest] + (
                "***@" if after > rest else "") + text[after:tail]))
        at = max(tail, start.end())
    shown.append(text[at:])
    return "".join(shown)


def _credentials_end(text, start):
    """Where the user:password@ of the link whose authority begins at `start` ends
    (just after its @), or `start` when it has none: the last @ after `start`, as a
    password may hold any character. Urllib ends a link's authority at its first / ?
    or #: a password holding one unencoded is never sent, but is still not shown."""
    return text.rfind("@", start) + 1 or start


def _past_the_authority(credentials):
    """Whether the text taken as a link's credentials holds a ? or #: its @ may then
    be one of a query or fragment, whose values the text after it may go on with."""
    return "?" in credentials or "#" in credentials


def _redact_link(link):
    scheme, _, rest = link.partition("://")
    cut = min([rest.find(mark) for mark in "/?#" if mark in rest] or [len(rest)])
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    tail, hashed, fragment = tail.partition("#")
    path, asked, query = tail.partition("?")
    return (f"{scheme}://{authority}{path}{asked}{_redact_query(query)}"
            f"{hashed}{_redact_query(fragment)}")


def _redact_query(query):
    parts = re.split(r"([&;])", query)
    for number, part in enumerate(parts):
        key, equals, _value = part.partition("=")
        if part and part not in "&;" and not (
                equals and unquote(key).lower() in _HARMLESS_QUERY_KEYS):
            parts[number] = f"{key}=***" if equals else "***"
    return "".join(parts)


###############################################################################
# Time ########################################################################
###############################################################################
# Days and times in the pages' zone (--timezone), and the zone a country keeps.


def _zone_table_lines():
    """The lines of the tz database's zone.tab (country code, place, zone): the
    machine's (zoneinfo.TZPATH), else the tzdata package's (Windows); [] when neither."""
    for folder in zoneinfo.TZPATH:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return (Path(folder) / "zone.tab").read_text(encoding="utf-8").splitlines()
    with contextlib.suppress(ImportError, OSError, UnicodeDecodeError):
        import importlib.resources
        return (importlib.resources.files("tzdata") / "zoneinfo" / "zone.tab") \
            .read_text(encoding="utf-8").splitlines()
    return []


@functools.lru_cache(maxsize=None)
def region_time_zone(region):
    """The time zone of a country that has one (IL: Asia/Jerusalem), by the tz
    database's own table of countries; None (this machine's) for a country of several
    zones (US, RU) or when the table is missing."""
    zones = [fields[2] for fields in (line.split("\t") for line in _zone_table_lines()
                                      if not line.startswith("#"))
             if len(fields) >= 3 and fields[0] == region]
    if len(zones) != 1:
        return None
    try:
        return zoneinfo.ZoneInfo(zones[0])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def zone_name(zone):
    """How the pages name a time zone: its tz name, else this machine's abbreviation."""
    if zone is not None:
        return getattr(zone, "key", None) or str(zone)
    return dt.datetime.now().astimezone().tzname() or "UTC"


def _local_time(seconds, zone):
    """Unix seconds as an aware datetime in `zone` (None: this machine's)."""
    if zone is None:
        return dt.datetime.fromtimestamp(seconds).astimezone()
    return dt.datetime.fromtimestamp(seconds, zone)


def today_in(zone):
    """Today's date in `zone` (None: this machine's)."""
    return dt.datetime.now(zone).date()


def _day_bounds(day, zone):
    """[start, end) of `day` in `zone` as Unix seconds; a day of a clock change is
    23 or 25 hours long."""
    def midnight(date):
        if zone is None:
            return dt.datetime.combine(date, dt.time()).astimezone().timestamp()
        return dt.datetime.combine(date, dt.time(), tzinfo=zone).timestamp()
    return midnight(day), midnight(day + dt.timedelta(days=1))


###############################################################################
# Files the server keeps ######################################################
###############################################################################
# The secret files of the state folder (token, page secret, password hash), made for
# their owner only and never read through a link, and how a file is known to have
# changed.

_WEAK_TOKEN_LENGTH = 16  # characters; a made token has 32 (192 random bits)


def _command_name():
    """How the person typed this program, for --help: `popup-server` when installed."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("popup-server") else "python popup_server.py"


@dataclasses.dataclass(frozen=True)
class SecretFile:
    """One of the server's secret files: what the messages call it, the option that
    puts it elsewhere, what deleting it does, and the command that writes a new one
    (then named instead of deleting it: the office password, which the office needs)."""

    what: str
    option: str
    if_deleted: str
    command: str | None = None

    def renewal(self, path):
        """How to put a good file in place of the one at `path`."""
        if self.command is not None:
            return (f"set a new one: {_command_name()} {self.command} "
                    f"--state-dir {path.parent}")
        return f"delete it to have a new one made ({self.if_deleted})"


TOKEN_FILE = SecretFile("the token file", "--token-file",
                        "a new token is made, and Voicenter needs the new URL")
PAGE_SECRET_FILE = SecretFile("the page secret file", "--state-dir",
                              "a new one is made, and links already sent stop working")
PASSWORD_FILE = SecretFile("the office password file", "--state-dir",
                           "a new password is made and printed at the next start",
                           command="password")
PAGE_SECRET_NAME = "page-secret"
PASSWORD_FILE_NAME = "office-password"


def _read_secret_file(path, kind):
    """The text kept in `path`; None when there is none yet (no file, or empty)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not hang us
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ConfigError(f"{path}: {kind.what} is a symbolic link, which is not "
                              f"followed; give {kind.option} the real file's place") from None
        raise ConfigError(f"{path}: cannot read {kind.what} ({error.strerror})") from None
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: {kind.what} is not a regular file")
        data = handle.read(4097)
        if os.name != "nt" and mode & 0o077 and data.strip():
            raise ConfigError(
                f"{path}: {kind.what} can be read or changed by other users (mode "
                f"{stat.S_IMODE(mode):03o}); make it the owner's only: chmod 600 {path} "
                f"(if others may have read it, {kind.renewal(path)} instead)")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        text = None
    if text is None or len(data) > 4096 or not text.isprintable():
        raise ConfigError(f"{path}: {kind.what} does not hold one line of text; "
                          f"{kind.renewal(path)}")
    if not text:  # an empty file: made anew below, so nothing of its mode survives
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None
    return text


def _make_or_read(path, text, kind):
    """(text, True) once `text` is kept in a new file at `path`; (the file's own text,
    False) when another program made that file first (an older server on the same
    folder, or one sharing --token-file): its text wins, so that both use one."""
    if _make_secret_file(path, text, kind):
        return text, True
    kept = _read_secret_file(path, kind)
    if kept is None:
        raise ConfigError(f"{path}: cannot make {kind.what}: another program keeps "
                          f"emptying it; stop it, or pass {kind.option}")
    return kept, False


def _make_secret_file(path, text, kind):
    """Keep `text` in a new file at `path`, readable by its owner only: True; False
    when a file is there already (made meanwhile by another program: read it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never through a symbolic link (even a dangling one), never over a file.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), 0o600)  # whatever the umask took away
            handle.write(text + "\n")
    except FileExistsError:
        if os.path.islink(path):
            raise ConfigError(f"{path}: {kind.what} is a symbolic link, which is not "
                              f"followed; give {kind.option} the real file's place") from None
        return False
    except OSError as error:
        raise ConfigError(f"{path}: cannot keep {kind.what} there ({error.strerror}); "
                          f"pass {kind.option}") from None
    return True


def _warn_if_weak(token, source):
    if token and len(token) < _WEAK_TOKEN_LENGTH:
        log.warning("the token from %s has only %d characters: anyone who can reach the "
                    "port can guess it by trying; use a longer one (a made one has 32)",
                    source, len(token))


def file_signature(path):
    """What tells one version of a file from another: identity, size, mtime."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def read_small_text(path, what, error=ValueError):
    """The text of a small UTF-8 file the office writes (a config file, an --agents
    file), a BOM dropped; a problem raises `error` with one line naming the file and
    `what` it is ("the config file")."""
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except OSError as failure:
        raise error(f"{path}: cannot read {what} ({failure.strerror or failure})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: {what} is not UTF-8 text") from None


###############################################################################
###############################################################################
# II. Configuration ###########################################################
###############################################################################
###############################################################################
# The settings table (OPTIONS) and everything derived from it: Config, --help, the
# POPUP_* variables and the config file's keys.


###############################################################################
# Values ######################################################################
###############################################################################
# What each option's text must be: a parser a value, each failing with words that say
# what to write.

# To add an option: add an Option to OPTIONS (its flag, help, example and default).
# Config's field, the environment variable, the config file's key, --help text and
# precedence (flag > variable > file > default) all follow from it.


def _port(text):
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("a port is a number from 1 to 65535 (0 picks a free one)")
    return value


def _region(text):
    region = text.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{text!r} is not a two-letter country code that phone numbers "
                         "know (IL, US, GB, ...)")
    return region


def _int_between(low, high):
    def parse(text):
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value
    return parse


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise ValueError("must be a number of seconds above 0")
    return value


def _delimiter(text):
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    value = named.get(text.lower(), text)
    if len(value) != 1:
        raise ValueError("a delimiter is one character: , ; | or tab")
    return value


def _encoding(text):
    try:
        return codecs.lookup(text).name
    except LookupError:
        raise ValueError(f"{text!r} is not an encoding Python knows "
                         "(utf-8, utf-16, windows-1255, ...)") from None


def _network(text):
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an address or a CIDR range "
                         "(203.0.113.7, 10.0.0.0/8, 2001:db8::/32)") from None


def _columns(text):
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _host_names(text):
    """--link-redirect-hosts: host names or addresses, comma-separated, lower case; a
    leading *. stands for every subdomain."""
    names = []
    for part in _columns(text):
        name = part.lower().rstrip(".")
        bare = name[2:] if name.startswith("*.") else name
        if not (re.fullmatch(r"[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})*", bare)
                or re.fullmatch(r"\[[0-9a-f:.]{2,45}\]", name)):
            raise _BadValue(f"{part!r} is not a host name (e.g. files.example.com or "
                            "*.example.com)")
        names.append(name)
    return tuple(names)


def _public_url(text):
    """--public-url: an http(s) address with no query, kept without its trailing /."""
    value = text.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
            or parts.fragment or "@" in parts.netloc or not value.isprintable() \
            or " " in value:
        raise _BadValue("must be the address the office reaches this server by, "
                         "e.g. https://popup.example.com (http or https, no ?query)")
    return value


def _api_url(text):
    """--voicenter-api, --voicenter-monitor: https, since every request carries the
    account's code; plain http only to this machine (a stand-in, in tests)."""
    try:
        value = _public_url(text)
    except ValueError:
        raise _BadValue("must be the https address of Voicenter's API, e.g. "
                         "https://api.voicenter.com") from None
    parts = urlsplit(value)
    if parts.scheme == "http" and not _is_loopback_host(parts.hostname):
        raise _BadValue("must be https: every request carries the account's code "
                         "(plain http only to this machine, 127.0.0.1 or localhost)")
    return value


def _is_loopback_host(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _language(text):
    value = text.strip().lower()
    if value not in ("auto", *LANGUAGES):
        raise ValueError("must be auto (from the browser), he or en")
    return value


class _BadValue(argparse.ArgumentTypeError, ValueError):
    """A refused option value whose own words argparse shows (not "invalid value")."""


def _time_zone(text):
    try:
        return zoneinfo.ZoneInfo(text.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _BadValue(f"{text!r} is not a time zone this machine knows "
                        "(e.g. Asia/Jerusalem, Europe/London, UTC)") from None


def read_names_file(path, what):
    """(key, name) pairs of a small CSV of two columns (an --agents or --lines file),
    an optional header row first. A problem is one line naming the file."""
    try:
        too_big = Path(path).stat().st_size > 1024 * 1024
    except OSError:
        too_big = False  # read_small_text() says why it cannot be read
    if too_big:
        raise ValueError(f"{path}: over 1 MiB; a {what} file is two short columns")
    text = read_small_text(path, f"the {what} file")
    pairs = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), 1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if number == 1 and cells[0].lower() in ("extension", "number", "did", "line"):
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise ValueError(f"{path}, line {number}: write {what} as two columns, "
                             f"e.g. {'101,Dana Levi' if what == 'agents' else '0722776773,Sales line'}")
        pairs.append((cells[0], cells[1]))
    return tuple(pairs)


def _names_csv(what):
    def parse(text):
        try:
            return read_names_file(Path(text), what)
        except ValueError as error:
            raise _BadValue(str(error)) from None
    parse.__name__ = f"{what}_file"
    return parse


def _flag(text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1/0, true/false, yes/no or on/off")


def _source(text):
    """A contacts source as given: an http(s) link (kept as text), else a file's Path."""
    text = text.strip() if isinstance(text, str) else text
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", str(text))
    if not scheme:
        return Path(text)
    if scheme.group(1).lower() not in ("http", "https"):
        raise _SourceError(f"{redact_url(text)}: only http:// and https:// links can be "
                           "a contacts source")
    try:
        host = urllib.parse.urlsplit(text).hostname
    except ValueError:
        host = None
    if not host:
        raise _SourceError(f"{redact_url(text)}: not a link to a site")
    return text


class _SourceError(ValueError, argparse.ArgumentTypeError):
    """A source that cannot be: argparse shows its message as it is (never the value
    given, which may hold a password), as do the variable and the config file."""


#: Separates several sources in POPUP_CONTACTS or a config file's string: Windows
#: forbids it in file names and a URL carries it only encoded (%7C); os.pathsep would
#: not do (":" is in every URL, ";" may be in a URL or a Windows file name).
SOURCE_SEPARATOR = "|"


###############################################################################
# URL templates and links #####################################################
###############################################################################
# The CRM link a pop-up sends: filling --url-template, and which links may be sent at
# all.


#: Request fields that URL templates may use; values come from the request as sent.
REQUEST_PLACEHOLDERS = ("phone", "e164", "ivrid", "did", "extenUser", "status")

#: Template placeholders filled from the matched contact.
CONTACT_PLACEHOLDERS = ("name", "company")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def template_columns(template):
    """Placeholders of a template that are not request or contact fields: file columns."""
    known = {name.lower() for name in REQUEST_PLACEHOLDERS + CONTACT_PLACEHOLDERS}
    return tuple(name for name in _PLACEHOLDER.findall(template or "")
                 if name.lower() not in known)


def _check_template(template, option):
    # What the template fills in is URL-encoded, so its start decides the link's scheme.
    if template and not is_web_link(template):
        raise ConfigError(f"--{option.replace('_', '-')}: {template!r} must start with "
                          "http:// or https://")


def is_web_link(text):
    """Whether text is an http: or https: link (spaces before it allowed): the only
    links the pop-up sends, as Voicenter opens URL in the agent's browser, where a
    javascript: or data: link would run. The scheme is all that decides it."""
    return text.lstrip()[:6].lower().startswith(("http:", "https:"))


def _web_links(cells, first_row, refused):
    """A block of the URL column with every cell that is not a web link emptied;
    (row, cell) of each goes to `refused`. Done as the file loads, so lookups add
    nothing; numpy compares the first 6 characters (a few times quicker than a Python
    loop), and only cells that differ are looked at one by one."""
    head = cells.astype("U6")
    differ = np.flatnonzero((head != "https:") & (head != "") &
                            (head.astype("U5") != "http:"))
    bad = [position for position in differ.tolist()
           if not is_web_link(cells[position]) and cells[position].strip()]
    if not bad:
        return cells
    cells = cells.copy()
    for position in bad:
        refused.append((first_row + position, cells[position]))
        cells[position] = ""
    return cells


def _refused_links_warning(refused):
    examples = ", ".join(f"row {row} {_clip(cell)!r}" for row, cell in refused[:3])
    more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
    return (f"{len(refused)} contact URLs are not http: or https: links and are not "
            f"sent (URL is empty for them): {examples}{more}")


def fill_template(template, values):
    """Replace {placeholder}s (case-insensitively) with URL-encoded values."""
    lowered = {name.lower(): value for name, value in values.items()}
    return _PLACEHOLDER.sub(
        lambda m: quote(str(lowered.get(m.group(1).lower(), "")), safe=""), template)


###############################################################################
# The settings table ##########################################################
###############################################################################
# One Option a setting; Config, its defaults and --help follow from OPTIONS.


@dataclasses.dataclass(frozen=True)
class Option:
    flag: str
    help: str
    example: str = ""
    parse: object = str
    default: object = None
    repeatable: bool = False
    switch: bool = False
    field: str = ""  # its Config field, when not named as the option
    separator: str = ""  # several values in one variable or file string, split on it

    @property
    def dest(self):
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self):
        return ENV_PREFIX + self.dest.upper()

    @property
    def key(self):
        """Its name in a config file: the flag without its dashes (url-template)."""
        return self.flag.lstrip("-")

    @property
    def field_name(self):
        return self.field or self.dest

    @property
    def file_types(self):
        """The TOML types a config file may give it, and how to say so."""
        if self.switch:
            return (bool,), "true or false"
        if self.repeatable or isinstance(self.default, tuple):
            return (str, list), 'text in quotes or a list of them, e.g. ["a", "b"]'
        if isinstance(self.default, float):
            return (int, float), "a number"
        if isinstance(self.default, int):
            return (int,), "a whole number"
        return (str,), "text in quotes"


#: The positional CONTACTS (one or more), described as an Option for its variable and
#: file key.
CONTACTS = Option("contacts", "contacts files or links: a CSV or text export, .xlsx, "
                  ".ods, .xls or a vCard .vcf, known by its content, or an http(s) link "
                  "to one (a Google Sheets link of any shape is read as its CSV); "
                  "several are served as one, the first named winning the pop-up "
                  f"(POPUP_CONTACTS separates them with {SOURCE_SEPARATOR}) (default: "
                  "data/contacts.csv beside the program, the sample)", parse=_source,
                  default=(DEFAULT_CONTACTS,), separator=SOURCE_SEPARATOR,
                  field="sources")


#: Set but empty, these mean "off" rather than "not set".
EMPTY_MEANS_OFF = ("token", "calls_db", "office_password")
#: Settings that are secrets: left out of Config's repr (and so of any traceback).
SECRET_SETTINGS = ("token", "office_password", "voicenter_code")
#: Where it listens and how it answers a pop-up.
ANSWER_OPTIONS = (
    Option("--host", "address to listen on: 0.0.0.0 answers on every network of this "
           "machine (what Voicenter needs unless a proxy is in front); 127.0.0.1 only "
           "this machine", "127.0.0.1", default="0.0.0.0"),
    Option("--port", "TCP port to listen on", "8080", _port, 8080),
    Option("--region", "country whose local numbers the file and the caller ids use "
           "(two letters); numbers in other countries need their + or 00",
           "IL", _region, "IL"),
    Option("--url-template", "CRM link for a found caller; {phone} {e164} {name} "
           "{company} {ivrid} {did} {extenUser} {status} and any column of the file, "
           "e.g. {id}, are filled in and URL-encoded",
           "'https://crm.example.com/contact/{id}'", default=""),
    Option("--no-match-url", "link when nobody matched, e.g. the CRM's new-contact form "
           "(request placeholders only)",
           "'https://crm.example.com/new?phone={phone}'", default=""),
    Option("--match-digits", "when no number matches exactly, match on this many "
           "trailing digits (never for shorter numbers)", "9", _int_between(6, 15), 9),
)

#: How the contacts files are read, where the guesses are wrong.
FILE_OPTIONS = (
    Option("--encoding", "encoding of a text file, when the guess (BOM, UTF-8, "
           "Windows-1255) is wrong", "windows-1255", _encoding),
    Option("--delimiter", "column separator of a text file, when the guess is wrong: "
           ", ; | or tab", "';'", _delimiter),
    Option("--sheet", "sheet of an .xlsx, .ods or .xls file to read (default: the first)",
           "Contacts"),
    Option("--name-column", "column holding the name; join several with +",
           "'First Name+Last Name'"),
    Option("--company-column", "column holding the company", "'Organization Name'"),
    Option("--phone-columns", "the only columns to index as phone numbers, "
           "comma-separated", "'Mobile Phone,Business Phone'", _columns, ()),
    Option("--url-column", "column holding a per-contact link (wins over --url-template)",
           "'CRM Link'"),
)

#: Who may ask: the token, the state folder and the office's door.
ACCESS_OPTIONS = (
    # token and calls-db: None is "not set" (a token is made; the default file), "" is off.
    Option("--token", "secret that /popup requires as ?token=... or an X-Popup-Token "
           "header; without one a token is made and kept in --token-file; an empty "
           "value turns the check off", "'s3cret-long-random'"),
    Option("--token-file", "where the generated token is kept (default: .popup-token "
           "in --state-dir)", "/etc/popup-server/token", Path),
    Option("--state-dir", "folder of the server's own files: the token, the page "
           "secret, the office password's hash, the calls database, added contacts; "
           "one server at a time (it is locked) (default: popup-server/state in the "
           "user's data folder: ~/.local/share, %%LOCALAPPDATA%%)",
           "/var/lib/popup-server", Path),
    Option("--office-password", "password of the office pages (the calls page, "
           "callers' pages); without one a password is made, printed once and kept "
           "hashed in --state-dir; an empty value turns the login off (the pages are "
           "then served to --allow-ip addresses or this machine only)",
           "'long office passphrase'"),
    Option("--public-url", "the address links to this server's pages start with "
           "(default: the scheme and host the request came to)",
           "https://popup.example.com", _public_url, ""),
    Option("--link-days", "days a signed link to a caller's page stays valid", "30",
           _int_between(1, 3650), 30),
    Option("--lang", "language of the pages: auto (the browser's Accept-Language), "
           "he or en", "he", _language, "auto"),
    Option("--allow-ip", "serve only clients from this address or CIDR range "
           "(repeat for several)", "203.0.113.0/24", _network, (), repeatable=True),
    Option("--trusted-proxy", "believe X-Forwarded-For only from this proxy address or "
           "range (repeat for several)", "127.0.0.1", _network, (), repeatable=True),
    Option("--max-body", "largest request body accepted, in bytes", "65536",
           _int_between(1024, 16 * 1024 * 1024), 64 * 1024),
    Option("--max-connections-per-ip", "connections one client address may hold open "
           "(an IPv6 client: its /64); more are refused at once. --trusted-proxy "
           "addresses are exempt", "100", _int_between(1, 10_000), 100),
)

#: Reloading, contacts links, the log and the threads.
RUNNING_OPTIONS = (
    Option("--reload-interval", "seconds between checks of the contacts file for "
           "changes", "1", _positive_float, 1.0),
    Option("--url-interval", "seconds between downloads of a contacts link (each asks "
           "the server whether it changed first)", "300", _positive_float, 60.0),
    Option("--url-timeout", "seconds a download of a contacts link may take before it "
           "counts as failed", "60", _positive_float, 30.0),
    Option("--link-redirect-hosts", "other hosts a contacts link's site may redirect "
           "its download to, comma-separated (*.example.com: its subdomains); by default "
           "only the link's own host (and, for a Google Sheets or Drive link, Google's "
           "download hosts)", "'files.example.com,*.cdn.example.net'", _host_names, ()),
    Option("--url-max-bytes", "largest download of a contacts link, in bytes; a bigger "
           "one fails and the last good contacts stay", "1073741824",
           _int_between(1024, 1 << 40), 256 * 1024 * 1024),
    Option("--log-numbers", "log callers' full numbers (default: last 3 digits only)",
           parse=_flag, default=False, switch=True),
    Option("--threads", "worker threads answering pop-ups and /health (the office's "
           "pages have threads of their own; more do not help: answers take "
           "microseconds and Python runs one thread at a time)", "4",
           _int_between(1, 256), 4),
)

#: The calls: their database, their names and times, and Voicenter's APIs.
CALLS_OPTIONS = (
    Option("--calls-db", "SQLite file recording calls for the calls page; empty turns "
           "recording off (default: calls.sqlite in --state-dir)",
           "/var/lib/popup-server/calls.sqlite"),
    Option("--calls-keep-days", "days of calls to keep", "90",
           _int_between(1, 3650), 90),
    Option("--ring-timeout", "minutes after which a call that never hung up is shown "
           "as 'no answer recorded' and counted with the missed", "10",
           _int_between(1, 24 * 60), 10, field="ring_timeout_minutes"),
    Option("--timezone", "time zone of the pages' days and times (default: the zone "
           "of --region when the country has one, as IL has Asia/Jerusalem; else this "
           "machine's)", "Asia/Jerusalem", _time_zone),
    Option("--agents", "CSV file of extension,name: agents' names shown instead of "
           "their extension (extenUser, the CDR's representative)", "agents.csv",
           _names_csv("agents")),
    Option("--lines", "CSV file of number,name: names of the office's numbers callers "
           "dial (did), e.g. 0722776773,Sales line", "lines.csv", _names_csv("lines")),
    Option("--voicenter-code", "the account's API code from Voicenter (a secret, like "
           "the token: never printed, logged or shown); with it the server names the "
           "agents from Voicenter's extension list, offers 'call back' (Click2Call) and "
           "pulls the Call Log", "'XXXXXXXX'"),
    Option("--voicenter-api", "where Voicenter's Click2Call and Call Log APIs are "
           "(tests point it at a stand-in)", "https://api.voicenter.com", _api_url,
           "https://api.voicenter.com"),
    Option("--voicenter-monitor", "where Voicenter's extension list API is (tests "
           "point it at a stand-in)", "https://monitor.voicenter.co.il", _api_url,
           "https://monitor.voicenter.co.il"),
    Option("--call-log-every", "seconds between pulls of Voicenter's Call Log (with "
           "--voicenter-code: every call, missed in a queue or not, with no public "
           "address needed); 0 turns the pull off", "300", _int_between(0, 86400), 300),
)

#: Every option, in --help's order.
OPTIONS = (*ANSWER_OPTIONS, *FILE_OPTIONS, *ACCESS_OPTIONS, *RUNNING_OPTIONS,
           *CALLS_OPTIONS)


#: Every option's default, by its Config field: the one place a default is written.
DEFAULTS = types.MappingProxyType({option.field_name: option.default
                                   for option in (CONTACTS, *OPTIONS)})


def user_data_dir():
    """popup-server's folder in the user's data folder: ~/.local/share/popup-server
    ($XDG_DATA_HOME if set), %LOCALAPPDATA%\\popup-server on Windows."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
    else:
        base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "popup-server"


def state_dir_default():
    """The state folder when --state-dir is not given: one per user, whatever the
    port, the contacts files or the program's place, so that none of them moving
    changes the token Voicenter has, the password, the calls or the links sent. Two
    servers of one user need a --state-dir each: the folder is locked while a server
    runs (hold_state()). A folder of its own inside user_data_dir(), which may hold an
    older version's files. Never beside the program: an installed command must not
    write into site-packages, and a checkout may be replaced."""
    return user_data_dir() / STATE_FOLDER_NAME


class _ConfigMethods:
    """What Config adds to its fields (one a setting, named by OPTIONS, plus `check`)."""

    def load_options(self):
        """The keyword arguments of load_index() that this configuration sets."""
        return dict(region=self.region, encoding=self.encoding, delimiter=self.delimiter,
                    sheet=self.sheet, name_column=self.name_column,
                    company_column=self.company_column,
                    phone_columns=list(self.phone_columns) or None,
                    url_column=self.url_column, match_digits=self.match_digits,
                    keep_columns=template_columns(self.url_template))

    @property
    def contacts_file(self):
        """The first source that is a file (versions before --state-dir kept the token
        beside it); with links only, a name in the state folder."""
        for source in self.sources:
            if isinstance(source, Path):
                return source
        return self.state_path / "links"

    @property
    def state_path(self):
        """The folder of the server's own files (see state_dir_default() for why)."""
        return Path(self.state_dir) if self.state_dir else state_dir_default()

    @property
    def token_path(self):
        return self.token_file or self.state_path / TOKEN_FILE_NAME

    @property
    def calls_path(self):
        if self.calls_db == "":
            return None
        return Path(self.calls_db) if self.calls_db else self.state_path / CALLS_FILE_NAME


Config = dataclasses.make_dataclass(
    "Config", [(name, typing.Any, dataclasses.field(
        default=default, repr=name not in SECRET_SETTINGS))
               for name, default in DEFAULTS.items()] + [("check", bool, False)],
    bases=(_ConfigMethods,), frozen=True,
    namespace={"__doc__": "Everything the program was told, built once by parse_config()."})
Config.__module__ = __name__


###############################################################################
# Reading the settings ########################################################
###############################################################################
# A setting from its flag, its variable, the config file or its default, in that order.


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=100)


def build_parser():
    """The argument parser. A flag not given is None here: parse_config() then takes
    its variable, the config file or its default, in that order."""
    parser = argparse.ArgumentParser(
        formatter_class=_HelpFormatter,
        description="Answer Voicenter's pop-up requests from a contacts file (CSV, "
                    "Excel, LibreOffice or vCard).\n\nEach setting comes from the first "
                    "of: its flag, its environment variable\n(POPUP_...), the --config "
                    "file, its default.",
        epilog=_help_epilog(_command_name()))
    parser.add_argument("contacts", nargs="*", type=_source, metavar="CONTACTS",
                        help=f"{CONTACTS.help} [env {CONTACTS.env}]")
    for option in OPTIONS:
        shown = option.default if option.default not in (None, "", ()) else None
        text = option.help
        if shown is not None and not option.switch:
            text += f" (default: {shown})"
        text += f" [env {option.env}]"
        if option.example:
            text += f"  e.g. {option.flag} {option.example}"
        if option.switch:
            parser.add_argument(option.flag, action="store_const", const=True, help=text)
        else:
            parser.add_argument(option.flag, type=option.parse, help=text,
                                action="append" if option.repeatable else "store",
                                metavar=option.dest.upper())
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML file of settings, each key named as its option without "
                             "the dashes: port = 8080, url-template = \"...\", allow-ip = "
                             f"[\"10.0.0.0/8\"], log-numbers = true [env {CONFIG_ENV}]  "
                             "e.g. --config /etc/popup-server.toml")
    parser.add_argument("--check", action="store_true",
                        help="load the file exactly as the server would, print a report "
                             "of what was found and exit (0 when contacts can be found)")
    parser.add_argument("--version", action="version", version=f"popup-server {__version__}")
    return parser


def _help_epilog(command):
    return ("examples:\n"
            f"  {command}                        serve the sample contacts on port 8080\n"
            f"  {command} contacts.xlsx --check  show how a file loads, then exit\n"
            f"  POPUP_PORT=9000 {command} ~/Desktop/contacts.csv\n"
            f"  {command} --config /etc/popup-server.toml\n"
            f"  {command} password               set a new office password; every "
            "session ends\n\n"
            "Give Voicenter the URL printed at start-up: http://HOST:PORT/popup?token=...")


def _parse_text(option, text):
    """An option's value from text (a variable or a file's string), as its flag's would be."""
    if option.separator:
        return tuple(option.parse(part.strip()) for part in text.split(option.separator)
                     if part.strip())
    if option.repeatable:
        return tuple(option.parse(part) for part in re.split(r"[\s,]+", text) if part)
    return option.parse(text)


def _is_set(option, value):
    """Whether a variable's or file's value counts; set but empty means "not set", except
    where it means "off"."""
    return value != "" or option.dest in EMPTY_MEANS_OFF or option.switch


def _unset_value(option, environ, from_file):
    """An option whose flag was not given: its variable, else the config file, else its
    default."""
    raw = environ.get(option.env)
    if raw is not None and _is_set(option, raw):
        if option.dest in EMPTY_MEANS_OFF:
            return raw
        try:
            return _parse_text(option, raw)
        except (ValueError, TypeError) as error:
            raise ConfigError(redact_url(f"{option.env}={raw!r}: {error}")) from None
    return from_file.get(option.dest, option.default)


def read_config_file(path):
    """{option's dest: value} from a TOML config file. Keys are the options' names
    (url-template; url_template too, as people write TOML both ways); every value is
    checked as its flag's would be. Errors name the file, the key and its line."""
    text = read_small_text(path, "the config file", ConfigError)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not a valid TOML file: {error}") from None
    by_key = {option.key: option for option in (CONTACTS, *OPTIONS)}
    values = {}
    for key, value in table.items():
        option = by_key.get(key.replace("_", "-"))
        if option is None:
            close = difflib.get_close_matches(key.replace("_", "-"), by_key, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            if isinstance(value, dict):
                hint = " (options go at the top of the file, not in a [table])"
            raise _file_error(path, text, key, f'unknown key "{key}"{hint}; the keys are '
                              "the options' names, see --help")
        if option.dest in values:
            raise _file_error(path, text, key, f'"{key}" is given twice (as '
                              f"{option.key} and {option.dest})")
        try:
            values[option.dest] = _file_value(option, value)
        except TypeError as error:
            raise _file_error(path, text, key, f"{_key_and_value(key, value)}: must be "
                              f"{error}, not {_toml_type_name(value)}") from None
        except ValueError as error:
            raise _file_error(path, text, key,
                              f"{_key_and_value(key, value)}: {error}") from None
    return values


def _file_error(path, text, key, problem):
    line = _key_line(text, key)
    problem = redact_url(problem)  # a contacts link's password
    return ConfigError(f"{path}, line {line}: {problem}" if line else f"{path}: {problem}")


def _file_value(option, value):
    """A TOML value for `option`: TypeError when of the wrong type, ValueError when the
    option's own check refuses it."""
    types_, wanted = option.file_types
    if (isinstance(value, bool) and bool not in types_) or not isinstance(value, types_):
        raise TypeError(wanted)
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise TypeError(wanted)
        parsed = [_parse_text(option, item) for item in value]
        return tuple(part for parts in parsed for part in parts)  # each item may hold several
    if isinstance(value, bool) or (value == "" and option.dest in EMPTY_MEANS_OFF):
        return value
    if value == "":
        return option.default
    return _parse_text(option, str(value))


def _toml_type_name(value):
    if isinstance(value, list):
        odd = [item for item in value if not isinstance(item, str)]
        return f"a list holding {_toml_type_name(odd[0])}" if odd else "a list"
    for kind, name in ((bool, "true/false"), (int, "a whole number"),
                       (float, "a decimal number"), (str, "text"), (dict, "a table")):
        if isinstance(value, kind):
            return name
    return "a date or time"


def _key_and_value(key, value):
    if isinstance(value, dict):
        return key
    if key.replace("-", "_") in SECRET_SETTINGS:
        return f"{key} (its value not shown: a secret)"
    if isinstance(value, bool):
        return f"{key} = {str(value).lower()}"
    if isinstance(value, (str, list)):
        return f"{key} = {json.dumps(value, ensure_ascii=False)}"
    return f"{key} = {value}"


def _key_line(text, key):
    """The line of a top-level key (tomllib gives no positions): its first line that
    assigns it (`key =`, `key.sub =`) or opens it as a table (`[key]`, `[key.sub]`)."""
    name = r"(?:%s|\"%s\"|'%s')" % ((re.escape(key),) * 3)
    pattern = re.compile(rf"\s*(?:{name}\s*[=.]|\[\[?\s*{name}\s*[\].])")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return number
    return None


def parse_config(argv=None, environ=None):
    """Build the Config from command-line words, an environment mapping and the config
    file they name (--config, else POPUP_CONFIG)."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    # Intermixed: the contacts sources may come before, after or between the options.
    args = build_parser().parse_intermixed_args(argv)
    config_file = args.config or environ.get(CONFIG_ENV) or None
    from_file = read_config_file(config_file) if config_file else {}
    values = {"check": args.check}
    for option in (CONTACTS, *OPTIONS):
        given = getattr(args, option.dest)
        if given is None or given == []:  # [] is no CONTACTS given
            values[option.field_name] = _unset_value(option, environ, from_file)
        else:
            values[option.field_name] = tuple(given) if option.repeatable else given
    if values["timezone"] is None:  # the office's country, not the machine's (a VPS: UTC)
        values["timezone"] = region_time_zone(values["region"])
    config = Config(**values)
    for name in ("url_template", "no_match_url"):
        _check_template(getattr(config, name), name)
    return config


###############################################################################
###############################################################################
# III. Contacts ###############################################################
###############################################################################
###############################################################################
# The contacts: each file kind read as a table, its columns chosen, its numbers keyed,
# the index built, and the sources served and reloaded.


###############################################################################
# File kinds ##################################################################
###############################################################################
# A file is known by its content, whatever its name, and read within the same limits
# whatever its kind.

XLSX_SUFFIXES = (".xlsx", ".xlsm")
TEXT_DELIMITERS = (",", ";", "\t", "|")

#: Windows-1255 is the code page Hebrew Windows (and so Outlook and Excel) writes.
LEGACY_ENCODING = "cp1255"
_SNIFF_BYTES = 64 * 1024

#: pandas reads a CSV in blocks of this many rows, and the index is built one block
#: at a time. Converting a block to Python strings holds the GIL: in small blocks a
#: reload never stalls the requests answered meanwhile for more than a few ms, only a
#: block's strings are alive at once, and the whole read is no slower.
_READ_ROWS = 10_000

#: ... and fewer rows when rows are long: a block holds about this much text at most.
_BLOCK_BYTES = 8 * 1024 * 1024

#: Limits on what a contacts file may hold, so that a damaged or hostile file can
#: neither exhaust memory nor hold up lookups while it loads (docs/reliability.md,
#: "Damaged and huge files"). A cell longer than MAX_CELL_BYTES is skipped unread and reported; a
#: phone cell longer than MAX_PHONE_CELL_CHARS is reported, not parsed; a row longer
#: than MAX_ROW_BYTES without its skipped cells, or a header with a skipped cell,
#: refuses the file; so does a workbook that unpacks to more than
#: MAX_XLSX_UNPACKED_BYTES.
MAX_CELL_BYTES = 16 * 1024
MAX_PHONE_CELL_CHARS = 500
MAX_ROW_BYTES = 1024 * 1024
MAX_XLSX_UNPACKED_BYTES = 512 * 1024 * 1024


@dataclasses.dataclass
class Table:
    """A file being read as text: its headers, and its rows in blocks, each block a
    {header: numpy array of str}. `skipped` fills in as the blocks are read."""

    headers: list
    blocks: typing.Iterable
    kind: str              # "csv", "xlsx", "ods", "xls" or "vcard" (_file_kind())
    encoding: str | None   # a text file's: the codec it is read with; None: a workbook
    delimiter: str | None
    warnings: list
    skipped: list          # (row, reason) for lines the reader could not split
    first_row: int = 2     # the spreadsheet row of the first contact (header above it)
    oversized: list = dataclasses.field(default_factory=list)  # (row, column, size)
                           # of cells skipped unread, longer than MAX_CELL_BYTES

    def keep(self, headers):
        """The same table with only these columns."""
        return dataclasses.replace(self, headers=list(headers), blocks=(
            {h: block[h] for h in headers} for block in self.blocks))


class _ReadAgain(Exception):
    """Reading must start over with other settings (raised while blocks are read)."""

    def __init__(self, **changes):
        super().__init__(changes)
        self.changes = changes

# A file is known by its content, whatever its name: a phone's export may arrive as
# "contacts.txt", a workbook renamed by a mail program.


#: pandas' own readers for the workbook kinds openpyxl does not read.
WORKBOOK_ENGINES = {"ods": "calamine", "xls": "calamine"}
_WORKBOOK_KINDS = {"ods": "a LibreOffice spreadsheet (.ods)",
                   "xls": "an Excel 97-2003 workbook (.xls)"}


VCARD_SUFFIXES = (".vcf", ".vcard")
_SUPPORTED = ("contacts are read from CSV or text exports, Excel workbooks (.xlsx, .xls), "
              "LibreOffice spreadsheets (.ods) and vCard files (.vcf)")


_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # old Office files: .xls, .doc, .msg

#: The starts of files people take for contacts files, and what each one is.
_NOT_CONTACTS = (
    (b"%PDF", "a PDF document"), (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"), (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"{\\rtf", "an RTF document"),
    (b"SQLite format 3\x00", "an SQLite database"),
)


#: Streams inside an OLE2 file that is not a workbook, and what that file is.
_OLE2_STREAMS = (
    ("EncryptedPackage", "a password-protected Office file",
     "open it, remove the password and save it again"),
    ("WordDocument", "a Word document (.doc)", ""),
    ("__substg1.0_", "an Outlook item (.msg)", ""),
    ("PowerPoint Document", "a PowerPoint presentation", ""),
)


def _file_kind(path, head=None):
    """"xlsx", "ods", "xls", "vcard" or "text" (a CSV, read by pandas), from the
    file's first bytes; a file of a kind that cannot hold readable contacts is
    refused, saying what it looks like."""
    if head is None:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head.startswith(_OLE2):
        return "xls"  # anything else in an OLE2 file is told apart when the reader refuses it
    for magic, what in _NOT_CONTACTS:
        if head.startswith(magic):
            raise _not_contacts(path, what)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = head.decode("utf-16", errors="ignore")
    else:
        text = head.decode("latin-1")  # only ASCII words are looked for
    start = text.lstrip("\ufeff\xef\xbb\xbf \t\r\n")[:512].upper()
    if start.startswith("BEGIN:VCARD") or (
            path.suffix.lower() in VCARD_SUFFIXES and "BEGIN:VCARD" in text.upper()):
        return "vcard"
    if start.startswith("BEGIN:VCALENDAR"):
        raise _not_contacts(path, "an iCalendar file (calendar events, not contacts)")
    if start.startswith(("<!DOCTYPE HTML", "<HTML")):
        raise _not_contacts(path, "a web page (HTML)", "if a program saved it as an "
                                  "Excel file, open it in Excel and save it as .xlsx")
    if start.startswith("<?XML") and "URN:SCHEMAS-MICROSOFT-COM:OFFICE:SPREADSHEET" \
            in text.upper():
        raise _not_contacts(path, "an Excel 2003 XML spreadsheet", "save it as .xlsx")
    if path.suffix.lower() in XLSX_SUFFIXES + (".ods",):  # damaged: its reader says how
        return path.suffix.lower().lstrip(".").replace("xlsm", "xlsx")
    return "text"


def _zip_kind(path):
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            mimetype = archive.read("mimetype")[:80].decode("ascii", "replace") \
                if "mimetype" in names else ""
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError, EOFError):  # damaged
        return "ods" if path.suffix.lower() == ".ods" else "xlsx"  # its reader says how
    if mimetype == "application/vnd.oasis.opendocument.spreadsheet":
        return "ods"
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "xl/workbook.bin" in names:
        raise _not_contacts(path, "an Excel binary workbook (.xlsb)", "save it as .xlsx")
    advice = ""
    if mimetype.startswith("application/vnd.oasis.opendocument."):
        what = f"an OpenDocument {mimetype.rsplit('.', 1)[-1]} document"
    elif "word/document.xml" in names:
        what = "a Word document (.docx)"
    elif any(name.startswith("Index/") and name.endswith(".iwa") for name in names) \
            or "Index.zip" in names:
        what = "an Apple Numbers (or Pages, Keynote) document"
        advice = "in Numbers, File > Export To > CSV or Excel"
    else:
        inside = [name for name in names if not name.endswith("/")]
        what = "a zip archive" + (f" (holding {_clip(', '.join(inside[:5]))})"
                                  if inside else "")
        advice = "unzip it and give the contacts file inside" if inside else ""
    raise _not_contacts(path, what, advice)


def _not_contacts(path, what, advice=""):
    return ContactsFileError(path, f"looks like {what}, not a contacts file; "
                                   + (f"{advice}; " if advice else "") + _SUPPORTED)


def _read_head(path):
    """The file's first _SNIFF_BYTES, once it is known to be a readable, non-empty file."""
    _check_readable(path)
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        raise ContactsFileError(path, "the file is empty")
    return head


def _check_readable(path):
    try:
        if not path.exists():
            raise ContactsFileError(path, "no such file")
        if path.is_dir():
            raise ContactsFileError(path, "is a folder, not a contacts file")
        with open(path, "rb"):
            pass
    except PermissionError:
        raise ContactsFileError(path, "permission denied: this user cannot read it") from None
    except OSError as error:
        raise ContactsFileError(path, f"cannot be opened: {error.strerror or error}") from None


def _clean_header(name):
    text = "" if name is None else str(name)
    return text.replace("\ufeff", "").strip()


def _blank(size):
    return np.full(size, "", dtype=object)


###############################################################################
# Reading text files (CSV) ####################################################
###############################################################################
# A CSV's header row, encoding and delimiter, its blocks read by pandas, and the scanner
# that skips huge cells unread.


def _read_headers(path, head, encoding, delimiter):
    """The header row of a text file, from its head (its first _SNIFF_BYTES)."""
    guessed = encoding or _detect_encoding(path, head)[0]
    text = head.decode(guessed, errors="ignore").lstrip("\ufeff")
    delimiter = delimiter or _sniff_delimiter(text, path.suffix.lower())
    try:
        frame = pd.read_csv(io.StringIO(_first_record(text) + "\n"), sep=delimiter,
                            dtype=str, na_filter=False)
    except pd.errors.EmptyDataError:
        raise ContactsFileError(path, "the file has no header row") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as error:
        raise ContactsFileError(path, f"cannot be read as a table: {_first_line(error)}"
                                ) from None
    headers = [_clean_header(name) for name in frame.columns]
    if max(map(len, headers)) > MAX_CELL_BYTES:
        raise _long_header(path)
    if not any(headers):
        raise ContactsFileError(path, "the first row is empty; it must hold the column "
                                      "names")
    return headers


def _csv_blocks(path, delimiter, encoding, usecols, engine, provisional, skipped,
                oversized, names):
    """{header: array of str} blocks read by pandas, every cell as text. Cells longer
    than MAX_CELL_BYTES are left out of what pandas reads (see _scan_cells)."""
    options = dict(sep=delimiter, dtype=str, na_filter=False, encoding=encoding,
                   encoding_errors="strict", quotechar='"', usecols=usecols,
                   index_col=False,         # a trailing delimiter must not shift columns
                   skip_blank_lines=False,  # blank rows keep their place: row numbers
                   engine=engine)
    if engine == "python":
        def skip(cells):  # a row with more cells than the header: report, don't refuse
            skipped.append((None, f"{len(cells)} cells where the header has fewer: "
                                  f"{_clip(delimiter.join(cells))}"))
        options["on_bad_lines"] = skip
    try:
        scan = _scan_cells(path, delimiter, encoding)
        oversized.extend((row + 1, names[column] if column < len(names)
                          else f"column {column + 1}", size)
                         for row, column, size in scan.oversized)
        options["chunksize"] = max(1, min(_READ_ROWS,
                                          _BLOCK_BYTES // max(scan.longest_row, 1)))
        source = (io.BufferedReader(_WithoutCuts(path, scan.cuts, scan.space))
                  if scan.cuts else contextlib.nullcontext(path))
        with source as readable, pd.read_csv(readable, **options) as reader:
            for frame in reader:
                yield {_clean_header(name): frame[name].to_numpy(dtype=object)
                       for name in frame.columns}
    except UnicodeDecodeError as error:
        if provisional:
            raise _ReadAgain(encoding="windows-1255") from None
        raise ContactsFileError(path, f"cannot be read as {encoding} ({error.reason}); "
                                      "pass --encoding") from None
    except UnicodeError as error:
        raise ContactsFileError(path, f"cannot be read as {encoding} ({error}); "
                                      "pass --encoding") from None
    except pd.errors.EmptyDataError:
        raise ContactsFileError(path, "the file has no header row") from None
    except pd.errors.ParserError as error:
        if engine == "c":
            raise _ReadAgain(engine="python") from None
        raise ContactsFileError(path, f"cannot be read as a table: {_first_line(error)}"
                                ) from None
    except (ValueError, csv.Error) as error:
        raise ContactsFileError(path, f"cannot be read as a table: {_first_line(error)}"
                                ) from None
    except OSError as error:
        raise ContactsFileError(path, f"cannot be read: {error.strerror or error}") from None


_QUOTE, _LF, _CR = ord('"'), ord("\n"), ord("\r")
_SCAN_BYTES = 1024 * 1024  # a file is scanned in pieces of this size


@dataclasses.dataclass
class _CellScan:
    """What _scan_cells() found: the cells to leave out, as (start, end) byte ranges and
    as (row, column, bytes) counted from 0 with the header as row 0, and the length in
    bytes of the longest row that stays."""

    cuts: list
    oversized: list
    longest_row: int
    space: bytes  # " " in the file's encoding


def _scan_cells(path, delimiter, encoding):
    """Find the cells of a text file longer than MAX_CELL_BYTES, and refuse the file
    for a row too long (see MAX_ROW_BYTES), holding ~1 MiB of it at a time.

    pandas would hold such a cell whole, ~3 times over, and convert it to a string in
    one call that keeps the GIL: a cell of 1 GiB killed the server. Here the file is
    split into fields with numpy, by the rules of pandas' own reader, so that the
    cells found are the very cells pandas would read.
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
        unit, bom = _text_unit(encoding, head)
        scanner = _CellScanner(path, delimiter, unit, len(bom))
        handle.seek(len(bom))
        piece = handle.read(_SCAN_BYTES)
        while piece:
            following = handle.read(_SCAN_BYTES)
            scanner.feed(piece, last=not following)
            piece = following
    scanner.finish()
    return _CellScan(scanner.cuts, scanner.oversized, scanner.longest_row * unit.itemsize,
                     np.array([ord(" ")], dtype=unit).tobytes())


def _text_unit(encoding, head):
    """(numpy dtype of one code unit, byte-order mark) of text in this encoding."""
    name = codecs.lookup(encoding).name
    if name.startswith("utf-16"):
        big = name == "utf-16-be" or (name == "utf-16" and head.startswith(codecs.BOM_UTF16_BE))
        bom = (codecs.BOM_UTF16_BE if big else codecs.BOM_UTF16_LE)
        return np.dtype(">u2" if big else "<u2"), bom if head.startswith(bom) else b""
    utf8_bom = name.startswith("utf-8") and head.startswith(codecs.BOM_UTF8)
    return np.dtype(np.uint8), codecs.BOM_UTF8 if utf8_bom else b""


class _CellScanner:
    """Splits a text file, fed to it piece by piece, into rows and fields as pandas'
    reader does, and notes every field longer than MAX_CELL_BYTES (see _scan_cells).

    Positions are counted in code units (bytes, or 2 bytes in UTF-16). A quote opens a
    quoted field only at a field's start; inside one, a run of quotes of odd length
    closes it (the others are doubled quotes). So the quotes that open or close a field
    are the odd runs, but for a stray odd run outside a quoted field (`24" screen`),
    which is text; numpy finds the first such run, and the state is corrected from it.
    """

    def __init__(self, path, delimiter, unit, start):
        self.path, self.delimiter, self.unit = path, ord(delimiter), unit
        self.unit_size = unit_size = unit.itemsize
        self.limit = MAX_CELL_BYTES // unit_size
        self.pos = start // unit_size  # where the piece being fed starts
        self.quoted = False            # ... inside a quoted field, or not
        self.prev = _LF                # the unit before it: the file starts as a line does
        self.pending = None            # a run of quotes reaching its end: (start, length,
                                       # whether it begins a field)
        self.field_start = self.row_start = self.pos
        self.row = self.column = 0     # of the field being read
        self.row_cut = 0               # units of the current row's cells left out
        self.cuts, self.oversized, self.longest_row = [], [], 0

    def feed(self, piece, last):
        units = np.frombuffer(piece, self.unit, len(piece) // self.unit_size)
        if not units.size:
            return
        if not self._plain(piece, units):
            toggles = self._quote_toggles(units, last)
            ends = np.flatnonzero((units == self.delimiter) | (units == _LF)
                                  | (units == _CR))
            if toggles.size or self.quoted:  # leave out the separators inside quotes
                inside = (np.searchsorted(toggles, ends) & 1).astype(bool) ^ self.quoted
                ends = ends[~inside]
                self.quoted ^= bool(toggles.size & 1)
            if ends.size:
                self._fields(units, ends)
        self.prev = int(units[-1])
        self.pos += units.size
        field = self.pos - self.field_start
        row = self.pos - self.row_start - self.row_cut - (field if field > self.limit else 0)
        if self.row == 0 and field > self.limit:
            self._refuse_header()
        if row * self.unit_size > MAX_ROW_BYTES:
            self._refuse_row(self.row, None)

    def _plain(self, piece, units):
        """Account for a piece of bytes without quotes and with short lines only (most
        files; a few memchr() calls, not numpy's passes), or return False."""
        if (self.unit_size != 1 or self.quoted or self.pending is not None
                or b'"' in piece or (self.prev == _CR and piece.startswith(b"\n"))):
            return False
        if b"\r" in piece and (piece.endswith(b"\r") or not np.all(
                units[np.flatnonzero(units == _CR) + 1] == _LF)):
            return False  # a line break by "\r" alone: let _fields() count it
        first, last = piece.find(b"\n"), piece.rfind(b"\n")
        if first < 0 or first + self.pos - self.row_start > self.limit:
            return False
        line = first + 1
        while line <= last:  # each line ends within reach: jump to the last break there
            line = piece.rfind(b"\n", line, line + self.limit + 1) + 1
            if not line:
                return False  # a cell may be too long
        rows = int(np.count_nonzero(units == _LF))
        self.row += rows
        # A block's size is its rows' total: their average here is what counts.
        self.longest_row = max(self.longest_row, first + self.pos - self.row_start,
                               len(piece) // rows)
        self.row_start = self.field_start = self.pos + last + 1
        self.row_cut = 0
        tail = piece[last + 1:]
        self.column = tail.count(self.delimiter)
        if self.column:
            self.field_start += tail.rindex(self.delimiter) + 1
        return True

    def finish(self):
        """The last row, when the file does not end with a line break: as if it did."""
        if self.pos > self.row_start:
            self._fields(np.array([_LF]), np.zeros(1, dtype=np.int64))

    def _fields(self, units, ends):
        """Account for the fields ending at `ends` (positions in `units`)."""
        kind = units[ends]
        before = np.where(ends > 0, units[ends - 1], self.prev)
        follows_cr = (kind == _LF) & (before == _CR)  # "\r\n": one line break
        line_break = ((kind == _LF) | (kind == _CR)) & ~follows_cr
        starts = np.empty(ends.size, dtype=np.int64)
        starts[0] = self.field_start - self.pos
        starts[1:] = ends[:-1] + 1
        lengths = ends - starts
        breaks = np.flatnonzero(line_break)
        cut_per_row = np.zeros(breaks.size + 1, dtype=np.int64)
        cut_per_row[0] = self.row_cut
        long = np.flatnonzero(lengths > self.limit)
        if long.size:
            in_row = np.searchsorted(breaks, long)  # row, counted from self.row
            delimiters = np.cumsum(kind == self.delimiter)
            before_field = np.where(long > 0, delimiters[long - 1], 0)
            row_begins = np.where(in_row > 0, delimiters[breaks[in_row - 1]], 0) \
                if breaks.size else 0
            columns = before_field - row_begins + np.where(in_row == 0, self.column, 0)
            np.add.at(cut_per_row, in_row, lengths[long])
            for row, column, start, length in zip(in_row + self.row, columns,
                                                  starts[long] + self.pos, lengths[long]):
                if row == 0:
                    self._refuse_header()
                self.cuts.append((int(start) * self.unit_size,
                                  int(start + length) * self.unit_size))
                self.oversized.append((int(row), int(column),
                                       int(length) * self.unit_size))
        if breaks.size:
            row_ends = ends[breaks] + self.pos
            row_starts = np.empty(breaks.size, dtype=np.int64)
            row_starts[0] = self.row_start
            row_starts[1:] = row_ends[:-1] + 1
            rows = row_ends - row_starts - cut_per_row[:-1]
            longest = int(rows.argmax())
            if rows[longest] * self.unit_size > MAX_ROW_BYTES:
                self._refuse_row(self.row + longest, int(rows[longest]) * self.unit_size)
            self.longest_row = max(self.longest_row, int(rows[longest]))
            self.row += breaks.size
            self.row_start = int(row_ends[-1]) + 1
            self.column = int(np.count_nonzero(kind[breaks[-1]:] == self.delimiter))
        else:
            self.column += int(np.count_nonzero(kind == self.delimiter))
        self.row_cut = int(cut_per_row[-1])
        self.field_start = int(ends[-1]) + 1 + self.pos

    def _quote_toggles(self, units, last):
        """Positions (in `units`) of the runs of quotes that open or close a quoted
        field; a run reaching the end of the piece waits for the next one."""
        quotes = np.flatnonzero(units == _QUOTE)
        pending, self.pending = self.pending, None
        if not quotes.size and pending is None:
            return quotes
        firsts = np.concatenate(([0], np.flatnonzero(np.diff(quotes) != 1) + 1)) \
            if quotes.size else quotes
        starts = quotes[firsts]
        lengths = np.diff(np.append(firsts, quotes.size))
        before = np.where(starts > 0, units[starts - 1], self.prev)
        opens = (before == self.delimiter) | (before == _LF) | (before == _CR)
        if pending is not None:
            start, length, opening = pending
            if starts.size and starts[0] == 0:  # the same run goes on
                starts[0], lengths[0], opens[0] = start - self.pos, lengths[0] + length, \
                    opening
            else:
                starts = np.insert(starts, 0, start - self.pos)
                lengths = np.insert(lengths, 0, length)
                opens = np.insert(opens, 0, opening)
        if not last and starts.size and starts[-1] + lengths[-1] == units.size:
            self.pending = (int(starts[-1]) + self.pos, int(lengths[-1]), bool(opens[-1]))
            starts, lengths, opens = starts[:-1], lengths[:-1], opens[:-1]
        return starts[_toggling_runs(lengths, opens, self.quoted)]

    def _refuse_header(self):
        raise _long_header(self.path)

    def _refuse_row(self, row, size):
        size = f"{size:,} bytes long" if size else f"longer than {MAX_ROW_BYTES:,} bytes"
        raise ContactsFileError(self.path, f"row {row + 1} is {size} without its skipped "
                                           "cells, more than a row of contacts could be: "
                                           "the file is damaged")


def _long_header(path):
    return ContactsFileError(path, f"the header row has a cell of more than "
                                   f"{MAX_CELL_BYTES:,} bytes: it is not a contacts file, "
                                   "or is damaged")


def _toggling_runs(lengths, opens, quoted):
    """Which runs of quotes open or close a quoted field (see _CellScanner), given
    their lengths, whether each begins a field, and whether the first is in one."""
    odd = (lengths & 1).astype(bool)
    stray = odd & ~opens           # text outside a quoted field, a close inside one
    toggles = odd.copy()
    first = 0
    for _ in range(4):  # a few stray quotes: numpy; many: the walk below
        inside = ((np.cumsum(toggles[first:]) - toggles[first:]) & 1).astype(bool) ^ quoted
        text = np.flatnonzero(stray[first:] & ~inside)
        if not text.size:
            return toggles
        first += int(text[0])
        toggles[first] = False
        first, quoted = first + 1, False
    # Many stray quotes: go from toggle to toggle. Outside a quoted field, the next odd
    # run that begins a field opens one; inside, the next odd run closes it.
    toggles[first:] = False
    closing = np.flatnonzero(odd[first:]) + first
    opening = np.flatnonzero(odd[first:] & opens[first:]) + first
    while True:
        runs = closing if quoted else opening
        found = np.searchsorted(runs, first)
        if found == runs.size:
            return toggles
        first = int(runs[found])
        toggles[first], quoted, first = True, not quoted, first + 1


class _WithoutCuts(io.RawIOBase):
    """A file read with some byte ranges (sorted, apart) each replaced by a space:
    what pandas reads of a file with cells too long to read. A space, not nothing:
    a cell alone on its row between "\r" and "\n" must not join them into one break."""

    def __init__(self, path, cuts, space):
        self._file = open(path, "rb")
        self._cuts = collections.deque(cuts)
        self._space = space  # " " in the file's encoding

    def readable(self):
        return True

    def readinto(self, buffer):
        at = self._file.tell()
        if self._cuts and self._cuts[0][0] <= at:
            self._file.seek(self._cuts.popleft()[1])
            buffer[:len(self._space)] = self._space  # the reader asks for 8 KiB or more
            return len(self._space)
        wanted = len(buffer) if not self._cuts else min(len(buffer), self._cuts[0][0] - at)
        return self._file.readinto(memoryview(buffer)[:wanted])

    def close(self):
        self._file.close()
        super().close()


def _detect_encoding(path, head):
    """(encoding, warnings, provisional): a BOM first, then UTF-8, then Windows-1255.

    Hebrew in Windows-1255 is never valid UTF-8 (its letters are bytes 0xE0-0xFA,
    which UTF-8 only allows as lead bytes followed by 0x80-0xBF), so trying UTF-8
    first cannot misread a Hebrew legacy file. The first 64 KiB decide; when they are
    plain ASCII, UTF-8 is provisional: the reader, which decodes strictly, falls back
    to Windows-1255 if a later byte is not UTF-8 (the header reads the same in both).
    Bytes that are not Windows-1255 either are refused.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig", [], False
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", [], False
    sample = head[:4096]
    if sample.count(b"\x00") * 4 > len(sample):
        # UTF-16 without a BOM: ASCII characters leave a zero byte beside them.
        zeros_at_odd = sample[1::2].count(b"\x00") > sample[0::2].count(b"\x00")
        return ("utf-16-le" if zeros_at_odd else "utf-16-be"), [], False
    if b"\x00" in head:
        raise ContactsFileError(path, "contains binary data, not text; is it really a "
                                      "contacts CSV?")
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head)  # not final: a
        return "utf-8", [], head.isascii()   # character may be cut at the 64 KiB mark
    except UnicodeDecodeError:
        return _legacy_encoding(path)


def _legacy_encoding(path):
    if not _decodes_whole_file(path, LEGACY_ENCODING):
        raise ContactsFileError(path, "is neither UTF-8 nor Windows-1255 text; save it as "
                                      "'CSV UTF-8' or pass --encoding")
    with open(path, "rb") as handle:
        raw = handle.read((1 << 20) + _SNIFF_BYTES)  # never the whole file: it may be huge
    first = next((i for i, byte in enumerate(raw[:1 << 20]) if byte >= 0x80), 0)
    text = raw[first:first + _SNIFF_BYTES].decode(LEGACY_ENCODING, errors="ignore")
    warnings = []
    if re.search(r"[A-Za-z][\u05d0-\u05ea]|[\u05d0-\u05ea][A-Za-z]", text):
        warnings.append("read as Windows-1255 but Hebrew letters sit inside Latin words: "
                        "the file may be in another code page; pass --encoding")
    return "windows-1255", warnings, False


def _decodes_whole_file(path, encoding):
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _sniff_delimiter(text, suffix):
    """The candidate that splits the header line most often (outside quotes)."""
    header = _first_record(text)
    counts = {d: _count_outside_quotes(header, d) for d in TEXT_DELIMITERS}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        return "\t" if suffix == ".tsv" else ","
    return best


def _first_record(text):
    in_quotes = False
    for position, char in enumerate(text):
        if char == '"':
            in_quotes = not in_quotes
        elif char in "\r\n" and not in_quotes:
            return text[:position]
    return text


def _count_outside_quotes(line, delimiter):
    return sum(part.count(delimiter) for part in line.split('"')[0::2])


###############################################################################
# Reading workbooks (.xlsx, .ods, .xls) #######################################
###############################################################################
# openpyxl for .xlsx, pandas' calamine for .ods and .xls; the same limits as a CSV's.


def _read_xlsx(path, sheet, usecols):
    import openpyxl  # imported here: only users of .xlsx files pay for it
    _check_unpacked_size(path)
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises many kinds for a damaged file
        raise ContactsFileError(path, f"cannot be read as an Excel workbook: "
                                      f"{_first_line(error)}") from None
    try:
        if sheet is not None:
            if sheet not in book.sheetnames:
                raise ContactsFileError(path, f"has no sheet {sheet!r} (sheets: "
                                              f"{', '.join(book.sheetnames)})")
            worksheet = book[sheet]
        else:
            worksheet = book.worksheets[0]
        rows = [[_xlsx_cell_text(cell) for cell in row]
                for row in worksheet.iter_rows()]
    except ContactsFileError:
        raise
    except Exception as error:  # a damaged sheet: openpyxl and its XML parser raise many
        raise ContactsFileError(path, f"cannot be read as an Excel workbook: "
                                      f"{_first_line(error)}") from None
    finally:
        book.close()
    return _sheet_table(path, rows, usecols, "xlsx")


def _sheet_table(path, rows, usecols, kind):
    """A sheet's rows of text as a Table: the first row with anything in it is the
    header, repeated headers are numbered, trailing empty rows are dropped."""
    header_row = next((n for n, row in enumerate(rows) if any(row)), None)
    if header_row is None:
        raise ContactsFileError(path, "the sheet is empty")
    while rows and not any(rows[-1]):
        rows.pop()
    oversized = _skip_long_cells(path, rows, header_row)
    header = _unique_headers([_clean_header(text) for text in rows[header_row]])
    width = len(header)
    body = [row[:width] + [""] * (width - len(row)) for row in rows[header_row + 1:]]
    columns = {}
    for position, name in enumerate(header):
        if name and (usecols is None or name in set(usecols)):
            values = np.empty(len(body), dtype=object)
            values[:] = [row[position] for row in body]
            columns[name] = values
    blocks = [{name: values[start:start + _READ_ROWS] for name, values in columns.items()}
              for start in range(0, max(len(body), 1), _READ_ROWS)]
    return Table(list(columns), blocks, kind, None, None, [], [],
                 first_row=header_row + 2,
                 oversized=[(row, header[column], size) for row, column, size in oversized
                            if column < width])


def _check_unpacked_size(path):
    """Refuse a workbook that would unpack to more than MAX_XLSX_UNPACKED_BYTES: openpyxl
    holds a cell's text whole, whatever its size (the sizes are the ones the archive
    declares, and zipfile never unpacks more than those)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # openpyxl says what is wrong with it
    if unpacked > MAX_XLSX_UNPACKED_BYTES:
        raise ContactsFileError(path, f"unpacks to {unpacked >> 20:,} MiB, more than the "
                                      f"{MAX_XLSX_UNPACKED_BYTES >> 20} MiB a contacts "
                                      "workbook may; save it as CSV")


def _skip_long_cells(path, rows, header_row):
    """Empty the cells of a sheet longer than MAX_CELL_BYTES characters, as a text
    file's are skipped; [(row, column, bytes in UTF-8)] of them. A header cell that
    long refuses the file."""
    oversized = []
    for number, row in enumerate(rows):
        if row and max(map(len, row)) > MAX_CELL_BYTES:
            for column, text in enumerate(row):
                if len(text) > MAX_CELL_BYTES:
                    if number <= header_row:
                        raise _long_header(path)
                    oversized.append((number + 1, column,
                                      len(text.encode("utf-8", "surrogatepass"))))
                    row[column] = ""
    return oversized


def _unique_headers(headers):
    """Repeated headers numbered as pandas numbers them in a CSV: Phone, Phone.1, ..."""
    seen, unique = {}, []
    for name in headers:
        if name and name in seen:
            seen[name] += 1
            unique.append(f"{name}.{seen[name]}")
        else:
            seen.setdefault(name, 0)
            unique.append(name)
    return unique


def _xlsx_cell_text(cell):
    """A cell as the text a person typed, as far as that can be known for certain."""
    return _cell_text(getattr(cell, "value", None),
                      (getattr(cell, "number_format", "") or "").upper())


def _cell_text(value, number_format=""):
    """A workbook's value as the text a person typed: a whole number without the
    ".0" a float gives it (the number repair then restores a lost leading zero)."""
    if value is None or value != value:  # NaN: pandas' empty
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, (int, float)) and ("E+" in number_format
                                            or "E-" in number_format):
        # Shown in scientific notation: the value still has every digit, unless it
        # is no more than what the cell shows (5.41E+08 saved back as 541000000, as
        # a CSV's cell is: its last digits are gone for good).
        whole = value.is_integer() if isinstance(value, float) else True
        shown = max(1, sum(ch in "0#?" for ch in number_format.partition("E")[0]))
        if not whole or abs(value) >= 1e15 or len(
                str(abs(int(value))).rstrip("0")) <= shown:
            return f"{value:.2E}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _read_workbook(path, kind, sheet, usecols):
    """An .ods or .xls sheet, read by pandas' calamine engine, every cell as text."""
    what = _WORKBOOK_KINDS[kind]
    try:
        with pd.ExcelFile(path, engine=WORKBOOK_ENGINES[kind]) as book:
            if sheet is not None and sheet not in book.sheet_names:
                raise ContactsFileError(path, f"has no sheet {sheet!r} (sheets: "
                                              f"{', '.join(book.sheet_names)})")
            frame = pd.read_excel(book, sheet_name=0 if sheet is None else sheet,
                                  header=None, dtype=object, na_filter=False)
    except ContactsFileError:
        raise
    except ImportError as error:
        raise ContactsFileError(path, f"is {what}, which needs the Python package "
                                      f"{error.name or 'named in requirements.txt'}; "
                                      "pip install -r requirements.txt") from None
    except Exception as error:  # the engines raise many kinds for a damaged file
        other = _ole2_other(path) if kind == "xls" else None
        if other:
            raise _not_contacts(path, *other) from None
        raise ContactsFileError(path, f"cannot be read as {what}: {_first_line(error)}"
                                ) from None
    rows = [[_cell_text(value) for value in row]
            for row in frame.itertuples(index=False, name=None)]
    del frame
    return _sheet_table(path, rows, usecols, kind)


def _ole2_other(path):
    """What an OLE2 file that is not a workbook holds instead of a workbook, if known."""
    with open(path, "rb") as handle:
        data = handle.read(16 << 20)
    return next(((what, advice) for stream, what, advice in _OLE2_STREAMS
                 if stream.encode("utf-16-le") in data), None)


###############################################################################
# Reading vCard files #########################################################
###############################################################################
# A .vcf file as a table: one row a card, its TEL lines as phone columns.

# Read here, not by vobject (the vCard parser on PyPI): it was many times slower,
# stopped at Android's quoted-printable soft line breaks and at the first damaged
# card, and kept Google's "https\://" (figures: docs/contact-files.md, "vCard (.vcf)").
# One pass, line by line: only the properties a pop-up uses are kept, and a photo's
# hundreds of lines are dropped as they are read.

#: The label `encoding` carries for a vCard (its delimiter is None, as a workbook's).


#: Properties whose value is a file (a photo is hundreds of lines): never kept.
_VCARD_BLOB = re.compile(rb"[ \t]*(?:[A-Za-z0-9_-]+\.)?(?:PHOTO|LOGO|SOUND|KEY)[ \t]*[;:]", re.I)
_VCARD_KEPT = frozenset({"FN", "N", "ORG", "TEL", "EMAIL", "URL", "NOTE", "X-ABLABEL"})

#: As with a CSV's fax and pager columns, these numbers never call.
_VCARD_NOT_PHONES = frozenset({"fax", "pager"})
_VCARD_PLAIN_TYPES = frozenset({"voice", "pref", "internet"})
_VCARD_2_1_ENCODINGS = frozenset({"QUOTED-PRINTABLE", "BASE64", "B", "8BIT", "7BIT"})

#: [group.]NAME[;parameters]: (without quotes: see _VCARD_NAME and _vcard_colon)
_VCARD_PROPERTY = re.compile(
    r'[ \t]*(?:([A-Za-z0-9_-]+)\.)?([A-Za-z0-9_-]+)[ \t]*(;[^:"]*)?:')


_VCARD_NAME = re.compile(r"[ \t]*(?:([A-Za-z0-9_-]+)\.)?([A-Za-z0-9_-]+)[ \t]*(?=;)")
_VCARD_ESCAPE = re.compile(r"\\(.)")
_VCARD_PARTS = re.compile(r"(?<!\\);")  # between the parts of N and ORG
_APPLE_LABEL = re.compile(r"_\$!<(.*)>!\$_")  # Apple's own labels: _$!<Mobile>!$_
#: What a card gives its row (_vcard_fields()): its texts, then its (number, label)s.
VCard = collections.namedtuple("VCard", "name company email url note numbers")
#: The columns of a vCard file's table, and the field of a card each holds; its
#: numbers follow as "Phone N" and "Phone N - Label".
_VCARD_COLUMNS = {"Name": "name", "Company": "company", "E-mail": "email", "URL": "url",
                  "Note": "note"}
_NO_CARD = VCard("", "", "", "", "", ())  # a damaged card keeps its number, nothing else


def _read_vcard(path, encoding):
    """A vCard file as a Table with a row per card (numbered from 1): Name (FN, else
    N), Company (ORG's first part), Phone 1, Phone 1 - Label, ..., E-mail, URL, Note.
    A damaged card is an empty row, reported in `skipped` with its line number."""
    skipped, decoded = [], collections.Counter()
    try:
        handle, lines = _vcard_open(path, encoding)
        with handle:
            cards = [_NO_CARD if properties is None else _vcard_fields(properties)
                     for properties in _vcard_cards(
                         _vcard_logical_lines(lines, encoding, decoded), skipped)]
    except OSError as error:
        raise ContactsFileError(path, f"cannot be read: {error.strerror or error}") from None
    if not cards:
        raise ContactsFileError(path, "is a vCard file without a single card")
    if all(card is _NO_CARD for card in cards):
        raise ContactsFileError(path, f"none of its {len(cards)} vCards can be read "
                                      f"(card 1: {next(r for c, r in skipped if c)})")
    width = max(len(card.numbers) for card in cards)
    columns = {header: [getattr(card, field) for card in cards]
               for header, field in _VCARD_COLUMNS.items()}
    for n in range(width):
        numbers = [card.numbers[n] if n < len(card.numbers) else ("", "")
                   for card in cards]
        columns[f"Phone {n + 1}"] = [number for number, _label in numbers]
        columns[f"Phone {n + 1} - Label"] = [label for _number, label in numbers]
    del cards
    arrays = {}
    for header, values in columns.items():
        arrays[header] = np.empty(len(values), dtype=object)
        arrays[header][:] = values
    blocks = [{header: values[start:start + _READ_ROWS] for header, values in arrays.items()}
              for start in range(0, len(arrays["Name"]), _READ_ROWS)]
    label = encoding or " and ".join(name for name in ("utf-8", "windows-1255")
                                     if decoded[name]) or "utf-8"
    return Table(list(arrays), blocks, "vcard", label, None, [], skipped, first_row=1)


def _vcard_open(path, encoding):
    """(the open file, its lines as bytes); a UTF-16 file's lines re-encoded as UTF-8."""
    with open(path, "rb") as handle:
        utf16 = handle.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    if utf16 or (encoding and codecs.lookup(encoding).name.startswith("utf-16")):
        handle = open(path, encoding=encoding or "utf-16", errors="replace", newline="")
        return handle, (line.encode("utf-8", "surrogatepass") for line in handle)
    handle = open(path, "rb")
    return handle, handle


def _vcard_logical_lines(lines, encoding, decoded):
    """(first line number, logical line): folded lines (a line break and a space or
    tab) and quoted-printable soft line breaks (a final "=") joined again, the value
    of a blob (PHOTO, ...) dropped as it is read, never kept.

    Joined as bytes, then decoded (a fold may split a UTF-8 character): as UTF-8 when
    the line is (Windows-1255 Hebrew never is), else as Windows-1255, so an Outlook
    card in the Windows code page, or a damaged byte, garbles no other line. `decoded`
    counts the lines that needed each."""
    line, more, start, blob, soft = None, None, 0, False, False
    for number, raw in enumerate(lines, 1):
        raw = raw.rstrip(b"\r\n")
        if soft and raw.upper() != b"END:VCARD":
            if more is None:
                more = [line]
            more[-1] = more[-1][:-1]  # the "=" that breaks the line
            more.append(raw)
            soft = raw.endswith(b"=")
            continue
        first = raw[:1]
        if first == b" " or first == b"\t":
            if line is not None and not blob:
                if more is None:
                    more = [line]
                more.append(raw[1:])
            continue
        if not raw or raw.isspace() or (blob and b":" not in raw):  # vCard 2.1 base64
            continue                                    # lines need not be indented
        if line is not None:
            if more is not None:
                line, more = b"".join(more), None
            yield start, line.decode("ascii") if not encoding and line.isascii() \
                else _vcard_text_line(line, encoding, decoded)
        blob = _VCARD_BLOB.match(raw) is not None
        line, start = b"PHOTO:" if blob else raw, number
        soft = raw.endswith(b"=") and not blob and \
            b"QUOTED-PRINTABLE" in raw.partition(b":")[0].upper()
    if line is not None:
        if more is not None:
            line = b"".join(more)
        yield start, _vcard_text_line(line, encoding, decoded)


def _vcard_text_line(raw, encoding, decoded):
    if encoding:
        return raw.decode(encoding, "replace").lstrip("\ufeff")
    if raw.isascii():
        return raw.decode("ascii")
    try:
        text = raw.decode("utf-8")
        decoded["utf-8"] += 1
    except UnicodeDecodeError:
        text = raw.decode(LEGACY_ENCODING, "replace")
        decoded["windows-1255"] += 1
    return text.lstrip("\ufeff")


def _vcard_cards(logical_lines, skipped):
    """Each card's kept properties, as a list of (group, NAME, ";parameters", value),
    in file order. A damaged card (a line that is no property, no END:VCARD) gives
    None and (its number, why) in `skipped`; text outside any card is reported there
    too."""
    card, number, start, problem, outside = None, 0, 0, None, False
    for line_number, line in logical_lines:
        match = _VCARD_PROPERTY.match(line)
        if match is not None:
            group, name, parameters = match.groups()
            colon = match.end() - 1
        else:  # a colon in a quoted parameter (TYPE="a:b"), or no property at all
            match = _VCARD_NAME.match(line)
            colon = _vcard_colon(line, match.end()) if match else -1
            group, name = match.groups() if match else (None, "")
            parameters = line[match.end():colon] if colon > 0 else ""
        name = name.upper()
        if (name == "BEGIN" or name == "END") and line[colon + 1:].strip().upper() != "VCARD":
            name = ""  # BEGIN:VCALENDAR and such, inside a card: ignored
        if name == "BEGIN":
            if card is not None:
                yield _damaged_card(number, start, "no END:VCARD before the next card",
                                    skipped)
            card, number, start, problem, outside = [], number + 1, line_number, None, False
        elif card is None:
            if not outside:
                skipped.append((None, f"line {line_number}: not inside a card "
                                      f"(BEGIN:VCARD ... END:VCARD), ignored: {_clip(line)!r}"))
            outside = True
        elif name == "END":
            yield card if problem is None else _damaged_card(number, start, problem, skipped)
            card = None
        elif problem is not None:
            continue
        elif colon < 0:
            problem = f"line {line_number} is not a vCard property: {_clip(line)!r}"
        elif name in _VCARD_KEPT:
            card.append((group.upper() if group else "", name, parameters,
                         line[colon + 1:]))
    if card is not None:
        yield _damaged_card(number, start, "no END:VCARD before the end of the file",
                            skipped)


def _damaged_card(number, start, problem, skipped):
    skipped.append((number, f"{problem}; the card from line {start} is skipped"))
    return None


def _vcard_colon(line, after):
    """Where the value of a property line begins (-1: nowhere); a colon inside a
    quoted parameter (TYPE="a:b") does not count."""
    colon = line.find(":", after)
    if colon < 0 or '"' not in line[after:colon]:
        return colon
    quoted = False
    for position in range(after, len(line)):
        if line[position] == '"':
            quoted = not quoted
        elif line[position] == ":" and not quoted:
            return position
    return -1


def _vcard_fields(properties):
    """(name, company, e-mail, URL, note, ((number, label), ...)) of one card."""
    full_name = structured_name = company = email = url = note = ""
    phones, labels = [], {}
    for group, name, parameters, value in properties:
        types, encoding, charset, custom = _vcard_parameters(parameters) \
            if parameters else ((), "", "", "")
        if name == "TEL":
            number = _vcard_decode(value, encoding, charset).strip()
            if number[:4].lower() == "tel:":  # vCard 4.0: tel:+972-52-555-1234;ext=12
                number = number[4:].partition(";")[0]
            if number and not _VCARD_NOT_PHONES.intersection(types):
                phones.append((group, number, custom or ", ".join(
                    kind.capitalize() for kind in types if kind not in _VCARD_PLAIN_TYPES)))
            continue
        text = _vcard_decode(value, encoding, charset)
        if name == "FN" and not full_name:
            full_name = _vcard_unescape(text)
        elif name == "N" and not structured_name:
            family, given, middle, prefix, suffix = (
                [_vcard_unescape(part) for part in _VCARD_PARTS.split(text)] + [""] * 5)[:5]
            structured_name = " ".join(part for part in (prefix, given, middle, family,
                                                         suffix) if part)
        elif name == "ORG" and not company:
            company = _vcard_unescape(_VCARD_PARTS.split(text)[0])
        elif name == "EMAIL" and not email:
            email = _vcard_unescape(text)
        elif name == "URL" and not url:
            url = _vcard_unescape(text)
        elif name == "NOTE" and not note:
            note = _vcard_unescape(text)
        elif name == "X-ABLABEL" and group:
            label = _vcard_unescape(text)
            apple = _APPLE_LABEL.fullmatch(label)
            labels[group] = apple[1] if apple else label
    numbers = tuple((number, labels.get(group) or label) if group else (number, label)
                    for group, number, label in phones)
    return VCard(full_name or structured_name, company, email, url, note, numbers)


@functools.lru_cache(maxsize=4096)  # a file repeats a few dozen kinds over and over
def _vcard_parameters(parameters):
    """(types, encoding, charset, custom label) of a property's ";parameters", in the
    3.0/4.0 form (TYPE=CELL,VOICE) or the 2.1 one (;CELL;QUOTED-PRINTABLE), with
    Samsung's X-CUSTOM(CHARSET=UTF-8,ENCODING=QUOTED-PRINTABLE,label)."""
    types, encoding, charset, custom = [], "", "", ""
    for parameter in parameters[1:].split(";"):
        key, equals, value = parameter.partition("=")
        key = key.strip().upper()
        if key.startswith("X-CUSTOM("):
            *settings, label = parameter.strip()[9:].rstrip(")").split(",")
            custom = _vcard_decode(label, "QUOTED-PRINTABLE" if any(
                "QUOTED-PRINTABLE" in s.upper() for s in settings) else "", "utf-8")
        elif not equals:
            if key in _VCARD_2_1_ENCODINGS:
                encoding = key
            elif key:
                types.append(key.lower())
        elif key == "TYPE":
            types.extend(kind.strip().lower() for kind in value.strip('"').split(",")
                         if kind.strip())
        elif key == "ENCODING":
            encoding = value.strip().upper()
        elif key == "CHARSET":
            charset = value.strip()
    return tuple(types), encoding, charset, custom


def _vcard_decode(value, encoding, charset):
    """A value's text: quoted-printable decoded, its bytes read in its CHARSET (else
    UTF-8, else Windows-1255)."""
    if encoding != "QUOTED-PRINTABLE":
        return value
    data = binascii.a2b_qp(value.encode("utf-8", "surrogatepass"))
    for candidate in (charset, "utf-8"):
        try:
            return data.decode(candidate) if candidate else data.decode("utf-8")
        except (LookupError, ValueError):  # an unknown CHARSET; bytes not in it
            continue
    return data.decode(LEGACY_ENCODING, "replace")


def _vcard_unescape(text):
    """3.0 and 4.0 escapes undone: \\, \\; \\: (Google writes https\\://) \\\\ and \\n."""
    if "\\" not in text:
        return text.strip()
    return _VCARD_ESCAPE.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1),
                             text).strip()


###############################################################################
# Reading a contacts file #####################################################
###############################################################################
# read_table(): any supported file as a Table of text cells, by its kind.


def read_table(path, *, encoding=None, delimiter=None, sheet=None, usecols=None,
               engine="c", names=(), head=None):
    """Open a contacts file for reading with every cell as text (`usecols`: headers to
    keep; `names`: every header of a text file, to name the columns of cells skipped;
    `head`: its _read_head(), when read already). Its blocks raise _ReadAgain when an
    encoding guess turns out wrong."""
    path = Path(path)
    if head is None:
        head = _read_head(path)
    kind = _file_kind(path, head)
    if kind == "xlsx":
        return _read_xlsx(path, sheet, usecols)
    if kind in WORKBOOK_ENGINES:
        return _read_workbook(path, kind, sheet, usecols)
    if kind == "vcard":
        return _read_vcard(path, encoding)
    warnings, provisional = [], False
    if encoding is None:
        encoding, warnings, provisional = _detect_encoding(path, head)
    elif codecs.lookup(encoding).name == LEGACY_ENCODING:
        encoding, warnings = "windows-1255", _legacy_encoding(path)[1]
    text_head = head.decode(encoding, errors="ignore")
    if delimiter is None:
        delimiter = _sniff_delimiter(text_head, path.suffix.lower())
    skipped, oversized = [], []
    blocks = _csv_blocks(path, delimiter, encoding, usecols, engine, provisional, skipped,
                         oversized, names)
    return Table([], blocks, "csv", encoding, delimiter, warnings, skipped,
                 oversized=oversized)


###############################################################################
# Choosing columns ############################################################
###############################################################################
# Which headers are the name, company, phones and URL: by their words, or as options
# say.


@dataclasses.dataclass(frozen=True)
class ColumnChoice:
    """Which headers of the file became the name, company, phones and URL."""

    name: tuple = ()
    company: str | None = None
    phones: tuple = ()
    url: str | None = None
    join_names: bool = False  # --name-column A+B: always join, never "A, else B"
    labels: tuple = ()  # (phone header, its label header): Phone 1 - Value, Phone 1 - Label

# Headers are compared as lower-case words, so "Mobile Phone", "mobile_phone" and
# "MOBILE-PHONE" read alike, and a word never matches inside another ("Telex").

_PHONE_WORDS = {"phone", "phones", "mobile", "tel", "telephone", "cell", "cellphone",
                "cellular", "gsm", "טלפון", "נייד", "פלאפון", "סלולרי", "סלולר", "טל",
                "טלפונים"}


_NOT_PHONE_WORDS = {"label", "type", "fax", "pager", "ext", "extension", "phonetic",
                    "email", "mail", "e", "telex", "פקס", "שלוחה"}


_COMPANY_HEADERS = {"company", "company name", "organization", "organization name",
                    "organisation", "organisation name", "organization 1 name",
                    "business", "business name", "firm", "account", "account name",
                    "employer", "חברה", "שם חברה", "שם החברה", "ארגון", "עסק", "שם עסק",
                    "שם העסק"}


_FULL_NAME_HEADERS = {"name", "full name", "display name", "contact", "contact name",
                      "client", "client name", "customer", "customer name", "שם",
                      "שם מלא", "איש קשר", "שם איש קשר", "שם לקוח", "לקוח", "שם הלקוח"}


_FIRST_NAME_HEADERS = {"first name", "given name", "firstname", "first", "שם פרטי"}
_MIDDLE_NAME_HEADERS = {"middle name", "additional name", "middlename"}
_LAST_NAME_HEADERS = {"last name", "family name", "surname", "lastname", "last",
                      "שם משפחה"}


_NOT_NAME_WORDS = {"phonetic", "yomi", "nickname", "prefix", "suffix", "file", "user",
                   "manager", "assistant", "spouse", "children", "referred", "partner",
                   "company", "organization", "organisation", "business", "email", "mail",
                   "e", "account", "חברה", "ארגון", "עסק", "פרטי", "משפחה", "first", "last",
                   "middle", "given", "family", "label", "type"}


_URL_HEADERS = {"url", "link", "crm", "crm url", "crm link", "popup url", "קישור"}


def _words(header):
    return re.findall(r"[^\W_]+", header.lower())


def _phrase(header):
    return " ".join(word for word in _words(header) if not word.isdigit()) if \
        re.match(r"(?i)organi[sz]ation \d", header) else " ".join(_words(header))


def choose_columns(headers, *, name_column=None, company_column=None, phone_columns=None,
                   url_column=None, path=""):
    """Decide which headers are the name, company, phones and URL (overrides win)."""
    by_lower = {}
    for header in headers:
        by_lower.setdefault(header.lower(), header)

    def named(header, option):
        found = by_lower.get(header.strip().lower())
        if found is None:
            raise ContactsFileError(path, f"{option} {header!r} is not a column of this "
                                          f"file (columns: {_list_headers(headers)})")
        return found

    phrases = {header: _phrase(header) for header in headers}
    if phone_columns:
        phones = tuple(named(header, "--phone-columns") for header in phone_columns)
    else:
        phones = tuple(h for h in headers if _is_phone_header(h))
    if company_column:
        company = named(company_column, "--company-column")
    else:
        company = next((h for h in headers if phrases[h] in _COMPANY_HEADERS), None)
    if name_column:
        name = tuple(named(part, "--name-column") for part in name_column.split("+"))
    else:
        name = _choose_name(headers, phrases, exclude=set(phones) | {company})
    if url_column:
        url = named(url_column, "--url-column")
    else:
        url = next((h for h in headers if phrases[h] in _URL_HEADERS), None)
    labels = tuple((phone, label) for phone, label in (
        (phone, next((by_lower[candidate] for candidate in _label_headers(phone)
                      if candidate in by_lower), None)) for phone in phones) if label)
    return ColumnChoice(name=name, company=company, phones=phones, url=url,
                        join_names=bool(name_column), labels=labels)


def _label_headers(phone):
    """Where a phone column's label may be, lower-case: Google's "Phone 1 - Value" has
    "Phone 1 - Label" (older exports: "Phone 1 - Type"), a vCard's "Phone 1" too."""
    base = re.sub(r"(?i)\s*-\s*value$", "", phone).lower()
    return (f"{base} - label", f"{base} - type")


#: Words of a phone's label (Google's "Work Fax", "Home Fax") that say it never
#: calls: its number is no caller, and is offered neither a call nor WhatsApp.
_NOT_CALLER_LABEL_WORDS = frozenset({"fax", "פקס", "pager"})


def _is_fax_label(text):
    return bool(_NOT_CALLER_LABEL_WORDS.intersection(_words(str(text))))


def _without_faxes(block, choice):
    """`block` with the phone cells its label column calls a fax (or a pager) made
    empty; the block itself when there are none."""
    kept = block
    for phone, label in choice.labels:
        labels = block.get(label)
        if labels is None or phone not in block:
            continue
        faxes = [text for text in set(labels.tolist()) if text and _is_fax_label(text)]
        if faxes:
            if kept is block:
                kept = dict(block)
            cells = kept[phone].copy()
            cells[np.isin(labels, faxes)] = ""
            kept[phone] = cells
    return kept


def _is_phone_header(header):
    words = set(_words(header))
    return bool(words & _PHONE_WORDS) and not words & _NOT_PHONE_WORDS


def _choose_name(headers, phrases, exclude):
    """A full-name column and/or first, middle and last name columns. A looser guess
    ("Client Name", "שם הלקוח") only when neither exists, so that Outlook's
    "Manager's Name" never names the contact."""
    candidates = [h for h in headers if h not in exclude]
    full = next((h for h in candidates if phrases[h] in _FULL_NAME_HEADERS), None)
    parts = tuple(next((h for h in candidates if phrases[h] in group), None)
                  for group in (_FIRST_NAME_HEADERS, _MIDDLE_NAME_HEADERS,
                                _LAST_NAME_HEADERS))
    parts = tuple(h for h in parts if h)
    if full is None and not parts:
        full = next((h for h in candidates if set(_words(h)) & {"name", "שם"}
                     and not set(_words(h)) & _NOT_NAME_WORDS
                     and not set(_words(h)) & _PHONE_WORDS), None)
    # A full-name column comes first; the parts fill rows where it is empty.
    return ((full,) if full else ()) + parts


def _names(block, choice, size):
    """The block's names: the full-name column, or first, middle and last joined."""
    if not choice.name:
        return _blank(size)
    columns = [block[header] for header in choice.name]
    if len(columns) == 1:
        return columns[0]
    full, parts = (columns[0], columns[1:]) \
        if _is_full_name(choice.name[0]) and not choice.join_names else (None, columns)
    joined = np.empty(size, dtype=object)
    joined[:] = [" ".join(p.strip() for p in cells if p and p.strip())
                 for cells in zip(*parts)]
    if full is None:
        return joined
    return np.where(np.array([bool(n.strip()) for n in full], dtype=bool), full, joined)


def _is_full_name(header):
    return _phrase(header) not in (_FIRST_NAME_HEADERS | _MIDDLE_NAME_HEADERS |
                                   _LAST_NAME_HEADERS)


def _list_headers(headers, limit=12):
    shown = ", ".join(repr(h) for h in headers[:limit])
    return shown + (f", ... ({len(headers)} in all)" if len(headers) > limit else "")


###############################################################################
# Phone numbers ###############################################################
###############################################################################
# One integer key per number (its E.164 digits): phonenumbers, or fast paths agreeing
# with it.

WITHHELD_CALLER_IDS = frozenset(
    {"anonymous", "restricted", "private", "unknown", "unavailable", "withheld",
     "blocked", "no caller id", "חסום", "חסוי", "פרטי", "לא ידוע"})

# One canonical key per number: its E.164 digits as an int (+972 72-277-6772 is
# 972722776772). The reference is phonenumbers.parse() with the default region; it
# costs tens of microseconds a number, so plain digit strings in the home country take
# fast paths (_fast_key for one string, column_keys for a column).
# The invariant: a fast path gives exactly the key phonenumbers would, or none and
# defers to phonenumbers. NumberRules says, per form of writing, which first two digits
# and lengths of a national number the fast paths may take; number_rules() learns that
# by asking phonenumbers itself on samples of each, so the two cannot drift apart when
# the metadata changes. Everything else (foreign numbers, letters, unusual prefixes)
# goes to phonenumbers.

FORM_PLUS, FORM_00, FORM_NATIONAL, FORM_CC, FORM_BARE = range(5)
_FORM_TEXT = {
    FORM_PLUS: "+{cc}{n}", FORM_00: "00{cc}{n}", FORM_NATIONAL: "0{n}",
    FORM_CC: "{cc}{n}", FORM_BARE: "{n}"}


_MAX_FAST_LENGTH = 13
_POW10 = 10 ** np.arange(19, dtype=np.int64)

#: Characters that only format a number; removing them never changes it.
_FORMATTING = " -()\u00a0\u2010\u2011\u2012\u2013\u2014\u200e\u200f\u202a\u202b\u202c"
_DELETE_FORMATTING = str.maketrans("", "", _FORMATTING)
_CELL_SEPARATORS = re.compile(r"\s*(?::::|/|;|,|\||\r?\n|\bor\b|\bאו\b)\s*", re.I)
_EXTENSION = re.compile(
    r"(?:\b(?:ext|extension|ex)\.?|(?<=[\d\s)])x|#|שלוחה|שלו'|שלוחה:)\s*:?\s*\d{1,6}\s*$",
    re.I)


#: A label before or after a number: "home: 054-...", "054-... (mobile)", "נייד 054-...".
_LABELS = re.compile(r"^\s*\(?[^\W\d_]+\)?\s*[:\-]?\s*(?=[+(\d])|(?<=[\d)])\s*\(?[^\W\d_]+\)?\s*$")
_SCIENTIFIC = re.compile(r"[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+")
_EXCEL_FLOAT = re.compile(r"(\+?\d+)\.0+")


@dataclasses.dataclass(frozen=True)
class NumberRules:
    """What the fast path may do for one default region (see number_rules())."""

    region: str
    country_code: int
    cc_digits: str
    #: fast[form, first two digits of the national number, its length]
    fast: np.ndarray = dataclasses.field(repr=False, compare=False)

    @functools.cached_property
    def bare_is_national(self):
        """Whether phonenumbers reads digits that start with neither 0 nor the country
        code as the national number itself (its national prefix, if any, is "0")."""
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(self.region)
        return metadata.national_prefix_for_parsing in (None, "0") \
            and metadata.national_prefix_transform_rule is None \
            and not self.cc_digits.startswith("0")

    @functools.cached_property
    def fast_flat(self):
        """`fast` as bytes, indexed [(form * 100 + prefix) * 14 + length]: a bytes index
        costs a fifth of numpy's three-way one, on every request."""
        return self.fast.astype(np.uint8).tobytes()


@functools.lru_cache(maxsize=None)
def number_rules(region):
    """Learn, from phonenumbers itself, where the fast path agrees with it."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    country_code = metadata.country_code
    cc = str(country_code)
    pattern = re.compile(metadata.general_desc.national_number_pattern or r"\d+")
    lengths = [n for n in (metadata.general_desc.possible_length or range(4, 14))
               if 2 <= n <= _MAX_FAST_LENGTH]
    international = re.compile(metadata.international_prefix or r"(?!)")
    fast = np.zeros((5, 100, _MAX_FAST_LENGTH + 1), dtype=bool)
    rng = random.Random(f"popup-server:{region}")
    prefix_is_clear = functools.lru_cache(maxsize=None)(
        lambda form, head: _international_prefix_is(international, _FORM_TEXT[form], cc,
                                                    head, 2 if form == FORM_00 else 0))
    for length in lengths:
        for prefix in range(10, 100):
            head = str(prefix)
            tails = [0, 10 ** (length - 2) - 1] + [rng.randrange(10 ** (length - 2))
                                                   for _ in range(30)]
            samples = [head + str(tail).zfill(length - 2) for tail in tails]
            if not all(pattern.fullmatch(n) for n in samples):
                continue  # phonenumbers would not strip a prefix: not uniform here
            # Written as cc + number, phonenumbers strips the cc only when the whole
            # is not itself a national number (in Germany, 49... can be both).
            cc_is_stripped = not any(pattern.fullmatch(cc + n) for n in samples)
            for form, template in _FORM_TEXT.items():
                if form == FORM_BARE and (cc.startswith(head[: len(cc)]) or
                                          head.startswith(cc[:2])):
                    continue  # a bare number that starts like the country code
                if form == FORM_CC and not cc_is_stripped:
                    continue
                if form == FORM_BARE and _foreign_length_possible(head, length):
                    continue  # it may be a foreign number written without its +
                if not prefix_is_clear(form, head):
                    continue  # e.g. Israel's 0105...: a carrier's international prefix
                fast[form, prefix, length] = all(  # lowest, highest and a random one
                    _reference_e164(template.format(cc=cc, n=n), region) == f"+{cc}{n}"
                    for n in samples[:3])
    return NumberRules(region, country_code, cc, fast)


def _foreign_length_possible(head, length):
    """Whether a number of `length` digits starting with `head` (two digits), read with
    a "+" in front, has a length its country code allows: only then can it be a valid
    foreign number written without its + (_written_without_plus). Exact, not sampled:
    a valid number always has a possible length."""
    codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
    if int(head[0]) in codes:
        candidates = [int(head[0])]
    elif int(head) in codes:
        candidates = [int(head)]
    else:
        candidates = [code for code in range(int(head) * 10, int(head) * 10 + 10)
                      if code in codes]
    every = [(code, region) for code in candidates for region in codes[code]]
    for code, region in every:  # each region sharing a code (+1: the US, Canada, ...)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            code, region)
        lengths = metadata.general_desc.possible_length if metadata else None
        # Read with a +, the country's own national prefix is stripped too (+1 1201...
        # is +1 201...): each of its plain alternatives may shorten the number; a
        # prefix rule of any other shape may do anything, so the length proves nothing.
        prefix = metadata.national_prefix_for_parsing if metadata else None
        if not lengths or (metadata.national_prefix_transform_rule if metadata else None) \
                or (prefix and not re.fullmatch(r"\d+(?:\|\d+)*", prefix)):
            return True
        strips = {0, *(len(part) for part in prefix.split("|"))} if prefix else {0}
        if any(length - len(str(code)) - strip in lengths for strip in strips):
            return True
    return False


def _international_prefix_is(international, template, cc, head, expected):
    """Whether the region's international prefix takes exactly `expected` leading
    characters of this form, whatever the next two digits (prefixes are <= 4 long)."""
    for follow in range(100):
        match = international.match(template.format(cc=cc, n=f"{head}{follow:02d}"))
        if (match.end() if match else 0) != expected:
            return False
    return True


def _reference_e164(text, region):
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _fast_key(digits, plus, rules):
    """The key of an ASCII digit string (of at least MIN_NUMBER_DIGITS) by the fast
    path, or None to ask phonenumbers."""
    cc = rules.cc_digits
    if plus:
        if not digits.startswith(cc):
            return None
        form, start = FORM_PLUS, len(cc)
    elif digits[0] == "0":
        if digits[1] != "0":
            form, start = FORM_NATIONAL, 1
        elif digits.startswith(cc, 2):
            form, start = FORM_00, 2 + len(cc)
        else:
            return None
    elif digits.startswith(cc):
        form, start = FORM_CC, len(cc)
    else:
        form, start = FORM_BARE, 0
    length = len(digits) - start  # of the national number
    if not 2 <= length <= _MAX_FAST_LENGTH or digits[start] == "0":
        return None
    if not rules.fast_flat[(form * 100 + int(digits[start:start + 2]))
                           * (_MAX_FAST_LENGTH + 1) + length]:
        return None
    return rules.country_code * _INT_POW10[length] + int(digits[start:])


_INT_POW10 = tuple(10 ** n for n in range(_MAX_FAST_LENGTH + 1))


def number_key(text, rules):
    """(key, problem) for one written number; key None means not usable (see problem)."""
    if text.isdigit() and text.isascii():  # how Voicenter sends caller ids: nothing to strip
        if MIN_NUMBER_DIGITS <= len(text) <= MAX_NUMBER_DIGITS:
            key = _fast_key(text, False, rules)
            if key is not None:
                return key, None
        plus, digits = False, text
    else:
        text = text.strip()
        plus = text.startswith("+")
        # For ASCII, four replaces cost a third of the translate (on every request).
        digits = (text.replace(" ", "").replace("-", "").replace("(", "").replace(")", "")
                  if text.isascii() else text.translate(_DELETE_FORMATTING))
        if plus:
            digits = digits[1:]
    if digits.isascii() and digits.isdigit():
        if len(digits) < MIN_NUMBER_DIGITS:
            return None, "too short to be a phone number"
        if len(digits) > MAX_NUMBER_DIGITS:
            return None, "too many digits for one phone number"
        key = _fast_key(digits, plus, rules)
        if key is not None:
            return key, None
    elif sum(ch.isdigit() for ch in text) < MIN_NUMBER_DIGITS:
        return None, "too short to be a phone number" if any(
            ch.isdigit() for ch in text) else "no digits"
    if not plus and digits[:1] not in ("0", "") and digits.isascii() and digits.isdigit() \
            and not digits.startswith(rules.cc_digits) and rules.bare_is_national \
            and phonenumbers.is_valid_number(phonenumbers.PhoneNumber(
                country_code=rules.country_code, national_number=int(digits))):
        # A valid national number written bare (an Israeli mobile without its 0):
        # what parse() gives, at a third of its cost.
        return rules.country_code * 10 ** len(digits) + int(digits), None
    try:
        number = phonenumbers.parse(text, rules.region)
    except phonenumbers.NumberParseException as error:
        return None, f"not a phone number ({_first_line(error.args[0] if error.args else error)})"
    if not plus:
        bare = text.translate(_DELETE_FORMATTING).replace(".", "")
        if bare[:1] not in ("0", "") and bare.isascii() and bare.isdigit():
            number = _written_without_plus(number, bare)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not 1 + MIN_NUMBER_DIGITS <= len(e164) <= 1 + MAX_NUMBER_DIGITS:
        return None, "not a phone number"
    return int(e164[1:]), None


def _written_without_plus(number, digits):
    """A number as Voicenter and many exports write a foreign one, its country code
    without a "+" (33612345678): when it is no valid number of the region but is valid
    with a "+", it is that country's. A valid number of the region stays one
    (541234567, an Israeli mobile without its 0, is never Argentina's +54...)."""
    if phonenumbers.is_valid_number(number):
        return number
    try:
        foreign = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return number
    return foreign if phonenumbers.is_valid_number(foreign) else number


def cell_keys(cell, rules):
    """Every number in one cell: ([keys], [problems]). Several numbers, extensions
    and Excel's damage are handled here; a cell without digits is simply empty."""
    if len(cell) > MAX_PHONE_CELL_CHARS:  # parsing it could take long: say so instead
        return [], [f"{len(cell):,} characters: longer than any phone cell could be"]
    text = cell.strip()
    if not any(ch.isdigit() for ch in text):
        return [], []
    if _SCIENTIFIC.fullmatch(text):
        return [], ["in scientific notation: Excel has dropped its last digits; format "
                    "the column as text and type the number again"]
    keys, problems = [], []
    for part in _CELL_SEPARATORS.split(text):
        part = _LABELS.sub("", _EXTENSION.sub("", part)).strip()
        if not part or not any(ch.isdigit() for ch in part):
            continue
        if sum(ch.isalpha() for ch in part) >= 3:
            # phonenumbers would read the letters as a keypad (1-800-FLOWERS): in a
            # contacts file they are far more likely a note, so say so, don't guess.
            problems.append("has words in it, not only a number")
            continue
        excel_float = _EXCEL_FLOAT.fullmatch(part)
        if excel_float:
            part = excel_float.group(1)  # 541234567.0: a number cell, not a decimal
        key, problem = number_key(part, rules)
        if key is None:
            problems.append(problem)
        elif key not in keys:
            keys.append(key)
    return keys, problems


def normalize_number(text, region=DEFAULTS["region"]):
    """The E.164 form ("+972722776772") of one written number, or None."""
    if text is None or _is_withheld(str(text)):
        return None
    key, _ = number_key(str(text), number_rules(_region(region)))
    return None if key is None else f"+{key}"


def written_number(text, region=DEFAULTS["region"]):
    """A number as the pages write it, whatever form it came in: one of the region's
    as dialled at home (054-777-1111), any other international (+33 6 12 34 56 78);
    text that is no number, as it is."""
    if not text or len(text) > 64:  # no number; and the cache keeps only short texts
        return text
    return _written_number(text, region)


@functools.lru_cache(maxsize=4096)  # a page shows the same numbers again and again
def _written_number(text, region):
    key = number_key(text, number_rules(region))[0]
    if key is None:
        return text
    number = phonenumbers.parse(f"+{key}", None)
    same_country = number.country_code == number_rules(region).country_code
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL
                                      if same_country else
                                      phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _is_withheld(text):
    if text.isdigit():
        return False  # the usual caller id: checked first, it is the hot path
    stripped = text.strip()
    return not stripped or stripped.lower() in WITHHELD_CALLER_IDS or not any(
        ch.isdigit() for ch in stripped)


def _e164(key):
    return None if key is None else f"+{key}"

# The same rules as _fast_key(), applied to a whole column at once: the cells are
# joined into one byte string and digits are summed per cell with numpy. A cell with
# anything but digits, formatting and a leading "+" is left to cell_keys().

_UNIT_SEPARATOR = "\x1f"
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)   # 0 other, 1 digit, 2 formatting, 3 "+", 4 sep
_BYTE_CLASS[ord("0"): ord("9") + 1] = 1
for _char in " -()":
    _BYTE_CLASS[ord(_char)] = 2


_BYTE_CLASS[ord("+")] = 3
_BYTE_CLASS[ord(_UNIT_SEPARATOR)] = 4
_FAST_CHUNK = 32_768  # small enough that its arrays stay in cache (measured)
_MAX_FAST_CELL_BYTES = 64  # a longer cell is no single number written plainly


def column_keys(cells, rules):
    """Keys of a column of single-number cells: (keys int64, 0 where none; handled bool,
    False where the cell needs cell_keys(); blank bool, True where it has no digit)."""
    keys = np.zeros(len(cells), dtype=np.int64)
    handled = np.zeros(len(cells), dtype=bool)
    blank = np.zeros(len(cells), dtype=bool)
    for start in range(0, len(cells), _FAST_CHUNK):
        part = slice(start, start + _FAST_CHUNK)
        keys[part], handled[part], blank[part] = _column_keys_chunk(cells[part], rules)
    return keys, handled, blank


#: _DIGIT_WEIGHT[byte * 19 + k] = (byte - 48) * 10**k: a digit's worth k places from
#: the right (flat: one 1-D gather is the cheapest numpy can do).
_DIGIT_WEIGHT = ((np.arange(256, dtype=np.int64)[:, None] - 48) * _POW10[None, :]).ravel()

#: How a cell was written, from (has "+", leading zeros 0/1/2, country code follows
#: them): _FORM[...] is its form (-1: not for the fast path), _STRIPS_CC whether the
#: country code is cut off to leave the national number.
_FORM = np.full((2, 3, 2), -1, dtype=np.int64)
_FORM[1, 0, 1] = FORM_PLUS
_FORM[0, 2, 1] = FORM_00
_FORM[0, 1, :] = FORM_NATIONAL
_FORM[0, 0, 1] = FORM_CC
_FORM[0, 0, 0] = FORM_BARE
_STRIPS_CC = np.isin(_FORM, (FORM_PLUS, FORM_00, FORM_CC))


def _column_keys_chunk(cells, rules):
    count = len(cells)
    data = np.frombuffer(_UNIT_SEPARATOR.join(cells).encode("utf-8", "surrogatepass"),
                         dtype=np.uint8)
    if data.size == 0:  # every cell empty
        return np.zeros(count, np.int64), np.ones(count, bool), np.ones(count, bool)
    klass = _BYTE_CLASS[data]
    # Cell c ends at separator c (the last cell at the end of the data). Positions are
    # mapped to cells by binary search over these ends, not by a pass over every byte.
    ends = np.append(np.flatnonzero(klass == 4), data.size)
    if ends.size != count:  # a cell holds the separator itself: leave all to cell_keys
        return np.zeros(count, np.int64), np.zeros(count, bool), np.zeros(count, bool)
    lengths = np.diff(ends, prepend=-1)  # each cell's bytes and its separator
    long = lengths > _MAX_FAST_CELL_BYTES + 1
    if long.any():  # left to cell_keys: below, each of their digits would cost ~30 bytes
        klass[np.repeat(long, lengths)[:data.size]] = 0
    digit_at = np.flatnonzero(klass == 1)
    first = np.zeros(count + 1, dtype=np.int64)  # digits of cell c: first[c]:first[c+1]
    first[1:] = np.searchsorted(digit_at, ends)
    ndig = np.diff(first)
    other = np.zeros(count, dtype=bool)
    other[np.searchsorted(ends, np.flatnonzero(klass == 0))] = True
    # "+" only once, and before every digit of its cell.
    plus_at = np.flatnonzero(klass == 3)
    plus_cell = np.searchsorted(ends, plus_at)
    plus_count = np.bincount(plus_cell, minlength=count)
    bad_plus = np.zeros(count, dtype=bool)
    bad_plus[plus_cell[np.searchsorted(digit_at, plus_at) > first[plus_cell]]] = True
    plus = plus_count == 1
    bad = other | bad_plus | (plus_count > 1) | (ndig > MAX_NUMBER_DIGITS)
    # The value of each cell's digits: digit * 10 ** (digits after it in its cell).
    digit_bytes = data[digit_at]
    if digit_bytes.size:
        from_right = np.repeat(first[1:] - 1, ndig) - np.arange(digit_bytes.size)
        np.minimum(from_right, 18, out=from_right)
        from_right += digit_bytes.astype(np.int64) * 19
        weighted = _DIGIT_WEIGHT[from_right]
    else:
        weighted = np.zeros(0, np.int64)
    value = np.zeros(count, dtype=np.int64)
    has_digits = ndig > 0
    if has_digits.any():
        value[has_digits] = np.add.reduceat(weighted, first[:-1][has_digits])
    # The first two digits as written (a leading zero is a 0 here, not lost).
    last = max(digit_bytes.size - 1, 0)
    d0 = np.where(ndig >= 1, digit_bytes[np.minimum(first[:-1], last)].astype(np.int64)
                  - 48 if digit_bytes.size else 0, -1)
    d1 = np.where(ndig >= 2, digit_bytes[np.minimum(first[:-1] + 1, last)].astype(np.int64)
                  - 48 if digit_bytes.size else 0, -1)
    keys, ok = _keys_from_value(value, ndig, d0, d1, plus, bad, rules)
    blank = (ndig == 0) & ~other
    return keys, ok | blank, blank


def _keys_from_value(value, ndig, d0, d1, plus, bad, rules):
    """The fast path's keys from each cell's digits (as an int) and how they began:
    the vectorised _fast_key()."""
    cc_value, cc_len = rules.country_code, len(rules.cc_digits)
    zeros = (d0 == 0).astype(np.int64) + ((d0 == 0) & (d1 == 0))
    after_zeros = ndig - zeros
    with np.errstate(all="ignore"):
        top = value // _POW10[np.clip(after_zeros - cc_len, 0, 18)]
        has_cc = (after_zeros > cc_len) & (top == cc_value)
        where = (plus.astype(np.int64), zeros, has_cc.astype(np.int64))
        form = _FORM[where]
        length = after_zeros - cc_len * _STRIPS_CC[where]
        safe_length = np.clip(length, 2, _MAX_FAST_LENGTH)
        national = value % _POW10[safe_length]
        prefix = national // _POW10[safe_length - 2]
        usable = ((form >= 0) & ~bad & (ndig >= MIN_NUMBER_DIGITS) & (length >= 2)
                  & (length <= _MAX_FAST_LENGTH) & (prefix >= 10))
        ok = usable & rules.fast[np.clip(form, 0, 4), np.clip(prefix, 0, 99), safe_length]
        keys = np.where(ok, cc_value * _POW10[safe_length] + national, 0)
    return keys, ok


###############################################################################
# Memory while loading ########################################################
###############################################################################
# How this process uses memory and the garbage collector, for loads and for requests.

# Figures and the commands that measure them: bench/README.md, "Memory while loading".


def tune_for_loading():
    """Once, at start-up: glibc keeps the memory a load frees and reuses it for the next
    block, instead of returning it to the OS and faulting it in again (far fewer page
    faults, a faster load); _return_freed_memory() hands it back after each load."""
    if sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            return
        m_trim_threshold, m_mmap_threshold = -1, -3   # glibc's <malloc.h>
        mallopt(m_mmap_threshold, 256 * 1024 * 1024)
        mallopt(m_trim_threshold, 1024 * 1024 * 1024)


@contextlib.contextmanager
def _bulk_load():
    """Around loading a file: no cyclic garbage collection meanwhile (a load makes no
    cycles, and a collection over its blocks is a good part of the load), no
    transparent huge pages for numpy's arrays, and the memory it freed handed back to
    the OS afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    # Faulting in 2 MiB pages made building the number tables about twice as slow, and
    # lookups gained nothing measurable from them. NUMPY_MADVISE_HUGEPAGE=0 would be the
    # documented switch, but numpy reads it only when first imported and it would hold
    # for the whole process: this private call (skipped where it is missing) covers loads.
    set_huge_pages = getattr(getattr(getattr(np, "_core", None), "multiarray", None),
                             "_set_madvise_hugepage", None)
    huge_pages_were = set_huge_pages(False) if set_huge_pages else None
    try:
        yield
    finally:
        if set_huge_pages:
            set_huge_pages(huge_pages_were)
        if was_enabled:
            gc.enable()
        _return_freed_memory()


def _return_freed_memory():
    """Hand memory freed by a load back to the OS: glibc would keep it in its heap (a
    third of the RSS after a big load). Other C libraries return it by themselves, or
    keep it: nothing to do there."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass


#: Seconds a thread may run Python before the interpreter hands the GIL to another
#: that waits for it (Python's default: 0.005). A request's thread takes the GIL back
#: several times (after reading the request, after each write); behind a background
#: thread's Python work (a Call Log pull storing its records, a contacts reload) each
#: of those waits lasts up to the interval. A pop-up's own Python work is far shorter,
#: so a short interval does not cut requests into more turns (bench/README.md,
#: "Voicenter's Call Log").
SWITCH_INTERVAL = 0.001


def tune_for_serving():
    """Once start-up is over: what it made (modules, phonenumbers' metadata) lives as
    long as the process, so it is frozen out of the collector's full passes, which
    otherwise walk it every few thousand requests (a latency spike each time); and a
    request waits for the GIL behind background work SWITCH_INTERVAL at most."""
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)


###############################################################################
# The index ###################################################################
###############################################################################
# ContactIndex: one source's numbers and texts, built whole by load_index() and never
# changed; several merged into one.


class Contact(typing.NamedTuple):
    """A found contact, whole (lookup()); requests read only what they answer."""

    name: str
    company: str
    url: str
    row: int           # spreadsheet row: the header is row 1
    fields: dict       # the file's columns that templates use, by header


class Match(typing.NamedTuple):
    total: int
    contact: Contact | None
    key: int | None    # the caller's canonical key; None when it had no number

    @property
    def e164(self):
        return _e164(self.key)


NO_FIELDS = types.MappingProxyType({})  # shared by every contact without template columns


class NumberTable:
    """Distinct keys, each with the first row holding it (in file order) and how many
    rows hold it, laid out as a hash table that one lookup reads in three places.

    Keys are grouped by bucket (key modulo a prime near their count) and sorted within
    it; `directory[b]:directory[b + 1]` is bucket b's span. A lookup reads the
    directory, then a bucket of one or two keys, then that key's packed position and
    count: three cache lines, where a binary search over a million keys touches twenty,
    and between requests the caches are cold. A crafted file cannot make a bucket slow:
    bisect runs inside it.

    Plain memoryviews and bisect, not numpy calls, on the request path: numpy's calls
    release and re-take the GIL, and under load every lookup would queue behind
    waitress' main loop. (Figures: bench/README.md, "The index".)
    """

    __slots__ = ("keys", "shared", "_modulus", "_directory", "_keys", "_found")

    def __init__(self, modulus, keys, first_positions, counts):
        """`keys`: distinct, in bucket order (by key % modulus, then key)."""
        self._modulus = modulus
        self.keys = np.asarray(keys, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        self.shared = int((counts > 1).sum())  # numbers held by several contacts
        found = np.asarray(first_positions, dtype=np.int64) << 32
        found |= counts
        directory = np.zeros(modulus + 1,
                             dtype=np.int32 if self.keys.size < 2 ** 31 else np.int64)
        np.cumsum(np.bincount(self.keys % modulus, minlength=modulus), out=directory[1:])
        self._directory = memoryview(directory)
        self._keys, self._found = memoryview(self.keys), memoryview(found)

    @classmethod
    def build(cls, keys, positions):
        """From (key, position) pairs in any order; a contact holding a key twice counts
        once."""
        modulus = _prime_at_least(max(keys.size, 1))  # >= the distinct keys
        keys, positions = _sorted_unique_pairs(keys, positions, modulus)
        distinct = np.ones(keys.size, dtype=bool)
        distinct[1:] = keys[1:] != keys[:-1]
        starts = np.flatnonzero(distinct)
        return cls(modulus, keys[starts], positions[starts],
                   np.diff(np.append(starts, keys.size)))

    def find(self, key):
        """(first position, how many contacts) holding `key`; (0, 0) when none does."""
        directory = self._directory
        bucket = key % self._modulus
        low, high = directory[bucket], directory[bucket + 1]
        if low == high:
            return 0, 0
        keys = self._keys
        if keys[low] != key:
            low = bisect.bisect_left(keys, key, low + 1, high)
            if low == high or keys[low] != key:
                return 0, 0
        found = self._found[low]
        return found >> 32, found & 0xFFFFFFFF


def _prime_at_least(number):
    """The smallest prime >= number (trial division: a few ms for tens of millions)."""
    candidate = max(number, 2)
    while True:
        if candidate < 4 or (candidate % 2 and all(
                candidate % divisor for divisor in range(3, int(candidate ** 0.5) + 1, 2))):
            return candidate
        candidate += 1


def _sorted_unique_pairs(keys, positions, modulus):
    """Sort (key, position) pairs by bucket (key % modulus), then key, then position,
    and drop repeats: a contact listing a number twice counts once.

    Bucket, key and position are packed into one int64 when they fit (bucket * span +
    quotient is at most key + modulus; E.164 keys of up to 12-13 digits leave 20+ bits
    for the position), because numpy sorts plain integers ~10x faster than it lexsorts
    three arrays, and one sort then serves both the dedup and the hash table.
    """
    quotients, buckets = np.divmod(keys, modulus)
    position_bits = int(positions.max()).bit_length() if positions.size else 0
    if keys.size and (int(keys.max()) + modulus).bit_length() + position_bits <= 63:
        span = int(quotients.max()) + 1
        packed = buckets * span
        packed += quotients
        del quotients, buckets
        packed <<= position_bits
        packed |= positions
        packed.sort()
        keep = np.empty(packed.size, dtype=bool)
        keep[0] = True
        np.not_equal(packed[1:], packed[:-1], out=keep[1:])
        if not keep.all():
            packed = packed[keep]
        positions = (packed & ((1 << position_bits) - 1)).astype(np.int32)
        packed >>= position_bits
        buckets, quotients = np.divmod(packed, span)
        quotients *= modulus
        quotients += buckets
        return quotients, positions  # the keys again
    positions = positions.astype(np.int64)
    order = np.lexsort((positions, keys, buckets))
    keys, positions = keys[order], positions[order]
    keep = np.ones(keys.size, dtype=bool)
    keep[1:] = (keys[1:] != keys[:-1]) | (positions[1:] != positions[:-1])
    return keys[keep], positions[keep].astype(np.int32)


class TextRows:
    """Each contact's text fields (name, company, URL, then any columns URL templates
    use) in one UTF-8 buffer, every field followed by a NUL, and one array of where each
    row ends: a few bytes a field instead of a Python str's ~50, one place to read per
    lookup, and freed as one block when a reload replaces the index (no pause to free
    millions of objects)."""

    __slots__ = ("_data", "_ends", "_row_ends")

    def __init__(self, data, ends):
        self._data = data
        self._ends = np.ascontiguousarray(ends, dtype=np.int64)  # each row's last NUL
        self._row_ends = memoryview(self._ends)

    def __len__(self):
        return len(self._ends)

    def __getitem__(self, position):
        """The row's fields, as a list of str."""
        ends = self._row_ends
        start = ends[position - 1] + 1 if position else 0
        return self._data[start:ends[position]].decode("utf-8", "surrogatepass").split("\0")


class TextRowsBuilder:
    """Collects blocks of text columns into TextRows."""

    def __init__(self, width):
        self.width = width
        self._parts, self._ends, self._size = [], [], 0

    def add(self, columns):
        """Append a block: `width` arrays of str, one value per row each."""
        # As objects: a fixed-width str array would be as wide as the longest cell.
        cells = np.stack([np.asarray(column, dtype=object) for column in columns],
                         axis=1).ravel().tolist()  # row by row
        if cells:
            self._add_cells(cells)

    def _add_cells(self, cells):
        data = ("\0".join(cells) + "\0").encode("utf-8", "surrogatepass")
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0)
        if ends.size != len(cells):  # a cell holds a NUL itself: it cannot be text
            return self._add_cells([cell.replace("\0", "") for cell in cells])
        self._parts.append(data)
        self._ends.append(ends[self.width - 1::self.width] + self._size)
        self._size += len(data)

    def build(self):
        ends = np.concatenate(self._ends) if self._ends else np.zeros(0, np.int64)
        return TextRows(b"".join(self._parts), ends)


@dataclasses.dataclass(frozen=True, eq=False)
class ContactIndex:
    """One loaded file, never changed after it is built: a reload builds a new one.

    Numbers live in two NumberTables (canonical keys, and trailing digits for the
    fallback) of numpy arrays: ~20 bytes a number instead of a Python dict's ~100.
    Text lives in TextRows. A contact's `position` is its 0-based place in file order;
    its `row` (Contact.row, reports) is the spreadsheet's: position + first_row.
    """

    source: Path
    kind: str              # the file's kind, as Table.kind
    encoding: str | None   # a text file's encoding (a vCard's: maybe two); None: a workbook
    delimiter: str | None
    loaded_at: dt.datetime
    columns: ColumnChoice
    rows_read: int
    contacts: int
    numbers: int
    shared_numbers: int
    skipped: tuple
    unusable: tuple
    warnings: tuple
    rules: NumberRules = dataclasses.field(repr=False)
    match_digits: int = DEFAULTS["match_digits"]
    first_row: int = 2   # the spreadsheet row of the first contact
    _numbers: NumberTable = dataclasses.field(repr=False, default=None)
    _suffixes: NumberTable = dataclasses.field(repr=False, default=None)
    _texts: TextRows = dataclasses.field(repr=False, default=None)
    template_headers: tuple = ()  # the file's columns kept for URL templates
    oversized: tuple = ()  # (row, column, bytes) of its cells skipped as too long

    def find(self, caller_id):
        """(position, total, key) for a caller id: the position (0-based, in file order)
        of the first contact holding its number, how many do, and the number's key (None
        when it has none: withheld, or no digits). The one matching rule, shared by
        answer_for() (every request: plain tuples, nothing built) and lookup()."""
        key = None if caller_id is None else number_key(caller_id, self.rules)[0]
        if key is None:
            return 0, 0, None
        position, total = self._numbers.find(key)
        if not total and key >= self._suffix_modulus:
            position, total = self._suffixes.find(key % self._suffix_modulus)
        return position, total, key

    @property
    def read_as(self):
        """How the file was read, as --check writes it: a text file's encoding (a
        vCard's: "utf-8 (vCard)"), else its kind ("xlsx")."""
        if self.kind == "vcard":
            return f"{self.encoding} (vCard)"
        return self.encoding or self.kind

    def holds_exactly(self, key):
        """Whether a contact holds the number `key` itself (not only its last digits)."""
        return self._numbers.find(key)[1] > 0

    def lookup(self, caller_id):
        """Match(total, first contact in file order, caller's key) for a caller id:
        find() with the contact made whole, for the command line, tests and embedding."""
        position, total, key = self.find(caller_id)
        return Match(total, self.contact(position), key) if total else Match(0, None, key)

    @functools.cached_property
    def _suffix_modulus(self):
        return 10 ** self.match_digits

    def texts_of(self, position):
        """The contact's name, company and URL, then a list of its template columns."""
        name, company, url, *kept = self._texts[position]
        return name.strip(), company.strip(), url.strip(), kept

    def contact(self, position):
        name, company, url, kept = self.texts_of(position)
        return Contact(name, company, url, position + self.first_row,
                       dict(zip(self.template_headers, kept)) if kept else NO_FIELDS)


def load_index(path, *, region=DEFAULTS["region"], encoding=None, delimiter=None,
               sheet=None, name_column=None, company_column=None, phone_columns=None,
               url_column=None, match_digits=DEFAULTS["match_digits"], keep_columns=()):
    """Read a contacts file and build its ContactIndex. It reads only the file and its
    arguments, and changes nothing outside what it returns.

    Raises ContactsFileError when the file cannot be read or has no phone column. A
    file that loads but where no contact has a usable number gives contacts == 0
    (require_contacts() refuses it).
    """
    path = Path(path)
    rules = number_rules(region)
    head = _read_head(path)
    columns = dict(name_column=name_column, company_column=company_column,
                   phone_columns=phone_columns, url_column=url_column, path=path)

    def choose(headers, table=None):
        choice = choose_columns(headers, **columns)
        if not choice.phones and table and table.kind == "vcard":
            cards = sum(len(block["Name"]) for block in table.blocks)
            raise ContactsFileError(path, f"is a vCard file with no phone numbers "
                                          f"({cards} cards, none with a TEL line): a "
                                          "caller cannot be found in it")
        if not choice.phones:
            raise ContactsFileError(path, "has no phone column (columns: "
                                          f"{_list_headers(headers)}); name it with "
                                          "--phone-columns")
        keep = _resolve_keep_columns(headers, keep_columns)
        wanted = [h for h in dict.fromkeys(list(choice.name) + [choice.company, choice.url]
                                           + list(choice.phones) + keep
                                           + [label for _phone, label in choice.labels])
                  if h]
        return choice, keep, wanted

    def whole(table):  # a workbook or vCard: read whole, its headers known from it
        choice, keep, wanted = choose(table.headers, table)
        return _build_index(path, table.keep(wanted), choice, keep, rules, match_digits)

    if _file_kind(path, head) != "text":
        return read_source(path, whole, encoding=encoding, sheet=sheet, head=head)
    # A CSV: its header row first, then only the columns used, in blocks.
    headers = _read_headers(path, head, encoding, delimiter)
    choice, keep, wanted = choose(headers)
    return read_source(
        path, lambda table: _build_index(path, dataclasses.replace(table, headers=wanted),
                                         choice, keep, rules, match_digits),
        encoding=encoding, delimiter=delimiter, sheet=sheet,
        usecols=lambda h: _clean_header(h) in set(wanted), names=headers, head=head)


#: The settings of load_index() that say how a file is read (read_source()'s); the
#: others say which columns are taken from it.
READ_SETTINGS = ("encoding", "delimiter", "sheet")


def read_source(path, consume, *, encoding=None, delimiter=None, sheet=None,
                usecols=None, names=(), head=None):
    """Read a contacts file with its source's settings and give its Table to
    `consume`; returns what consume returns. The one way a source is read: for its
    index (start-up, reloads, --check) and for the caller's page alike, so that both
    see the same rows. A text file is read again from its start (consume called
    anew) when its encoding guess turns out wrong or a row is ragged: at most three
    reads."""
    settings = dict(encoding=encoding, delimiter=delimiter, engine="c")
    while True:
        table = read_table(path, sheet=sheet, usecols=usecols, names=names, head=head,
                           **settings)
        try:
            return consume(table)
        except _ReadAgain as again:
            settings.update(again.changes)


def _resolve_keep_columns(headers, keep_columns):
    by_lower = {h.lower(): h for h in headers}
    return [by_lower[name.lower()] for name in keep_columns if name.lower() in by_lower]


def _build_index(path, table, choice, keep, rules, match_digits):
    """Build the index one block of rows at a time (see _READ_ROWS)."""
    texts = TextRowsBuilder(3 + len(keep))  # name, company, url, then `keep`
    pair_keys, pair_positions, findable = [], [], []
    unusable, skipped, refused_links = [], [], []
    count = 0
    for block in table.blocks:
        size = len(next(iter(block.values()))) if block else 0
        keys, positions, has_number = _block_pairs(block, size, count, choice, rules,
                                                   unusable, table.first_row)
        pair_keys.append(keys)
        pair_positions.append(positions)
        findable.append(has_number)
        skipped.extend((int(position) + count + table.first_row, "no usable phone number")
                       for position in np.flatnonzero(~has_number)
                       if any(str(values[position]).strip() for values in block.values()))
        companies = block[choice.company] if choice.company else _blank(size)
        names = _names(block, choice, size)
        blank_names = names == ""
        if blank_names.any():
            names = np.where(blank_names, companies, names)  # a company-only contact
        urls = _web_links(block[choice.url], count + table.first_row, refused_links) \
            if choice.url else _blank(size)
        texts.add([names, companies, urls,
                   *(block[header] for header in keep)])
        count += size
    if count == 0:
        raise ContactsFileError(path, "has no contacts: only a header row")
    keys, positions = np.concatenate(pair_keys), np.concatenate(pair_positions)
    del pair_keys, pair_positions
    numbers = NumberTable.build(keys, positions)
    eligible = keys >= _POW10[match_digits]
    suffixes = NumberTable.build(keys[eligible] % _POW10[match_digits],
                                 positions[eligible])
    del keys, positions, eligible
    skipped = sorted(table.skipped + skipped, key=lambda item: (item[0] is None,
                                                                 item[0] or 0))
    return ContactIndex(
        source=path, kind=table.kind, encoding=table.encoding, delimiter=table.delimiter,
        loaded_at=dt.datetime.now(dt.timezone.utc).astimezone(), columns=choice,
        rows_read=count, contacts=int(sum(int(f.sum()) for f in findable)),
        numbers=int(numbers.keys.size), shared_numbers=numbers.shared,
        skipped=tuple(skipped), unusable=tuple(unusable),
        warnings=tuple(table.warnings) + ((_refused_links_warning(refused_links),)
                                          if refused_links else ()),
        rules=rules, match_digits=match_digits, first_row=table.first_row,
        _numbers=numbers, _suffixes=suffixes, _texts=texts.build(),
        template_headers=tuple(keep),
        oversized=tuple(cell for cell in table.oversized if cell[1] in table.headers))


def _block_pairs(block, size, offset, choice, rules, unusable, first_row=2):
    """(keys, positions, has a number) of one block, whose first contact is at position
    `offset` of the file; in file order. Problems with cells are added to `unusable`.
    A fax (by its label) is no number."""
    extra = []
    block = _without_faxes(block, choice)
    # Every phone column of the block in one vectorised call: fewer, larger numpy steps.
    cells = np.concatenate([block[header] for header in choice.phones]) \
        if len(choice.phones) > 1 else block[choice.phones[0]]
    keys, handled, _blank_cells = column_keys(cells, rules)
    for cell in np.flatnonzero(~handled):
        found, problems = cell_keys(cells[cell], rules)
        column, position = divmod(int(cell), size)
        if found:  # the first number in its column, the others beside it
            keys[cell] = found[0]
            extra.extend((position, key) for key in found[1:])
        unusable.extend((position + offset + first_row, choice.phones[column],
                         _clip(str(cells[cell])), problem) for problem in problems)
    columns = keys.reshape(len(choice.phones), size)
    matrix = np.ascontiguousarray(columns.T)  # contact by contact, in file order
    keys = matrix.ravel()
    positions = np.repeat(np.arange(offset, offset + size, dtype=np.int32),
                          matrix.shape[1])
    has_number = (matrix > 0).any(axis=1)
    present = keys > 0
    keys, positions = keys[present], positions[present]
    if extra:
        more = np.array(extra, dtype=np.int64)
        keys = np.concatenate([keys, more[:, 1]])
        positions = np.concatenate([positions, (more[:, 0] + offset).astype(np.int32)])
        has_number[more[:, 0]] = True
    return keys, positions, has_number


def require_contacts(index, hint=""):
    """Raise ContactsFileError when no contact of `index` can be found: a file that
    loads but cannot serve anyone (the server refuses it, --check says so)."""
    if index.contacts == 0:
        raise ContactsFileError(index.source, "no contact has a usable phone number" + hint)


def load_report(index):
    """The lines --check prints and the server logs after loading a file."""
    columns = index.columns
    unit = "card" if index.kind == "vcard" else "row"  # a vCard's contacts by number
    lines = [
        f"file: {index.source}",
        f"encoding: {index.read_as}",
        f"delimiter: {_show_delimiter(index)}",
        f"name column: {' + '.join(columns.name) or '(none)'}",
        f"company column: {columns.company or '(none)'}",
        f"phone columns: {', '.join(columns.phones) or '(none)'}",
        f"url column: {columns.url or '(none)'}",
        f"{unit}s read: {index.rows_read}",
        f"{index.contacts} contacts can be found",
        f"numbers indexed: {index.numbers}",
        f"numbers shared by several contacts: {index.shared_numbers}",
    ]
    lines += _report_section(f"{unit}s skipped", index.skipped, lambda row, reason:
                             f"  {unit} {row}: {reason}" if row else f"  {reason}")
    lines += _report_section("numbers not used", index.unusable,
                             lambda row, column, cell, problem:
                             f"  {unit} {row}, {column}: {cell!r} {problem}")
    lines += _report_section("cells too long, skipped", index.oversized,
                             lambda row, column, size: f"  row {row}, {column}: {size:,} "
                             f"bytes, more than the {MAX_CELL_BYTES:,} a cell may hold")
    lines += [f"warning: {warning}" for warning in index.warnings]
    return lines


def _report_section(title, items, line):
    """`title: count`, then the first REPORT_LIMIT items, each as line(*item)."""
    lines = [f"{title}: {len(items)}"] + [line(*item) for item in items[:REPORT_LIMIT]]
    if len(items) > REPORT_LIMIT:
        lines.append(f"  ... and {len(items) - REPORT_LIMIT} more")
    return lines


def _show_delimiter(index):
    if index.delimiter is None:  # a workbook or a vCard
        return "(vCard)" if index.kind == "vcard" else f"({index.kind})"
    return repr(index.delimiter)


def merge_indexes(indexes):
    """One ContactIndex serving several, in the order given: a number's first contact is
    that of the first index holding it, and its total counts the contacts of every
    index holding it (a contact is a row of one source: the same person in two sources
    counts twice). A single index is served as it is, at no cost. Pure: the indexes
    given are not changed, and the merge is built whole before anyone sees it."""
    if len(indexes) == 1:
        return indexes[0]
    first = indexes[0]
    sizes = [len(index._texts) for index in indexes]
    offsets = np.cumsum([0] + sizes[:-1])
    headers = {}  # every template column of any index, as the first one spells it
    for index in indexes:
        for header in index.template_headers:
            headers.setdefault(header.lower(), header)
    headers = list(headers.values())
    numbers = _merge_tables([index._numbers for index in indexes], offsets)
    return ContactIndex(
        source=first.source, kind=first.kind, encoding=first.encoding,
        delimiter=first.delimiter,
        loaded_at=dt.datetime.now(dt.timezone.utc).astimezone(), columns=first.columns,
        rows_read=sum(sizes), contacts=sum(index.contacts for index in indexes),
        numbers=int(numbers.keys.size), shared_numbers=numbers.shared, skipped=(),
        unusable=(), warnings=(), rules=first.rules, match_digits=first.match_digits,
        first_row=first.first_row, _numbers=numbers,
        _suffixes=_merge_tables([index._suffixes for index in indexes], offsets),
        _texts=_merge_texts(indexes, headers), template_headers=tuple(headers))


def _merge_tables(tables, offsets):
    """One NumberTable of several, whose positions start at `offsets`: per key, the
    first position of the first table holding it, and the counts summed."""
    keys = np.concatenate([table.keys for table in tables])
    found = np.concatenate([np.asarray(table._found) for table in tables])
    firsts = (found >> 32) + np.repeat(offsets, [table.keys.size for table in tables])
    counts = found & 0xFFFFFFFF
    modulus = _prime_at_least(max(keys.size, 1))
    if not keys.size:
        return NumberTable(modulus, keys, firsts, counts)
    order = np.lexsort((firsts, keys, keys % modulus))  # bucket, key, then source order
    keys, firsts, counts = keys[order], firsts[order], counts[order]
    distinct = np.ones(keys.size, dtype=bool)
    distinct[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(distinct)
    return NumberTable(modulus, keys[starts], firsts[starts], np.add.reduceat(counts, starts))


def _merge_texts(indexes, headers):
    """The TextRows of several indexes one after another, every row with the template
    columns `headers` (blank where its source has no such column)."""
    wanted = [header.lower() for header in headers]
    parts, ends, size = [], [], 0
    for index in indexes:
        rows = index._texts
        if [header.lower() for header in index.template_headers] != wanted:
            rows = _relaid_rows(index, wanted)  # only when URL templates use columns
        parts.append(rows._data)
        ends.append(rows._ends + size)
        size += len(rows._data)
    return TextRows(b"".join(parts), np.concatenate(ends))


def _relaid_rows(index, wanted):
    has = {header.lower(): place for place, header in enumerate(index.template_headers)}
    rows = [index._texts[position] for position in range(len(index._texts))]
    builder = TextRowsBuilder(3 + len(wanted))
    builder.add([[row[column] for row in rows] for column in range(3)]
                + [[row[3 + has[name]] if name in has else "" for row in rows]
                   for name in wanted])
    return builder.build()


###############################################################################
# Contacts links ##############################################################
###############################################################################
# A source given as an http(s) link: Google Sheets links read as their CSV export,
# downloads that are conditional, capped and timed out.

_SHEETS_PATH = re.compile(r"/spreadsheets/(?:u/\d+/)?d/(e/)?([A-Za-z0-9_-]+)")
_DOWNLOAD_PIECE = 64 * 1024
_MAX_REDIRECTS = 5


def public_link(url):
    """A link as /health shows it to anyone: its site and a short hash telling two
    links apart, never any part of its path, query or password (a shared sheet's or a
    share link's path is the key to it)."""
    start = _LINK_START.match(url)
    rest = start.end() if start else 0
    after = _credentials_end(url, rest)
    host = "***" if _past_the_authority(url[rest:after]) else \
        _AUTHORITY.match(url, after).group(0)
    return f"{url[:rest]}{host}/ (link {hashlib.sha256(url.encode()).hexdigest()[:8]})"


def sheet_export_url(url):
    """The CSV export of a Google Sheets link of any shape a browser shows (/edit#gid=N,
    /edit?usp=sharing, /pubhtml, /pub?output=csv, /export?format=csv, ...), keeping the
    sheet (gid; 0 when a shared sheet's link names none); any other link as it is."""
    parts = urllib.parse.urlsplit(url)
    match = _SHEETS_PATH.match(parts.path)
    if (parts.hostname or "").lower() != "docs.google.com" or not match:
        return url
    fields = dict(urllib.parse.parse_qsl(parts.fragment))
    fields.update(urllib.parse.parse_qsl(parts.query))
    gid = fields.get("gid", "")
    published, key = match.groups()
    if published:  # "Publish to the web": /d/e/PUBID/pubhtml or /pub
        path = f"/spreadsheets/d/e/{key}/pub"
        query = ([("gid", gid), ("single", "true")] if gid else []) + [("output", "csv")]
    else:          # shared: /d/ID/edit, /view, /export, ...
        path = f"/spreadsheets/d/{key}/export"
        query = [("format", "csv"), ("gid", gid or "0")]
    if "resourcekey" in fields:  # older shared files need it with their link
        query.append(("resourcekey", fields["resourcekey"]))
    return urllib.parse.urlunsplit(("https", "docs.google.com", path,
                                    urllib.parse.urlencode(query), ""))


class DownloadFailed(Exception):
    """A download failed; the message says why in words, never naming the link."""


#: Where Google sends a sheet's export or a Drive file's download: docs.google.com and
#: drive.google.com answer with a redirect to these.
GOOGLE_REDIRECT_HOSTS = ("*.googleusercontent.com", "*.usercontent.google.com")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed at most _MAX_REDIRECTS times, to http(s) links only, on the
    link's own host or `hosts` (--link-redirect-hosts) only: a site must not make this
    server fetch an address of the office's own network. The link's password is never
    sent to another host."""

    max_redirections = _MAX_REDIRECTS

    def __init__(self, link, hosts=()):
        super().__init__()
        own = (urllib.parse.urlsplit(link).hostname or "").lower().rstrip(".")
        self.hosts = {own, *hosts}
        if own in ("docs.google.com", "drive.google.com"):
            self.hosts.update(GOOGLE_REDIRECT_HOSTS)

    def allows(self, url):
        """Whether a redirect to `url` stays on the hosts allowed."""
        host = (urllib.parse.urlsplit(url).hostname or "").lower().rstrip(".")
        if ":" in host:
            host = f"[{host}]"
        return host in self.hosts or any(
            allowed.startswith("*.") and host.endswith(allowed[1:]) for allowed in self.hosts)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise DownloadFailed(f"the site redirected to a link that is not http or "
                                 f"https ({code})")
        if not self.allows(newurl):
            host = urllib.parse.urlsplit(newurl).hostname or "?"
            raise DownloadFailed(f"the site redirected to another host, which is not "
                                 f"followed ({host}: --link-redirect-hosts allows it)")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and not _same_site(req.full_url, newurl):
            new.remove_header("Authorization")
        return new


def _same_site(old, new):
    """True when `new` may be sent `old`'s password: the same host and port, and never
    from https down to http."""
    def site(url):
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, parts.hostname, parts.port or (443 if scheme == "https" else 80)
    (old_scheme, old_host, old_port), (new_scheme, new_host, new_port) = site(old), site(new)
    return (old_host, old_port) == (new_host, new_port) and (
        old_scheme == new_scheme or new_scheme == "https")


def download_link(url, target, *, timeout, max_bytes, etag=None, modified=None,
                  redirect_hosts=()):
    """Download `url` into the file `target`: (ETag, Last-Modified) of what came, or
    None when the site answers that it has not changed since `etag`/`modified` (304).
    At most `max_bytes`, streamed and stopped there, within `timeout` seconds in all;
    redirects followed on its own host and `redirect_hosts`. Raises DownloadFailed."""
    request = _link_request(url)
    if etag:
        request.add_header("If-None-Match", etag)
    if modified:
        request.add_header("If-Modified-Since", modified)
    deadline = time.monotonic() + timeout
    # The socket timeout bounds each read only: a site sending a header line every few
    # seconds would never end. At the deadline the connections are cut instead.
    connections = _CutAtDeadline(timeout)
    try:
        with connections:
            validators = _download(request, target, connections, deadline, max_bytes,
                                   _Redirects(url, redirect_hosts))
    except DownloadFailed:
        if not connections.cut:
            raise
    if connections.cut:  # a cut answer may even look whole (its headers ended by EOF)
        raise DownloadFailed(f"no whole answer within --url-timeout ({timeout:g} s)")
    return validators


def _download(request, target, connections, deadline, max_bytes, redirects):
    timeout = connections.timeout
    try:
        opener = urllib.request.build_opener(redirects, *connections.handlers())
        with opener.open(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length", "")
            if length.isascii() and length.isdigit() and int(length) > max_bytes:
                raise DownloadFailed(f"the site sends {int(length):,} bytes, more than "
                                     f"--url-max-bytes ({max_bytes:,})")
            size = 0
            with open(target, "wb") as out:
                while piece := response.read1(_DOWNLOAD_PIECE):  # returns what arrived
                    size += len(piece)
                    if size > max_bytes:
                        raise DownloadFailed(f"more than --url-max-bytes ({max_bytes:,} "
                                             "bytes) came")
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    out.write(piece)
            return response.headers.get("ETag"), response.headers.get("Last-Modified")
    except urllib.error.HTTPError as error:
        if error.code == 304:
            return None
        if 300 <= error.code < 400:
            raise DownloadFailed(f"the site answered {error.code} and its redirects "
                                 f"were not followed (more than {_MAX_REDIRECTS}, or no "
                                 "new address)") from None
        raise DownloadFailed(f"the site answered {error.code} "
                             f"{http.client.responses.get(error.code, '')}".rstrip()) from None
    except DownloadFailed:
        raise
    except (TimeoutError, socket.timeout):
        raise DownloadFailed(f"no whole answer within --url-timeout ({timeout:g} s)") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, (TimeoutError, socket.timeout)):
            raise DownloadFailed(f"no answer within --url-timeout ({timeout:g} s)") from None
        reason = error.reason.strerror if isinstance(error.reason, OSError) else None
        raise DownloadFailed(f"cannot be reached ({reason or redact_url(error.reason)})") \
            from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise DownloadFailed(f"the download broke off ({type(error).__name__})") from None


class _CutAtDeadline:
    """The connections of one download, shut down by a timer `timeout` seconds after
    the start if still open (then `cut` is True)."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.cut = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout, self._cut_all)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc_info):
        self._timer.cancel()

    def _cut_all(self):
        with self._lock:
            self.cut = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the reader wakes

    def _opened(self, sock):
        with self._lock:
            self._sockets.append(sock)
            if self.cut:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def handlers(self):
        """urllib handlers whose connections are registered to be cut."""
        opened = self._opened

        class HTTP(urllib.request.HTTPHandler):
            def http_open(self, req):
                class Connection(http.client.HTTPConnection):
                    def connect(self):
                        super().connect()
                        opened(self.sock)
                return self.do_open(Connection, req)

        class HTTPS(urllib.request.HTTPSHandler):
            def https_open(self, req):
                class Connection(http.client.HTTPSConnection):
                    def connect(self):
                        super().connect()
                        opened(self.sock)
                return self.do_open(Connection, req, context=self._context)

        return HTTP(), HTTPS()


def _link_request(url):
    """A request for `url`, its user:password (if any) sent as Basic authentication."""
    parts = urllib.parse.urlsplit(url)
    authority, at, host = parts.netloc.rpartition("@")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)),
                                     headers={"User-Agent": f"popup-server/{__version__}"})
    if at:
        credentials = unquote(authority).encode("utf-8")
        request.add_header("Authorization",
                           "Basic " + binascii.b2a_base64(credentials, newline=False).decode())
    return request


###############################################################################
# Holding and reloading #######################################################
###############################################################################
# The index being served: the merge of every source's last good contacts, swapped whole
# when a watched file changes and settles or a polled link changes.


class ContactsSource:
    """One contacts file: its last good index and the outcome of its last load.

    A reload builds a whole new ContactIndex off the request path; a failed one leaves
    the last good index in place and records why in last_error. `on_served` is told
    when new contacts are served (the holder then serves the merge of every source).
    """

    is_link = False

    def __init__(self, location, config, on_served=None, options=None):
        self.location = location
        self.config = config
        #: load_index()'s settings for this source: the configuration's, unless the
        #: source has its own (the additions file: additions_options()).
        self.options = config.load_options() if options is None else options
        self.path = Path(location)
        self.name = str(location)            # in the log and --check
        self.label = self.path.name          # in the log's short lines
        self.public_name = self.path.name    # in /health: no folder
        self.index = None
        self.last_error = None         # the whole message, for the log and the calls page
        self.last_error_public = None  # its gist, for the unauthenticated /health
        self.signature = None          # the file as it was when the index was read
        self.served_signature = None   # the file as reload_source() last served it
        self.lock = threading.Lock()   # one read and swap at a time
        self._on_served = on_served

    def start(self):
        """The first load, at start-up: a source that cannot be served is fatal (the
        ContactsFileError goes up); its report is logged."""
        self.index = self.load()
        for line in self.report_lines(self.index):
            log.log(logging.WARNING if line.startswith("warning: ") else logging.INFO,
                    "%s", line)
        return self

    def load(self):
        signature = file_signature(self.path)  # before reading: a change meanwhile is seen
        index = self._index_of(self.path, require=False)
        self.signature = signature
        return self.required(index)

    def check_index(self):
        """The index --check reports on, which may hold no contact."""
        return self._index_of(self.path, require=False)

    def _index_of(self, path, require=True):
        try:
            with _bulk_load():
                index = load_index(path, **self.options)
        except ContactsFileError:
            raise
        except Exception as error:  # a file no reader foresaw: still one line, no crash
            log.debug("loading %s failed", path, exc_info=True)
            raise ContactsFileError(path, f"cannot be loaded ({type(error).__name__}: "
                                          f"{_first_line(error)})") from None
        return self.required(index) if require else index

    def required(self, index):
        require_contacts(index, f" ({index.rows_read} rows read; run --check to see why)")
        return index

    def report_lines(self, index):
        return load_report(index)

    def read(self):
        """Load the source again without serving it yet: (the new index, or the
        ContactsFileError saying why there is none; seconds the load took)."""
        started = time.perf_counter()
        try:
            outcome = self._fetch()
        except ContactsFileError as error:
            outcome = error
        return outcome, time.perf_counter() - started

    def _fetch(self):
        """The source's contacts as they are now (a LinkSource: only if changed)."""
        return self.load()

    def swap_in(self, read):
        """Serve what read() loaded, or report why it failed; True when serving it."""
        outcome, seconds = read
        if isinstance(outcome, ContactsFileError):
            self.report(outcome)
            log.error("reload failed after %.2f s, still serving %d contacts loaded at "
                      "%s: %s", seconds, self.index.contacts,
                      self.index.loaded_at.isoformat(timespec="seconds"), outcome)
            return False
        self._serve(outcome)
        log.info("reloaded in %.2f s: %s", seconds, self.summary(outcome))
        return True

    def _serve(self, index):
        self.index = index
        self.report(None)
        if self._on_served is not None:
            self._on_served()
        _return_freed_memory()  # the replaced index's arrays

    def report(self, error):
        """Record the last failure (a ContactsFileError), or None once all is well."""
        if error is None:
            self.last_error = self.last_error_public = None
            return
        self.last_error = str(error)
        # /health is open to anyone: the source's name and the gist of the problem
        # only, never its folder or the cells quoted in the full message.
        gist = re.split(r" \(|; ", error.problem, maxsplit=1)[0]
        self.last_error_public = f"{self.public_name}: {gist}"

    def summary(self, index):
        return (f"{self.label}: {index.contacts} contacts, {index.numbers} numbers, "
                f"{len(index.skipped)} rows skipped, {len(index.unusable)} numbers not used")

    def health(self):
        index = self.index
        return {"source": self.public_name, "contacts": index.contacts,
                "numbers": index.numbers,
                "loaded_at": index.loaded_at.isoformat(timespec="seconds"),
                "last_error": self.last_error_public}

    def watcher(self):
        """What keeps this source up to date while the server runs."""
        return FileWatcher(self, self.config.reload_interval)


_UNCHANGED = "unchanged"  # what a conditional download answers when nothing changed


class LinkSource(ContactsSource):
    """A contacts link: downloaded every --url-interval seconds with a conditional
    request, its last good download kept in `folder` (the state folder's downloads),
    so that a start while the link fails serves that copy. A failure keeps the last
    good contacts and is logged once each time the problem changes."""

    is_link = True

    def __init__(self, location, config, folder, on_served=None, options=None):
        super().__init__(location, config, on_served, options)
        self.url = location
        self.export_url = sheet_export_url(location)
        self.name = self.label = redact_url(location)
        self.public_name = public_link(location)
        # Named by a hash of the link: no secret of it lands in a file name.
        key = hashlib.sha256(location.encode("utf-8")).hexdigest()[:24]
        self.copy = Path(folder) / f"{key}.download"
        self._etag = self._modified = None  # of the last good download
        self._fetched = None                # (etag, last-modified) of the last download
        self.downloaded_at = None

    def start(self):
        if self.export_url != self.url:
            log.info("%s is read as its CSV export: %s", self.name,
                     redact_url(self.export_url))
        return super().start()

    def load(self):
        """At start-up: the link as it is now; when it fails, the copy of its last
        good download, if there is one (the log says so; /health shows the failure)."""
        self._read_copy_metadata()
        try:
            index = self._fetch()
            if index is _UNCHANGED:
                index = self._index_of(self.copy)
                log.info("%s: unchanged since its copy downloaded at %s", self.name,
                         self.downloaded_at)
            return index
        except ContactsFileError as error:
            if self.downloaded_at is None:
                raise
            try:
                index = self._index_of(self.copy)
            except ContactsFileError:
                raise error from None
            log.warning("%s; serving its copy downloaded at %s until it works again",
                        error, self.downloaded_at)
            self.report(error)
            return index

    def check_index(self):
        part = self._download(conditional=False)
        return self._index_of(part, require=False)

    def _index_of(self, path, require=True):
        try:
            return super()._index_of(path, require)
        except ContactsFileError as error:  # named by the link, not the downloaded copy
            raise ContactsFileError(self.name, error.problem) from None

    def required(self, index):
        try:
            return super().required(index)
        except ContactsFileError as error:
            raise ContactsFileError(self.name, error.problem) from None

    def report_lines(self, index):
        lines = [f"link: {self.name}"] + load_report(index)[1:]
        if self.export_url != self.url:
            lines.insert(1, f"read as: {redact_url(self.export_url)}")
        return lines

    def swap_in(self, read):
        outcome, seconds = read
        if isinstance(outcome, ContactsFileError):
            if str(outcome) != self.last_error:  # once each time the problem changes
                log.error("%s; still serving %d contacts loaded at %s", outcome,
                          self.index.contacts,
                          self.index.loaded_at.isoformat(timespec="seconds"))
            self.report(outcome)
            return False
        if outcome is _UNCHANGED:
            if self.last_error is not None:
                log.info("%s works again, unchanged", self.name)
                self.report(None)
            return False
        self._serve(outcome)
        log.info("downloaded and loaded in %.2f s: %s", seconds, self.summary(outcome))
        return True

    def _fetch(self):
        """The new index if the link changed since its last good download (kept as
        the copy only once it loads), or _UNCHANGED."""
        part = self._download(conditional=True)
        if part is None:
            return _UNCHANGED
        try:
            index = self._index_of(part)
            os.replace(part, self.copy)
        finally:
            with contextlib.suppress(OSError):
                part.unlink()
        self._etag, self._modified = self._fetched
        self.downloaded_at = dt.datetime.now(dt.timezone.utc).astimezone().isoformat(
            timespec="seconds")
        self._write_copy_metadata()
        return dataclasses.replace(index, source=self.copy)

    def _download(self, conditional):
        """The download as a file beside the copy, or None when it has not changed."""
        self.copy.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # contacts
        part = self.copy.with_suffix(".part")
        try:
            fetched = download_link(
                self.export_url, part, timeout=self.config.url_timeout,
                max_bytes=self.config.url_max_bytes,
                redirect_hosts=self.config.link_redirect_hosts,
                etag=self._etag if conditional else None,
                modified=self._modified if conditional else None)
        except DownloadFailed as error:
            with contextlib.suppress(OSError):
                part.unlink()
            raise ContactsFileError(self.name, str(error)) from None
        except OSError as error:  # the state folder itself
            raise ContactsFileError(self.name, f"cannot be kept in {part.parent} "
                                               f"({error.strerror})") from None
        if fetched is None:
            return None
        self._fetched = fetched
        return part

    def _read_copy_metadata(self):
        try:
            saved = json.loads(self.copy.with_suffix(".json").read_text("utf-8"))
        except (OSError, ValueError):
            return
        if self.copy.exists() and isinstance(saved, dict):
            self._etag, self._modified = saved.get("etag"), saved.get("last_modified")
            self.downloaded_at = saved.get("downloaded_at") or "an earlier start"

    def _write_copy_metadata(self):
        saved = {"link": self.name, "etag": self._etag, "last_modified": self._modified,
                 "downloaded_at": self.downloaded_at}
        with contextlib.suppress(OSError):
            temporary = self.copy.with_suffix(".json.part")
            temporary.write_text(json.dumps(saved), "utf-8")
            os.replace(temporary, self.copy.with_suffix(".json"))

    def health(self):
        return {**super().health(), "downloaded_at": self.downloaded_at}

    def watcher(self):
        return LinkPoller(self, self.config.url_interval)


def make_source(location, config, folder, on_served=None, options=None):
    """A ContactsSource for a file, a LinkSource for an http(s) link (a str);
    `options`: its own load_index() settings, when not the configuration's."""
    if isinstance(location, str):
        return LinkSource(location, config, folder, on_served, options)
    return ContactsSource(location, config, on_served, options)


class ContactsHolder:
    """The index being served: every source's last good contacts merged into one
    ContactIndex, in the order the sources were named (the first holding a number wins
    the pop-up).

    Each source reloads on its own (a FileWatcher per file, a LinkPoller per link); when
    one serves new contacts the merge is rebuilt off the request path and swapped in by
    one assignment, so a lookup sees the old index or the new one, never a mixture. A
    source that fails keeps its last good contacts in the merge.
    """

    def __init__(self, config):
        self.config = config
        self.downloads = config.state_path / "downloads"
        self.sources = []
        self._merging = threading.Lock()
        self._watchers = None   # an ExitStack of running watchers, while watching()
        for location in config.sources:  # at start-up a bad source is fatal
            self.sources.append(self._started(location))
        self._serve_merged()
        self._warn_missing_template_columns()

    def _started(self, location, options=None):
        return make_source(location, self.config, self.downloads,
                           self._serve_merged, options).start()

    def _serve_merged(self):
        with self._merging:
            self.index = merge_indexes([source.index for source in self.sources])

    def _warn_missing_template_columns(self):
        kept = {header.lower() for header in self.index.template_headers}
        for name in template_columns(self.config.url_template):
            if name.lower() not in kept:
                log.warning("--url-template uses {%s}, which is not a column of %s: it "
                            "will be empty", name,
                            " or ".join(source.label for source in self.sources))

    def source(self, location):
        """The source named `location` as it was given (a path or a link)."""
        for source in self.sources:
            if source.location == location or source.name == str(location):
                return source
        raise KeyError(location)

    def add_source(self, path, options=None):
        """Serve the file `path` as the LAST source (any other source holding a number
        wins its pop-up), loaded now and watched like the others: for a list this
        program keeps itself, read with its own `options` (load_index()'s). A file
        that cannot be served, or holds no contact yet, raises ContactsFileError: add
        it once it holds its first one."""
        source = self._started(Path(path), options)
        self.sources.append(source)
        self._serve_merged()
        if self._watchers is not None:
            self._watchers.enter_context(source.watcher())
        return source

    def reload_source(self, location):
        """Load one source again at once, with no settle wait (for a file this program
        has just written itself, or a link to fetch now); True when its new contacts
        are served. Its watcher then takes this version as served."""
        source = self.source(location)
        with source.lock:
            signature = None if source.is_link else file_signature(source.path)
            served = source.swap_in(source.read())
            source.served_signature = signature
        return served

    def reload(self):
        """Load every source again at once; True when all serve new contacts."""
        return all([self.reload_source(source.location) for source in self.sources])

    def withdraw_source(self, source):
        """Stop serving `source` (one add_source() gave): its contacts leave the merge
        at once. Its watcher keeps running and serves nothing; restore_source() takes
        it back, so adding and removing never adds threads."""
        with self._merging:
            self.sources = [each for each in self.sources if each is not source]
        self._serve_merged()

    def restore_source(self, source):
        """Serve a withdrawn source again, as the last (load it: reload_source())."""
        with self._merging:
            self.sources = [*self.sources, source]

    @contextlib.contextmanager
    def watching(self):
        """Keep every source up to date while inside: a FileWatcher per file and a
        LinkPoller per link, each in its own thread, stopped on the way out."""
        with contextlib.ExitStack() as stack:
            for source in self.sources:
                stack.enter_context(source.watcher())
            self._watchers = stack
            try:
                yield self
            finally:
                self._watchers = None

    @property
    def last_error(self):
        errors = [source.last_error for source in self.sources if source.last_error]
        return "; ".join(errors) or None

    @property
    def last_error_public(self):
        errors = [source.last_error_public for source in self.sources
                  if source.last_error_public]
        return "; ".join(errors) or None

    def health(self):
        index = self.index
        sources = [source.health() for source in self.sources]
        return {"status": "ok" if self.last_error is None else "error",
                "contacts": index.contacts, "numbers": index.numbers,
                "source": ", ".join(source["source"] for source in sources),
                "loaded_at": index.loaded_at.isoformat(timespec="seconds"),
                "last_error": self.last_error_public, "sources": sources}


#: A changed contacts file is served only once it has stayed the same (identity, size,
#: modification time) for this long, so a writer may pause this long mid-write.
SETTLE_SECONDS = 3.0


class FileWatcher:
    """Reloads a contacts file (a ContactsSource) when it changes, polling so it works on every OS and
    network share (in the manner of bottle's FileCheckerThread).

    Strategy: a change of identity, size or mtime is read once the next poll sees the
    same signature (Excel and editors save in several steps), but what was read is
    served, or its error reported, only when the signature has then stayed the same
    for SETTLE_SECONDS since the file last changed (its mtime, or the poll before it
    was first seen if that is later); if it changes before, what was read is dropped.
    So a half-written file is never served while its writer pauses for less than
    that. A file that is missing or locked is retried on every poll; one whose
    content is bad waits for its next change. Throughout, lookups go on against the
    index being served. Use as a context manager: the thread starts on enter and stops
    on exit.
    """

    def __init__(self, source, interval):
        self.source = source
        self.path = source.path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watcher {source.label}",
                                        daemon=True)
        self._served = source.signature  # taken before the load: a later edit is seen
        self._seen, self._seen_at = self._served, time.monotonic()  # unchanged since
        self._read = None                # source.read() of the file as _seen, unserved
        self._watcher_error = False      # last_error is the watcher's own (missing, locked)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self):
        while not self._stop.wait(self._wait()):
            try:
                self._poll()
            except Exception:  # the watcher must outlive any surprise; say what it was
                log.exception("checking %s for changes failed", self.path)

    def _wait(self):
        """Seconds to the next poll: the interval, or less when a file read waits to be
        served (so that it is served as soon as it has settled)."""
        if self._read is None:
            return self.interval
        settled_in = self._seen_at + SETTLE_SECONDS - time.monotonic()
        return min(self.interval, max(settled_in, 0.01))

    def _poll(self):
        current = file_signature(self.path)
        if current != self._seen:  # just changed, or still changing: look again later
            # It changed after the last poll, when its mtime says if the clocks agree.
            lag = min(max(time.time() - current[3] / 1e9, 0.0), self.interval) \
                if current else 0.0
            self._seen, self._seen_at, self._read = current, time.monotonic() - lag, None
            return
        if current is not None and current == self.source.served_signature:
            self._served = current  # reload_source() has served it already
            self._read = None
        if current == self._served:
            if self._watcher_error:  # back as it was after a moment away or locked
                self._watcher_error = False
                self.source.report(None)
            return
        if current is None:
            self._report_missing()
            return
        if self._read is None:
            self._read = self._read_file()
            if file_signature(self.path) != current:
                log.info("%s changed while being read; reading it again", self.path.name)
                self._seen = self._read = None
                return
        if self._read is not None and time.monotonic() - self._seen_at >= SETTLE_SECONDS:
            self.source.swap_in(self._read)
            self._served, self._read = current, None

    def _report_missing(self):
        error = ContactsFileError(self.path, "the file is missing; still serving the "
                                             "contacts loaded before")
        if self.source.last_error != str(error):
            self.source.report(error)
            self._watcher_error = True
            log.error("%s", error)

    def _read_file(self):
        """source.read() of the file, or None when it cannot be opened yet."""
        try:
            with open(self.path, "rb"):
                pass
        except OSError as error:  # locked mid-save (Windows) or gone: next poll retries
            if time.monotonic() - self._seen_at >= SETTLE_SECONDS:  # not a passing lock
                error = ContactsFileError(self.path, f"cannot be opened yet "
                                                     f"({error.strerror})")
                if self.source.last_error != str(error):
                    self.source.report(error)
                    self._watcher_error = True
                    log.error("%s", error)
            return None
        log.info("%s changed; reloading", self.path.name)
        self._watcher_error = False
        return self.source.read()


class LinkPoller:
    """Downloads a link (a LinkSource) again every `interval` seconds in its own thread,
    off the request path: a conditional request, so an unchanged link costs one short
    answer. Use as a context manager: the thread starts on enter and stops on exit."""

    def __init__(self, source, interval):
        self.source = source
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poller {source.label}",
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5)  # a download under way ends with the process

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                with self.source.lock:
                    self.source.swap_in(self.source.read())
            except Exception:  # the poller must outlive any surprise; say what it was
                log.exception("downloading %s failed", self.source.name)


###############################################################################
###############################################################################
# IV. Calls ###################################################################
###############################################################################
###############################################################################
# The calls: every pop-up request kept in SQLite off the request path and every CDR
# committed before it is acknowledged, the day's calls read from them, and what this
# server asks of Voicenter's APIs.


###############################################################################
# Phases ######################################################################
###############################################################################
# A pop-up request's phase as Voicenter names it.


def _phase(fields):
    return fields.get("status") or fields.get("statusCall") or ""


#: The call phases as Voicenter names them (`Talking` is the answer; older material
#: and integrators say "Answer" or "Answered"), read case-insensitively.
_PHASE_NAMES = {"ringing": "ringing", "talking": "talking", "answer": "talking",
                "answered": "talking", "hangup": "hangup"}


def read_phase(text):
    """The phase a pop-up's status (statusCall) names: "ringing", "talking" (the call
    was answered) or "hangup"; None for anything else."""
    return _PHASE_NAMES.get(str(text).strip().lower())


###############################################################################
# Reading a CDR ###############################################################
###############################################################################
# A CDR (POST /cdr, or a pulled Call Log record) read field by field: its type,
# direction, status, agent and time.


class CdrError(PopupError):
    """A CDR that cannot be stored as sent (no id, not valid text)."""


#: Where a CDR names who answered: the agent's extension first (named by --agents),
#: then the representative; names seen in Voicenter's records and SDKs, first found
#: wins. The record keeps every field whatever it is called.
_CDR_AGENT_FIELDS = ("extenUser", "representative_name", "RepresentativeName",
                     "representativeName", "representative_code", "RepresentativeCode",
                     "representativeCode", "representative", "extension", "Extension")
#: Where an outgoing call's CDR names the agent who made it: the calling extension
#: first (Voicenter's guide's Extension Outgoing example names the agent only there,
#: and a pulled record's Callerextension comes as it), then as any CDR.
_CDR_CALLER_AGENT_FIELDS = ("callerextension", *_CDR_AGENT_FIELDS)

#: CDR types (_cdr_type: lower case, no spaces) of a call the office made to a client
#: (the target), and of the agent's own leg of one (Voicenter rings the agent first):
#: that leg is no client's call.
CDR_OUTGOING_TYPES = ("click2callleg2", "extensionoutgoing", "productivecallleg2")
CDR_AGENT_LEG_TYPES = ("click2callleg1", "productivecallleg1")
#: CDR statuses of an incoming call that reached nobody (missed, whatever isAnswer says).
CDR_MISSED_STATUSES = ("ABANDONE", "TIMEOUT", "FULL", "EXIT", "JOINEMPTY", "NOANSWER",
                       "BUSY", "CANCEL")
MAX_SUMMARY = 4000  # characters of Voicenter's AI summary kept in its column

#: Voicenter's CDR times are epochs of Israel's wall-clock (cdr_start).
try:
    ISRAEL = zoneinfo.ZoneInfo("Asia/Jerusalem")
except zoneinfo.ZoneInfoNotFoundError:  # no zone database (Windows without tzdata)
    ISRAEL = dt.timezone(dt.timedelta(hours=2))
#: Seconds a CDR may seem to arrive before its call ended: clocks differ a little.
CDR_CLOCK_SLACK = 300


def _cdr_text(value):
    """A CDR field as text: numbers as written, true/false as 1/0, a structure as ""
    (the raw record keeps it)."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _cdr_number(value, low, high):
    """A number field (seconds) as a float, or None when it is not one in range."""
    try:
        number = float(_cdr_text(value))
    except ValueError:
        return None
    return number if low <= number <= high else None


def cdr_direction(text):
    """incoming, outgoing or internal, from a CDR's type/direction as worded
    ("Incoming Call", "outgoing", "Internal"); "" when unknown."""
    text = text.lower()
    for direction in ("incoming", "outgoing", "internal"):
        if direction[:3] in text:  # "Inc", "Out", "Int" and their longer forms
            return direction
    return ""


def _cdr_type(fields):
    """The CDR's type as a key of the tables above ("Click2Call leg2" ->
    "click2callleg2")."""
    return re.sub(r"[\s_-]+", "", _cdr_text(fields.get("type")).lower())


def _cdr_summary(value):
    """aiData.insights.summary (aiData as JSON, or as a JSON text in a form), or ""."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return ""
    insights = value.get("insights") if isinstance(value, dict) else None
    summary = insights.get("summary") if isinstance(insights, dict) else None
    return summary.strip()[:MAX_SUMMARY] if isinstance(summary, str) else ""


def _israel_wall_clock(seconds):
    """The true Unix times an epoch of Israel's wall-clock (the Israel-local time
    written as if it were UTC) can mean, latest first: two in the hour the clocks
    go back, which repeats, else one."""
    wall = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)
    return sorted({wall.replace(tzinfo=ISRAEL, fold=fold).timestamp() for fold in (0, 1)},
                  reverse=True)


def cdr_start(seconds, duration, received_at, ivrid=""):
    """The true Unix time a CDR's `time` means. Voicenter documents it as an epoch of
    Israel's wall-clock (2 or 3 hours ahead of a true Unix time); some senders may
    send a true one. A CDR arrives right after its call ends, so:
    - read as a true time, a call that would end after the CDR came (beyond
      CDR_CLOCK_SLACK) is impossible: Israel's wall-clock it is;
    - both readings possible: the ivruniqueid, which begins with the call's
      Israel-local yyyymmddhhmmss, decides when it is within 15 minutes of one;
    - else a CDR that came within an hour of its call's end read as a true time is
      one (read the other way it would have waited 2 hours and more); a later one
      (a re-sent or pulled record) is read as documented."""
    duration = duration or 0
    readings = _israel_wall_clock(seconds)
    # In the hour that repeats, the latest reading the arrival allows is the one.
    israel = next((start for start in readings
                   if start + duration <= received_at + CDR_CLOCK_SLACK), readings[-1])
    true = seconds
    plausible = [start for start in (israel, true)
                 if start + duration <= received_at + CDR_CLOCK_SLACK]
    if len(plausible) < 2:
        return plausible[0] if plausible else israel
    named = _ivrid_moment(ivrid)
    if named is not None:
        near = [start for start in plausible if abs(start - named) <= 900]
        if len(near) == 1:
            return near[0]
    return true if received_at - (true + duration) < 3600 else israel


def _ivrid_moment(ivrid):
    """The true Unix time an ivruniqueid's leading Israel-local yyyymmddhhmmss names,
    or None when it does not begin with one."""
    try:
        local = dt.datetime.strptime(ivrid[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return local.replace(tzinfo=ISRAEL).timestamp()


#: A row of the cdrs table (CALLS_TABLES), its columns in the table's order: what
#: cdr_row() makes of a CDR.
CdrRow = collections.namedtuple("CdrRow", (
    "ivrid", "received_at", "started", "direction", "caller", "target", "did", "e164",
    "status", "answered", "duration", "agent", "record", "raw", "role", "talk",
    "summary"))


def cdr_row(fields, region, received_at, *, true_time=False):
    """The columns of the cdrs table for a CDR's fields (a dict, values as decoded
    from JSON or a form), every field kept as received in `raw`. `true_time`: the
    record's `time` is a true Unix time (a pulled record's Date, in UTC), never to be
    read as an epoch of Israel's wall-clock as a pushed CDR's may be. Every rule of what a
    CDR means is here (a pulled Call Log record is stored through it too): its type
    (CDR_OUTGOING_TYPES are calls to the target; an agent's leg and a transfer of a
    call already known are no client's call: `role`, stored as ivruniqueid#role so
    that they never take the call's own record's place), its status (answered, or
    missed: CDR_MISSED_STATUSES, VoiceMail), its time (cdr_start), who answered an
    incoming call (_CDR_AGENT_FIELDS) or made an outgoing one (_CDR_CALLER_AGENT_FIELDS),
    the talk time and Voicenter's AI summary."""
    ivrid = _cdr_text(fields.get("ivruniqueid"))
    if not ivrid:
        raise CdrError("the CDR has no ivruniqueid")
    if len(ivrid) > 200:
        raise CdrError("the ivruniqueid is over 200 characters")
    try:
        raw = json.dumps(fields, ensure_ascii=False)
        raw.encode("utf-8")
    except (UnicodeEncodeError, ValueError, RecursionError):
        raise CdrError("the CDR holds text that is not valid Unicode") from None
    kind = _cdr_type(fields)
    role = ""
    if kind in CDR_AGENT_LEG_TYPES:
        role, direction = "agent leg", "internal"
    elif kind == "xfercdr":  # its role never hangs on an optional field: one id
        role, direction = "transfer", "internal"
    elif kind in CDR_OUTGOING_TYPES:
        direction = "outgoing"
    elif kind in ("voicemail", "queue"):  # a caller waiting in a queue called in
        direction = "incoming"
    else:
        direction = cdr_direction(_cdr_text(fields.get("type")) or
                                  _cdr_text(fields.get("direction")))
    caller = _cdr_text(fields.get("caller"))
    target = _cdr_text(fields.get("target"))
    client = {"outgoing": target, "internal": ""}.get(
        direction, _cdr_text(fields.get("callerPhone")) or caller)
    status = _cdr_text(fields.get("status"))
    if role or kind == "voicemail" or status.upper() in (*CDR_MISSED_STATUSES,
                                                         "VOICEMAIL"):
        answered = False
    else:
        answered = (status.upper() == "ANSWER"
                    or _cdr_text(fields.get("isAnswer")).lower() in ("1", "true"))
    started = _cdr_number(fields.get("time"), 946684800, 253402300799)  # years 2000-9999
    duration = _cdr_number(fields.get("duration"), 0, 10 ** 7)
    talk = _cdr_number(fields.get("actualCallDuration"), 0, 10 ** 7)
    agent = next((text for text in map(_cdr_text, map(fields.get, (
        _CDR_CALLER_AGENT_FIELDS if direction == "outgoing" else _CDR_AGENT_FIELDS)))
                  if text), "")
    return CdrRow(
        f"{ivrid}#{role.replace(' ', '-')}" if role else ivrid, received_at,
        received_at if started is None else started if true_time else
        cdr_start(started, duration, received_at, ivrid), direction,
        caller, target, _cdr_text(fields.get("did")),
        normalize_number(client, region) or "", status, int(answered),
        None if duration is None else round(duration), agent,
        _cdr_text(fields.get("record")), raw, role,
        None if talk is None else round(talk), _cdr_summary(fields.get("aiData")))


###############################################################################
# The calls store #############################################################
###############################################################################
# The calls database: its schema and upgrades, the recorder that writes the pop-ups'
# phases off the request path, and the records read from it.

# Every pop-up request is one phase of one call. The recorder queues it and a single
# writer thread stores it in SQLite (WAL), so the answer never waits for the disk.
# Triggers keep one row a call in `calls` as its phases and its CDR arrive, so a page
# groups and counts calls, not phases, reads one table and only the page it shows.
# Voicenter's CDRs (POST /cdr) are stored at once, each committed before it is
# acknowledged, in `cdrs`; a call's CDR and its pop-up phases share an id
# (ivruniqueid = ivrid) and are one row of `calls`. Marks and notes people make on calls are in `call_notes`.


# A batch goes to SQLite as one JSON array, one statement: executemany() re-takes the
# GIL for every row, and under load each of those waits behind the pop-ups.
_INSERT_JSON_BATCH = ("INSERT OR IGNORE INTO events SELECT " + ", ".join(
    f"json_extract(value, '$[{column}]')" for column in range(14)) + " FROM json_each(?)")


_INSERT_ROW = "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_WRITE_BATCH = 1_000  # events a statement: an event can be ~128 KiB (body and query)
RECORD_BACKLOG = 20_000  # events waiting for the disk (~1 KiB each); more are dropped
#: Seconds a CDR waits for its turn, then for a locked database, before it is answered
#: with a non-zero Err (Voicenter sends it again): a request thread is never held longer.
CDR_WAIT = 1.0
#: Seconds any write outside the recorder (a CDR, a mark, a note) waits for a database
#: another program holds; then it fails, and the office is told so in words.
DB_WAIT = 1.0
_RETRY_AT_MOST = 2.0  # seconds between tries of a failing database, at most
_STOP_TRIES_FOR = 5.0  # seconds a stop keeps trying to write what waits

#: The rows of `calls` for the ivrids `{where}` picks: each call's pop-up phases
#: (events, one a phase and station) summed up and joined with its CDR, or its CDR alone
#: (a call abandoned in a queue, an outgoing call). A CDR of no client's call (an agent's
#: own leg, a transfer: `role`) makes no call. Requests without an ivrid were once
#: recorded as "no-ivrid-..." (test lookups): they are no call. A ring group rings several
#: stations under one ivrid: the call is answered when any station answered (Talking,
#: isAnswered, an "answered elsewhere" hang-up of another station, or the CDR), by the
#: Talking station, and ends with that station's hang-up; an "answered elsewhere" hang-up
#: ends nothing. `duration` is the talk time, of answered calls only: the CDR's
#: actualCallDuration (Voicenter's record of the call comes first), else from the
#: Talking phase to the answerer's hang-up, else the CDR's duration.
#: `state` is the outcome as far as it does not depend on the clock: "pending" (no
#: answer, no hang-up, no CDR) reads as "in progress" or, after --ring-timeout, "no
#: answer recorded" (_OUTCOME).
_CALL_OF_IVRIDS = """
SELECT ivrid, started, caller, e164, did, direction, name, company, url, answered_at,
       CASE WHEN answered OR direction != 'incoming' THEN agent ELSE '' END,
       ended_at, answered, status,
       CASE WHEN answered THEN coalesce(
           talk, max(0, CAST(round(ended_at - answered_at) AS INTEGER)), duration) END,
       record, has_cdr,
       CASE WHEN direction IN ('outgoing', 'internal') THEN direction
            WHEN answered THEN 'answered'
            WHEN has_cdr OR ended_at IS NOT NULL THEN 'missed'
            ELSE 'pending' END,
       target, summary
FROM (SELECT *, CASE WHEN answered_at IS NOT NULL THEN (SELECT MIN(h.received_at)
                  FROM events h WHERE h.ivrid = c.ivrid AND h.phase = 'hangup'
                  AND h.exten_user = c.station) ELSE first_end END AS ended_at
FROM (SELECT k.ivrid, coalesce(e.started, d.started) AS started,
       coalesce(e.caller, d.caller) AS caller,
       CASE WHEN e.e164 != '' THEN e.e164 ELSE coalesce(d.e164, '') END AS e164,
       CASE WHEN e.did != '' THEN e.did ELSE coalesce(d.did, '') END AS did,
       coalesce(nullif(d.direction, ''), CASE WHEN lower(e.direction) LIKE 'out%'
                THEN 'outgoing' ELSE 'incoming' END) AS direction,
       coalesce(e.name, '') AS name, coalesce(e.company, '') AS company,
       coalesce(e.url, '') AS url, e.answered_at,
       CASE WHEN e.agent != '' THEN e.agent ELSE coalesce(d.agent, '') END AS agent,
       coalesce(e.agent, '') AS station, e.first_end,
       (e.answered_at IS NOT NULL OR coalesce(e.said_answered, 0)
        OR coalesce(d.answered, 0)) AS answered,
       coalesce(d.status, '') AS status, d.duration, d.talk,
       coalesce(d.record, '') AS record, d.ivrid IS NOT NULL AS has_cdr,
       coalesce(d.target, '') AS target, coalesce(d.summary, '') AS summary
  FROM (SELECT ivrid FROM events WHERE {where} AND substr(ivrid, 1, 9) != 'no-ivrid-'
        UNION SELECT ivrid FROM cdrs WHERE {where} AND role = '') k
  LEFT JOIN (SELECT ivrid, MIN(received_at) AS started, MAX(caller) AS caller,
               MAX(e164) AS e164, MAX(did) AS did, MAX(direction) AS direction,
               MAX(name) AS name, MAX(company) AS company, MAX(url) AS url,
               MIN(CASE WHEN phase = 'talking' THEN received_at END) AS answered_at,
               coalesce(MAX(CASE WHEN phase = 'talking' THEN exten_user END),
                        MAX(CASE WHEN phase = 'hangup' AND answered THEN exten_user END),
                        '') AS agent,
               MIN(CASE WHEN phase = 'hangup' AND lower(cause) NOT LIKE '%elsewhere%'
                   THEN received_at END) AS first_end,
               MAX(answered OR (phase = 'hangup' AND lower(cause) LIKE '%elsewhere%'))
                 AS said_answered
             FROM events WHERE {where} GROUP BY ivrid) e ON e.ivrid = k.ivrid
  LEFT JOIN cdrs d ON d.ivrid = k.ivrid AND d.role = '') c)"""


def _recount_call(ivrid):
    return (f"DELETE FROM calls WHERE ivrid = {ivrid}; INSERT INTO calls "
            + _CALL_OF_IVRIDS.format(where=f"ivrid = {ivrid}") + ";")


#: The tables; CALLS_TRIGGERS keep `calls` (apart, so that an upgrade fills its tables
#: before the triggers exist).
CALLS_TABLES = """
CREATE TABLE IF NOT EXISTS events (
    ivrid       TEXT NOT NULL,
    phase       TEXT NOT NULL,      -- ringing, talking, hangup (read_phase), else as sent
    received_at REAL NOT NULL,      -- Unix seconds
    caller      TEXT NOT NULL,      -- the caller id as received
    e164        TEXT NOT NULL,
    did         TEXT NOT NULL,
    exten_user  TEXT NOT NULL,      -- the station (extension) the phase is of
    direction   TEXT NOT NULL,
    answered    INTEGER NOT NULL,   -- the client said the call was answered
    name        TEXT NOT NULL,
    company     TEXT NOT NULL,
    total       INTEGER NOT NULL,
    url         TEXT NOT NULL,
    cause       TEXT NOT NULL,      -- a hang-up's cause as sent ("Answered elsewhere")
    PRIMARY KEY (ivrid, phase, exten_user)  -- a repeated delivery counts once; each
) WITHOUT ROWID;                            -- station of a ring group has its own
CREATE INDEX IF NOT EXISTS events_by_time ON events (received_at);
CREATE TABLE IF NOT EXISTS cdrs (   -- Voicenter's call detail records, one a call
    ivrid       TEXT NOT NULL,      -- its ivruniqueid (and #role for a role's record)
    received_at REAL NOT NULL,
    started     REAL NOT NULL,      -- its time as a true Unix time (cdr_start), else when it came
    direction   TEXT NOT NULL,      -- incoming, outgoing, internal, or ''
    caller      TEXT NOT NULL,
    target      TEXT NOT NULL,
    did         TEXT NOT NULL,
    e164        TEXT NOT NULL,      -- the client's number: the caller's, or the target's
    status      TEXT NOT NULL,      -- as sent: ANSWER, NOANSWER, ABANDONE, ...
    answered    INTEGER NOT NULL,
    duration    INTEGER,
    agent       TEXT NOT NULL,      -- who answered: extenUser, else the representative
    record      TEXT NOT NULL,      -- the recording's URL, as sent
    raw         TEXT NOT NULL,      -- every field as received, JSON
    role        TEXT NOT NULL DEFAULT '',  -- '', or no client's call: 'agent leg', 'transfer'
    talk        INTEGER,            -- actualCallDuration (talk time, s)
    summary     TEXT NOT NULL DEFAULT '',  -- aiData.insights.summary, Voicenter's AI
    PRIMARY KEY (started, ivrid)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS cdrs_by_ivrid ON cdrs (ivrid);  -- one CDR a call
CREATE INDEX IF NOT EXISTS cdrs_by_number ON cdrs (e164, started);
CREATE TABLE IF NOT EXISTS calls (  -- one row a call, kept by triggers: a page reads
    ivrid TEXT NOT NULL,            -- calls, not phases, and never joins
    started REAL NOT NULL, caller TEXT NOT NULL, e164 TEXT NOT NULL, did TEXT NOT NULL,
    direction TEXT NOT NULL, name TEXT NOT NULL, company TEXT NOT NULL, url TEXT NOT NULL,
    answered_at REAL, agent TEXT NOT NULL, ended_at REAL, answered INTEGER NOT NULL,
    status TEXT NOT NULL, duration INTEGER, record TEXT NOT NULL, has_cdr INTEGER NOT NULL,
    state TEXT NOT NULL,            -- missed, answered, outgoing, internal, pending
    target TEXT NOT NULL,           -- the CDR's target: whom an outgoing call went to
    summary TEXT NOT NULL,          -- Voicenter's AI summary of the call
    PRIMARY KEY (started, ivrid)    -- kept in time order: a day is read in one sweep
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS calls_by_ivrid ON calls (ivrid);
CREATE INDEX IF NOT EXISTS calls_by_number ON calls (e164, started, state);
CREATE TABLE IF NOT EXISTS call_notes (  -- what people noted on a call
    ivrid TEXT PRIMARY KEY, e164 TEXT NOT NULL, mark TEXT NOT NULL, note TEXT NOT NULL,
    marked_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS call_notes_by_number ON call_notes (e164, marked_at);
CREATE TABLE IF NOT EXISTS call_log (  -- how far Voicenter's Call Log has been pulled
    name TEXT PRIMARY KEY,          -- pulled_to: every record dated before it is had
    value REAL NOT NULL             -- (Unix seconds); pulled_at: the last good pull
) WITHOUT ROWID;
"""

#: The triggers that keep `calls` (one row a call) as events and CDRs come, change
#: and go: {name: (table, statement, the rows whose call is counted again)}.
_CALL_TRIGGERS = {
    f"call_of_{change}_{kind}": (f"{kind}s", statement, rows)
    for kind in ("event", "cdr") for change, statement, rows in (
        ("new", "INSERT", ("NEW",)), ("changed", "UPDATE", ("OLD", "NEW")),
        ("deleted", "DELETE", ("OLD",)))}
CALLS_TRIGGERS = "".join(
    f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {statement} ON {table} BEGIN "
    + " ".join(_recount_call(f"{row}.ivrid") for row in rows) + " END;\n"
    for name, (table, statement, rows) in _CALL_TRIGGERS.items())
CALLS_SCHEMA = CALLS_TABLES + CALLS_TRIGGERS

#: PRAGMA user_version of a database with the schema above. 0 is the events-only
#: schema of earlier versions, 2 the one whose `calls` had no CDR columns, 3 the one
#: with one event a phase (not a station) that knew no Talking phase: opening any of
#: them re-reads its events and CDRs under today's rules (_upgrade_calls).
CALLS_DB_VERSION = 4

#: Marks a person can set on a call; either one resolves a missed caller.
CALL_MARKS = ("handled", "called back")
MAX_NOTE = 2000  # characters of a note

#: How a call ended, in the order a day's calls are listed. "no answer recorded": no
#: hang-up came within --ring-timeout (Voicenter never sent it); counted as missed.
OUTCOMES = ("missed", "no answer recorded", "in progress", "answered", "outgoing",
            "internal")
MISSED_OUTCOMES = ("missed", "no answer recorded")


@dataclasses.dataclass(frozen=True)
class Call:
    """One call: its pop-up phases and its CDR as one."""

    ivrid: str
    started: dt.datetime
    caller: str
    e164: str
    name: str
    company: str
    url: str
    did: str
    answered_at: dt.datetime | None
    answered_by: str      # the agent's name (--agents), else the id as sent
    ended_at: dt.datetime | None
    outcome: str          # one of OUTCOMES
    tries: int = 1        # calls from the same number that day (calls to it are no tries)
    direction: str = "incoming"   # incoming, outgoing or internal
    status: str = ""      # the CDR's status as sent (ABANDONE, ...); "" without a CDR
    record: str = ""      # the recording's URL as sent (see `recording`)
    cdr_duration: int | None = None  # the talk time (s), None unless answered
    did_name: str = ""    # the dialled line's name (--lines)
    agent_id: str = ""    # extenUser or the CDR's representative, as sent
    mark: str = ""        # one of CALL_MARKS, or ""
    note: str = ""
    target: str = ""      # the CDR's target as sent: whom an outgoing call went to
    summary: str = ""     # Voicenter's AI summary of the call (aiData), as text
    answered: bool = False  # answered: by the office, or by the client it called

    @property
    def duration(self):
        """The talk time in seconds (see _CALL_OF_IVRIDS); None for a call nobody
        answered, whatever it rang for."""
        return self.cdr_duration

    @property
    def recording(self):
        """The recording's link when it is an http(s) one (safe to show), else ""."""
        return self.record.strip() if is_web_link(self.record) else ""


@dataclasses.dataclass(frozen=True)
class MissedCaller:
    """Someone whose calls on a day went unanswered: one row a number (a withheld
    caller's call is its own row), and whether the office has dealt with it."""

    caller: str           # the number as received on the last missed call
    e164: str             # "" when withheld
    name: str
    company: str
    tries: int            # missed calls that day
    first: dt.datetime
    last: dt.datetime
    last_ivrid: str       # the last missed call (to mark it)
    did: str
    did_name: str
    resolved: str         # "", or how: "answered", "called back", "marked"
    resolved_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class DaySummary:
    """A day's calls counted in SQL: calls by outcome, missed callers open and done,
    and the lines (did) called that day, for a filter."""

    outcomes: dict
    open_callers: int
    resolved_callers: int
    dids: tuple

    @property
    def total(self):
        return sum(self.outcomes.values())

    @property
    def missed(self):
        """Missed calls, with those no hang-up was recorded for."""
        return sum(self.outcomes.get(outcome, 0) for outcome in MISSED_OUTCOMES)


def _take(waiting, limit=None):
    """Up to `limit` items (all without one) from the left of a deque that other
    threads append to: popleft is atomic, so no lock is needed on either side."""
    items = []
    try:
        while limit is None or len(items) < limit:
            items.append(waiting.popleft())
    except IndexError:
        pass
    return items


class CallRecorder:
    """Records pop-up requests off the request path: record() only appends to a deque,
    with no lock and no wake-up; one writer thread owns the database and writes what
    waits every `interval` seconds, up to _WRITE_BATCH events a statement (a
    queue.Queue's locks cost the requests under load: bench/README.md, "The calls store").

    Nothing it could keep is lost: a database that is locked, full, read-only or
    cannot be opened is tried again with back-off while the events wait in memory (up
    to RECORD_BACKLOG; newer ones are dropped and counted); a database file deleted
    or replaced while running is noticed by its identity (device, inode) and a new
    one opened, and a batch written to the old file meanwhile is written again
    (INSERT OR IGNORE makes that harmless). A failure is logged when it starts or
    changes, and its end too; `trouble` says it for /health. It never delays or
    breaks a pop-up. close() writes what is waiting, trying for _STOP_TRIES_FOR."""

    def __init__(self, path, keep_days, interval=0.05, region=DEFAULTS["region"]):
        self.path = Path(path)
        self.keep_days = keep_days
        self.region = region  # the numbers of a database's CDRs read again (upgrade)
        self._interval = interval
        self._events = collections.deque()
        self._dropped = 0  # events turned away with the backlog full (under _drop_lock)
        self._dropped_told = 0  # of those, how many a summary line has counted
        self._drop_lock = threading.Lock()
        self._json = False  # whether this SQLite has JSON functions (known on connect)
        self._connection = None
        self._file = None   # (st_dev, st_ino) of the file the connection writes to
        self._companions = {}  # the same of its -wal and -shm files
        self.trouble = None  # why calls cannot be recorded now (no folder); None: they can
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write_loop, name="calls-writer",
                                        daemon=True)
        self._ready = threading.Event()

    def start(self):
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def close(self):
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=_STOP_TRIES_FOR + 5)
        self._tell_dropped()
        if self._events:  # the database failed until the end, or a request outlived it
            log.error("%d call events were not recorded: %s", len(self._events),
                      f"{self.path} could not be written ({self.trouble})" if self.trouble
                      else "the server stopped first")

    def record(self, fields, answer):
        ivrid = fields.get("ivrid")
        if not ivrid:  # a test lookup, not a call
            return
        if len(self._events) >= RECORD_BACKLOG:  # the disk is far behind; pop-ups first
            self._drop()
            return
        phase = _phase(fields)
        self._events.append((
            ivrid, read_phase(phase) or phase.strip().lower() or "unknown", time.time(),
            fields.get("phone", ""), answer.e164 or "", fields.get("did", ""),
            fields.get("extenUser", ""), fields.get("direction", ""),
            1 if str(fields.get("isAnswered", "")).lower() in ("1", "true") else 0,
            answer.name, answer.company, answer.total, answer.url,
            fields.get("cause", "")[:200]))

    def _drop(self):
        with self._drop_lock:  # only with the backlog full: a count no thread loses
            self._dropped += 1
            dropped = self._dropped
        if dropped in (1, 10, 100) or dropped % 1000 == 0:
            log.error("call recording is behind; %d events dropped so far", dropped)

    def _tell_dropped(self):
        with self._drop_lock:
            dropped, self._dropped_told = self._dropped - self._dropped_told, self._dropped
        if dropped:
            log.error("%d call events were dropped: more than %d were waiting for %s",
                      dropped, RECORD_BACKLOG, self.path)

    def _write_loop(self):
        retry_at = 0.0   # while the database fails: when to try again (monotonic)
        backoff = 0.0
        stop_by = None
        last_prune = 0.0
        try:
            self._try_writing()  # opens the database
            self._ready.set()
            while True:
                if stop_by is None:
                    if self._stop.wait(self._interval):
                        stop_by = time.monotonic() + _STOP_TRIES_FOR
                else:  # stopping: what waits is tried until written or stop_by
                    time.sleep(max(0.0, min(retry_at, stop_by) - time.monotonic()))
                now = time.monotonic()
                if now >= retry_at or (stop_by is not None and now >= stop_by):
                    if self._try_writing():
                        backoff = 0.0
                        if time.time() - last_prune > 3600:
                            last_prune = time.time()  # at the first turn, then hourly
                            self._prune()
                    else:
                        backoff = min(max(backoff * 2, 0.1), _RETRY_AT_MOST)
                        retry_at = now + backoff
                if stop_by is not None and (not self._events or now >= stop_by):
                    break
        finally:
            self._ready.set()
            self._close_connection()

    def _try_writing(self):
        """Writes what waits; False when the database failed (what waits stays)."""
        try:
            self._write_waiting()
        except Exception as error:  # locked, full, read-only, gone: the next try may do
            opening = self._connection is None
            self._close_connection()
            self._report_trouble(error, opening)
            return False
        if self.trouble is not None:
            self.trouble = None
            log.info("recording calls in %s again; what waited is recorded", self.path)
            self._tell_dropped()
        return True

    def _write_waiting(self):
        if self._connection is None or not self._still_there():
            self._open()
        while self._events:
            batch = _take(self._events, _WRITE_BATCH)
            try:
                self._write(batch)
            except BaseException:
                self._events.extendleft(reversed(batch))  # first again, in order
                raise
            if not self._still_there():  # the batch went to a file since removed
                self._events.extendleft(reversed(batch))
                self._open()

    def _identity(self, suffix=""):
        """(device, inode) of the database file (or its -wal, -shm); None: not there."""
        try:
            found = os.stat(f"{self.path}{suffix}")
        except FileNotFoundError:
            return None
        return found.st_dev, found.st_ino

    def _still_there(self):
        """Whether the path still names the file the connection writes to."""
        found = self._identity()
        if found is not None and found == self._file:
            return True
        log.warning("calls database %s was %s while open; recording in a new one",
                    self.path, "deleted" if found is None else "replaced")
        return False

    def _open(self):
        self._close_connection()
        if self._file is not None and self._identity() != self._file:
            # Deleted or replaced: SQLite leaves the old file's -wal and -shm beside the
            # path (it will not checkpoint a moved file), and the next file opened there
            # would take them for its own (measured: the old calls showed up in a new,
            # empty database). Those two files, and only those, go.
            for suffix, identity in self._companions.items():
                if identity is not None and self._identity(suffix) == identity:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{suffix}")
        self._file = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                     check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            _prepare_schema(connection, self.region)
            # A read-only or locked file fails here: a statement that would write (BEGIN
            # IMMEDIATE alone passes on a read-only WAL database whose -shm exists).
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("DELETE FROM events WHERE 0")
            connection.execute("ROLLBACK")
            self._json = _has_json(connection)
            self._file = self._identity()
            self._companions = {suffix: self._identity(suffix) for suffix in ("-wal", "-shm")}
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _close_connection(self):
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def _report_trouble(self, error, opening):
        # /health is open to anyone: the file's name and SQLite's words (which name no
        # folder), or an OSError's reason without its path.
        reason = (error.strerror or str(error)) if isinstance(error, OSError) else str(error)
        trouble = f"{self.path.name}: {reason}"
        if trouble != self.trouble:  # logged when it starts or changes, not every try
            if not isinstance(error, (sqlite3.Error, OSError)):
                log.error("the calls writer failed", exc_info=error)
            log.error("%s; %d call events wait in memory (at most %d) and are tried again",
                      f"calls database {self.path} cannot be opened ({error})" if opening
                      else f"could not record call events in {self.path} ({error})",
                      len(self._events), RECORD_BACKLOG)
        self.trouble = trouble

    def _write(self, events):
        """Writes events in one transaction. The database's own failures (locked, full,
        read-only, gone) go up, for the caller to keep the events and try again; an
        event the database cannot take (text SQLite refuses) costs only itself."""
        try:
            with self._connection:  # commits, or rolls back on an error
                self._connection.execute("BEGIN")
                self._insert(self._connection, events)
        except Exception as error:
            if _is_database_failure(error):
                raise
            if len(events) > 1:
                for event in events:
                    self._write([event])
            else:
                log.error("could not record a call event; it is dropped", exc_info=True)

    def _insert(self, connection, events):
        batch = json.dumps(events, ensure_ascii=False) if self._json else ""
        if batch and "\\u0000" not in batch:
            connection.execute(_INSERT_JSON_BATCH, (batch,))
        else:  # json_extract ends text at a NUL; or an SQLite without JSON functions
            connection.executemany(_INSERT_ROW, events)

    def _prune(self):
        cutoff = time.time() - self.keep_days * 86400
        try:
            with self._connection:
                self._connection.execute("BEGIN")
                deleted = self._connection.execute(
                    "DELETE FROM events WHERE received_at < ?", (cutoff,)).rowcount
                self._connection.execute("DELETE FROM cdrs WHERE started < ?", (cutoff,))
                self._connection.execute("DELETE FROM call_notes WHERE marked_at < ?",
                                         (cutoff,))
            if deleted:
                log.info("pruned %d call events older than %d days", deleted,
                         self.keep_days)
        except sqlite3.Error as error:
            log.error("could not prune old calls in %s: %s", self.path, error)

    def health(self):
        """None when calls are being recorded, else why not (for /health)."""
        trouble = self.trouble
        if trouble is None:
            return None
        return f"{trouble}; {len(self._events)} call events waiting"


def _is_database_failure(error):
    """An error of the database itself (locked, full, read-only, not there, not a
    database), worth trying again; not one of the events written (DataError, ...)."""
    return (isinstance(error, (sqlite3.OperationalError, OSError))
            or type(error) is sqlite3.DatabaseError)


def _has_json(connection):
    try:
        connection.execute("SELECT json_extract('[1]', '$[0]')")
        return True
    except sqlite3.OperationalError:
        return False


def _prepare_schema(connection, region=DEFAULTS["region"]):
    """Make the tables; a database of an earlier version is brought up to date in
    place, in one transaction (_upgrade_calls): nothing it holds is lost."""
    if connection.execute("PRAGMA user_version").fetchone()[0] >= CALLS_DB_VERSION:
        connection.executescript(CALLS_SCHEMA)  # all there; a table dropped comes back
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version < CALLS_DB_VERSION:  # else another connection did it meanwhile
            _upgrade_calls(connection, version, region)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _run_statements(connection, script):
    """The statements of `script` one by one, inside the transaction open
    (executescript() would commit it first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            connection.execute(statement)
            statement = ""


def _upgrade_calls(connection, version, region=DEFAULTS["region"]):
    """Re-read a database of schema `version` under today's rules, in the transaction
    open: its events with their phases read again (a Talking phase it did not
    understand makes its call answered now), its CDRs' columns derived again from
    the fields kept as received, and `calls` made anew from both. Logged once."""
    tables = {row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    for trigger in _CALL_TRIGGERS:
        connection.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    connection.execute("DROP TABLE IF EXISTS calls")
    if "events" in tables:
        connection.execute("ALTER TABLE events RENAME TO events_before")
        connection.execute("DROP INDEX IF EXISTS events_by_time")
    if "cdrs" in tables:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(cdrs)")}
        for column, kind in (("role", "TEXT NOT NULL DEFAULT ''"), ("talk", "INTEGER"),
                             ("summary", "TEXT NOT NULL DEFAULT ''")):
            if column not in columns:
                connection.execute(f"ALTER TABLE cdrs ADD COLUMN {column} {kind}")
    _run_statements(connection, CALLS_TABLES)
    events = cdrs = 0
    if "events" in tables:
        phases = " ".join(f"WHEN '{name}' THEN '{phase}'"
                          for name, phase in _PHASE_NAMES.items())
        events = connection.execute(
            "INSERT OR IGNORE INTO events SELECT ivrid, CASE lower(trim(phase)) "
            f"{phases} ELSE phase END, received_at, caller, e164, did, exten_user, "
            "direction, answered, name, company, total, url, '' FROM events_before"
        ).rowcount
        connection.execute("DROP TABLE events_before")
    if "cdrs" in tables:
        cdrs = _reread_cdrs(connection, region)
    connection.execute(f"INSERT INTO calls {_CALL_OF_IVRIDS.format(where='1')}")
    _run_statements(connection, CALLS_TRIGGERS)
    connection.execute(f"PRAGMA user_version = {CALLS_DB_VERSION}")
    if events or cdrs:
        path = connection.execute("PRAGMA database_list").fetchone()[2]
        log.info("calls database %s upgraded (schema %d to %d): %d call events and %d "
                 "CDRs read again under today's rules; %d calls", path, version,
                 CALLS_DB_VERSION, events, cdrs,
                 connection.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


def _reread_cdrs(connection, region):
    """Every CDR's columns derived again from its fields as received (cdr_row), the
    numbers read in `region` (--region); the client's number is kept as it was read
    when the client stays the same party."""
    insert = f"INSERT OR IGNORE INTO cdrs ({', '.join(CdrRow._fields)}) VALUES ({{}})".format
    count = 0
    columns = ", ".join(CdrRow._fields)
    for old in map(CdrRow._make, connection.execute(f"SELECT {columns} FROM cdrs")
                   .fetchall()):
        try:
            fields = json.loads(old.raw)
            fields = fields if isinstance(fields, dict) else {}
            pulled = any(str(name).lower() == "callid" for name in fields)  # Call Log's
            row = cdr_row(fields, region, old.received_at, true_time=pulled)
        except (CdrError, ValueError, RecursionError):
            continue  # kept as it is
        if row.direction == old.direction:
            row = row._replace(e164=old.e164)
        connection.execute("DELETE FROM cdrs WHERE ivrid = ?", (old.ivrid,))
        if connection.execute(insert(", ".join("?" * len(row))), row).rowcount:
            count += 1
        else:  # its new id is another record's: kept as it was
            connection.execute(insert(", ".join("?" * len(old))), old)
    return count


@contextlib.contextmanager
def _writing(path, busy_timeout=DB_WAIT):
    """A connection for one write outside the recorder (a CDR, a mark), in one
    transaction, committed with the disk's flush (synchronous=FULL) before it returns:
    what is acknowledged stays stored even through a power cut."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        _prepare_schema(connection)
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def _reading(path):
    """A read-only connection, or None when there is no database yet."""
    if not Path(path).exists():
        yield None
        return
    connection = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                                 timeout=1.0)
    try:
        yield connection
    finally:
        connection.close()


###############################################################################
# Agents and lines ############################################################
###############################################################################
# Names instead of ids: agents by extension, the office's numbers by line.


class CallNames:
    """People and lines instead of ids: agents by extension (extenUser, the CDR's
    representative) and the office's numbers (did) by name, from --agents, --lines;
    `extensions` (a VoicenterExtensions) names the agents --agents does not."""

    def __init__(self, agents=(), lines=(), region=DEFAULTS["region"], extensions=None):
        self.agents = {key: name for key, name in agents}
        self.region = region
        self.lines = {self._line_key(number): name for number, name in lines}
        self.extensions = extensions

    @classmethod
    def from_config(cls, config):
        return cls(config.agents or (), config.lines or (), config.region)

    def _line_key(self, number):
        return normalize_number(number, self.region) or number.strip()

    def agent(self, agent_id):
        """The agent's name (--agents, else Voicenter's extension list), else the id
        as sent."""
        if not agent_id:
            return ""
        key = agent_id.strip()
        return (self.agents.get(key) or (self.extensions is not None
                                         and self.extensions.names.get(key))
                or agent_id)

    def line(self, did):
        """The line's name, or "" when it has none."""
        return self.lines.get(self._line_key(did), "") if did else ""


NO_NAMES = CallNames()


###############################################################################
# Storing CDRs and marks ######################################################
###############################################################################
# A CDR stored as it is read (one row a call, whoever sent it), and the marks and notes
# people make on calls.


def store_cdr(path, fields, region=DEFAULTS["region"], busy_timeout=DB_WAIT):
    """Store one CDR in the calls database at `path`, committed to disk before it
    returns; True when new or when it filled in what the call's stored record lacked,
    False when it added nothing (Voicenter re-sends). CdrError: the CDR cannot be
    stored as sent; sqlite3.Error/OSError: the database failed (worth re-sending)."""
    return store_cdrs(path, [fields], region, busy_timeout) == 1


#: A record of a call already stored fills in what the stored one lacks (a pulled
#: Call Log record has no talk time, AI summary or extenUser; the push, re-sent after
#: the pull, has them) and never changes what it has: the start, status and direction
#: are the first record's. A record that adds nothing changes nothing (no trigger runs).
#: The fields as received are joined, the stored ones winning; a pull's CallID is never
#: added to a push's (_reread_cdrs would read the push's time as a pull's).
_CDR_FILLS = (("duration", "IS NULL", "IS NOT NULL"), ("agent", "= ''", "!= ''"),
              ("record", "= ''", "!= ''"), ("talk", "IS NULL", "IS NOT NULL"),
              ("summary", "= ''", "!= ''"))
_CDR_FILL = (" ON CONFLICT(ivrid) DO UPDATE SET " + ", ".join(
    f"{column} = CASE WHEN {column} {lacks} THEN excluded.{column} ELSE {column} END"
    for column, lacks, _ in _CDR_FILLS) + "{raw} WHERE " + " OR ".join(
    f"({column} {lacks} AND excluded.{column} {has})" for column, lacks, has in _CDR_FILLS))
_CDR_RAW_JOINED = (", raw = CASE WHEN json_valid(raw) AND json_valid(excluded.raw) THEN "
                   "json_patch(json_remove(excluded.raw, '$.CallID'), raw) ELSE raw END")


def store_cdrs(path, records, region=DEFAULTS["region"], busy_timeout=5.0, *,
               true_time=False):
    """Store CDRs (pushed, or pulled from the Call Log and mapped to a push's field
    names) in one transaction committed to disk before it returns; how many were
    new or filled in what a call's stored record lacked (_CDR_FILL): one row a call
    whoever sent it, as often. One statement whatever the count (the rows as one
    JSON array): executemany() would re-take the GIL for every row, each time behind
    the pop-ups. CdrError: a record cannot be stored as sent (none is);
    sqlite3.Error/OSError as store_cdr."""
    received_at = time.time()
    rows = [cdr_row(fields, region, received_at, true_time=true_time)
            for fields in records]
    if not rows:
        return 0
    width = len(rows[0])
    with _writing(path, busy_timeout) as connection:
        json_functions = _has_json(connection)
        fill = _CDR_FILL.format(raw=_CDR_RAW_JOINED if json_functions else "")
        batch = json.dumps(rows, ensure_ascii=False) if json_functions else ""
        if batch and "\\u0000" not in batch:
            return connection.execute(
                "INSERT INTO cdrs SELECT " + ", ".join(
                    f"json_extract(value, '$[{column}]')" for column in range(width))
                + " FROM json_each(?) WHERE true" + fill, (batch,)).rowcount
        # json_extract ends text at a NUL; or an SQLite without JSON functions
        return sum(connection.execute(
            f"INSERT INTO cdrs VALUES ({', '.join('?' * width)}){fill}",
            row).rowcount for row in rows)


def mark_call(path, ivrid, mark="", note="", *, now=None):
    """Set a call's mark (one of CALL_MARKS, or "" for none) and note, replacing what
    was there (note=None keeps the note). A "handled" or "called back" mark resolves
    the caller's missed calls up to now. False when no call has this ivrid."""
    if mark not in ("", *CALL_MARKS):
        raise ValueError(f"a mark is one of {', '.join(CALL_MARKS)}, or empty")
    with _writing(path) as connection:
        found = connection.execute(
            "SELECT e164 FROM calls WHERE ivrid = ?1 UNION ALL "
            "SELECT e164 FROM cdrs WHERE ivrid = ?1", (ivrid,)).fetchall()
        if not found:
            return False
        e164 = max(row[0] for row in found)
        if note is None:
            kept = connection.execute("SELECT note FROM call_notes WHERE ivrid = ?",
                                      (ivrid,)).fetchone()
            note = kept[0] if kept else ""
        connection.execute("INSERT OR REPLACE INTO call_notes VALUES (?, ?, ?, ?, ?)",
                           (ivrid, e164, mark, note[:MAX_NOTE],
                            time.time() if now is None else now))
    return True


###############################################################################
# Reading calls ###############################################################
###############################################################################
# The day's calls, its missed callers and a number's calls, read with SQL a page at a
# time.


#: A call's outcome (one of OUTCOMES) from its stored state and the clock; `c` is calls.
_OUTCOME = ("CASE c.state WHEN 'pending' THEN CASE WHEN c.started < :settled THEN "
            "'no answer recorded' ELSE 'in progress' END ELSE c.state END")
_OUTCOME_ORDER = "CASE outcome " + " ".join(
    f"WHEN '{outcome}' THEN {rank}" for rank, outcome in enumerate(OUTCOMES)) + " END"
#: The columns a Call is read from (_call_of_row()), as every query of calls names them.
CALL_COLUMNS = ("ivrid", "started", "caller", "e164", "did", "direction", "name",
                "company", "url", "answered_at", "agent", "ended_at", "status",
                "duration", "record", "outcome", "target", "summary", "answered")
_ROW_COLUMNS = ", ".join(f"{_OUTCOME} AS outcome" if name == "outcome" else f"c.{name}"
                         for name in CALL_COLUMNS)
#: The day's calls (to line :did when given); a call belongs to the day it began on,
#: even when it ends after midnight.
_OF_DAY = ("{alias}.started >= :start AND {alias}.started < :end "
           "AND (:did IS NULL OR {alias}.did = :did)")
_MISSED = "(c.state = 'missed' OR (c.state = 'pending' AND c.started < :settled))"


def _day_params(day, zone, ring_timeout_seconds, did, now):
    """The parameters of a query over `day`'s calls (:start, :end, :settled, :did)."""
    start, end = _day_bounds(day, zone)
    settled = (time.time() if now is None else now) - _settle_seconds(ring_timeout_seconds)
    return {"start": start, "end": end, "settled": settled, "did": did or None}


def _settle_seconds(ring_timeout_seconds):
    return DEFAULTS["ring_timeout_minutes"] * 60 if ring_timeout_seconds is None else ring_timeout_seconds


def _call_of_row(row, zone, names):
    """The Call of a row (a sqlite3.Row) of CALL_COLUMNS, and of `tries`, `mark` and
    `note` when the query reads them."""
    def at(seconds):
        return None if seconds is None else _local_time(seconds, zone)
    read = row.keys()
    return Call(ivrid=row["ivrid"], started=_local_time(row["started"], zone),
                caller=row["caller"], e164=row["e164"], name=row["name"],
                company=row["company"], url=row["url"], did=row["did"],
                answered_at=at(row["answered_at"]), answered_by=names.agent(row["agent"]),
                ended_at=at(row["ended_at"]), outcome=row["outcome"],
                tries=row["tries"] if "tries" in read else 1,
                direction=row["direction"], status=row["status"], record=row["record"],
                cdr_duration=row["duration"], did_name=names.line(row["did"]),
                agent_id=row["agent"], mark=row["mark"] if "mark" in read else "",
                note=row["note"] if "note" in read else "", target=row["target"],
                summary=row["summary"], answered=bool(row["answered"]))


def iter_calls_of_day(path, day, *, zone=None, ring_timeout_seconds=None, did=None, names=None,
                      index=None, limit=None, offset=0, now=None, newest_first=False):
    """The calls that began on `day` (in `zone`; None: this machine's), missed first,
    then newest first (`newest_first`: in time order only, read straight off the
    table's order, the page's cheapest); only those to line `did` when given; `limit`
    from `offset` when given. A call the pop-up never saw (a CDR's) is named from `index` (a ContactIndex).
    The query runs (and fails: sqlite3.Error) before this returns; the calls are then
    read one by one, so that a whole day can be streamed in constant memory. One sweep
    of the day's rows; tries and notes are looked up for the calls returned only."""
    names = names or NO_NAMES
    order = ("{alias}.started DESC, {alias}.ivrid DESC" if newest_first else
             _OUTCOME_ORDER + ", {alias}.started DESC, {alias}.ivrid")
    # Tries: one grouped count of the day's calls of the numbers shown (a range of
    # calls_by_number each), joined to the rows: never a count for each row, which
    # made one number calling N times cost N x N for the day's CSV. Only the number's
    # own calls to the office count (its state is in calls_by_number): a call-back is
    # no try of the client's.
    sql = f"""
        WITH p AS MATERIALIZED (
            SELECT {_ROW_COLUMNS} FROM calls c WHERE {_OF_DAY.format(alias="c")}
            ORDER BY {order.format(alias="c")} LIMIT :limit OFFSET :offset
        ), tries AS MATERIALIZED (
            SELECT t.e164, COUNT(*) AS tries FROM calls t
            WHERE t.e164 IN (SELECT e164 FROM p WHERE e164 != '')
              AND t.state NOT IN ('outgoing', 'internal')
              AND {_OF_DAY.format(alias="t")} GROUP BY t.e164
        )
        SELECT {", ".join(f"p.{name}" for name in CALL_COLUMNS)},
               coalesce(tries.tries, p.direction = 'incoming') AS tries,
               coalesce(n.mark, '') AS mark,
               coalesce(n.note, '') AS note
        FROM p LEFT JOIN tries ON tries.e164 = p.e164
        LEFT JOIN call_notes n ON n.ivrid = p.ivrid
        ORDER BY {order.format(alias="p")}"""
    params = _day_params(day, zone, ring_timeout_seconds, did, now)
    params.update(limit=-1 if limit is None else limit, offset=offset)
    if not Path(path).exists():
        return iter(())
    connection = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                                 timeout=1.0)
    try:
        cursor = connection.cursor()
        cursor.row_factory = sqlite3.Row
        first = cursor.execute(sql, params).fetchmany(100)
    except BaseException:
        connection.close()
        raise

    def calls():
        rows = first
        try:
            while rows:
                for row in rows:
                    call = _call_of_row(row, zone, names)
                    yield _named(call, index) if index is not None else call
                rows = cursor.fetchmany(500)
        finally:
            connection.close()
    return calls()


def _named(call, index):
    """The call with the name and company of its number's contact when it has none."""
    if call.name or not call.e164:
        return call
    match = index.lookup(call.e164)
    if not match.total:
        return call
    return dataclasses.replace(call, name=match.contact.name, company=match.contact.company)


def calls_of_day(path, day, **options):
    """iter_calls_of_day() as a list (a page of calls: pass limit and offset)."""
    return list(iter_calls_of_day(path, day, **options))


def _day_counts(connection, params, open_callers, resolved_callers):
    """A DaySummary from one sweep of the day's calls (all lines: the list of lines
    comes from it), counted for line :did only when one is given."""
    counted = connection.execute(
        f"SELECT {_OUTCOME}, c.did, COUNT(*) FROM calls c "
        f"WHERE {_OF_DAY.format(alias='c')} GROUP BY 1, 2", {**params, "did": None})
    outcomes, lines = collections.Counter(), set()
    for outcome, line, count in counted:
        lines.add(line)
        if params["did"] is None or line == params["did"]:
            outcomes[outcome] += count
    return DaySummary({outcome: outcomes[outcome] for outcome in OUTCOMES
                       if outcome in outcomes}, open_callers, resolved_callers,
                      tuple(sorted(lines - {""})))


#: The day's missed callers (`callers`), one row a number (a withheld caller's call
#: alone) with its last missed call's columns, each with the earliest thing after that
#: call that resolves them (`done`, `resolved`): a call with them answered ("answered"),
#: a call to them ("called back"), a mark ("marked"). Followed by a SELECT.
_MISSED_CALLERS = f"""
WITH grouped AS (
    SELECT CASE WHEN c.e164 != '' THEN c.e164 ELSE 'call ' || c.ivrid END AS who,
           c.caller, c.e164, c.name, c.company, c.ivrid, c.did, MAX(c.started) AS started,
           COUNT(*) AS tries
    FROM calls c WHERE {_OF_DAY.format(alias="c")} AND {_MISSED} GROUP BY who
), resolutions AS MATERIALIZED (  -- else SQLite repeats the look-ups in `callers`
    SELECT g.*,
      (SELECT MIN(a.started) FROM calls a WHERE g.e164 != '' AND a.e164 = g.e164
         AND a.started > g.started AND (a.state = 'answered'
              OR (a.state = 'outgoing' AND a.answered))) AS contacted,
      (SELECT MIN(n.marked_at) FROM call_notes n
         WHERE (n.ivrid = g.ivrid OR (g.e164 != '' AND n.e164 = g.e164))
         AND n.marked_at >= g.started AND n.mark != '') AS marked
    FROM grouped g
), callers AS (
    SELECT *, min(coalesce(contacted, 1e18), coalesce(marked, 1e18)) AS done,
      CASE WHEN contacted IS NULL AND marked IS NULL THEN ''
           WHEN marked < contacted OR contacted IS NULL THEN 'marked'
           WHEN (SELECT a.state FROM calls a WHERE a.e164 = r.e164
                 AND a.started = r.contacted) = 'outgoing' THEN 'called back'
           ELSE 'answered' END AS resolved
    FROM resolutions r
)"""


def missed_callers(path, day, *, index=None, zone=None, ring_timeout_seconds=None, did=None,
                   names=None, open_only=False, limit=None, offset=0, now=None):
    """The day's missed callers, one row a number: those still waiting for the office
    first (newest last try first), then those resolved. Who they are comes from
    `index` (a ContactIndex: the contacts served now), else from what the pop-up
    answered then. `open_only`: only those still waiting."""
    with _reading(path) as connection:
        if connection is None:
            return []
        params = _day_params(day, zone, ring_timeout_seconds, did, now)
        rows = _missed_caller_rows(connection, params, limit, offset, open_only)
    return [_missed_caller(row, zone, index, names or NO_NAMES) for row in rows]


def _missed_caller_rows(connection, params, limit, offset, open_only=False):
    """Rows (sqlite3.Row) of missed callers (see missed_callers()), each with the
    number of callers open and resolved in all (before `limit` and `offset`)."""
    cursor = connection.cursor()
    cursor.row_factory = sqlite3.Row
    return cursor.execute(
        _MISSED_CALLERS + f""" SELECT caller, e164, name, company, tries,
               CASE WHEN tries = 1 THEN started ELSE (SELECT MIN(c.started)
                 FROM calls c WHERE c.e164 = r.e164 AND c.started >= :start
                 AND {_MISSED} AND (:did IS NULL OR c.did = :did)) END AS first,
               started AS last, ivrid AS last_ivrid, did, resolved,
               CASE WHEN resolved != '' THEN done END AS resolved_at,
               SUM(resolved = '') OVER () AS open_callers,
               SUM(resolved != '') OVER () AS resolved_callers
        FROM callers r {"WHERE resolved = ''" if open_only else ""}
        ORDER BY resolved != '', started DESC, ivrid LIMIT :limit OFFSET :offset""",
        {**params, "limit": -1 if limit is None else limit, "offset": offset}).fetchall()


def _missed_caller(row, zone, index, names):
    """The MissedCaller of a row of _missed_caller_rows()."""
    e164, name, company, resolved_at = (row["e164"], row["name"], row["company"],
                                        row["resolved_at"])
    if index is not None and e164:
        match = index.lookup(e164)
        if match.total:
            name, company = match.contact.name, match.contact.company
    return MissedCaller(
        caller=row["caller"], e164=e164, name=name, company=company, tries=row["tries"],
        first=_local_time(row["first"], zone), last=_local_time(row["last"], zone),
        last_ivrid=row["last_ivrid"], did=row["did"], did_name=names.line(row["did"]),
        resolved=row["resolved"],
        resolved_at=None if resolved_at is None else _local_time(resolved_at, zone))


class DayPage(typing.NamedTuple):
    """What the calls page shows of a day: its counts, a page of its missed callers
    (open first) and a page of its calls (newest first)."""

    summary: DaySummary
    callers: list
    calls: list


def day_page(path, day, *, size, callers_from=0, calls_from=0, zone=None,
             ring_timeout_seconds=None, did=None, names=None, index=None, now=None):
    """The calls page's data in three queries, whatever the day's size: one sweep of
    the day's calls for the counts, one of its missed calls for the callers (and
    their counts), and `size` calls read straight off the table's time order."""
    names = names or NO_NAMES
    with _reading(path) as connection:
        if connection is None:
            return DayPage(DaySummary({}, 0, 0, ()), [], [])
        params = _day_params(day, zone, ring_timeout_seconds, did, now)
        rows = _missed_caller_rows(connection, params, size, callers_from)
        if rows:
            open_callers, resolved_callers = (rows[0]["open_callers"],
                                              rows[0]["resolved_callers"])
        else:  # none on this page: counted without it
            counted = dict(connection.execute(
                _MISSED_CALLERS + "SELECT resolved = '', COUNT(*) FROM callers GROUP BY 1",
                params).fetchall())
            open_callers, resolved_callers = counted.get(1, 0), counted.get(0, 0)
        summary = _day_counts(connection, params, open_callers, resolved_callers)
    calls = calls_of_day(path, day, zone=zone, ring_timeout_seconds=ring_timeout_seconds, did=did,
                         names=names, index=index, limit=size, offset=calls_from,
                         now=now, newest_first=True)
    return DayPage(summary, [_missed_caller(row, zone, index, names) for row in rows],
                   calls)


def calls_of_number(path, e164, *, zone=None, ring_timeout_seconds=None, names=None, limit=50,
                    now=None):
    """One number's latest calls, incoming and outgoing, newest first (a caller's
    page). `e164` as normalize_number() writes it ("+972722776772")."""
    names = names or NO_NAMES
    with _reading(path) as connection:
        if connection is None or not e164:
            return []
        settled = (time.time() if now is None else now) - _settle_seconds(ring_timeout_seconds)
        cursor = connection.cursor()
        cursor.row_factory = sqlite3.Row
        rows = cursor.execute(
            f"""SELECT {_ROW_COLUMNS}, coalesce(n.mark, '') AS mark,
                       coalesce(n.note, '') AS note
            FROM calls c LEFT JOIN call_notes n ON n.ivrid = c.ivrid
            WHERE c.e164 = :e164 ORDER BY c.started DESC, c.ivrid LIMIT :limit""",
            {"e164": e164, "settled": settled, "limit": limit}).fetchall()
    return [_call_of_row(row, zone, names) for row in rows]


###############################################################################
# The export ##################################################################
###############################################################################
# /calls.csv's rows, with no cell a spreadsheet would run as a formula.


#: /calls.csv's columns: (header, the Call's attribute, or how its cell is made). The
#: headers are what scripts read: a new column goes at the end.
CALLS_CSV_COLUMNS = (
    ("time", lambda call: call.started.strftime("%Y-%m-%d %H:%M:%S")),
    ("outcome", "outcome"), ("caller", "caller"), ("name", "name"),
    ("company", "company"), ("tries", "tries"), ("answered by", "answered_by"),
    ("duration (s)", lambda call: "" if call.duration is None else call.duration),
    ("dialled", "did"), ("crm link", "url"), ("ivrid", "ivrid"),
    ("direction", "direction"), ("status", "status"), ("line", "did_name"),
    ("recording", "recording"), ("mark", "mark"), ("note", "note"),
    ("called number", lambda call: (call.target or call.caller)
     if call.direction == "outgoing" else ""),
    ("summary", "summary"),
)


def calls_csv_lines(calls):
    """The calls as CSV text for Excel, line by line (a generator: a day of any size
    in constant memory): UTF-8 with a BOM first so that Hebrew opens correctly; no
    text cell a spreadsheet would run as a formula (_no_formula())."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header for header, _ in CALLS_CSV_COLUMNS)
    yield "\ufeff" + out.getvalue()
    cells = [operator.attrgetter(cell) if isinstance(cell, str) else cell
             for _, cell in CALLS_CSV_COLUMNS]
    for call in calls:
        out.seek(0)
        out.truncate()
        writer.writerow([_no_formula(value) if isinstance(value, str) else value
                         for value in (cell(call) for cell in cells)])
        yield out.getvalue()


#: What makes a spreadsheet read a cell as a formula (OWASP, CSV injection): = + - @
#: first or after leading spaces and invisible characters, and their full-width and
#: small forms, which spreadsheets may read as the ASCII ones; a tab, CR or LF first
#: (_no_formula).
_FORMULA_SIGNS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\ufe6b")


def _no_formula(text):
    """Text that a spreadsheet will show, not run: callers choose their caller id and
    names come from files. Such a cell gets a leading ' (OWASP's advice). The one
    rule for every CSV this server writes. Leading spaces and invisible characters
    (format characters, Unicode's Cf: U+200B zero-width space, U+FEFF, U+2060, the
    direction marks, ...) are looked through: a spreadsheet may drop them and read
    the sign after them as a formula's start."""
    if text[:1] in ("\t", "\r", "\n"):
        return "'" + text
    for char in text:
        if char in _FORMULA_SIGNS:
            return "'" + text
        if not (char.isspace() or unicodedata.category(char) == "Cf"):
            break
    return text


###############################################################################
# Voicenter's APIs ############################################################
###############################################################################
# What this server asks Voicenter with the account's code (--voicenter-code): the Call
# Log, pulled off the request path into the calls database; the extension list (who the
# agents are) and Click2Call (ring the agent, then dial the customer). The code travels
# in the JSON body only, never in a URL, a log line or a page.


class VoicenterUnreachable(PopupError):
    """Voicenter's API could not be asked, or did not answer with its JSON."""


class EmptyExtensionList(VoicenterUnreachable):
    """Voicenter answered an empty extension list: what a wrong code gets."""


class VoicenterRefused(VoicenterUnreachable):
    """Voicenter answered 401 or 403 without its JSON: its guides' troubleshooting
    says this server's public IP address is not authorised for its API (CPanel, API
    Settings). Reached, then: said as a refusal, never as "could not be reached"."""

    def __init__(self, status):
        super().__init__(VOICENTER_REFUSED.format(status=status))
        self.status = status


#: What Voicenter's 401 or 403 means, in words for /health and the log (the pages
#: have theirs in views/texts.toml: "callback.refused", "voicenter.refused",
#: "call_log.forbidden").
VOICENTER_REFUSED = ("Voicenter refused this server (HTTP {status}): its address is not "
                     "authorised; authorise this server's public IP address in "
                     "Voicenter's CPanel, under API Settings")


#: Seconds a request for the office's pages (Click2Call) or the extension list may
#: take in all, connection to last byte.
VOICENTER_TIMEOUT = 10.0
#: The largest answer read from Voicenter's APIs: a Call Log answer holds up to 10,000
#: records of a few hundred bytes each; anything far bigger is not Voicenter's.
VOICENTER_MAX_ANSWER = 64 * 1024 * 1024


def voicenter_request(url: str, payload: dict, *, timeout: float,
                      whole: float | None = None) -> dict:
    """POST `payload` as JSON to one of Voicenter's APIs and return its JSON answer;
    raises VoicenterUnreachable (a PopupError) for a refused connection, a timeout, a
    non-2xx status or an answer that is not a JSON object, VoicenterRefused (one of
    them) for a 401 or 403 that is not. Never logs the payload (it holds the account's
    code). A non-2xx status whose body is Voicenter's JSON object (the Call Log
    answers its errors with 403 or 404) is returned like any answer.
    `timeout` bounds each wait for the network; `whole` (default: 3 x timeout) the
    whole request, so that an answer trickling in never holds the caller longer."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json",
                 "User-Agent": f"popup-server/{__version__}"})
    status = 200
    whole = 3 * timeout if whole is None else whole
    try:
        with _CutAtDeadline(whole) as connections:
            opener = urllib.request.build_opener(*connections.handlers())
            try:
                with opener.open(request, timeout=timeout) as answer:
                    body = answer.read(VOICENTER_MAX_ANSWER + 1)
            except (OSError, http.client.HTTPException, ValueError):
                if connections.cut:
                    raise VoicenterUnreachable(f"no whole answer within {whole:g} s") \
                        from None
                raise
            if connections.cut:
                raise VoicenterUnreachable(f"no whole answer within {whole:g} s")
    except urllib.error.HTTPError as error:
        status = error.code
        try:
            body = error.read(VOICENTER_MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            error.close()
    except urllib.error.URLError as error:
        reason = error.reason
        raise VoicenterUnreachable(
            (reason.strerror or str(reason)) if isinstance(reason, OSError)
            else str(reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error)
        raise VoicenterUnreachable(reason or type(error).__name__) from None
    if len(body) > VOICENTER_MAX_ANSWER:
        raise VoicenterUnreachable(f"its answer is over {VOICENTER_MAX_ANSWER} bytes")
    try:
        data = json.loads(body.decode("utf-8-sig"), object_hook=_now_and_then_yield())
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        if status in (401, 403):
            raise VoicenterRefused(status)
        raise VoicenterUnreachable(f"it answered HTTP {status}" if status >= 300 else
                                   "its answer is not JSON")
    return data


def _now_and_then_yield(every=500):
    """A json.loads object_hook that lets the other threads run every `every` objects:
    the C decoder holds the GIL for a whole answer (a 10,000-record one takes 0.1-0.2
    s), and the pop-ups' threads must not wait for it."""
    count = itertools.count(1)

    def hook(value):
        if next(count) % every == 0:
            time.sleep(0)  # releases the GIL, for a pop-up waiting for it
        return value
    return hook

# Voicenter keeps every call's record (CDR) and gives them to a server that asks
# (POST /hub/cdr/ with the code, the fields wanted and a window of dates in UTC), so an
# office whose server no one can reach from the internet still learns of every call.
# Every --call-log-every seconds a background thread asks for the window since the
# last pull, less CALL_LOG_OVERLAP (a record appears minutes after its call ends, and
# is dated by its start), cut into days; a window with more records than one answer
# holds is halved until each half's come whole. Each record is stored as a pushed
# CDR is (store_cdrs: one row a call, whoever sent it), a few hundred a transaction,
# and how far it got (pulled_to) is kept in the calls database, so a restart goes on
# from there. Failures are kept in `trouble` for /health and the calls page; what was
# stored stays, and the next pull tries again.

CALL_LOG_PATH = "/hub/cdr/"
#: Every field the server keeps (Voicenter returns only the fields asked for).
CALL_LOG_FIELDS = ("CallID", "Date", "DateEpoch", "Type", "CdrType", "DialStatus",
                   "CallerNumber", "TargetNumber", "DID", "Duration", "RingTime",
                   "Callerextension", "Targetextension", "RepresentativeName",
                   "RepresentativeCode", "QueueName", "RecordURL", "DTMFData",
                   "CustomData", "DepartmentName")
#: Voicenter's limit: 30 requests a minute, whatever --call-log-every says.
CALL_LOG_RATE = (30, 60.0)
CALL_LOG_TIMEOUT = 20.0  # seconds a request may wait for Voicenter, each step
CALL_LOG_OVERLAP = 2 * 3600  # seconds asked again: a call of up to 2 h is had whole
CALL_LOG_FIRST = 86400  # seconds pulled on the first start: the last day
CALL_LOG_CHUNK = 86400  # the longest window one request asks (the guide's advice)
CALL_LOG_RATE_WAIT = 5.0  # seconds waited after Voicenter's "rate limit" (its advice)
CALL_LOG_RATE_TRIES = 5  # tries of one window Voicenter refuses as too frequent
#: Records a transaction: the database is never held for long, and the batch's one
#: JSON text (json.dumps holds the GIL throughout) takes well under a millisecond.
CALL_LOG_BATCH = 50
CALL_LOG_PAUSE = 0.01  # seconds between two batches (10,000 records: 2 s in all)

#: The Call Log's CdrType numbers, as its guide lists them, for a record without Type.
CALL_LOG_TYPES = types.MappingProxyType({
    1: "Incoming Call", 4: "Extension Outgoing", 8: "Queue", 9: "Click2Call leg1",
    10: "Click2Call leg2", 11: "VoiceMail", 13: "XferCDR", 14: "ProductiveCall Leg1",
    15: "ProductiveCall Leg2", 17: "Click 2 IVR", 18: "Click 2 IVR Incoming",
    19: "Click 2 Queue Incoming", 21: "Attended CDR leg1", 22: "Attended CDR leg2",
    23: "Auto forward"})

#: Why a pull failed, in words for /health and the log ({detail}: Voicenter's own
#: words, or the network's); the pages have theirs in views/texts.toml ("call_log.KIND").
CALL_LOG_TROUBLES = types.MappingProxyType({
    "code": "Voicenter refused the API code (error 2): check --voicenter-code against "
            "the code in Voicenter's CPanel",
    "address": "Voicenter refused this server's address (error 4): authorise this "
               "server's public IP address in Voicenter's CPanel, under API Settings",
    "dates": "Voicenter refused the dates asked for (error 5, date range invalid): "
             "check this machine's clock",
    "rate": "Voicenter's rate limit (error 1) refused every try; the next pull goes on",
    "forbidden": VOICENTER_REFUSED.replace("{status}", "{detail}"),
    "refused": "Voicenter's Call Log refused the request ({detail})",
    "unreachable": "Voicenter's Call Log could not be reached ({detail})",
    "answer": "Voicenter's Call Log answered something that is not its record list "
              "({detail})",
    "database": "the pulled calls cannot be stored in the calls database ({detail})",
    "error": "the pull failed ({detail}); the server log has the details",
})


class _PullFailed(Exception):
    def __init__(self, kind, detail=""):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


class _PullStopped(Exception):
    """The server is stopping: the pull ends where it is."""


class RateLimit:
    """At most `count` requests in any `per` seconds (a sliding window over the times
    of the last `count`): wait() holds the caller until one more may go. Used by one
    thread."""

    def __init__(self, count, per, clock=time.monotonic):
        self.count, self.per, self._clock = count, per, clock
        self._sent = collections.deque(maxlen=count)

    def delay(self):
        """Seconds until one more request may go (0: now)."""
        if len(self._sent) < self.count:
            return 0.0
        return max(0.0, self._sent[0] + self.per - self._clock())

    def wait(self, stop):
        """Wait for a turn and take it; False when `stop` (an Event) was set first."""
        while (delay := self.delay()) > 0:
            if stop.wait(delay):
                return False
        self._sent.append(self._clock())
        return True


def _call_log_text(value, width=200):
    """Voicenter's words (or the network's), printable and cut to `width`."""
    return _loggable(value if isinstance(value, str) else json.dumps(value), width)


def _database_words(error):
    """What went wrong with the calls database, for /health: an OSError's words only,
    never its file's path (/health names no folder)."""
    return _call_log_text(error.strerror or type(error).__name__
                          if isinstance(error, OSError) else str(error))


def _utc_iso(seconds):
    """A Call Log date: ISO 8601 in UTC to the second, as its guide writes them."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _call_log_time(text, epoch):
    """A record's start as Unix seconds: its Date (UTC, "2024-06-10T09:04:58Z"; one
    without a zone is UTC too), else its DateEpoch; None when neither reads."""
    if isinstance(text, str) and text.strip():
        try:
            moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.timezone.utc)
            return moment.timestamp()
    return _cdr_number(epoch, 946684800, 253402300799)


def call_log_record(record):
    """A Call Log record as a pushed CDR's fields, for store_cdrs(..., true_time=True):
    every field as received, plus the push's names for what it says (CallID ->
    ivruniqueid, Date -> time as true Unix seconds, DialStatus -> status, Type (else
    CdrType's name) -> type, CallerNumber -> caller, TargetNumber -> target, DID ->
    did, Duration -> duration, RecordURL -> record, RepresentativeName/Code ->
    representative_name/code, the extensions -> callerextension and targetextension,
    Targetextension -> extenUser too (the extension the call was put through to: who
    answered an incoming call; an outgoing call's agent is its callerextension, as
    cdr_row reads any CDR), QueueName -> queuename, RingTime -> dialtime, CustomData's
    OriginalIvrUniqueID).
    Field names are read in any case (the guide asks for "Callerextension" and shows
    "CallerExtension"). None when the record has no CallID or no date."""
    if not isinstance(record, dict):
        return None
    by_name = {str(name).lower(): value for name, value in record.items()}
    call_id = _cdr_text(by_name.get("callid"))
    started = _call_log_time(by_name.get("date"), by_name.get("dateepoch"))
    if not call_id or started is None:
        return None
    kind = _cdr_text(by_name.get("type"))
    if not kind:
        number = _cdr_number(by_name.get("cdrtype"), 0, 1000)
        kind = CALL_LOG_TYPES.get(int(number), "") if number is not None else ""
    caller_extension = _cdr_text(by_name.get("callerextension"))
    target_extension = _cdr_text(by_name.get("targetextension"))
    fields = dict(record)
    fields.update({
        "ivruniqueid": call_id, "time": started, "type": kind,
        "status": _cdr_text(by_name.get("dialstatus")),
        "caller": _cdr_text(by_name.get("callernumber")),
        "target": _cdr_text(by_name.get("targetnumber")),
        "did": _cdr_text(by_name.get("did")),
        "duration": by_name.get("duration"),
        "record": _cdr_text(by_name.get("recordurl")),
        "representative_name": _cdr_text(by_name.get("representativename")),
        "representative_code": _cdr_text(by_name.get("representativecode")),
        "callerextension": caller_extension, "targetextension": target_extension,
        "extenUser": target_extension,
        "queuename": _cdr_text(by_name.get("queuename")),
        "dialtime": by_name.get("ringtime"),
    })
    custom = by_name.get("customdata")
    if isinstance(custom, dict) and custom.get("OriginalIvrUniqueID"):
        fields["OriginalIvrUniqueID"] = _cdr_text(custom["OriginalIvrUniqueID"])
    return fields


class CallLogPuller:
    """Pulls Voicenter's Call Log into the calls database at `path` every `every`
    seconds, on its own thread (see "The Call Log" above for how). Never raises: a
    failure is logged when it starts or changes and kept in `trouble`, (kind, detail),
    None while pulls succeed."""

    def __init__(self, config, path, every=None, rate=CALL_LOG_RATE):
        self.path = Path(path)
        self.url = config.voicenter_api + CALL_LOG_PATH
        self._code = config.voicenter_code
        self.region = config.region
        self.keep_days = config.calls_keep_days
        self.every = config.call_log_every if every is None else every
        self.limit = RateLimit(*rate)
        self.trouble = None
        self.pulled_at = None  # Unix time of the last good pull (kept in the database)
        self.requests = 0  # requests sent since the start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="call-log", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def close(self):
        """Stop; a request under way is left to its timeout on a daemon thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.pull()
            except _PullStopped:
                return
            except Exception as error:  # never the end of the thread: the next pull tries
                log.error("pulling Voicenter's Call Log failed", exc_info=error)
                self._failed(_PullFailed("error", type(error).__name__))
            if self._stop.wait(self.every):
                return

    def pull(self):
        """One pull: every window from where the last one got to (less the overlap),
        or the last day, up to now; raises _PullStopped when stopped midway."""
        try:
            progress = self._progress()
            now = int(time.time())
            pulled_to = progress.get("pulled_to")
            self.pulled_at = progress.get("pulled_at", self.pulled_at)
            start = now - CALL_LOG_FIRST if pulled_to is None else max(
                int(pulled_to) - CALL_LOG_OVERLAP, now - self.keep_days * 86400)
            windows = [(begin, min(begin + CALL_LOG_CHUNK, now))
                       for begin in range(min(start, now - 1), now, CALL_LOG_CHUNK)]
            stored = skipped = 0
            windows.reverse()  # a stack: the earliest window is taken first
            while windows:
                begin, end = windows.pop()
                total, records = self._ask(begin, end)
                if total > len(records) and end > begin:
                    # Halves sharing their middle second (none lost, whichever way the
                    # API reads a bound), each shorter; a two-second one, a second each.
                    middle = (begin + end) // 2
                    windows += [(middle + (end - begin == 1), end), (begin, middle)]
                    continue
                if total > len(records):
                    log.warning("Voicenter's Call Log holds %d records dated %s, more "
                                "than one answer gives (%d): %d of them are not had",
                                total, _utc_iso(begin), len(records), total - len(records))
                new, bad = self._store(records)
                stored, skipped = stored + new, skipped + bad
                self._keep({"pulled_to": end})
            self.pulled_at = time.time()
            self._keep({"pulled_to": now, "pulled_at": self.pulled_at})
        except _PullFailed as failure:
            self._failed(failure)
            return
        if skipped:
            log.warning("%d records of Voicenter's Call Log had no CallID or no date "
                        "(or could not be stored as sent) and were left out", skipped)
        if stored:
            log.info("pulled %d new %s from Voicenter's Call Log", stored,
                     "call" if stored == 1 else "calls")
        if self.trouble is not None:
            log.info("Voicenter's Call Log is pulled again")
            self.trouble = None

    def _failed(self, failure):
        trouble = (failure.kind, failure.detail)
        if trouble != self.trouble:
            log.error("%s; %s", CALL_LOG_TROUBLES[failure.kind].format(detail=failure.detail),
                      f"the last good pull was at {_utc_iso(self.pulled_at)} UTC"
                      if self.pulled_at else "no pull has succeeded yet")
        self.trouble = trouble

    def _ask(self, begin, end):
        """(TOTAL_HITS, the records) of one window, waiting for Voicenter's rate."""
        payload = {"code": self._code, "fields": list(CALL_LOG_FIELDS),
                   "search": {"fromdate": _utc_iso(begin), "todate": _utc_iso(end)},
                   "sort": [{"field": "date", "order": "asc"}]}
        for _ in range(CALL_LOG_RATE_TRIES):
            if not self.limit.wait(self._stop):
                raise _PullStopped
            self.requests += 1
            try:
                answer = voicenter_request(self.url, payload, timeout=CALL_LOG_TIMEOUT)
            except VoicenterRefused as error:
                raise _PullFailed("forbidden", str(error.status)) from None
            except VoicenterUnreachable as error:
                raise _PullFailed("unreachable", _call_log_text(str(error))) from None
            number = answer.get("ERROR_NUMBER")
            words = _call_log_text(answer.get("ERROR_DESCRIPTION", ""))
            if number == 1 or number == "1":
                if self._stop.wait(CALL_LOG_RATE_WAIT):
                    raise _PullStopped
                continue
            if number in (2, "2"):
                raise _PullFailed("code", words)
            if number in (4, "4"):
                raise _PullFailed("address", words)
            if number in (5, "5"):
                raise _PullFailed("dates", words)
            if number not in (0, "0"):
                raise _PullFailed("refused", f"error {_call_log_text(number, 20)}: "
                                             f"{words}" if words else
                                  f"error {_call_log_text(number, 20)}")
            records = answer.get("CDR_LIST")
            total = answer.get("TOTAL_HITS", len(records) if isinstance(records, list)
                               else 0)
            if isinstance(total, str) and total.isascii() and total.isdigit():
                total = int(total)
            if not isinstance(records, list) or isinstance(total, bool) \
                    or not isinstance(total, int):
                raise _PullFailed("answer", "no CDR_LIST and TOTAL_HITS")
            return total, records
        raise _PullFailed("rate")

    def _store(self, records):
        """(new or filled-in calls, records left out), stored CALL_LOG_BATCH a
        transaction."""
        new = skipped = 0
        for first in range(0, len(records), CALL_LOG_BATCH):
            if self._stop.is_set():
                raise _PullStopped
            mapped = [call_log_record(record)
                      for record in records[first:first + CALL_LOG_BATCH]]
            batch = [fields for fields in mapped if fields is not None]
            skipped += len(mapped) - len(batch)
            try:
                new += store_cdrs(self.path, batch, self.region, true_time=True)
            except CdrError:  # one bad record in the batch: store the others one by one
                for fields in batch:
                    try:
                        new += store_cdrs(self.path, [fields], self.region, true_time=True)
                    except CdrError:
                        skipped += 1
                    except (sqlite3.Error, OSError) as error:
                        raise _PullFailed("database", _database_words(error)) from None
            except (sqlite3.Error, OSError) as error:
                raise _PullFailed("database", _database_words(error)) from None
            # A pause between batches: the pop-ups' threads have the GIL to themselves
            # for a while (a batch's Python work holds it in SWITCH_INTERVAL turns).
            if self._stop.wait(CALL_LOG_PAUSE):
                raise _PullStopped
        return new, skipped

    def _progress(self):
        try:
            with _reading(self.path) as connection:
                if connection is None:
                    return {}
                return dict(connection.execute("SELECT name, value FROM call_log"))
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):  # a database the recorder has not made yet
                return {}
            raise _PullFailed("database", _database_words(error)) from None
        except (sqlite3.Error, OSError) as error:
            raise _PullFailed("database", _database_words(error)) from None

    def _keep(self, values):
        try:
            # 5 s, not DB_WAIT: a background thread, no request waits for it
            with _writing(self.path, 5.0) as connection:
                connection.executemany("INSERT OR REPLACE INTO call_log VALUES (?, ?)",
                                       values.items())
        except (sqlite3.Error, OSError) as error:
            raise _PullFailed("database", _database_words(error)) from None

    def health(self):
        """/health's "call_log" (words) and "call_log_pulled_at" (ISO 8601, or None)."""
        pulled_at = (dt.datetime.fromtimestamp(self.pulled_at, dt.timezone.utc)
                     .isoformat(timespec="seconds") if self.pulled_at else None)
        if self.trouble is None:
            state = "ok" if self.pulled_at else "not pulled yet"
        else:
            kind, detail = self.trouble
            state = CALL_LOG_TROUBLES[kind].format(detail=detail)
        return {"call_log": state, "call_log_pulled_at": pulled_at}

#: Seconds between fetches of the extension list (Voicenter: it changes rarely,
#: refresh every 15-30 minutes); after a failure the next try comes sooner.
EXTENSIONS_REFRESH = 15 * 60
EXTENSIONS_RETRY = 60
#: An extension's SIP code as this server accepts it back from a browser.
_SIP_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class Extension(typing.NamedTuple):
    sip: str
    name: str        # its user's name, else the extension's name, else its SIP code
    speed_dial: str


def extensions_of(answer):
    """The extensions of a GetExtensions answer, by name; VoicenterUnreachable for an
    answer that is not the list (an ERR, no EXTENSIONS), or an empty list: a wrong code
    gets an empty list with ERR 0."""
    if answer.get("ERR") not in (0, "0") or not isinstance(answer.get("EXTENSIONS"), list):
        raise VoicenterUnreachable("Voicenter refused the extension list (ERR "
                                   f"{_loggable(answer.get('ERR'), 20)}: "
                                   f"{_loggable(answer.get('DESC') or '', 80)})")
    found = {}
    for item in answer["EXTENSIONS"]:
        if not isinstance(item, dict):
            continue
        sip = _cdr_text(item.get("SIP"))
        if not _SIP_CODE.fullmatch(sip):
            continue
        name = next((_clip(_cdr_text(item.get(field)), 80) for field in
                     ("UserName", "Name") if _cdr_text(item.get(field))), sip)
        found[sip] = Extension(sip, name, _clip(_cdr_text(item.get("SpeedDial")), 20))
    if not found:
        raise EmptyExtensionList("Voicenter answered an empty list: is "
                                 "--voicenter-code right?")
    return sorted(found.values(), key=lambda extension: (extension.name.casefold(),
                                                         extension.sip))


class VoicenterExtensions:
    """The account's extensions, fetched at start and every EXTENSIONS_REFRESH seconds
    by a daemon thread (never on a request); a failure is kept in words and the last
    good list stays."""

    def __init__(self, config, refresh=EXTENSIONS_REFRESH, retry=EXTENSIONS_RETRY):
        self.url = config.voicenter_monitor + "/Comet/api/GetExtensions"
        self._code = config.voicenter_code
        self.refresh, self.retry = refresh, retry
        self.extensions = ()          # Extension, by name
        self.names = {}               # SIP code -> name
        self.fetched_at = None        # when the list in use came (aware datetime)
        self.problem = None           # why the last fetch failed, or None
        self.problem_kind = None      # "empty" (a wrong code?), "refused" (401/403:
        #                               the address) or "failed"
        self.failed_at = None
        self._stop = threading.Event()

    def start(self):
        threading.Thread(target=self._run, name="voicenter-extensions",
                         daemon=True).start()
        return self

    def close(self):
        self._stop.set()

    def fetch(self):
        """Fetch the list once; True when it came."""
        try:
            extensions = extensions_of(voicenter_request(
                self.url, {"code": self._code, "showAll": 1}, timeout=VOICENTER_TIMEOUT,
                whole=VOICENTER_TIMEOUT))
        except VoicenterUnreachable as error:
            again = self.problem == str(error)  # said once, not every minute
            self.problem, self.failed_at = str(error), dt.datetime.now().astimezone()
            self.problem_kind = ("empty" if isinstance(error, EmptyExtensionList) else
                                 "refused" if isinstance(error, VoicenterRefused) else
                                 "failed")
            (log.debug if again else log.warning)(
                "cannot use Voicenter's extension list: %s%s", error,
                f"; still naming {len(self.extensions)} extensions fetched at "
                f"{self.fetched_at:%H:%M}" if self.extensions else "")
            return False
        # Names first: a page reading between the two assignments offers the old list
        # and finds every one of its codes (Voicenter rarely drops one) named.
        self.names = {**self.names, **{extension.sip: extension.name
                                       for extension in extensions}}
        self.extensions = tuple(extensions)
        self.names = {extension.sip: extension.name for extension in extensions}
        self.fetched_at, self.problem = dt.datetime.now().astimezone(), None
        self.problem_kind = None
        log.info("Voicenter's extension list: %d extensions (agents named, call-backs "
                 "on)", len(extensions))
        return True

    def _run(self):
        while True:
            wait = self.refresh if self.fetch() else self.retry
            if self._stop.wait(wait):
                return

    def known(self, sip):
        return sip in self.names

    def health(self):
        """The list's state in words, for /health and the calls page."""
        if self.problem is None and self.fetched_at is None:
            return "the extension list is being fetched from Voicenter"
        if self.problem is None:
            return (f"ok: {len(self.extensions)} extensions, fetched at "
                    f"{self.fetched_at.isoformat(timespec='seconds')}")
        kept = (f"; still using the {len(self.extensions)} extensions fetched at "
                f"{self.fetched_at.isoformat(timespec='seconds')}" if self.extensions
                else "; agents are shown by their extension")
        return (f"the extension list failed at "
                f"{self.failed_at.isoformat(timespec='seconds')}: {self.problem}{kept}")

#: The custom value every call-back carries (Click2Call's var_*): its CDRs and pop-ups
#: say they come from this server's "call back" button.
CALLBACK_VARIABLE = ("var_popupserver", "callback")
#: The texts (views/texts.toml's keys) of Click2Call's documented ERRORCODEs.
CLICK2CALL_ERRORS = {1: "callback.error1", 2: "callback.error2", 3: "callback.error3",
                     4: "callback.error4"}


def click2call(config, extension, target, language):
    """Ask Voicenter to ring `extension` (a SIP code), then dial `target` (E.164 digits,
    no +): (text key, values) of the answer in words; the CALLID is in the values
    of a success."""
    payload = {"code": config.voicenter_code, "phone": extension, "target": target,
               "action": "call", "format": "json", "language": language,
               CALLBACK_VARIABLE[0]: CALLBACK_VARIABLE[1]}
    try:
        answer = voicenter_request(config.voicenter_api + "/ForwardDialer/click2call.aspx",
                                   payload, timeout=VOICENTER_TIMEOUT,
                                   whole=VOICENTER_TIMEOUT)
    except VoicenterRefused as error:
        return "callback.refused", {"why": str(error)}
    except VoicenterUnreachable as error:
        return "callback.unreachable", {"why": str(error)}
    return click2call_answer(answer)


def click2call_answer(answer):
    """(text key, values) of Click2Call's JSON answer (a dict of anything)."""
    code = answer.get("ERRORCODE")
    if isinstance(code, str) and code.strip().isascii() and code.strip().isdigit():
        code = int(code.strip()[:9])
    if type(code) is not int or not -10 ** 9 < code < 10 ** 9:  # not a bool either
        return "callback.unreachable", {"why": "Voicenter's answer has no ERRORCODE"}
    if code == 0:
        return "callback.ringing", {"callid": _clip(_cdr_text(answer.get("CALLID")), 100)}
    message = _clip(_cdr_text(answer.get("ERRORMESSAGE")), 120)
    return CLICK2CALL_ERRORS.get(code, "callback.error_other"), {
        "code": code, "message": message}


def _click2call_log_text(outcome, values):
    """Click2Call's answer (click2call()'s) as the log line says it."""
    if outcome == "callback.ringing":
        return ("Voicenter is ringing the extension (CALLID "
                f"{_loggable(values['callid'], 60)})")
    if outcome in ("callback.unreachable", "callback.refused"):
        return f"nothing dialled: {values['why']}"
    return (f"refused by Voicenter (ERRORCODE {values['code']}: "
            f"{_loggable(values['message'], 100)})")


#: A call-back's "being called back" shows this long at most (Click2Call's two legs
#: ring a minute each by default; a call lasts at most 2 hours); its leg-2 CDR, after
#: the call, resolves the caller.
CALLBACK_PENDING_SECONDS = 2 * 3600 + 300
#: The same number called back again from one browser within this many seconds is
#: not dialled again (a double click dials once).
CALLBACK_REPEAT_SECONDS = 30
#: Call-backs one browser may place a minute, and call-backs placed at once in all:
#: each holds a thread of the "callback" lane while Voicenter answers (at most
#: VOICENTER_TIMEOUT).
CALLBACKS_PER_MINUTE = 6
CALLBACKS_AT_ONCE = 2
_CALLBACKS_KEPT = 4096  # browsers and numbers remembered, oldest forgotten first


class CallBacks:
    """Call-backs placed: one at a time per browser (a session, else a client address),
    a few a minute, the same number not twice within CALLBACK_REPEAT_SECONDS; each
    number's last successful call-back (who, when) until CALLBACK_PENDING_SECONDS; and
    each browser's last answer, shown once on its next page. In memory: after a
    restart the pending call-backs are no longer shown, their CDRs still resolve."""

    def __init__(self):
        self.lock = threading.Lock()
        self.at_once = threading.BoundedSemaphore(CALLBACKS_AT_ONCE)
        self.busy = set()                              # browsers placing one now
        self.recent = collections.OrderedDict()        # browser -> [placed times]
        self.last_to = collections.OrderedDict()       # (browser, e164) -> time
        self.pending = collections.OrderedDict()       # e164 -> (agent id, time)
        self.answers = collections.OrderedDict()       # browser -> (key, values)

    @staticmethod
    def _keep(table, key, value):
        table[key] = value
        table.move_to_end(key)
        while len(table) > _CALLBACKS_KEPT:
            table.popitem(last=False)

    def begin(self, browser, e164, now):
        """None when this browser may place a call-back to `e164` now (then end() must
        follow), else the text key saying why not."""
        with self.lock:
            if browser in self.busy:
                return "callback.busy"
            last = self.last_to.get((browser, e164))
            if last is not None and now - last < CALLBACK_REPEAT_SECONDS:
                return "callback.repeat"
            placed = [t for t in self.recent.get(browser, ()) if now - t < 60]
            if len(placed) >= CALLBACKS_PER_MINUTE:
                return "callback.too_many"
            if not self.at_once.acquire(blocking=False):
                return "callback.busy_all"
            self.busy.add(browser)
            self._keep(self.recent, browser, [*placed, now])
            self._keep(self.last_to, (browser, e164), now)
            return None

    def end(self, browser, e164, agent_id, now, placed):
        with self.lock:
            self.busy.discard(browser)
            self.at_once.release()
            if placed:
                self._keep(self.pending, e164, (agent_id, now))
            else:  # nothing dialled: trying again at once is fine
                self.last_to.pop((browser, e164), None)

    def pending_for(self, e164, since, now):
        """(agent id, Unix time) of a call-back to `e164` placed after `since` (Unix
        time) and not older than CALLBACK_PENDING_SECONDS, else None."""
        found = self.pending.get(e164)
        if found and found[1] >= since and now - found[1] < CALLBACK_PENDING_SECONDS:
            return found
        return None

    def tell(self, browser, key, values):
        """Keep `key` as this browser's next answer; a double click's second answer
        ("not dialled again", "being placed") leaves the first's "Voicenter is ringing
        your phone" to be shown, when it has not been yet."""
        with self.lock:
            kept = self.answers.get(browser)
            if (key in ("callback.repeat", "callback.busy") and kept
                    and kept[0] == "callback.ringing"
                    and kept[1].get("who") == values.get("who")):
                return
            self._keep(self.answers, browser, (key, values))

    def answer_for(self, browser):
        """This browser's last answer, once: (key, values) or None."""
        with self.lock:
            return self.answers.pop(browser, None)


###############################################################################
###############################################################################
# V. The web ##################################################################
###############################################################################
###############################################################################
# What answers HTTP: who may ask, the pop-up's answer, the office's door, the pages, the
# request log, and the route table.


###############################################################################
# Requests and access #########################################################
###############################################################################
# Who may ask (address, token) and the fields of a request: query, form or JSON.


#: Fields read from a request; everything else a client sends is ignored.
REQUEST_FIELDS = ("phone", "ivrid", "extenUser", "did", "status", "statusCall",
                  "direction", "callerName", "isAnswered", "cause")


#: A Host header fit to start a link with: a name or address and maybe a port.
_HOST_PATTERN = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?"
                           r"|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


class AccessGuard:
    """Decides whether a request may use /popup: the client address, then the token."""

    def __init__(self, config):
        self.token = (config.token or "").encode("utf-8")
        self.allowed = config.allow_ip
        self.trusted = config.trusted_proxy

    def client_address(self, environ):
        """The socket's peer, or the forwarded client when the peer is a trusted proxy;
        "" when that proxy forwarded something that is not an address."""
        peer = environ.get("REMOTE_ADDR") or ""
        if not self.via_trusted_proxy(environ):
            return peer
        header = environ.get("HTTP_X_FORWARDED_FOR")
        if header is None:  # the proxy's machine asking for itself
            return peer
        # X-Forwarded-For is "client, proxy1, proxy2": walk back over trusted proxies.
        # An entry that is no address ("unknown", "10.9.9.9:1234": proxies write bare
        # addresses, and "2001:db8::1:80" could be either) must not be read as the
        # proxy itself, which may well be inside --allow-ip.
        forwarded = [part.strip() for part in header.split(",")]
        for entry in reversed(forwarded):
            address = self.parse_address(entry)
            if address is None:
                return ""
            if not self.address_in(entry, self.trusted):
                # As ipaddress writes it, never the header's text: that is the client's
                # to choose, and an IPv6 zone ("fe80::1%...") may hold any words.
                return str(address)
        return str(self.parse_address(forwarded[0]))

    def check(self, environ, query):
        """Refuse the request (403) unless it may use /popup; the client's address when
        working it out was needed (--allow-ip, --trusted-proxy), else None."""
        client = None
        if self.allowed or self.trusted:
            client = self.client_of(environ)
            if self.allowed and not self.address_in(client, self.allowed):
                raise bottle.HTTPError(403, "this address is not allowed to use the "
                                            "pop-up service")
        if self.token:
            given = query.get("token") or environ.get("HTTP_X_POPUP_TOKEN") or ""
            if not hmac.compare_digest(given.encode("utf-8"), self.token):
                raise bottle.HTTPError(403, "missing or wrong token: add ?token=... to "
                                            "the URL given to Voicenter")
        return client

    def check_page(self, environ):
        """Refuse an office page (403) with the login off unless the client is in
        --allow-ip, or, without an allowlist, this machine."""
        client = self.client_of(environ)
        allowed = self.allowed or (ipaddress.ip_network("127.0.0.0/8"),
                                   ipaddress.ip_network("::1/128"))
        if not self.address_in(client, allowed):
            raise bottle.HTTPError(403, "the office pages are open only to this machine "
                                        "when --office-password is empty, unless "
                                        "--allow-ip is set")

    def request_origin(self, environ):
        """(scheme, host) the client asked for: X-Forwarded-Proto and -Host are believed
        only from a --trusted-proxy; a host that is not a host name falls back to the
        address this server listens on."""
        scheme = environ.get("wsgi.url_scheme") or "http"
        host = environ.get("HTTP_HOST") or ""
        if self.via_trusted_proxy(environ):
            proto = (environ.get("HTTP_X_FORWARDED_PROTO") or "").split(",")[0]
            if proto.strip().lower() in ("http", "https"):
                scheme = proto.strip().lower()
            forwarded_host = (environ.get("HTTP_X_FORWARDED_HOST") or "").split(",")[0]
            host = forwarded_host.strip() or host
        if not _HOST_PATTERN.fullmatch(host):
            host = f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
        return scheme, host

    def via_trusted_proxy(self, environ):
        """Whether the request's socket peer is a --trusted-proxy."""
        return bool(self.trusted) and self.address_in(environ.get("REMOTE_ADDR") or "",
                                                      self.trusted)

    def client_of(self, environ):
        """client_address(), refused (403) when a trusted proxy's is unreadable."""
        client = self.client_address(environ)
        if not client:
            raise bottle.HTTPError(403, "the trusted proxy forwarded a client address "
                                        "that cannot be read (X-Forwarded-For)")
        return client

    @staticmethod
    def parse_address(text):
        """An address as a proxy writes it (IPv6 maybe in [brackets] or with a zone),
        or None; never with a port."""
        text = text.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:  # without its zone (%eth0): it names an interface, not a host
            address = ipaddress.ip_address(text.partition("%")[0])
        except ValueError:
            return None
        mapped = getattr(address, "ipv4_mapped", None)
        return mapped or address

    def address_in(self, text, networks):
        address = self.parse_address(text)
        return address is not None and any(address in net for net in networks
                                           if net.version == address.version)


_MAX_FIELDS = 200
_ASCII_ESCAPES = {f"{code:02X}": chr(code) for code in range(128)}
_ASCII_ESCAPES.update({f"{code:02x}": chr(code) for code in range(128)})
_ASCII_ESCAPES.update({f"{code:02X}"[0] + f"{code:02x}"[1]: chr(code) for code in range(128)})
_ASCII_ESCAPES.update({f"{code:02x}"[0] + f"{code:02X}"[1]: chr(code) for code in range(128)})


def _unquote(text):
    """unquote_plus(text, errors="strict"), quicker for ASCII escapes (%2B, %20)."""
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    head, *rest = text.split("%")
    pieces = [head]
    for piece in rest:
        char = _ASCII_ESCAPES.get(piece[:2])
        if char is None:  # a UTF-8 byte, or a stray %: the standard way
            return unquote(text, errors="strict")
        pieces.append(char)
        pieces.append(piece[2:])
    return "".join(pieces)


def _query_fields(environ):
    """The query string as a dict; the last value of a repeated field wins."""
    return _form_fields(environ.get("QUERY_STRING", ""), "query string", wsgi_text=True)


def _form_fields(text, what, wsgi_text=False):
    """Decode `a=1&b=%2B972...` (UTF-8, strictly): what parse_qsl does, at a third of
    its cost for the plain fields Voicenter sends (this runs on every request).
    `wsgi_text`: `text` is a WSGI string, raw bytes shown as latin-1."""
    if not text:
        return {}
    if wsgi_text and not text.isascii():
        # WSGI hands over raw bytes as latin-1; anything outside ASCII is UTF-8 inside.
        try:
            text = text.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise bottle.HTTPError(400, f"the {what} is not valid UTF-8") from None
    parts = text.split("&")
    if len(parts) > _MAX_FIELDS:
        raise bottle.HTTPError(400, f"the {what} has more than {_MAX_FIELDS} fields")
    fields = {}
    try:
        for part in parts:
            if not part:
                continue
            name, _, value = part.partition("=")
            if "+" in name or "%" in name:
                name = _unquote(name)
            if "+" in value or "%" in value:
                value = _unquote(value)
            fields[name] = value
    except UnicodeError:
        raise bottle.HTTPError(400, f"the {what} is not valid UTF-8 URL-encoding") from None
    return fields


#: The environ keys where _body_fields() says how it read a body ("json" or "form")
#: and, of a pop-up's JSON, the names of its fields (the first _SENT_NAMES).
BODY_FORMAT = "popup_server.body_format"
BODY_NAMES = "popup_server.body_names"
_SENT_NAMES = 40


def _body_fields(environ, max_body, json_fields=None):
    """Fields of a POST body: JSON or form-encoded, by Content-Type (or by its look);
    `json_fields` reads a JSON body (default: the pop-up's fields only)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise bottle.HTTPError(400, "Content-Length is not a number") from None
    if length > max_body:
        raise bottle.HTTPError(413, f"the request body is over {max_body} bytes")
    if length <= 0:
        return {}
    body = environ["wsgi.input"].read(length)
    content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json") or (
            content_type not in ("application/x-www-form-urlencoded",
                                 "multipart/form-data") and body.lstrip()[:1] in (b"{", b"[")):
        environ[BODY_FORMAT] = "json"
        if json_fields is None:
            names = environ[BODY_NAMES] = []
            return _json_fields(body, names)
        return json_fields(body)
    if content_type == "multipart/form-data":
        raise bottle.HTTPError(415, "send the fields as a query string, as "
                                    "application/x-www-form-urlencoded or as JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeError:
        raise bottle.HTTPError(400, "the form body is not valid UTF-8") from None
    environ[BODY_FORMAT] = "form"
    return _form_fields(text, "form body")


def _json_object(body, example):
    """The object a JSON request body holds; any other body is refused (400) in
    words, with `example` (an object's JSON) as what to send."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise bottle.HTTPError(400, "the JSON body is not UTF-8") from None
    except ValueError as error:
        raise bottle.HTTPError(400, f"the body is not valid JSON ({error})") from None
    except RecursionError:
        raise bottle.HTTPError(400, "the JSON body is nested too deeply") from None
    if not isinstance(data, dict):
        raise bottle.HTTPError(400, f"the JSON body must be an object, e.g. {example}")
    return data


def _json_fields(body, names=None):
    """The pop-up's fields (REQUEST_FIELDS) of a JSON body; `names` (a list) gets the
    names of the first _SENT_NAMES fields it has, for the "what Voicenter sent" page."""
    data = _json_object(body, '{"phone": "0722776772"}')
    if names is not None:
        names.extend(itertools.islice(data, _SENT_NAMES))
    fields = {}
    for name in REQUEST_FIELDS:
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            if name == "phone":
                raise bottle.HTTPError(400, "phone must be a string or a number")
            if isinstance(value, bool):
                fields[name] = "true" if value else "false"
            continue
        if isinstance(value, float):
            value = str(int(value)) if value.is_integer() else str(value)
        value = str(value)
        if not value.isascii():
            try:  # JSON can escape half a character ("\ud800"); no text holds one
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise bottle.HTTPError(400, f"{name} is not valid Unicode text") from None
        fields[name] = value
    return fields


def _json_bytes(payload):
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "replace")


class RouteRefusal(bottle.HTTPError):
    """A refusal a route makes with a message of its own (a route that exists, asked
    for something it has not): its message, not ERROR_MESSAGES', is the answer's."""


#: A browser (Voicenter's Chrome extension) may call /popup: every answer allows any
#: origin (the token guards access); the preflight also names methods and headers.
CORS_ORIGIN = ("Access-Control-Allow-Origin", "*")


CORS_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, X-Popup-Token",
    "Access-Control-Max-Age": "600",
}


def bottle_headers_direct():
    """Whether bottle keeps a response's headers as {name: [value]} in `_headers`, as
    set_header() leaves them (bottle 0.13 does): /popup then writes them there."""
    response = bottle.BaseResponse()
    response.set_header("Content-Type", JSON_TYPE)
    return getattr(response, "_headers", None) == {"Content-Type": [JSON_TYPE]}


###############################################################################
# The pop-up's answer #########################################################
###############################################################################
# The answer to one /popup request: the caller's contact, or the no-match link.

_json_string = json.encoder.encode_basestring  # C; keeps Hebrew as is, escapes '"\\'


class PopupAnswer(typing.NamedTuple):
    """What /popup answers (STATUS is always "OK") and the caller's key."""

    total: int
    name: str
    company: str
    url: str
    key: int | None

    @property
    def e164(self):
        return _e164(self.key)

    def as_dict(self):
        """The five fields Voicenter reads, in the order they are sent."""
        return {"STATUS": "OK", "TOTAL": self.total, "CLIENTNAME": self.name,
                "COMPANY": self.company, "URL": self.url}

    def json_bytes(self):
        """json.dumps(as_dict()), assembled directly: the fields and their order are
        fixed, and this costs a quarter of json.dumps on the busiest path."""
        return (f'{{"STATUS": "OK", "TOTAL": {self.total:d}, '
                f'"CLIENTNAME": {_json_string(self.name)}, '
                f'"COMPANY": {_json_string(self.company)}, '
                f'"URL": {_json_string(self.url)}}}').encode("utf-8", "replace")


def answer_for(index, caller_id, fields, config):
    """The PopupAnswer to a caller id; the request's fields fill URL templates."""
    position, total, key = index.find(caller_id)
    if not total:
        url = fill_template(config.no_match_url, _request_values(key, fields)) \
            if config.no_match_url else ""
        return PopupAnswer(0, "", "", url, key)
    name, company, url, kept = index.texts_of(position)
    if not url and config.url_template:
        url = fill_template(config.url_template, {
            **dict(zip(index.template_headers, kept)), **_request_values(key, fields),
            "name": name, "company": company})
    return PopupAnswer(total, name, company, url, key)


def _request_values(key, fields):
    """The request's placeholders for URL templates."""
    return {"phone": fields.get("phone", ""), "e164": _e164(key) or "",
            "ivrid": fields.get("ivrid", ""), "did": fields.get("did", ""),
            "extenUser": fields.get("extenUser", ""), "status": _phase(fields)}


###############################################################################
# Page texts ##################################################################
###############################################################################
# The pages' languages, their texts (views/texts.toml) and their security headers.


#: The pages' texts, English and Hebrew side by side, are data: views/texts.toml.
TEXTS_FILE = RESOURCES / "views" / "texts.toml"


@functools.cache
def page_texts():
    """{key: (text, ...)} in LANGUAGES' order, from TEXTS_FILE (read once)."""
    with open(TEXTS_FILE, "rb") as file:
        table = tomllib.load(file)
    return {key: tuple(entry[language] for language in LANGUAGES)
            for key, entry in table.items()}


def choose_language(accept_language, forced="auto"):
    """The pages' language: `forced` (--lang) unless "auto", else the browser's most
    wanted of LANGUAGES by Accept-Language and its q-values (iw is he's old code);
    English when it wants none of them."""
    if forced in LANGUAGES:
        return forced
    best, best_weight = LANGUAGES[0], 0.0
    for item in (accept_language or "").split(",")[:32]:
        tag, *parameters = item.split(";")
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
                if not 0.0 <= weight <= 1.0:  # also NaN
                    weight = 0.0
        language = tag.strip().lower().split("-")[0]
        language = "he" if language == "iw" else language
        if language in LANGUAGES and weight > best_weight:
            best, best_weight = language, weight
    return best


class PageTexts:
    """The texts of one language, for the templates: t("key", name=value)."""

    def __init__(self, language):
        self.language = language
        self.column = LANGUAGES.index(language)
        self.direction = "rtl" if language in RIGHT_TO_LEFT else "ltr"

    def __call__(self, key, default=None, **values):
        entry = page_texts().get(key)
        if entry is None:
            if default is None:
                raise KeyError(f"no page text {key!r}")
            return default
        text = entry[self.column]
        return text.format(**values) if values else text

    def time(self, moment, day=None, seconds=False):
        """A moment as the pages write it, in the zone it is given in: "04:20" on `day`
        (the day the page shows), else with its date: "15 January 2026, 04:20",
        "15 בינואר 2026, 04:20"."""
        clock = moment.strftime("%H:%M:%S" if seconds else "%H:%M")
        if moment.date() == day:
            return clock
        return self("moment.format", day=moment.day,
                    month=self("months").split()[moment.month - 1], year=moment.year,
                    time=clock)

    def date(self, day):
        """`day` written out: "Thursday 26 November 2026", "יום חמישי, 26 בנובמבר 2026"."""
        return self("weekday.format", weekday=self("weekdays").split()[day.weekday()],
                    day=day.day, month=self("months").split()[day.month - 1],
                    year=day.year)


def wait_in_words(texts, seconds):
    """A wait as the pages say it: "45 seconds", "a minute"."""
    if seconds >= 60:
        return texts("wait.minute")
    return texts("wait.second") if seconds == 1 else texts("wait.seconds", n=seconds)


def page_headers(nonce):
    """Every HTML page's headers: a strict Content-Security-Policy (no script at all;
    the page's one <style> carries `nonce`), no sniffing, no framing, never cached, and
    a Referer only to this server: links carry signatures, which must never reach
    another site. Not "no-referrer": under it a browser sends "Origin: null" with the
    pages' own forms, and the Origin check could no longer tell them from another site's."""
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


#: Seconds a "busy" answer asks the client to wait before trying again.
BUSY_RETRY = 5


def office_busy_page(accept_language, lang="auto", posted=False):
    """The "busy, one moment" page of office work that waited too long for its lane
    (OFFICE_LANES), in the browser's language (choose_language()): (status, headers,
    body bytes). `posted`: it answers a form, whose change was not made; a page asked
    for reloads itself."""
    texts = PageTexts(choose_language(accept_language, lang))
    nonce = secrets.token_urlsafe(16)
    body = bottle.template(
        "office_busy", template_lookup=VIEWS, t=texts, lang=texts.language,
        direction=texts.direction, nonce=nonce, csrf="", signed_in=False,
        refresh=None if posted else BUSY_RETRY, posted=posted)
    return 503, {**page_headers(nonce), "Retry-After": str(BUSY_RETRY)}, \
        body.encode("utf-8")


def local_path(text, fallback="/"):
    """`text` when it is a path on this server (where the login may send a browser
    back to), else `fallback`: never another site (//evil.example, /\\evil, https:)."""
    if (not isinstance(text, str) or not text.startswith("/") or text.startswith("//")
            or "\\" in text or not text.isprintable() or len(text) > 2000):
        return fallback
    return text


###############################################################################
# The office's door ###########################################################
###############################################################################
# The office pages' own login (password, signed session cookie, CSRF tokens) and signed
# links to one caller's page.

SESSION_SECONDS = 12 * 3600          # a working day; then the login page again
LOGIN_FREE_TRIES = 3                 # wrong passwords from one address before any wait
LOGIN_LONGEST_WAIT = 60              # seconds: the right password works again within it
LOGIN_FORGET_AFTER = 15 * 60         # seconds without a wrong one: the address starts over
LOGIN_ADDRESSES_KEPT = 10_000        # failing addresses remembered (the oldest go first)
#: Password checks a second from everyone together (scrypt: ~50 ms of a core and 16 MiB
#: each; the login lane runs one at a time), and how many may be saved up for a burst
#: (a morning's sign-ins): beyond them a sign-in is answered "busy" at once, unchecked,
#: so that guesses from ever new addresses (an IPv6 /48 holds 65,536 /64s) neither
#: queue up the login lane nor take more than a fifth of a core (LoginChecks).
LOGIN_CHECKS_A_SECOND = 4
LOGIN_CHECKS_SAVED = 8
LOGIN_BUSY_REMEMBERED = 60           # seconds an address told "busy" is one trying again
LOGIN_REFUSALS_LOGGED = 20           # refusals logged one by one a minute; then counted
MIN_PASSWORD_LENGTH = 8              # characters of a password the password command takes
SESSIONS_ENDED_KEPT = 10_000         # logged-out sessions kept (revoked_sessions) until they expire
_SCRYPT = dict(n=2 ** 14, r=8, p=1)  # 16 MiB and ~50 ms a try: OWASP's minimum


def hash_password(password, salt=None):
    """The text kept for a password: scrypt$n$r$p$salt$hash (base64), salted."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + "$".join(
        base64.b64encode(part).decode("ascii") for part in (salt, digest))


_SCRYPT_MAXMEM = 64 * 1024 * 1024  # bytes a password check may take (16 MiB for _SCRYPT)


def password_matches(password, stored):
    """Whether `password` is the one `stored` (hash_password's text) was made from."""
    try:
        salt, digest, cost = _scrypt_parts(stored)
        given = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=len(digest),
                               maxmem=_SCRYPT_MAXMEM, **cost)
    except (ValueError, binascii.Error, UnicodeError):
        return False
    return hmac.compare_digest(given, digest)


def _scrypt_parts(stored):
    """(salt, digest, {n, r, p}) of hash_password()'s text; ValueError (or
    binascii.Error) when it is no hash a password can be checked against: so that
    a damaged file is refused when read, not met with "Wrong password" at every
    login."""
    kind, *cost, salt, digest = stored.split("$")
    if kind != "scrypt" or len(cost) != 3 or not all(
            part.isascii() and part.isdigit() and len(part) < 10 for part in cost):
        raise ValueError("not scrypt$n$r$p$salt$hash")
    n, r, p = map(int, cost)
    salt = base64.b64decode(salt, validate=True)
    digest = base64.b64decode(digest, validate=True)
    # OpenSSL's bounds: n a power of 2 above 1, and 128·r·(n + p + 2) bytes of memory.
    if n < 2 or n & (n - 1) or not r or not p or len(digest) < 16 or not salt \
            or 128 * r * (n + p + 2) > _SCRYPT_MAXMEM:
        raise ValueError("scrypt's cost or lengths out of bounds")
    return salt, digest, {"n": n, "r": r, "p": p}


def password_hash_usable(stored):
    """Whether `stored` is a password hash this server can check a password against."""
    try:
        _scrypt_parts(stored)
    except (ValueError, binascii.Error):
        return False
    return True


def _signature(secret, *parts):
    """A short HMAC-SHA256 (128 bits, base64url) of `parts`, keyed by the page secret.
    hmac.digest(): OpenSSL's one-shot, a third of hmac.new()'s cost."""
    message = "\n".join(map(str, parts)).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(hmac.digest(secret, message, "sha256")[:16]) \
        .rstrip(b"=").decode("ascii")


def verify_caller_link(secret, number, expires, signature, now=None):
    """"ok", or why the link does not open `number`'s page: "tampered" (the number,
    the expiry or the signature changed; compared in constant time) or "expired"."""
    if not (isinstance(expires, str) and expires.isascii() and expires.isdigit()
            and len(expires) <= 12
            and isinstance(signature, str) and signature.isascii()):
        return "tampered"
    wanted = _signature(secret, "caller", number, int(expires))
    if not hmac.compare_digest(wanted.encode("ascii"), signature.encode("ascii")):
        return "tampered"
    if int(expires) < (time.time() if now is None else now):
        return "expired"
    return "ok"


class LoginLimiter:
    """Slows the address that sends wrong passwords, never the office behind it for
    long: after LOGIN_FREE_TRIES wrong ones, each more makes that address wait before
    its next try, 2, 4, 8 ... seconds, at most LOGIN_LONGEST_WAIT, counted from its
    last wrong password. A try during the wait is refused at once, unchecked and not
    counted, so it never makes the wait longer: whoever shares the address (one NAT,
    one proxy) can sign in at most a minute after the last wrong password. An IPv6
    client counts by its /64; at most LOGIN_ADDRESSES_KEPT addresses are kept, the
    oldest dropped, and one quiet for LOGIN_FORGET_AFTER starts over."""

    def __init__(self, free=LOGIN_FREE_TRIES, longest=LOGIN_LONGEST_WAIT,
                 forget=LOGIN_FORGET_AFTER, kept=LOGIN_ADDRESSES_KEPT):
        self.free, self.longest, self.forget, self.kept = free, longest, forget, kept
        self.failures = {}  # key -> [wrong passwords, last one's time], oldest first
        self.lock = threading.Lock()

    @staticmethod
    def key(address):
        parsed = AccessGuard.parse_address(address)
        if parsed is not None and parsed.version == 6:
            return str(ipaddress.ip_network((parsed, 64), strict=False))
        return str(parsed or address)

    def _wait(self, count):
        """Seconds to wait after `count` wrong passwords."""
        over = count - self.free
        return 0 if over <= 0 else min(self.longest, 2 ** min(over, 16))

    def wait_left(self, address, now=None):
        """Whole seconds this address must still wait before its next try; 0: it may."""
        now = time.monotonic() if now is None else now
        with self.lock:
            entry = self.failures.get(self.key(address))
        if entry is None:
            return 0
        return max(0, math.ceil(entry[1] + self._wait(entry[0]) - now))

    def failed(self, address, now=None):
        """Count a wrong password; returns the seconds the address now waits (0: none)."""
        now = time.monotonic() if now is None else now
        key = self.key(address)
        with self.lock:
            entry = self.failures.pop(key, None)
            if entry is None or now - entry[1] >= self.forget:
                entry = [0, now]
            entry[0] += 1
            entry[1] = now
            self.failures[key] = entry  # last in the order: the newest
            while len(self.failures) > self.kept:
                del self.failures[next(iter(self.failures))]
            return self._wait(entry[0])

    def succeeded(self, address):
        with self.lock:
            self.failures.pop(self.key(address), None)


class LoginChecks:
    """The bound on password checks from everyone (LOGIN_CHECKS_A_SECOND, at most
    LOGIN_CHECKS_SAVED saved up), which per-address waits cannot give against many
    addresses. Half of what is saved is kept for an address told "busy" in the last
    LOGIN_BUSY_REMEMBERED seconds that tries again: a flood from a new address each
    time (as from a /48, or many machines) takes only the other half, and the office,
    trying again after a "busy", is checked then, unless as many others tried again
    in the same moment. At most LOGIN_ADDRESSES_KEPT addresses told "busy" are kept."""

    def __init__(self, rate=LOGIN_CHECKS_A_SECOND, saved=LOGIN_CHECKS_SAVED,
                 remembered=LOGIN_BUSY_REMEMBERED, kept=LOGIN_ADDRESSES_KEPT):
        self.rate, self.saved, self.remembered, self.kept = rate, saved, remembered, kept
        self.checks, self.counted_at = float(saved), time.monotonic()
        self.told_busy = collections.OrderedDict()  # key -> when, the oldest first
        self.lock = threading.Lock()

    def take(self, address, now=None):
        """Whether a password from `address` may be checked now (one check taken);
        when not, the address is told "busy" and remembered as such."""
        now = time.monotonic() if now is None else now
        key = LoginLimiter.key(address)
        with self.lock:
            gained = max(0.0, now - self.counted_at) * self.rate
            self.checks = min(self.saved, self.checks + gained)
            self.counted_at = now
            told = self.told_busy.pop(key, None)
            kept_back = 0 if told is not None and now - told < self.remembered \
                else self.saved / 2
            if self.checks - 1 >= kept_back:
                self.checks -= 1
                return True
            self.told_busy[key] = now
            while len(self.told_busy) > self.kept:
                self.told_busy.popitem(last=False)
            return False


class RefusalLog:
    """Log lines of refused logins, LOGIN_REFUSALS_LOGGED a minute at most: beyond
    that they are counted, and one line at the minute's end says how many, so a flood
    neither fills the disk nor goes unseen."""

    def __init__(self, limit=LOGIN_REFUSALS_LOGGED, window=60.0):
        self.limit, self.window = limit, window
        self.window_start, self.logged, self.counted = -math.inf, 0, 0
        self.lock = threading.Lock()

    def refused(self, message, *args, now=None):
        now = time.monotonic() if now is None else now
        with self.lock:
            if now - self.window_start >= self.window:
                self.window_start, self.logged = now, 0
            if self.logged < self.limit:
                self.logged += 1
                log.warning("office login refused: " + message, *args)
                return
            self.counted += 1
            if self.counted == 1:  # the first one counted: say the total when it ends
                timer = threading.Timer(self.window_start + self.window - now, self.flush)
                timer.daemon = True
                timer.start()

    def flush(self):
        with self.lock:
            counted, self.counted = self.counted, 0
        if counted:
            log.warning("office login refused %d more times in the last minute (not "
                        "logged one by one)", counted)

Session = collections.namedtuple("Session", "nonce expires")

#: The state folder's file of sessions ended before their expiry (RevokedSessions).
REVOKED_SESSIONS_NAME = "revoked_sessions"
_NONCE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class RevokedSessions:
    """Sessions ended before their expiry, kept in the state folder's revoked_sessions
    file so that no restart brings one back: logouts (revoke()), and every session at
    once (revoke_all(): a new office password, the password command). The one place
    that ends sessions; OfficeDoor.session() asks is_revoked() of every cookie.

    Bounded: an entry is dropped once its session would have expired anyway, and
    beyond `kept` logouts the oldest are folded into the "every session started
    until" time instead (signing out a few sessions too many, never letting one back).
    One line an entry, appended at once; the file is written anew when it holds twice
    the entries kept. Lines: "session NONCE EXPIRES", "all UNTIL EXPIRES" (sessions
    started at or before UNTIL), "password TAG" (which password the sessions belong
    to: at a start with another one, every session is revoked)."""

    def __init__(self, path, kept=SESSIONS_ENDED_KEPT):
        self.path, self.kept = path, kept
        self.lock = threading.Lock()
        self.ended = collections.OrderedDict()  # nonce -> expiry, oldest first
        self.until = 0        # sessions started at or before this (epoch s) are revoked
        self.password = ""    # the tag of the password of the sessions
        self.lines = 0        # lines in the file

    @classmethod
    def open(cls, path, password_tag=None, kept=SESSIONS_ENDED_KEPT, now=None):
        """The revoked sessions kept at `path` (none when it does not exist yet); with
        `password_tag` (a tag of the office password's hash) different from the one
        kept, every session is revoked. ConfigError when the file cannot be read."""
        revoked = cls(path, kept)
        now = time.time() if now is None else now
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read(64 * 1024 * 1024).splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the signed-out sessions "
                              f"({error.strerror or error}); delete it or pass "
                              "--state-dir") from None
        for line in lines:
            revoked._take(line.split(), now)
        if password_tag is not None and password_tag != revoked.password:
            if revoked.password:
                revoked.until = max(revoked.until, int(now))
            revoked.password = password_tag
        try:
            revoked._rewrite(now)
        except OSError as error:
            raise ConfigError(f"{path}: cannot write the signed-out sessions "
                              f"({error.strerror or error}); pass --state-dir") from None
        return revoked

    def _take(self, fields, now):
        """One line of the file, read; anything else is ignored (a line cut short by a
        crash)."""
        kind = fields[0] if fields else ""
        if kind == "password" and len(fields) == 2 and _NONCE.fullmatch(fields[1]):
            self.password = fields[1]
        elif (kind in ("session", "all") and len(fields) == 3 and fields[2].isascii()
              and fields[2].isdigit() and int(fields[2]) >= now):
            if kind == "session" and _NONCE.fullmatch(fields[1]):
                self.ended.pop(fields[1], None)
                self.ended[fields[1]] = int(fields[2])
                self._bound()
            elif kind == "all" and fields[1].isascii() and fields[1].isdigit():
                self.until = max(self.until, int(fields[1]))

    def is_revoked(self, nonce, expires):
        return expires - SESSION_SECONDS <= self.until or nonce in self.ended

    def revoke(self, nonce, expires, now=None):
        """End the session `nonce` (a logout), for good."""
        with self.lock:
            self.ended[nonce] = expires
            folded = self._bound()
            self._keep(now, "" if folded else f"session {nonce} {expires}\n")

    def revoke_all(self, now=None):
        """End every session started until now (a new password)."""
        with self.lock:
            now = time.time() if now is None else now
            self.until = max(self.until, int(now))
            self._keep(now, f"all {self.until} {self.until + SESSION_SECONDS}\n")

    def _bound(self):
        """Keep at most `kept` logouts: the oldest folded into `until`. True if any."""
        folded = False
        while len(self.ended) > self.kept:
            _nonce, expires = self.ended.popitem(last=False)
            self.until = max(self.until, expires - SESSION_SECONDS)
            folded = True
        return folded

    def _keep(self, now, line):
        """Append `line` to the file, or write it anew (pruned) when it grew too long
        or `line` is "" (an entry folded). A failure is logged: the session stays
        revoked until the server stops."""
        now = time.time() if now is None else now
        try:
            if not line or self.lines + 1 > 2 * self.kept + 2:
                self._rewrite(now)
                return
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                 | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self.lines += 1
        except OSError as error:
            log.error("%s: cannot keep a signed-out session (%s); it stays signed out "
                      "until the server stops", self.path, error.strerror or error)

    def _rewrite(self, now):
        """The file written anew from what is kept, dropping what has expired."""
        for nonce, expires in list(self.ended.items()):
            if expires < now:
                del self.ended[nonce]
        lines = [f"session {nonce} {expires}\n" for nonce, expires in self.ended.items()]
        if self.until + SESSION_SECONDS >= now:
            lines.insert(0, f"all {self.until} {self.until + SESSION_SECONDS}\n")
        else:
            self.until = 0
        if self.password:
            lines.insert(0, f"password {self.password}\n")
        if not lines and not self.path.exists():
            self.lines = 0
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = self.path.with_name(self.path.name + ".partial")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.path)
        self.lines = len(lines)


class PageDenied(Exception):
    """An office page refused, shown as the 403 HTML page; `reason` names its text."""

    def __init__(self, reason, status=403):
        super().__init__(reason)
        self.reason, self.status = reason, status


def password_tag(secret, password_hash):
    """What RevokedSessions keeps of the office password: a signature of its hash
    (None without a login), telling a new password from the last one."""
    return None if password_hash is None else _signature(secret, "password", password_hash)


class OfficeDoor:
    """Who may open the office pages: a session from the login, or, for one caller's
    page only, a signed link. Sessions and CSRF tokens are signed with the page
    secret, so nothing is kept for them but the sessions ended early (RevokedSessions,
    in the state folder). A session is bound to the password's hash too, and a start
    with a new password revokes them all (a return to an old one brings none back).
    Without a password (--office-password ""), the pages are served with no login,
    to --allow-ip addresses or to this machine only, under its own names."""

    def __init__(self, config, guard, secret, password_hash, revoked=None,
                 password_file=None):
        self.config, self.guard, self.secret = config, guard, secret
        self._password_hash = password_hash
        # The file `popup-server password` writes: read again when it changes, so that
        # a new password works (and ends every session) without a restart.
        self.password_file = password_file
        self._password_seen = file_signature(password_file) if password_file else None
        self._password_checked = time.monotonic()
        # Cookies ignore ports: two servers on one host must not overwrite each other's.
        self.cookie_name = "popup_session_" + _signature(secret, "cookie")[:8]
        self.limiter = LoginLimiter()
        self.refusals = RefusalLog()
        self.checks = LoginChecks()
        self.revoked = revoked or RevokedSessions.open(
            config.state_path / REVOKED_SESSIONS_NAME, password_tag(secret, password_hash))

    @property
    def login_required(self):
        return self._password_hash is not None

    @property
    def password_hash(self):
        """The office password's hash in force: the password file's, checked for a
        change at most once a second (a stat)."""
        if self.password_file is not None and time.monotonic() - self._password_checked >= 1:
            self._password_checked = time.monotonic()
            seen = file_signature(self.password_file)
            if seen != self._password_seen:
                self._password_seen = seen
                try:
                    kept = _read_secret_file(self.password_file, PASSWORD_FILE)
                except PopupError as error:
                    kept = None
                    log.error("%s; the office password stays as it was", error)
                if kept is not None and not password_hash_usable(kept):
                    log.error("%s: %s does not hold a password hash; the office password "
                              "stays as it was (%s)", self.password_file,
                              PASSWORD_FILE.what, PASSWORD_FILE.renewal(self.password_file))
                elif kept is not None and kept != self._password_hash:
                    self._password_hash = kept
                    with self.revoked.lock:  # the next start must not revoke them again
                        self.revoked.password = password_tag(self.secret, kept)
                    self.revoked.revoke_all()
                    log.info("the office password was changed (%s): every session "
                             "has ended", self.password_file)
        return self._password_hash

    # Sessions ------------------------------------------------------------------
    def session(self, environ):
        """The request's valid session, or None."""
        cookie = bottle.request.get_cookie(self.cookie_name) or ""
        expires, _, rest = cookie.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12 and nonce
                and signature.isascii()):
            return None
        wanted = _signature(self.secret, "session", self.password_hash, expires, nonce)
        if not hmac.compare_digest(wanted.encode("ascii"), signature.encode("ascii")):
            return None
        if int(expires) < time.time() or self.revoked.is_revoked(nonce, int(expires)):
            return None
        return Session(nonce, int(expires))

    def start_session(self, environ):
        """A new session and the Set-Cookie value carrying it."""
        # Started after the last revoke_all(), even within its second: not revoked.
        started = max(int(time.time()), self.revoked.until + 1)
        session = Session(secrets.token_urlsafe(12), started + SESSION_SECONDS)
        value = f"{session.expires}.{session.nonce}." + _signature(
            self.secret, "session", self.password_hash, session.expires, session.nonce)
        return session, self._cookie(value, SESSION_SECONDS, environ)

    def end_session(self, session, environ):
        """Forget `session` (logout); the Set-Cookie value that clears it."""
        self.revoked.revoke(session.nonce, session.expires)
        return self._cookie("", 0, environ)

    def _cookie(self, value, max_age, environ):
        # Lax: a link from elsewhere (an e-mail, the pop-up) still opens the pages;
        # POST forms are guarded by CSRF tokens and the Origin check besides.
        secure = "; Secure" if self.guard.request_origin(environ)[0] == "https" else ""
        return (f"{self.cookie_name}={value}; Max-Age={max_age}; Path=/; HttpOnly; "
                f"SameSite=Lax{secure}")

    def base_url(self, environ):
        """Where links to this server's pages start: --public-url, else the scheme and
        host of the request (forwarded ones only from --trusted-proxy)."""
        return self.config.public_url or "{}://{}".format(*self.guard.request_origin(environ))

    # Forms ---------------------------------------------------------------------
    def csrf_token(self, session):
        """The token every POST form of the office pages carries (field "csrf"),
        bound to the session; "" without a session (login off)."""
        return _signature(self.secret, "csrf", session.nonce) if session else ""

    def check_form(self, environ, fields, session):
        """Refuse (PageDenied "form") a POST from another site: its Origin must be this
        server's, and its csrf field the session's token (with the login on)."""
        if not self.same_origin(environ):
            raise PageDenied("form")
        if self.login_required:
            given = fields.get("csrf") or ""
            if session is None or not hmac.compare_digest(
                    given.encode("utf-8"), self.csrf_token(session).encode("ascii")):
                raise PageDenied("form")

    def same_origin(self, environ):
        """False when the browser says the request came from another site's page. A
        request without Origin (old browsers, curl) passes: its token still counts."""
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return True
        ours = {self.guard.request_origin(environ)[1].lower()}
        if self.config.public_url:
            ours.add(urlsplit(self.config.public_url).netloc.lower())
        try:
            parts = urlsplit(origin.strip())
        except ValueError:  # "http://[x": no site at all
            return False
        return parts.scheme in ("http", "https") and parts.netloc.lower() in ours

    # Who may see a page -----------------------------------------------------------
    @functools.cached_property
    def own_names(self):
        """The host names this server answers the office pages under with the login
        off: localhost, the machine's own names, the listen address and --public-url's
        host (lower case, without a final dot)."""
        names = {"localhost", "localhost.localdomain", "ip6-localhost"}
        with contextlib.suppress(OSError, UnicodeError):
            machine = socket.gethostname()
            # Not getfqdn(): a reverse look-up may wait seconds for a DNS server.
            names.update({machine, machine.split(".")[0], machine.split(".")[0] + ".local"})
        names.add(self.config.host or "")
        if self.config.public_url:
            names.add(urlsplit(self.config.public_url).hostname or "")
        return frozenset(name.lower().rstrip(".") for name in names if name)

    def known_host(self, environ):
        """Whether the Host the browser asked for (X-Forwarded-Host from a
        --trusted-proxy) is an address or one of own_names. With the login off, a
        page under any other name may be another site's whose name now leads here
        (DNS rebinding): its scripts would read the calls as if they were its own.
        No Host at all (HTTP/1.0) is no browser's."""
        host = environ.get("HTTP_HOST") or ""
        guard = self.guard
        if guard.via_trusted_proxy(environ):
            host = (environ.get("HTTP_X_FORWARDED_HOST") or "").split(",")[0].strip() or host
        if not host:
            return True
        if host.startswith("["):  # [v6]:port
            name = host[1:].partition("]")[0]
        else:
            name, colon, port = host.rpartition(":")
            name = name if colon and port.isdigit() else host
        name = name.lower().rstrip(".")
        return guard.parse_address(name) is not None or name in self.own_names

    def admit(self, environ, path_asked):
        """The session an office page is shown to (None with the login off); a browser
        without one is sent to the login page, which brings it back to `path_asked`.
        --allow-ip and an unreadable forwarded address refuse as for /popup (JSON)."""
        client = self.guard.client_of(environ)
        if self.guard.allowed and not self.guard.address_in(client, self.guard.allowed):
            raise bottle.HTTPError(403, "this address is not allowed to use the "
                                        "office pages")
        if not self.login_required:
            self.guard.check_page(environ)
            if not self.known_host(environ):
                raise PageDenied("host", 421)
            return None
        session = self.session(environ)
        if session is None:
            raise bottle.HTTPResponse(status=303, headers={
                "Location": "/login?" + urlencode({"next": path_asked}),
                "Cache-Control": "no-store"})
        return session

    def admit_caller(self, environ, number, query, path_asked):
        """The caller's page: a signed link (?e=&s=) opens it for `number` only, without
        a login; (how, session): ("link", None) or ("session", ...). A link that does
        not verify is refused saying why, even to a signed-in browser: its owner
        should learn that this link is bad."""
        if "s" in query or "e" in query:
            verdict = verify_caller_link(self.secret, number, query.get("e"),
                                         query.get("s"))
            if verdict != "ok":
                raise PageDenied(verdict)
            client = self.guard.client_of(environ)
            if self.guard.allowed and not self.guard.address_in(client, self.guard.allowed):
                raise bottle.HTTPError(403, "this address is not allowed to use the "
                                            "office pages")
            return "link", None
        return "session", self.admit(environ, path_asked)


###############################################################################
# The request log #############################################################
###############################################################################
# One line a request, written off the request path; numbers and client text masked; and
# what Voicenter sent, as it was read.


class LogOutput:
    """Where log text goes (stderr), written by its own thread. A blocked output (a
    paused console, a pipe nobody reads) then stops only that thread: what waits
    for it is bounded (MAX_WAITING characters), lines past that are dropped and
    counted in a line written when the output moves again, and close() waits a
    bounded time, so a stop never hangs on the log. Writes go to the file descriptor
    itself: a thread blocked inside sys.stderr would hold its lock, which the
    interpreter then waits for at exit. A stream without one (a StringIO) cannot
    block and is written at once."""

    MAX_WAITING = 4 * 1024 * 1024

    def __init__(self, stream):
        self._stream = stream
        try:
            self._fd = stream.fileno()
            self._encoding = getattr(stream, "encoding", None) or "utf-8"
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation
            self._fd = None
        self._chunks = collections.deque()  # text waiting for the output
        self._waiting = 0     # characters in _chunks
        self._writing = False
        self._dropped = 0     # lines dropped since the output last took some
        self._gone = False    # the output is closed (EPIPE, EBADF): nothing more to do
        self._changed = threading.Condition()
        if self._fd is not None:
            threading.Thread(target=self._run, name="log-output", daemon=True).start()

    def write(self, text, lines=1):
        if self._fd is None:
            with self._changed:
                self._write_stream(text)
            return
        with self._changed:
            if self._gone:
                return
            if self._waiting + len(text) > self.MAX_WAITING:
                self._dropped += lines
                return
            self._chunks.append(text)
            self._waiting += len(text)
            self._changed.notify()

    def close(self, timeout=2.0):
        """Waits up to `timeout` seconds for what waits to be written."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (self._chunks or self._writing) and not self._gone:
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    return False
        return True

    def _run(self):
        while True:
            with self._changed:
                while not self._chunks:
                    self._changed.wait()
                text = "".join(self._chunks)
                self._chunks.clear()
                self._waiting = 0
                if self._dropped:
                    text = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} WARNING {self._dropped} "
                            "log lines were dropped: the log's output was blocked\n" + text)
                    self._dropped = 0
                self._writing = True
            try:
                self._write_fd(text.encode(self._encoding, "backslashreplace"))
            except OSError:  # the output is gone (a closed terminal): drop what comes
                with self._changed:
                    self._gone = True
            with self._changed:
                self._writing = False
                self._changed.notify_all()
            if self._gone:
                return

    def _write_fd(self, data):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:  # someone made the descriptor non-blocking
                time.sleep(0.05)

    def _write_stream(self, text):
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # the log's stream is gone
            pass


class _LogOutputHandler(logging.Handler):
    """The program's log lines, through the same LogOutput as the request log."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def emit(self, record):
        try:
            self.output.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class AccessLog:
    """The request log: one line per request, in the layout of the other log lines.

    It is the only log on the busiest path, and a line through `logging` costs as much
    as answering the request. So a request only queues its values (popup()) or its
    line (write()), and a thread makes and writes the lines in batches every
    `interval` seconds (figures: bench/README.md, "The request log"). Values a client
    chose are escaped, so that nobody can write a line of their own.
    """

    def __init__(self, stream, log_numbers=False, interval=0.1):
        # The lines go to a LogOutput (its own writer thread, bounded), so this thread
        # never blocks on the stream and drains the queue every `interval` whatever
        # the stream does: a request's values are held for 0.1 s, not until it moves.
        self._owns_output = not isinstance(stream, LogOutput)
        self._output = LogOutput(stream) if self._owns_output else stream
        self._log_numbers = log_numbers
        self._interval = interval
        # Bounded too, should this thread fall behind (the oldest go).
        self._lines = collections.deque(maxlen=self.MAX_WAITING)
        self._second = None
        self._stamp = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)

    enabled = True
    MAX_WAITING = 20_000

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        if self._owns_output:
            self._output.close()

    def write(self, message):
        self._lines.append((time.time(), message))

    def popup(self, method, fields, total, seconds, client):
        """A /popup answer's line: its values now, its text in the writer thread.
        Only strings and numbers are kept, no dict: waiting entries that hold
        containers are what the garbage collector would walk, again and again."""
        self._lines.append((time.time(), method, _phase(fields), fields.get("ivrid"),
                            fields.get("phone"), total, seconds, client))

    def _run(self):
        while not self._stop.wait(self._interval):
            try:
                self.flush()
            except Exception:  # a line that cannot be made must not end the log
                log.exception("the request log could not write a batch of lines")

    def _lines_of(self, entries):
        lines = []
        log_numbers = self._log_numbers
        for entry in entries:
            now = entry[0]
            if int(now) != self._second:
                self._second = int(now)
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            if len(entry) == 2:  # write(): the line is made already
                lines.append("%s,%03d INFO %s\n" % (self._stamp, now % 1 * 1000, entry[1]))
                continue
            lines.append("%s,%03d INFO %s\n" % (self._stamp, now % 1 * 1000,
                                                 _popup_line(*entry[1:], log_numbers)))
        return lines

    def flush(self):
        """Write the lines waiting now (the writer thread does this every `interval`)."""
        entries = _take(self._lines)
        if entries:
            if len(entries) >= self.MAX_WAITING:
                entries.insert(0, (entries[0][0], "the log's output was blocked; older "
                                                  "lines were dropped"))
            lines = self._lines_of(entries)
            self._output.write("".join(lines), len(lines))


class LoggingAccessLog:
    """The request log through `logging` (logger popup_server.access), for embedding."""

    def __init__(self, log_numbers=False):
        self._logger = logging.getLogger("popup_server.access")
        self._log_numbers = log_numbers

    @property
    def enabled(self):
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, message):
        self._logger.info("%s", message)

    def popup(self, method, fields, total, seconds, client):
        self._logger.info("%s", _popup_line(method, _phase(fields), fields.get("ivrid"),
                                            fields.get("phone"), total, seconds, client,
                                            self._log_numbers))


def _popup_line(method, phase, ivrid, phone, total, seconds, client, log_numbers):
    return "%s /popup 200 %s ivrid=%s total=%d caller=%s %.1fms client=%s" % (
        method, _loggable(phase or "-"), _loggable(ivrid or "-"), total,
        _mask(phone, log_numbers), seconds * 1000,
        _loggable(client))  # a forwarded address can hold words (fe80::1%x ...)

SENT_KEPT = 200  # pop-up requests and CDRs the "what Voicenter sent" page shows
_SENT_CDR_FIELDS = 60  # a CDR's plain fields kept for it, at most
_SENT_TEXT = 300  # characters of a CDR's value kept


class SentLog:
    """The last SENT_KEPT pop-up requests and CDRs and what each was answered, for the
    "what Voicenter sent" page (/sent). A pop-up only appends a small tuple to a
    bounded deque (atomic: no lock); the page reads them when it is viewed
    (sent_rows()). Nothing secret is kept: of a pop-up only its number, phase and call
    id, what was answered and, when it named no phase, the names of its fields; of a
    CDR its body's plain fields, never the query that carries the token."""

    def __init__(self, kept=SENT_KEPT):
        self.entries = collections.deque(maxlen=kept)

    def popup(self, method, body_format, fields, status, answer, body_names=()):
        """`answer`: the PopupAnswer sent (before the caller's signed link is put in
        it), or the error message of any other answer; `status`: its HTTP status;
        `body_names`: the names of a JSON body's fields (`fields` has only those it
        reads). Runs on every pop-up: it keeps as little as it can (whatever it keeps
        stays in memory for SENT_KEPT requests), and copies nothing it can refer to."""
        phase = fields.get("status") or fields.get("statusCall") or ""
        self.entries.append((
            time.time(), "popup", method, body_format,
            (fields.get("phone"), phase, fields.get("ivrid")), status,
            answer if type(answer) is str else (answer.total, answer.key, answer.url,
                                                answer.name),
            () if phase else (*fields, *body_names)))

    def cdr(self, body_format, fields, status, answer):
        """`answer`: "stored", "already stored" or the error message sent back."""
        kept = {}
        for name, value in itertools.islice(fields.items(), _SENT_CDR_FIELDS):
            if isinstance(value, str):
                kept[name] = value[:_SENT_TEXT]
            elif value is None or isinstance(value, (bool, int, float)):
                kept[name] = value
        self.entries.append((time.time(), "cdr", "POST", body_format, kept, status,
                             answer, ()))

    def flags(self):
        """(pop-ups whose phase this server did not know, CDRs whose time it could not
        read) among those kept."""
        phases = times = 0
        for entry in list(self.entries):
            if entry[1] == "popup":
                phases += _popup_flag(*entry[4][1:], entry[5]) is not None
            else:
                times += _cdr_time_problem(entry[4]) is not None
        return phases, times


class SentRow(typing.NamedTuple):
    """One request of the "what Voicenter sent" page as it was read: values as sent
    and as read, and page-text keys (`how`, `phase_read`, `flag`)."""

    when: dt.datetime
    kind: str            # "popup" or "cdr"
    how: str             # its format: GET query, POST form, POST JSON
    ivrid: str           # the call's id (ivrid, a CDR's ivruniqueid)
    phase: str           # the phase (pop-up) or type and status (CDR), as sent
    phase_read: str      # how that was read: a phase, or a CDR's direction
    number: str          # the number as sent
    e164: str            # as normalised; "" when it is no number
    matched: int | None  # contacts matched (a pop-up answered), else None
    name: str            # the first one's name
    answer: str          # STATUS (a pop-up) or Err (a CDR) as answered
    answer_text: str     # the rest of the answer
    caller_link: bool    # the answer's URL was the caller's signed page link
    flag: str | None     # what was not understood
    others: tuple        # names of the other fields sent (this server ignores them)
    started: dt.datetime | None  # a CDR's call start as read, in `when`'s zone


#: Fields a pop-up is read by: not listed among the others it sent (nor the token).
_READ_NAMES = frozenset(REQUEST_FIELDS) | {"token"}


def _popup_flag(phase, ivrid, status):
    """The page-text key of what a pop-up answered 200 had that this server did not
    understand (a phase name; a call's phase missing), or None."""
    if status != 200:
        return None
    if not phase.strip():
        return "sent.flag_no_phase" if ivrid else None
    return "sent.flag_phase" if read_phase(phase) is None else None


def _cdr_time_problem(fields):
    """None when a CDR's time was read, else the page-text key of why not."""
    sent = _cdr_text(fields.get("time"))
    if not sent:
        return "sent.flag_no_time"
    if _cdr_number(sent, 946684800, 253402300799) is None:  # as cdr_row() reads it
        return "sent.flag_time"
    return None


def sent_rows(entries, region, zone, hidden=()):
    """A SentLog's entries as the page shows them, newest first; in every text, each
    of `hidden` (the token) is replaced by ***."""
    def shown(value):
        text = _cdr_text(value)
        for secret in hidden:
            if secret:
                text = text.replace(secret, "***")
        return text

    rows = []
    for when, kind, method, body_format, values, status, answer, body_names in reversed(
            list(entries)):
        how = ("sent.get" if method == "GET" else "sent.json" if body_format == "json"
               else "sent.form" if body_format == "form" else "sent.post")
        at = _local_time(when, zone)
        if kind == "popup":
            number, sent, ivrid = (text or "" for text in values)
            phase = read_phase(sent) if sent.strip() else ""
            others = tuple(shown(name) for name in dict.fromkeys(body_names)
                           if name not in _READ_NAMES)
            caller_link = False
            if type(answer) is tuple:
                matched, key, url, name = answer
                e164, said = _e164(key) or "", "OK"
                caller_link = not url and key is not None
                text = f"TOTAL {matched}" + (f" · URL {redact_url(url)}" if url else "")
            else:
                e164 = (normalize_number(number, region) or "") if number else ""
                matched, name, said, text = None, "", "ERROR", f"{status}: {answer}"
            rows.append(SentRow(
                at, kind, how, shown(ivrid), shown(sent),
                "phase.unknown" if phase is None else f"phase.{phase or 'none'}",
                shown(number), e164, matched, shown(name), said, shown(text),
                caller_link, _popup_flag(sent, ivrid, status), others, None))
            continue
        try:
            row = cdr_row(values, region, when)
        except CdrError:
            row = None
        problem = _cdr_time_problem(values)
        number = next((text for text in map(_cdr_text, map(values.get, (
            "callerPhone", "caller", "target"))) if text), "")
        kind_and_status = " · ".join(filter(None, map(shown, map(values.get, (
            "type", "status")))))
        rows.append(SentRow(
            at, kind, how, shown(values.get("ivruniqueid")), kind_and_status,
            f"direction.{row.direction}" if row is not None and row.direction
            else "sent.no_direction", shown(number), row.e164 if row is not None else "",
            None, "",
            "Err 0" if status == 200 else f"Err {1 if status >= 500 else status}",
            shown(answer), False, problem, (),
            None if row is None or problem else _local_time(row.started, zone)))
    return rows


###############################################################################
# The caller's contacts #######################################################
###############################################################################
# Every row holding a caller's number in every source, and the contacts the office adds,
# kept in an additions file of the state folder (never in the office's own file).

ADDITIONS_FILE_NAME = "additions.csv"
ADDITIONS_HEADER = ("Name", "Company", "Phone", "Notes")
#: Longest value of each field of the add-contact form, in characters.
ADDITION_LIMITS = {"name": 200, "company": 200, "phone": 100, "notes": 2000}
#: Contacts the additions file may hold, in all and with one number: the form is open
#: to anyone holding a caller's link (which adds only that caller's number), and each
#: change rewrites the whole file and merges it again (at most ~25 MB of fields).
ADDITIONS_MAX = 10_000
ADDITIONS_PER_NUMBER = 20
CALLER_PAGE_CALLS = 50  # the caller's latest calls shown (and that may be marked)

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
#: A plain e-mail address, the only cell made a mailto: link: letters, digits and . _ + -
#: before the @ (a ? & = % # , ; or : would add headers or recipients to the link:
#: "a?cc=victim@evil.example").
_E_MAIL = re.compile(r"[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*"
                     r"\.[A-Za-z]{2,63}")


def additions_options(config):
    """load_index()'s settings for the additions file: its own (UTF-8, comma, its
    ADDITIONS_HEADER columns), never the office file's --encoding, --delimiter,
    --sheet or column options, which describe another file; only the numbers' rules
    (--region, --match-digits) and the template's columns are the office's."""
    return {**config.load_options(), "encoding": "utf-8", "delimiter": ",",
            "sheet": None, "name_column": ADDITIONS_HEADER[0],
            "company_column": ADDITIONS_HEADER[1], "phone_columns": [ADDITIONS_HEADER[2]],
            "url_column": None}


class CallerLinks:
    """The signed links pop-ups carry: an absolute link to /caller/<number> (written
    "+digits") that opens that caller's page only, for `days`: ?e= its expiry (epoch
    seconds), &s= an HMAC bound to the number and the expiry (_signature()'s, which
    verify_caller_link() checks); never the Voicenter token. Made with the key's HMAC
    state prepared once, and kept for the hour: the phases of a call (ringing, answer,
    hang-up) share one, and a repeat costs a dict look-up. A link is dated from the
    start of its hour, so it lasts at most an hour less than --link-days."""

    def __init__(self, secret, days, kept=4096):
        self.days, self.kept = days, kept
        self.keyed = hmac.new(secret, digestmod="sha256")  # copied, never updated
        self.made = {}  # (base, number) -> (hour, link); cleared whole when full

    def link(self, base, number, now=None):
        hour = int(time.time() if now is None else now) // 3600
        made = self.made.get((base, number))
        if made is not None and made[0] == hour:
            return made[1]
        expires = hour * 3600 + self.days * 86400
        signing = self.keyed.copy()
        signing.update(f"caller\n{number}\n{expires}".encode("ascii"))
        signature = base64.urlsafe_b64encode(signing.digest()[:16])[:22].decode("ascii")
        link = f"{base}/caller/{number}?e={expires}&s={signature}"
        if len(self.made) >= self.kept:
            self.made.clear()  # a bound, not a cache policy: links are cheap to remake
        self.made[(base, number)] = (hour, link)
        return link


@dataclasses.dataclass(frozen=True)
class CallerRow:
    """One contact holding the caller's number, as its source has it."""

    source: str          # the source's public name (no folder)
    row: int             # the spreadsheet row (the header is row 1)
    name: str
    company: str
    columns: tuple       # (header, text, kind) of its non-empty cells, in file order;
                         # kind: "phone" or "fax" (its label says so: no call, no
                         # WhatsApp; for both, text's numbers as E.164 follow: see
                         # `numbers`), "email", "link" or "text"
    numbers: dict        # header -> the E.164 numbers of that phone or fax cell
    addition: bool       # from the additions file (so it may be edited or removed)


def rows_of_number(sources, key, additions_path=None):
    """(rows, unread) for the number `key`: every contact of `sources` (ContactsSources,
    in order) holding it, in source then file order, with every column: the same rule
    as ContactIndex.find() (the exact number, else its last --match-digits digits when
    no contact anywhere has it exactly). Each source's file is read again in blocks (a
    page, not a pop-up: the index keeps only what a pop-up answers).

    A source whose file cannot be read now, whose last reload failed, or whose file no
    longer holds a number its index serves (a save not served yet) gives what its
    index serves instead (_served_rows()), so the page names whom the pop-up names;
    `unread` lists those sources as (public name, how many of its contacts the index
    has holding the number)."""
    exact, by_suffix, unread = [], [], []
    for source in sources:
        index = source.index
        found = None
        if source.last_error is None:
            try:
                found = _rows_holding(index, key, source.public_name,
                                      additions_path is not None
                                      and Path(index.source) == Path(additions_path),
                                      {name: source.options.get(name)
                                       for name in READ_SETTINGS})
            except (ContactsFileError, _ReadAgain, OSError, ValueError) as error:
                log.warning("the caller's page could not read %s again: %s", source.name,
                            _first_line(error))
        served = _served_rows(index, key, source.public_name)
        if found is None or (served[2] and not found[0] and not found[1]):
            found = served
            unread.append((source.public_name, served[2]))
        exact.extend(found[0])
        by_suffix.extend(found[1])
    return exact or by_suffix, unread


def _served_rows(index, key, source_name):
    """(rows holding `key` exactly, rows holding it by its last digits, how many
    contacts hold it) as `index` serves them, without its file: the pop-up's contact
    (the first holding it) with the name, company and link the index keeps, and no
    other column."""
    position, total, _ = index.find(_e164(key))
    if not total:
        return [], [], 0
    name, company, url, _ = index.texts_of(position)
    columns = ((index.columns.url or "URL", url, "link"),) if url else ()
    row = CallerRow(source_name, position + index.first_row, name or company, company,
                    columns, {}, False)
    return ([row], [], total) if index.holds_exactly(key) else ([], [row], total)


def _rows_holding(index, key, source_name, addition, settings):
    """(rows holding `key` exactly, rows holding it by its last digits) of one
    source's file, read as its index was: read_source() with the source's own
    `settings` (READ_SETTINGS), and the columns its index chose."""
    return read_source(index.source, functools.partial(
        _rows_of_table, index, key, source_name, addition), **settings)


def _rows_of_table(index, key, source_name, addition, table):
    choice, rules = index.columns, index.rules
    modulus = 10 ** index.match_digits
    suffix = key % modulus if key >= modulus else None
    exact, by_suffix, offset = [], [], 0
    for block in table.blocks:
        size = len(next(iter(block.values()))) if block else 0
        if not size or not all(header in block for header in choice.phones):
            offset += size
            continue
        keys, positions, _ = _block_pairs(block, size, offset, choice, rules, [],
                                          table.first_row)
        hits = set(positions[keys == key].tolist())
        near = set() if suffix is None else set(
            positions[(keys >= modulus) & (keys % modulus == suffix)].tolist())
        for position in sorted(hits | near):
            row = _caller_row(block, position - offset, choice, rules, source_name,
                              position + table.first_row, addition)
            (exact if position in hits else by_suffix).append(row)
        offset += size
    return exact, by_suffix


def _caller_row(block, place, choice, rules, source_name, row, addition):
    cells = {header: str(values[place]).strip() for header, values in block.items()}
    name = _names({h: block[h][place:place + 1] for h in choice.name}, choice, 1)[0] \
        if choice.name else ""
    company = cells.get(choice.company, "") if choice.company else ""
    columns, numbers = [], {}
    labels = dict(choice.labels)
    for header, text in cells.items():
        if not text:
            continue
        if header in choice.phones:
            numbers[header] = [_e164(found) for found in cell_keys(text, rules)[0]]
            kind = "fax" if header in labels and _is_fax_label(
                cells.get(labels[header], "")) else "phone"
        elif _E_MAIL.fullmatch(text):
            kind = "email"
        elif is_web_link(text) and (header == choice.url or "://" in text[:10]):
            kind = "link"
        else:
            kind = "text"
        columns.append((header, text, kind))
    return CallerRow(source_name, row, str(name).strip() or company, company,
                     tuple(columns), numbers, addition)


def number_forms(e164, region):
    """(national, international) ways of writing a number, for people to read."""
    try:
        number = phonenumbers.parse(e164, region)
    except phonenumbers.NumberParseException:
        return e164, e164
    return (phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
            phonenumbers.format_number(number,
                                       phonenumbers.PhoneNumberFormat.INTERNATIONAL))


class AdditionRefused(Exception):
    """A form the additions cannot take; `reason` names its page text."""

    def __init__(self, reason, **values):
        super().__init__(reason)
        self.reason, self.values = reason, values


class Additions:
    """The contacts the office adds from callers' pages: a CSV of ADDITIONS_HEADER in
    the state folder, served as the last source (a number in the office's own files
    still wins its pop-up). Every change rewrites it whole and atomically (a new file
    renamed over the old) and is served at once by holder.reload_source(); when the
    last one is removed the source leaves the merge. The office's files are never
    written. One change at a time."""

    def __init__(self, path, holder):
        self.path = Path(path)
        self.holder = holder
        self.lock = threading.Lock()
        self.source = None  # once served: the holder's source of this file

    def start(self):
        """Serve the additions kept by an earlier run (logged, never fatal: the
        office's contacts are served whatever becomes of this file)."""
        try:
            if self.rows():
                self.source = self.holder.add_source(
                    self.path, additions_options(self.holder.config))
        except (ContactsFileError, AdditionRefused) as error:
            log.error("%s: the contacts added from callers' pages are not served: %s",
                      self.path, getattr(error, "values", {}).get("error", error))
        return self

    @contextlib.contextmanager
    def _turn(self):
        """One change at a time, each waiting DB_WAIT at most for the one before."""
        if not self.lock.acquire(timeout=DB_WAIT):
            raise AdditionRefused("caller.busy")
        try:
            yield
        finally:
            self.lock.release()

    def add(self, key, fields):
        with self._turn():
            before = self.rows()
            added = self._checked(key, fields)
            self._room_for(key, before)
            self._write([*before, added], before)

    def edit(self, key, row, fields):
        with self._turn():
            before = self.rows()
            rows = list(before)
            rows[self._place(rows, key, row)] = self._checked(key, fields)
            self._write(rows, before)

    def remove(self, key, row):
        with self._turn():
            before = self.rows()
            rows = list(before)
            del rows[self._place(rows, key, row)]
            self._write(rows, before)

    def rows(self):
        """The kept rows, each a list in ADDITIONS_HEADER's order; [] with no file."""
        try:
            with open(self.path, encoding="utf-8-sig", newline="") as handle:
                lines = list(csv.reader(handle))
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise AdditionRefused("caller.not_saved",
                                  error=f"{self.path.name}: {_first_line(error)}") from None
        if not lines:
            return []
        places = [next((i for i, h in enumerate(lines[0]) if h.strip().lower()
                        == wanted.lower()), None) for wanted in ADDITIONS_HEADER]
        return [[line[i] if i is not None and i < len(line) else "" for i in places]
                for line in lines[1:] if any(cell.strip() for cell in line)]

    def _place(self, rows, key, row):
        """The place in `rows` of spreadsheet row `row`, which must hold the number
        `key` (a page may change only its own caller's contacts)."""
        place = row - 2 if isinstance(row, int) else -1
        if not 0 <= place < len(rows) or key not in cell_keys(
                rows[place][2], self.holder.index.rules)[0]:
            raise AdditionRefused("caller.gone")
        return place

    def _room_for(self, key, rows):
        """Refuse a contact beyond ADDITIONS_MAX, or beyond ADDITIONS_PER_NUMBER with
        the number `key`; a cell is parsed only when its digits may hold it."""
        if len(rows) >= ADDITIONS_MAX:
            raise AdditionRefused("caller.too_many", limit=ADDITIONS_MAX)
        rules, tail = self.holder.index.rules, str(key)[-7:]
        if sum(tail in "".join(filter(str.isdigit, row[2]))
               and key in cell_keys(row[2], rules)[0] for row in rows) \
                >= ADDITIONS_PER_NUMBER:
            raise AdditionRefused("caller.too_many_here", limit=ADDITIONS_PER_NUMBER)

    def _checked(self, key, fields):
        values = {}
        for name, limit in ADDITION_LIMITS.items():
            text = str(fields.get(name) or "")
            text = text.replace("\r\n", "\n") if name == "notes" else \
                text.replace("\n", " ").replace("\r", " ")
            text = _CONTROL_CHARACTERS.sub(" ", text).strip()
            if len(text) > limit:
                raise AdditionRefused("caller.too_long", limit=limit)
            values[name] = text
        if not (values["name"] or values["company"]):
            raise AdditionRefused("caller.need_name")
        # The caller's number alone, by the pop-up's rule and by the index's (which
        # splits a cell at / ; , "or"): "050/999/9871" would be kept and never found.
        rules = self.holder.index.rules
        if number_key(values["phone"], rules)[0] != key or \
                cell_keys(values["phone"], rules)[0] != [key]:
            raise AdditionRefused("caller.wrong_phone")
        return [values["name"], values["company"], values["phone"], values["notes"]]

    def _write(self, rows, before):
        """Keep `rows` and serve them; when they cannot be served, the file goes back
        to `before` (the rows it held), so that "not saved" is true."""
        self._keep(rows)
        try:
            self._serve(bool(rows))
        except AdditionRefused:
            with contextlib.suppress(AdditionRefused):
                self._keep(before)
                self._serve(bool(before))
            raise

    def _keep(self, rows):
        """Keep `rows` as the whole file, each cell as /calls.csv writes it: one that
        a spreadsheet would run as a formula gets its leading ' (_no_formula()), as the
        form is open to anyone holding a caller's link and the office opens this file
        in Excel. Done for every row at every write, so rows kept before are too."""
        partial = self.path.with_name(self.path.name + ".part")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(partial, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(ADDITIONS_HEADER)
                writer.writerows([_no_formula(cell) for cell in row] for row in rows)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, self.path)
        except OSError as error:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise AdditionRefused("caller.not_saved", error=f"{self.path.name}: "
                                  f"{error.strerror or error}") from None

    def _serve(self, has_rows):
        holder = self.holder
        served = self.source is not None and self.source in holder.sources
        if not has_rows:
            if served:
                holder.withdraw_source(self.source)
            if self.source is not None:  # its watcher: this version needs no reading
                self.source.served_signature = file_signature(self.path)
            return
        try:
            if self.source is None:
                self.source = holder.add_source(self.path, additions_options(holder.config))
                return
            if not served:
                holder.restore_source(self.source)
            if not holder.reload_source(self.path):
                raise ContactsFileError(self.path, self.source.last_error or "not served")
        except ContactsFileError as error:
            raise AdditionRefused("caller.not_saved", error=str(error)) from None


def kept_additions(config):
    """[the additions file] when it holds a contact (or cannot be read: --check then
    says why), else []: its own source in --check."""
    path = config.state_path / ADDITIONS_FILE_NAME
    try:
        return [path] if Additions(path, None).rows() else []
    except AdditionRefused:
        return [path]


def caller_form_token(secret, number, how, session, query, door):
    """The token the caller page's forms carry: the session's CSRF token, or, opened
    by a link, one bound to that link (its number and expiry)."""
    if how == "link":
        return _signature(secret, "csrf", "caller", number, query.get("e") or "")
    return door.csrf_token(session)


###############################################################################
# What a request needs ########################################################
###############################################################################
# Site: what every handler is given; the answers and helpers several handlers share.


#: A CDR stored: Voicenter's guide spells the answer Err/Errdesc, its own SDK
#: err/errdesc; both are sent, so that its sender reads it whichever it reads.
CDR_OK = {"Err": 0, "Errdesc": "OK", "err": 0, "errdesc": "OK"}


def _cdr_refusal(code, message):
    """Voicenter's non-zero Err (send it again), in both spellings (CDR_OK)."""
    return {"Err": code, "Errdesc": message, "err": code, "errdesc": message}


def _cdr_answer(status, message):
    """A failed CDR: Voicenter's Err (non-zero: send it again) with this server's
    usual error fields."""
    return _json_bytes({**_cdr_refusal(1 if status >= 500 else status, message),
                        "STATUS": "ERROR", "MESSAGE": message})


def _cdr_json(body):
    """Every field of a JSON CDR, as sent (an object of any fields)."""
    return _json_object(body, '{"ivruniqueid": "...", "status": "ANSWER"}')


def health_report(holder, recorder, call_log=None, voicenter=None):
    """/health's status and body: 503 unless all is well (the contacts file loads,
    calls are recorded, Voicenter's Call Log is pulled when asked to be), so that a
    monitor reading only the code alerts; the body says which, and the state of
    Voicenter's extension list ("voicenter": "off" without --voicenter-code),
    which pop-ups do not need and the status leaves out. Open to anyone: no
    contact data, no folder, no secret."""
    body = holder.health()
    contacts_ok = body["last_error"] is None
    failing = [source for source in body["sources"] if source["last_error"]]
    if contacts_ok:
        body["contacts_file"] = "ok"
    elif len(body["sources"]) == 1:
        body["contacts_file"] = ("fails to load; still serving the last good contacts, "
                                 f"loaded at {body['loaded_at']}")
    else:
        body["contacts_file"] = (f"{len(failing)} of {len(body['sources'])} sources fail "
                                 "to load; still serving their last good contacts")
    calls_trouble = recorder.health() if recorder is not None else None
    body["calls"] = ("off" if recorder is None else "ok" if calls_trouble is None
                     else f"cannot be recorded: {calls_trouble}")
    body["voicenter"] = "off" if voicenter is None else voicenter.health()
    body.update(call_log.health() if call_log is not None
                else {"call_log": "off", "call_log_pulled_at": None})
    healthy = contacts_ok and calls_trouble is None and (
        call_log is None or call_log.trouble is None)
    body["status"] = "ok" if healthy else "error"
    return (200 if healthy else 503), body


def _call_log_state(call_log, zone):
    """The calls page's word on the Call Log: None when it is not pulled, else
    (trouble kind or None, Voicenter's words, the last good pull as a datetime of
    `zone`, or None)."""
    if call_log is None:
        return None
    kind, detail = call_log.trouble or (None, "")
    pulled_at = call_log.pulled_at
    return kind, detail, _local_time(pulled_at, zone) if pulled_at else None


def _parse_day(text, today):
    if not text:
        return today
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or not 2000 <= day.year <= 9998:
        raise bottle.HTTPError(400, "day must be a date written YYYY-MM-DD") from None
    return day


def _page_offset(query, name):
    """Where a page of the calls page's list `name` starts (?calls=, ?callers=)."""
    text = query.get(name) or "0"
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise bottle.HTTPError(400, f"{name} must be a whole number (where the page "
                                    "starts)")
    return int(text)


def _streamed_csv(calls, name):
    """calls_csv_lines() of `calls` as bytes, row by row; closed early (waitress closes
    it when the client goes away), it closes `calls` at once: its query stops and its
    database connection is let go, instead of waiting for the garbage collector."""
    rows, lines = 0, calls_csv_lines(calls)
    try:
        for rows, line in enumerate(lines):
            yield line.encode("utf-8")
    except GeneratorExit:
        log.info("the download of %s stopped after %d calls: the client went away",
                 name, rows)
        raise
    finally:
        lines.close()
        close = getattr(calls, "close", None)
        if close is not None:
            close()


def _calls_link(shown, **changes):
    """A link to the calls page: the query `shown` (day, did) with `changes`; a value
    of None or 0 leaves that field out."""
    fields = {**shown, **changes}
    return "?" + urlencode({name: value for name, value in fields.items() if value})


#: Rows of calls and of missed callers the calls page shows at once.
PAGE_CALLS = 500
#: How long a browser remembers its chosen extension (a cookie), in seconds.
EXTENSION_COOKIE_SECONDS = 365 * 24 * 3600


def asked_path():
    """The path and query this request asked for (where a login sends it back)."""
    environ = bottle.request.environ
    query = environ.get("QUERY_STRING", "")
    return bottle.request.path + (f"?{query}" if query else "")


def _calls_or_error(recorder, read):
    """(read(the calls database's path), None), or (None, what failed)."""
    if recorder is None:
        return None, None
    try:
        return read(recorder.path), None
    except sqlite3.Error as error:
        log.error("cannot read calls from %s: %s", recorder.path, error)
        return None, str(error)


class Site:
    """What every route's handler is given: the settings, the contacts, the calls,
    the office's door and the logs, made once by create_app(), and the helpers the
    pages share. `page_secret` (bytes) signs sessions and links (a random one for
    this process when None); `password_hash` (hash_password()'s text) is the office
    login, None for none, read again from `password_file` when that changes;
    `additions`: the Additions served (started), else one in the state folder;
    `call_log`: the CallLogPuller whose state /health and the calls page show;
    `revoked`: the RevokedSessions, else those kept in the state folder; `sent`: the
    SentLog of what Voicenter sent (a new one when None); `voicenter`: the
    VoicenterExtensions of --voicenter-code (one is started when None and the code
    is given)."""

    def __init__(self, config, holder, recorder=None, access_log=None, page_secret=None,
                 password_hash=None, additions=None, call_log=None, revoked=None,
                 sent=None, voicenter=None, password_file=None):
        self.config, self.holder, self.recorder, self.call_log = \
            config, holder, recorder, call_log
        self.guard = AccessGuard(config)
        self.door = OfficeDoor(config, self.guard, page_secret or secrets.token_bytes(32),
                               password_hash, revoked, password_file)
        self.links = CallerLinks(self.door.secret, config.link_days)
        self.additions = additions or Additions(config.state_path / ADDITIONS_FILE_NAME,
                                                holder)
        self.direct_headers = bottle_headers_direct()
        self.access_log = access_log or LoggingAccessLog(config.log_numbers)
        self.sent = sent if sent is not None else SentLog()
        if voicenter is None and config.voicenter_code:
            voicenter = VoicenterExtensions(config).start()
        self.voicenter = voicenter
        self.callbacks = CallBacks()
        self.zone = config.timezone
        self.names = CallNames.from_config(config)
        self.names.extensions = voicenter
        #: The calls' queries' options: the pages' zone, --ring-timeout in seconds.
        self.day_options = dict(zone=self.zone,
                                ring_timeout_seconds=config.ring_timeout_minutes * 60)
        self.extension_cookie = ("popup_extension_"
                                 + _signature(self.door.secret, "extension")[:8])
        #: One CDR stored at a time (take_cdr()).
        self.cdr_turn = threading.Lock()

    def render_page(self, template, status=200, session=None, headers=(), **values):
        """An office page in the browser's language (or --lang), with page_headers()."""
        texts = PageTexts(choose_language(
            bottle.request.environ.get("HTTP_ACCEPT_LANGUAGE"), self.config.lang))
        nonce = secrets.token_urlsafe(16)
        body = bottle.template(
            template, template_lookup=VIEWS, t=texts, lang=texts.language,
            direction=texts.direction, nonce=nonce, csrf=self.door.csrf_token(session),
            signed_in=session is not None, refresh=None, number_text=self.number_text,
            marks=CALL_MARKS, max_note=MAX_NOTE, limits=ADDITION_LIMITS, **values)
        return bottle.HTTPResponse(body.encode("utf-8"), status,
                                   {**page_headers(nonce), **dict(headers)})

    def number_text(self, text):
        return written_number(text, self.config.region)

    def busy_page(self, back, session=None):
        """A form the calls database was too busy to take: the HTML page saying so
        (503, try again), in the page's language; `back`: the page it came from."""
        return self.render_page("busy", 503, session=session,
                                back=local_path(back, "/calls"),
                                headers={"Retry-After": "5"})

    def own_url(self):
        """A link to the office pages under one of this server's own names."""
        config = self.config
        if config.public_url:
            return config.public_url.rstrip("/") + "/"
        host = config.host if config.host not in ("", "0.0.0.0", "::") else "localhost"
        return f"http://{f'[{host}]' if ':' in host else host}:{config.port}/"

    def page_request(self):
        """(session, query, day) of an office page: the login's admission, the query's
        fields and the day it asks for (today in the pages' zone)."""
        environ = bottle.request.environ
        session = self.door.admit(environ, asked_path())
        query = _query_fields(environ)
        return session, query, _parse_day(query.get("day"), today_in(self.zone))

    def calls_or_error(self, read):
        return _calls_or_error(self.recorder, read)

    def browser_of(self, session, environ):
        """Whom call-backs are counted and answered for: the session, else (login
        off) the client's address."""
        if session is not None:
            return "session " + _signature(self.door.secret, "log", session.nonce)[:8]
        return "client " + _loggable(self.guard.client_address(environ) or "unreadable")

    def my_extension(self):
        """The SIP code this browser chose (its cookie), or ""."""
        chosen = bottle.request.get_cookie(self.extension_cookie) or ""
        return chosen if _SIP_CODE.fullmatch(chosen) else ""

    def extension_cookie_header(self, sip, environ):
        secure = "; Secure" if self.guard.request_origin(environ)[0] == "https" else ""
        return ("Set-Cookie", f"{self.extension_cookie}={sip}; "
                              f"Max-Age={EXTENSION_COOKIE_SECONDS}; "
                              f"Path=/; HttpOnly; SameSite=Lax{secure}")

    def callback_view(self, session):
        """What the pages show of call-backs (None without --voicenter-code): the
        extensions to choose from, this browser's own, the list's state, this
        browser's last answer (once) and who is being called back."""
        voicenter = self.voicenter
        if voicenter is None:
            return None
        environ = bottle.request.environ
        now = time.time()

        def local(moment):
            return moment and (moment.astimezone(self.zone) if self.zone else moment)

        def pending(e164, since=0.0):
            """(agent, time) of a call-back to `e164` after `since` that no call has
            followed yet (its leg 2, answered or not, is a call)."""
            found = self.callbacks.pending_for(e164, since, now)
            if not found:
                return None
            latest, _error = self.calls_or_error(lambda path: calls_of_number(
                path, e164, limit=3, **self.day_options))
            if any(call.started.timestamp() > found[1] or (  # a CDR's whole seconds:
                    call.direction == "outgoing"              # leg 2 may seem earlier
                    and call.started.timestamp() >= found[1] - 1) for call in latest or ()):
                return None
            return self.names.agent(found[0]), _local_time(found[1], self.zone)
        mine = self.my_extension()
        return types.SimpleNamespace(
            extensions=voicenter.extensions, mine=mine,
            mine_name=voicenter.names.get(mine, mine), fetched=local(voicenter.fetched_at),
            problem=voicenter.problem, problem_kind=voicenter.problem_kind,
            problem_at=local(voicenter.failed_at),
            answer=self.callbacks.answer_for(self.browser_of(session, environ)),
            pending=pending)


###############################################################################
# Voicenter's routes ##########################################################
###############################################################################
# /popup, its preflight, /health and /cdr: what Voicenter and monitors call.


def keep_refused_popup(site, status, message):
    """A refused pop-up, for the "what Voicenter sent" page: its query's fields."""
    environ = bottle.request.environ
    try:
        fields = _query_fields(environ)
    except bottle.HTTPError:
        fields = {}
    site.sent.popup(environ.get("REQUEST_METHOD", ""), environ.get(BODY_FORMAT), fields,
                    status, message, environ.get(BODY_NAMES, ()))


def answer_popup(site):
    """GET|POST /popup: Voicenter's pop-up, answered with the caller's details (the
    busiest route: no plugin wraps it, and it writes its JSON as bytes)."""
    access_log = site.access_log
    log_request = access_log.enabled
    started = time.perf_counter() if log_request else 0.0
    environ = bottle.request.environ
    query = _query_fields(environ)
    client = site.guard.check(environ, query)
    fields = query
    if environ["REQUEST_METHOD"] == "POST":
        fields = {**query, **_body_fields(environ, site.config.max_body)}
    phone = fields.get("phone")
    if phone is None:
        raise bottle.HTTPError(400, "the request has no phone field "
                                    "(e.g. /popup?phone=0722776772)")
    answer = answer_for(site.holder.index, phone, fields, site.config)
    if site.direct_headers:
        # Straight into the response's header table as set_header() would leave it:
        # these names and values are constants, so its checks only cost time.
        headers = bottle.response._headers
        headers["Content-Type"] = [JSON_TYPE]  # new lists: add_header() appends
        headers["Access-Control-Allow-Origin"] = [CORS_ORIGIN[1]]
    else:
        bottle.response.set_header("Content-Type", JSON_TYPE)
        bottle.response.set_header(*CORS_ORIGIN)
    if site.recorder is not None:
        site.recorder.record(fields, answer)
    site.sent.popup(environ["REQUEST_METHOD"], environ.get(BODY_FORMAT), fields, 200,
                    answer, environ.get(BODY_NAMES, ()))
    if log_request:
        access_log.popup(environ["REQUEST_METHOD"], fields, answer.total,
                         time.perf_counter() - started,
                         client or site.guard.client_address(environ))
    if not answer.url and answer.key is not None:  # no CRM: this caller's own page
        answer = answer._replace(url=site.links.link(site.door.base_url(environ),
                                                     f"+{answer.key}"))
    return answer.json_bytes()


def answer_preflight(site):
    """OPTIONS /popup: the CORS preflight of a browser (Voicenter's extension)."""
    for name, value in CORS_PREFLIGHT_HEADERS.items():
        bottle.response.set_header(name, value)
    # Chrome asks before a page or extension reaches a server on a private network
    # (the office's own): the extension's request goes through only when allowed.
    asked = bottle.request.environ.get("HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK")
    if (asked or "").strip().lower() == "true":
        bottle.response.set_header("Access-Control-Allow-Private-Network", "true")
    bottle.response.status = 204
    return b""


def answer_health(site):
    """GET /health: health_report() for monitors."""
    status, body = health_report(site.holder, site.recorder, site.call_log, site.voicenter)
    bottle.response.status = status
    bottle.response.content_type = JSON_TYPE
    bottle.response.set_header("Cache-Control", "no-store")
    return _json_bytes(body)


def take_cdr(site):
    """POST /cdr, Voicenter's CDR notification: stored (committed) before {"Err": 0}
    is answered; any other answer has a non-zero Err, and Voicenter sends it again."""
    bottle.response.content_type = JSON_TYPE
    environ = bottle.request.environ
    recorder, sent = site.recorder, site.sent
    fields = {}
    try:
        site.guard.check(environ, _query_fields(environ))
        if recorder is None:
            raise bottle.HTTPError(503, "calls are not recorded here (--calls-db \"\")")
        fields = _body_fields(environ, site.config.max_body, _cdr_json)
        # One CDR stored at a time, waiting at most CDR_WAIT for the database. The
        # "cdr" lane runs them one at a time already; this holds where the lanes
        # are off (a waitress whose internals are unknown), so that a locked
        # database never holds more than one of the threads pop-ups share then.
        if not site.cdr_turn.acquire(timeout=CDR_WAIT):
            raise bottle.HTTPError(503, "busy storing another CDR; send it again")
        try:
            stored = store_cdr(recorder.path, fields, site.config.region, CDR_WAIT)
        finally:
            site.cdr_turn.release()
    except bottle.HTTPError as error:
        bottle.response.status = error.status_code
        sent.cdr(environ.get(BODY_FORMAT), fields, error.status_code, error.body)
        return _cdr_answer(error.status_code, error.body)
    except CdrError as error:
        bottle.response.status = 400
        sent.cdr(environ.get(BODY_FORMAT), fields, 400, str(error))
        return _cdr_answer(400, str(error))
    except (sqlite3.Error, OSError) as error:
        log.error("could not store a CDR in %s: %s", recorder.path, error)
        bottle.response.status = 503
        message = "the CDR could not be stored; send it again"
        sent.cdr(environ.get(BODY_FORMAT), fields, 503, message)
        return _cdr_answer(503, message)
    outcome = "stored" if stored else "already stored"
    sent.cdr(environ.get(BODY_FORMAT), fields, 200, outcome)
    if site.access_log.enabled:
        site.access_log.write(f"POST /cdr 200 {outcome} "
                              f"client={_loggable(site.guard.client_address(environ))}")
    return _json_bytes(CDR_OK)


###############################################################################
# Signing in ##################################################################
###############################################################################
# /login and /logout.


def show_login(site):
    """GET /login: the sign-in page (back to `next` when signed in already)."""
    environ = bottle.request.environ
    goal = local_path(_query_fields(environ).get("next"))
    if not site.door.login_required or site.door.session(environ) is not None:
        raise bottle.HTTPResponse(status=303, headers={"Location": goal})
    return site.render_page("login", goal=goal, problem=None)


def log_in(site):
    """POST /login: the office password checked (at most LOGIN_CHECKS_A_SECOND from
    everyone, LoginChecks; an address that sent wrong ones waits, told so at once),
    then a session."""
    environ = bottle.request.environ
    door, config = site.door, site.config
    fields = _body_fields(environ, config.max_body)
    goal = local_path(fields.get("next"))
    if not door.login_required:
        raise bottle.HTTPResponse(status=303, headers={"Location": goal})
    if not door.same_origin(environ):  # no session yet: only the Origin can tell
        raise PageDenied("form")
    client = site.guard.client_of(environ)
    texts = PageTexts(choose_language(environ.get("HTTP_ACCEPT_LANGUAGE"), config.lang))
    wait = door.limiter.wait_left(client)
    if wait:  # answered at once: the password is not even checked
        door.refusals.refused("%s waits %d s more after wrong passwords",
                              _loggable(client), wait)
        return site.render_page("login", 429, goal=goal, problem=("login.too_many", {
            "wait": wait_in_words(texts, wait)}), headers={"Retry-After": str(wait)})
    if not door.checks.take(client):
        door.refusals.refused("%s: over %d password checks a second from everyone",
                              _loggable(client), LOGIN_CHECKS_A_SECOND)
        return site.render_page("login", 503, goal=goal, problem=("login.busy", {}),
                                headers={"Retry-After": "1"})
    right = password_matches(fields.get("password") or "", door.password_hash)
    if not right:
        wait = door.limiter.failed(client)
        door.refusals.refused("wrong password from %s%s", _loggable(client),
                              f"; it waits {wait} s" if wait else "")
        problem = ("login.wrong_wait", {"wait": wait_in_words(texts, wait)}) if wait \
            else ("login.wrong", {})
        return site.render_page("login", 401, goal=goal, problem=problem,
                                headers={"Retry-After": str(wait)} if wait else ())
    door.limiter.succeeded(client)
    _session, cookie = door.start_session(environ)
    raise bottle.HTTPResponse(status=303, headers={
        "Location": goal, "Set-Cookie": cookie, "Cache-Control": "no-store"})


def log_out(site):
    """POST /logout: the session ended (kept ended across restarts), back to /login."""
    environ = bottle.request.environ
    session = site.door.session(environ)
    fields = _body_fields(environ, site.config.max_body)
    site.door.check_form(environ, fields, session)
    headers = {"Location": "/login", "Cache-Control": "no-store"}
    if session is not None:
        headers["Set-Cookie"] = site.door.end_session(session, environ)
    raise bottle.HTTPResponse(status=303, headers=headers)


###############################################################################
# The calls page ##############################################################
###############################################################################
# The day's calls (/, /calls), their marks, /calls.csv and what Voicenter sent (/sent).


def show_calls(site):
    """GET / and /calls: the day's calls, missed callers first."""
    session, query, day = site.page_request()
    holder, config, zone = site.holder, site.config, site.zone
    did = query.get("did") or None
    callers_from = _page_offset(query, "callers")
    calls_from = _page_offset(query, "calls")
    page, calls_error = site.calls_or_error(lambda path: day_page(
        path, day, size=PAGE_CALLS, callers_from=callers_from, calls_from=calls_from,
        did=did, names=site.names, index=holder.index, **site.day_options))
    page = page or DayPage(DaySummary({}, 0, 0, ()), [], [])
    editing = query.get("edit") or None  # the call whose mark and note are edited
    tried = query.get("try")
    tried_answer = None
    if tried is not None:
        tried_answer = answer_for(holder.index, tried, {"phone": tried}, config).as_dict()
    return site.render_page(
        "calls", session=session,
        health={**holder.health(), "last_error": holder.last_error},
        loaded_at=holder.index.loaded_at.astimezone(zone), zone_name=zone_name(zone),
        calls=page.calls, calls_error=calls_error, summary=page.summary,
        missed_callers=page.callers, callers_from=callers_from, calls_from=calls_from,
        did=did, line_name=site.names.line, page_size=PAGE_CALLS, editing=editing,
        link=functools.partial(_calls_link, {"day": day.isoformat(), "did": did}),
        here=asked_path(),
        cdr_url=site.door.base_url(bottle.request.environ) + "/cdr?token=",
        recording=site.recorder is not None, day=day, today=today_in(zone),
        call_log=_call_log_state(site.call_log, zone),
        tried=tried, tried_answer=tried_answer,
        tried_json=_json_bytes(tried_answer).decode("utf-8") if tried_answer else "",
        callback=site.callback_view(session), sent_flags=site.sent.flags())


def show_sent(site):
    """GET /sent: what Voicenter sent, the last pop-ups and CDRs, and how each was
    read."""
    session = site.door.admit(bottle.request.environ, asked_path())
    config = site.config
    rows = sent_rows(site.sent.entries, config.region, site.zone, hidden=(config.token,))
    return site.render_page("sent", session=session, rows=rows, kept=SENT_KEPT,
                            flags=site.sent.flags(), today=today_in(site.zone),
                            zone_name=zone_name(site.zone))


def mark_a_call(site):
    """POST /calls/mark: a call's mark and note from the calls page's forms; back to
    the page (its day, line and row)."""
    environ = bottle.request.environ
    session = site.door.admit(environ, "/calls")
    fields = _body_fields(environ, site.config.max_body)
    site.door.check_form(environ, fields, session)
    recorder = site.recorder
    if recorder is None:
        raise bottle.HTTPError(503, "calls are not recorded here (--calls-db \"\")")
    mark = fields.get("mark", "")
    if mark not in ("", *CALL_MARKS):
        raise bottle.HTTPError(400, f"mark must be one of: {', '.join(CALL_MARKS)}, "
                                    "or empty")
    try:
        found = mark_call(recorder.path, fields.get("ivrid") or "", mark,
                          fields.get("note"))
    except (sqlite3.Error, OSError) as error:
        log.error("could not store a mark in %s: %s", recorder.path, error)
        return site.busy_page(fields.get("next"), session)
    if not found:
        raise bottle.HTTPError(400, "no call has this ivrid")
    raise bottle.HTTPResponse(status=303, headers={
        "Location": local_path(fields.get("next"), "/calls"),
        "Cache-Control": "no-store"})


def download_calls(site):
    """GET /calls.csv: the day's calls, streamed row by row."""
    _session, query, day = site.page_request()
    calls, calls_error = site.calls_or_error(lambda path: iter_calls_of_day(
        path, day, did=query.get("did") or None, names=site.names,
        index=site.holder.index, **site.day_options))
    if calls_error:
        raise bottle.HTTPError(503, f"the calls database cannot be read: {calls_error}")
    name = f"calls-{day.isoformat()}.csv"
    bottle.response.content_type = "text/csv; charset=utf-8"
    bottle.response.set_header("Cache-Control", "no-store")
    bottle.response.set_header("Content-Disposition", f'attachment; filename="{name}"')
    return _streamed_csv(calls or iter(()), name)


###############################################################################
# The caller's page ###########################################################
###############################################################################
# /caller/<number>: what a pop-up's link opens when the office has no CRM, and its
# forms.


def admit_caller(site, number):
    """(how, session, query, key) of a caller's page or form: a signed link opens
    `number` only (OfficeDoor.admit_caller()); a path that is no number is a 404."""
    environ = bottle.request.environ
    query = _query_fields(environ)
    how, session = site.door.admit_caller(environ, number, query, asked_path())
    key = number_key(number, site.holder.index.rules)[0] if len(number) <= 40 else None
    if key is None:
        raise RouteRefusal(404, "no such caller: /caller/ takes a phone number")
    return how, session, query, key


def caller_page(site, number, how, session, query, key, status=200, problem=None,
                form=None):
    """The caller's page of `number` (its key): every row holding it in every
    source, its calls, the add-contact form; `problem` and `form` when an addition
    was refused."""
    config = site.config
    e164 = f"+{key}"
    contacts, unread = rows_of_number(site.holder.sources, key, site.additions.path)
    calls, calls_error = site.calls_or_error(lambda path: calls_of_number(
        path, e164, names=site.names, limit=CALLER_PAGE_CALLS, **site.day_options))
    national, international = number_forms(e164, config.region)
    if not e164.startswith(f"+{number_rules(config.region).country_code}"):
        national = ""  # a foreign number has one form here: its international one
    link_query = urlencode({"e": query["e"], "s": query["s"]}) if how == "link" else ""
    return site.render_page(
        "caller", status, session=session, number=number, e164=e164,
        number_path=quote(number, safe="+"),
        national=national, international=international, contacts=contacts,
        unread=unread, calls=calls or [], calls_error=calls_error,
        recording=site.recorder is not None,
        zone_name=zone_name(site.zone), by_link=how == "link", link_query=link_query,
        problem=problem, form=form or {"phone": national or international},
        form_token=caller_form_token(site.door.secret, number, how, session, query,
                                     site.door),
        callback=site.callback_view(session) if how != "link" else None)


def show_caller(site, number):
    """GET /caller/<number>: the caller's page (a signed link, or the login)."""
    return caller_page(site, number, *admit_caller(site, number))


def caller_form(site, number):
    """(fields, how, session, query, key) of a caller page's POST, refused (the 403
    page) unless it comes from that page: same origin, its token."""
    how, session, query, key = admit_caller(site, number)
    environ = bottle.request.environ
    fields = _body_fields(environ, site.config.max_body)
    if how == "link":
        wanted = caller_form_token(site.door.secret, number, how, session, query,
                                   site.door)
        if not site.door.same_origin(environ) or not hmac.compare_digest(
                (fields.get("csrf") or "").encode("utf-8"), wanted.encode("ascii")):
            raise PageDenied("form")
    else:
        site.door.check_form(environ, fields, session)
    return fields, how, session, query, key


def caller_path(number, how, query):
    """The path of `number`'s page (its signed link's query kept)."""
    path = "/caller/" + quote(number, safe="+")
    if how == "link":
        path += "?" + urlencode({"e": query["e"], "s": query["s"]})
    return path


def back_to_caller(number, how, query, anchor):
    """The answer to a caller page's form: back to that page, at `anchor`."""
    raise bottle.HTTPResponse(status=303, headers={
        "Location": caller_path(number, how, query) + anchor,
        "Cache-Control": "no-store"})


def change_contact(site, number):
    """POST /caller/<number>/contact: add (no row), edit (row) or remove (row,
    remove=1) a contact of the additions file holding this caller's number."""
    fields, how, session, query, key = caller_form(site, number)
    additions = site.additions
    row = fields.get("row") or ""
    try:
        if not row:
            additions.add(key, fields)
        elif not (row.isascii() and row.isdigit()) or len(row) > 9:
            raise AdditionRefused("caller.gone")
        elif fields.get("remove"):
            additions.remove(key, int(row))
        else:
            additions.edit(key, int(row), fields)
    except AdditionRefused as refused:
        return caller_page(site, number, how, session, query, key, 400,
                           problem=(refused.reason, refused.values),
                           form={name: fields.get(name) or ""
                                 for name in ADDITION_LIMITS})
    log.info("a contact of the additions was %s from a caller's page",
             "added" if not row else "removed" if fields.get("remove") else "changed")
    back_to_caller(number, how, query, "#contacts")


def note_a_call(site, number):
    """POST /caller/<number>/call: a note and a mark (handled, called back, or
    none) on one of this caller's calls: the calls page and /calls.csv show them."""
    fields, how, session, query, key = caller_form(site, number)
    recorder = site.recorder
    ivrid, mark = fields.get("ivrid") or "", fields.get("mark") or ""
    note = _CONTROL_CHARACTERS.sub(" ", (fields.get("note") or "").replace("\r\n", "\n"))
    if recorder is None:
        raise bottle.HTTPError(503, "calls are not recorded here (--calls-db \"\")")
    if mark not in ("", *CALL_MARKS) or len(note) > MAX_NOTE:
        raise bottle.HTTPError(400, f"mark is one of {', '.join(CALL_MARKS)} or "
                                    f"empty, and a note has at most {MAX_NOTE} characters")
    calls, calls_error = site.calls_or_error(lambda path: calls_of_number(
        path, f"+{key}", limit=CALLER_PAGE_CALLS, **site.day_options))
    if calls_error:
        return site.busy_page(caller_path(number, how, query), session)
    if not any(call.ivrid == ivrid for call in calls):
        raise RouteRefusal(404, "no such call of this caller")
    try:
        mark_call(recorder.path, ivrid, mark, note.strip())
    except (sqlite3.Error, OSError) as error:
        log.error("could not keep a call's note in %s: %s", recorder.path, error)
        return site.busy_page(caller_path(number, how, query), session)
    back_to_caller(number, how, query, "#calls")


###############################################################################
# Calling back ################################################################
###############################################################################
# /callback: Click2Call from the office pages, and each browser's own extension.


def callback_form(site, environ):
    """(session, fields, browser, goal) of a call-back form, refused unless it comes
    from the office pages of a signed-in browser (with the login on): its session,
    CSRF token and an Origin of this server's own."""
    session = site.door.admit(environ, "/calls")
    fields = _body_fields(environ, site.config.max_body)
    site.door.check_form(environ, fields, session)
    if not environ.get("HTTP_ORIGIN"):  # a page's form always says where it is
        raise PageDenied("form")
    if site.voicenter is None:
        raise RouteRefusal(404, "calling back is off: the server was started "
                                "without --voicenter-code")
    return session, fields, site.browser_of(session, environ), local_path(
        fields.get("next"), "/calls")


def answer_on_page(site, browser, goal, key, values=None, headers=()):
    """Back to the page a call-back form came from, which says `key` (a text) once."""
    site.callbacks.tell(browser, key, values or {})
    raise bottle.HTTPResponse(status=303, headers={
        "Location": goal, "Cache-Control": "no-store", **dict(headers)})


def not_placed(site, browser, sip, masked, goal, key, values=None, headers=()):
    """A call-back refused before Voicenter is asked: logged like one placed (who,
    the extension, the number masked), then answered."""
    # In words, as the page says it, the caller named by the masked number (a log
    # holds no names); the text's key after it, for searching logs.
    said = PageTexts("en")(key, **{**(values or {}), "who": masked})
    log.info("call-back by %s from extension %s to %s not placed: %s [%s]", browser,
             _loggable(sip or "-", 70), masked,
             said.replace("\u2068", "").replace("\u2069", ""), key)
    answer_on_page(site, browser, goal, key, values, headers)


def choose_extension(site):
    """POST /callback/extension: this browser's own extension, kept in a cookie for
    its call-backs."""
    environ = bottle.request.environ
    _session, fields, browser, goal = callback_form(site, environ)
    sip = (fields.get("extension") or "").strip()
    if not site.voicenter.known(sip):
        answer_on_page(site, browser, goal, "callback.unknown_extension")
    answer_on_page(site, browser, goal, "callback.extension_chosen",
             {"agent": site.voicenter.names[sip]},
             [site.extension_cookie_header(sip, environ)])


def call_back(site):
    """POST /callback, Click2Call: Voicenter rings this browser's extension, then
    dials `number`; the answer is said in words on the page the form came from."""
    environ = bottle.request.environ
    config, voicenter, callbacks = site.config, site.voicenter, site.callbacks
    _session, fields, browser, goal = callback_form(site, environ)
    headers = []
    sip = (fields.get("extension") or "").strip()
    if sip and voicenter.known(sip):
        headers.append(site.extension_cookie_header(sip, environ))
    sip = sip or site.my_extension()
    number = fields.get("number") or ""
    key = number_key(number, site.holder.index.rules)[0] if len(number) <= 40 else None
    masked = _mask(number[:40] if key is None else str(key), config.log_numbers)
    if not voicenter.known(sip):
        not_placed(site, browser, sip, masked, goal, "callback.choose_first"
                   if voicenter.extensions else "callback.no_extensions", headers=headers)
    if key is None:
        not_placed(site, browser, sip, masked, goal, "callback.bad_number",
                   headers=headers)
    e164 = f"+{key}"
    match = site.holder.index.lookup(e164)
    who = match.contact.name if match.total and match.contact.name else \
        number_forms(e164, config.region)[0]
    now = time.time()
    refused = callbacks.begin(browser, e164, now)
    if refused:
        not_placed(site, browser, sip, masked, goal, refused, {"who": who}, headers)
    placed = False
    try:
        language = choose_language(environ.get("HTTP_ACCEPT_LANGUAGE"), config.lang)
        outcome, values = click2call(config, sip, str(key), language)
        placed = outcome == "callback.ringing"
    finally:
        callbacks.end(browser, e164, sip, now, placed)
    log.info("call-back by %s from extension %s to %s: %s", browser, sip, masked,
             _click2call_log_text(outcome, values))
    answer_on_page(site, browser, goal, outcome, {**values, "who": who,
                                            "agent": site.names.agent(sip)}, headers)


###############################################################################
# The route table #############################################################
###############################################################################
# ROUTES, the error answers and create_app(), which makes the Bottle app of them.


#: Every route: (methods, path, handler, how), the handler given the Site. "raw": no
#: plugin wraps it and it answers bytes (Voicenter's routes: the busiest, whose
#: errors are JSON of their own); "page": an office page or form (office_page():
#: its refusals and failures are HTML pages); "plain": the handler as it is.
ROUTES = (
    ("GET POST", "/popup", answer_popup, "raw"),
    ("OPTIONS", "/popup", answer_preflight, "plain"),
    ("GET", "/health", answer_health, "plain"),
    ("POST", "/cdr", take_cdr, "raw"),
    ("GET", "/", show_calls, "page"),
    ("GET", "/calls", show_calls, "page"),
    ("GET", "/calls.csv", download_calls, "page"),
    ("POST", "/calls/mark", mark_a_call, "page"),
    ("GET", "/sent", show_sent, "page"),
    ("GET", "/caller/<number>", show_caller, "page"),
    ("POST", "/caller/<number>/contact", change_contact, "page"),
    ("POST", "/caller/<number>/call", note_a_call, "page"),
    ("POST", "/callback/extension", choose_extension, "page"),
    ("POST", "/callback", call_back, "page"),
    ("GET", "/login", show_login, "page"),
    ("POST", "/login", log_in, "page"),
    ("POST", "/logout", log_out, "page"),
)

#: The statuses answered by json_error() (an office page's own are HTML pages).
ERROR_STATUSES = (400, 403, 404, 405, 413, 415, 500, 503)
ERROR_MESSAGES = {
    404: "no such page: the pop-up service is at /popup, its status at /health",
}


def route_paths(routes=ROUTES):
    """The routes' paths as the log may write them, longest first: a rule's fixed
    start ("/caller/" of "/caller/<number>")."""
    return tuple(sorted({path.partition("<")[0] for _, path, _, _ in routes},
                        key=len, reverse=True))


#: The paths the log writes as they are (route_paths()); any other as "...".
LOGGED_PATHS = route_paths()


def _loggable_path(path):
    """A path for the log: a route's as it is, any other only as the route it starts
    with, then "...": the rest is the client's to write, and a token pasted into it
    (/popup;token=..., /popup/TOKEN, /TOKEN) must never reach the log."""
    if path in LOGGED_PATHS:
        return path
    return next(route for route in LOGGED_PATHS if path.startswith(route)) + "..." \
        if path.startswith("/") else "..."


def office_page(handler):
    """An office page's or form's handler whose refusals (PageDenied) are the 403
    HTML page, and whose failures (anything unforeseen while the page is made) are
    logged with their traceback and shown as the 500 HTML page in the page's
    language: a browser never gets the JSON that /popup's clients do."""
    @functools.wraps(handler)
    def page(site, *args, **kwargs):
        try:
            return handler(site, *args, **kwargs)
        except PageDenied as denied:
            return site.render_page("denied", denied.status, reason=denied.reason,
                                    days=site.config.link_days, url=site.own_url())
        except bottle.HTTPResponse:  # an answer already (a redirect, a 4xx)
            raise
        except Exception:
            log.exception("internal error building the page %s",
                          _loggable_path(bottle.request.path))
            return site.render_page("error", 500)
    return page


def _not_allowed_message(path, allow):
    """A 405's message: the route asked for (its rule, never the client's own text in
    it) and the methods it takes (bottle's Allow header, "GET,POST")."""
    rule = next((rule for _, rule, _, _ in ROUTES if re.fullmatch(
        re.sub(r"<[^>]*>", "[^/]+", re.escape(rule)), path)), None)
    methods = sorted(method for method in (allow or "").split(",")
                     if method and method != "HEAD")
    takes = (", ".join(methods[:-1]) + " or " + methods[-1] if len(methods) > 1
             else "".join(methods))
    return f"method not allowed here: {rule or 'this path'} takes {takes or 'no method'}"


def json_error(site, error):
    """An error answer as JSON ({"STATUS": "ERROR", "MESSAGE": ...}; a CDR's with
    Voicenter's Err): what /popup's and /cdr's clients read, and any route's
    refusal made before its handler ran."""
    status = error.status_code
    path = bottle.request.path
    if status >= 500:
        log.error("internal error on %s: %s", _loggable_path(path),
                  error.traceback or error.body)
    message = error.body if isinstance(error, RouteRefusal) else \
        ERROR_MESSAGES.get(status) or (
        _not_allowed_message(path, error.get_header("Allow")) if status == 405 else
        error.body if isinstance(error.body, str) and status < 500
        else "internal error; the server log has the details")
    if site.access_log.enabled:
        client = site.guard.client_address(bottle.request.environ) or "unreadable"
        site.access_log.write(f"{bottle.request.method} {_loggable_path(path)} "
                              f"{status} {_loggable(message, 200)} client={_loggable(client)}")
    bottle.response.content_type = JSON_TYPE
    if path == "/popup":
        bottle.response.set_header(*CORS_ORIGIN)
        keep_refused_popup(site, status, message)
    if path == "/cdr":  # refused before the route (a body too big)
        return _cdr_answer(status, message)
    return _json_bytes({"STATUS": "ERROR", "MESSAGE": message})


def create_app(config, holder, recorder=None, access_log=None, page_secret=None,
               password_hash=None, additions=None, call_log=None, revoked=None,
               sent=None, voicenter=None, password_file=None):
    """The Bottle application: ROUTES, each handler given the one Site made here
    from these (Site says what each is), and the JSON error answers."""
    site = Site(config, holder, recorder, access_log, page_secret, password_hash,
                additions, call_log, revoked, sent, voicenter, password_file)
    app = bottle.Bottle(catchall=True)
    for methods, path, handler, how in ROUTES:
        callback = office_page(handler) if how == "page" else handler
        app.route(path, methods.split(), functools.partial(callback, site),
                  skip=how == "raw")
    for status in ERROR_STATUSES:
        app.error(status)(functools.partial(json_error, site))
    return app


###############################################################################
###############################################################################
# VI. Running #################################################################
###############################################################################
###############################################################################
# The state folder, waitress as this server runs it, and the command line.


###############################################################################
# The state folder ############################################################
###############################################################################
# One state folder per install, held by a lock while the server runs; the files of
# earlier versions adopted once.


def resolve_token(config):
    """The token in force: the configured one, or the one kept in the token file
    (made on first start, readable by its owner only). "" means no check.

    A token file that other users can read or change is refused, as ssh refuses such
    a key: the token is all that guards the contacts, and `chmod 600` mends it while
    keeping the URL. A symbolic link is never followed, to read or to create it. A
    short token is used, with a warning at every start: it is the operator's choice,
    and refusing it would break the URL Voicenter has."""
    if config.token is not None:
        _warn_if_weak(config.token, "--token (or POPUP_TOKEN)")
        return config.token
    path = config.token_path
    token = _read_secret_file(path, TOKEN_FILE)
    if token is None and not config.token_file:
        token = _adopt_old_token(config)
    if token is None:
        token, made = _make_or_read(path, secrets.token_urlsafe(24), TOKEN_FILE)
        if made:
            log.info("made a new token and kept it in %s", path)
    _warn_if_weak(token, str(path))
    return token


def _old_token_paths(config):
    """Where versions before --state-dir kept a made token: beside the contacts file;
    for an installed command's sample, in the user's data folder."""
    paths = [config.contacts_file.parent / TOKEN_FILE_NAME]
    if INSTALLED:
        paths.append(user_data_dir() / TOKEN_FILE_NAME)
    return paths


def _adopt_old_token(config):
    """The token an older version made, copied into the state folder (logged once:
    the next start finds the copy), so that the URL Voicenter has keeps working
    wherever the contacts file goes next. The old file stays as it was."""
    for old in _old_token_paths(config):
        token = _read_secret_file(old, TOKEN_FILE)
        if token is not None:
            token, made = _make_or_read(config.token_path, token, TOKEN_FILE)
            if made:
                log.info("kept the token of %s in %s, so the URL given to Voicenter "
                         "still works (the old file is left as it was)", old,
                         config.token_path)
            return token
    return None


def _copy_database(source, target):
    """Copy the SQLite database `source` into the new file `target` with SQLite's
    backup API: whole even with a -wal beside it; `source` is only read."""
    reading = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=5)
    try:
        writing = sqlite3.connect(target)
        try:
            reading.backup(writing)
        finally:
            writing.close()
    finally:
        reading.close()


def adopt_old_calls(config):
    """The call history an older version kept (data/calls.sqlite beside the program;
    an installed command's in the user's data folder), copied into the state folder
    when it has none yet and --calls-db is not given. Copied, not used in place: two
    servers must not share one database, and a checkout's folder may be replaced on
    the next upgrade. The old file is left as it was. Logged once: the next start finds the copy."""
    target = config.calls_path
    if config.calls_db is not None or target is None or target.exists():
        return
    old = (user_data_dir() if INSTALLED else HERE / "data") / CALLS_FILE_NAME
    if not old.is_file():
        return
    partial = target.with_name(target.name + ".copying")
    try:
        _copy_database(old, partial)
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as error:
        with contextlib.suppress(OSError):
            partial.unlink()
        log.error("could not copy the call history of %s into %s (%s); it is left "
                  "there: pass --calls-db %s to keep using it", old, target, error, old)
        return
    log.info("copied the call history of %s into %s (the old file is left as it was)",
             old, target)


LOCK_FILE_NAME = "server.lock"
#: Where a lock is taken on Windows (msvcrt locks bytes, and others cannot read a
#: locked byte): past the process id written at the start of the lock file.
_LOCK_BYTE = 64
_LOCK_HOLDER_WAIT = 2.0  # seconds to wait for the other server to write its process id
_PORT_FOLDER = re.compile(r"port-\d{1,5}")  # an earlier version's per-port state folder
#: What taking a lock someone holds fails with (flock: EWOULDBLOCK; msvcrt: EACCES or
#: EDEADLOCK); any other error means the file system cannot lock at all.
_LOCK_HELD = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES,
                        getattr(errno, "EDEADLOCK", errno.EDEADLK)})


def hold_state(config):
    """Make the state folder (or tighten it) to its owner only and lock it for as
    long as this process runs: two servers on one folder would make two passwords,
    write one calls database and answer Voicenter with different tokens. Returns the
    lock file, kept open (the lock ends with it, and with the process, however it
    ends); a folder another server holds is a ConfigError naming the folder, that
    server's process id and --state-dir. --check takes no lock: it only reads."""
    folder = _owner_only_folder(config.state_path)
    path = folder / LOCK_FILE_NAME
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT
                             | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as error:
        raise ConfigError(f"{path}: cannot open the state folder's lock file "
                          f"({error.strerror or error}); pass --state-dir") from None
    handle = os.fdopen(descriptor, "r+b", buffering=0)
    try:
        _lock_file(handle)
    except OSError as error:
        if error.errno not in _LOCK_HELD:  # a file system without locks (some NFS)
            log.warning("%s: the state folder cannot be locked (%s): nothing stops a "
                        "second server from using it too; give each one a --state-dir "
                        "of its own", folder, error.strerror or error)
            return handle
        holder = _lock_holder(handle)
        handle.close()
        raise ConfigError(f"{folder}: this state folder is in use by another "
                          f"popup-server (process {holder}); stop that one first, or "
                          "give this one a folder of its own with --state-dir") from None
    handle.seek(0)  # the same length every time, before the locked byte: no truncating
    handle.write(f"{os.getpid()}".ljust(_LOCK_BYTE - 1).encode("ascii") + b"\n")
    return handle


def _lock_file(handle):
    """Take the lock on the open lock file without waiting (OSError when it is held)."""
    if os.name == "nt":
        import msvcrt
        handle.seek(_LOCK_BYTE)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _lock_holder(handle):
    """The process id the lock's holder wrote (it may be writing it this moment)."""
    deadline = time.monotonic() + _LOCK_HOLDER_WAIT
    while True:
        handle.seek(0)
        text = handle.read(_LOCK_BYTE).decode("ascii", "replace").strip()
        if text.isdigit() or time.monotonic() > deadline:
            return text if text.isdigit() else "unknown"
        time.sleep(0.05)


def _owner_only_folder(folder):
    """`folder`, made if need be, readable by its owner only: what it holds is
    callers' numbers and the office's secrets. An existing folder that others may
    read is tightened (said in the log); a folder every user shares (sticky, as
    /tmp) is refused: its owner is someone else."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = folder.stat()
    except OSError as error:
        raise ConfigError(f"{folder}: cannot make the state folder "
                          f"({error.strerror or error}); pass --state-dir") from None
    mode = stat.S_IMODE(info.st_mode)
    if os.name == "nt" or not mode & 0o077:
        return folder
    if info.st_mode & stat.S_ISVTX or info.st_uid != os.geteuid():
        raise ConfigError(f"{folder}: the state folder is shared with other users (mode "
                          f"{mode:03o}, owner {info.st_uid}); give --state-dir a folder "
                          "of this user's own")
    try:
        os.chmod(folder, 0o700)
    except OSError as error:
        raise ConfigError(f"{folder}: the state folder can be read by other users and "
                          f"cannot be made its owner's only ({error.strerror}); chmod "
                          f"700 {folder}, or pass --state-dir") from None
    log.info("made the state folder %s its owner's only (it was mode %03o)", folder, mode)
    return folder


def adopt_port_folder(config):
    """On the first start with the per-user default (no --state-dir), the per-port
    state folder an earlier version used (user_data_dir()/port-PORT) is copied in: the
    one of this port, else the only one. So an upgrade keeps the token Voicenter has,
    the password, the signed links, the calls and the added contacts. Said once (the
    next start finds the page secret); the old folder is left as it was. Run with the
    lock held (hold_state()), so that two first starts cannot both copy."""
    folder = config.state_path
    if config.state_dir or (folder / PAGE_SECRET_NAME).exists():
        return
    base = user_data_dir()
    try:
        olds = sorted(path for path in base.iterdir()
                      if _PORT_FOLDER.fullmatch(path.name) and path.is_dir()
                      and not path.is_symlink() and (path / PAGE_SECRET_NAME).is_file())
    except OSError:
        return
    chosen = base / f"port-{config.port}"
    if chosen not in olds:
        if len(olds) != 1:
            if olds:
                log.warning("the state folders of an earlier version are kept per port "
                            "(%s), none of them for port %d: none is used. To keep one's "
                            "token, password and calls, stop and start again with "
                            "--state-dir and that folder", ", ".join(map(str, olds)),
                            config.port)
            return
        chosen = olds[0]
    try:
        _copy_state(chosen, folder)
    except (OSError, sqlite3.Error) as error:
        raise ConfigError(f"{chosen}: the state folder of an earlier version could not "
                          f"be copied into {folder} ({getattr(error, 'strerror', None) or error}); "
                          f"pass --state-dir {chosen} to keep using it where it is") from None
    log.info("copied the state folder of an earlier version, %s, into %s: the same "
             "token, office password, links, calls and added contacts (the old folder "
             "is left as it was)", chosen, folder)


def _copy_state(old, new):
    """Copy a state folder's files (and its downloads) into `new`, none over a file
    there already, each whole or not at all (a partial copy is renamed into place
    only once written); the page secret last, as it marks the copy done."""
    def copy(source, target):
        if target.exists() or source.is_symlink() or not source.is_file():
            return
        partial = target.with_name(target.name + ".copying")
        try:
            if source.suffix == ".sqlite":
                _copy_database(source, partial)
            else:
                with open(source, "rb") as handle, open(os.open(
                        partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                    shutil.copyfileobj(handle, out)
            os.replace(partial, target)
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()

    skipped = (".part", ".copying", "-wal", "-shm", "-journal")
    names = sorted(path.name for path in old.iterdir()
                   if path.name not in (LOCK_FILE_NAME, PAGE_SECRET_NAME)
                   and not path.name.endswith(skipped))
    for name in names:
        source = old / name
        if source.is_dir() and not source.is_symlink():
            (new / name).mkdir(mode=0o700, exist_ok=True)
            for inner in sorted(source.iterdir()):
                if not inner.name.endswith(skipped):
                    copy(inner, new / name / inner.name)
        else:
            copy(source, new / name)
    copy(old / PAGE_SECRET_NAME, new / PAGE_SECRET_NAME)


def open_state(config):
    """Make the state folder (owner only) and read or make its page secret and office
    password; returns (page secret bytes, password hash or None for no login, the
    password when made now, else None). Only a made password's hash is kept: the
    start-up's closing lines show the password that once."""
    folder = _owner_only_folder(config.state_path)
    secret = _read_secret_file(folder / PAGE_SECRET_NAME, PAGE_SECRET_FILE)
    if secret is None:
        secret = _make_or_read(folder / PAGE_SECRET_NAME, secrets.token_urlsafe(32),
                               PAGE_SECRET_FILE)[0]
    if config.office_password == "":
        return secret.encode("utf-8"), None, None
    if config.office_password is not None:
        # Salted from the page secret, so the same password gives the same hash at every
        # start and sessions (bound to it) outlive a restart; a new password ends them.
        salt = hmac.digest(secret.encode("utf-8"), b"office-password salt", "sha256")[:16]
        return secret.encode("utf-8"), hash_password(config.office_password, salt), None
    path = folder / PASSWORD_FILE_NAME
    password_hash = _read_secret_file(path, PASSWORD_FILE)
    made = None
    if password_hash is None:
        password = secrets.token_urlsafe(12)
        # Another server's first start may write it at the same moment: then its
        # password is the one kept (and printed, by that server), and this one is not.
        password_hash, new = _make_or_read(path, hash_password(password), PASSWORD_FILE)
        if new:
            made = password
            log.info("made the office password; only its hash is kept, in %s (the "
                     "password is shown once, at the end of the start-up)", path)
    elif not password_hash_usable(password_hash):
        raise ConfigError(f"{path}: {PASSWORD_FILE.what} does not hold a password hash; "
                          f"{PASSWORD_FILE.renewal(path)}")
    return secret.encode("utf-8"), password_hash, made


###############################################################################
# Start-up words and the log ##################################################
###############################################################################
# What the start-up says (the URLs to give Voicenter and the office), and the log's
# shape.


def server_url(host, port):
    """http://HOST:PORT for a host one can name; ADDRESS for one that listens on every
    network (no name of this machine is sure to be the one Voicenter reaches)."""
    if host in ("0.0.0.0", "::", ""):
        host = "ADDRESS"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def voicenter_url(base, token, path="/popup"):
    return base + path + (f"?token={quote(token, safe='')}" if token else "")


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def setup_lines(config, port, made_password=None):
    """The start-up's closing lines: what to give Voicenter and the office, the
    password when made now, the state folder. Without --public-url the address is
    never guessed (a host name, 127.0.0.1): it is said what it must be."""
    listening = config.host in ("0.0.0.0", "::", "")
    if config.public_url:
        base, note = config.public_url, None
    elif _is_loopback(config.host):
        base = "http://ADDRESS"
        note = (f"ADDRESS: this server listens on {config.host} only, so Voicenter and "
                "the agents reach it through a proxy on this machine: give the proxy's "
                "address as --public-url and these lines show it")
    else:
        base = server_url(config.host, port)
        note = ("ADDRESS: this server's address as the agents' browsers and Voicenter "
                "reach it (its public name or IP, or the proxy's in front of it); give "
                "it as --public-url and these lines show it") if listening else (
                f"{config.host} must be an address Voicenter and the agents' browsers "
                "can reach; else give the one they reach as --public-url")
    lines = ["Ready. To set up:",
             f"  Voicenter's pop-up URL:  {voicenter_url(base, config.token)}"]
    if config.calls_path is not None:
        lines.append(f"  Voicenter's CDR URL:     {voicenter_url(base, config.token, '/cdr')}")
    pages, where = f"{base}/", ""
    if _is_loopback(config.host) and not config.public_url:
        host = f"[{config.host}]" if ":" in config.host else config.host
        pages, where = f"http://{host}:{port}/", "on this machine; "
    login = ("no login: --office-password is empty, so only this machine or --allow-ip"
             if config.office_password == "" else "sign in with the office password")
    lines.append(f"  Office pages:            {pages}  ({where}{login})")
    if made_password:
        lines.append(f"  Office password:         {made_password}  (made now and shown "
                     f"only this once; `{_command_name()} password` sets another)")
    elif config.office_password is None:
        lines.append("  Office password:         the one made at the first start (`"
                     f"{_command_name()} password` sets a new one)")
    if note:
        lines.append(f"  {note}")
    lines.append(f"  State folder:            {config.state_path}")
    return lines


#: The application's paths, longest first (a path is logged as the one it starts with).
class _NoRequestPaths(logging.Filter):
    """Waitress logs a request's path when its client leaves mid-answer (INFO) or the
    application fails; the path is the client's to write, as in _loggable_path()."""

    PREFIXES = ("Client disconnected while serving ", "Exception while serving ")

    def filter(self, record):
        message = record.msg
        if isinstance(message, str):
            for prefix in self.PREFIXES:
                if message.startswith(prefix):
                    record.msg = prefix + _loggable_path(message[len(prefix):])
        return True


def _configure_logging():
    """Log lines to stderr through a LogOutput (returned, for the request log too): a
    blocked stderr then never blocks a thread that logs, nor the exit, which waits
    at most 2 s for the lines still queued."""
    output = LogOutput(sys.stderr)
    atexit.register(output.close)
    handler = _LogOutputHandler(output)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # one warning per busy request
    logging.getLogger("waitress").addFilter(_NoRequestPaths())
    return output


###############################################################################
# Serving with waitress #######################################################
###############################################################################
# waitress as this server runs it: its settings, the connection guard, the office's
# lanes.


#: A request's headers and body must arrive whole within this many seconds of its
#: first byte, and a new connection's first request within this many of connecting:
#: a client that trickles a byte now and then is never idle for channel_timeout.
REQUEST_DEADLINE = 10

#: Connections open at once, from everyone; the descriptor limit is raised to fit.
#: poll() walks every connection on every turn of the loop: ~1.5 us each.
CONNECTION_LIMIT = 4000
_SPARE_DESCRIPTORS = 256  # the contacts file, SQLite, the log, waitress' own pipe

#: The office's work (every route but /popup and /health) runs in lanes of its own,
#: never on the --threads that answer pop-ups: lane -> (threads, seconds a request may
#: wait for one of them before it is answered "busy"). Each kind of work waits only
#: behind its own kind: CDRs are stored one at a time anyway and Voicenter re-sends a
#: refused one, so they wait CDR_WAIT in a lane of one; password checks (scrypt, ~50 ms
#: of CPU each) have a lane of one, so that a flood of guesses slows only other
#: guesses; an export (a whole day) has a lane of one; forms (marks, notes, additions:
#: writes, which may wait DB_WAIT for a database another program holds) two; and the
#: pages, with every other route, two; call-backs (each may wait VOICENTER_TIMEOUT for
#: Voicenter) a lane of their own, so that a slow Voicenter never keeps a form waiting.
OFFICE_LANES = {"cdr": (1, CDR_WAIT), "login": (1, 3.0), "export": (1, 3.0),
                "form": (2, 3.0), "office": (2, 3.0),
                "callback": (CALLBACKS_AT_ONCE, 3.0)}

#: Bytes of answers a connection may leave unread before its next pipelined request
#: is answered; beyond it the connection is closed once what it has is sent. An answer
#: itself is written whole by its thread (beyond waitress' outbuf_overflow, 1 MiB,
#: into a temporary file), so no thread ever waits for a client to read.
OUTPUT_BOUND = 1024 * 1024


def waitress_settings(config):
    """What waitress is told, and why (docs/production.md, "How waitress is set up,
    and why", explains it for operators too)."""
    return dict(
        host=config.host, port=config.port, threads=config.threads,
        ident="popup-server",
        connection_limit=_connection_limit(),  # an address's share: ConnectionGuard
        channel_timeout=30,                # an idle keep-alive client is dropped after 30 s
        cleanup_interval=1,                # ConnectionGuard.close_stalled(), every second
        max_request_body_size=config.max_body,  # refused before it is read
        max_request_header_size=64 * 1024,
        expose_tracebacks=False,
        asyncore_use_poll=True,            # select() stops at 1024 descriptors
        # waitress drops X-Forwarded-* headers; AccessGuard needs them from --trusted-proxy
        clear_untrusted_proxy_headers=not config.trusted_proxy,
    )


def _connection_limit():
    """CONNECTION_LIMIT, or fewer when the process may not open that many descriptors
    (the soft limit, often 1024, is raised towards the hard one first): a server out
    of descriptors spins on accept() and answers nobody."""
    if sys.platform == "win32":
        return 500  # no poll() there, and select() takes at most 512 sockets
    import resource
    wanted = CONNECTION_LIMIT + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return CONNECTION_LIMIT
    return max(16, min(CONNECTION_LIMIT, soft - _SPARE_DESCRIPTORS))


def _quiet_channel_class():
    """waitress' HTTPChannel, minus a busy loop that collapses throughput at 4+
    keep-alive connections on small machines (waitress 3.0.2, channel.py), and whose
    threads never wait for a client to read (OUTPUT_BOUND).

    A worker sends its response while holding the channel's outbuf_lock. Meanwhile
    writable() says yes (it only looks at the buffered length), so the main loop's
    poll returns at once, handle_write cannot take the lock, and the loop spins,
    taking the GIL the worker needs to finish (figures: bench/README.md, "Serving with
    waitress"). Here a channel whose lock a worker holds is not writable; that worker
    wakes the loop itself (pull_trigger) whenever it leaves bytes unsent, so nothing
    waits.
    """
    from waitress.channel import HTTPChannel

    class QuietChannel(HTTPChannel):
        def writable(self):
            if self.will_close or self.close_when_flushed:
                return True
            if not self.total_outbufs_len:
                return False
            if self.requests:  # a worker may be sending right now
                if not self.outbuf_lock.acquire(blocking=False):
                    return False
                self.outbuf_lock.release()
            return True

        def write_soon(self, data):
            self.answering = True  # below: mid-answer, not between two requests
            try:
                return super().write_soon(data)
            finally:
                self.answering = False

        def _flush_outbufs_below_high_watermark(self):
            """Waitress makes a thread wait here until the client has read all but
            outbuf_high_watermark (16 MiB) of its answers: a client that does not read
            held the thread for good. Here nothing waits. Mid-answer the rest of the
            answer is buffered (to a temporary file past outbuf_overflow) and sent as
            the client reads; between pipelined requests, a client with more than
            OUTPUT_BOUND unread is not answered further: it is closed once its answers
            so far are sent (or after channel_timeout without reading)."""
            if self.answering or self.total_outbufs_len <= OUTPUT_BOUND:
                return
            with self.requests_lock:
                for request in self.requests[1:]:
                    request.close()
                del self.requests[1:]  # service() pops the one just answered
                self.close_when_flushed = True
    QuietChannel.answering = False
    return QuietChannel


def _bytes_waiting(channel):
    """Whether the connection has bytes the main loop has not read yet (a closed one
    counts as not: closing it frees its place at no cost)."""
    try:
        return bool(channel.socket.recv(1, socket.MSG_PEEK))
    except OSError:  # BlockingIOError: nothing waits; anything else: it is gone
        return False


class ConnectionGuard:
    """Keeps clients from taking every connection. Waitress alone stops accepting
    anyone once connection_limit sockets are open, and never drops a client that
    sends a byte every few seconds. So, for each waitress server:

    - an address holds at most --max-connections-per-ip connections (an IPv6 client
      its /64, which one subscriber usually gets whole); more are reset as soon as
      they are accepted. Trusted proxies are exempt: they carry every client.
    - at connection_limit a new connection still gets in: the connection doing least
      for anyone is closed to make room (room()), so that clients from many
      addresses (an IPv6 /48 holds 65,536 /64s) cannot keep a pop-up out.
    - a request must arrive whole within REQUEST_DEADLINE seconds of its first byte,
      and a new connection's first request within REQUEST_DEADLINE of connecting;
      between requests a keep-alive connection may idle channel_timeout seconds.

    All of it runs in waitress' main loop (accepting, and its maintenance pass once a
    second), so a request that arrives whole pays nothing for it.
    """

    WARN_EVERY = 60  # seconds between warnings about refused connections
    ROOM_AT_ONCE = 64  # connections room() ranks at a time (one pass over all)
    #: Seconds a new connection may wait for its request's first byte, or a request
    #: take to arrive, and still rank with the keep-alive ones (room()): one round
    #: trip, with room to spare; an attacker's are older, a browser's are not.
    ROOM_GRACE = 0.5

    def __init__(self, server, config):
        self.server = server
        self.per_address = config.max_connections_per_ip
        self.trusted = config.trusted_proxy
        self.open = {}                          # address -> its channels
        self.refused = collections.Counter()    # address -> refused since the last warning
        self.made_room = 0                      # connections closed for new ones, since then
        self.warned_at = 0.0
        # channel -> (its partial request, seen since, its last answer, seen since)
        self.seen = {}
        # The next connections to close for new ones, the first to go last (room())
        self.idle = []
        self.leaving = []     # chosen by room() for the connections accepted this turn
        self.no_room = False  # every connection does something: accept nothing more
        server.handle_accept = self.accept
        server.maintenance = self.close_stalled
        server.readable = self.listening

    def address_of(self, host):
        """The key an address is counted under; None for a trusted proxy."""
        address = AccessGuard.parse_address(host)
        if address is None:
            return host
        if self.trusted and any(address in net for net in self.trusted
                                if net.version == address.version):
            return None
        if address.version == 6:
            return ipaddress.ip_network((address, 64), strict=False)
        return address

    def listening(self):
        """The listener's readable(), instead of waitress' (which stops listening at
        connection_limit): its maintenance pass every cleanup_interval, and new
        connections taken at the limit too, unless no room could be made since the
        last pass (they then wait in the kernel's backlog, as with waitress)."""
        server = self.server
        now = time.time()
        if now >= server.next_channel_cleanup:
            server.next_channel_cleanup = now + server.adj.cleanup_interval
            server.maintenance(now)
        return server.accepting and (
            not self.no_room or len(server._map) < server.adj.connection_limit)

    def accept(self):
        """Accept what waits, refusing connections beyond their address' share, and
        at connection_limit closing one that does least for anyone for each one taken.
        Up to 64 at a time: waitress takes one a loop turn, and under a flood of
        connects the kernel's backlog would fill, where a new client waits unseen."""
        server = self.server
        try:
            for _ in range(64):
                room = None
                if len(server._map) - len(self.leaving) >= server.adj.connection_limit:
                    room = self.room()
                    if room is None:  # all being answered: the next pass looks again
                        self.no_room = True
                        return
                try:
                    accepted = server.accept()
                except OSError:  # e.g. out of descriptors: try again next turn
                    return
                if accepted is None:
                    return
                conn, addr = accepted
                key = self.address_of(addr[0]) if isinstance(addr, tuple) else None
                peers = None
                if key is not None:
                    peers = self.open.setdefault(key, set())
                    if len(peers) >= self.per_address:
                        peers.difference_update([c for c in peers if c.socket is None])
                        if len(peers) >= self.per_address:
                            self.refuse(conn, key)  # nobody is closed for it
                            continue
                if room is not None:
                    self.leaving.append(self.idle.pop()[2])
                try:  # an error here would reach wasyncore, which closes the listener
                    server.set_socket_options(conn)
                    channel = server.channel_class(server, conn, server.fix_addr(addr),
                                                   server.adj, map=server._map)
                except OSError:  # the client left already
                    conn.close()
                    continue
                if peers is not None:
                    peers.add(channel)
        finally:
            self.make_room()

    def refuse(self, conn, key):
        try:  # a reset, not a close: nothing lingers in TIME_WAIT by the thousand
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        conn.close()
        self.refused[key] += 1

    def room(self):
        """The connection to close for a new one at connection_limit, or None when
        every connection is doing something: first the one that has asked nothing
        the longest since it connected, or trickled its request the longest (past
        ROOM_GRACE), then the one idle longest since its last answer; never one
        whose request a thread answers, or whose answer is being sent. HTTP lets a
        server close an idle keep-alive connection whenever it likes: its client
        opens another (a browser sends its request again by itself).

        Ranked ROOM_AT_ONCE at a time (one pass over the connections, ~2 us each),
        then taken from that list while each is as it was when ranked, and has no
        bytes waiting to be read (a request this loop has not read yet)."""
        while True:
            while self.idle:
                _rank, _n, channel, partial, answer = self.idle[-1]
                if (channel.socket is not None and not channel.requests
                        and not channel.total_outbufs_len and channel.request is partial
                        and channel.outbufs[-1] is answer and not _bytes_waiting(channel)):
                    return channel
                self.idle.pop()
            leaving, now = set(self.leaving), time.time()
            ranked = [(rank, n, channel, channel.request, channel.outbufs[-1])
                      for n, channel in enumerate(list(self.server.active_channels.values()))
                      if channel not in leaving
                      and (rank := self.rank(channel, now)) is not None]
            self.idle = sorted(heapq.nsmallest(self.ROOM_AT_ONCE, ranked), reverse=True)
            if not self.idle:
                return None

    def rank(self, channel, now):
        """Where `channel` stands among those room() may close, the least first, or
        None while it is used: (0, since) when it has asked nothing since it
        connected, or has been sending its request, for over ROOM_GRACE (a request
        was due at once); (1, since) for the others, idle since their last answer, or
        new. Its last answer's and partial request's times are those the last
        maintenance pass saw (close_stalled); one not yet seen counts as new."""
        if channel.requests or channel.total_outbufs_len:
            return None
        if channel.will_close or channel.close_when_flushed:
            return 0, -math.inf  # it closes on the loop's next turn anyway
        before, partial = self.seen.get(channel), channel.request
        if partial is not None:
            since = before[1] if before and before[0] is partial else now
        elif not channel.current_outbuf_count:
            since = channel.creation_time
        else:
            return 1, (before[3] if before and before[2] is channel.outbufs[-1]
                       else channel.last_activity)
        return (0 if now - since > self.ROOM_GRACE else 1), since

    def make_room(self):
        """Close the connections accept() chose (room()) for those it took. Only after
        them: a descriptor closed before an accept() would be the new connection's
        number, and this turn's poll() answer for the old one would be read as its."""
        leaving, self.leaving = self.leaving, []
        for channel in leaving:
            with channel.requests_lock:  # a thread ending its answer holds it meanwhile
                if channel.requests or channel.socket is None:
                    continue
                if channel.request is not None or not channel.current_outbuf_count:
                    # It never asked for anything, or sends its request byte by byte:
                    # a reset, as refuse(). An idle keep-alive one gets a plain close.
                    with contextlib.suppress(OSError):
                        channel.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                  struct.pack("ii", 1, 0))
                channel.handle_close()
            self.made_room += 1

    def close_stalled(self, now):
        """Waitress' maintenance pass (every cleanup_interval, replacing its own): close
        the connections whose client keeps them without using them, forget closed ones.

        Idleness is judged by answers, not by bytes: a client sending a blank line now
        and then (an empty request, which waitress skips) is never idle by its bytes.
        An answer leaves a new buffer at the end of channel.outbufs (waitress starts
        one for each response), so comparing it between passes costs nothing per request.
        """
        timeout = self.server.adj.channel_timeout
        seen, self.seen = self.seen, {}
        for channel in list(self.server.active_channels.values()):
            if channel.requests:  # being answered: the application's time, not the client's
                continue
            if channel.total_outbufs_len:  # an answer being sent: is the client reading?
                overdue = channel.last_activity < now - timeout
            else:
                partial, answer = channel.request, channel.outbufs[-1]
                before = seen.get(channel)
                partial_since = before[1] if before and before[0] is partial else now
                answered_at = before[3] if before and before[2] is answer else \
                    channel.last_activity
                self.seen[channel] = (partial, partial_since, answer, answered_at)
                if not channel.current_outbuf_count:  # never answered: a request is due
                    overdue = now - channel.creation_time > REQUEST_DEADLINE
                else:  # keep-alive: the next request may take channel_timeout to start
                    overdue = now - answered_at > timeout + (
                        REQUEST_DEADLINE if partial is not None else 0)
                if partial is not None and now - partial_since > REQUEST_DEADLINE:
                    overdue = True
            if overdue:
                channel.will_close = True
        for key in list(self.open):
            peers = self.open[key]
            peers.difference_update([c for c in peers if c.socket is None])
            if not peers:
                del self.open[key]
        self.idle, self.no_room = [], False  # ranked again with what this pass saw
        if (self.refused or self.made_room) and now - self.warned_at >= self.WARN_EVERY:
            self.warn_refused(now)

    def warn_refused(self, now):
        if self.refused:
            worst = ", ".join(f"{count} from {key}"
                              for key, count in self.refused.most_common(3))
            more = len(self.refused) - 3
            log.warning("refused %d connections (%s%s): an address may hold %d at once "
                        "(--max-connections-per-ip)", sum(self.refused.values()), worst,
                        f", and {more} more addresses" if more > 0 else "",
                        self.per_address)
        if self.made_room:
            log.warning("closed %d connections, idle or sending a request byte by byte, "
                        "to let new ones in: all %d places were taken (the connection "
                        "limit)", self.made_room, self.server.adj.connection_limit)
        self.refused.clear()
        self.made_room = 0
        self.warned_at = now


def request_lane(method, path):
    """The lane a request is answered in (OFFICE_LANES): "popup" (the --threads) for
    /popup and /health only; every other route, a new one included, is the office's:
    a POST a form's, anything else a page's, unless named here."""
    if path in ("/popup", "/health"):
        return "popup"
    if path == "/cdr":
        return "cdr"
    if path == "/login" and method == "POST":
        return "login"
    if path == "/calls.csv":
        return "export"
    if path == "/callback" and method == "POST":
        return "callback"
    if method == "POST":
        return "form"
    return "office"


#: Set while a lane answers a request that waited too long: office_or_busy() then
#: answers "busy" instead of running the route.
_lane_turn = threading.local()


class _Lane:
    """Threads of their own for one lane's requests, and a queue. A request that waits
    longer than `wait` for one of them is taken by the lane's doorman thread and
    answered "busy" (office_busy_page(), or a CDR's Err), never left waiting however long
    the lane's work takes. Each queued item is a waitress channel: servicing it
    answers its first request."""

    WARN_EVERY = 60  # seconds between warnings about requests answered "busy"

    def __init__(self, name, threads, wait):
        self.name, self.wait = name, wait
        self.queue = collections.deque()  # (channel, queued at)
        self.ready = threading.Condition()
        self.stopping = False
        self.turned_away, self.warned_at = 0, 0.0
        self.threads = [threading.Thread(target=self._work, name=f"{name}-{n}",
                                         daemon=True) for n in range(threads)]
        self.threads.append(threading.Thread(target=self._turn_away,
                                             name=f"{name}-doorman", daemon=True))
        for thread in self.threads:
            thread.start()

    def add_task(self, channel):
        with self.ready:
            self.queue.append((channel, time.monotonic()))
            self.ready.notify_all()  # a worker, and the doorman's clock

    def _work(self):
        while True:
            with self.ready:
                while not self.queue and not self.stopping:
                    self.ready.wait()
                if self.stopping:
                    return
                channel, queued_at = self.queue.popleft()
            self._service(channel, time.monotonic() - queued_at > self.wait)

    def _turn_away(self):
        while True:
            with self.ready:
                while not self.stopping:
                    late = self.queue[0][1] + self.wait - time.monotonic() \
                        if self.queue else None
                    if late is not None and late <= 0:
                        break
                    self.ready.wait(late)
                if self.stopping:
                    return
                channel, _queued_at = self.queue.popleft()
            self._service(channel, True)

    def _service(self, channel, busy):
        if busy:
            self._count_turned_away()
        _lane_turn.busy = busy
        try:
            channel.service()
        except BaseException:  # as waitress' own threads do: the next request goes on
            log.exception("unexpected error answering a request")
        finally:
            _lane_turn.busy = False

    def _count_turned_away(self):
        with self.ready:
            self.turned_away += 1
            now = time.monotonic()
            if now - self.warned_at < self.WARN_EVERY:
                return
            count, self.turned_away, self.warned_at = self.turned_away, 0, now
        log.warning("%d requests of the office's %r lane waited over %g s for it and "
                    "were answered \"busy\" (since the last such warning)", count,
                    self.name, self.wait)

    def stop(self):
        with self.ready:
            self.stopping = True
            pending = [channel for channel, _ in self.queue]
            self.queue.clear()
            self.ready.notify_all()
        for channel in pending:
            channel.cancel()


class TaskRouter:
    """Waitress' task dispatcher, split in lanes (request_lane()): pop-ups and /health
    on waitress' own pool of --threads, the office's work in OFFICE_LANES. Waitress
    hands over a connection each time one of its requests is due (one at a time, in
    order), so every request is routed by its own path, pipelined ones included, and
    no office request ever takes, or queues in front of, a pop-up's thread."""

    def __init__(self, threads, lanes=OFFICE_LANES):
        import waitress.task
        self.popup = waitress.task.ThreadedTaskDispatcher()
        self.popup.set_thread_count(threads)
        self.lanes = {name: _Lane(name, count, wait)
                      for name, (count, wait) in lanes.items()}

    def add_task(self, channel):
        request = channel.requests[0]
        lane = "popup" if request.error else request_lane(
            getattr(request, "command", None), getattr(request, "path", None))
        (self.popup if lane == "popup" else self.lanes[lane]).add_task(channel)

    def set_thread_count(self, count):
        self.popup.set_thread_count(count)

    def shutdown(self, cancel_pending=True, timeout=5):
        for lane in self.lanes.values():
            lane.stop()
        return self.popup.shutdown(cancel_pending, timeout)


def office_or_busy(app, config):
    """`app`, except for a request its lane found waiting too long (_Lane): that one
    is answered at once, without running its route: a CDR with a non-zero Err in both
    spellings (Voicenter sends it again), anything else with office_busy_page()."""
    def answer(environ, start_response):
        if not getattr(_lane_turn, "busy", False):
            return app(environ, start_response)
        if environ.get("PATH_INFO") == "/cdr":
            message = "busy with other office work; send it again"
            body = _json_bytes({"Err": 1, "err": 1, "Errdesc": message,
                                "errdesc": message, "STATUS": "ERROR",
                                "MESSAGE": message})
            status, headers = 503, [("Content-Type", JSON_TYPE),
                                    ("Retry-After", str(BUSY_RETRY))]
        else:
            status, headers, body = office_busy_page(
                environ.get("HTTP_ACCEPT_LANGUAGE"), config.lang,
                posted=environ.get("REQUEST_METHOD") not in ("GET", "HEAD"))
            headers = list(headers.items())
        start_response(f"{status} Service Unavailable",
                       headers + [("Content-Length", str(len(body)))])
        return [body]
    return answer


def _render_waitress_errors_as_json():
    """Answer the errors waitress itself raises (a body over the limit, a malformed
    request line, headers too large) in the same JSON as the app's own, so that a
    client never sees a text/plain error page from this server."""
    import waitress.utilities

    def to_response(error, ident=None):
        message = f"{error.reason}: {error.body}"
        # Err too: this comes before any route is chosen, and a CDR sender (POST /cdr)
        # reads only Err; a pop-up client reads only STATUS.
        body = _json_bytes({**_cdr_refusal(error.code, message),
                            "STATUS": "ERROR", "MESSAGE": message})
        return f"{error.code} {error.reason}", [("Content-Type", JSON_TYPE)], body
    waitress.utilities.Error.to_response = to_response


#: The waitress releases the patches in this section were written against (3.0.2).
_WAITRESS_SERIES = "3.0."
#: (module, class, names) of waitress that the patches read or replace: each a class
#: attribute, or an attribute some __init__ of the class sets.
_WAITRESS_INTERNALS = (
    ("waitress.channel", "HTTPChannel", (
        "writable", "will_close", "close_when_flushed", "total_outbufs_len", "requests",
        "outbuf_lock", "outbufs", "current_outbuf_count", "creation_time",
        "last_activity", "request", "socket")),
    ("waitress.server", "BaseWSGIServer", (
        "handle_accept", "maintenance", "accept", "set_socket_options", "channel_class",
        "fix_addr", "adj", "_map", "active_channels", "readable", "accepting",
        "next_channel_cleanup")),
    ("waitress.utilities", "Error", ("to_response", "code", "reason", "body")),
    ("waitress.channel", "HTTPChannel", (
        "service", "cancel", "write_soon", "_flush_outbufs_below_high_watermark",
        "requests_lock", "handle_close")),
    ("waitress.parser", "HTTPRequestParser", ("error", "close")),
    ("waitress.task", "ThreadedTaskDispatcher", (
        "set_thread_count", "add_task", "shutdown")),
)


def waitress_differences(version=None, internals=_WAITRESS_INTERNALS):
    """How the installed waitress (or `version`) differs from what the patches here rely
    on; empty when they may be applied. A changed internal would more likely stall
    answers than raise, so anything unexpected means stock waitress instead."""
    import importlib
    import importlib.metadata
    import inspect
    version = version or importlib.metadata.version("waitress")
    differences = [] if version.startswith(_WAITRESS_SERIES) else [
        f"waitress {version}, not {_WAITRESS_SERIES}x"]
    if "_dispatcher" not in inspect.signature(
            importlib.import_module("waitress.server").create_server).parameters:
        differences.append("create_server() takes no _dispatcher")
    for module_name, class_name, names in internals:
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if cls is None:
            differences.append(f"{module_name}.{class_name} is gone")
            continue
        sources = []
        for klass in cls.__mro__:
            with contextlib.suppress(OSError, TypeError):
                sources.append(inspect.getsource(klass.__dict__.get("__init__", object)))
        missing = [name for name in names if not hasattr(cls, name) and not any(
            re.search(rf"self\.{re.escape(name)}\s*=", source) for source in sources)]
        if missing:
            differences.append(f"{class_name} has no {', '.join(missing)}")
    return differences


def create_server(app, config):
    """A waitress server for `app`, with waitress_settings(), and, when waitress_differences()
    finds none, JSON errors, the lanes (TaskRouter: the office never takes a pop-up's
    thread), the quiet channel and a ConnectionGuard for each address it listens on."""
    import waitress.server
    differences = waitress_differences()
    if differences:
        log.warning("serving with stock waitress: pop-ups share their threads with the "
                    "office's pages, no per-address connection limit, no request "
                    "deadline, plain-text errors from waitress (%s)",
                    "; ".join(differences))
        return waitress.server.create_server(app, **waitress_settings(config))
    _render_waitress_errors_as_json()
    server = waitress.server.create_server(
        office_or_busy(app, config), _dispatcher=TaskRouter(config.threads),
        **waitress_settings(config))
    # One server, or a MultiSocketServer whose map holds one per address (--host localhost)
    listeners = [server] if isinstance(server, waitress.server.BaseWSGIServer) else [
        item for item in server.map.values()
        if isinstance(item, waitress.server.BaseWSGIServer)]
    channel_class = _quiet_channel_class()
    for listener in listeners:
        listener.channel_class = channel_class  # the accept handler makes these
        ConnectionGuard(listener, config)
    return server


def serve(app, config, holder, made_password=None):
    """Serve `app` with waitress until interrupted; the start-up ends with
    setup_lines()."""
    server = create_server(app, config)
    port = server.effective_port if hasattr(server, "effective_port") else \
        server.effective_listen[0][1]
    log.info("serving %d contacts on %s:%s", holder.index.contacts, config.host, port)
    if not config.token:
        log.warning("the token check is OFF: anyone who can reach port %s can look up "
                    "contacts; set --token or remove the empty POPUP_TOKEN", port)
    log.info("times on the pages are %s's (--timezone)", zone_name(config.timezone))
    log.info("status: http://%s:%s/health", "127.0.0.1" if config.host in ("0.0.0.0", "")
             else config.host, port)
    log.info("\n".join(setup_lines(config, port, made_password)))
    try:
        server.run()
    finally:
        server.close()


###############################################################################
# The command line ############################################################
###############################################################################
# --check, the password command and main().


def _run_check(config):
    """Print how each source loads (a link is downloaded afresh and kept nowhere), and
    with several, the total; the worst outcome decides the exit status."""
    status, indexes = ExitStatus.SUCCESS, []
    additions = kept_additions(config)
    locations = [*config.sources, *additions]
    several = len(locations) > 1
    with tempfile.TemporaryDirectory(prefix="popup-check-") as downloads:
        for location in locations:
            source = make_source(location, config, downloads, options=additions_options(
                config) if location in additions else None)
            if several:
                print(f"== {source.name}")
            try:
                index = source.check_index()
            except ContactsFileError as error:
                print(f"popup_server: {error}", file=sys.stderr)
                status = ExitStatus.ERROR
                continue
            print("\n".join(source.report_lines(index)))
            try:
                source.required(index)
            except ContactsFileError as error:
                print(f"popup_server: {error}", file=sys.stderr)
                status = max(status, ExitStatus.NO_CONTACTS)
                continue
            indexes.append(index)
    if several:
        merged = merge_indexes(indexes) if indexes else None
        print(f"== in total: {merged.contacts if merged else 0} contacts can be found "
              f"in {len(indexes)} of {len(locations)} sources, "
              f"{merged.numbers if merged else 0} distinct numbers")
    return status


def _stop_on_sigterm():
    import signal

    def stop(signum, frame):
        # Once: a second SIGTERM must not cut short the writing of the queued calls.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt  # ends waitress' run(), so that everything closes cleanly
    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (tests calling main())
        pass


def set_office_password(argv, environ, stdin=None):
    """`popup-server password [options]`: a new office password from the terminal
    (asked twice, not shown) or the first line of stdin (for scripts), kept hashed in
    the state folder the same options name. Every session ends, a running server's
    too (it reads the file again within a second)."""
    stdin = sys.stdin if stdin is None else stdin
    try:
        config = parse_config(argv, environ)
        if config.office_password is not None:
            raise ConfigError("the office password is given by --office-password (or "
                              "POPUP_OFFICE_PASSWORD, or the config file): change it "
                              "there; this command sets the one kept in the state folder")
        if stdin.isatty():
            import getpass
            password = getpass.getpass("New office password: ")
            if getpass.getpass("The same again: ") != password:
                raise ConfigError("the two passwords differ; nothing was changed")
        else:
            password = stdin.readline().rstrip("\r\n")
        if len(password) < MIN_PASSWORD_LENGTH or not password.isprintable():
            raise ConfigError(f"a password has at least {MIN_PASSWORD_LENGTH} characters "
                              "(letters, digits, spaces, signs); nothing was changed")
        folder = _owner_only_folder(config.state_path)
        _refuse_a_folder_of_another_user(folder)
        path = folder / PASSWORD_FILE_NAME
        partial = folder / f".{PASSWORD_FILE_NAME}.{os.getpid()}.new"
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        _make_secret_file(partial, hash_password(password), PASSWORD_FILE)
        # Whole or not at all, a server reading it sees one or the other; a symbolic
        # link in its place is replaced, never followed.
        os.replace(partial, path)
    except PopupError as error:
        print(f"popup_server: {error}", file=sys.stderr)
        return ExitStatus.ERROR
    except OSError as error:
        print(f"popup_server: {config.state_path}: cannot keep the password there "
              f"({error.strerror or error}); pass --state-dir", file=sys.stderr)
        return ExitStatus.ERROR
    print(f"The office password is changed (only its hash is kept, in {path}).\n"
          "Every browser signed in must sign in again with it; a running server takes "
          "it within a second.")
    return ExitStatus.SUCCESS


def _refuse_a_folder_of_another_user(folder):
    """A ConfigError when the state folder is another user's (a service's, and this
    is root): a password file written by this user would be its own, mode 600, and
    the server could not read it."""
    owner = None if os.name == "nt" else folder.stat().st_uid
    if owner is None or owner == os.geteuid():
        return
    try:
        import pwd
        owner = pwd.getpwuid(owner).pw_name
    except (ImportError, KeyError):
        pass
    raise ConfigError(f"{folder}: the state folder belongs to user {owner}, whose server "
                      "could not read a password file this user writes; run this command "
                      f"as that user: sudo -u {owner} {_command_name()} password "
                      f"--state-dir {folder}")


def _start_calls(config):
    """(the CallRecorder, the CallLogPuller) the configuration asks for, started (None
    for either it does not): the calls of an older version's folder adopted first."""
    recorder = call_log = None
    adopt_old_calls(config)
    if config.calls_path is not None:
        recorder = CallRecorder(config.calls_path, config.calls_keep_days,
                                region=config.region).start()
        log.info("recording calls in %s (kept %d days)", config.calls_path,
                 config.calls_keep_days)
    if config.voicenter_code and config.call_log_every:
        if recorder is None:
            log.warning("Voicenter's Call Log is not pulled: calls are not recorded "
                        "(--calls-db \"\")")
        else:
            call_log = CallLogPuller(config, recorder.path).start()
            log.info("pulling Voicenter's Call Log every %d s into %s",
                     config.call_log_every, recorder.path)
    return recorder, call_log


def main(argv=None, environ=None):
    """Run the program; returns the exit status."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["password"]:
        return set_office_password(argv[1:], environ)
    try:
        config = parse_config(argv, environ)
    except ConfigError as error:
        print(f"popup_server: {error}", file=sys.stderr)
        return ExitStatus.ERROR
    if config.check:
        return _run_check(config)
    # What the server writes (calls, downloads, additions) holds callers' numbers and
    # contacts: its owner's only, even in a state folder others may read.
    os.umask(0o077)
    log_output = _configure_logging()
    tune_for_loading()
    state_lock = None
    try:
        state_lock = hold_state(config)  # before anything is read or made: at once
        adopt_port_folder(config)
        holder = ContactsHolder(config)
        log.info("state folder: %s", config.state_path)
        page_secret, password_hash, made_password = open_state(config)
        revoked = RevokedSessions.open(config.state_path / REVOKED_SESSIONS_NAME,
                                       password_tag(page_secret, password_hash))
        config = dataclasses.replace(config, token=resolve_token(config))
    except PopupError as error:
        if state_lock is not None:
            state_lock.close()
        log_output.close()  # the lines logged so far first: the error ends the output
        print(f"popup_server: {error}", file=sys.stderr)  # one line, no traceback
        return ExitStatus.ERROR
    recorder, call_log = _start_calls(config)
    access_log = AccessLog(log_output, config.log_numbers)
    additions = Additions(config.state_path / ADDITIONS_FILE_NAME, holder).start()
    password_file = config.state_path / PASSWORD_FILE_NAME \
        if config.office_password is None else None
    app = create_app(config, holder, recorder, access_log, page_secret, password_hash,
                     additions, call_log, revoked=revoked, password_file=password_file)
    tune_for_serving()
    _stop_on_sigterm()
    try:
        with access_log, holder.watching():
            # Returns on SIGTERM or Ctrl-C (waitress' run() takes the KeyboardInterrupt).
            serve(app, config, holder, made_password)
        log.info("stopped")
    except KeyboardInterrupt:
        log.info("stopped")
    except OSError as error:
        log_output.close()  # as above: the error ends the output
        print(f"popup_server: cannot listen on {config.host}:{config.port}: "
              f"{error.strerror or error}", file=sys.stderr)
        if made_password:  # its hash is kept: this is the only time it can be shown
            print(f"popup_server: the office password made for the pages: {made_password}",
                  file=sys.stderr)
        return ExitStatus.ERROR
    finally:
        if call_log is not None:
            call_log.close()
        if recorder is not None:
            recorder.close()
        state_lock.close()  # the folder is free for the next server only now
    return ExitStatus.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
