"""Issue 21, "one way to read a source", and issue 22's additions item, over real HTTP:
the caller's page reads every kind of source as its index did (CSV, .xlsx with and
without --sheet, .ods and .xls written by LibreOffice, a phone's vCard, a link, the
additions file); the additions file is read with settings of its own whatever the
office file's options; it is written with formula cells neutralised as /calls.csv
does; and an error building a page is the HTML error page in the page's language."""
from __future__ import annotations

import csv
import shutil
import urllib.parse

import pytest

import libreoffice
import vcards
from conftest import MODULE, OFFICE_PASSWORD, wait_until, write_contacts
from linksite import LinkSite, Page
from test_caller_page import _path_of, _post
from test_state_dir import _start_as_a_user_would

#: The first sheet's contact, and the one on the sheet named "Contacts" (the second).
FIRST_SHEET = ("Sheet Person", "Sheet Co", "050-333-3333", "0503333333")
NAMED_SHEET = ("Named Sheet Person", "Named Co", "050-444-4444", "0504444444")


def _from(source, row):
    """How the caller's page names a contact's place (caller.from, the name isolated)."""
    return f"From \u2068{source}\u2069, row {row}"


@pytest.fixture(scope="module")
def workbooks(tmp_path_factory):
    """{"xlsx", "ods", "xls": path}: one workbook of two sheets (an "Other" sheet
    first, then "Contacts"), saved by openpyxl and by LibreOffice itself."""
    import openpyxl
    folder = tmp_path_factory.mktemp("workbooks")
    book = openpyxl.Workbook()
    first = book.active
    first.title = "Other"
    first.append(["Name", "Company", "Phone", "Notes"])
    first.append([*FIRST_SHEET[:3], "on the first sheet"])
    named = book.create_sheet("Contacts")
    named.append(["Name", "Company", "Phone", "Notes"])
    named.append(["Someone Else", "", "050-555-0000", ""])
    named.append([*NAMED_SHEET[:3], "on the sheet named Contacts"])
    xlsx = folder / "book" / "contacts.xlsx"
    xlsx.parent.mkdir()
    book.save(xlsx)
    if not libreoffice.SOFFICE:
        if libreoffice.required():
            pytest.fail("LibreOffice is required here", pytrace=False)
        pytest.skip("needs LibreOffice (Debian's libreoffice-calc-nogui)")
    return {"xlsx": xlsx, **{kind: libreoffice.convert(xlsx, kind, folder / kind)
                             for kind in ("ods", "xls")}}


@pytest.fixture
def site():
    site = LinkSite().start()
    yield site
    site.stop()


def _caller_page(server, phone, **headers):
    """The caller's page the pop-up for `phone` links to, asserted 200 HTML."""
    answer = server.lookup(phone)
    page = server.get(_path_of(answer["URL"]), headers=headers)
    assert page.status == 200, (phone, page, server.log_text()[-2000:])
    assert page.header("Content-Type").startswith("text/html"), page
    return answer, page.text


def test_the_callers_page_opens_for_a_contact_of_every_kind_of_source(
        start_server, tmp_path, workbooks, site):
    csv_path = write_contacts(tmp_path / "office" / "customers.csv", [
        ("CSV Person", "CSV Co", "050-111-1111")])
    vcf, people = vcards.write_iphone(tmp_path)  # Hebrew names, grouped TELs, a photo
    site.pages["/people.csv"] = Page("name,company,phone\nLink Person,Link Co,"
                                     "050-222-2222\n")
    server = start_server(csv_path, workbooks["xlsx"], workbooks["ods"], workbooks["xls"],
                          vcf, f"{site.url}/people.csv")

    _, text = _caller_page(server, "0501111111")
    assert '<bdi id="caller-name">CSV Person</bdi>' in text and _from("customers.csv", 2) in text

    answer, text = _caller_page(server, FIRST_SHEET[3])  # the same sheet in three files
    assert answer["TOTAL"] == 3 and "3 contacts have this number" in text
    for name in ("contacts.xlsx", "contacts.ods", "contacts.xls"):
        assert _from(name, 2) in text, name
    assert "on the first sheet" in text

    dan = people[1]  # (the first card has a URL: her pop-up opens her CRM)
    _, text = _caller_page(server, dan["numbers"][1])
    assert f'<bdi id="caller-name">{dan["name"]}</bdi>' in text
    assert _from("Contacts.vcf", dan["card"]) in text and "052-765-4321" in text

    answer, text = _caller_page(server, "0502222222")
    assert answer["CLIENTNAME"] == "Link Person"
    assert '<bdi id="caller-name">Link Person</bdi>' in text and "Link Co" in text

    # The additions file: a contact added from an unknown caller's page.
    _, url = (lambda a: (a, a["URL"]))(server.lookup("0509999871"))
    assert _post(server, url, "/contact", {"name": "Added Person",
                                           "phone": "050-999-9871"}).status == 303
    _, text = _caller_page(server, "0509999871")
    assert '<bdi id="caller-name">Added Person</bdi>' in text
    assert _from("additions.csv", 2) in text and 'name="row" value="2"' in text
    assert "could not read" not in server.log_text()


