"""Issue 12, item 4: several contacts sources served at once, over real HTTP against the
real server process; and the holder's own ways to add and reload a source (issue 13)."""

from __future__ import annotations

import pytest

import popup_server as ps
from conftest import wait_until, write_contacts
from linksite import LinkSite, Page
from vcards import write_iphone

HEADER = ("name", "company", "phone")


@pytest.fixture
def site():
    site = LinkSite().start()
    yield site
    site.stop()


@pytest.fixture
def state(tmp_path):
    """As in test_url_sources: the state folder for the test (issue 14's --state-dir);
    until that lands, what a test downloads into the checkout's data/ is removed."""
    env = {"POPUP_STATE_DIR": str(tmp_path / "state")}
    downloads = ps.parse_config([], environ=env).state_path / "downloads"
    before = set(downloads.glob("*"))
    yield env
    if tmp_path not in downloads.parents:
        for path in set(downloads.glob("*")) - before:
            path.unlink(missing_ok=True)


def customers(tmp_path, *rows):
    return write_contacts(tmp_path / "book" / "customers.csv", rows or [
        ("Alice Customer", "Acme", "050-111-1111"),
        ("Office Customers", "Acme", "072-277-6772")], header=HEADER)


def health_of(server):
    resp = server.get("/health")
    return resp.status, resp.json()


def test_files_of_several_kinds_and_a_link_are_served_as_one(start_server, site, state,
                                                             tmp_path):
    csv_path = customers(tmp_path)
    vcf_path, _people = write_iphone(tmp_path)  # Dan Levi holds 072-277-6772 too
    site.pages["/suppliers.csv"] = Page("name,company,phone\nBob Supplier,Bolts,"
                                        "050-222-2222\nSupplier Desk,Bolts,0722776772\n")
    link = f"{site.url}/suppliers.csv"
    server = start_server(csv_path, vcf_path, link, env=state)
    shared = server.lookup("+972722776772")
    assert (shared["CLIENTNAME"], shared["TOTAL"]) == ("Office Customers", 3), shared
    assert server.lookup("0541234567")["CLIENTNAME"] == "נועה כהן"
    assert server.lookup("0502222222")["CLIENTNAME"] == "Bob Supplier"
    status, body = health_of(server)
    assert status == 200 and body["contacts"] == 2 + 3 + 2, body
    assert [(s["source"], s["contacts"], s["last_error"]) for s in body["sources"]] == [
        ("customers.csv", 2, None), ("Contacts.vcf", 3, None),
        (ps.public_link(f"{site.url}/suppliers.csv"), 2, None)], body
    assert body["sources"][2]["source"].startswith(f"{site.url}/ (link "), body
    assert "suppliers" not in body["sources"][2]["source"], body  # no part of the path
    assert all(s["loaded_at"] for s in body["sources"]), body
    assert str(tmp_path) not in server.get("/health").text

    # The first source named wins the pop-up (after the first server: one a state folder).
    server.stop()
    other = start_server(link, csv_path, env=state)
    assert other.lookup("0722776772")["CLIENTNAME"] == "Supplier Desk"


def test_a_broken_source_keeps_its_contacts_while_the_others_update(start_server,
                                                                    tmp_path):
    first = customers(tmp_path)
    second = write_contacts(tmp_path / "book" / "phone.csv",
                            [("Bob Phone", "", "050-222-2222")], header=HEADER)
    server = start_server(first, second, "--reload-interval", "0.2")
    first.write_text("name,company\nAlice Customer,Acme\n", encoding="utf-8")  # no phone
    status, body = wait_until(lambda: (lambda h: h if h[0] == 503 else None)(
        health_of(server)), what="/health 503 once the first file broke")
    assert body["sources"][0]["last_error"].startswith("customers.csv: "), body
    assert body["sources"][1]["last_error"] is None, body
    assert body["contacts_file"] == ("1 of 2 sources fail to load; still serving their "
                                     "last good contacts"), body
    write_contacts(second, [("Bob Phone", "", "050-222-2222"),
                            ("Carol Phone", "", "050-333-3333")], header=HEADER)
    wait_until(lambda: server.lookup("0503333333")["CLIENTNAME"] == "Carol Phone",
               what="the second file's new contact")
    assert server.lookup("0501111111")["CLIENTNAME"] == "Alice Customer"
    assert health_of(server)[0] == 503
    customers(tmp_path)
    wait_until(lambda: health_of(server)[0] == 200, what="/health 200 once mended")
    assert health_of(server)[1]["contacts"] == 4


