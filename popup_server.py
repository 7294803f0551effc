#!/usr/bin/env python3
"""popup-server: pop up the caller's details from the office's contacts file.

Voicenter calls a URL of your choosing on every phase of an incoming call (Ringing,
Answer, Hangup); this server answers with the caller's name, company and CRM link,
looked up in a CSV or Excel file of contacts that it loads at start-up and reloads
whenever the file changes.

Run it:
    python popup_server.py [CONTACTS_FILE] [options]      (python popup_server.py --help)
    python popup_server.py contacts.xlsx --check          (report how the file loads)

Endpoints:
    GET|POST /popup   the pop-up answer: {"STATUS", "TOTAL", "CLIENTNAME", "COMPANY", "URL"}
    GET /health       load status for monitors (never contact data, never a token)
    GET / or /calls   the day's calls, missed first (HTML); /calls.csv?day=YYYY-MM-DD

Every option has an environment variable, POPUP_ + the option's name in capitals
(POPUP_CONTACTS, POPUP_HOST, POPUP_PORT, POPUP_REGION, POPUP_URL_TEMPLATE,
POPUP_NO_MATCH_URL, POPUP_MATCH_DIGITS, POPUP_ENCODING, POPUP_DELIMITER, POPUP_SHEET,
POPUP_NAME_COLUMN, POPUP_COMPANY_COLUMN, POPUP_PHONE_COLUMNS, POPUP_URL_COLUMN,
POPUP_TOKEN, POPUP_TOKEN_FILE, POPUP_ALLOW_IP, POPUP_TRUSTED_PROXY, POPUP_MAX_BODY,
POPUP_RELOAD_INTERVAL, POPUP_LOG_NUMBERS, POPUP_THREADS, POPUP_CALLS_DB,
POPUP_CALLS_KEEP_DAYS); a flag on the command line wins over its variable.
"""
from __future__ import annotations

import argparse
import atexit
import bisect
import codecs
import collections
import contextlib
import ctypes
import csv
import dataclasses
import datetime as dt
import errno
import functools
import gc
import hmac
import io
import ipaddress
import json
import logging
import os
import random
import re
import secrets
import socket
import sqlite3
import stat
import sys
import threading
import time
import types
import typing
from pathlib import Path
from urllib.parse import quote, unquote

import bottle
import numpy as np
import pandas as pd
import phonenumbers

log = logging.getLogger("popup_server")

###############################################################################
# Constants and messages #####################################################
###############################################################################

HERE = Path(__file__).resolve().parent
DEFAULT_CONTACTS = HERE / "data" / "contacts.csv"
#: Bottle caches compiled templates by the identity of this list: one list, one cache.
VIEWS = [str(HERE / "views")]
TOKEN_FILE_NAME = ".popup-token"
ENV_PREFIX = "POPUP_"

#: A caller id with fewer digits than this is an extension or junk, never looked up;
#: a cell with fewer is reported as "too short" rather than indexed.
MIN_NUMBER_DIGITS = 5
#: E.164 allows 15 digits; longer runs of digits are not one phone number.
MAX_NUMBER_DIGITS = 15
#: How many lines of skipped rows / unusable numbers --check and the log show.
REPORT_LIMIT = 20

WITHHELD_CALLER_IDS = frozenset(
    {"anonymous", "restricted", "private", "unknown", "unavailable", "withheld",
     "blocked", "no caller id", "חסום", "חסוי", "פרטי", "לא ידוע"})


#: Request fields that URL templates may use; values come from the request as sent.
REQUEST_PLACEHOLDERS = ("phone", "e164", "ivrid", "did", "extenUser", "status")
#: Template placeholders filled from the matched contact.
CONTACT_PLACEHOLDERS = ("name", "company")

#: A browser (Voicenter's Chrome extension) may call /popup: every answer allows any
#: origin (the token guards access); the preflight also names methods and headers.
CORS_ORIGIN = ("Access-Control-Allow-Origin", "*")
CORS_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, X-Popup-Token",
    "Access-Control-Max-Age": "600",
}
JSON_TYPE = "application/json; charset=utf-8"

###############################################################################
# Errors ######################################################################
###############################################################################


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
# Configuration ###############################################################
###############################################################################
# To add an option: add a field to Config, an Option to OPTIONS (its flag, help and
# example), and a line to the module docstring. The environment variable, --help
# text and precedence (flag > variable > default) follow from the Option.


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


def _flag(text):
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1/0, true/false, yes/no or on/off")


@dataclasses.dataclass(frozen=True)
class Option:
    flag: str
    help: str
    example: str = ""
    parse: object = str
    default: object = None
    repeatable: bool = False
    switch: bool = False

    @property
    def dest(self):
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self):
        return ENV_PREFIX + self.dest.upper()


