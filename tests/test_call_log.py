"""Voicenter's Call Log pulled into the calls page: every record of the day
arrives, a day over 10,000 records arrives whole, never more than 30 requests a
minute, a pushed and a pulled record of one call are one call, every error is said on
/health and the calls page while pop-ups go on, and a restart goes on from where the
last pull got to. The real server against a real HTTP stand-in on loopback
(tests/voicenter_calllog_standin.py) answering as Voicenter's guide documents."""
from __future__ import annotations

import datetime as dt
import html
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import popup_server
from conftest import SAMPLE_CONTACTS, calls_csv, wait_until
from voicenter_calllog_standin import CallLogStandin, day_of_records, make_record, utc

CODE = "test-code-1234"


@pytest.fixture
def standin():
    with CallLogStandin(code=CODE) as running:
        yield running


@pytest.fixture
def db(tmp_path):
    return tmp_path / "state" / "calls.sqlite"


@pytest.fixture
def pulling(start_server, standin, db):
    """start_pulling(*args) -> a server pulling the stand-in's Call Log every second."""
    def start(*args, every=1, **options):
        return start_server(SAMPLE_CONTACTS, "--calls-db", db, "--timezone", "UTC",
                            "--voicenter-code", CODE, "--voicenter-api", standin.url,
                            "--voicenter-monitor", standin.url, "--call-log-every", every,
                            *args, **options)
    return start


def stored(db):
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {ivrid: (started, status, json.loads(raw)) for ivrid, started, status, raw
                in connection.execute("SELECT ivrid, started, status, raw FROM cdrs")}
    finally:
        connection.close()


def pulled(server):
    """/health's body once a pull has succeeded."""
    return wait_until(lambda: (lambda body: body if body["call_log_pulled_at"] and
                               body["call_log"] == "ok" else None)(server.health()),
                      timeout=60, what="a good pull of the Call Log")


def test_a_test_server_with_a_code_asks_stand_ins_only(start_server, standin):
    """A server given the code asks Voicenter's APIs at once: a test that names a
    stand-in for one of them and not the other is stopped before the server starts."""
    with pytest.raises(pytest.fail.Exception, match="--voicenter-monitor"):
        start_server(SAMPLE_CONTACTS, "--voicenter-code", CODE, "--voicenter-api",
                     standin.url)
    with pytest.raises(pytest.fail.Exception, match="--voicenter-api"):
        start_server(SAMPLE_CONTACTS, env={"POPUP_VOICENTER_CODE": CODE,
                                           "POPUP_VOICENTER_MONITOR": standin.url})
    with pytest.raises(pytest.fail.Exception, match="--voicenter-monitor"):
        start_server(SAMPLE_CONTACTS, "--voicenter-code", CODE, "--voicenter-api",
                     standin.url, "--voicenter-monitor", "https://monitor.voicenter.co.il")
    assert standin.requests == [] and standin.extension_requests == 0


def test_every_record_of_the_day_arrives_with_every_field_asked_for(pulling, standin, db):
    now = time.time()
    standin.records = day_of_records(300, end=now - 300)
    server = pulling()
    pulled(server)
    # The agents' names come from the stand-in too, never from Voicenter itself.
    wait_until(lambda: server.health()["voicenter"].startswith("ok: 4 extensions"),
               what="the stand-in's extension list")
    assert standin.extension_requests >= 1
    kept = stored(db)
    assert set(kept) == {record["CallID"] for record in standin.records}
    for record in standin.records:
        started, status, raw = kept[record["CallID"]]
        assert started == record["DateEpoch"]  # Date, true UTC, is the call's start
        assert status == record["DialStatus"]
        assert raw["CallID"] == record["CallID"] and raw["Date"] == record["Date"]
        assert raw["CallerExtension"] == record["Callerextension"]  # as received, whole
    first = standin.requests[0]["body"]
    assert set(first["fields"]) == set(popup_server.CALL_LOG_FIELDS)
    assert {"CallID", "Date", "DialStatus", "Type", "CdrType", "CallerNumber",
            "TargetNumber", "DID", "Duration", "RecordURL", "RepresentativeName",
            "Callerextension", "Targetextension"} <= set(first["fields"])
    # A first start asks for the last day, in UTC as the API wants.
    start = dt.datetime.fromisoformat(first["search"]["fromdate"] + "+00:00").timestamp()
    assert now - 86400 - 5 <= start <= now - 86400 + 60
    # The calls page lists them: an answered queue call with its agent, a missed one.
    day = dt.datetime.fromtimestamp(standin.records[0]["DateEpoch"], dt.timezone.utc)
    rows = {row["ivrid"]: row for row in calls_csv(server, day=day.date().isoformat())}
    of_day = [r for r in standin.records if utc(r["DateEpoch"])[:10] == str(day.date())]
    assert {r["CallID"] for r in of_day} <= set(rows)
    answered = next(r for r in of_day if r["DialStatus"] == "ANSWER"
                    and r["Type"] == "Incoming Call")
    row = rows[answered["CallID"]]
    assert (row["status"], row["recording"]) == ("ANSWER", answered["RecordURL"])
    assert row["time"].endswith(utc(answered["DateEpoch"])[11:19])