@pytest.mark.parametrize("how", ["variable", "config list", "config string"])
def test_several_sources_from_the_variable_or_the_config_file(start_server, tmp_path, how):
    first = customers(tmp_path)
    second = write_contacts(tmp_path / "book" / "phone.csv",
                            [("Bob Phone", "", "050-222-2222")], header=HEADER)
    args, env = [], {}
    if how == "variable":
        env["POPUP_CONTACTS"] = f"{first}|{second}"
    else:
        value = f'["{first}", "{second}"]' if how == "config list" \
            else f'"{first} | {second}"'
        (tmp_path / "popup.toml").write_text(f"contacts = {value}\n", encoding="utf-8")
        args = ["--config", tmp_path / "popup.toml"]
    server = start_server(None, *args, env=env)
    assert server.lookup("0501111111")["CLIENTNAME"] == "Alice Customer"
    assert server.lookup("0502222222")["CLIENTNAME"] == "Bob Phone"
    assert len(server.health()["sources"]) == 2


def test_check_reports_each_source_and_the_total(run_cli, tmp_path):
    first = customers(tmp_path)
    vcf_path, _people = write_iphone(tmp_path)
    result = run_cli("--check", first, "--region", "IL", vcf_path)  # options between
    out = result.stdout.decode()
    assert result.returncode == 0, result
    assert f"== {first}\nfile: {first}\n" in out and f"== {vcf_path}\n" in out, out
    assert "2 contacts can be found" in out and "3 contacts can be found" in out, out
    assert out.rstrip().endswith("== in total: 5 contacts can be found in 2 of 2 sources, "
                                 "6 distinct numbers"), out  # 072-277-6772 in both

    missing = tmp_path / "gone.csv"
    result = run_cli(first, missing, "--check")
    assert result.returncode == 2, result
    assert "in 1 of 2 sources" in result.stdout.decode()
    assert result.stderr.decode().strip() == f"popup_server: {missing}: no such file", result


def test_template_columns_of_several_sources_fill_each_contact_link(start_server, tmp_path):
    first = write_contacts(tmp_path / "a.csv", [("Ann", "", "050-111-1111", "7", "north")],
                           header=("name", "company", "phone", "id", "region"))
    second = write_contacts(tmp_path / "b.csv", [("Ben", "south", "050-222-2222")],
                            header=("name", "Region", "phone"))
    third = write_contacts(tmp_path / "c.csv", [("Cat", "", "050-333-3333")], header=HEADER)
    server = start_server(first, second, third,
                          "--url-template", "https://crm.example.com/{id}?r={region}")
    urls = [server.lookup(phone)["URL"] for phone in
            ("0501111111", "0502222222", "0503333333")]
    assert urls == ["https://crm.example.com/7?r=north", "https://crm.example.com/?r=south",
                    "https://crm.example.com/?r="], urls


def test_the_program_adds_a_last_source_and_reloads_it_at_once(tmp_path):
    first = customers(tmp_path)
    config = ps.parse_config([str(first), "--token", "", "--calls-db", ""], environ={})
    holder = ps.ContactsHolder(config)
    added = write_contacts(tmp_path / "state" / "additions.csv",
                           [("Added Alice", "", "050-111-1111"),
                            ("Added Dana", "", "050-444-4444")], header=HEADER)
    with holder.watching():
        holder.add_source(added)
        match = holder.index.lookup("0501111111")
        assert (match.total, match.contact.name) == (2, "Alice Customer")  # added last
        assert holder.index.lookup("0504444444").contact.name == "Added Dana"
        write_contacts(added, [("Added Dana", "", "050-444-4444"),
                               ("Added Eve", "", "050-555-5555")], header=HEADER)
        assert holder.reload_source(added) is True  # at once: no settle wait
        assert holder.index.lookup("0505555555").contact.name == "Added Eve"
        assert holder.index.lookup("0501111111").total == 1
    health = holder.health()
    assert [s["source"] for s in health["sources"]] == ["customers.csv", "additions.csv"]
    assert health["contacts"] == 4, health
