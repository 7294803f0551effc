"""How calls are made of what Voicenter sends, and kept (the calls store, through the
module's functions and over HTTP as /calls.csv gives them): the pop-up's phases in
its three formats, out of order or repeated; ring groups, one request a phase and
station; CDRs of each type and status, their `time` in Israel's wall-clock, call-backs
by Click2Call, Voicenter's AI summary (each payload said to be Voicenter's is a
fixture in tests/fixtures/voicenter/, saying where it comes from); missed callers and
what resolves them (a later answered call, a call back, a mark), their tries and
withheld callers; the recorder's events; the time zone's days; and how long calls
are kept."""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
import logging
import re
import sqlite3
import time
import zoneinfo

import pytest
from hypothesis import given, settings, strategies as st

import popup_server as ps
from conftest import (CDR_OK, SAMPLE_CONTACTS, calls_by_ivrid, calls_csv, israel_epoch,
                      send_phase, voicenter_fixture, wait_until)

TODAY = dt.date.today()
ISRAEL = zoneinfo.ZoneInfo("Asia/Jerusalem")
ANSWER = ps.PopupAnswer(1, "John Doe", "Voicenter", "", 972722776772)
JOHN = "+972722776772"  # John Doe in data/contacts.csv
NOA = "+972541234567"   # נועה כהן

AGENTS = ("extension,name\nSIP101,Avi Cohen\nSIP102,Bat-El Levi\nSIP103,Carmel Ron\n"
          "KGpK4iWq,Dana Levi\nSIPSIP,Yossi Mor\nNaDzw5Ol,Gil Tal\n")


def israel_clock(seconds):
    return dt.datetime.fromtimestamp(seconds, ISRAEL).strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def db(tmp_path):
    return tmp_path / "state" / "calls.sqlite"


@pytest.fixture
def office(start_server, db, tmp_path):
    agents = tmp_path / "agents.csv"
    agents.write_text(AGENTS, encoding="utf-8")
    # Kept 3650 days: the SDK's sample CDR is of 2020, and the 90-day prune would
    # otherwise delete it while a test reads it.
    return start_server(SAMPLE_CONTACTS, "--calls-db", db, "--agents", agents,
                        "--timezone", "Asia/Jerusalem", "--calls-keep-days", "3650")


def post_cdr(server, record, **changes):
    resp = server.post_json("/cdr", {**copy.deepcopy(record), **changes})
    assert (resp.status, resp.json()) == (200, CDR_OK), resp
    return resp


def recent(duration=0, ago=5):
    """The CDR `time` (Israel's wall-clock) of a call that ended `ago` s ago."""
    return israel_epoch(time.time() - ago - duration)


def record_all(path, events):
    """Record (fields, total, name) events through a real CallRecorder, then close it."""
    recorder = ps.CallRecorder(path, keep_days=90).start()
    for fields, name in events:
        total = 1 if name else 0
        e164 = ps.normalize_number(fields["phone"])
        answer = ps.PopupAnswer(total, name or "", "Voicenter" if name else "", "",
                           int(e164[1:]) if e164 else None)
        recorder.record(fields, answer)
    recorder.close()


def call(ivrid, phase, phone="0722776772", **extra):
    return {"ivrid": ivrid, "status": phase, "phone": phone, **extra}


def record(db, *events):
    """(ivrid, phase, fields...) events through a real CallRecorder."""
    recorder = ps.CallRecorder(db, keep_days=90).start()
    for ivrid, phase, *extra in events:
        recorder.record({"phone": "0722776772", "ivrid": ivrid, "status": phase,
                         **(extra[0] if extra else {})}, ANSWER)
    recorder.close()


def missed(db, **options):
    return [(c.e164, c.tries, c.resolved) for c in ps.missed_callers(db, TODAY, **options)]


# The pop-up's phases ------------------------------------------------------------------


def test_phases_out_of_order_and_repeated_build_one_call_each(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [
        (call("A", "Hangup"), "John Doe"),            # the hang-up arrives first
        (call("A", "Ringing"), "John Doe"),
        (call("A", "Ringing"), "John Doe"),           # a repeated delivery
        (call("B", "Ringing", phone="0541234567"), "Noa"),
        (call("B", "Answer", phone="0541234567", extenUser="agent7"), "Noa"),
        (call("B", "Hangup", phone="0541234567"), "Noa"),
        (call("C", "Ringing", phone="0509999999"), None),
    ])
    calls = {c.ivrid: c for c in ps.calls_of_day(db, TODAY)}
    assert set(calls) == {"A", "B", "C"}
    assert calls["A"].outcome == "missed"
    assert calls["B"].outcome == "answered" and calls["B"].answered_by == "agent7"
    assert calls["C"].outcome == "in progress" and calls["C"].name == ""
    rows = sqlite3.connect(db).execute(
        "SELECT COUNT(*) FROM events WHERE ivrid = 'A'").fetchone()
    assert rows == (2,)  # Ringing once, Hangup once


def test_missed_calls_come_first_and_count_the_callers_tries(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [
        (call("1", "Ringing", phone="0541234567"), "Noa"),
        (call("1", "Answer", phone="0541234567"), "Noa"),
        (call("2", "Ringing"), "John Doe"),
        (call("2", "Hangup"), "John Doe"),
        (call("3", "Ringing"), "John Doe"),
        (call("3", "Hangup"), "John Doe"),
    ])
    calls = ps.calls_of_day(db, TODAY)
    assert [c.outcome for c in calls] == ["missed", "missed", "answered"]
    assert [c.tries for c in calls] == [2, 2, 1]


def test_a_hangup_that_says_it_was_answered_is_an_answered_call(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [(call("J", "Ringing"), "John Doe"),
                    (call("J", "Hangup", isAnswered="true"), "John Doe")])
    assert ps.calls_of_day(db, TODAY)[0].outcome == "answered"

FORMATS = {"get": "popup-get-phases.json", "form": "popup-form-phases.json",
           "json": "popup-json-phases.json"}


