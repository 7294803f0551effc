"""Issue 21, "Time": on a UTC machine (most VPSs) with no --timezone, an Israeli
office's pages show Israel's time, name the zone, and write times in the page's
language, never ISO."""
import datetime as dt
import re
import zoneinfo

import popup_server as ps
from conftest import SAMPLE_CONTACTS

ISRAEL = zoneinfo.ZoneInfo("Asia/Jerusalem")


def _israeli_office_on_a_utc_machine(start_server, tmp_path, *args):
    return start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite",
                        "--calls-keep-days", "3650", *args, env={"TZ": "UTC"},
                        office_zone=False)


def _cdr(server, ivrid, at, caller="0722776772"):
    # `time` as Voicenter's guide documents it: Israel's wall-clock written as if it
    # were UTC (a CDR arriving long after its call is read that way).
    israel_clock = at.astimezone(ISRAEL).replace(tzinfo=dt.timezone.utc).timestamp()
    resp = server.post_json("/cdr", {"ivruniqueid": ivrid, "time": israel_clock,
                                     "caller": caller, "status": "NOANSWER"})
    assert resp.status == 200, resp


def test_a_utc_machine_shows_an_israeli_office_israels_time(start_server, tmp_path):
    server = _israeli_office_on_a_utc_machine(start_server, tmp_path)
    _cdr(server, "at-0420", dt.datetime(2026, 1, 15, 4, 20, tzinfo=ISRAEL))
    # 00:30 in Israel is 22:30 UTC of the day before: Israel's day holds it.
    _cdr(server, "after-midnight", dt.datetime(2026, 1, 15, 0, 30, tzinfo=ISRAEL))
    page = server.get("/calls", {"day": "2026-01-15"},
                      headers={"Accept-Language": "en"}).text
    times = dict(re.findall(r'id="call-([\w-]+)"[^>]*>\s*<td>([^<]*)</td>', page))
    assert times == {"at-0420": "04:20:00", "after-midnight": "00:30:00"}
    assert "Times in \u2068Asia/Jerusalem\u2069" in page
    csv_text = server.get("/calls.csv", {"day": "2026-01-15"}).text
    assert "2026-01-15 04:20:00" in csv_text and "02:20" not in csv_text


def test_the_callers_page_writes_its_times_in_the_pages_language(start_server, tmp_path):
    server = _israeli_office_on_a_utc_machine(start_server, tmp_path)
    _cdr(server, "jan", dt.datetime(2026, 1, 15, 4, 20, tzinfo=ISRAEL))
    english = server.get("/caller/+972722776772", headers={"Accept-Language": "en"}).text
    assert "15 January 2026, 04:20" in english and "2026-01-15" not in english
    assert "Times in \u2068Asia/Jerusalem\u2069" in english
    hebrew = server.get("/caller/+972722776772", headers={"Accept-Language": "he"}).text
    assert "15 בינואר 2026, 04:20" in hebrew and "השעות לפי \u2068Asia/Jerusalem\u2069" in hebrew


def test_loaded_at_is_a_time_of_the_zone_not_iso(start_server, tmp_path):
    server = _israeli_office_on_a_utc_machine(start_server, tmp_path)
    page = server.get("/calls", headers={"Accept-Language": "en"}).text
    loaded = re.search(r'id="loaded-at">([^<]*)<', page).group(1)
    health = server.health()["loaded_at"]  # /health keeps its ISO time, for monitors
    assert re.fullmatch(r"\d\d:\d\d", loaded) and "T" not in loaded
    israel_now = dt.datetime.fromisoformat(health).astimezone(ISRAEL)
    assert loaded == israel_now.strftime("%H:%M")


def test_timezone_given_still_wins_and_a_country_of_many_zones_keeps_the_machines(
        start_server, tmp_path):
    tokyo = _israeli_office_on_a_utc_machine(start_server, tmp_path, "--timezone",
                                             "Asia/Tokyo")
    assert "Times in \u2068Asia/Tokyo\u2069" in tokyo.get(
        "/calls", headers={"Accept-Language": "en"}).text
    american = start_server(SAMPLE_CONTACTS, "--region", "US", env={"TZ": "UTC"},
                            office_zone=False)
    assert "Times in \u2068UTC\u2069" in american.get(
        "/calls", headers={"Accept-Language": "en"}).text


def test_the_default_zone_is_the_countrys_when_it_has_one():
    assert ps.region_time_zone("IL") == ISRAEL
    assert ps.region_time_zone("FR") == zoneinfo.ZoneInfo("Europe/Paris")
    for several in ("US", "RU", "AU", "BR", "PS"):
        assert ps.region_time_zone(several) is None, several
    assert ps.parse_config([], {}).timezone == ISRAEL
    assert ps.parse_config(["--timezone", "UTC"], {}).timezone == zoneinfo.ZoneInfo("UTC")
