"""What "the same number" means: canonical keys, and the fast paths that must agree
with phonenumbers on every number they take."""
import numpy as np
import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import popup_server as ps  # private names used: the units these property tests compare
# with their references (_fast_key with phonenumbers, _form_fields with parse_qsl,
# _unquote with unquote_plus, _json_bytes with json.dumps)

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


def test_a_cell_with_several_numbers_and_extensions_gives_every_number():
    keys, problems = ps.cell_keys("03-5551111 ext. 12 / 052-5552222 x7\n072-2000000 #3",
                                  IL)
    assert keys == [97235551111, 972525552222, 972722000000]
    assert problems == []


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


@settings(max_examples=300)
@given(st.text(), st.text(), st.text(), st.integers(0, 10**6))
def test_the_hand_assembled_answer_is_exactly_what_json_dumps_writes(name, company, url,
                                                                     total):
    answer = ps.PopupAnswer(total, name, company, url, None)
    assert answer.json_bytes() == ps._json_bytes(answer.as_dict())


# The request decoders are hand-made for speed; the standard library is the reference.
query_text = st.lists(st.sampled_from(list("ab=&+%2B0Fe7Dz9 ") + ["%D7", "%A9", "%2B"]),
                      max_size=30).map("".join)


@settings(max_examples=500)
@given(query_text)
def test_query_decoding_is_exactly_parse_qsl(text):
    from urllib.parse import parse_qsl
    import bottle
    try:
        expected = dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        with pytest.raises(bottle.HTTPError) as refused:
            ps._form_fields(text, "query string")
        assert refused.value.status_code == 400
        return
    assert ps._form_fields(text, "query string") == expected


def decoded_or_refused(decode, text):
    try:
        return decode(text)
    except UnicodeDecodeError:  # not UTF-8 once decoded: _form_fields answers 400
        return UnicodeDecodeError


# Text around the escapes: anything, and the invalid kinds (a lone UTF-8 byte, a
# sequence cut short, a stray % or a bad hex digit) that plain text finds only by luck.
around_escapes = st.one_of(st.text(max_size=10), st.lists(st.sampled_from(
    ["%80", "%ff", "%D7", "%d7%", "%E2%82", "%", "%4", "%zz", "%%", "+", "a", "é"]),
    max_size=5).map("".join))


@settings(max_examples=500)
@given(st.text(max_size=30).map(lambda t: t.encode("utf-8").hex("%", 1)), around_escapes)
def test_percent_decoding_is_exactly_unquote_plus(escaped, plain):
    """Valid escapes decode as unquote_plus() decodes them; escapes that are not UTF-8
    are refused exactly when unquote_plus(errors="strict") refuses them."""
    from urllib.parse import unquote_plus
    text = ("%" + escaped if escaped else "") + plain
    assert decoded_or_refused(ps._unquote, text) == decoded_or_refused(
        lambda t: unquote_plus(t, errors="strict"), text)