OPTIONS = (
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
    Option("--encoding", "encoding of a text file, when the guess (BOM, UTF-8, "
           "Windows-1255) is wrong", "windows-1255", _encoding),
    Option("--delimiter", "column separator of a text file, when the guess is wrong: "
           ", ; | or tab", "';'", _delimiter),
    Option("--sheet", "sheet of an .xlsx file to read (default: the first)", "Contacts"),
    Option("--name-column", "column holding the name; join several with +",
           "'First Name+Last Name'"),
    Option("--company-column", "column holding the company", "'Organization Name'"),
    Option("--phone-columns", "the only columns to index as phone numbers, "
           "comma-separated", "'Mobile Phone,Business Phone'", _columns, ()),
    Option("--url-column", "column holding a per-contact link (wins over --url-template)",
           "'CRM Link'"),
    Option("--token", "secret that /popup requires as ?token=... or an X-Popup-Token "
           "header; without one a token is made and kept in --token-file; an empty "
           "value turns the check off", "'s3cret-long-random'"),
    Option("--token-file", "where the generated token is kept (default: .popup-token "
           "beside the contacts file)", "/etc/popup-server/token", Path),
    Option("--allow-ip", "serve only clients from this address or CIDR range "
           "(repeat for several)", "203.0.113.0/24", _network, repeatable=True),
    Option("--trusted-proxy", "believe X-Forwarded-For only from this proxy address or "
           "range (repeat for several)", "127.0.0.1", _network, repeatable=True),
    Option("--max-body", "largest request body accepted, in bytes", "65536",
           _int_between(1024, 16 * 1024 * 1024), 64 * 1024),
    Option("--reload-interval", "seconds between checks of the contacts file for "
           "changes", "1", _positive_float, 1.0),
    Option("--log-numbers", "log callers' full numbers (default: last 3 digits only)",
           parse=_flag, default=False, switch=True),
    Option("--threads", "worker threads answering requests (more do not help: "
           "answers take microseconds and Python runs one thread at a time)", "4",
           _int_between(1, 256), 4),
    Option("--calls-db", "SQLite file recording calls for the calls page; empty turns "
           "recording off (default: data/calls.sqlite beside the program)",
           "/var/lib/popup-server/calls.sqlite"),
    Option("--calls-keep-days", "days of calls to keep", "90",
           _int_between(1, 3650), 90),
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the program was told, built once by parse_config()."""

    contacts: Path = DEFAULT_CONTACTS
    host: str = "0.0.0.0"
    port: int = 8080
    region: str = "IL"
    url_template: str = ""
    no_match_url: str = ""
    match_digits: int = 9
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    name_column: str | None = None
    company_column: str | None = None
    phone_columns: tuple = ()
    url_column: str | None = None
    token: str | None = None          # None: not configured (one is generated); "": off
    token_file: Path | None = None
    allow_ip: tuple = ()
    trusted_proxy: tuple = ()
    max_body: int = 64 * 1024
    reload_interval: float = 1.0
    log_numbers: bool = False
    threads: int = 4
    calls_db: str | None = None       # None: the default file; "": recording off
    calls_keep_days: int = 90
    check: bool = False

    def load_options(self):
        """The keyword arguments of load_index() that this configuration sets."""
        return dict(region=self.region, encoding=self.encoding, delimiter=self.delimiter,
                    sheet=self.sheet, name_column=self.name_column,
                    company_column=self.company_column,
                    phone_columns=list(self.phone_columns) or None,
                    url_column=self.url_column, match_digits=self.match_digits,
                    keep_columns=template_columns(self.url_template))

    @property
    def token_path(self):
        return self.token_file or self.contacts.parent / TOKEN_FILE_NAME

    @property
    def calls_path(self):
        if self.calls_db == "":
            return None
        return Path(self.calls_db) if self.calls_db else HERE / "data" / "calls.sqlite"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=100)


def build_parser(environ):
    """The argument parser; defaults come from `environ`, so a flag wins over its variable."""
    parser = argparse.ArgumentParser(
        prog="popup_server.py", formatter_class=_HelpFormatter,
        description="Answer Voicenter's pop-up requests from a CSV or Excel contacts file.",
        epilog=_help_epilog())
    parser.add_argument(
        "contacts", nargs="?", type=Path, metavar="CONTACTS_FILE",
        default=Path(environ["POPUP_CONTACTS"]) if environ.get("POPUP_CONTACTS")
        else DEFAULT_CONTACTS,
        help="contacts file: .csv, .txt, .tsv or .xlsx "
             "(default: data/contacts.csv beside the program) [env POPUP_CONTACTS]")
    for option in OPTIONS:
        default = _env_default(option, environ)
        shown = option.default if option.default not in (None, "", ()) else None
        text = option.help
        if shown is not None and not option.switch:
            text += f" (default: {shown})"
        text += f" [env {option.env}]"
        if option.example:
            text += f"  e.g. {option.flag} {option.example}"
        if option.switch:
            parser.add_argument(option.flag, action="store_const", const=True,
                                default=default, help=text)
        elif option.repeatable:
            parser.add_argument(option.flag, action="append", type=option.parse,
                                default=None, metavar=option.dest.upper(), help=text)
            parser.set_defaults(**{option.dest + "_from_env": default})
        else:
            parser.add_argument(option.flag, type=option.parse, default=default,
                                metavar=option.dest.upper(), help=text)
    parser.add_argument("--check", action="store_true",
                        help="load the file exactly as the server would, print a report "
                             "of what was found and exit (0 when contacts can be found)")
    return parser


def _env_default(option, environ):
    if option.env not in environ:
        return option.default
    raw = environ[option.env]
    if option.dest in ("token", "calls_db"):
        return raw  # set but empty is meaningful: the feature is off
    if raw == "" and not option.switch:
        return option.default
    try:
        if option.repeatable:
            return tuple(option.parse(part) for part in re.split(r"[\s,]+", raw) if part)
        return option.parse(raw)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{option.env}={raw!r}: {error}") from None


def _help_epilog():
    return ("examples:\n"
            "  python popup_server.py                        serve data/contacts.csv on "
            "port 8080\n"
            "  python popup_server.py contacts.xlsx --check  show how a file loads, "
            "then exit\n"
            "  POPUP_PORT=9000 python popup_server.py ~/Desktop/contacts.csv\n\n"
            "Give Voicenter the URL printed at start-up: http://HOST:PORT/popup?token=...")


def parse_config(argv=None, environ=None):
    """Build the Config from command-line words and an environment mapping."""
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    values = {}
    for field in dataclasses.fields(Config):
        if hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
    for option in OPTIONS:
        if option.repeatable:
            given = getattr(args, option.dest)
            values[option.dest] = tuple(given) if given else tuple(
                getattr(args, option.dest + "_from_env") or ())
    config = Config(**values)
    for name in ("url_template", "no_match_url"):
        _check_template(getattr(config, name), name)
    return config


###############################################################################
# Loading a file ##############################################################
###############################################################################

XLSX_SUFFIXES = (".xlsx", ".xlsm")
TEXT_DELIMITERS = (",", ";", "\t", "|")
#: Windows-1255 is the code page Hebrew Windows (and so Outlook and Excel) writes.
LEGACY_ENCODING = "cp1255"
_SNIFF_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class ColumnChoice:
    """Which headers of the file became the name, company, phones and URL."""

    name: tuple = ()
    company: str | None = None
    phones: tuple = ()
    url: str | None = None
    join_names: bool = False  # --name-column A+B: always join, never "A, else B"


#: pandas reads a CSV in blocks of this many rows, and the index is built one block
#: at a time. Converting a block to Python strings holds the GIL: in small blocks a
#: reload never stalls the requests answered meanwhile for more than a few ms, only a
#: block's strings are alive at once, and the whole read is no slower.
_READ_ROWS = 10_000


@dataclasses.dataclass
class Table:
    """A file being read as text: its headers, and its rows in blocks, each block a
    {header: numpy array of str}. `skipped` fills in as the blocks are read."""

    headers: list
    blocks: typing.Iterable
    encoding: str
    delimiter: str | None
    warnings: list
    skipped: list          # (row, reason) for lines the reader could not split
    first_row: int = 2     # the spreadsheet row of the first contact (header above it)

    def keep(self, headers):
        """The same table with only these columns."""
        return dataclasses.replace(self, headers=list(headers), blocks=(
            {h: block[h] for h in headers} for block in self.blocks))


class _ReadAgain(Exception):
    """Reading must start over with other settings (raised while blocks are read)."""

    def __init__(self, **changes):
        super().__init__(changes)
        self.changes = changes


def read_table(path, *, encoding=None, delimiter=None, sheet=None, usecols=None,
               engine="c"):
    """Open a contacts file for reading with every cell as text (`usecols`: headers to
    keep). Its blocks raise _ReadAgain when an encoding guess turns out wrong."""
    path = Path(path)
    _check_readable(path)
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        raise ContactsFileError(path, "the file is empty")
    if head.startswith(b"PK\x03\x04") or path.suffix.lower() in XLSX_SUFFIXES:
        return _read_xlsx(path, sheet, usecols)
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise ContactsFileError(path, "this is an old Excel .xls file; save it as .xlsx "
                                      "or CSV and use that")
    warnings, provisional = [], False
    if encoding is None:
        encoding, warnings, provisional = _detect_encoding(path, head)
    elif codecs.lookup(encoding).name == LEGACY_ENCODING:
        encoding, warnings = "windows-1255", _legacy_encoding(path)[1]
    text_head = head.decode(encoding, errors="ignore")
    if delimiter is None:
        delimiter = _sniff_delimiter(text_head, path.suffix.lower())
    skipped = []
    blocks = _csv_blocks(path, delimiter, encoding, usecols, engine, provisional, skipped)
    return Table([], blocks, encoding, delimiter, warnings, skipped)


def _csv_blocks(path, delimiter, encoding, usecols, engine, provisional, skipped):
    """{header: array of str} blocks read by pandas, every cell as text."""
    options = dict(sep=delimiter, dtype=str, na_filter=False, encoding=encoding,
                   encoding_errors="strict", quotechar='"', usecols=usecols,
                   index_col=False,         # a trailing delimiter must not shift columns
                   skip_blank_lines=False,  # blank rows keep their place: row numbers
                   chunksize=_READ_ROWS, engine=engine)
    if engine == "python":
        def skip(cells):  # a row with more cells than the header: report, don't refuse
            skipped.append((None, f"{len(cells)} cells where the header has fewer: "
                                  f"{_clip(delimiter.join(cells))}"))
        options["on_bad_lines"] = skip
    try:
        with pd.read_csv(path, **options) as reader:
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
        raw = handle.read()
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


def _read_xlsx(path, sheet, usecols):
    import openpyxl  # imported here: only users of .xlsx files pay for it
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
    header_row = next((n for n, row in enumerate(rows) if any(row)), None)
    if header_row is None:
        raise ContactsFileError(path, "the sheet is empty")
    while rows and not any(rows[-1]):
        rows.pop()
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
    return Table(list(columns), blocks, "xlsx", None, [], [], first_row=header_row + 2)


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
    value = getattr(cell, "value", None)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, (int, float)):
        number_format = (getattr(cell, "number_format", "") or "").upper()
        if "E+" in number_format or "E-" in number_format:
            return f"{value:.2E}"  # shown in scientific notation: digits may be gone
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _clean_header(name):
    text = "" if name is None else str(name)
    return text.replace("\ufeff", "").strip()


def _clip(text, width=60):
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# Choosing columns ------------------------------------------------------------
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
        return ColumnChoice(name=name, company=company, phones=phones,
                            url=named(url_column, "--url-column") if url_column else next(
                                (h for h in headers if phrases[h] in _URL_HEADERS), None),
                            join_names=True)
    else:
        name = _choose_name(headers, phrases, exclude=set(phones) | {company})
    if url_column:
        url = named(url_column, "--url-column")
    else:
        url = next((h for h in headers if phrases[h] in _URL_HEADERS), None)
    return ColumnChoice(name=name, company=company, phones=phones, url=url)


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


def _list_headers(headers, limit=12):
    shown = ", ".join(repr(h) for h in headers[:limit])
    return shown + (f", ... ({len(headers)} in all)" if len(headers) > limit else "")


###############################################################################
# Normalising numbers #########################################################
###############################################################################
# One canonical key per number: its E.164 digits as an int (+972 72-277-6772 is
# 972722776772). The reference is phonenumbers.parse() with the default region. It
# costs ~12-30 us a number, so plain digit strings in the home country take a fast
# path that gives the same key; NumberRules says, per form of writing, which first
# two digits and lengths of a national number the fast path may take, and it learns
# that by asking phonenumbers itself on samples of each, so the two cannot drift
# apart when the metadata changes. Everything else (foreign numbers, letters,
# unusual prefixes) goes to phonenumbers.

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
                if not prefix_is_clear(form, head):
                    continue  # e.g. Israel's 0105...: a carrier's international prefix
                fast[form, prefix, length] = all(  # lowest, highest and a random one
                    _reference_e164(template.format(cc=cc, n=n), region) == f"+{cc}{n}"
                    for n in samples[:3])
    return NumberRules(region, country_code, cc, fast)


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
    try:
        number = phonenumbers.parse(text, rules.region)
    except phonenumbers.NumberParseException as error:
        return None, f"not a phone number ({_first_line(error.args[0] if error.args else error)})"
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not 1 + MIN_NUMBER_DIGITS <= len(e164) <= 1 + MAX_NUMBER_DIGITS:
        return None, "not a phone number"
    return int(e164[1:]), None


def cell_keys(cell, rules):
    """Every number in one cell: ([keys], [problems]). Several numbers, extensions
    and Excel's damage are handled here; a cell without digits is simply empty."""
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


def normalize_number(text, region="IL"):
    """The E.164 form ("+972722776772") of one written number, or None."""
    if text is None or _is_withheld(str(text)):
        return None
    key, _ = number_key(str(text), number_rules(_region(region)))
    return None if key is None else f"+{key}"


def _is_withheld(text):
    if text.isdigit():
        return False  # the usual caller id: checked first, it is the hot path
    stripped = text.strip()
    return not stripped or stripped.lower() in WITHHELD_CALLER_IDS or not any(
        ch.isdigit() for ch in stripped)


# The vectorised fast path ----------------------------------------------------
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
# The index ###################################################################
###############################################################################


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


def _e164(key):
    return None if key is None else f"+{key}"


NO_FIELDS = types.MappingProxyType({})  # shared by every contact without template columns


class NumberTable:
    """Distinct keys, each with the first row holding it (in file order) and how many
    rows hold it, laid out as a hash table that one lookup reads in three places.

    Keys are grouped by bucket (key modulo a prime near their count) and sorted within
    it; `directory[b]:directory[b + 1]` is bucket b's span. A lookup reads the
    directory, then a bucket of one or two keys, then that key's packed row and count:
    three cache lines, where a binary search over a million keys touched twenty and
    waited on most of them: between other requests the caches are cold, and a lookup
    cost 7.4 us in Bottle, 4.8 us with this and TextRows (a tight loop hides it: 1 us).
    A crafted file cannot make a bucket slow: bisect runs inside it.

    Plain memoryviews and bisect, not numpy calls, on the request path: numpy's calls
    release and re-take the GIL, which under load made every lookup queue behind
    waitress' main loop (seen with py-spy).
    """

    __slots__ = ("keys", "shared", "_modulus", "_directory", "_keys", "_found")

    def __init__(self, modulus, keys, first_rows, counts):
        """`keys`: distinct, in bucket order (by key % modulus, then key)."""
        self._modulus = modulus
        self.keys = np.asarray(keys, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        self.shared = int((counts > 1).sum())  # numbers held by several contacts
        found = np.asarray(first_rows, dtype=np.int64) << 32
        found |= counts
        directory = np.zeros(modulus + 1,
                             dtype=np.int32 if self.keys.size < 2 ** 31 else np.int64)
        np.cumsum(np.bincount(self.keys % modulus, minlength=modulus), out=directory[1:])
        self._directory = memoryview(directory)
        self._keys, self._found = memoryview(self.keys), memoryview(found)

    @classmethod
    def build(cls, keys, rows):
        """From (key, row) pairs in any order; a row holding a key twice counts once."""
        modulus = _prime_at_least(max(keys.size, 1))  # >= the distinct keys
        keys, rows = _sorted_unique_pairs(keys, rows, modulus)
        distinct = np.ones(keys.size, dtype=bool)
        distinct[1:] = keys[1:] != keys[:-1]
        starts = np.flatnonzero(distinct)
        return cls(modulus, keys[starts], rows[starts],
                   np.diff(np.append(starts, keys.size)))

    def find(self, key):
        """(first row, how many rows) holding `key`; (0, 0) when none does."""
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


@dataclasses.dataclass(frozen=True, eq=False)
class ContactIndex:
    """One loaded file, never changed after it is built: a reload builds a new one.

    Numbers live in two NumberTables (canonical keys, and trailing digits for the
    fallback) of numpy arrays: ~20 bytes a number instead of a Python dict's ~100.
    Text lives in TextRows.
    """

    source: Path
    encoding: str
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
    match_digits: int = 9
    first_row: int = 2   # the spreadsheet row of the first contact
    _numbers: NumberTable = dataclasses.field(repr=False, default=None)
    _suffixes: NumberTable = dataclasses.field(repr=False, default=None)
    _texts: TextRows = dataclasses.field(repr=False, default=None)
    template_headers: tuple = ()  # the file's columns kept for URL templates

    def find(self, caller_id):
        """(row, total, key) for a caller id: the position of the first contact in
        file order holding its number, how many do, and the number's key (None when
        it has none: withheld, or no digits). The one matching rule, shared by
        answer_for() (every request: plain tuples, nothing built) and lookup()."""
        key = None if caller_id is None else number_key(caller_id, self.rules)[0]
        if key is None:
            return 0, 0, None
        row, total = self._numbers.find(key)
        if not total and key >= self._suffix_modulus:
            row, total = self._suffixes.find(key % self._suffix_modulus)
        return row, total, key

    def lookup(self, caller_id):
        """Match(total, first contact in file order, caller's key) for a caller id:
        find() with the contact made whole, for the command line, tests and embedding."""
        row, total, key = self.find(caller_id)
        return Match(total, self.contact(row), key) if total else Match(0, None, key)

    @functools.cached_property
    def _suffix_modulus(self):
        return 10 ** self.match_digits

    def texts_of(self, row):
        """The row's name, company and URL, then a list of its template columns."""
        name, company, url, *kept = self._texts[row]
        return name.strip(), company.strip(), url.strip(), kept

    def contact(self, position):
        name, company, url, kept = self.texts_of(position)
        return Contact(name, company, url, position + self.first_row,
                       dict(zip(self.template_headers, kept)) if kept else NO_FIELDS)


def load_index(path, *, region="IL", encoding=None, delimiter=None, sheet=None,
               name_column=None, company_column=None, phone_columns=None,
               url_column=None, match_digits=9, keep_columns=()):
    """Read a contacts file and build its ContactIndex (pure: no globals, no I/O else).

    Raises ContactsFileError when the file cannot be read or has no phone column. A
    file that loads but where no contact has a usable number gives contacts == 0.
    """
    path = Path(path)
    rules = number_rules(region)
    _check_readable(path)
    xlsx_table = read_table(path, sheet=sheet) if _is_xlsx(path) else None
    headers = xlsx_table.headers if xlsx_table else _read_headers(path, encoding, delimiter)
    choice = choose_columns(headers, name_column=name_column,
                            company_column=company_column, phone_columns=phone_columns,
                            url_column=url_column, path=path)
    if not choice.phones:
        raise ContactsFileError(path, "has no phone column (columns: "
                                      f"{_list_headers(headers)}); name it with "
                                      "--phone-columns")
    keep = _resolve_keep_columns(headers, keep_columns)
    wanted = [h for h in dict.fromkeys(list(choice.name) + [choice.company, choice.url]
                                       + list(choice.phones) + keep) if h]
    if xlsx_table:
        return _build_index(path, xlsx_table.keep(wanted), choice, keep, rules,
                            match_digits)
    settings = dict(encoding=encoding, delimiter=delimiter, engine="c")
    while True:  # at most twice: a wrong encoding guess, then a ragged row
        table = read_table(path, usecols=lambda h: _clean_header(h) in set(wanted),
                           **settings)
        table.headers = wanted
        try:
            return _build_index(path, table, choice, keep, rules, match_digits)
        except _ReadAgain as again:
            settings.update(again.changes)


def _is_xlsx(path):
    if path.suffix.lower() in XLSX_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _read_headers(path, encoding, delimiter):
    """The header row of a text file, read from its first 64 KiB."""
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        raise ContactsFileError(path, "the file is empty")
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return read_table(path)  # refuses it with the reason
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
    if not any(headers):
        raise ContactsFileError(path, "the first row is empty; it must hold the column "
                                      "names")
    return headers


def _resolve_keep_columns(headers, keep_columns):
    by_lower = {h.lower(): h for h in headers}
    return [by_lower[name.lower()] for name in keep_columns if name.lower() in by_lower]


def _build_index(path, table, choice, keep, rules, match_digits):
    """Build the index one block of rows at a time (see _READ_ROWS)."""
    texts = TextRowsBuilder(3 + len(keep))  # name, company, url, then `keep`
    pair_keys, pair_rows, findable = [], [], []
    unusable, skipped = [], []
    count = 0
    for block in table.blocks:
        size = len(next(iter(block.values()))) if block else 0
        keys, rows, has_number = _block_pairs(block, size, count, choice, rules, unusable,
                                              table.first_row)
        pair_keys.append(keys)
        pair_rows.append(rows)
        findable.append(has_number)
        skipped.extend((int(position) + count + table.first_row, "no usable phone number")
                       for position in np.flatnonzero(~has_number)
                       if any(str(values[position]).strip() for values in block.values()))
        companies = block[choice.company] if choice.company else _blank(size)
        names = _names(block, choice, size)
        blank_names = names == ""
        if blank_names.any():
            names = np.where(blank_names, companies, names)  # a company-only contact
        texts.add([names, companies, block[choice.url] if choice.url else _blank(size),
                   *(block[header] for header in keep)])
        count += size
    if count == 0:
        raise ContactsFileError(path, "has no contacts: only a header row")
    keys, rows = np.concatenate(pair_keys), np.concatenate(pair_rows)
    del pair_keys, pair_rows
    numbers = NumberTable.build(keys, rows)
    eligible = keys >= _POW10[match_digits]
    suffixes = NumberTable.build(keys[eligible] % _POW10[match_digits], rows[eligible])
    del keys, rows, eligible
    skipped = sorted(table.skipped + skipped, key=lambda item: (item[0] is None,
                                                                 item[0] or 0))
    return ContactIndex(
        source=path, encoding=table.encoding, delimiter=table.delimiter,
        loaded_at=dt.datetime.now(dt.timezone.utc).astimezone(), columns=choice,
        rows_read=count, contacts=int(sum(int(f.sum()) for f in findable)),
        numbers=int(numbers.keys.size), shared_numbers=numbers.shared,
        skipped=tuple(skipped), unusable=tuple(unusable), warnings=tuple(table.warnings),
        rules=rules, match_digits=match_digits, first_row=table.first_row,
        _numbers=numbers, _suffixes=suffixes, _texts=texts.build(),
        template_headers=tuple(keep))


def _block_pairs(block, size, first_row, choice, rules, unusable, row_base=2):
    """(keys, rows, row has a number) of one block; rows counted from the file's start,
    in file order. Problems with cells are added to `unusable`."""
    extra = []
    # Every phone column of the block in one vectorised call: fewer, larger numpy steps.
    cells = np.concatenate([block[header] for header in choice.phones]) \
        if len(choice.phones) > 1 else block[choice.phones[0]]
    keys, handled, _blank_cells = column_keys(cells, rules)
    for position in np.flatnonzero(~handled):
        found, problems = cell_keys(cells[position], rules)
        column, row = divmod(int(position), size)
        if found:  # the first number in its column, the others beside it
            keys[position] = found[0]
            extra.extend((row, key) for key in found[1:])
        unusable.extend((row + first_row + row_base, choice.phones[column],
                         _clip(str(cells[position])), problem) for problem in problems)
    columns = keys.reshape(len(choice.phones), size)
    matrix = np.ascontiguousarray(columns.T)  # row by row: rows stay in file order
    keys = matrix.ravel()
    rows = np.repeat(np.arange(first_row, first_row + size, dtype=np.int32),
                     matrix.shape[1])
    has_number = (matrix > 0).any(axis=1)
    present = keys > 0
    keys, rows = keys[present], rows[present]
    if extra:
        more = np.array(extra, dtype=np.int64)
        keys = np.concatenate([keys, more[:, 1]])
        rows = np.concatenate([rows, (more[:, 0] + first_row).astype(np.int32)])
        has_number[more[:, 0]] = True
    return keys, rows, has_number


def _blank(size):
    return np.full(size, "", dtype=object)


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


def _sorted_unique_pairs(keys, rows, modulus):
    """Sort (key, row) pairs by bucket (key % modulus), then key, then row, and drop
    repeats: a contact listing a number twice counts once.

    Bucket, key and row are packed into one int64 when they fit (bucket * span +
    quotient is at most key + modulus; E.164 keys of up to 12-13 digits leave 20+ bits
    for the row), because numpy sorts plain integers ~10x faster than it lexsorts
    three arrays, and one sort then serves both the dedup and the hash table.
    """
    quotients, buckets = np.divmod(keys, modulus)
    row_bits = int(rows.max()).bit_length() if rows.size else 0
    if keys.size and (int(keys.max()) + modulus).bit_length() + row_bits <= 63:
        span = int(quotients.max()) + 1
        packed = buckets * span
        packed += quotients
        del quotients, buckets
        packed <<= row_bits
        packed |= rows
        packed.sort()
        keep = np.empty(packed.size, dtype=bool)
        keep[0] = True
        np.not_equal(packed[1:], packed[:-1], out=keep[1:])
        if not keep.all():
            packed = packed[keep]
        rows = (packed & ((1 << row_bits) - 1)).astype(np.int32)
        packed >>= row_bits
        buckets, quotients = np.divmod(packed, span)
        quotients *= modulus
        quotients += buckets
        return quotients, rows  # the keys again
    rows = rows.astype(np.int64)
    order = np.lexsort((rows, keys, buckets))
    keys, rows = keys[order], rows[order]
    keep = np.ones(keys.size, dtype=bool)
    keep[1:] = (keys[1:] != keys[:-1]) | (rows[1:] != rows[:-1])
    return keys[keep], rows[keep].astype(np.int32)


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


def load_report(index):
    """The lines --check prints and the server logs after loading a file."""
    columns = index.columns
    lines = [
        f"file: {index.source}",
        f"encoding: {index.encoding}",
        f"delimiter: {_show_delimiter(index.delimiter)}",
        f"name column: {' + '.join(columns.name) or '(none)'}",
        f"company column: {columns.company or '(none)'}",
        f"phone columns: {', '.join(columns.phones) or '(none)'}",
        f"url column: {columns.url or '(none)'}",
        f"rows read: {index.rows_read}",
        f"{index.contacts} contacts can be found",
        f"numbers indexed: {index.numbers}",
        f"numbers shared by several contacts: {index.shared_numbers}",
        f"rows skipped: {len(index.skipped)}",
    ]
    lines += [f"  row {row}: {reason}" if row else f"  {reason}"
              for row, reason in index.skipped[:REPORT_LIMIT]]
    if len(index.skipped) > REPORT_LIMIT:
        lines.append(f"  ... and {len(index.skipped) - REPORT_LIMIT} more")
    lines.append(f"numbers not used: {len(index.unusable)}")
    lines += [f"  row {row}, {column}: {cell!r} {problem}"
              for row, column, cell, problem in index.unusable[:REPORT_LIMIT]]
    if len(index.unusable) > REPORT_LIMIT:
        lines.append(f"  ... and {len(index.unusable) - REPORT_LIMIT} more")
    lines += [f"warning: {warning}" for warning in index.warnings]
    return lines


def _show_delimiter(delimiter):
    if delimiter is None:
        return "(xlsx)"
    return repr(delimiter)


# URL templates --------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


def template_columns(template):
    """Placeholders of a template that are not request or contact fields: file columns."""
    known = {name.lower() for name in REQUEST_PLACEHOLDERS + CONTACT_PLACEHOLDERS}
    return tuple(name for name in _PLACEHOLDER.findall(template or "")
                 if name.lower() not in known)


def _check_template(template, option):
    if template and not template.lower().startswith(("http://", "https://", "/")):
        raise ConfigError(f"--{option.replace('_', '-')}: {template!r} must start with "
                          "http:// or https://")


def fill_template(template, values):
    """Replace {placeholder}s (case-insensitively) with URL-encoded values."""
    lowered = {name.lower(): value for name, value in values.items()}
    return _PLACEHOLDER.sub(
        lambda m: quote(str(lowered.get(m.group(1).lower(), "")), safe=""), template)


###############################################################################
# Call history ################################################################
###############################################################################
# Every pop-up request is one phase of one call. The recorder queues it and a single
# writer thread stores it in SQLite (WAL), so the answer never waits for the disk;
# calls are rebuilt from their phases when the page asks, grouped by ivrid.

# A batch goes to SQLite as one JSON array, one statement: executemany() re-takes the
# GIL for every row, and under load each of those waits behind the pop-ups (JSON:
# 7 % more requests per second at 32 connections while recording).
_INSERT_JSON_BATCH = ("INSERT OR IGNORE INTO events SELECT " + ", ".join(
    f"json_extract(value, '$[{column}]')" for column in range(13)) + " FROM json_each(?)")
_INSERT_ROW = "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
_WRITE_BATCH = 1_000  # events a statement: an event can be ~128 KiB (body and query)
_RECORD_BACKLOG = 20_000  # events waiting for the disk (~1 KiB each); more are dropped
_RETRY_AT_MOST = 2.0  # seconds between tries of a failing database, at most
_STOP_TRIES_FOR = 5.0  # seconds a stop keeps trying to write what waits
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    ivrid       TEXT NOT NULL,
    phase       TEXT NOT NULL,      -- ringing, answer, hangup, or what the client sent
    received_at REAL NOT NULL,      -- Unix seconds
    caller      TEXT NOT NULL,      -- the caller id as received
    e164        TEXT NOT NULL,
    did         TEXT NOT NULL,
    exten_user  TEXT NOT NULL,
    direction   TEXT NOT NULL,
    answered    INTEGER NOT NULL,   -- the client said the call was answered
    name        TEXT NOT NULL,
    company     TEXT NOT NULL,
    total       INTEGER NOT NULL,
    url         TEXT NOT NULL,
    PRIMARY KEY (ivrid, phase)      -- a repeated delivery of a phase counts once
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_time ON events (received_at);
"""


@dataclasses.dataclass(frozen=True)
class Call:
    """One call rebuilt from its phases."""

    ivrid: str
    started: dt.datetime
    caller: str
    e164: str
    name: str
    company: str
    url: str
    did: str
    answered_at: dt.datetime | None
    answered_by: str
    ended_at: dt.datetime | None
    outcome: str          # "answered", "missed" or "in progress"
    tries: int = 1        # calls from the same number that day

    @property
    def duration(self):
        """Seconds from the answer (or the first ring) to the hang-up, or None."""
        if self.ended_at is None:
            return None
        return max(0, round((self.ended_at - (self.answered_at or self.started))
                            .total_seconds()))


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
    waits every `interval` seconds, up to _WRITE_BATCH events a statement. (With
    queue.Queue and executemany() recording cost 11-13 % of the requests per second
    under load: the queue's locks, and the GIL re-taken for every row.)

    Nothing it could keep is lost: a database that is locked, full, read-only or
    cannot be opened is tried again with back-off while the events wait in memory (up
    to _RECORD_BACKLOG; newer ones are dropped and counted); a database file deleted
    or replaced while running is noticed by its identity (device, inode) and a new
    one opened, and a batch written to the old file meanwhile is written again
    (INSERT OR IGNORE makes that harmless). A failure is logged when it starts or
    changes, and its end too; `trouble` says it for /health. It never delays or
    breaks a pop-up. close() writes what is waiting, trying for _STOP_TRIES_FOR."""

    def __init__(self, path, keep_days, interval=0.05):
        self.path = Path(path)
        self.keep_days = keep_days
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
        if len(self._events) >= _RECORD_BACKLOG:  # the disk is far behind; pop-ups first
            self._drop()
            return
        self._events.append((
            fields.get("ivrid") or f"no-ivrid-{time.time_ns()}",
            _phase(fields).strip().lower() or "unknown", time.time(),
            fields.get("phone", ""), answer.e164 or "", fields.get("did", ""),
            fields.get("extenUser", ""), fields.get("direction", ""),
            1 if str(fields.get("isAnswered", "")).lower() in ("1", "true") else 0,
            answer.name, answer.company, answer.total, answer.url))

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
                      dropped, _RECORD_BACKLOG, self.path)

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
            connection.executescript(_SCHEMA)
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
                      len(self._events), _RECORD_BACKLOG)
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
            deleted = self._connection.execute("DELETE FROM events WHERE received_at < ?",
                                               (cutoff,)).rowcount
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


