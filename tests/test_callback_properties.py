"""Rules of calling back (issue 24) that hold for every input: whatever Voicenter
answers, the answer is one of the pages' sentences (in both languages) or a clean
failure; whatever a browser posts to /callback, the answer is a redirect or a refusal
page, never a 5xx."""
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import popup_server  # noqa: E402

from conftest import SAMPLE_CONTACTS  # noqa: E402
from voicenter_standin import CODE, VoicenterStandIn  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4), max_leaves=12)
ANSWER_FIELDS = st.sampled_from(["ERRORCODE", "ERRORMESSAGE", "CALLID", "ERR", "DESC",
                                 "EXTENSIONS", "SIP", "Name", "UserName", "SpeedDial"])


def _said(key, values):
    """The sentence in English and Hebrew (a KeyError or a format error fails)."""
    return [popup_server.PageTexts(language)(key, **values)
            for language in popup_server.LANGUAGES]


@settings(max_examples=400)
@given(st.dictionaries(ANSWER_FIELDS | st.text(max_size=8), JSON, max_size=5)
       | st.fixed_dictionaries({"ERRORCODE": JSON, "CALLID": JSON,
                                "ERRORMESSAGE": JSON}))
def test_any_click2call_answer_is_one_of_the_sentences(answer):
    key, values = popup_server.click2call_answer(answer)
    assert key in popup_server.page_texts()
    for sentence in _said(key, {**values, "who": "John Doe", "agent": "Dana"}):
        assert sentence and "{" not in sentence
    if key == "callback.ringing":
        assert int(str(answer["ERRORCODE"]).strip()) == 0


EXTENSION = st.fixed_dictionaries({}, optional={
    "SIP": JSON | st.from_regex(r"[A-Za-z0-9]{1,10}", fullmatch=True),
    "Name": JSON, "UserName": JSON, "SpeedDial": JSON})


@settings(max_examples=400)
@given(st.fixed_dictionaries({"ERR": st.sampled_from([0, "0", 1, None]) | JSON,
                              "EXTENSIONS": st.lists(EXTENSION | JSON, max_size=5) | JSON})
       | st.dictionaries(ANSWER_FIELDS, JSON, max_size=4))
def test_any_extension_list_answer_is_a_list_of_named_extensions_or_a_failure(answer):
    try:
        extensions = popup_server.extensions_of(answer)
    except popup_server.VoicenterUnreachable as error:
        assert str(error)
        return
    assert extensions
    for extension in extensions:
        assert popup_server._SIP_CODE.fullmatch(extension.sip)
        assert extension.name and len(extension.name) <= 80
    assert len({extension.sip for extension in extensions}) == len(extensions)


@pytest.fixture(scope="module")
def calling_server(start_module_server):
    standin = VoicenterStandIn().start()
    server = start_module_server(SAMPLE_CONTACTS, "--voicenter-code", CODE,
                                 "--voicenter-api", standin.url, "--voicenter-monitor",
                                 standin.url)
    yield server
    standin.stop()


@settings(max_examples=80)
@given(number=st.text(max_size=50) | st.from_regex(r"\+?[0-9 ()\-]{0,20}", fullmatch=True),
       extension=st.text(max_size=20) | st.sampled_from(["SIPSIP1", "", "KGpK4iWq"]))
def test_any_post_to_callback_is_answered_never_a_5xx(calling_server, number, extension):
    resp = calling_server.post_form("/callback", {"number": number, "extension": extension},
                                    headers={"Origin": calling_server.url})
    assert resp.status in (303, 400, 413), resp
    if resp.status == 303:
        assert resp.header("Location") == "/calls"
