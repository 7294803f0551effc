"""Genuine .ods and .xls files, written by LibreOffice itself (headless soffice).

Used by the tests and by bench/sources.py. Debian's ``libreoffice-calc-nogui``
provides ``soffice``; without it the tests that need it skip, unless
POPUP_TEST_REQUIRE_LIBREOFFICE (or POPUP_TEST_REQUIRE_BROWSER, set by CI) asks
for it to be there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
#: LibreOffice's CSV import: comma, double quote, UTF-8 (76), from line 1.
CSV_UTF8_FILTER = "CSV:44,34,76,1"


def required() -> bool:
    return bool(os.environ.get("POPUP_TEST_REQUIRE_LIBREOFFICE")
                or os.environ.get("POPUP_TEST_REQUIRE_BROWSER"))


def needed() -> None:
    """Skip the calling test (or fixture) when soffice is missing; fail it instead
    where LibreOffice is required()."""
    if SOFFICE:
        return
    import pytest  # only the tests ask; bench/sources.py calls convert() alone
    if required():
        pytest.fail("LibreOffice (soffice) is required here and missing "
                    "(apt-get install libreoffice-calc-nogui)", pytrace=False)
    pytest.skip("needs LibreOffice (Debian's libreoffice-calc-nogui)")


def convert(source: Path, kind: str, outdir: Path, timeout: float = 180) -> Path:
    """``soffice --headless --convert-to KIND SOURCE`` into `outdir`, with a profile of
    its own (LibreOffice processes sharing a profile wait for each other or fail).
    A CSV is read as UTF-8 and typed as LibreOffice types it: digits become numbers,
    so 0541234567 loses its leading zero, as when a person opens the CSV."""
    outdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lo-profile-") as profile:
        command = [SOFFICE, f"-env:UserInstallation={Path(profile).as_uri()}",
                   "--headless", "--norestore", "--nolockcheck"]
        if source.suffix.lower() == ".csv":
            command.append(f"--infilter={CSV_UTF8_FILTER}")
        command += ["--convert-to", kind, "--outdir", str(outdir), str(source)]
        result = subprocess.run(command, capture_output=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
    written = outdir / f"{source.stem}.{kind}"
    if not written.exists():
        raise RuntimeError(f"LibreOffice wrote no {written.name} (exit {result.returncode}): "
                           f"{result.stderr.decode('utf-8', 'replace')[-500:]}")
    return written
