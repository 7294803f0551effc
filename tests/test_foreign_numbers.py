"""Issue 21, "Numbers as Voicenter writes them" and "every number on the pages in one
written form": a caller id that is no valid number of --region but is valid with a "+"
is that country's (33612345678 is France's, never +97233612345678), in the pop-up,
its links, matching and the history; the national and international forms of one
number are one caller; the pages write the region's numbers as dialled at home
(054-777-1111) and every other one internationally (+33 6 12 34 56 78)."""
import re

import phonenumbers
from hypothesis import assume, given, settings, strategies as st

import popup_server as ps
from conftest import wait_until, write_contacts

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
