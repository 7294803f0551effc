"""Property tests: whatever arrives at the server, it never fails with a 5xx and
always answers JSON carrying STATUS."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_contacts

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

FIELDS = ["phone", "ivrid", "extenUser", "did", "statusCall", "status", "token",
          "callerName", "currentCall"]


@pytest.fixture(scope="module")
def fuzz_server(start_module_server, tmp_path_factory):
    path = write_contacts(tmp_path_factory.mktemp("fuzz") / "contacts.csv", [
        ["John Doe", "Voicenter", "072-277-6772"],
        ["ישראל ישראלי", "חברה", "050-123-4567"],
        ["Shared One", "A", "03-555-1212"],
        ["Shared Two", "B", "+972 3 555 1212"],
        ["Jane Roe", "NY", "+1 212 555 1234"],
    ])
    return start_module_server(path, "--max-body", "4096",
                               "--url-template", "https://crm.example/c?p={phone}&n={name}"
                                                 "&s={status}&i={ivrid}")


def check_answer(resp) -> dict:
    assert resp.status < 500, resp
    ctype = (resp.header("Content-Type") or "").lower()
    assert ctype.startswith("application/json"), (ctype, resp)
    body = json.loads(resp.body.decode("utf-8"))
    assert isinstance(body, dict) and "STATUS" in body, body
    if resp.status == 200:
        assert body["STATUS"] == "OK", body
        assert isinstance(body["TOTAL"], int) and body["TOTAL"] >= 0, body
        for key in ("CLIENTNAME", "COMPANY", "URL"):
            assert isinstance(body[key], str), body
    else:
        assert 400 <= resp.status < 500, resp
        assert body["STATUS"] == "ERROR" and isinstance(body.get("MESSAGE"), str), body
    return body


phone_like = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789+-() .*#", max_size=30),
    st.sampled_from(["", "anonymous", "Unknown", "***", "0722776772", "972722776772",
                     "+972-72-277-6772", "00972722776772", "0", "+", "00", "+1",
                     "9" * 40, "٠٥٠١٢٣٤٥٦٧", "０７２２７７６７７２", "072\u200b2776772"]),
)
field_names = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))
form_dicts = st.dictionaries(field_names, st.one_of(phone_like, st.text(max_size=30)),
                             max_size=8)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.floats(allow_nan=False), st.text(max_size=30), phone_like)
json_values = st.recursive(json_scalars,
                           lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                  st.dictionaries(st.text(max_size=8), kids,
                                                                  max_size=4)),
                           max_leaves=12)
json_objects = st.dictionaries(field_names, json_values, max_size=8)

raw_query = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789=&%+;-_.~*()'!,/?:@$",
                    max_size=80)

header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                        max_size=60).map(str.strip)
header_names = st.one_of(
    st.sampled_from(["X-Forwarded-For", "X-Real-IP", "Forwarded", "X-Popup-Token",
                     "Content-Type", "Origin", "Accept", "Accept-Charset", "Cookie",
                     "Access-Control-Request-Method", "Access-Control-Request-Headers",
                     "User-Agent", "Referer", "Authorization", "X-HTTP-Method-Override"]),
    st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"),
)
headers = st.dictionaries(header_names, header_values, max_size=6)


@SETTINGS
@given(params=form_dicts)
def test_random_query_parameters_never_fail_the_server(fuzz_server, params):
    check_answer(fuzz_server.get("/popup", params))


@SETTINGS
@given(query=raw_query)
def test_random_raw_query_strings_never_fail_the_server(fuzz_server, query):
    check_answer(fuzz_server.request("GET", "/popup?" + query))


@SETTINGS
@given(data=form_dicts)
def test_random_form_bodies_never_fail_the_server(fuzz_server, data):
    check_answer(fuzz_server.post_form("/popup", data))


@SETTINGS
@given(body=st.binary(max_size=300),
       ctype=st.sampled_from(["application/x-www-form-urlencoded", "application/json",
                              "application/json; charset=latin-1", "text/plain",
                              "multipart/form-data", "multipart/form-data; boundary=x",
                              "application/x-www-form-urlencoded; charset=utf-16", ""]))
def test_random_raw_bodies_never_fail_the_server(fuzz_server, body, ctype):
    hdrs = {"Content-Type": ctype} if ctype else {}
    check_answer(fuzz_server.request("POST", "/popup", body=body, headers=hdrs))


@SETTINGS
@given(obj=json_objects)
def test_random_json_objects_never_fail_the_server(fuzz_server, obj):
    check_answer(fuzz_server.post_json("/popup", obj))


@SETTINGS
@given(phone=json_values, status=json_values)
def test_random_json_phone_values_never_fail_the_server(fuzz_server, phone, status):
    body = check_answer(fuzz_server.post_json("/popup", {"phone": phone, "status": status}))
    if isinstance(phone, (dict, list, bool)) or phone is None:
        assert body["STATUS"] == "ERROR", (phone, body)
    elif isinstance(phone, str) and isinstance(status, str):
        assert body["STATUS"] == "OK", (phone, status, body)


@SETTINGS
@given(value=json_values)
def test_random_json_documents_never_fail_the_server(fuzz_server, value):
    check_answer(fuzz_server.post_json("/popup", value))


@SETTINGS
@given(hdrs=headers, phone=phone_like)
def test_random_headers_never_fail_the_server(fuzz_server, hdrs, phone):
    query = urllib.parse.urlencode({"phone": phone})
    check_answer(fuzz_server.request("GET", "/popup?" + query, headers=hdrs))


@SETTINGS
@given(hdrs=headers, obj=json_objects)
def test_random_headers_on_json_posts_never_fail_the_server(fuzz_server, hdrs, obj):
    hdrs = {k: v for k, v in hdrs.items() if k.lower() != "content-type"}
    hdrs["Content-Type"] = "application/json"
    check_answer(fuzz_server.post_json("/popup", obj, headers=hdrs))


@SETTINGS
@given(segment=st.text(max_size=30))
def test_random_unknown_paths_are_json_404(fuzz_server, segment):
    path = "/nope/" + urllib.parse.quote(segment, safe="")
    resp = fuzz_server.request("GET", path)
    check_answer(resp)
    assert resp.status == 404, resp


def test_server_survived_the_fuzzing(fuzz_server):
    answer = fuzz_server.lookup("0722776772")
    assert answer["CLIENTNAME"] == "John Doe", answer
    assert fuzz_server.proc.poll() is None
