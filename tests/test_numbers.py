"""What "the same number" means: the canonical key of every written form of a number
(with or without the country code, +, 00, spaces, dashes, brackets), the fast paths
that must agree with phonenumbers on every number they take, a foreign caller as
Voicenter writes it (the country code without "+"), what a cell holding several
numbers, words or Excel's damage gives; a caller id matched to the contacts over HTTP;
and every number on the pages in one written form."""

from __future__ import annotations

import re

import numpy as np
import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import popup_server as ps  # private names used: _fast_key, compared with phonenumbers
from conftest import wait_until, write_contacts

IL = ps.number_rules("IL")


# A number in every way people write it: the national digits, and the form.
ISRAELI_PREFIXES = ["2", "3", "4", "8", "9", "50", "52", "53", "54", "55", "58",
                    "72", "73", "74", "76", "77", "79"]


def written_forms(national):
    """Ways a person or a phone system writes the Israeli number 0<national>."""
    head, tail = national[:-7], national[-7:]
    return [
        f"0{national}",
        f"972{national}",
        f"+972{national}",
        f"00972{national}",
        f"0{head}-{tail[:3]}-{tail[3:]}",
        f"(0{head}) {tail[:3]}-{tail[3:]}",
        f"+972 {head} {tail[:3]} {tail[3:]}",
        f"+972-{head}-{tail}",
        f"0{head} {tail}",
    ]

israeli_national = st.builds(
    lambda prefix, subscriber: prefix + str(subscriber),
    st.sampled_from(ISRAELI_PREFIXES), st.integers(2_000_000, 9_999_999))


def reference(text, region="IL"):
    """The rule by phonenumbers alone: the number of `region`, except that digits
    written with no "+" and no leading 0 that are no valid number of `region` but are
    valid with a "+" are that other country's (how Voicenter writes foreign callers)."""
    number = phonenumbers.parse(text, region)
    digits = "".join(ch for ch in text if ch.isdigit())
    if not text.strip().startswith("+") and digits[:1] != "0" \
            and not phonenumbers.is_valid_number(number):
        try:
            foreign = phonenumbers.parse("+" + digits)
        except phonenumbers.NumberParseException:
            foreign = None
        if foreign is not None and phonenumbers.is_valid_number(foreign):
            number = foreign
    return int(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:])


# One number, however it is written ----------------------------------------------------


@pytest.mark.parametrize("written", [
    "0722776772", "972722776772", "+972-72-277-6772", "00972722776772",
    "(072) 277-6772", "072 277 6772", "+972 (0) 72-277-6772", "\u200e072-277-6772"])
def test_every_written_form_of_the_voicenter_example_is_one_number(written):
    assert ps.normalize_number(written) == "+972722776772"


@pytest.mark.parametrize("written", ["+1 212 555 1234", "0012125551234", "+1-212-555-1234"])
def test_a_foreign_number_with_plus_or_00_keeps_its_country(written):
    assert ps.normalize_number(written) == "+12125551234"


@pytest.mark.parametrize("withheld", ["", "   ", "anonymous", "Restricted", "PRIVATE",
                                      "unknown", "***", "n/a"])
def test_a_withheld_caller_id_has_no_number(withheld):
    assert ps.normalize_number(withheld) is None


def test_a_number_libphonenumber_calls_invalid_is_still_a_number():
    # 050-123-4567 style test numbers and unassigned ranges are written correctly.
    assert ps.normalize_number("062-345-678") == "+97262345678"
    assert not phonenumbers.is_valid_number(phonenumbers.parse("062345678", "IL"))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(israeli_national)
def test_any_formatting_of_an_israeli_number_maps_to_the_same_key(national):
    keys = {ps.number_key(text, IL)[0] for text in written_forms(national)}
    assert keys == {int("972" + national)}


# The fast paths agree with phonenumbers -----------------------------------------------


@settings(max_examples=300)
@given(israeli_national, st.integers(0, 8))
def test_the_scalar_fast_path_agrees_with_phonenumbers(national, form):
    text = written_forms(national)[form]
    digits = text.translate(ps._DELETE_FORMATTING).lstrip("+")
    fast = ps._fast_key(digits, text.startswith("+"), IL)
    if fast is not None:  # the fast path may decline; when it answers it must be right
        assert fast == reference(text)
    assert ps.number_key(text, IL)[0] == reference(text)


