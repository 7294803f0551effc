"""Issue 13 item 6 / 14 item 8, the plumbing: every text in English and Hebrew side by
side, the language from Accept-Language (q-values) or --lang, right to left in Hebrew,
and the security headers of every HTML page."""
import re
import string
from pathlib import Path

import pytest

import popup_server as ps
from conftest import OFFICE_PASSWORD, SAMPLE_CONTACTS


def _placeholders(text):
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("key", sorted(ps.page_texts()))
def test_every_text_has_both_languages_with_the_same_placeholders(key):
    entry = ps.page_texts()[key]
    assert len(entry) == len(ps.LANGUAGES), key
    assert all(isinstance(text, str) and text.strip() for text in entry), key
    assert len({frozenset(_placeholders(text)) for text in entry}) == 1, key


def test_the_calendar_words_come_in_full():
    for language in ps.LANGUAGES:
        texts = ps.PageTexts(language)
        assert len(texts("weekdays").split()) == 7 and len(texts("months").split()) == 12


@pytest.mark.parametrize("header,expected", [
    ("he-IL,he;q=0.9,en-US;q=0.8,en;q=0.7", "he"),
    ("en-US,en;q=0.9,he;q=0.8", "en"),
    ("fr-FR, fr;q=0.9, he;q=0.5", "he"),
    ("en;q=0.1, he;q=0.2", "he"),
    ("he;q=0, en;q=0.1", "en"),
    ("iw", "he"),
    ("HE-il", "he"),
    ("fr, de", "en"),
    ("", "en"),
    (None, "en"),
    ("*", "en"),
    ("he;q=abc, en;q=0.5", "en"),
    ("he;q=nan, en;q=0.5", "en"),
    ("he;q=2", "en"),
    (";;;,,,=", "en"),
])
def test_the_language_follows_accept_language_and_its_q_values(header, expected):
    assert ps.choose_language(header) == expected
    assert ps.choose_language(header, "he") == "he"
    assert ps.choose_language(header, "en") == "en"


HEBREW = {"Accept-Language": "he-IL,he;q=0.9,en;q=0.8"}


def _assert_safe_headers(resp):
    policy = resp.header("Content-Security-Policy")
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy and "unsafe-inline" not in policy
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert f'<style nonce="{nonce}">' in resp.text
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("Referrer-Policy") == "same-origin"


def test_the_login_page_is_hebrew_right_to_left_or_english(start_server):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD)
    hebrew = server.get("/login", headers=HEBREW)
    assert '<html lang="he" dir="rtl">' in hebrew.text and "סיסמת המשרד" in hebrew.text
    _assert_safe_headers(hebrew)
    english = server.get("/login", headers={"Accept-Language": "en-GB"})
    assert '<html lang="en" dir="ltr">' in english.text and "Office password" in english.text
    _assert_safe_headers(english)


def test_lang_forces_one_language(start_server):
    server = start_server(SAMPLE_CONTACTS, "--office-password", OFFICE_PASSWORD,
                          "--lang", "he")
    page = server.get("/login", headers={"Accept-Language": "en-US"})
    assert '<html lang="he" dir="rtl">' in page.text


def test_the_calls_page_in_hebrew_keeps_names_and_numbers_isolated(start_server, tmp_path):
    server = start_server(SAMPLE_CONTACTS, "--calls-db", tmp_path / "calls.sqlite")
    server.get("/popup", {"phone": "0722776772", "ivrid": "he-1", "statusCall": "Ringing"})
    page = server.get("/", {"try": "0722776772"}, headers=HEBREW)
    assert page.status == 200 and '<html lang="he" dir="rtl">' in page.text
    assert "בדיקת מספר" in page.text and "Try a number" not in page.text
    assert "<bdi><b>John Doe</b></bdi>" in page.text
    _assert_safe_headers(page)
    english = server.get("/", headers={"Accept-Language": "en"})
    assert "Try a number" in english.text and "בדיקת מספר" not in english.text


def test_a_name_holding_markup_is_shown_as_text(start_server, make_contacts):
    path = make_contacts([["<script>alert(1)</script>", "<b>Co</b>", "072-277-6772"]])
    server = start_server(path)
    for headers in (HEBREW, {}):
        page = server.get("/", {"try": "0722776772"}, headers=headers)
        assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)" in page.text


def test_the_texts_file_holds_each_key_once_in_every_language_and_nothing_else():
    import tomllib
    table = tomllib.loads(ps.TEXTS_FILE.read_text(encoding="utf-8"))  # a repeat: an error
    assert all(sorted(entry) == sorted(ps.LANGUAGES) for entry in table.values())
    assert list(table) == list(ps.page_texts())
    with pytest.raises(tomllib.TOMLDecodeError):  # why a key cannot be written twice
        tomllib.loads('["a.b"]\nen = "x"\n["a.b"]\nen = "y"\n')


def test_every_text_is_used_by_a_page_or_the_module():
    """A key no template and no code asks for is a text nobody reads (or a typo of a
    key that is asked for). Keys made from a family's prefix ("outcome." + outcome)
    count as used when the family's prefix is."""
    sources = Path(ps.__file__).read_text(encoding="utf-8") + "".join(
        view.read_text(encoding="utf-8") for view in Path(ps.VIEWS[0]).glob("*.tpl"))
    families = set(re.findall(r"""["']([a-z_]+\.)["']\s*\+|f["']([a-z_]+\.)\{""", sources))
    prefixes = {prefix for pair in families for prefix in pair if prefix}
    unused = [key for key in ps.page_texts() if f'"{key}"' not in sources
              and f"'{key}'" not in sources and not key.startswith(tuple(prefixes))]
    assert unused == []
