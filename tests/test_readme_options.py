"""The README's options table says what the program does: every option is in it, and
a default it writes as a plain value is the default the program uses (the program's
defaults are written once, in OPTIONS; this keeps the README from drifting away)."""

from __future__ import annotations

import re
from pathlib import Path

import popup_server

README = Path(popup_server.__file__).resolve().parent / "README.md"


def _table_rows():
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `(--[a-z-]+)` \| ([^|]*) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_every_option_is_in_the_readme_table():
    rows = _table_rows()
    missing = [option.flag for option in popup_server.OPTIONS if option.flag not in rows]
    assert not missing, f"README's options table lacks {missing}"


def test_plain_defaults_in_the_readme_are_the_programs():
    rows = _table_rows()
    for option in popup_server.OPTIONS:
        written = rows.get(option.flag, "")
        plain = re.fullmatch(r"`([^`]*)`", written)
        if plain and not option.switch:
            default = option.default
            if isinstance(default, float) and default.is_integer():
                default = int(default)  # the README writes 1, not 1.0
            assert plain.group(1) == str(default), (option.flag, written, default)
