"""The README and docs/ say what the program does: docs/options.md's table is the
settings table (OPTIONS) rendered, so every option is in it with the program's own
default; docs/code.md's map names the module's chapters and sections in the module's
order; the README shows Voicenter's requests exactly as the fixtures hold them, and the
server on the sample gives the answers it shows; every docs page is reachable from the
README, and every relative link and every file named in README.md, docs/*.md and
bench/README.md exists.

`python tests/test_docs.py` writes docs/options.md's table anew from OPTIONS."""
from __future__ import annotations

import json
import re
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script too, from any folder

import popup_server  # noqa: E402

DOCS = ROOT / "docs"
README = ROOT / "README.md"
OPTIONS_PAGE = DOCS / "options.md"
CODE_PAGE = DOCS / "code.md"
FIXTURES = ROOT / "tests" / "fixtures" / "voicenter"
#: The lines docs/options.md's generated table stands between.
TABLE_START, TABLE_END = "<!-- options table -->", "<!-- end of the options table -->"


def _pages():
    """The pages whose links and file names are checked."""
    return [README, *sorted(DOCS.glob("*.md")), ROOT / "bench" / "README.md"]


# The options table -----------------------------------------------------------------

def _cell(text):
    """Text fit for a Markdown table cell: its pipes escaped, its stars not emphasis."""
    return text.replace("|", "\\|").replace("*", "\\*")


def _default_and_help(option):
    """(the default as the table writes it, the help without the default it states)."""
    help_text = option.help.replace("%%", "%")  # argparse's escape of a %
    stated = re.search(r" \(default: ([^()]*)\)", help_text)
    if stated:
        return _cell(stated.group(1)), help_text.replace(stated.group(0), "")
    if option.switch:
        return "off", help_text
    if option.default in (None, "", ()):
        return "not set", help_text
    default = option.default
    if isinstance(default, float) and default.is_integer():
        default = int(default)  # 1, not 1.0, as one writes it
    return f"`{default}`", help_text


def render_options_table():
    """The Markdown table of CONTACTS and every Option, in --help's order."""
    lines = ["| option | variable | config key | default | what it does |",
             "|---|---|---|---|---|"]
    for option in (popup_server.CONTACTS, *popup_server.OPTIONS):
        default, help_text = _default_and_help(option)
        flag = "CONTACTS" if option is popup_server.CONTACTS else option.flag
        text = _cell(help_text)
        if option.example:
            text += f"; e.g. `{option.flag} {option.example}`"
        lines.append(f"| `{flag}` | `{option.env}` | `{option.key}` | {default} | {text} |")
    return "\n".join(lines)


def _page_with_table(page_text, table):
    start = page_text.index(TABLE_START) + len(TABLE_START)
    end = page_text.index(TABLE_END)
    return f"{page_text[:start]}\n{table}\n{page_text[end:]}"