def test_a_day_over_10000_records_arrives_whole(pulling, standin, db):
    standin.records = day_of_records(23_456, end=time.time() - 300, seed=11)
    pulled(pulling())
    assert len(stored(db)) == 23_456
    answers = [r for r in standin.requests if r["answered"] == 0]
    assert any(r["total"] > 10_000 for r in answers)  # it had to split
    assert all(r["returned"] <= 10_000 for r in answers)


def test_the_rate_limit_holds_on_real_time():
    limit = popup_server.RateLimit(4, 0.5)
    stop = threading.Event()
    before, after = [], []
    for _ in range(13):
        before.append(time.monotonic())
        assert limit.wait(stop)
        after.append(time.monotonic())
    # No 5 requests within any half second: the 5th after any 4 waits its turn.
    assert all(after[i + 4] - before[i] >= 0.5 for i in range(len(before) - 4))
    full = popup_server.RateLimit(1, 60.0)
    assert full.wait(stop)
    stop.set()
    assert not full.wait(stop)  # a stopping server does not wait for its turn


def test_never_more_than_30_requests_a_minute(pulling, standin, db):
    # 10,001 records in four seconds: halving the day down to them takes more than 30
    # requests, which Voicenter takes at 30 a minute.
    end = time.time() - 7200
    standin.records = day_of_records(10_001, end=end, span=4, seed=3)
    server = pulling()
    wait_until(lambda: len(standin.requests) >= 30, timeout=90,
               what="30 requests to the Call Log")
    time.sleep(5)  # the 31st may not come until a minute after the first
    assert len(standin.requests) == 30, [r["answered"] for r in standin.requests]
    assert standin.most_in_a_minute() <= 30 and standin.rate_refusals == 0
    assert server.lookup("0722776772")["STATUS"] == "OK"


def test_error_1_waits_and_tries_again(pulling, standin, db):
    standin.records = day_of_records(20, end=time.time() - 300)
    standin.fail, standin.fail_first = 1, 2
    server = pulling(every=3600)  # one pull: it is that pull that waits and goes on
    pulled(server)
    assert [r["answered"] for r in standin.requests[:3]] == [1, 1, 0]
    assert len(stored(db)) == 20


def _push(record, time_field):
    return {"ivruniqueid": record["CallID"], "caller": record["CallerNumber"],
            "target": record["TargetNumber"], "did": record["DID"], "time": time_field,
            "duration": record["Duration"], "status": record["DialStatus"],
            "type": record["Type"], "aiData": {"insights": {"summary": "pushed"}}}