def calls_of_day(path, day):
    """The calls that started on `day` (local time), missed first, then newest first."""
    start = dt.datetime.combine(day, dt.time()).astimezone()
    end = start + dt.timedelta(days=1)
    if not Path(path).exists():
        return []
    connection = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True,
                                 timeout=1.0)
    try:
        # A call belongs to the day it began on, even when it ends after midnight.
        rows = connection.execute(
            "SELECT * FROM events WHERE ivrid IN (SELECT ivrid FROM events "
            "WHERE received_at >= ? AND received_at < ? + 86400 GROUP BY ivrid "
            "HAVING MIN(received_at) >= ? AND MIN(received_at) < ?) ORDER BY received_at",
            (start.timestamp() - 86400, end.timestamp(), start.timestamp(),
             end.timestamp())).fetchall()
    finally:
        connection.close()
    calls = _calls_from_events(rows)
    tries = collections.Counter(call.e164 for call in calls if call.e164)
    # Withheld callers have no number to tell them apart: each call counts once.
    calls = [dataclasses.replace(call, tries=tries[call.e164] if call.e164 else 1)
             for call in calls]
    order = {"missed": 0, "in progress": 1, "answered": 2}
    return sorted(calls, key=lambda c: (order[c.outcome], -c.started.timestamp()))