def _table_rows():
    """{flag: (variable, key, default)} of docs/options.md's table."""
    rows = {}
    for line in OPTIONS_PAGE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and re.fullmatch(r"`(--[a-z-]+|CONTACTS)`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:4]
    return rows


def test_the_options_page_holds_the_table_made_from_OPTIONS():
    text = OPTIONS_PAGE.read_text(encoding="utf-8")
    assert text == _page_with_table(text, render_options_table()), (
        "docs/options.md's table is not OPTIONS': run python tests/test_docs.py")


def test_every_option_is_in_the_options_table_with_its_variable_and_key():
    rows = _table_rows()
    for option in popup_server.OPTIONS:
        assert option.flag in rows, f"docs/options.md's table lacks {option.flag}"
        assert rows[option.flag][:2] == [f"`{option.env}`", f"`{option.key}`"], option
    assert rows["CONTACTS"][:2] == ["`POPUP_CONTACTS`", "`contacts`"]


def test_plain_defaults_in_the_options_table_are_the_programs():
    rows = _table_rows()
    for option in popup_server.OPTIONS:
        written = rows[option.flag][2]
        plain = re.fullmatch(r"`([^`]*)`", written)
        if plain and not option.switch:
            default = option.default
            if isinstance(default, float) and default.is_integer():
                default = int(default)
            assert plain.group(1) == str(default), (option.flag, written, default)
    assert rows["--port"][2] == "`8080`" and rows["--reload-interval"][2] == "`1`"


# The code's map ------------------------------------------------------------------

def _module_sections():
    """'chapter / section' of every banner of popup_server.py, in its order."""
    source = Path(popup_server.__file__).read_text(encoding="utf-8")
    chapter, found = None, []
    for title in re.findall(r"(?m)^# (.+?) #{4,}$", source):
        if re.match(r"[IVX]+\. ", title):
            chapter = title
        else:
            found.append(f"{chapter} / {title}")
    return found


def _mapped_sections():
    """'chapter / section' of every row of docs/code.md's map, in its order."""
    text = CODE_PAGE.read_text(encoding="utf-8")
    table = text[text.index("## The map"):].split("\n## ")[0]
    chapter, found = None, []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        if len(cells) != 3 or cells[0] == "chapter" or set("".join(cells)) <= {"-"}:
            continue  # not a row, the header or the line under it
        chapter = cells[0] or chapter
        found.append(f"{chapter} / {cells[1]}")
    return found


def test_the_code_map_names_the_modules_chapters_and_sections_in_order():
    module = _module_sections()
    assert len(module) > 40, module  # the banners were found
    assert _mapped_sections() == module


# The README's requests ----------------------------------------------------------

def _readme_exchanges():
    """[(request, answer)] of the JSON blocks of the README's "Pointing Voicenter at it"."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Pointing Voicenter at it"):].split("\n## ")[0]
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]
    assert len(blocks) % 2 == 0, blocks
    return list(zip(blocks[::2], blocks[1::2]))


def _fixture(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_the_readme_shows_each_phase_and_a_cdr_as_the_fixtures_hold_them():
    phases = _fixture("popup-json-phases.json")["phases"]
    cdr = _fixture("cdr-queue.json")["cdr"]
    requests = [request for request, _ in _readme_exchanges()]
    assert requests == [*phases, cdr]
    assert [phase["status"] for phase in phases] == ["Ringing", "Talking", "Hangup"]


def test_the_server_on_the_sample_gives_the_answers_the_readme_shows(start_server,
                                                                     tmp_path):
    token = "readme-token-0123456789"
    server = start_server(popup_server.DEFAULT_CONTACTS, "--token", token,
                          "--calls-db", tmp_path / "calls.sqlite")
    for request, shown in _readme_exchanges():
        path = "/cdr" if "ivruniqueid" in request else "/popup"
        response = server.post_json(f"{path}?token={token}", request)
        assert response.status == 200, response
        answer = response.json()
        if path == "/popup":
            # The link is signed for the server that made it: its host, port, expiry
            # and signature are this server's; the caller it names is the README's.
            shown_url, url = (urllib.parse.urlsplit(a.pop("URL")) for a in (shown, answer))
            assert url.path == shown_url.path, (url, shown_url)
            assert set(urllib.parse.parse_qs(url.query)) == {"e", "s"}, url
        assert answer == shown, (request, answer)


# Links and the files named -------------------------------------------------------

def _slug(heading):
    """The anchor GitHub gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _anchors(page):
    seen, anchors = {}, set()
    for heading in re.findall(r"(?m)^#{1,6} (.+)$", _prose(page)):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _prose(page):
    """A page without its fenced code blocks."""
    return re.sub(r"(?ms)^```.*?^```", "", page.read_text(encoding="utf-8"))


def _links(page):
    text = re.sub(r"`[^`]*`", "", _prose(page))
    return (re.findall(r"\]\(([^)\s]+)\)", text)
            + re.findall(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", text))


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / link.split("#")[0]).resolve() for link in _links(README)}
    unlinked = [page.name for page in DOCS.glob("*.md") if page.resolve() not in linked]
    assert not unlinked, f"README.md links to no {unlinked}"


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in _pages():
        for link in _links(page):
            if re.match(r"[a-z]+:", link):
                continue  # https:, mailto:
            path, _, anchor = link.partition("#")
            target = (page.parent / urllib.parse.unquote(path)).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.name}: {link} (no such file)")
            elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
                broken.append(f"{page.name}: {link} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_file_of_the_repository_the_pages_name_exists():
    """`tests/...`, `bench/...`, `.ci/...` and `views/...` named in the text (a pattern
    with * must match something): renaming a test or a benchmark updates the docs."""
    missing = []
    for page in _pages():
        for name in re.findall(r"`((?:tests|bench|\.ci|views)/[\w./*-]+)`",
                               page.read_text(encoding="utf-8")):
            if not list(ROOT.glob(name)):
                missing.append(f"{page.name}: {name}")
    assert not missing, "\n".join(missing)


if __name__ == "__main__":
    current = OPTIONS_PAGE.read_text(encoding="utf-8")
    OPTIONS_PAGE.write_text(_page_with_table(current, render_options_table()),
                            encoding="utf-8")
    print(f"wrote the options table of {OPTIONS_PAGE}")