def test_pushed_and_pulled_records_of_one_call_are_one_call(pulling, standin, db):
    now = int(time.time())
    rng = __import__("random").Random(5)
    both = make_record(now - 900, rng, Type="Incoming Call", CdrType=1,
                       DialStatus="ANSWER", CallerNumber="0722776772")
    popup_and_pull = make_record(now - 800, rng, Type="Incoming Call", CdrType=1,
                                 DialStatus="ANSWER", CallerNumber="0541234567")
    pulled_only = make_record(now - 700, rng, Type="Queue", CdrType=8,
                              DialStatus="ABANDONE", CallerNumber="0521234567")
    standin.records = [both, popup_and_pull, pulled_only]
    server = pulling(every=3600)  # one pull, at the start
    pulled(server)
    # The push of `both` comes after its pull: acknowledged, and still one call.
    assert server.post_json("/cdr", _push(both, now - 900)).json()["Err"] == 0
    for phase in ("Ringing", "Talking", "Hangup"):
        server.get("/popup", {"phone": "0541234567", "ivrid": popup_and_pull["CallID"],
                              "statusCall": phase})
    day = dt.datetime.fromtimestamp(now - 900, dt.timezone.utc).date().isoformat()

    def rows():
        found = [row["ivrid"] for row in calls_csv(server, day=day)]
        return found if popup_and_pull["CallID"] in found and len(found) >= 3 else None
    found = wait_until(rows, what="the calls on the calls page")
    assert sorted(found) == sorted(r["CallID"] for r in standin.records)  # 3 calls
    page = server.get("/calls", {"day": day}).text
    for record in standin.records:
        assert page.count(f'data-ivrid="{record["CallID"]}"') == 1


def test_a_push_then_its_pull_is_one_call(start_server, standin, db):
    now = int(time.time())
    record = make_record(now - 600, __import__("random").Random(9), DialStatus="ANSWER",
                         Type="Incoming Call", CdrType=1)
    standin.records = [record]
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--timezone", "UTC",
                          "--voicenter-code", CODE, "--voicenter-api", standin.url,
                          "--voicenter-monitor", standin.url,
                          "--call-log-every", "0")  # no pull yet: the push first
    assert server.post_json("/cdr", _push(record, now - 600)).json()["Err"] == 0
    server.stop()
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--timezone", "UTC",
                          "--voicenter-code", CODE, "--voicenter-api", standin.url,
                          "--voicenter-monitor", standin.url, "--call-log-every", "3600")
    pulled(server)
    assert len(standin.requests) == 1 and standin.requests[0]["returned"] == 1
    (kept,) = stored(db).values()
    assert kept[2]["aiData"] == {"insights": {"summary": "pushed"}}  # the first is kept
    assert (kept[0], kept[1]) == (now - 600, "ANSWER")
    day = dt.datetime.fromtimestamp(now - 600, dt.timezone.utc).date().isoformat()
    assert [(row["ivrid"], row["summary"]) for row in calls_csv(server, day=day)] == [
        (record["CallID"], "pushed")]


def test_a_push_after_its_pull_fills_in_what_the_call_log_lacks(pulling, standin, db):
    # Voicenter re-sends a push it was refused (or the server was down): its pull came
    # first. The Call Log has no talk time, AI summary or extenUser; the push has.
    now = int(time.time())
    record = make_record(now - 900, __import__("random").Random(12), Type="Incoming Call",
                         CdrType=1, DialStatus="ANSWER", CallerNumber="0541234567",
                         Targetextension="", RepresentativeName="", RepresentativeCode="")
    standin.records = [record]
    server = pulling(every=3600)  # one pull, at the start
    pulled(server)
    (before,) = stored(db).values()
    push = dict(_push(record, now - 890), actualCallDuration=record["Duration"] - 7,
                extenUser="SIPSIP7", status="ANSWER")
    for _ in range(2):  # a re-sent identical push: acknowledged, nothing doubled
        resp = server.post_json("/cdr", push)
        assert resp.status == 200 and resp.json()["Err"] == 0, resp
    kept = stored(db)
    assert list(kept) == [record["CallID"]]
    started, status, raw = kept[record["CallID"]]
    assert (started, status) == before[:2] == (now - 900, "ANSWER")  # the pull's start
    assert raw["aiData"] == {"insights": {"summary": "pushed"}} and raw["CallID"] == \
        record["CallID"]  # the fields as received joined, the pull's kept
    day = dt.datetime.fromtimestamp(now - 900, dt.timezone.utc).date().isoformat()
    (row,) = calls_csv(server, day=day)
    assert row["ivrid"] == record["CallID"] and row["outcome"] == "answered"
    assert (row["duration (s)"], row["summary"]) == (str(record["Duration"] - 7), "pushed")
    assert "SIPSIP7" in row["answered by"]
    page = server.get("/calls", {"day": day}).text
    assert page.count(f'data-ivrid="{record["CallID"]}"') == 1