def _calls_from_events(rows):
    by_call = {}
    for row in rows:
        by_call.setdefault(row[0], []).append(row)
    calls = []
    for ivrid, events in by_call.items():
        phases = {event[1]: event for event in events}
        first = min(events, key=lambda event: event[2])
        best = max(events, key=lambda event: (event[11] > 0, -event[2]))  # a named one

        def at(phase):
            event = phases.get(phase)
            return dt.datetime.fromtimestamp(event[2]).astimezone() if event else None
        answered_at = at("answer")
        ended_at = at("hangup")
        if answered_at is None and ended_at is not None and phases["hangup"][8]:
            answered_at = ended_at  # the hang-up says it was answered; no Answer came
        outcome = ("answered" if answered_at else "missed" if ended_at else "in progress")
        calls.append(Call(
            ivrid=ivrid, started=dt.datetime.fromtimestamp(first[2]).astimezone(),
            caller=first[3], e164=best[4] or first[4], name=best[9], company=best[10],
            url=best[12], did=first[5],
            answered_at=answered_at,
            answered_by=phases["answer"][6] if "answer" in phases else "",
            ended_at=ended_at, outcome=outcome))
    return calls


CALLS_CSV_COLUMNS = ("time", "outcome", "caller", "name", "company", "tries",
                     "answered by", "duration (s)", "dialled", "crm link", "ivrid")