def test_ringing_talking_hangup_is_an_answered_call_in_each_of_the_three_formats(office):
    """Before: a GET or form call answered (Talking) was listed as missed, a JSON one
    as answered by nobody with no talk time."""
    calls = {how: voicenter_fixture(name)["phases"] for how, name in FORMATS.items()}
    for phase in (0, 1):  # Ringing, then Talking, for all three calls
        for how, phases in calls.items():
            send_phase(office, how, phases[phase])
    time.sleep(1.2)  # the agents talk for a second before hanging up
    for how, phases in calls.items():
        send_phase(office, how, phases[2])
    ivrids = {how: phases[0]["ivrid"] for how, phases in calls.items()}
    rows = wait_until(lambda: (lambda r: r if set(ivrids.values()) <= set(r) and all(
        r[i]["duration (s)"] for i in ivrids.values()) else None)(calls_by_ivrid(office)),
        what="the three calls, ended")
    expected_agents = {"get": "Yossi Mor", "form": "Gil Tal", "json": "Dana Levi"}
    for how, ivrid in ivrids.items():
        row = rows[ivrid]
        assert (row["outcome"], row["answered by"], row["name"]) == (
            "answered", expected_agents[how], "John Doe"), (how, row)
        assert int(row["duration (s)"]) >= 1, (how, row)  # Talking to Hangup
    page = office.get("/").text
    assert "Dana Levi" in page and "Yossi Mor" in page and "Gil Tal" in page


def test_answer_and_answered_are_the_talking_phase_whatever_their_case(office):
    for n, word in enumerate(("Answer", "ANSWERED", "talking", " Talking ")):
        ivrid = f"2026030110{n:02d}00case"
        for phase in ("Ringing", word, "Hangup"):
            send_phase(office, "get", {"phone": "0722776772", "ivrid": ivrid,
                                       "statusCall": phase, "extenUser": "SIP101"})
    # The pop-up's phases are recorded off its request path: wait for each call's last.
    rows = wait_until(lambda: (lambda r: r if len(r) == 4 and all(
        row["duration (s)"] for row in r.values()) else None)(calls_by_ivrid(office)),
        what="four calls, ended")
    assert {row["outcome"] for row in rows.values()} == {"answered"}
    assert {row["answered by"] for row in rows.values()} == {"Avi Cohen"}


def test_a_call_that_never_hangs_up_settles_as_no_answer_recorded(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("R", "Ringing"))
    started = ps.calls_of_day(db, TODAY)[0].started.timestamp()
    outcome = lambda minutes: ps.calls_of_day(  # noqa: E731
        db, TODAY, ring_timeout_seconds=600, now=started + minutes * 60)[0].outcome
    assert (outcome(9), outcome(11)) == ("in progress", "no answer recorded")
    summary = ps.day_page(db, TODAY, size=500, ring_timeout_seconds=600,
                           now=started + 11 * 60).summary
    assert summary.missed == 1 and summary.open_callers == 1


def test_a_lookup_without_an_ivrid_is_not_a_call(start_server, tmp_path):
    db = tmp_path / "calls.sqlite"
    server = start_server(SAMPLE_CONTACTS, "--calls-db", db)
    for _ in range(3):
        assert server.lookup("0722776772")["CLIENTNAME"] == "John Doe"
    server.lookup("0722776772", ivrid="real", statusCall="Ringing")
    server.stop()
    assert sqlite3.connect(db).execute("SELECT ivrid FROM events").fetchall() == [("real",)]


# Ring groups --------------------------------------------------------------------------


def test_a_ring_group_answered_by_one_station_is_one_answered_call_by_that_station(
        office, db):
    """Before: the first 'answered elsewhere' hang-up ended the call (a ~0 s call) and
    the answerer's own hang-up was dropped."""
    phases = voicenter_fixture("ring-group.json")["answered"]
    for fields in phases[:-1]:
        send_phase(office, "json", fields)
    time.sleep(1.2)
    send_phase(office, "json", phases[-1])  # the answerer hangs up
    ivrid = phases[0]["ivrid"]
    row = wait_until(lambda: (lambda r: r.get(ivrid) if r.get(ivrid, {}).get(
        "duration (s)") else None)(calls_by_ivrid(office)), what="the ring group's call, ended")
    assert (row["outcome"], row["answered by"], row["tries"]) == (
        "answered", "Bat-El Levi", "1")
    assert int(row["duration (s)"]) >= 1
    assert len(calls_csv(office)) == 1  # one call, not one a station
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    kept = connection.execute("SELECT phase, exten_user, cause FROM events").fetchall()
    connection.close()
    assert len(kept) == 7  # every station's every phase
    assert ("hangup", "SIP101", "Answered elsewhere") in kept


def test_answered_elsewhere_hang_ups_alone_neither_end_nor_miss_the_call(office):
    """A station told the call was answered elsewhere: the call was answered (by whom,
    the Talking phase will say) and has not ended."""
    phases = voicenter_fixture("ring-group.json")["answered"]
    for fields in phases[:4]:  # three stations ring; one is told it was answered elsewhere
        send_phase(office, "json", fields)
    wait_until(lambda: calls_csv(office), what="the call")
    time.sleep(0.5)  # the hang-up is recorded meanwhile
    (row,) = calls_csv(office)
    assert (row["outcome"], row["answered by"], row["duration (s)"]) == (
        "answered", "", ""), row
    assert 'class="waiting"' not in office.get("/").text


def test_a_ring_group_no_station_answers_is_one_missed_call_one_try(office):
    phases = voicenter_fixture("ring-group.json")["unanswered"]
    for fields in phases:
        send_phase(office, "form", fields)  # the form format: every field a string
    ivrid = phases[0]["ivrid"]
    row = wait_until(lambda: calls_by_ivrid(office).get(ivrid), what="the missed call")
    wait_until(lambda: calls_by_ivrid(office)[ivrid]["outcome"] == "missed", what="missed")
    row = calls_by_ivrid(office)[ivrid]
    assert (row["tries"], row["answered by"], row["duration (s)"]) == ("1", "", "")
    assert len(calls_csv(office)) == 1
    page = office.get("/").text
    assert page.count('class="waiting" data-number="+972541234567"') == 1
    assert '<td class="tries">1</td>' in page