def test_a_pushed_and_a_pulled_transfer_are_one_record_and_no_clients_call(
        pulling, standin, db):
    now = int(time.time())
    first = make_record(now - 1000, __import__("random").Random(13), Type="Incoming Call",
                        CdrType=1, DialStatus="ANSWER", CallerNumber="0541234567")
    # The pulled XferCDR has no CustomData (the Call Log's guide only shows it there).
    transfer = make_record(now - 900, __import__("random").Random(14), Type="XferCDR",
                           CdrType=13, DialStatus="ANSWER", CallerNumber="0541234567")
    del transfer["CustomData"]
    standin.records = [first, transfer]
    server = pulling(every=3600)
    pulled(server)
    # tests/fixtures/voicenter/cdr-transfer.json: the push of the same transfer.
    pushed = json.loads((Path(__file__).parent / "fixtures" / "voicenter" /
                         "cdr-transfer.json").read_text("utf-8"))["cdr"]
    pushed.update(ivruniqueid=transfer["CallID"], time=now - 900, caller="0541234567",
                  OriginalIvrUniqueID=first["CallID"])
    assert server.post_json("/cdr", pushed).json()["Err"] == 0
    assert sorted(stored(db)) == sorted([first["CallID"], transfer["CallID"] + "#transfer"])
    day = dt.datetime.fromtimestamp(now - 900, dt.timezone.utc).date().isoformat()
    assert [row["ivrid"] for row in calls_csv(server, day=day)] == [first["CallID"]]
    assert f'data-ivrid="{transfer["CallID"]}' not in server.get("/calls", {"day": day}).text


@pytest.mark.parametrize("fail, health_words, page_words", [
    (2, "refused the API code", ("refused the API code", "קוד ה-API")),
    (4, "in Voicenter's CPanel, under API Settings",
     ("CPanel, under API Settings", "תחת הגדרות API")),
    (5, "date range invalid", ("date range invalid", "טווח התאריכים")),
    ("500", "could not be reached (it answered HTTP 500)",
     ("could not be reached", "לא ניתן היה להגיע")),
    ("html", "could not be reached (its answer is not JSON)",
     ("could not be reached", "לא ניתן היה להגיע")),
    ("nolist", "not its record list", ("not its record list", "אינו רשימת הרשומות")),
    ("403", "Voicenter refused this server (HTTP 403): its address is not authorised; "
     "authorise this server's public IP address in Voicenter's CPanel, under API Settings",
     ("refused this server (HTTP 403)", "הכתובת שלו אינה מאושרת")),
])
def test_each_error_is_said_on_health_and_the_calls_page_and_popups_go_on(
        pulling, standin, db, fail, health_words, page_words):
    standin.records = day_of_records(30, end=time.time() - 300)
    standin.fail = fail
    server = pulling()

    def failing():
        body = server.health()
        return body if health_words in body["call_log"] else None
    body = wait_until(failing, timeout=30, what="the error on /health")
    assert server.get("/health").status == 503 and body["status"] == "error"
    assert body["call_log_pulled_at"] is None
    for words, language in zip(page_words, ("en", "he")):
        page = server.get("/calls", headers={"Accept-Language": language}).text
        assert 'id="call-log"' in page and words in page, language
        if fail == "403":  # reached, and refused: not "could not be reached"
            assert "could not be reached" not in page and "לא ניתן היה להגיע" not in page
    assert server.lookup("0722776772")["STATUS"] == "OK"
    # It mends by itself: the next pull succeeds, and the time of the last good pull
    # stays shown when it fails again.
    standin.fail = None
    body = pulled(server)
    assert len(stored(db)) == 30
    standin.fail = fail
    body = wait_until(failing, timeout=30, what="the error again")
    assert body["call_log_pulled_at"] is not None
    page = server.get("/calls", headers={"Accept-Language": "en"}).text
    assert "Last good pull:" in page
    assert CODE not in server.log_text() + page + json.dumps(body)