def calls_csv(calls):
    """The calls as CSV text for Excel: UTF-8 with a BOM so Hebrew opens correctly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CALLS_CSV_COLUMNS)
    for call in calls:
        writer.writerow([call.started.strftime("%Y-%m-%d %H:%M:%S"), call.outcome,
                         *map(_no_formula, (call.caller, call.name, call.company)),
                         call.tries, _no_formula(call.answered_by),
                         "" if call.duration is None else call.duration,
                         *map(_no_formula, (call.did, call.url, call.ivrid))])
    return "\ufeff" + out.getvalue()


def _no_formula(text):
    """Text that Excel will show, not run: callers choose their caller id and names
    come from files, and a cell starting with = + - @ is a formula to Excel."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


###############################################################################
# The HTTP layer ##############################################################
###############################################################################

#: Fields read from a request; everything else a client sends is ignored.
REQUEST_FIELDS = ("phone", "ivrid", "extenUser", "did", "status", "statusCall",
                  "direction", "callerName", "isAnswered")


class ContactsHolder:
    """The index being served and the outcome of the last load.

    A reload builds a whole new ContactIndex off the request path and swaps it in by
    one assignment, so a lookup sees the old index or the new one, never a mixture;
    a failed load leaves the old one serving and records why in last_error.
    """

    def __init__(self, config):
        self.config = config
        self.last_error = None        # the whole message, for the log and the calls page
        self.last_error_public = None  # its gist, for the unauthenticated /health
        self.signature = None         # the file as it was when the served index was read
        self.index = self.load()   # at start-up a bad file is fatal: the error goes up
        for line in load_report(self.index):
            log.info("%s", line)
        kept = {header.lower() for header in self.index.template_headers}
        for name in template_columns(config.url_template):
            if name.lower() not in kept:
                log.warning("--url-template uses {%s}, which is not a column of %s: it "
                            "will be empty", name, config.contacts.name)

    def load(self):
        path = self.config.contacts
        signature = file_signature(path)  # before reading: a change meanwhile is seen
        try:
            with _bulk_load():
                index = load_index(path, **self.config.load_options())
        except ContactsFileError:
            raise
        except Exception as error:  # a file no reader foresaw: still one line, no crash
            log.debug("loading %s failed", path, exc_info=True)
            raise ContactsFileError(path, f"cannot be loaded ({type(error).__name__}: "
                                          f"{_first_line(error)})") from None
        self.signature = signature
        if index.contacts == 0:
            raise ContactsFileError(self.config.contacts,
                                    "no contact has a usable phone number "
                                    f"({index.rows_read} rows read; run --check to see why)")
        return index

    def reload(self):
        """Load the file again; True when the new contacts are being served."""
        started = time.perf_counter()
        try:
            index = self.load()
        except ContactsFileError as error:
            self.report(error)
            log.error("reload failed, still serving %d contacts loaded at %s: %s",
                      self.index.contacts, self.index.loaded_at.isoformat(timespec="seconds"),
                      error)
            return False
        self.index = index
        self.report(None)
        _return_freed_memory()  # the replaced index's arrays
        log.info("reloaded in %.2f s: %s", time.perf_counter() - started, self.summary(index))
        return True

    def report(self, error):
        """Record the last failure (a ContactsFileError), or None once all is well."""
        if error is None:
            self.last_error = self.last_error_public = None
            return
        self.last_error = str(error)
        # /health is open to anyone: the file's name and the gist of the problem only,
        # never its folder or the cells quoted in the full message.
        gist = re.split(r" \(|; ", error.problem, maxsplit=1)[0]
        self.last_error_public = f"{Path(error.path).name}: {gist}"

    @staticmethod
    def summary(index):
        return (f"{index.source.name}: {index.contacts} contacts, {index.numbers} numbers, "
                f"{len(index.skipped)} rows skipped, {len(index.unusable)} numbers not used")

    def health(self):
        index = self.index
        return {"status": "ok" if self.last_error is None else "error",
                "contacts": index.contacts, "numbers": index.numbers,
                "source": index.source.name,
                "loaded_at": index.loaded_at.isoformat(timespec="seconds"),
                "last_error": self.last_error_public}


