"""Contact files written the way real programs export them, for the tests.

Each ``write_*`` function writes one file into a directory, byte for byte as
the exporting program writes it (code page, byte-order mark, line ends,
quoting, delimiter), and returns ``(path, expected)``. ``expected`` is an
:class:`Expected`: the contacts that must be found, each with the caller ids
(written differently from the file) that must find it, plus what the loader
must report about the file.

The rows are made up; the layouts follow what Google Contacts, Outlook and
Excel write. Choices that are not certain are stated where they are made.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

CRLF = "\r\n"
LF = "\n"
UTF8_BOM = b"\xef\xbb\xbf"
UTF16LE_BOM = b"\xff\xfe"


@dataclass
class Expected:
    """What loading one fixture must give.

    contacts: dicts {row, name, company, numbers}; ``numbers`` are caller ids
        as the phone system sends them, each written differently from the cell.
    read_as / delimiter: what ``ContactIndex.read_as`` / ``.delimiter`` say (how
        --check writes the file's encoding or kind; delimiter None: not asserted,
        e.g. for .xlsx).
    name_columns / company_column: exact ColumnChoice values, or None when
        several choices would be right (then only ``not_columns`` is checked).
    phone_columns: columns that must be among ``ColumnChoice.phones``.
    not_columns: columns that must never be the name, the company or a phone
        column (phonetic names, labels, notes, addresses, titles...).
    shared: caller id -> (total, name of the first contact in file order).
    skipped_rows: spreadsheet rows (header = 1) skipped for having no number.
    unusable: (row, column, text that the reported cell contains).
    absent: caller ids that must find nothing (numbers in notes, addresses).
    rows_read: data rows in the file.
    numbers: distinct numbers indexed, when it is certain.
    """

    contacts: list[dict]
    read_as: str
    delimiter: str | None
    rows_read: int
    name_columns: tuple[str, ...] | None = None
    company_column: str | None = None
    phone_columns: set[str] = field(default_factory=set)
    not_columns: set[str] = field(default_factory=set)
    shared: dict[str, tuple[int, str]] = field(default_factory=dict)
    skipped_rows: list[int] = field(default_factory=list)
    unusable: list[tuple[int, str, str]] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    numbers: int | None = None


def contact(row: int, name: str, company: str, *numbers: str) -> dict:
    return {"row": row, "name": name, "company": company, "numbers": list(numbers)}


def _csv_text(header, rows, *, delimiter=",", newline=CRLF, quote_all=False) -> str:
    """Rows as text the way spreadsheet exporters quote them.

    Minimal quoting (cells with the delimiter, a quote or a line break are
    quoted, quotes doubled) unless ``quote_all``. A line break inside a cell is
    written as LF even when records end in CRLF, as Excel and Google do.
    """
    out = io.StringIO()
    writer = csv.writer(
        out,
        delimiter=delimiter,
        lineterminator=newline,
        quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
    )
    writer.writerow(header)
    for row in rows:
        if isinstance(row, dict):
            row = [row.get(h, "") for h in header]
        assert len(row) == len(header), row
        writer.writerow(row)
    return out.getvalue()


# --------------------------------------------------------------------------
# Google Contacts
# --------------------------------------------------------------------------

GOOGLE_HEADER = [
    "First Name", "Middle Name", "Last Name",
    "Phonetic First Name", "Phonetic Middle Name", "Phonetic Last Name",
    "Name Prefix", "Name Suffix", "Nickname", "File As",
    "Organization Name", "Organization Title", "Organization Department",
    "Birthday", "Notes", "Photo", "Labels",
    "E-mail 1 - Label", "E-mail 1 - Value", "E-mail 2 - Label", "E-mail 2 - Value",
    "Phone 1 - Label", "Phone 1 - Value", "Phone 2 - Label", "Phone 2 - Value",
    "Phone 3 - Label", "Phone 3 - Value",
    "Address 1 - Label", "Address 1 - Formatted", "Address 1 - Street",
    "Address 1 - City", "Address 1 - PO Box", "Address 1 - Region",
    "Address 1 - Postal Code", "Address 1 - Country", "Address 1 - Extended Address",
    "Website 1 - Label", "Website 1 - Value",
]


def write_google_csv(directory: Path, *, newline: str = CRLF,
                     filename: str = "contacts.csv") -> tuple[Path, Expected]:
    """Google Contacts "Google CSV" export, current layout: UTF-8 without BOM.

    Line ends: Google's exporter is believed to write CRLF (RFC 4180, like its
    other CSV downloads) but this is not certain, so ``newline`` lets the tests
    cover both CRLF and LF. Line breaks inside quoted cells are LF.
    """
    rows = [
        {   # row 2: Hebrew name, romanised phonetic name, ' ::: ' in a cell,
            # a custom label with a digit, a number in the notes, an address
            # with commas and line breaks.
            "First Name": "דנה", "Last Name": "כהן",
            "Phonetic First Name": "Dana", "Phonetic Last Name": "Cohen",
            "Nickname": "דנוש",
            "Organization Name": "כהן ייעוץ מס", "Organization Title": "רואת חשבון",
            "Organization Department": "מיסים", "Birthday": "1985-03-14",
            "Notes": "מספר ישן: 03-5559999\nלא להתקשר בשבת, רק בערב",
            "Labels": "Clients ::: * myContacts",
            "E-mail 1 - Label": "* Work", "E-mail 1 - Value": "dana@cohen-tax.co.il",
            "Phone 1 - Label": "* Mobile", "Phone 1 - Value": "054-123-4567",
            "Phone 2 - Label": "Work", "Phone 2 - Value": "03-555-1234 ::: 03-555-1235",
            "Phone 3 - Label": "Office 2", "Phone 3 - Value": "+972 3-555-1236",
            "Address 1 - Label": "Work",
            "Address 1 - Formatted": "רוטשילד 12, קומה 3\nתל אביב 6688101\nישראל",
            "Address 1 - Street": "רוטשילד 12, קומה 3", "Address 1 - City": "תל אביב",
            "Address 1 - Postal Code": "6688101", "Address 1 - Country": "ישראל",
            "Website 1 - Label": "Work", "Website 1 - Value": "https://cohen-tax.co.il",
        },
        {   # row 3: English name, international and bracketed numbers.
            "First Name": "Yossi", "Last Name": "Levi", "Nickname": "Yos",
            "Organization Name": "Levi Plumbing", "Organization Title": "Owner",
            "Organization Department": "Field team",
            "Labels": "* myContacts",
            "Phone 1 - Label": "Mobile", "Phone 1 - Value": "+972 52-765-4321",
            "Phone 2 - Label": "Home", "Phone 2 - Value": "(03) 555-6789",
            "Address 1 - Label": "Home",
            "Address 1 - Formatted": "12 Herzl St., Apt 4\nHaifa, 3303212\nIsrael",
            "Address 1 - Street": "12 Herzl St., Apt 4", "Address 1 - City": "Haifa",
            "Address 1 - Postal Code": "3303212", "Address 1 - Country": "Israel",
            "Website 1 - Label": "Profile", "Website 1 - Value": "https://levi-plumbing.example",
        },
        {   # row 4: a company only, no first or last name.
            "Organization Name": 'מוסך הדר בע"מ',
            "Labels": "Suppliers ::: * myContacts",
            "Phone 1 - Label": "Work", "Phone 1 - Value": "072-277-6772",
        },
        {   # row 5: no number at all: skipped.
            "First Name": "Noa", "Last Name": "Barak",
            "Labels": "* myContacts",
            "E-mail 1 - Label": "Home", "E-mail 1 - Value": "noa.barak@example.com",
        },
        {   # row 6: a foreign number and a test-range number that
            # libphonenumber does not call valid.
            "First Name": "John", "Last Name": "Smith", "Nickname": "Johnny",
            "Organization Name": "Acme Inc.", "Organization Title": "CTO",
            "Labels": "* myContacts",
            "E-mail 1 - Label": "Work", "E-mail 1 - Value": "john@acme.example",
            "E-mail 2 - Label": "Home", "E-mail 2 - Value": "js@example.org",
            "Phone 1 - Label": "Work", "Phone 1 - Value": "+1 212-555-0147",
            "Phone 2 - Label": "* Mobile", "Phone 2 - Value": "050-123-4567",
        },
    ]
    path = Path(directory) / filename
    path.write_bytes(_csv_text(GOOGLE_HEADER, rows, newline=newline).encode("utf-8"))
    expected = Expected(
        contacts=[
            contact(2, "דנה כהן", "כהן ייעוץ מס",
                    "0541234567", "972541234567", "035551234", "97235551235", "035551236"),
            contact(3, "Yossi Levi", "Levi Plumbing", "0527654321", "+97235556789"),
            contact(4, 'מוסך הדר בע"מ', 'מוסך הדר בע"מ', "0722776772", "972722776772"),
            contact(6, "John Smith", "Acme Inc.", "0012125550147", "+12125550147",
                    "0501234567"),
        ],
        read_as="utf-8",
        delimiter=",",
        rows_read=5,
        company_column="Organization Name",
        phone_columns={"Phone 1 - Value", "Phone 2 - Value", "Phone 3 - Value"},
        not_columns={
            "Phonetic First Name", "Phonetic Middle Name", "Phonetic Last Name",
            "Phone 1 - Label", "Phone 2 - Label", "Phone 3 - Label",
            "E-mail 1 - Label", "E-mail 1 - Value", "Labels", "Notes", "Birthday",
            "Address 1 - Formatted", "Address 1 - Street", "Address 1 - Postal Code",
            "Organization Title", "Organization Department",
        },
        skipped_rows=[5],
        absent=["035559999"],
        numbers=9,
    )
    return path, expected


GOOGLE_OLD_HEADER = [
    "Name", "Given Name", "Additional Name", "Family Name", "Yomi Name",
    "Given Name Yomi", "Additional Name Yomi", "Family Name Yomi", "Name Prefix",
    "Name Suffix", "Initials", "Nickname", "Short Name", "Maiden Name", "Birthday",
    "Gender", "Location", "Billing Information", "Directory Server", "Mileage",
    "Occupation", "Hobby", "Sensitivity", "Priority", "Subject", "Notes", "Language",
    "Photo", "Group Membership", "E-mail 1 - Type", "E-mail 1 - Value",
    "Phone 1 - Type", "Phone 1 - Value", "Phone 2 - Type", "Phone 2 - Value",
    "Address 1 - Type", "Address 1 - Formatted", "Address 1 - Street",
    "Address 1 - City", "Address 1 - PO Box", "Address 1 - Region",
    "Address 1 - Postal Code", "Address 1 - Country", "Address 1 - Extended Address",
    "Organization 1 - Type", "Organization 1 - Name", "Organization 1 - Yomi Name",
    "Organization 1 - Title", "Organization 1 - Department", "Organization 1 - Symbol",
    "Organization 1 - Location", "Organization 1 - Job Description",
    "Website 1 - Type", "Website 1 - Value",
]


def write_google_csv_old(directory: Path, *, encoding: str = "utf-16",
                         filename: str = "google-old.csv") -> tuple[Path, Expected]:
    """Older Google Contacts "Google CSV" layout (Name, Given Name, ... Phone 1 - Type).

    The old Gmail exporter wrote its "Google CSV" as UTF-16 little-endian with
    a byte-order mark, comma-delimited, CRLF: ``encoding="utf-16"`` (default).
    ``encoding="utf-8"`` writes the same rows as UTF-8 without BOM.
    """
    rows = [
        {   # row 2
            "Name": "רחל אברמוב", "Given Name": "רחל", "Family Name": "אברמוב",
            "Given Name Yomi": "Rachel", "Family Name Yomi": "Abramov",
            "Yomi Name": "Rachel Abramov",
            "Group Membership": "* My Contacts ::: Clients",
            "Phone 1 - Type": "Mobile", "Phone 1 - Value": "054-765-1111",
            "Phone 2 - Type": "Work", "Phone 2 - Value": "03-6123456 ::: 03-6123457",
            "Organization 1 - Type": "Work", "Organization 1 - Name": "אברמוב נכסים",
            "Organization 1 - Yomi Name": "Abramov Nechasim",
            "Organization 1 - Title": 'מנכ"לית',
        },
        {   # row 3: company only
            "Group Membership": "* My Contacts",
            "Phone 1 - Type": "Work", "Phone 1 - Value": "08-6371234",
            "Address 1 - Type": "Work",
            "Address 1 - Formatted": "Hativat Hanegev 1, Eilat\n8810101",
            "Organization 1 - Name": "Sunrise Hostel",
        },
        {   # row 4: no company
            "Name": "Moshe Katz", "Given Name": "Moshe", "Family Name": "Katz",
            "Group Membership": "* My Contacts",
            "E-mail 1 - Type": "* Home", "E-mail 1 - Value": "moshe@example.net",
            "Phone 1 - Type": "* Mobile", "Phone 1 - Value": "+972-50-222-3333",
        },
        {   # row 5: no number
            "Name": "עמית", "Given Name": "עמית",
            "Group Membership": "* My Contacts",
            "E-mail 1 - Type": "Home", "E-mail 1 - Value": "amit@example.net",
        },
    ]
    text = _csv_text(GOOGLE_OLD_HEADER, rows, newline=CRLF)
    if encoding == "utf-16":
        data = UTF16LE_BOM + text.encode("utf-16-le")
    else:
        data = text.encode(encoding)
    path = Path(directory) / filename
    path.write_bytes(data)
    expected = Expected(
        contacts=[
            contact(2, "רחל אברמוב", "אברמוב נכסים",
                    "0547651111", "036123456", "97236123457"),
            contact(3, "Sunrise Hostel", "Sunrise Hostel", "086371234", "97286371234"),
            contact(4, "Moshe Katz", "", "0502223333", "972502223333"),
        ],
        read_as=encoding,
        delimiter=",",
        rows_read=4,
        company_column="Organization 1 - Name",
        phone_columns={"Phone 1 - Value", "Phone 2 - Value"},
        not_columns={
            "Yomi Name", "Given Name Yomi", "Family Name Yomi", "Additional Name Yomi",
            "Phone 1 - Type", "Phone 2 - Type", "Group Membership",
            "Organization 1 - Yomi Name", "Organization 1 - Title",
            "Address 1 - Formatted", "E-mail 1 - Value",
        },
        skipped_rows=[5],
        numbers=5,
    )
    return path, expected


# --------------------------------------------------------------------------
# Outlook
# --------------------------------------------------------------------------

OUTLOOK_HEADER = [
    "First Name", "Middle Name", "Last Name", "Title", "Suffix", "Nickname",
    "Given Yomi", "Surname Yomi", "E-mail Address", "E-mail 2 Address",
    "E-mail 3 Address", "Home Phone", "Home Phone 2", "Business Phone",
    "Business Phone 2", "Mobile Phone", "Car Phone", "Other Phone", "Primary Phone",
    "Pager", "Business Fax", "Home Fax", "Other Fax", "Company Main Phone",
    "Callback", "Radio Phone", "Telex", "TTY/TDD Phone", "IMAddress", "Job Title",
    "Department", "Company", "Office Location", "Manager's Name",
    "Assistant's Name", "Assistant's Phone", "Company Yomi", "Business Street",
    "Business City", "Business State", "Business Postal Code",
    "Business Country/Region", "Home Street", "Home City", "Home State",
    "Home Postal Code", "Home Country/Region", "Other Street", "Other City",
    "Other State", "Other Postal Code", "Other Country/Region",
    "Personal Web Page", "Spouse", "Schools", "Hobby", "Location", "Web Page",
    "Birthday", "Anniversary", "Notes",
]


def write_outlook_csv(directory: Path, *,
                      filename: str = "outlook.csv") -> tuple[Path, Expected]:
    """Outlook "Comma Separated Values" export from Hebrew Windows.

    Windows-1255 ("ANSI"), CRLF, every cell quoted, empty dates as 0/0/00.
    Two colleagues share the company switchboard (Company Main Phone).
    """
    blank = {"Birthday": "0/0/00", "Anniversary": "0/0/00"}
    company = 'לוי ושות\' בע"מ'
    rows = [
        {   # row 2
            **blank, "First Name": "דנה", "Last Name": "לוי",
            "Given Yomi": "Dana", "Surname Yomi": "Levi",
            "E-mail Address": "dana@levi.co.il",
            "Business Phone": "03-5551212", "Mobile Phone": "052-5551313",
            "Company Main Phone": "03-5550000", "Business Fax": "03-5551214",
            "Job Title": "מנהלת חשבונות", "Department": "כספים",
            "Company": company, "Company Yomi": "Levi & Co",
            "Manager's Name": "משה כהן", "Assistant's Name": "רינה",
            "Business Street": "הרצל 5", "Business City": "רמת גן",
            "Business Postal Code": "5251234", "Business Country/Region": "ישראל",
        },
        {   # row 3: private person, no company
            **blank, "First Name": "אבי", "Last Name": "מזרחי",
            "Home Phone": "08-9451234", "Mobile Phone": "+972 54 555 1414",
            "Home Street": "הגפן 3", "Home City": "רחובות",
            "Notes": "חבר של דנה",
        },
        {   # row 4: same company switchboard as row 2
            **blank, "First Name": "יוסי", "Last Name": "כהן",
            "Business Phone": "03-5551515", "Company Main Phone": "03-5550000",
            "Job Title": "סמנכ\"ל מכירות", "Company": company,
        },
        {   # row 5: company only
            **blank, "Company": "מוסך הדר", "Company Main Phone": "04-8123456",
            "Business City": "חיפה",
        },
        {   # row 6: no number
            **blank, "First Name": "שרה", "Last Name": "נחום",
            "E-mail Address": "sara@example.co.il",
        },
    ]
    text = _csv_text(OUTLOOK_HEADER, rows, newline=CRLF, quote_all=True)
    path = Path(directory) / filename
    path.write_bytes(text.encode("windows-1255"))
    expected = Expected(
        contacts=[
            contact(2, "דנה לוי", company, "035551212", "972525551313"),
            contact(3, "אבי מזרחי", "", "089451234", "0545551414"),
            contact(4, "יוסי כהן", company, "97235551515"),
            contact(5, "מוסך הדר", "מוסך הדר", "048123456", "97248123456"),
        ],
        read_as="windows-1255",
        delimiter=",",
        rows_read=5,
        company_column="Company",
        phone_columns={"Home Phone", "Business Phone", "Mobile Phone",
                       "Company Main Phone"},
        not_columns={
            "Given Yomi", "Surname Yomi", "Company Yomi", "Title", "Job Title",
            "Department", "Manager's Name", "Assistant's Name", "E-mail Address",
            "Business Street", "Business Postal Code", "Home Street", "Notes",
            "Birthday", "Anniversary", "Nickname",
        },
        shared={"035550000": (2, "דנה לוי"), "97235550000": (2, "דנה לוי")},
        skipped_rows=[6],
    )
    return path, expected


# --------------------------------------------------------------------------
# Excel
# --------------------------------------------------------------------------

def write_excel_csv_ansi(directory: Path, *,
                         filename: str = "excel-ansi.csv") -> tuple[Path, Expected]:
    """Excel "CSV (comma delimited)" on Hebrew Windows: Windows-1255, CRLF,
    minimal quoting, Hebrew headers שם, חברה, טלפון, נייד.

    Row 3's phone was damaged by an earlier round trip through Excel: the cell
    holds the text 5.41E+08 (digits lost for good: must be reported).
    Row 4's number lost its leading zero (541234567).
    """
    header = ["שם", "חברה", "טלפון", "נייד", "הערות"]
    rows = [
        ["משה פרץ", "פרץ שיפוצים", "03-6421111", "050-7001111", ""],
        ["רונית אברהם", 'כהן ובניו בע"מ', "5.41E+08", "052-3334444", ""],
        ["יעל גבאי", "", "541234567", "", "לקוחה ותיקה, משלמת בזמן"],
        ["שמעון ביטון", "ביטון הובלות", "", "", "אין טלפון"],
        ["אורית חדד", "חדד קוסמטיקה", "09-7654321", "054-9876543", ""],
    ]
    path = Path(directory) / filename
    path.write_bytes(_csv_text(header, rows, newline=CRLF).encode("windows-1255"))
    expected = Expected(
        contacts=[
            contact(2, "משה פרץ", "פרץ שיפוצים", "036421111", "972507001111"),
            contact(3, "רונית אברהם", 'כהן ובניו בע"מ', "0523334444"),
            contact(4, "יעל גבאי", "", "0541234567", "+972541234567"),
            contact(6, "אורית חדד", "חדד קוסמטיקה", "97297654321", "0549876543"),
        ],
        read_as="windows-1255",
        delimiter=",",
        rows_read=5,
        name_columns=("שם",),
        company_column="חברה",
        phone_columns={"טלפון", "נייד"},
        not_columns={"הערות"},
        skipped_rows=[5],
        unusable=[(3, "טלפון", "5.41E+08")],
        absent=["0541000000", "541000000"],
        numbers=6,
    )
    return path, expected


def write_excel_csv_semicolon(directory: Path, *,
                              filename: str = "excel-semicolon.csv") -> tuple[Path, Expected]:
    """Excel "CSV (comma delimited)" where the locale's list separator is ';':
    Windows-1255, CRLF, ';' between cells, commas inside cells left unquoted.
    """
    header = ["איש קשר", "עסק", "טלפון", "טלפון נייד"]
    firm = "גולן, שטרן ושות'"
    rows = [
        ["נועה גולן", firm, "03-6090909", "054-6090909"],
        ["עידו שטרן", firm, "03-6090909", "052-6090910"],
        ["מיכל רז", "", "", "050-1212121"],
    ]
    path = Path(directory) / filename
    text = _csv_text(header, rows, delimiter=";", newline=CRLF)
    path.write_bytes(text.encode("windows-1255"))
    expected = Expected(
        contacts=[
            contact(2, "נועה גולן", firm, "0546090909", "+972546090909"),
            contact(3, "עידו שטרן", firm, "0526090910"),
            contact(4, "מיכל רז", "", "0501212121"),
        ],
        read_as="windows-1255",
        delimiter=";",
        rows_read=3,
        name_columns=("איש קשר",),
        company_column="עסק",
        phone_columns={"טלפון", "טלפון נייד"},
        shared={"036090909": (2, "נועה גולן")},
        numbers=4,
    )
    return path, expected


def write_excel_csv_utf8(directory: Path, *,
                         filename: str = "excel-utf8.csv") -> tuple[Path, Expected]:
    """Excel "CSV UTF-8 (comma delimited)": UTF-8 with BOM, CRLF; first and
    last name in two columns; the BOM sits right before the first header."""
    header = ["שם פרטי", "שם משפחה", "ארגון", "פלאפון", "מספר טלפון"]
    rows = [
        ["אלון", "ברק", "ברק מחשבים", "050-3030303", "03-6030303"],
        ["ליאת", "שמיר", "", "054-4040404", ""],
        ["", "", "קפה נחת", "", "03-5050505"],
    ]
    path = Path(directory) / filename
    path.write_bytes(UTF8_BOM + _csv_text(header, rows, newline=CRLF).encode("utf-8"))
    expected = Expected(
        contacts=[
            contact(2, "אלון ברק", "ברק מחשבים", "0503030303", "97236030303"),
            contact(3, "ליאת שמיר", "", "972544040404"),
            contact(4, "קפה נחת", "קפה נחת", "035050505"),
        ],
        read_as="utf-8-sig",
        delimiter=",",
        rows_read=3,
        name_columns=("שם פרטי", "שם משפחה"),
        company_column="ארגון",
        phone_columns={"פלאפון", "מספר טלפון"},
        numbers=4,
    )
    return path, expected


def write_excel_unicode_text(directory: Path, *,
                             filename: str = "excel-unicode.txt") -> tuple[Path, Expected]:
    """Excel "Unicode Text (*.txt)": UTF-16 LE with BOM, tab-delimited, CRLF;
    cells with a quote are quoted (quote doubled), commas are left alone."""
    header = ["שם מלא", "שם חברה", "טלפון עבודה", "טלפון נייד", "כתובת"]
    rows = [
        ["עומר דיין", 'דיין בע"מ', "03-7001234", "052-7001234", "הרצל 1, תל אביב"],
        ["שירה לב", "", "", "+972-54-7005678", ""],
        ["Tamar Oz", "Oz Studio", "04-8005678", "", "Haifa"],
    ]
    text = _csv_text(header, rows, delimiter="\t", newline=CRLF)
    path = Path(directory) / filename
    path.write_bytes(UTF16LE_BOM + text.encode("utf-16-le"))
    expected = Expected(
        contacts=[
            contact(2, "עומר דיין", 'דיין בע"מ', "037001234", "972527001234"),
            contact(3, "שירה לב", "", "0547005678"),
            contact(4, "Tamar Oz", "Oz Studio", "+97248005678"),
        ],
        read_as="utf-16",
        delimiter="\t",
        rows_read=3,
        name_columns=("שם מלא",),
        company_column="שם חברה",
        phone_columns={"טלפון עבודה", "טלפון נייד"},
        not_columns={"כתובת"},
        numbers=4,
    )
    return path, expected


def write_xlsx(directory: Path, *, filename: str = "clients.xlsx") -> tuple[Path, Expected]:
    """An .xlsx workbook (written with openpyxl, as Excel stores it) whose phone
    cells are numbers: 541234567 (leading zero lost), 35553399 (landline
    03-5553399), 541234568.0 (a float: openpyxl and Excel store it as
    <v>541234568</v>; here it is rewritten as <v>5.41234568E8</v>, the way
    Apache POI based exporters store doubles, so it reads back as a float with
    every digit), and 541000000 shown as 5.41E+08 (number format 0.00E+00: the
    digits were lost before it was saved; must be reported, not guessed).
    """
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Contacts"
    ws.append(["Client Name", "Company Name", "Phone Number", "Tel.", "Mobile", "Notes"])
    ws.append(["Ofer Sade", "Sade Optics", 541234567, None, None, "VIP"])
    ws.append(["Galit Noy", "Noy Bakery", None, 35553399, 541234568.0, None])
    ws.append(["Ronen Paz", "Paz Garage", "03-5557788", None, 541000000.0, None])
    ws["E4"].number_format = "0.00E+00"
    ws.append(["Tali Erez", None, "052-8889999", None, None, "since 2019"])
    ws.append(["Boaz Hen", "Hen Law", None, None, None, "no phone"])
    path = Path(directory) / filename
    wb.save(path)
    _store_as_java_double(path, "541234568")
    expected = Expected(
        contacts=[
            contact(2, "Ofer Sade", "Sade Optics", "0541234567", "972541234567"),
            contact(3, "Galit Noy", "Noy Bakery", "035553399", "0541234568"),
            contact(4, "Ronen Paz", "Paz Garage", "035557788"),
            contact(5, "Tali Erez", "", "0528889999"),
        ],
        read_as="xlsx",
        delimiter=None,
        rows_read=5,
        name_columns=("Client Name",),
        company_column="Company Name",
        phone_columns={"Phone Number", "Tel.", "Mobile"},
        not_columns={"Notes"},
        skipped_rows=[6],
        unusable=[(4, "Mobile", "")],
        absent=["0541000000", "541000000", "972541000000"],
        numbers=5,
    )
    return path, expected


def _store_as_java_double(path: Path, digits: str) -> None:
    """Rewrite the cell value <v>DIGITS</v> of the first sheet as Java's
    Double.toString writes it (5.41234568E8), as POI-made workbooks hold it."""
    import zipfile

    java = f"{digits[0]}.{digits[1:].rstrip('0') or '0'}E{len(digits) - 1}"
    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info.filename)) for info in zin.infolist()]
    old, new = f"<v>{digits}</v>".encode(), f"<v>{java}</v>".encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, data in entries:
            if info.filename == "xl/worksheets/sheet1.xml":
                assert data.count(old) == 1, "fixture cell not found"
                data = data.replace(old, new)
            zout.writestr(info, data)


def write_xlsx_two_sheets(directory: Path, *,
                          filename: str = "two-sheets.xlsx") -> tuple[Path, dict]:
    """A workbook with a "Suppliers" sheet first and a "Clients" sheet second.

    Returns (path, {sheet name: [contact dicts]}).
    """
    import openpyxl

    wb = openpyxl.Workbook()
    suppliers = wb.active
    suppliers.title = "Suppliers"
    suppliers.append(["Name", "Company", "Phone"])
    suppliers.append(["Avner Golan", "Golan Steel", "03-9001111"])
    clients = wb.create_sheet("Clients")
    clients.append(["Client Name", "Phone Number"])
    clients.append(["Lea Bar", "054-9002222"])
    clients.append(["Dor Kam", 549003333])
    path = Path(directory) / filename
    wb.save(path)
    return path, {
        "Suppliers": [contact(2, "Avner Golan", "Golan Steel", "039001111")],
        "Clients": [contact(2, "Lea Bar", "", "0549002222"),
                    contact(3, "Dor Kam", "", "972549003333")],
    }


# --------------------------------------------------------------------------
# Numbers as people type them
# --------------------------------------------------------------------------

def write_messy_numbers_csv(directory: Path, *,
                            filename: str = "office.csv") -> tuple[Path, Expected]:
    """A plain UTF-8 CSV with LF line ends (as a script or LibreOffice writes
    it) whose phone cells hold extensions, several numbers, line breaks, a
    switchboard shared by two people and a row without any number."""
    header = ["Name", "Company", "Phone", "Mobile", "Notes"]
    rows = [
        ["Avi Mizrahi", "Mizrahi Law", "03-5553333 ext. 12", "", ""],          # 2
        ["Batya Golan", "Golan Design", "03-5553334 x12", "", ""],             # 3
        ["Chaim Peretz", "Peretz & Sons", "03-5553335 #12", "", ""],           # 4
        ["דורית שלום", "שלום הנדסה", "03-5553336 שלוחה 12", "", ""],           # 5
        ["Eli Katz", "Katz Ltd", "03-5551111 / 052-5552222", "", ""],          # 6
        ["Frida Navon", "Navon Catering", "072-2000000; 072-2000001", "", ""],  # 7
        ["Gadi Baruch", "", "054-3000001\n054-3000002", "", ""],               # 8
        ["Hila Sasson", "Sasson Tours", "", "", "call via email"],             # 9
        ["Itai Ron", "Migdal Center", "03-5550000", "050-4000001", ""],        # 10
        ["Yael Tal", "Migdal Center", "03-5550000", "050-4000002", ""],        # 11
        ["Kobi Ben-Ami", "", "+1 212-555-0147", "", ""],                       # 12
        ["Lior Dahan", "", "(03) 555-6789", "+972 52-765-4321", "old: 03-5559999"],  # 13
        ["Maya Sharon", "", "00972527654322", "972527654323", ""],             # 14
        ["Nir Adam", "", "", "052 7654324", ""],                               # 15
    ]
    path = Path(directory) / filename
    path.write_bytes(_csv_text(header, rows, newline=LF).encode("utf-8"))
    expected = Expected(
        contacts=[
            contact(2, "Avi Mizrahi", "Mizrahi Law", "035553333", "97235553333"),
            contact(3, "Batya Golan", "Golan Design", "035553334"),
            contact(4, "Chaim Peretz", "Peretz & Sons", "035553335"),
            contact(5, "דורית שלום", "שלום הנדסה", "035553336"),
            contact(6, "Eli Katz", "Katz Ltd", "035551111", "0525552222"),
            contact(7, "Frida Navon", "Navon Catering", "0722000000", "972722000001"),
            contact(8, "Gadi Baruch", "", "0543000001", "972543000002"),
            contact(10, "Itai Ron", "Migdal Center", "0504000001"),
            contact(11, "Yael Tal", "Migdal Center", "972504000002"),
            contact(12, "Kobi Ben-Ami", "", "0012125550147", "+12125550147"),
            contact(13, "Lior Dahan", "", "035556789", "0527654321"),
            contact(14, "Maya Sharon", "", "0527654322", "0527654323"),
            contact(15, "Nir Adam", "", "+972527654324"),
        ],
        read_as="utf-8",
        delimiter=",",
        rows_read=14,
        name_columns=("Name",),
        company_column="Company",
        phone_columns={"Phone", "Mobile"},
        not_columns={"Notes"},
        shared={"035550000": (2, "Itai Ron"), "97235550000": (2, "Itai Ron")},
        skipped_rows=[9],
        absent=["035559999", "12", "03555333312"],
        # 4 with extensions, 2+2+2 split cells, 1 switchboard + 2 mobiles,
        # 1 foreign, 2 + 2 + 1 on rows 13-15.
        numbers=19,
    )
    return path, expected


ALL_WRITERS = {
    "google-crlf": lambda d: write_google_csv(d, newline=CRLF),
    "google-lf": lambda d: write_google_csv(d, newline=LF),
    "google-old-utf16": lambda d: write_google_csv_old(d, encoding="utf-16"),
    "google-old-utf8": lambda d: write_google_csv_old(d, encoding="utf-8"),
    "outlook-1255": write_outlook_csv,
    "excel-csv-1255": write_excel_csv_ansi,
    "excel-csv-1255-semicolon": write_excel_csv_semicolon,
    "excel-csv-utf8-bom": write_excel_csv_utf8,
    "excel-unicode-text": write_excel_unicode_text,
    "xlsx": write_xlsx,
    "messy-numbers": write_messy_numbers_csv,
}