def test_with_sheet_the_callers_page_reads_that_sheet_of_each_workbook(
        start_server, workbooks):
    server = start_server(workbooks["xlsx"], workbooks["ods"], workbooks["xls"],
                          "--sheet", "Contacts")
    answer, text = _caller_page(server, NAMED_SHEET[3])
    assert (answer["TOTAL"], answer["CLIENTNAME"]) == (3, NAMED_SHEET[0])
    assert f'<bdi id="caller-name">{NAMED_SHEET[0]}</bdi>' in text
    for name in ("contacts.xlsx", "contacts.ods", "contacts.xls"):
        assert _from(name, 3) in text, name
    assert "on the sheet named Contacts" in text and "Add as a contact" not in text


def test_a_ragged_csv_row_does_not_empty_the_callers_page(start_server, tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("name,company,phone\nRagged Person,Co,050-111-1111\n"
                    "Too,Many,050-222-2222,cells,here\n", "utf-8")
    server = start_server(path)
    answer, text = _caller_page(server, "0501111111")
    assert answer["CLIENTNAME"] == "Ragged Person"
    assert '<bdi id="caller-name">Ragged Person</bdi>' in text


# A source that cannot be read now ----------------------------------------------------
# A source that fails keeps its last good contacts in service (README, "Reloading"): the
# pop-up still names the caller, so the caller's page names them too, from what the
# served index holds, and says which source could not be read.

HEBREW = {"Accept-Language": "he-IL,he;q=0.9"}


def _unread_note(source):
    """The caller's page's line saying `source` could not be read (caller.unread)."""
    return (f'data-source="{source}">\u2068{source}\u2069 could not be read just now, '
            "so from it this page shows only what the pop-up knows")


def _office_page(client, number, **headers):
    """The caller's page of `number` (E.164) as the office sees it, asserted 200."""
    page = client.get(f"/caller/{number}", headers=headers)
    assert page.status == 200, (page, client.server.log_text()[-2000:])
    return page.text


def _assert_named_from_the_served_index(server, text, source):
    assert '<bdi id="caller-name">Bakery Ltd</bdi>' in text, server.log_text()[-2000:]
    assert _unread_note(source) in text
    assert 'href="https://crm.example.com/c/7"' in text  # its link, as the pop-up has it
    assert "Nobody in the contacts has this number" not in text
    assert 'id="add-form"' not in text and "Add as a contact" not in text


@pytest.mark.parametrize("breaking", ["deleted", "only its header"])
def test_while_a_file_cannot_be_read_the_callers_page_names_whom_the_pop_up_names(
        start_server, tmp_path, log_in, breaking):
    path = write_contacts(tmp_path / "office" / "customers.csv", [
        ("", "Bakery Ltd", "077-444-5555", "https://crm.example.com/c/7"),
        ("Other Person", "", "050-111-1111", ""),
        ("Its Baker", "Bakery Ltd", "077-444-5555", "")],
        header=("name", "company", "phone", "crm"))
    other = write_contacts(tmp_path / "office" / "more.csv", [("More", "", "050-222-2222")])
    server = start_server(path, other, "--office-password", OFFICE_PASSWORD)
    client = log_in(server)
    if breaking == "deleted":
        path.unlink()
    else:
        path.write_text("name,company,phone,crm\n", "utf-8")
    wait_until(lambda: server.health()["last_error"], what="the source's failure")

    answer = server.lookup("0774445555")
    assert (answer["TOTAL"], answer["CLIENTNAME"]) == (2, "Bakery Ltd")
    assert answer["URL"] == "https://crm.example.com/c/7"
    text = _office_page(client, "+972774445555")
    _assert_named_from_the_served_index(server, text, "customers.csv")
    assert "Of its 2 contacts holding this number, only the first is shown." in text
    hebrew = _office_page(client, "+972774445555", **HEBREW)
    assert '<bdi id="caller-name">Bakery Ltd</bdi>' in hebrew
    assert "לא ניתן היה לקרוא את \u2068customers.csv\u2069 כרגע" in hebrew
    assert "הוספה כאיש קשר" not in hebrew

    _, text = _caller_page(server, "0502222222")  # another source's contact, read whole
    assert '<bdi id="caller-name">More</bdi>' in text and _from("more.csv", 2) in text
    assert _unread_note("customers.csv") in text  # the failing source is still named


def test_while_a_link_fails_the_callers_page_names_whom_the_pop_up_names(
        start_server, site, log_in):
    site.pages["/c.csv"] = Page("name,company,phone,crm\n,Bakery Ltd,077-444-5555,"
                                "https://crm.example.com/c/7\n")
    link = f"http://user:pw-9s3cr3t@127.0.0.1:{site.port}/c.csv?key=k3y-9s3cr3t"
    server = start_server(link, "--url-interval", "0.2", "--office-password",
                          OFFICE_PASSWORD)
    client = log_in(server)
    site.pages["/c.csv"] = Page("boom", status=500)
    failing = wait_until(lambda: server.health()["sources"][0]["last_error"],
                         what="the link's failure")
    shown = server.health()["sources"][0]["source"]  # as /health names it: redacted
    assert "9s3cr3t" not in shown, failing

    assert server.lookup("0774445555")["CLIENTNAME"] == "Bakery Ltd"
    text = _office_page(client, "+972774445555")
    _assert_named_from_the_served_index(server, text, shown)
    assert "9s3cr3t" not in text

# The additions file has settings of its own ------------------------------------------

OFFICE_OPTIONS = ("--encoding", "windows-1255", "--delimiter", ";",
                  "--name-column", "First Name+Last Name", "--phone-columns", "Mobile")


def _cp1255_office(tmp_path):
    path = tmp_path / "office" / "outlook.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes("First Name;Last Name;Mobile\r\nדני;כהן;050-111-1111\r\n"
                     .encode("cp1255"))
    return path