@contextlib.contextmanager
def _bulk_load():
    """Around loading a file: no cyclic garbage collection meanwhile (a load makes
    no cycles, and one collection over its blocks cost ~0.2 s of a 1.5 s load), no
    transparent huge pages for numpy's arrays, and the memory it freed handed back to
    the OS afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    # numpy asks the kernel for 2 MiB pages for arrays of 4 MiB and more; faulting
    # those in made building the number tables take 0.45-0.55 s instead of 0.22 s, in
    # 7 loads of 8 (Linux 'madvise' mode). Over HTTP, lookups gained at most a few
    # percent from them, within the noise.
    # NUMPY_MADVISE_HUGEPAGE=0 does this for a whole process; this only for the load.
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


def _keep_freed_memory_for_reuse():
    """Tell glibc to keep memory freed while loading and reuse it, instead of giving
    each block's memory back to the OS and faulting it in again for the next block:
    loading a million contacts went from ~290,000 page faults to ~50,000 and 25% less
    time. _return_freed_memory() hands it all back once a load is over."""
    if sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc
            return
        m_trim_threshold, m_mmap_threshold = -1, -3   # glibc's <malloc.h>
        mallopt(m_mmap_threshold, 256 * 1024 * 1024)
        mallopt(m_trim_threshold, 1024 * 1024 * 1024)


def _return_freed_memory():
    """Hand memory freed while loading back to the OS. glibc keeps it in its heap
    otherwise: a third of the RSS after loading a million contacts, returned in ~5 ms.
    Other C libraries return it by themselves, or keep it: nothing to do there."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            pass