def test_a_field_name_voicenter_does_not_take_is_said_and_nothing_is_lost(
        pulling, standin, db):
    """The server asks for each field it keeps by the name the guide lists; were
    Voicenter to stop taking one, the pull is refused, said in Voicenter's words."""
    standin.records = day_of_records(10, end=time.time() - 300)
    standin.fields = standin.fields - {"DepartmentName"}
    server = pulling()
    body = wait_until(lambda: (lambda b: b if "refused" in b["call_log"] else None)(
        server.health()), what="the refusal on /health")
    assert body["call_log"] == ("Voicenter's Call Log refused the request (error 3: "
                                "Invalid fields)")
    assert [r["answered"] for r in standin.requests][:1] == [3]
    standin.fields = standin.fields | {"DepartmentName"}
    pulled(server)
    assert len(stored(db)) == 10


def test_a_hung_call_log_is_cut_at_its_timeout_and_popups_go_on(pulling, standin, db):
    standin.records = day_of_records(10, end=time.time() - 300)
    standin.fail = "hang"
    server = pulling()
    wait_until(lambda: standin.requests, what="the pull's request")
    for _ in range(20):  # the pull waits for Voicenter; the pop-ups do not
        assert server.lookup("0722776772")["STATUS"] == "OK"
    body = wait_until(lambda: (lambda b: b if "timed out" in b["call_log"] else None)(
        server.health()), timeout=popup_server.CALL_LOG_TIMEOUT + 30,
        what="the timeout on /health")
    assert "could not be reached" in body["call_log"]
    standin.fail = None
    standin.release()
    pulled(server)
    assert len(stored(db)) == 10


def test_an_answer_that_trickles_in_is_cut_at_the_whole_requests_limit(standin):
    standin.fail = "trickle"
    with pytest.raises(popup_server.VoicenterUnreachable, match="within 2 s"):
        popup_server.voicenter_request(standin.url + "/hub/cdr/", {"code": CODE},
                                       timeout=1.0, whole=2.0)
    assert [r["answered"] for r in standin.requests] == ["trickle"]


def test_a_restart_does_not_pull_the_same_window_twice(pulling, standin, db):
    now = time.time()
    standin.records = day_of_records(500, end=now - 60)
    server = pulling(every=3600)
    pulled(server)
    first_run = list(standin.requests)
    server.stop()
    standin.records += day_of_records(5, end=time.time(), span=30, seed=99)
    server = pulling(every=3600)
    # /health says "ok" with the first run's pulled_at before the second pull stored
    # anything: what is waited for is the second pull's records, stored.
    wait_until(lambda: len(stored(db)) == 505, timeout=60, what="the second pull's calls")
    pulled(server)
    second = standin.requests[len(first_run)]
    last_to = dt.datetime.fromisoformat(
        first_run[-1]["body"]["search"]["todate"] + "+00:00").timestamp()
    start = dt.datetime.fromisoformat(
        second["body"]["search"]["fromdate"] + "+00:00").timestamp()
    # From where the first run got to, less the overlap: not the whole day again.
    assert start == pytest.approx(last_to - popup_server.CALL_LOG_OVERLAP, abs=1)
    assert second["returned"] < 100
    assert len(stored(db)) == 505


def test_without_a_code_or_with_every_0_nothing_is_pulled(start_server, standin, db,
                                                          pulling):
    for args in ((), ("--voicenter-code", CODE, "--call-log-every", "0")):
        server = start_server(SAMPLE_CONTACTS, "--calls-db", db, "--voicenter-api",
                              standin.url, "--voicenter-monitor", standin.url, *args)
        body = server.health()
        assert body["call_log"] == "off" and body["status"] == "ok"
        page = html.unescape(server.get("/calls").text)
        assert 'id="call-log"' not in page
        # Without the pull, the calls known from CDRs alone come only by the push.
        assert "come from Voicenter's CDR notifications" in page
        server.stop()
    assert standin.requests == []
    server = pulling(every=3600)
    page = html.unescape(server.get("/calls").text)
    assert "come to this page from Voicenter's Call Log, which this server pulls" in page