@st.composite
def ring_groups(draw):
    """A ring group's requests in any order: every station rings and hangs up, one of
    them (or none) answered; the others, if one answered, told 'Answered elsewhere'."""
    stations = [f"SIP1{n:02d}" for n in range(draw(st.integers(1, 5)))]
    answerer = draw(st.sampled_from([None, *stations]))
    requests = []
    for station in stations:
        requests.append(("Ringing", station, ""))
        if station == answerer:
            requests += [(draw(st.sampled_from(["Talking", "Answer", "answered"])),
                          station, ""), ("Hangup", station, "Normal hangup")]
        else:
            requests.append(("Hangup", station, "Answered elsewhere" if answerer
                             else draw(st.sampled_from(["Normal hangup", ""]))))
    order = draw(st.permutations(range(len(requests))))
    if answerer:  # the answerer's own Talking comes before its own hang-up
        talking = next(i for i, r in enumerate(requests) if r[1] == answerer and r[0]
                       not in ("Ringing", "Hangup"))
        hangup = talking + 1
        order = list(order)
        if order.index(hangup) < order.index(talking):
            a, b = order.index(hangup), order.index(talking)
            order[a], order[b] = order[b], order[a]
    return answerer, [requests[i] for i in order], draw(st.sampled_from(
        ["status", "statusCall"]))


@settings(max_examples=40)
@given(group=ring_groups())
def test_a_ring_group_is_one_call_answered_by_its_talking_station_or_missed(
        tmp_path_factory, group):
    answerer, requests, field = group
    db = tmp_path_factory.mktemp("ring") / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90).start()
    john = ps.PopupAnswer(1, "John Doe", "Voicenter", "", 972722776772)
    for phase, station, cause in requests:
        recorder.record({"phone": "0722776772", "ivrid": "R1", field: phase,
                         "extenUser": station, "cause": cause,
                         "isAnswered": "false"}, john)
    recorder.close()
    (call,) = ps.calls_of_day(db, dt.date.today(), ring_timeout_seconds=3600)
    assert call.tries == 1
    if answerer:
        assert (call.outcome, call.agent_id) == ("answered", answerer)
        assert call.duration is not None and call.duration >= 0
    else:
        assert (call.outcome, call.agent_id, call.duration) == ("missed", "", None)


# CDRs: types and statuses -------------------------------------------------------------


def test_queue_and_incoming_calls_that_reached_nobody_are_missed_with_no_duration(office):
    """Before: each showed its queue time as the call's length; one whose isAnswer
    said 1 was answered."""
    queue = voicenter_fixture("cdr-queue.json")
    statuses = queue["missed_statuses"]
    for n, status in enumerate(statuses):
        for kind in ("Queue", "Incoming Call"):
            post_cdr(office, queue["cdr"], status=status, type=kind,
                     ivruniqueid=f"{kind[0]}{n}-{status}", time=recent(20),
                     caller=f"05012345{n:02d}", isAnswer=1 if n % 2 else 0,
                     representative_name="Sales Queue")  # no one answered all the same
    rows = calls_by_ivrid(office)
    assert len(rows) == 2 * len(statuses)
    for ivrid, row in rows.items():
        assert (row["outcome"], row["duration (s)"], row["answered by"]) == (
            "missed", "", ""), row
        assert row["status"] == ivrid.split("-", 1)[1]
        assert row["direction"] == "incoming", row  # a Queue CDR is a caller's call
    assert office.get("/").text.count('class="number"') >= len(statuses)


def test_a_queue_call_answered_shows_its_talk_time_and_who_answered(office):
    record = voicenter_fixture("cdr-ai-data.json")["cdr"]
    post_cdr(office, {k: v for k, v in record.items() if k != "aiData"},
             time=recent(80), ivruniqueid="Q-ANSWERED")
    without_extension = {k: v for k, v in record.items()
                         if k not in ("aiData", "extenUser")}
    post_cdr(office, without_extension, time=recent(80), ivruniqueid="Q-REP")
    rows = calls_by_ivrid(office)
    # actualCallDuration (talk time), not duration (which counts the queue wait)
    assert (rows["Q-ANSWERED"]["outcome"], rows["Q-ANSWERED"]["duration (s)"],
            rows["Q-ANSWERED"]["answered by"]) == ("answered", "42", "Bat-El Levi")
    assert rows["Q-REP"]["answered by"] == "Steve"  # representative_name next


def test_a_voicemail_is_a_missed_call_with_its_recording(office):
    voicemail = voicenter_fixture("cdr-voicemail.json")
    post_cdr(office, voicemail["cdr"], time=recent(31), ivruniqueid="VM1")
    post_cdr(office, {**voicemail["cdr"], **voicemail["answered_by_voicemail"]},
             time=recent(31), ivruniqueid="VM2", caller="0722776772")
    rows = calls_by_ivrid(office)
    for ivrid in ("VM1", "VM2"):
        assert (rows[ivrid]["outcome"], rows[ivrid]["duration (s)"]) == ("missed", "")
        assert rows[ivrid]["recording"] == voicemail["cdr"]["record"]
    page = office.get("/").text
    assert page.count('class="recording"') == 2
    assert 'class="waiting" data-number="+972541234567"' in page  # to be called back


def test_a_transfer_is_not_a_second_call(office):
    queue = voicenter_fixture("cdr-queue.json")["cdr"]
    post_cdr(office, queue, time=recent(20), caller="0722776772")
    post_cdr(office, voicenter_fixture("cdr-transfer.json")["cdr"], time=recent(64))
    (row,) = calls_csv(office)
    assert (row["ivrid"], row["tries"], row["outcome"]) == (
        queue["ivruniqueid"], "1", "answered")


def test_the_sdks_sample_cdr_is_one_answered_call_at_its_israel_time(office):
    record = voicenter_fixture("cdr-incoming-sdk.json")["cdr"]
    post_cdr(office, record)  # as printed: a call of 2020, re-sent years later
    (row,) = calls_csv(office, day="2020-02-04")
    assert (row["time"], row["outcome"], row["answered by"], row["duration (s)"]) == (
        "2020-02-04 19:55:39", "answered", "External IVR", "38")