class AccessGuard:
    """Decides whether a request may use /popup: the client address, then the token."""

    def __init__(self, config):
        self.token = (config.token or "").encode("utf-8")
        self.allowed = config.allow_ip
        self.trusted = config.trusted_proxy

    def client_address(self, environ):
        """The socket's peer, or the forwarded client when the peer is a trusted proxy."""
        peer = environ.get("REMOTE_ADDR") or ""
        if not self.trusted or not self._in(peer, self.trusted):
            return peer
        # X-Forwarded-For is "client, proxy1, proxy2": walk back over trusted proxies.
        forwarded = [part.strip() for part in
                     environ.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        # The address as ipaddress writes it, never the header's text: that is the
        # client's to choose, and an IPv6 zone ("fe80::1%...") may hold any words.
        for address in reversed(forwarded):
            if not self._in(address, self.trusted):
                parsed = self._parse(address)
                return str(parsed) if parsed else peer
        first = self._parse(forwarded[0]) if forwarded else None
        return str(first) if first else peer

    def check(self, environ, query):
        if self.allowed:
            client = self.client_address(environ)
            if not self._in(client, self.allowed):
                raise bottle.HTTPError(403, "this address is not allowed to use the "
                                            "pop-up service")
        if self.token:
            given = query.get("token") or environ.get("HTTP_X_POPUP_TOKEN") or ""
            if not hmac.compare_digest(given.encode("utf-8"), self.token):
                raise bottle.HTTPError(403, "missing or wrong token: add ?token=... to "
                                            "the URL given to Voicenter")

    def allows_page(self, environ, query):
        """The calls page: the token when one is set, else --allow-ip or loopback only."""
        if self.token:
            self.check(environ, query)
            return
        client = self.client_address(environ)
        allowed = self.allowed or (ipaddress.ip_network("127.0.0.0/8"),
                                   ipaddress.ip_network("::1/128"))
        if not self._in(client, allowed):
            raise bottle.HTTPError(403, "the calls page is open only to this machine "
                                        "unless --token or --allow-ip is set")

    @staticmethod
    def _parse(text):
        try:  # without its zone (%eth0): it names an interface, not a host
            address = ipaddress.ip_address(text.strip().strip("[]").partition("%")[0])
        except ValueError:
            return None
        mapped = getattr(address, "ipv4_mapped", None)
        return mapped or address

    def _in(self, text, networks):
        address = self._parse(text)
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


def _body_fields(environ, max_body):
    """Fields of a POST body: JSON or form-encoded, by Content-Type (or by its look)."""
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
        return _json_fields(body)
    if content_type == "multipart/form-data":
        raise bottle.HTTPError(415, "send the fields as a query string, as "
                                    "application/x-www-form-urlencoded or as JSON")
    try:
        text = body.decode("utf-8")
    except UnicodeError:
        raise bottle.HTTPError(400, "the form body is not valid UTF-8") from None
    return _form_fields(text, "form body")


def _json_fields(body):
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise bottle.HTTPError(400, "the JSON body is not UTF-8") from None
    except ValueError as error:
        raise bottle.HTTPError(400, f"the body is not valid JSON ({error})") from None
    except RecursionError:
        raise bottle.HTTPError(400, "the JSON body is nested too deeply") from None
    if not isinstance(data, dict):
        raise bottle.HTTPError(400, "the JSON body must be an object, e.g. "
                                    '{"phone": "0722776772"}')
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

    It is the only log on the busiest path, and a line through `logging` costs ~20 us,
    as much as answering the request (bench/run.py measures it). So a request only
    queues its values (popup()) or its line (write()), and a thread makes and writes
    the lines in batches every `interval` seconds: a request then costs ~0.5 us
    instead of 5 (in Bottle) to 9 (under load). Values a client chose are escaped, so
    that nobody can write a line of their own.
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
        self._flush()
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
                self._flush()
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

    def _flush(self):
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
    row, total, key = index.find(caller_id)
    if not total:
        url = fill_template(config.no_match_url, _request_values(key, fields)) \
            if config.no_match_url else ""
        return PopupAnswer(0, "", "", url, key)
    name, company, url, kept = index.texts_of(row)
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


def _phase(fields):
    return fields.get("status") or fields.get("statusCall") or ""


def _json_bytes(payload):
    return json.dumps(payload, ensure_ascii=False).encode("utf-8", "replace")


ERROR_MESSAGES = {
    404: "no such page: the pop-up service is at /popup, its status at /health",
    405: "method not allowed here: /popup takes GET, POST or OPTIONS",
}


def create_app(config, holder, recorder=None, access_log=None):
    """The Bottle application: /popup, /health and the calls page."""
    app = bottle.Bottle(catchall=True)
    guard = AccessGuard(config)
    access_log = access_log or LoggingAccessLog(config.log_numbers)

    def json_error(error):
        status = error.status_code
        if status >= 500:
            log.error("internal error on %s: %s", bottle.request.path,
                      error.traceback or error.body)
        message = ERROR_MESSAGES.get(status) or (
            error.body if isinstance(error.body, str) and status < 500
            else "internal error; the server log has the details")
        if access_log.enabled:
            access_log.write(f"{bottle.request.method} {_loggable(bottle.request.path)} "
                             f"{status} {_loggable(message, 200)} "
                             f"client={_loggable(guard.client_address(bottle.request.environ))}")
        bottle.response.content_type = JSON_TYPE
        if bottle.request.path == "/popup":
            bottle.response.set_header(*CORS_ORIGIN)
        return _json_bytes({"STATUS": "ERROR", "MESSAGE": message})

    for status in (400, 403, 404, 405, 413, 415, 500, 503):
        app.error(status)(json_error)

    # skip=True: no plugins wrap it; it returns its JSON as bytes (the busiest route).
    @app.route("/popup", method=["GET", "POST"], skip=True)
    def popup():
        log_request = access_log.enabled
        started = time.perf_counter() if log_request else 0.0
        environ = bottle.request.environ
        query = _query_fields(environ)
        guard.check(environ, query)
        fields = query
        if environ["REQUEST_METHOD"] == "POST":
            fields = {**query, **_body_fields(environ, config.max_body)}
        phone = fields.get("phone")
        if phone is None:
            raise bottle.HTTPError(400, "the request has no phone field "
                                        "(e.g. /popup?phone=0722776772)")
        answer = answer_for(holder.index, phone, fields, config)
        # Straight into the response's header table (name: [value]) as set_header()
        # would leave it: these names and values are constants, so its checks only
        # cost time, ~1 us of the busiest path (test_security checks both arrive).
        headers = bottle.response._headers
        headers["Content-Type"] = [JSON_TYPE]  # new lists: add_header() appends to them
        headers["Access-Control-Allow-Origin"] = [CORS_ORIGIN[1]]
        if recorder is not None:
            recorder.record(fields, answer)
        if log_request:
            access_log.popup(environ["REQUEST_METHOD"], fields, answer.total,
                             time.perf_counter() - started, guard.client_address(environ))
        return answer.json_bytes()

    @app.route("/popup", method="OPTIONS")
    def popup_preflight():
        for name, value in CORS_PREFLIGHT_HEADERS.items():
            bottle.response.set_header(name, value)
        bottle.response.status = 204
        return b""

    @app.get("/health")
    def health():
        status, body = health_report(holder, recorder)
        bottle.response.status = status
        bottle.response.content_type = JSON_TYPE
        bottle.response.set_header("Cache-Control", "no-store")
        return _json_bytes(body)

    def page_request():
        environ = bottle.request.environ
        query = _query_fields(environ)
        guard.allows_page(environ, query)
        bottle.response.set_header("Cache-Control", "no-store")
        return query, _parse_day(query.get("day"))

    @app.get("/")
    @app.get("/calls")
    def calls_page():
        query, day = page_request()
        calls, calls_error = _calls_or_error(recorder, day)
        tried = query.get("try")
        tried_answer = None
        if tried is not None:
            fields = {"phone": tried}
            tried_answer = answer_for(holder.index, tried, fields, config).as_dict()
        token = query.get("token", "") if guard.token else ""
        return bottle.template(
            "calls", template_lookup=VIEWS,
            health={**holder.health(), "last_error": holder.last_error},  # needs the token
            calls=calls, calls_error=calls_error,
            recording=recorder is not None, day=day, today=dt.date.today(),
            token=token, tried=tried, tried_answer=tried_answer,
            tried_json=_json_bytes(tried_answer).decode("utf-8") if tried_answer else "",
            quote=quote)

    @app.get("/calls.csv")
    def calls_csv_download():
        _query, day = page_request()
        calls, calls_error = _calls_or_error(recorder, day)
        if calls_error:
            raise bottle.HTTPError(503, calls_error)
        bottle.response.content_type = "text/csv; charset=utf-8"
        bottle.response.set_header("Content-Disposition",
                                   f'attachment; filename="calls-{day.isoformat()}.csv"')
        return calls_csv(calls).encode("utf-8")

    return app


def health_report(holder, recorder):
    """/health's status and body: 503 unless all is well (the contacts file loads,
    calls are recorded), so that a monitor reading only the code alerts; the body
    says which. Open to anyone: no contact data, no folder, no secret."""
    body = holder.health()
    contacts_ok = body["last_error"] is None
    body["contacts_file"] = "ok" if contacts_ok else (
        f"fails to load; still serving the last good contacts, loaded at {body['loaded_at']}")
    calls_trouble = recorder.health() if recorder is not None else None
    body["calls"] = ("off" if recorder is None else "ok" if calls_trouble is None
                     else f"cannot be recorded: {calls_trouble}")
    healthy = contacts_ok and calls_trouble is None
    body["status"] = "ok" if healthy else "error"
    return (200 if healthy else 503), body


def _parse_day(text):
    if not text:
        return dt.date.today()
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or not 2000 <= day.year <= 9998:
        raise bottle.HTTPError(400, "day must be a date written YYYY-MM-DD") from None
    return day


def _calls_or_error(recorder, day):
    if recorder is None:
        return [], None
    try:
        return calls_of_day(recorder.path, day), None
    except sqlite3.Error as error:
        log.error("cannot read calls from %s: %s", recorder.path, error)
        return [], f"the calls database cannot be read: {error}"


###############################################################################
# Reloading ###################################################################
###############################################################################


def file_signature(path):
    """What tells one version of a file from another: identity, size, mtime."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class FileWatcher:
    """Reloads the contacts file when it changes, polling so it works on every OS and
    network share (in the manner of bottle's FileCheckerThread).

    Strategy: a change of identity, size or mtime is acted upon only when the next
    poll sees the same signature (Excel and editors save in several steps). The
    signature is read again after loading; if the file moved meanwhile the result is
    dropped and the load tried again, so a half-written file is never served. A file
    that is missing or locked is retried on every poll; one whose content is bad waits
    for its next change. Throughout, lookups go on against the index being served.
    Use as a context manager: the thread starts on enter and stops on exit.
    """

    def __init__(self, holder, interval):
        self.holder = holder
        self.path = holder.config.contacts
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="contacts-watcher",
                                        daemon=True)
        self._served = holder.signature  # taken before the load: a later edit is seen
        self._watcher_error = False      # last_error is the watcher's own (missing, locked)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self):
        seen = self._served
        while not self._stop.wait(self.interval):
            try:
                seen = self._poll(seen)
            except Exception:  # the watcher must outlive any surprise; say what it was
                log.exception("checking %s for changes failed", self.path)

    def _poll(self, seen):
        current = file_signature(self.path)
        if current == self._served:
            if self._watcher_error:  # back as it was after a moment away or locked
                self._watcher_error = False
                self.holder.report(None)
            return current
        if current != seen:
            return current  # still changing, or just changed: look again next time
        if current is None:
            self._report_missing()
            return current
        if self._load_settled(current):
            self._served = current
        return current

    def _report_missing(self):
        error = ContactsFileError(self.path, "the file is missing; still serving the "
                                             "contacts loaded before")
        if self.holder.last_error != str(error):
            self.holder.report(error)
            self._watcher_error = True
            log.error("%s", error)

    def _load_settled(self, signature):
        """Load the file seen with `signature`; True when that attempt is over."""
        log.info("%s changed; reloading", self.path.name)
        try:
            with open(self.path, "rb"):
                pass
        except OSError as error:  # locked mid-save (Windows) or gone: next poll retries
            self.holder.report(ContactsFileError(self.path, f"cannot be opened yet "
                                                            f"({error.strerror})"))
            self._watcher_error = True
            return False
        self._watcher_error = False
        self.holder.reload()
        if file_signature(self.path) != signature:
            log.info("%s changed while being read; reading it again", self.path.name)
            return False
        return True


###############################################################################
# The command line ############################################################
###############################################################################


_WEAK_TOKEN_LENGTH = 16  # characters; a made token has 32 (192 random bits)


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
    token = _read_token_file(path)
    if token is None:
        token = _make_token_file(path)
    _warn_if_weak(token, str(path))
    return token


def _read_token_file(path):
    """The token kept in `path`; None when there is none yet (no file, or empty)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                             | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not hang us
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ConfigError(f"{path}: the token file is a symbolic link, which is not "
                              "followed; give --token-file the real file") from None
        raise ConfigError(f"{path}: cannot read the token file ({error.strerror})") from None
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: the token file is not a regular file")
        data = handle.read(4097)
        if os.name != "nt" and mode & 0o077 and data.strip():
            raise ConfigError(
                f"{path}: the token file can be read or changed by other users (mode "
                f"{stat.S_IMODE(mode):03o}); make it the owner's only: chmod 600 {path} "
                "(if others may have read it, delete it instead: a new token is made, "
                "and Voicenter needs the new URL)")
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        token = None
    if token is None or len(data) > 4096 or not token.isprintable():
        raise ConfigError(f"{path}: the token file does not hold a token (one line of "
                          "text); delete it to have a new one made")
    if not token:  # an empty file: made anew below, so nothing of its mode survives
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None
    return token


def _make_token_file(path):
    token = secrets.token_urlsafe(24)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never through a symbolic link (even a dangling one), never over a file.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), 0o600)  # whatever the umask took away
            handle.write(token + "\n")
    except FileExistsError:
        raise ConfigError(f"{path}: cannot make the token file: something is in the way "
                          "(a symbolic link?); remove it or pass --token-file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot keep the new token there ({error.strerror}); "
                          "pass --token or --token-file") from None
    log.info("made a new token and kept it in %s", path)
    return token