# Any digit string in any of the five forms, not only plausible Israeli numbers:
# the fast path must either decline or give phonenumbers' answer.
any_digits = st.text("0123456789", min_size=5, max_size=15)


def phonenumbers_key(text, region="IL"):
    """What number_key() gives by phonenumbers alone: its E.164 digits, or None."""
    try:
        key = reference(text, region)
    except phonenumbers.NumberParseException:
        return None
    return key if 10 ** 4 <= key < 10 ** 15 else None  # 5 to 15 digits


@settings(max_examples=500)
@given(any_digits, st.sampled_from(["", "+", "00", "0", "972", "+972", "00972"]))
def test_the_fast_path_never_disagrees_with_phonenumbers_on_any_digits(digits, lead):
    text = lead + digits
    plain = text.lstrip("+")
    assume(5 <= len(plain) <= 15)
    fast = ps._fast_key(plain, text.startswith("+"), IL)
    if fast is not None:
        assert fast == reference(text)
    # Whichever path answers, the key is phonenumbers' own: checked on every example.
    assert ps.number_key(text, IL)[0] == phonenumbers_key(text)


@pytest.mark.parametrize("region", ["IL", "US", "GB", "DE", "FR"])
def test_each_regions_fast_path_agrees_with_phonenumbers_on_its_own_numbers(region):
    rules = ps.number_rules(region)
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(3000):
        length = int(rng.integers(6, 12))
        national = str(int(rng.integers(1, 10))) + "".join(
            str(d) for d in rng.integers(0, 10, length - 1))
        for text in (f"0{national}", f"+{rules.cc_digits}{national}", national,
                     f"{rules.cc_digits}{national}", f"00{rules.cc_digits}{national}"):
            fast = ps._fast_key(text.lstrip("+"), text.startswith("+"), rules)
            if fast is not None:
                assert fast == reference(text, region), text
                checked += 1
    assert checked > 1000  # the fast path does take most plain numbers

cells = st.one_of(
    st.builds(lambda n, f: written_forms(n)[f], israeli_national, st.integers(0, 8)),
    any_digits,
    st.sampled_from(["", " ", "-", "+1 212 555 1234", "03-5553333 ext. 12", "abc",
                     "541234567.0", "5.41E+08", "072-2000000; 072-2000001", "+972+5",
                     "5+972521234567", "0097205", "שלוחה 12", "\u200e052-1234567"]),
    st.text(max_size=20))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cells, max_size=60))
def test_the_vectorised_column_path_agrees_with_the_cell_by_cell_path(column):
    values = np.array(column, dtype=object)
    keys, handled, blank = ps.column_keys(values, IL)
    for cell, key, done, empty in zip(column, keys, handled, blank):
        found, _problems = ps.cell_keys(cell, IL)
        if empty:
            assert found == [], cell
        elif done:
            assert found == [int(key)], cell
            assert int(key) == reference(cell), cell


# A cell's numbers ---------------------------------------------------------------------


def test_a_cell_with_several_numbers_and_extensions_gives_every_number():
    keys, problems = ps.cell_keys("03-5551111 ext. 12 / 052-5552222 x7\n072-2000000 #3",
                                  IL)
    assert keys == [97235551111, 972525552222, 972722000000]
    assert problems == []


@pytest.mark.parametrize("cell", ["054-1234567 home", "054-1234567 (mobile)",
                                  "home: 054-1234567", "נייד 054-1234567"])
def test_a_label_beside_a_number_is_dropped_not_dialled(cell):
    assert ps.cell_keys(cell, IL) == ([972541234567], [])


@pytest.mark.parametrize("cell, expected", [
    ("541234567", 972541234567),        # an Excel number cell lost its leading zero
    ("541234567.0", 972541234567),      # ... and was written as a float
    ("03-5553333 שלוחה 12", 97235553333),
    ("052-1234567 ::: 03-5553333", 972521234567),
])
def test_excel_damage_is_repaired_where_it_is_certain(cell, expected):
    assert ps.cell_keys(cell, IL)[0][0] == expected


def test_scientific_notation_is_reported_not_guessed():
    keys, problems = ps.cell_keys("5.41E+08", IL)
    assert keys == []
    assert "scientific notation" in problems[0]


def test_a_number_too_short_to_be_a_phone_is_reported():
    keys, problems = ps.cell_keys("123", IL)
    assert keys == [] and "too short" in problems[0]


# Foreign numbers, as Voicenter writes them --------------------------------------------