def test_an_extension_outgoing_call_is_to_its_target_by_its_calling_extension(office):
    """Before: its agent was the representative_name ("John Doe"), while the same call
    pulled from the Call Log was its CallerExtension's."""
    record = voicenter_fixture("cdr-outgoing.json")["cdr"]
    post_cdr(office, record, time=recent(11))
    (row,) = calls_csv(office)
    assert (row["direction"], row["called number"], row["answered by"],
            row["duration (s)"]) == ("outgoing", "0501234567", "Yossi Mor", "11")
    assert row["caller"] == "0722776772"
    assert office.get("/caller/+972501234567").status == 200


def test_a_pushed_and_a_pulled_outgoing_call_name_the_same_agent(office, tmp_path):
    """One rule (cdr_row) for both ways a CDR comes: an outgoing call's agent is its
    calling extension, an incoming call's who answered (extenUser), then the
    representative. Before: a pushed Click2Call leg 2 named its representative, or
    nobody, the pulled one its CallerExtension."""
    leg2 = voicenter_fixture("cdr-outgoing.json")["click2call_leg2"]
    pushed = {"Extension Outgoing": voicenter_fixture("cdr-outgoing.json")["cdr"],
              "Click2Call leg2": {**leg2, "representative_name": ""}}
    for n, record in enumerate(pushed.values()):
        post_cdr(office, record, time=recent(12), ivruniqueid=f"PUSH-{n}")
    rows = calls_by_ivrid(office)
    assert [rows[f"PUSH-{n}"]["answered by"] for n in range(2)] == ["Yossi Mor"] * 2
    # The same calls as the Call Log gives them (call-log SKILL.md's field names and
    # the casing of its example answer; our values), stored through cdr_row too.
    date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(
        minutes=5)
    pulled = [ps.call_log_record({
        "CallID": f"PULL-{n}", "Date": date.isoformat().replace("+00:00", "Z"),
        "Type": kind, "DialStatus": "ANSWER", "Duration": 12,
        "CallerNumber": record["caller"], "TargetNumber": record["target"],
        "CallerExtension": record["callerextension"], "TargetExtension": "",
        "RepresentativeName": record["representative_name"]})
        for n, (kind, record) in enumerate(pushed.items())]
    db = tmp_path / "pulled.sqlite"
    assert ps.store_cdrs(db, pulled, true_time=True) == 2
    assert [call.agent_id for call in ps.calls_of_day(
        db, date.date(), zone=dt.timezone.utc, newest_first=True)] == ["SIPSIP"] * 2
    # Who answered an incoming call is still extenUser, then the representative.
    queue = {**voicenter_fixture("cdr-queue.json")["cdr"], "callerextension": "SIP103"}
    post_cdr(office, queue, time=recent(20), extenUser="SIP101", ivruniqueid="IN-1")
    post_cdr(office, queue, time=recent(20), representative_name="Sales desk",
             ivruniqueid="IN-2")
    rows = calls_by_ivrid(office)
    assert (rows["IN-1"]["answered by"], rows["IN-2"]["answered by"]) == (
        "Avi Cohen", "Sales desk")


def test_pulled_click2call_legs_are_one_outgoing_call_by_the_calling_agent(tmp_path):
    """The Call Log's records go through the same rules (cdr_row): both legs share the
    CallID; leg 1 never takes leg 2's place, and leg 2's agent is the caller's extension.
    The records are ours, with call-log SKILL.md's field names."""
    db = tmp_path / "calls.sqlite"
    date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(
        minutes=5)
    legs = [{"CallID": "20240601abc123def456", "Date": date.isoformat().replace(
                "+00:00", "Z"), "Type": kind, "DialStatus": "ANSWER", "Duration": 12,
             "CallerNumber": "0722776773", "TargetNumber": target,
             "CallerExtension": "SIPSIP" if kind.endswith("leg2") else "",
             "TargetExtension": "SIPSIP" if kind.endswith("leg1") else ""}
            for kind, target in (("Click2Call leg1", "SIPSIP"),
                                 ("Click2Call leg2", "972501234567"))]
    assert ps.store_cdrs(db, [ps.call_log_record(leg) for leg in legs],
                         true_time=True) == 2
    (call,) = ps.calls_of_day(db, date.date(), zone=dt.timezone.utc)
    assert (call.direction, call.e164, call.agent_id, call.started.timestamp()) == (
        "outgoing", "+972501234567", "SIPSIP", date.timestamp())


# Call-backs ---------------------------------------------------------------------------


def test_click2call_legs_after_a_missed_call_are_one_outgoing_call_that_calls_back(
        office):
    """Before: leg 2 was an incoming call from the office's own number, leg 1 a
    client's call, and the missed caller stayed waiting."""
    for phase in ("Ringing", "Hangup"):  # 050-1234567 calls and nobody answers
        send_phase(office, "get", {"phone": "0501234567", "ivrid": "2026030109000001miss",
                                   "statusCall": phase, "did": "0722776773"})
    wait_until(lambda: calls_by_ivrid(office).get("2026030109000001miss", {}).get("outcome")
               == "missed", what="the missed call")
    assert 'class="waiting" data-number="+972501234567"' in office.get("/").text
    legs = voicenter_fixture("cdr-outgoing.json")
    time.sleep(1.1)  # the agent calls back a second later; the CDRs come as it ends
    # Leg 1 first, with the same id as leg 2 (both carry Click2Call's CALLID).
    post_cdr(office, legs["click2call_leg1"], time=israel_epoch(time.time()))
    post_cdr(office, legs["click2call_leg2"], time=israel_epoch(time.time()))
    rows = calls_by_ivrid(office)
    ivrid = legs["click2call_leg2"]["ivruniqueid"]
    assert set(rows) == {"2026030109000001miss", ivrid}  # leg 1 is no client's call
    out = rows[ivrid]
    assert (out["direction"], out["outcome"], out["called number"], out["duration (s)"],
            out["recording"]) == ("outgoing", "outgoing", "972501234567", "9",
                                  legs["click2call_leg2"]["record"])
    assert out["caller"] == "0722776773"  # the office's line, as sent
    page = office.get("/").text
    listed = page.split('id="calls-heading"')[1]
    assert ">050-123-4567</a>" in listed  # the outgoing row names whom it called
    assert [r["called number"] for r in calls_csv(office) if r["direction"] != "outgoing"
            ] == [""]
    # The missed caller is resolved: called back, no longer waiting.
    assert 'class="resolved called-back" data-number="+972501234567"' in page
    assert 'class="waiting"' not in page