def test_the_additions_file_is_read_with_its_own_settings_not_the_office_files(
        start_server, tmp_path, run_cli):
    office = _cp1255_office(tmp_path)
    server = start_server(office, *OFFICE_OPTIONS)
    assert server.lookup("0501111111")["CLIENTNAME"] == "דני כהן"
    url = server.lookup("0509999871")["URL"]
    saved = _post(server, url, "/contact", {"name": "נועה לוי", "company": "אקמה",
                                            "phone": "050-999-9871"})
    assert saved.status == 303, saved
    answer = server.lookup("0509999871")
    assert (answer["TOTAL"], answer["CLIENTNAME"], answer["COMPANY"]) == (
        1, "נועה לוי", "אקמה")
    _, text = _caller_page(server, "0509999871")
    assert '<bdi id="caller-name">נועה לוי</bdi>' in text
    _, text = _caller_page(server, "0501111111")  # the office's file, as before
    assert '<bdi id="caller-name">דני כהן</bdi>' in text
    server.stop()
    again = start_server(office, *OFFICE_OPTIONS)  # kept, and served at the next start
    assert again.lookup("0509999871")["CLIENTNAME"] == "נועה לוי"
    check = run_cli(office, "--check", *OFFICE_OPTIONS)
    assert check.returncode == 0, check
    assert "in total: 2 contacts" in check.stdout.decode("utf-8")



def test_a_phone_the_index_would_not_find_is_refused_and_nothing_is_kept(
        start_server, tmp_path, run_cli):
    office = write_contacts(tmp_path / "office.csv", [("Ann", "", "050-111-1111")])
    server = start_server(office)
    url = server.lookup("0509999871")["URL"]
    refused = _post(server, url, "/contact", {"name": "Slashed", "phone": "050/999/9871"})
    assert refused.status == 400 and "must be this caller" in refused.text, refused
    assert not (tmp_path / "state" / "additions.csv").exists()  # "not saved" is true
    assert _post(server, url, "/contact", {"name": "Dashed", "phone": "050-999-9871"}
                 ).status == 303
    other = server.lookup("0508888872")["URL"]
    assert _post(server, other, "/contact", {"name": "Slashed", "phone": "050/888/8872"}
                 ).status == 400
    with open(tmp_path / "state" / "additions.csv", encoding="utf-8") as handle:
        assert "Slashed" not in handle.read()
    assert server.lookup("0509999871")["CLIENTNAME"] == "Dashed"
    check = run_cli(office, "--check")
    assert check.returncode == 0, check

# Formulas in the additions file --------------------------------------------------------

FORMULAS = ['=HYPERLINK("https://evil.example","click")', "+cmd|' /C calc'!A0",
            "@SUM(1+1)", "-2+3"]