FOREIGN_REGIONS = sorted(set(phonenumbers.SUPPORTED_REGIONS) - {"IL"})
TYPES = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]


@st.composite
def foreign_numbers(draw):
    """A valid number of a country other than Israel: an example number of its
    region with its last digits drawn anew (kept only when still valid)."""
    region = draw(st.sampled_from(FOREIGN_REGIONS))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(TYPES)))
    assume(example is not None)
    national = str(example.national_number)
    tail = draw(st.integers(0, 10 ** min(4, len(national) - 1) - 1))
    digits = national[:-4] + str(tail).zfill(4) if len(national) > 4 else national
    number = phonenumbers.parse(f"+{example.country_code}{digits}")
    assume(phonenumbers.is_valid_number(number))
    return number


def _forms(number):
    """Every way the number is written: with +, with 00, and as Voicenter writes it
    (the country code without +), each plain or spaced."""
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    spaced = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    with_plus = [e164, spaced, spaced.replace(" ", "-")]
    return with_plus, [f"00{e164[1:]}", "00" + spaced[1:]], [e164[1:], spaced[1:]]


def _valid_in_israel(text):
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, "IL"))
    except phonenumbers.NumberParseException:
        return False


@settings(max_examples=400)
@given(foreign_numbers())
def test_a_foreign_number_is_one_number_in_every_written_form(number):
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    with_plus, with_00, without_plus = _forms(number)
    for written in with_plus + with_00:
        assert ps.normalize_number(written) == e164, written
    for written in without_plus:
        if _valid_in_israel(written):  # an Israeli number first (541234567 stays Israeli)
            assert ps.normalize_number(written).startswith("+972"), written
        else:
            assert ps.normalize_number(written) == e164, written
    assert ps.written_number(e164) == phonenumbers.format_number(
        number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)

ISRAELI = st.builds(lambda prefix, rest: prefix + str(rest),
                    st.sampled_from(["2", "3", "4", "8", "9", "50", "52", "53", "54", "55",
                                     "58", "72", "73", "74", "76", "77", "79"]),
                    st.integers(2_000_000, 9_999_999))


@settings(max_examples=400)
@given(ISRAELI)
def test_an_israeli_number_stays_israeli_in_every_form_even_without_its_0(national):
    number = phonenumbers.parse("0" + national, "IL")
    assume(phonenumbers.is_valid_number(number))
    e164 = f"+972{national}"
    for written in (f"0{national}", national, f"972{national}", f"+972{national}",
                    f"00972{national}", f"0{national[:-7]}-{national[-7:]}"):
        assert ps.normalize_number(written) == e164, written
    assert ps.written_number(e164) == phonenumbers.format_number(
        number, phonenumbers.PhoneNumberFormat.NATIONAL)  # 054-777-1111


def test_the_example_of_the_issue():
    assert ps.normalize_number("33612345678") == "+33612345678"  # was +97233612345678
    assert ps.normalize_number("541234567") == "+972541234567"
    assert ps.normalize_number("972547771111") == "+972547771111"
    assert ps.written_number("972547771111") == "054-777-1111"
    assert ps.written_number("0541112233") == "054-111-2233"
    assert ps.written_number("33612345678") == "+33 6 12 34 56 78"
    assert ps.written_number("anonymous") == "anonymous"


# A caller id matched to the contacts, over HTTP ---------------------------------------


@pytest.fixture
def matching_server(start_server, make_contacts):
    path = make_contacts([
        ["Other Person", "Elsewhere", "03-555-1212"],
        ["John Doe", "Voicenter", "072-277-6772"],
    ])
    return start_server(path)


@pytest.mark.parametrize("phone", ["0722776772", "972722776772", "+972722776772",
                                   "+972-72-277-6772", "00972722776772", "(072) 277-6772",
                                   "072-277-6772", " 0722776772 "])
def test_equivalent_forms_of_an_israeli_number_all_match(matching_server, phone):
    answer = matching_server.lookup(phone)
    assert answer["TOTAL"] == 1, (phone, answer)
    assert answer["CLIENTNAME"] == "John Doe", (phone, answer)


def test_equivalent_forms_match_in_json_and_form_too(matching_server):
    for phone in ("+972-72-277-6772", "00972722776772", "(072) 277-6772"):
        js = matching_server.post_json("/popup", {"phone": phone})
        form = matching_server.post_form("/popup", {"phone": phone})
        for resp in (js, form):
            assert resp.status == 200, (phone, resp)
            assert resp.json()["CLIENTNAME"] == "John Doe", (phone, resp)