def test_call_backs_are_no_tries_of_the_client(office):
    """A number's tries are its calls to the office. Before: every call-back (Click2Call
    leg 2, Extension Outgoing) counted too, so a ring group nobody answered, called back
    once, read "Tries today: 2" on the calls page and in /calls.csv."""
    phases = voicenter_fixture("ring-group.json")["unanswered"]  # 054-1234567, nobody answers
    for fields in phases:
        send_phase(office, "json", fields)
    missed = phases[0]["ivrid"]
    wait_until(lambda: calls_by_ivrid(office).get(missed, {}).get("outcome") == "missed",
               what="the missed call")
    time.sleep(1.1)  # then the office calls back: twice by Click2Call, once by hand
    leg2 = voicenter_fixture("cdr-outgoing.json")["click2call_leg2"]
    for n, status in enumerate(("NOANSWER", "ANSWER")):
        post_cdr(office, leg2, ivruniqueid=f"C2C-{n}", status=status,
                 target="972541234567", time=israel_epoch(time.time()))
    outgoing = voicenter_fixture("cdr-outgoing.json")["cdr"]
    post_cdr(office, outgoing, ivruniqueid="OUT-NOA", target="0541234567",
             time=israel_epoch(time.time()))
    post_cdr(office, outgoing, ivruniqueid="OUT-NEW", target="0509876543",
             time=israel_epoch(time.time()))  # a number that never called
    rows = calls_by_ivrid(office)
    assert {ivrid: row["tries"] for ivrid, row in rows.items()} == {
        missed: "1", "C2C-0": "1", "C2C-1": "1", "OUT-NOA": "1", "OUT-NEW": "0"}
    page = office.get("/").text
    assert "Tries today: " not in page
    resolved = re.search(r'<tr class="resolved called-back" data-number="\+972541234567">'
                         r'.*?</tr>', page, re.S).group(0)
    assert '<td class="tries">1</td>' in resolved
    # The client's own calls still count: she calls again, and it is her second try.
    post_cdr(office, voicenter_fixture("cdr-queue.json")["cdr"], ivruniqueid="Q-NOA",
             caller="0541234567", status="ABANDONE", time=recent(20))
    rows = calls_by_ivrid(office)
    assert {ivrid: row["tries"] for ivrid, row in rows.items() if ivrid != "OUT-NEW"} \
        == dict.fromkeys((missed, "Q-NOA", "C2C-0", "C2C-1", "OUT-NOA"), "2")
    assert office.get("/").text.count("Tries today: 2") == 5


def _caller_calls(server, number, language):
    """{ivrid: (outcome, answered by)} of a caller's page's calls, as text."""
    page = server.get(f"/caller/{number}", headers={"Accept-Language": language}).text
    table = re.search(r'<table id="caller-calls">.*?</table>', page, re.S).group(0)
    text = lambda cell: " ".join(re.sub(r"<[^>]+>", "", cell).split())  # noqa: E731
    return {ivrid: tuple(text(cell) for cell in re.findall(
                r"<td[^>]*>(.*?)</td>", row, re.S)[1:3])
            for ivrid, row in re.findall(r'data-ivrid="([^"]+)">(.*?)</tr>', table, re.S)}


@pytest.mark.parametrize("language", ["en", "he"])
def test_the_callers_page_tells_an_answered_call_back_from_an_unanswered_one(office,
                                                                            language):
    """An outgoing call was made by an agent and answered, or not, by the client.
    Before: each read "answered by" its agent, with no status, answered or not."""
    leg2 = voicenter_fixture("cdr-outgoing.json")["click2call_leg2"]  # by SIPSIP: Yossi Mor
    post_cdr(office, voicenter_fixture("cdr-queue.json")["cdr"], ivruniqueid="IN",
             caller="0541234567", extenUser="SIP101", time=recent(20, ago=90))
    for n, changes in enumerate(({"status": "BUSY", "actualCallDuration": 0},
                                 {"status": "TE", "callerextension": "",
                                  "representative_name": "", "representative_code": ""},
                                 {"status": "ANSWER"})):
        post_cdr(office, leg2, **changes, ivruniqueid=f"C2C-{changes['status']}",
                 target="972541234567", time=israel_epoch(time.time() - 60 + 20 * n))
    column = 0 if language == "en" else 1
    text = lambda key, **values: ps.page_texts()[key][column].format(**values)  # noqa: E731
    assert _caller_calls(office, NOA, language) == {
        "IN": (text("outcome.answered"), "Avi Cohen"),
        "C2C-BUSY": (text("caller.not_reached_by", agent="Yossi Mor") + " (" +
                     text("call_status.BUSY") + ")", ""),
        "C2C-TE": (text("caller.not_reached") + " (TE)", ""),  # a status as sent
        "C2C-ANSWER": (text("caller.called_back_by", agent="Yossi Mor"), "")}


def test_an_unanswered_call_back_leaves_the_missed_caller_waiting(office):
    for phase in ("Ringing", "Hangup"):
        send_phase(office, "get", {"phone": "0501234567", "ivrid": "2026030109000002miss",
                                   "statusCall": phase})
    wait_until(lambda: calls_by_ivrid(office).get("2026030109000002miss", {}).get("outcome")
               == "missed", what="the missed call")
    time.sleep(1.1)
    leg2 = voicenter_fixture("cdr-outgoing.json")["click2call_leg2"]
    post_cdr(office, leg2, time=israel_epoch(time.time()), status="NOANSWER",
             actualCallDuration=0, ivruniqueid="C2C-NOANSWER")
    row = calls_by_ivrid(office)["C2C-NOANSWER"]
    assert (row["outcome"], row["duration (s)"]) == ("outgoing", "")
    assert 'class="waiting" data-number="+972501234567"' in office.get("/").text


# Voicenter's AI summary ---------------------------------------------------------------


def test_the_callers_page_shows_the_ai_summary_as_text_and_the_csv_has_it(office):
    record = voicenter_fixture("cdr-ai-data.json")["cdr"]
    summary = record["aiData"]["insights"]["summary"] + ' <script>alert("x")</script>'
    record["aiData"]["insights"]["summary"] = summary
    post_cdr(office, record, time=recent(80))
    (row,) = calls_csv(office)
    assert row["summary"] == summary
    page = office.get(f"/caller/{JOHN}").text
    assert "The caller reported dropped calls." in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert 'class="ai-summary"' in page