def _warn_if_weak(token, source):
    if token and len(token) < _WEAK_TOKEN_LENGTH:
        log.warning("the token from %s has only %d characters: anyone who can reach the "
                    "port can guess it by trying; use a longer one (a made one has 32)",
                    source, len(token))


def voicenter_url(host, port, token):
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{port}/popup"
    return url + (f"?token={quote(token, safe='')}" if token else "")


def _quiet_channel_class():
    """waitress' HTTPChannel, minus a busy loop that collapses throughput at 4+
    keep-alive connections on small machines (waitress 3.0.2, channel.py).

    A worker sends its response while holding the channel's outbuf_lock. Meanwhile
    writable() says yes (it only looks at the buffered length), so the main loop's
    poll returns at once, handle_write cannot take the lock, and the loop spins,
    taking the GIL the worker needs to finish: measured 2 -> 38 loop turns a request
    at 4 connections, and a third of the throughput. Here a channel whose lock a
    worker holds is not writable; that worker wakes the loop itself (pull_trigger)
    whenever it leaves bytes unsent, so nothing waits.
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
    return QuietChannel


def waitress_settings(config):
    """What waitress is told, and why (the README explains it for operators too)."""
    return dict(
        host=config.host, port=config.port, threads=config.threads,
        ident="popup-server",
        connection_limit=1000,             # many idle keep-alive clients are cheap
        channel_timeout=30,                # a stalled client is dropped after 30 s
        cleanup_interval=10,
        max_request_body_size=config.max_body,  # refused before it is read
        max_request_header_size=64 * 1024,
        expose_tracebacks=False,
        asyncore_use_poll=True,            # select() stops at 1024 descriptors
        # waitress drops X-Forwarded-* headers; AccessGuard needs them from --trusted-proxy
        clear_untrusted_proxy_headers=not config.trusted_proxy,
    )


def create_server(app, config):
    """A waitress server for `app`, with waitress_settings() and the quiet channel."""
    import waitress.server
    _render_waitress_errors_as_json()
    server = waitress.server.create_server(app, **waitress_settings(config))
    server.channel_class = _quiet_channel_class()  # the accept handler makes these
    return server


def serve(app, config, holder):
    """Serve `app` with waitress until interrupted."""
    server = create_server(app, config)
    port = server.effective_port
    log.info("serving %d contacts on http://%s:%s", holder.index.contacts,
             config.host, port)
    if config.token:
        log.info("give Voicenter this URL: %s", voicenter_url(config.host, port, config.token))
    else:
        log.warning("the token check is OFF: anyone who can reach port %s can look up "
                    "contacts; set --token or remove the empty POPUP_TOKEN", port)
        log.info("give Voicenter this URL: %s", voicenter_url(config.host, port, ""))
    log.info("status: http://%s:%s/health", "127.0.0.1" if config.host in ("0.0.0.0", "")
             else config.host, port)
    try:
        server.run()
    finally:
        server.close()


def _render_waitress_errors_as_json():
    """Answer the errors waitress itself raises (a body over the limit, a malformed
    request line, headers too large) in the same JSON as the app's own, so that a
    client never sees a text/plain error page from this server."""
    import waitress.utilities

    def to_response(error, ident=None):
        body = _json_bytes({"STATUS": "ERROR", "MESSAGE": f"{error.reason}: {error.body}"})
        return f"{error.code} {error.reason}", [("Content-Type", JSON_TYPE)], body
    waitress.utilities.Error.to_response = to_response


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
    return output


def _run_check(config):
    try:
        index = load_index(config.contacts, **config.load_options())
    except ContactsFileError as error:
        print(f"popup_server: {error}", file=sys.stderr)
        return 2
    print("\n".join(load_report(index)))
    if index.contacts == 0:
        print(f"popup_server: {index.source}: no contact has a usable phone number",
              file=sys.stderr)
        return 1
    return 0


def _stop_on_sigterm():
    import signal

    def stop(signum, frame):
        # Once: a second SIGTERM must not cut short the writing of the queued calls.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt  # unwinds serve() so that everything closes cleanly
    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (tests calling main())
        pass


def main(argv=None, environ=None):
    """Run the program; returns the exit status."""
    environ = os.environ if environ is None else environ
    try:
        config = parse_config(argv, environ)
    except ConfigError as error:
        print(f"popup_server: {error}", file=sys.stderr)
        return 2
    if config.check:
        return _run_check(config)
    log_output = _configure_logging()
    _keep_freed_memory_for_reuse()
    try:
        holder = ContactsHolder(config)
        config = dataclasses.replace(config, token=resolve_token(config))
    except PopupError as error:
        print(f"popup_server: {error}", file=sys.stderr)  # one line, no traceback
        return 2
    for line in holder.index.warnings:
        log.warning("%s", line)
    recorder = None
    if config.calls_path is not None:
        recorder = CallRecorder(config.calls_path, config.calls_keep_days).start()
        log.info("recording calls in %s (kept %d days)", config.calls_path,
                 config.calls_keep_days)
    access_log = AccessLog(log_output, config.log_numbers)
    app = create_app(config, holder, recorder, access_log)
    # What start-up made (modules, phonenumbers' metadata: ~140k objects) lives as
    # long as the process: frozen, the collector stops walking it, a full pass every
    # few thousand requests that cost ~40 ms (a p99 spike) and ~0.2 us a request.
    gc.freeze()
    _stop_on_sigterm()
    try:
        with access_log, FileWatcher(holder, config.reload_interval):
            serve(app, config, holder)
    except KeyboardInterrupt:
        log.info("stopped")
    except OSError as error:
        print(f"popup_server: cannot listen on {config.host}:{config.port}: "
              f"{error.strerror or error}", file=sys.stderr)
        return 2
    finally:
        if recorder is not None:
            recorder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