@pytest.mark.parametrize("phone", ["+12125551234", "0012125551234", "+1 (212) 555-1234"])
def test_foreign_number_stored_with_country_code_matches_international_forms(
        start_server, make_contacts, phone):
    path = make_contacts([["Local Person", "IL Ltd", "050-111-2233"],
                          ["Jane Roe", "NY Corp", "+1 212 555 1234"]])
    srv = start_server(path)
    answer = srv.lookup(phone)
    assert answer["TOTAL"] == 1, answer
    assert (answer["CLIENTNAME"], answer["COMPANY"]) == ("Jane Roe", "NY Corp"), answer


def test_foreign_number_stored_without_country_code_is_found_by_trailing_digits(
        start_server, make_contacts):
    path = make_contacts([["Local Person", "IL Ltd", "050-111-2233"],
                          ["Jane Roe", "NY Corp", "212-555-1234"]])
    srv = start_server(path)
    answer = srv.lookup("+12125551234")
    assert answer["TOTAL"] == 1, answer
    assert answer["CLIENTNAME"] == "Jane Roe", answer


@pytest.mark.parametrize("first,second", [("Zed First", "Adam Second"),
                                          ("Adam First", "Zed Second")])
def test_shared_number_counts_both_and_answers_the_first_in_file_order(
        start_server, make_contacts, first, second):
    path = make_contacts([["Someone Else", "X", "03-555-1212"],
                          [first, "First Co", "050-123-4567"],
                          [second, "Second Co", "+972501234567"]])
    srv = start_server(path)
    answer = srv.lookup("0501234567")
    assert answer["TOTAL"] == 2, answer
    assert answer["CLIENTNAME"] == first, answer
    assert answer["COMPANY"] == "First Co", answer


def _call(server, phone, ivrid):
    for phase in ("Ringing", "Hangup"):
        answer = server.lookup(phone, ivrid=ivrid, status=phase)
    return answer


def test_a_foreign_caller_is_one_caller_on_the_pages_whatever_its_form(
        start_server, tmp_path):
    contacts = write_contacts(tmp_path / "contacts.csv", [
        ("Marie Dupont", "Paris SA", "+33 6 12 34 56 78"),
        ("Dana Levi", "Levi Ltd", "054-777-1111")])
    server = start_server(contacts, "--calls-db", tmp_path / "calls.sqlite")
    answers = [_call(server, phone, f"F{n}") for n, phone in
               enumerate(["33612345678", "0033612345678", "+33612345678"])]
    for answer in answers:
        assert answer["CLIENTNAME"] == "Marie Dupont", answer
        assert "/caller/+33612345678?" in answer["URL"], answer
    _call(server, "972547771111", "D1")
    _call(server, "0541112233", "U1")
    page = wait_until(lambda: (lambda text: 'data-number="+972541112233"' in text and text)(
        server.get("/calls", headers={"Accept-Language": "en"}).text),
        what="the calls to be recorded")
    waiting = page[page.index('id="waiting"'):page.index("</table>", page.index('id="waiting"'))]
    rows = re.findall(r'<tr class="waiting" data-number="([^"]+)">(.*?)</tr>', waiting, re.S)
    assert [number for number, _ in rows].count("+33612345678") == 1
    row = dict(rows)
    assert re.search(r'<td class="tries">3</td>', row["+33612345678"]), row["+33612345678"]
    assert ">+33 6 12 34 56 78</a>" in row["+33612345678"]
    assert ">054-777-1111</a>" in row["+972547771111"]
    assert ">054-111-2233</a>" in row["+972541112233"]
    assert "97233612345678" not in page and ">972547771111<" not in page
    caller = server.get("/caller/+33612345678", headers={"Accept-Language": "en"}).text
    assert caller.count('data-ivrid="F') == 3
    assert 'id="caller-international">+33 6 12 34 56 78<' in caller
    assert 'id="caller-national"' not in caller
    assert "Marie Dupont" in caller and ">+33 6 12 34 56 78</bdi>" in caller
    israeli = server.get("/caller/+972547771111", headers={"Accept-Language": "en"}).text
    assert 'id="caller-national">054-777-1111<' in israeli
    assert 'id="caller-international">+972 54-777-1111<' in israeli