def test_an_ai_summary_sent_in_a_form_cdr_is_read_too(office):
    record = voicenter_fixture("cdr-ai-data.json")["cdr"]
    form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}
    form["time"] = str(recent(80))
    resp = office.post_form("/cdr", form)
    assert resp.json() == CDR_OK
    assert calls_csv(office)[0]["summary"].startswith("The caller reported")


# CDR times ----------------------------------------------------------------------------


def test_a_cdr_time_lands_at_the_true_moment_in_either_reading(office):
    """Before: a CDR written in Israel's wall-clock (as documented) was listed 2 or 3
    hours late."""
    ended = time.time() - 5
    queue = voicenter_fixture("cdr-queue.json")["cdr"]
    post_cdr(office, queue, ivruniqueid="IL", status="ABANDONE", duration=20,
             time=israel_epoch(ended - 20))
    post_cdr(office, queue, ivruniqueid="UTC", status="ABANDONE", duration=20,
             time=int(ended - 20), caller="0541234567")
    rows = calls_by_ivrid(office)
    assert rows["IL"]["time"] == rows["UTC"]["time"] == israel_clock(int(ended - 20))


def test_a_cdr_long_after_its_call_is_read_as_documented_unless_its_id_says_otherwise():
    start = dt.datetime(2026, 12, 3, 23, 30, tzinfo=ISRAEL).timestamp()
    late = start + 3 * 86400  # re-sent or pulled days later
    assert ps.cdr_start(israel_epoch(start), 60, late) == start
    # A true Unix time is known by the ivruniqueid's Israel-local beginning.
    assert ps.cdr_start(start, 60, late, "20261203233000abcd") == start
    assert ps.cdr_start(israel_epoch(start), 60, late, "20261203233000abcd") == start


#: Moments near midnight and the clock changes of 2026, in Israel: winter (UTC+2),
#: summer (UTC+3), the hour that repeats when the clocks go back (25 October, 01:00-02:00,
#: both times) and the hour skipped when they go forward (27 March, 02:00-03:00).
NEAR_MIDNIGHT_AND_CLOCK_CHANGES = [
    dt.datetime(2026, 12, 3, 23, 59, 30, tzinfo=ISRAEL),
    dt.datetime(2026, 12, 4, 0, 0, 30, tzinfo=ISRAEL),
    dt.datetime(2026, 7, 14, 23, 45, tzinfo=ISRAEL),
    dt.datetime(2026, 10, 24, 23, 59, 50, tzinfo=ISRAEL),
    dt.datetime(2026, 10, 25, 1, 30, tzinfo=ISRAEL),             # summer time, first 01:30
    dt.datetime(2026, 10, 25, 1, 30, fold=1, tzinfo=ISRAEL),     # winter time, second
    dt.datetime(2026, 3, 27, 1, 59, 50, tzinfo=ISRAEL),
    dt.datetime(2026, 3, 27, 3, 0, 10, tzinfo=ISRAEL),
    dt.datetime(2026, 3, 26, 23, 58, tzinfo=ISRAEL),
]


@pytest.mark.parametrize("moment", NEAR_MIDNIGHT_AND_CLOCK_CHANGES, ids=str)
@pytest.mark.parametrize("reading", ["Israel wall-clock", "Unix time"])
def test_cdr_times_near_midnight_and_clock_changes_land_on_their_day(tmp_path, moment,
                                                                     reading):
    """Before: one written in Israel's wall-clock landed 2 or 3 hours late, on the next
    day after 22:00 (21:00 in summer)."""
    db = tmp_path / "calls.sqlite"
    true = moment.timestamp()
    sent = israel_epoch(true) if reading == "Israel wall-clock" else true
    record = {**voicenter_fixture("cdr-queue.json")["cdr"], "ivruniqueid": "T1", "time": sent,
              "duration": 25, "status": "ABANDONE"}
    with ps._writing(db) as connection:  # as store_cdr, with the arrival given
        row = ps.cdr_row(record, "IL", true + 25 + 4)  # it comes as the call ends
        connection.execute(f"INSERT INTO cdrs VALUES ({', '.join('?' * len(row))})", row)
    (call,) = ps.calls_of_day(db, moment.date(), zone=ISRAEL)
    assert call.started == moment and call.started.utcoffset() == moment.utcoffset()
    assert ps.calls_of_day(db, moment.date() + dt.timedelta(days=1), zone=ISRAEL) == []


#: Calls near midnight and across the night the clocks went forward in Israel (27 March
#: 2026, 02:00 became 03:00): winter (UTC+2) before, summer (UTC+3) after.
AROUND_MARCH_2026 = [
    dt.datetime(2026, 3, 26, 23, 59, 30, tzinfo=ISRAEL),
    dt.datetime(2026, 3, 27, 0, 0, 30, tzinfo=ISRAEL),
    dt.datetime(2026, 3, 27, 1, 59, 50, tzinfo=ISRAEL),
    dt.datetime(2026, 3, 27, 3, 0, 10, tzinfo=ISRAEL),
    dt.datetime(2026, 3, 27, 23, 59, 50, tzinfo=ISRAEL),
    dt.datetime(2026, 3, 28, 0, 0, 10, tzinfo=ISRAEL),
]