@pytest.fixture
def israel_local_time(monkeypatch):
    """This process's local time is Israel's (as on an office's machine)."""
    monkeypatch.setenv("TZ", "Asia/Jerusalem")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_record_is_mapped_to_a_pushed_cdrs_fields(israel_local_time):
    record = make_record(1718010298, __import__("random").Random(1), Type="Extension "
                         "Outgoing", CdrType=4, Callerextension="SIPSIP1", DialStatus="ANSWER",
                         RepresentativeName="John Doe",
                         CustomData={"OriginalIvrUniqueID": "2024061012000011aa"})
    del record["Callerextension"]
    record["CallerExtension"] = "SIPSIP1"  # the guide's answer spells it so
    fields = popup_server.call_log_record(record)
    assert {key: fields[key] for key in (
        "ivruniqueid", "time", "status", "type", "caller", "target", "did", "duration",
        "record", "representative_name", "callerextension", "extenUser",
        "OriginalIvrUniqueID")} == {
        "ivruniqueid": record["CallID"], "time": 1718010298.0,
        "status": record["DialStatus"], "type": "Extension Outgoing",
        "caller": record["CallerNumber"], "target": record["TargetNumber"],
        "did": record["DID"], "duration": record["Duration"],
        "record": record["RecordURL"], "representative_name": "John Doe",
        "callerextension": "SIPSIP1", "extenUser": record["Targetextension"],
        "OriginalIvrUniqueID": "2024061012000011aa"}
    # The agent of an outgoing call is its calling extension, a push's rule (cdr_row).
    assert popup_server.cdr_row(fields, "IL", 1718010400, true_time=True)[11] == "SIPSIP1"
    assert all(fields[key] == value for key, value in record.items())  # kept whole
    without_type = dict(record, Type="", CdrType=8)
    assert popup_server.call_log_record(without_type)["type"] == "Queue"
    no_zone = dict(record, Date="2024-06-10T09:04:58")  # UTC, whatever the machine's
    assert popup_server.call_log_record(no_zone)["time"] == 1718010298.0
    for broken in (dict(record, CallID=""), dict(record, Date="soon", DateEpoch=None),
                   "not a record", None):
        assert popup_server.call_log_record(broken) is None


class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def module_standin():
    with CallLogStandin(code=CODE) as running:
        yield running


@settings(max_examples=25)
@given(data=st.data(), cap=st.integers(1, 12))
def test_however_the_records_crowd_every_one_arrives_once(module_standin, tmp_path_factory,
                                                          data, cap):
    # The splitting rule for every spread of a day's records (the API's cap made small
    # so that crowds are cheap): every record arrives as long as no second holds more
    # than one answer can; the real server's pull, against the stand-in over HTTP.
    ago = data.draw(st.lists(st.one_of(  # seconds before now: anywhere, or in crowds
        st.integers(60, 86400 - 60), st.sampled_from([50_000, 50_001, 3600, 3601, 3602])),
        max_size=40))
    now = int(time.time())
    seconds = [now - before for before in ago]
    per_second = {}
    for second in seconds:
        per_second[second] = per_second.get(second, 0) + 1
    seconds = [s for s in seconds if per_second[s] <= cap]  # what a cap can hold at all
    rng = __import__("random").Random(len(seconds))
    module_standin.records = [make_record(second, rng) for second in seconds]
    module_standin.max_hits = cap
    module_standin.rate = (10 ** 6, 60.0)  # the limit is the puller's; here, not tested
    module_standin.requests.clear()
    db = tmp_path_factory.mktemp("pull") / "calls.sqlite"
    config = popup_server.parse_config(
        [str(SAMPLE_CONTACTS), "--calls-db", str(db), "--voicenter-code", CODE,
         "--voicenter-api", module_standin.url], {})
    puller = popup_server.CallLogPuller(config, db, rate=(10 ** 6, 60.0))
    warnings = _Warnings()
    popup_server.log.addHandler(warnings)
    try:
        puller.pull()
    finally:
        popup_server.log.removeHandler(warnings)
    assert puller.trouble is None
    assert not warnings.lines  # no window was left with records it could not split
    kept = stored(db) if db.exists() else {}
    assert set(kept) == {record["CallID"] for record in module_standin.records}
    assert all(r["returned"] <= cap for r in module_standin.requests)
    assert len(module_standin.requests) <= 1 + 4 * 17 * max(1, len(seconds))
