"""The index's own structures, against plain Python references: the number table
(a hash table of sorted buckets), the text rows (one UTF-8 buffer), a contact read
back whole, and a request's answer naming the contact a lookup finds."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import popup_server as ps  # _prime_at_least: the hash table's modulus is the unit here
from conftest import SAMPLE_CONTACTS


def reference_table(pairs):
    """key -> (first row, how many distinct rows), the way a dict would do it."""
    rows_of = {}
    for key, row in pairs:
        rows_of.setdefault(key, set()).add(row)
    return {key: (min(rows), len(rows)) for key, rows in rows_of.items()}


def build(pairs):
    keys = np.array([key for key, _ in pairs], dtype=np.int64)
    rows = np.array([row for _, row in pairs], dtype=np.int32)
    return ps.NumberTable.build(keys, rows)


# Keys like E.164 numbers (up to 15 digits) and like 9-digit suffixes, with repeats.
phone_keys = st.one_of(st.integers(10_000, 10 ** 15 - 1), st.integers(0, 10 ** 9 - 1))
pairs_lists = st.lists(st.tuples(phone_keys, st.integers(0, 2_000_000)), max_size=300)


@settings(max_examples=300, deadline=None)
@given(pairs_lists, st.lists(phone_keys, max_size=50))
def test_the_number_table_finds_what_a_dict_finds(pairs, others):
    table = build(pairs)
    expected = reference_table(pairs)
    for key, found in expected.items():
        assert table.find(key) == found
    for key in others:
        assert table.find(key) == expected.get(key, (0, 0))
    assert table.shared == sum(1 for _, count in expected.values() if count > 1)
    assert table.keys.size == len(expected)


def test_keys_that_all_share_one_bucket_are_still_found():
    # A crafted file could put every number in one bucket: the search inside a bucket
    # is a binary search, so they are all found, and quickly.
    size = 5_000
    modulus = ps._prime_at_least(size)
    keys = [972_500_000_000 + modulus * i for i in range(size)]
    pairs = [(key, row) for row, key in enumerate(keys)]
    table = build(pairs)
    assert len({key % table._modulus for key in keys}) == 1
    for row, key in enumerate(keys):
        assert table.find(key) == (row, 1)
    assert table.find(keys[-1] + modulus) == (0, 0)
    assert table.find(keys[0] - modulus) == (0, 0)


def test_an_empty_table_finds_nothing():
    table = build([])
    assert table.find(972722776772) == (0, 0)
    assert table.shared == 0


@given(st.integers(0, 100_000))
def test_the_modulus_is_the_smallest_prime_not_below_the_count(number):
    prime = ps._prime_at_least(number)
    assert prime >= max(number, 2)
    assert all(prime % d for d in range(2, int(prime ** 0.5) + 1))
    assert not any(all(n % d for d in range(2, int(n ** 0.5) + 1))
                   for n in range(max(number, 2), prime))


# Any text a cell can hold, Hebrew, emoji, lone surrogates (pandas can hand those
# over from a broken file) and NULs included.
cell_text = st.text(st.characters(blacklist_categories=()), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5).flatmap(lambda width: st.tuples(
    st.just(width), st.lists(st.lists(st.lists(cell_text, min_size=width, max_size=width),
                                      max_size=20), max_size=4))))
def test_text_rows_give_back_every_row_as_it_was_added(shape):
    width, blocks = shape
    builder = ps.TextRowsBuilder(width)
    expected = []
    for block in blocks:
        columns = [np.array([row[i] for row in block], dtype=object) for i in range(width)]
        builder.add(columns)
        expected.extend([cell.replace("\0", "") for cell in row] for row in block)
    rows = builder.build()
    assert len(rows) == len(expected)
    assert [rows[i] for i in range(len(rows))] == expected


def test_a_nul_in_a_block_with_one_long_cell_costs_no_more_memory():
    # Cleaning the NUL must not widen every cell to the longest one (rows x longest).
    import tracemalloc
    rows = 10_000
    names = np.array([f"name {i}" for i in range(rows)], dtype=object)
    names[5] = "A\0B"
    urls = np.array([""] * rows, dtype=object)
    urls[7] = "https://crm.example/" + "x" * 4_000
    companies = np.array(["Acme"] * rows, dtype=object)
    builder = ps.TextRowsBuilder(3)
    tracemalloc.start()
    builder.add([names, companies, urls])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2 ** 20, peak  # widened, it was ~480 MB
    text_rows = builder.build()
    assert text_rows[5] == ["AB", "Acme", ""]
    assert text_rows[7][2].endswith("x" * 4_000)
    assert text_rows[9_999] == ["name 9999", "Acme", ""]


def test_a_contact_is_read_back_with_its_template_columns(tmp_path):
    path = tmp_path / "contacts.csv"
    path.write_text("Name,Company,Phone,CRM id\n"
                    "  דנה לוי ,Acme,050-123-4567,17\n"
                    "Bob,,050-765-4321,\n", encoding="utf-8")
    index = ps.load_index(path, keep_columns=("CRM id",))
    first = index.lookup("0501234567").contact
    assert (first.name, first.company, first.url, first.row) == ("דנה לוי", "Acme", "", 2)
    assert dict(first.fields) == {"CRM id": "17"}
    second = index.lookup("972507654321").contact
    assert (second.name, second.company, second.row, dict(second.fields)) == \
        ("Bob", "", 3, {"CRM id": ""})


@pytest.fixture(scope="module")
def sample_index():
    return ps.load_index(SAMPLE_CONTACTS, keep_columns=("id",))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(caller_id=st.one_of(
    st.sampled_from(["072-277-6772", "+972 52-765-4321", "073-2000000", "0587654321",
                     "12125551234", "00972-4-8123456", "77-5001234", "", "0", "anonymous"]),
    st.text(alphabet="0123456789+-() ", max_size=16)))
def test_a_requests_answer_is_the_whole_contact_lookup_finds(sample_index, caller_id):
    """/popup answers through answer_for(), which reads only what it sends; lookup()
    makes the contact whole. Both must name the same contact, and the URL template
    must fill in for a contact without a URL of its own."""
    config = ps.Config(url_template="https://crm.example.com/{id}?from={e164}")
    match = sample_index.lookup(caller_id)
    answer = ps.answer_for(sample_index, caller_id, {"phone": caller_id}, config)
    assert (answer.total, answer.key) == (match.total, match.key)
    if match.contact is None:
        assert (answer.name, answer.company, answer.url) == ("", "", "")
    else:
        contact = match.contact
        assert (answer.name, answer.company) == (contact.name, contact.company)
        assert answer.url == (contact.url or f"https://crm.example.com/"
                                             f"{contact.fields['id']}?from=%2B{match.key}")