def test_cdrs_in_israel_wall_clock_land_on_their_israel_day_over_http(office):
    """The server started with --timezone Asia/Jerusalem gets the CDRs of those calls as
    Voicenter documents their `time` (an epoch of Israel's wall-clock), months later (a
    re-sent or pulled record): each is on the calls page and in /calls.csv of its own
    Israel day, at its Israel time. Each call comes twice: with an ivruniqueid that
    begins with the call's Israel-local yyyymmddhhmmss as Voicenter's do, and with one
    that does not (the arrival alone must decide)."""
    queue = voicenter_fixture("cdr-queue.json")["cdr"]
    for n, moment in enumerate(AROUND_MARCH_2026):
        for ivrid in (moment.strftime("%Y%m%d%H%M%S") + f"vc{n}", f"plain-{n}"):
            post_cdr(office, queue, ivruniqueid=ivrid, time=israel_epoch(moment.timestamp()),
                     status="ABANDONE", caller=f"05012300{n:02d}")
    for day in ("2026-03-26", "2026-03-27", "2026-03-28"):
        expected = {(n, moment.strftime("%Y-%m-%d %H:%M:%S"))
                    for n, moment in enumerate(AROUND_MARCH_2026)
                    if moment.date().isoformat() == day}
        rows = calls_csv(office, day=day)
        assert len(rows) == 2 * len(expected), (day, rows)
        for row in rows:
            n = int(re.search(r"\d+$", row["ivrid"]).group(0))
            assert (n, row["time"]) in expected, (day, row)
        page = office.get("/calls", {"day": day}).text
        for n, moment in enumerate(AROUND_MARCH_2026):
            shown = f'id="call-plain-{n}"' in page
            assert shown == (moment.date().isoformat() == day), (day, n)
            if shown:
                row = page.split(f'id="call-plain-{n}"')[1].split("</tr>")[0]
                assert f"<td>{moment.strftime('%H:%M:%S')}</td>" in row, row


@given(true=st.integers(1_577_836_800, 1_924_991_999),  # 2020-2030
       duration=st.integers(0, 4 * 3600), delay=st.integers(0, 600),
       israel=st.booleans())
def test_a_cdr_that_comes_as_its_call_ends_is_read_right_in_either_reading(
        true, duration, delay, israel):
    sent = israel_epoch(true) if israel else true
    assert ps.cdr_start(sent, duration, true + duration + delay) == true


# Missed callers, and what resolves them -----------------------------------------------


def test_a_caller_who_tried_twice_is_one_row_resolved_by_a_later_answered_call(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("M1", "Ringing"), ("M1", "Hangup"), ("M2", "Ringing"), ("M2", "Hangup"))
    assert missed(db) == [(JOHN, 2, "")]
    assert ps.day_page(db, TODAY, size=500).summary.open_callers == 1
    record(db, ("A3", "Ringing"), ("A3", "Answer", {"extenUser": "201"}))
    assert missed(db) == [(JOHN, 2, "answered")]
    assert ps.day_page(db, TODAY, size=500).summary.open_callers == 0
    record(db, ("M4", "Ringing"), ("M4", "Hangup"))  # rings again, missed: open again
    assert missed(db) == [(JOHN, 3, "")]


def test_a_missed_caller_is_resolved_by_an_outgoing_cdr_to_them(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("M1", "Ringing"), ("M1", "Hangup"))
    assert ps.store_cdr(db, {"ivruniqueid": "OUT1", "type": "Outgoing Call",
                             "caller": "0722776773", "target": "972722776772",
                             "status": "ANSWER", "time": time.time() + 1})
    assert missed(db) == [(JOHN, 1, "called back")]
    (out,) = [c for c in ps.calls_of_day(db, TODAY) if c.ivrid == "OUT1"]
    assert (out.outcome, out.direction, out.e164) == ("outgoing", "outgoing", JOHN)


def test_a_missed_caller_is_resolved_by_a_mark_and_the_note_is_in_the_csv(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("M1", "Ringing"), ("M1", "Hangup"))
    assert ps.mark_call(db, "M1", note="left a message") is True  # a note alone
    assert missed(db) == [(JOHN, 1, "")]
    assert ps.mark_call(db, "M1", "called back", "spoke to him") is True
    assert missed(db) == [(JOHN, 1, "marked")]
    assert missed(db, open_only=True) == []
    assert ps.mark_call(db, "no-such-call", "handled") is False
    with pytest.raises(ValueError):
        ps.mark_call(db, "M1", "whatever")
    rows = list(csv.DictReader(io.StringIO("".join(ps.calls_csv_lines(ps.calls_of_day(db, TODAY)))[1:])))
    assert (rows[0]["mark"], rows[0]["note"]) == ("called back", "spoke to him")


def test_withheld_callers_are_each_their_own_row_and_names_come_from_the_index(tmp_path):
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90).start()
    nobody = ps.PopupAnswer(0, "", "", "", None)
    for n in range(2):
        recorder.record({"phone": "", "ivrid": f"W{n}", "status": "Hangup"}, nobody)
    recorder.close()
    ps.store_cdr(db, {"ivruniqueid": "Q", "caller": "0541234567", "status": "ABANDONE"})
    index = ps.load_index(SAMPLE_CONTACTS)
    callers = ps.missed_callers(db, TODAY, index=index)
    assert sorted((c.e164, c.tries) for c in callers) == [
        ("", 1), ("", 1), ("+972541234567", 1)]
    (noa,) = [c for c in callers if c.e164]
    assert noa.name == "נועה כהן" and noa.last_ivrid == "Q"


def test_withheld_callers_are_not_counted_as_one_caller_who_tried_many_times(tmp_path):
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90).start()
    answer = ps.PopupAnswer(0, "", "", "", None)
    for n in range(3):
        recorder.record({"phone": "", "ivrid": f"w{n}", "status": "Ringing"}, answer)
    recorder.close()
    assert [c.tries for c in ps.calls_of_day(db, dt.date.today())] == [1, 1, 1]


def test_a_numbers_recent_calls_incoming_and_outgoing(tmp_path):
    db = tmp_path / "calls.sqlite"
    record(db, ("M1", "Ringing"), ("M1", "Hangup"))
    ps.store_cdr(db, {"ivruniqueid": "OUT", "type": "outgoing", "target": "0722776772",
                      "time": time.time() + 5})
    ps.store_cdr(db, {"ivruniqueid": "OTHER", "caller": "0541234567"})
    calls = ps.calls_of_number(db, JOHN)
    assert [(c.ivrid, c.outcome) for c in calls] == [("OUT", "outgoing"), ("M1", "missed")]


# The recorder's events ----------------------------------------------------------------