def test_the_additions_file_keeps_no_cell_a_spreadsheet_would_run(start_server,
                                                                   tmp_path):
    server = start_server(write_contacts(tmp_path / "office.csv",
                                         [("Ann", "", "050-111-1111")]))
    url = server.lookup("0509999871")["URL"]
    saved = _post(server, url, "/contact", {
        "name": FORMULAS[0], "company": FORMULAS[1], "notes": FORMULAS[2] + "\n" + FORMULAS[3],
        "phone": "+972-50-999-9871"})
    assert saved.status == 303, saved
    other = server.lookup("0508888872")["URL"]
    assert _post(server, other, "/contact", {"name": FORMULAS[3], "company": " " + FORMULAS[2],
                                             "phone": "0508888872"}).status == 303
    with open(tmp_path / "state" / "additions.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Name", "Company", "Phone", "Notes"]
    for row in rows[1:]:
        for cell in row:
            first = cell.lstrip()[:1]
            assert not first or first not in "=+-@" or cell.startswith("'"), (cell, rows)
    assert rows[1][0] == "'" + FORMULAS[0] and rows[1][2] == "'+972-50-999-9871"
    # Still the caller's contact: found by the pop-up, and editable from its page.
    assert server.lookup("0509999871")["TOTAL"] == 1
    _, text = _caller_page(server, "0509999871")
    assert 'name="row" value="2"' in text
    edited = _post(server, url, "/contact", {"row": "2", "name": "=1+1",
                                             "phone": "+972509999871"})
    assert edited.status == 303, edited
    assert server.lookup("0509999871")["CLIENTNAME"] == "'=1+1"


# An error building a page --------------------------------------------------------------

def test_an_error_building_a_page_is_the_html_error_page_in_its_language(tmp_path):
    """A checkout whose caller's page template is damaged (a half-copied upgrade)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(MODULE, checkout / "popup_server.py")
    shutil.copytree(MODULE.parent / "views", checkout / "views")
    shutil.copytree(MODULE.parent / "data", checkout / "data")
    for name in ("caller.tpl", "calls.tpl"):
        (checkout / "views" / name).write_text('% rebase("layout", title=t("no.such.key"))\n'
                                               "{{undefined_name}}\n", "utf-8")
    server = _start_as_a_user_would(
        tmp_path, checkout / "data" / "contacts.csv", "--state-dir", tmp_path / "state",
        "--token", "", "--office-password", "", "--calls-db", "", module=checkout / "popup_server.py")
    try:
        _error_pages(server)
    finally:
        server.stop()


def _error_pages(server):
    url = server.lookup("0722776772")["URL"]
    for path in (_path_of(url), "/calls"):
        for language, words in (("he-IL,he;q=0.9", ('lang="he" dir="rtl"', "משהו השתבש")),
                                ("en", ('lang="en"', "Something went wrong"))):
            page = server.get(path, headers={"Accept-Language": language})
            assert page.status == 500, (path, page)
            assert page.header("Content-Type").startswith("text/html"), (path, page)
            assert '"STATUS"' not in page.text
            for word in words:
                assert word in page.text, (path, language, page.text[:500])
    log = wait_until(lambda: "no.such.key" in server.log_text() and server.log_text(),
                     what="the error in the log")
    assert "building the page" in log and "Traceback" in log


# For every text: what the additions file keeps runs nothing ---------------------------

import popup_server as ps  # noqa: E402
from hypothesis import given, settings, strategies as st  # noqa: E402

#: Text made mostly of what starts formulas, spaces and look-alikes of the signs.
_FORMULA_TEXT = st.text(alphabet=st.sampled_from(
    list("=+-@ \t'\"|!A1(),;") + ["\uff1d", "\uff0b", "\ufe62", "\u200b", "\u00a0", "א"]),
    max_size=12) | st.text(max_size=12)


@pytest.fixture(scope="module")
def formula_server(start_module_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("formulas")
    office = write_contacts(base / "office.csv", [("Ann", "", "050-111-1111")])
    server = start_module_server(office, "--state-dir", base / "state")
    url = server.lookup("0509999871")["URL"]
    assert _post(server, url, "/contact", {"name": "first", "phone": "0509999871"}
                 ).status == 303
    return server, url, base / "state" / "additions.csv"


@settings(max_examples=40, deadline=None)
@given(name=_FORMULA_TEXT, company=_FORMULA_TEXT, notes=_FORMULA_TEXT)
def test_no_cell_of_the_additions_file_is_a_formula_whatever_is_typed(
        formula_server, name, company, notes):
    server, url, path = formula_server
    saved = _post(server, url, "/contact", {"row": "2", "name": name or "x",
                                            "company": company, "notes": notes,
                                            "phone": "+972509999871"})
    assert saved.status in (303, 400), saved
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 2, rows
    for cell in rows[1]:
        assert ps._no_formula(cell) == cell, (cell, rows)  # /calls.csv would write it so
    if saved.status == 303:
        assert server.lookup("0509999871")["CLIENTNAME"] == (rows[1][0] or rows[1][1])
