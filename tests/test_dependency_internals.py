"""The internals of waitress and bottle that popup_server reaches into are still there:
an upgrade that moves them fails here, not in production (where the server would fall
back to stock waitress / bottle's set_header, with a warning)."""
import tomllib

from packaging.requirements import Requirement

import popup_server as ps
from conftest import MODULE


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