@pytest.mark.parametrize("with_nul", [False, True])
@pytest.mark.parametrize("sqlite_has_json", [True, False])
def test_events_are_stored_exactly_as_recorded(tmp_path, monkeypatch, sqlite_has_json,
                                               with_nul):
    if not sqlite_has_json:  # the path for an SQLite built without JSON functions
        monkeypatch.setattr(ps, "_has_json", lambda connection: False)
    nul = "\0" if with_nul else ""  # a query can carry one: ?ivrid=a%00b
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90).start()
    fields = {"ivrid": f'q"uote{nul}\\d', "status": f"Answer{nul}",
              "phone": "+972 (72) 277-6772", "did": "035", "extenUser": "שלוחה 7",
              "direction": "in", "isAnswered": "true"}
    answer = ps.PopupAnswer(4294967295, f"דנה \"D\" {nul}לוי", "",
                            "https://x.example/?a=1&b=[2]", 972722776772)
    before = time.time()
    recorder.record(fields, answer)
    recorder.close()
    (row,) = sqlite3.connect(db).execute("SELECT * FROM events").fetchall()
    # The phase is read (Answer is Voicenter's Talking); one it cannot read is kept.
    assert row[:2] == (f'q"uote{nul}\\d', f"answer{nul}" if nul else "talking")
    assert isinstance(row[2], float) and before <= row[2] <= time.time()
    assert row[3:] == ("+972 (72) 277-6772", "+972722776772", "035", "שלוחה 7", "in", 1,
                       f"דנה \"D\" {nul}לוי", "", 4294967295, "https://x.example/?a=1&b=[2]",
                       "")


def test_a_recorder_far_behind_drops_new_events_logs_it_and_keeps_the_rest(tmp_path,
                                                                          caplog):
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90)  # not started: nothing is written yet
    answer = ps.PopupAnswer(1, "John", "", "", 972722776772)
    with caplog.at_level(logging.ERROR, logger="popup_server"):
        for n in range(ps.RECORD_BACKLOG + 3):
            recorder.record(call(f"c{n}", "Ringing"), answer)
    assert "call recording is behind; 1 events dropped so far" in caplog.text
    recorder.start()
    recorder.close()
    ivrids = {row[0] for row in sqlite3.connect(db).execute("SELECT ivrid FROM events")}
    assert len(ivrids) == ps.RECORD_BACKLOG and "c0" in ivrids  # the newest were dropped
    assert f"c{ps.RECORD_BACKLOG}" not in ivrids


def test_an_event_the_database_cannot_take_costs_only_itself(tmp_path):
    db = tmp_path / "calls.sqlite"
    recorder = ps.CallRecorder(db, keep_days=90)  # started below: one batch for all three
    answer = ps.PopupAnswer(0, "", "", "", None)
    recorder.record(call("before", "Ringing"), answer)
    recorder.record(call("bad", "Ringing", phone="\ud800"), answer)  # not UTF-8-able
    recorder.record(call("after", "Ringing"), answer)
    recorder.start()
    recorder.close()
    ivrids = {row[0] for row in sqlite3.connect(db).execute("SELECT ivrid FROM events")}
    assert ivrids == {"before", "after"}


# Days, and how long calls are kept ----------------------------------------------------


def test_days_begin_at_midnight_in_the_time_zone(tmp_path):
    db = tmp_path / "calls.sqlite"
    zone = zoneinfo.ZoneInfo("Asia/Jerusalem")
    day = dt.date(2026, 3, 27)  # Israel's clocks go forward at 02:00: a 23-hour day
    start = dt.datetime(2026, 3, 27, tzinfo=zone).timestamp()
    end = dt.datetime(2026, 3, 28, tzinfo=zone).timestamp()
    for ivrid, at in (("before", start - 1), ("first", start), ("last", end - 1),
                      ("after", end)):
        ps.store_cdr(db, {"ivruniqueid": ivrid, "time": israel_epoch(at),
                          "caller": "0722776772"})
    assert end - start == 23 * 3600
    calls = ps.calls_of_day(db, day, zone=zone)
    assert sorted(c.ivrid for c in calls) == ["first", "last"]
    assert {c.ivrid: c.started.strftime("%H:%M:%S %Z") for c in calls} == {
        "first": "00:00:00 IST", "last": "23:59:59 IDT"}
    utc = ps.calls_of_day(db, day, zone=zoneinfo.ZoneInfo("UTC"))
    assert sorted(c.ivrid for c in utc) == ["after", "last"]


def test_a_call_that_crosses_midnight_belongs_to_the_day_it_began(tmp_path):
    db = tmp_path / "calls #1.sqlite"  # a name with a URI character in it, too
    recorder = ps.CallRecorder(db, keep_days=90).start()
    answer = ps.PopupAnswer(1, "John", "", "", 972722776772)
    for phase in ("Ringing", "Hangup"):
        recorder.record({"phone": "0722776772", "ivrid": "night", "status": phase}, answer)
    recorder.close()
    today = dt.date.today()
    midnight = dt.datetime.combine(today, dt.time()).astimezone().timestamp()
    connection = sqlite3.connect(db)
    with connection:
        connection.execute("UPDATE events SET received_at = ? WHERE phase = 'ringing'",
                           (midnight - 10,))
        connection.execute("UPDATE events SET received_at = ? WHERE phase = 'hangup'",
                           (midnight + 10,))
    connection.close()
    assert [c.ivrid for c in ps.calls_of_day(db, today - dt.timedelta(days=1))] == ["night"]
    assert ps.calls_of_day(db, today) == []


def test_calls_older_than_the_kept_days_are_pruned(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [(call("new", "Ringing"), "John Doe")])
    connection = sqlite3.connect(db)
    with connection:
        connection.execute("UPDATE events SET received_at = ? WHERE ivrid = 'new'",
                           (time.time() - 10 * 86400,))
    connection.close()
    recorder = ps.CallRecorder(db, keep_days=5).start()  # prunes when it starts
    recorder.close()
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM events").fetchone() == (0,)


def test_the_csv_has_a_bom_and_the_hebrew_names(tmp_path):
    db = tmp_path / "calls.sqlite"
    record_all(db, [(call("H", "Ringing", phone="0541234567"), "נועה כהן"),
                    (call("H", "Hangup", phone="0541234567"), "נועה כהן")])
    text = "".join(ps.calls_csv_lines(ps.calls_of_day(db, TODAY)))
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:])))
    assert rows[0]["name"] == "נועה כהן" and rows[0]["outcome"] == "missed"
