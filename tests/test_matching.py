"""PS3.4 C.2.2.2 attribute matching, rule by rule, in Python and in SQL on SQLite and PostgreSQL.

Each table's expected results are written from the standard text quoted above it (or, where the standard leaves
room, from the choice documented in ``hounsfield.matching``), never from the code. Every SQL case stores the value
normalised as at ingest and selects it back with the condition built for the query.
"""

from __future__ import annotations

import copy
import itertools
import os
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.valuerep import PersonName
from sqlalchemy import Column, ColumnElement, Engine, Integer, MetaData, String, Table, create_engine, select, text
from sqlalchemy.exc import OperationalError

from hounsfield import matching as m
from hounsfield.errors import InvalidQuery

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass
class Db:
    engine: Engine
    table: Table


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    schema = None
    if request.param == "sqlite":
        engine = create_engine("sqlite://")
    else:
        engine = create_engine(PG_URL)
        try:
            with engine.connect():
                pass
        except OperationalError as exc:
            engine.dispose()
            if IN_CI:
                pytest.fail(f"CI=true but PostgreSQL is unreachable at {PG_URL}: {exc}")
            pytest.skip(f"PostgreSQL unreachable at {PG_URL}")
        schema = f"test_matching_{uuid.uuid4().hex[:12]}"
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    metadata = MetaData(schema=schema)
    table = Table("match_values", metadata, Column("id", Integer, primary_key=True),
                  *(Column(name, String) for name in ("v", "mv", "d", "t")))
    metadata.create_all(engine)
    try:
        yield Db(engine, table)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE') if schema else text("DROP TABLE match_values"))
        engine.dispose()


_row_ids = itertools.count(1)


def sql_hit(db: Db, condition: ColumnElement[bool] | None, **row: str) -> bool:
    """Insert one row, then whether selecting it with ``condition`` (None: no condition) finds it."""
    row_id = next(_row_ids)
    with db.engine.begin() as conn:
        conn.execute(db.table.insert().values(id=row_id, **row))
        query = select(db.table.c.id).where(db.table.c.id == row_id)
        return conn.execute(query if condition is None else query.where(condition)).first() is not None


def check(db: Db, vr: str, query: Any, stored: Any, expected: bool, *, fuzzy: bool = False) -> None:
    assert m.matches(vr, query, stored, fuzzy_pn=fuzzy) is expected, "Python side"
    assert (m.explain(vr, query, stored, fuzzy_pn=fuzzy) is None) is expected, "explain agrees"
    condition = m.sql_condition(db.table.c.v, vr, query, fuzzy_pn=fuzzy)
    assert sql_hit(db, condition, v=m.normalize_value(vr, stored)) is expected, "SQL side"


# C.2.2.2.1: "only entities with values that match exactly the value specified in the request shall match. This
# matching is case-sensitive" (PN may be insensitive: off by default). Padding spaces are not significant (PS3.5).
SINGLE_VALUE = [
    ("CS", "CT", "CT", True),
    ("CS", "CT", "ct", False),
    ("CS", "ct", "CT", False),
    ("CS", "CT", "CTX", False),
    ("CS", "CT", "", False),
    ("CS", "CT", None, False),
    ("SH", "ABC", "abc", False),
    ("LO", "PAT 1", "PAT 1", True),
    ("LO", "PAT1", "PAT1 ", True),
    ("AE", "CT_ROOM2", "CT_ROOM1", False),
    ("PN", "Smith^John", "Smith^John", True),
    ("PN", "Smith^John", "smith^john", False),
    ("PN", "Smith", "Smith^John", False),
    ("PN", "Smith^John", "Smith^John^^ ", True),
    ("PN", "Smith^John^", PersonName("Smith^John"), True),
    ("DA", "20240101", "20240101", True),
    ("DA", "20240101", "20240102", False),
    ("DA", "20240101", "2024.01.01", True),
    ("TM", "0800", "080000", True),
    ("TM", "0800", "080000.000000", True),
    ("TM", "0800", "080001", False),
    ("TM", "08", "080000.000000", True),
    ("DT", "20240101120000", "20240101120000.000000+0100", True),
    ("IS", "7", "+007", True),
    ("IS", "7", "70", False),
    ("DS", "1.50", "1.5", True),
    ("US", 512, 512, True),
]


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), SINGLE_VALUE)
def test_single_value_matching(db: Db, vr: str, query: Any, stored: Any, expected: bool) -> None:
    check(db, vr, query, stored, expected)


# C.2.2.2.2: "A List of UIDs is encoded by using the value multiplicity operator, backslash ... Each UID in the
# list may generate a match."
UID_LIST = [
    ("1.2.3", "1.2.3", True),
    ("1.2.3\\1.2.4", "1.2.4", True),
    ("1.2.3\\1.2.4", "1.2.5", False),
    (["1.2.3", "1.2.4"], "1.2.3", True),
    ("1.2", "1.2.3", False),
    ("1.2.3", "1.2.3\0", True),
]


@pytest.mark.parametrize(("query", "stored", "expected"), UID_LIST)
def test_list_of_uid_matching(db: Db, query: Any, stored: str, expected: bool) -> None:
    check(db, "UI", query, stored, expected)


# C.2.2.2.3: "If the value specified for a Key Attribute in a request is zero length, then all entities shall
# match"; C.2.2.2.4 note: "Wild Card Matching on a value of "*" is equivalent to Universal Matching".
UNIVERSAL = [("CS", ""), ("CS", None), ("CS", "*"), ("PN", "**"), ("LO", "  "), ("UI", ""), ("DA", "*"), ("DA", "-"),
             ("TM", ""), ("CS", "CT\\*"), ("PN", "*")]


@pytest.mark.parametrize(("vr", "query"), UNIVERSAL)
@pytest.mark.parametrize("stored", ["X", ""])
def test_universal_matching(db: Db, vr: str, query: Any, stored: str) -> None:
    assert m.sql_condition(db.table.c.v, vr, query) is None
    assert m.sql_condition(db.table.c.v, vr, query, fuzzy_pn=True) is None
    assert m.matches(vr, query, stored) and m.explain(vr, query, stored) is None
    assert sql_hit(db, None, v=stored)


# C.2.2.2.4: for AE, CS, LO, LT, PN, SH, ST, UC, UR and UT, "*" matches any sequence of characters (including a zero
# length value) and "?" any single character; case-sensitive. SQL wild cards % and _ are ordinary characters here.
WILDCARD = [
    ("CS", "CT*", "CT", True),
    ("CS", "CT*", "CTX", True),
    ("CS", "CT*", "XCT", False),
    ("CS", "*T", "CT", True),
    ("SH", "C?", "CT", True),
    ("SH", "C?", "C", False),
    ("SH", "C?", "CTX", False),
    ("LO", "*ROOM?", "CT_ROOM1", True),
    ("LO", "ct*", "CT1", False),
    ("LO", "CT*", "ct1", False),
    ("LO", "100%*", "100%X", True),
    ("LO", "100%*", "1000X", False),
    ("LO", "A_B*", "A_BC", True),
    ("LO", "A_B*", "AXBC", False),
    ("LO", "A!*", "A!B", True),
    ("LO", "A!*", "AB", False),
    ("LO", "[A]*", "[A]B", True),
    ("LO", "[A]*", "AB", False),
    ("LO", "Mü?ler", "Müller", True),
    ("PN", "Sm?th^*", "Smith^John", True),
    ("PN", "sm*", "Smith", False),
    ("UT", "a\\b*", "a\\bc", True),
    ("UT", "a\\b*", "b", False),
    ("AE", "CT_ROOM1\\MR*", "MR_ROOM", True),
]


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), WILDCARD)
def test_wild_card_matching(db: Db, vr: str, query: str, stored: str, expected: bool) -> None:
    check(db, vr, query, stored, expected)


# C.2.2.2.5.1-3: "<a> - <b>" matches a to b inclusive, "- <a>" up to and including a, "<a> -" a and later.
# Upper bounds include the whole period they name (choice: "1600" ends at 16:00:59.999999).
RANGE = [
    ("DA", "20240101-20240103", "20240101", True),
    ("DA", "20240101-20240103", "20240103", True),
    ("DA", "20240101-20240103", "20240104", False),
    ("DA", "20240101-20240103", "20231231", False),
    ("DA", "20240101 - 20240103", "20240102", True),
    ("DA", "20240101-20240103", "2024.01.02", True),
    ("DA", "-20240101", "19990101", True),
    ("DA", "-20240101", "20240102", False),
    ("DA", "-20240101", "", False),
    ("DA", "20240101-", "20991231", True),
    ("DA", "20240101-", "20231231", False),
    ("TM", "080000-160000", "080000", True),
    ("TM", "080000-160000", "160000", True),
    ("TM", "080000-160000", "075959.999999", False),
    ("TM", "080000-160000", "160001", False),
    ("TM", "0800-1600", "160059", True),
    ("TM", "0800-1600", "160100", False),
    ("TM", "08-16", "165959.999999", True),
    ("TM", "08-16", "170000", False),
    ("TM", "-0800", "000000", True),
    ("TM", "1600-", "235959", True),
    ("TM", "1600-", "155959", False),
    ("DT", "20240101-20240102", "20240102235959", True),
    ("DT", "20240101-20240102", "20240103000000", False),
    ("DT", "20240101-20240102", "20231231235959.999999", False),
    ("DT", "2024-", "20240101000000", True),
    ("DT", "-202402", "20240229120000", True),
    ("DT", "-202402", "20240301000000", False),
    ("DT", "20240101120000-0500", "20240101120000", True),  # a single value with an offset, not a range
    ("DA", "20240101\\20240105-", "20240106", True),
]


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), RANGE)
def test_range_matching(db: Db, vr: str, query: str, stored: str, expected: bool) -> None:
    check(db, vr, query, stored, expected)


# Multiple values in a key other than a UID: "any of" (C.2.2.2.8 note 4 leaves them undefined without negotiation).
MULTIPLE_VALUES = [
    ("CS", "CT\\MR", "CT", True),
    ("CS", "CT\\MR", "MR", True),
    ("CS", "CT\\MR", "US", False),
    ("CS", ["CT", "MR"], "MR", True),
    ("CS", "CT\\MR", ["US", "MR"], True),
]


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), MULTIPLE_VALUES)
def test_multiple_values_in_key(db: Db, vr: str, query: Any, stored: Any, expected: bool) -> None:
    if isinstance(stored, list):  # a multi-valued stored attribute is a multi-value column
        assert m.matches(vr, query, stored) is expected
        condition = m.sql_multi_value_condition(db.table.c.mv, vr, query)
        assert sql_hit(db, condition, mv=m.normalize_multi_value(vr, stored)) is expected
    else:
        check(db, vr, query, stored, expected)


# Multi-valued stored attribute (e.g. Modalities in Study, Scheduled Station AE Title) in a "\CT\MR\" column: any
# stored value matching any query value; a wild card never spans two stored values.
MULTI_VALUE_COLUMN = [
    ("CS", "MR", ["CT", "MR"], True),
    ("CS", "US", ["CT", "MR"], False),
    ("CS", "US\\MR", ["CT", "MR"], True),
    ("CS", "M?", ["CT", "MR"], True),
    ("CS", "*T", ["CT", "MR"], True),
    ("CS", "C*R", ["CT", "MR"], False),
    ("CS", "T?M", ["CT", "MR"], False),
    ("CS", "ct", ["CT"], False),
    ("CS", "MR", [], False),
    ("AE", "CT_ROOM1", ["CT_ROOM1", "CT_ROOM2"], True),
    ("LO", 'A"B', ['A"B', "C"], True),
    ("LO", "100%*", ["100%X"], True),
    ("LO", "1_0*", ["100"], False),
    ("DA", "20240101-20240103", ["20231231", "20240102"], True),
]


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), MULTI_VALUE_COLUMN)
def test_multi_value_column(db: Db, vr: str, query: str, stored: list[str], expected: bool) -> None:
    column_value = m.normalize_multi_value(vr, stored)
    assert m.matches(vr, query, stored) is expected
    assert m.matches(vr, query, column_value) is expected
    condition = m.sql_multi_value_condition(db.table.c.mv, vr, query)
    assert sql_hit(db, condition, mv=column_value) is expected


def test_multi_value_column_fuzzy_person_names(db: Db) -> None:
    condition = m.sql_multi_value_condition(db.table.c.mv, "PN", "doe", fuzzy_pn=True)
    assert sql_hit(db, condition, mv=m.normalize_multi_value("PN", ["Smith^John", "DOE^JANE"]))
    assert m.matches("PN", "doe", ["Smith^John", "DOE^JANE"], fuzzy_pn=True)


# C.2.2.2.5.4: with combined date-time matching, a DA and its TM "both of which specify the same form of Range
# Matching" are matched as one datetime: 20240101-20240102 with 0800-1600 spans Jan 1 08:00 to Jan 2 16:00.
COMBINED = [
    ("20240101-20240102", "080000-160000", "20240101", "070000", False),
    ("20240101-20240102", "080000-160000", "20240101", "080000", True),
    ("20240101-20240102", "080000-160000", "20240101", "235959", True),
    ("20240101-20240102", "080000-160000", "20240102", "030000", True),
    ("20240101-20240102", "080000-160000", "20240102", "160000", True),
    ("20240101-20240102", "080000-160000", "20240102", "160001", False),
    ("20240101-20240102", "080000-160000", "20231231", "120000", False),
    ("20240101-20240102", "080000-160000", "20240103", "100000", False),
    ("20240101-20240102", "080000-160000", "20240101", "", True),  # no time: the whole boundary day
    ("20240101-20240102", "080000-160000", "", "100000", False),
    ("20240101-20240102", "2200-0200", "20240101", "2300", True),  # across midnight
    ("20240101-20240102", "2200-0200", "20240102", "0100", True),
    ("20240101-20240102", "2200-0200", "20240102", "020059", True),
    ("20240101-20240102", "2200-0200", "20240102", "0201", False),
    ("20240101-20240102", "2200-0200", "20240101", "2159", False),
    ("20240101-", "0800-", "20240101", "0759", False),
    ("20240101-", "0800-", "20240101", "0800", True),
    ("20240101-", "0800-", "20250101", "0000", True),
    ("-20240101", "-0800", "20231231", "2300", True),
    ("-20240101", "-0800", "20240101", "0800", True),
    ("-20240101", "-0800", "20240101", "0801", False),
    ("20240101-20240102", "0800", "20240102", "0800", True),  # different forms: each key on its own
    ("20240101-20240102", "0800", "20240101", "0900", False),
    ("20240101", "0800-1600", "20240101", "1200", True),
    ("20240101", "0800-1600", "20240102", "1200", False),
    ("20240101-20240102", "", "20240102", "2300", True),
    ("", "", "", "", True),
    ("-", "-", "", "", True),
    ("*", "0800-1600", "20240101", "1200", True),
    ("20240101-20240101", "0800-1600", "20240101", "1200", True),
]


@pytest.mark.parametrize(("date_query", "time_query", "stored_date", "stored_time", "expected"), COMBINED)
def test_combined_date_time_matching(db: Db, date_query: str, time_query: str, stored_date: str, stored_time: str,
                                     expected: bool) -> None:
    assert m.matches_datetime(date_query, time_query, stored_date, stored_time) is expected
    condition = m.sql_datetime_condition(db.table.c.d, db.table.c.t, date_query, time_query)
    row = {"d": m.normalize_date(stored_date), "t": m.normalize_time(stored_time)}
    assert sql_hit(db, condition, **row) is expected
    query, candidate = Dataset(), Dataset()
    with warnings.catch_warnings():  # pydicom warns that "-" alone is no DA value
        warnings.simplefilter("ignore")
        query.StudyDate, query.StudyTime = date_query, time_query
    candidate.StudyDate, candidate.StudyTime = stored_date, stored_time
    assert m.match_dataset(query, candidate) is expected


def test_combined_date_time_null_time_column(db: Db) -> None:
    condition = m.sql_datetime_condition(db.table.c.d, db.table.c.t, "20240101-20240102", "0800-1600")
    assert sql_hit(db, condition, d="20240102")
    assert m.matches_datetime("20240101-20240102", "0800-1600", "20240102", None)


# Fuzzy PN (C.2.2.2.1 lets PN matching be insensitive to case; our choice: ASCII case folding on every backend, and a
# wild card-free query matches a prefix of the name, of any component, or of each component).
FUZZY_PN = [
    ("Smith^John", "smith^john", True),
    ("smith", "Smith^John", True),
    ("smi", "SMITHERS", True),
    ("joh", "Smith^John", True),
    ("SMITH^J", "Smith^John", True),
    ("^john", "Smith^John", True),
    ("smith^x", "Smith^John", False),
    ("mith", "Smith^John", False),
    ("jones", "Smith^John", False),
    ("sm*h", "SMITH", True),
    ("Smith^John", "Smith^John^^ ", True),
    ("yamada", "Yamada^Tarou=山田^太郎", True),
    ("山田", "Yamada^Tarou=山田^太郎", True),
    ("müller", "Müller", True),
    ("müller", "MÜLLER", False),  # only ASCII letters are folded, identically in Python, SQLite and PostgreSQL
    ("100%", "100%", True),
]


@pytest.mark.parametrize(("query", "stored", "expected"), FUZZY_PN)
def test_fuzzy_person_name_matching(db: Db, query: str, stored: str, expected: bool) -> None:
    check(db, "PN", query, stored, expected, fuzzy=True)


INVALID = [
    ("DA", "2024-13-45"),
    ("DA", "20241345"),
    ("DA", "20240230"),
    ("DA", "20240102-20240101"),
    ("DA", "20240101-20240102-20240103"),
    ("DA", "2024*"),
    ("DA", "2024010?"),
    ("TM", "2200-0200"),
    ("TM", "2500"),
    ("TM", "0860"),
    ("DT", "20240101-2023"),
    ("DT", "2024*"),
    ("UI", "1.2.*"),
    ("UI", "1.2.3?"),
    ("UI", "1.2.abc"),
    ("UI", "1." + "2" * 70),
    ("IS", "1-5"),
    ("IS", "abc"),
    ("DS", "1.5*"),
    ("DS", "1e999999999"),
    ("IS", "9" * 5000),
    ("AS", "030?"),
    ("SQ", "x"),
    ("OB", "x"),
]


@pytest.mark.parametrize(("vr", "query"), INVALID)
def test_invalid_queries(db: Db, vr: str, query: str) -> None:
    with pytest.raises(InvalidQuery):
        m.sql_condition(db.table.c.v, vr, query)
    with pytest.raises(InvalidQuery):
        m.sql_multi_value_condition(db.table.c.mv, vr, query)
    with pytest.raises(InvalidQuery):
        m.matches(vr, query, "20240101")
    with pytest.raises(InvalidQuery):
        m.explain(vr, query, "20240101")


def test_invalid_combined_range() -> None:
    from sqlalchemy import column

    with pytest.raises(InvalidQuery):
        m.sql_datetime_condition(column("d"), column("t"), "20240101-20240101", "1600-0800")
    with pytest.raises(InvalidQuery):
        m.matches_datetime("20240101-20240101", "1600-0800", "20240101", "1200")
    with pytest.raises(InvalidQuery):
        m.sql_datetime_condition(column("d"), column("t"), "20240101-20240102", "2500-")


@pytest.mark.parametrize(("vr", "value", "expected"), [
    ("DA", "20240101-20240103", ("20240101", "20240103")),
    ("DA", "-20240103", (None, "20240103")),
    ("DA", "20240101-", ("20240101", None)),
    ("DA", "20240101", ("20240101", "20240101")),
    ("DA", "-", (None, None)),
    ("TM", "08-16", ("080000.000000", "165959.999999")),
    ("TM", "0800", ("080000.000000", "080000.000000")),
    ("TM", "08:00-16:30", ("080000.000000", "163059.999999")),
    ("DT", "2024-2024", ("20240101000000.000000", "20241231235959.999999")),
    ("DT", "20240101120000-0500", ("20240101120000.000000", "20240101120000.000000")),
    ("DT", "20240101-0500-20240102", ("20240101000000.000000", "20240102235959.999999")),
])
def test_parse_range(vr: str, value: str, expected: tuple[str | None, str | None]) -> None:
    assert m.parse_range(vr, value) == expected


@pytest.mark.parametrize(("vr", "value"), [("CS", "A-B"), ("DA", "20240102-20240101"), ("TM", "1-2")])
def test_parse_range_rejects(vr: str, value: str) -> None:
    with pytest.raises(InvalidQuery):
        m.parse_range(vr, value)


@pytest.mark.parametrize(("function", "value", "expected"), [
    (m.normalize_date, "20240102", "20240102"),
    (m.normalize_date, "2024.01.02", "20240102"),
    (m.normalize_date, "", ""),
    (m.normalize_date, "garbage", ""),
    (m.normalize_time, "0800", "080000.000000"),
    (m.normalize_time, "08", "080000.000000"),
    (m.normalize_time, "08:30", "083000.000000"),
    (m.normalize_time, "083015.1234567", "083015.123456"),
    (m.normalize_time, "083015.", "083015.000000"),
    (m.normalize_time, "8", ""),
    (m.normalize_time, "", ""),
    (m.normalize_datetime, "20240101120000.5+0100", "20240101120000.500000"),
    (m.normalize_datetime, "2024", "20240101000000.000000"),
    (m.normalize_datetime, "202402151230", "20240215123000.000000"),
    (m.normalize_datetime, "2024-", ""),
])
def test_normalize_dates_and_times(function: Any, value: str, expected: str) -> None:
    assert function(value) == expected


@pytest.mark.parametrize(("vr", "value", "expected"), [
    ("CS", ["CT", "MR"], "CT\\MR"),
    ("CS", " CT ", "CT"),
    ("PN", PersonName("Smith^John^^"), "Smith^John"),
    ("PN", [PersonName("A^B"), PersonName("C^D=")], "A^B\\C^D"),
    ("IS", "+007", "7"),
    ("DS", "1.50", "1.5"),
    ("DS", "-0.0", "0"),
    ("DS", "1e2", "100"),
    ("DA", ["20240101", "bad"], "20240101"),
    ("TM", "0800", "080000.000000"),
    ("UI", "1.2.3\0", "1.2.3"),
    ("LT", "a\\b ", "a\\b"),
    ("SQ", [Dataset()], ""),
    ("OB", b"\x00\x01", ""),
    ("CS", None, ""),
])
def test_normalize_value(vr: str, value: Any, expected: str) -> None:
    assert m.normalize_value(vr, value) == expected


def test_normalize_multi_value() -> None:
    assert m.normalize_multi_value("CS", ["CT", "MR"]) == "\\CT\\MR\\"
    assert m.normalize_multi_value("CS", "CT") == "\\CT\\"
    assert m.normalize_multi_value("CS", None) == ""


@pytest.mark.parametrize("junk", ["", " ", "-", "x" * 99, "9" * 5000, "1e999999999", "9999999999999999", "20241399", "\0", "::", "+0100", "1.2"])
def test_normalizers_never_raise(junk: str) -> None:
    for function in (m.normalize_date, m.normalize_time, m.normalize_datetime):
        assert isinstance(function(junk), str)
    for vr in ("DA", "TM", "DT", "IS", "DS", "FL", "PN", "UI", "AT", "UN"):
        assert isinstance(m.normalize_value(vr, junk), str)


def _worklist_item() -> Dataset:
    candidate = Dataset()
    candidate.PatientID = "123"
    candidate.PatientName = "Doe^Jane"
    first, second, protocol = Dataset(), Dataset(), Dataset()
    first.ScheduledStationAETitle, first.Modality, first.ScheduledProcedureStepStartDate = "CT_ROOM1", "CT", "20240101"
    protocol.CodeValue = "P1"
    first.ScheduledProtocolCodeSequence = [protocol]
    second.ScheduledStationAETitle, second.Modality = "MR_ROOM", "MR"
    candidate.ScheduledProcedureStepSequence = [first, second]
    return candidate


def _sps_query(**keys: Any) -> Dataset:
    query, item = Dataset(), Dataset()
    for keyword, value in keys.items():
        setattr(item, keyword, value)
    query.ScheduledProcedureStepSequence = [item]
    return query


def _code(value: str) -> list[Dataset]:
    code = Dataset()
    code.CodeValue = value
    return [code]


# C.2.2.2.6: the key is a sequence with a single item; "If all the Item Key Attributes match, for at least one of
# the Items ... a successful match is generated"; no Item Key Attribute (empty item or no item) is universal.
SEQUENCE = [
    ({"ScheduledStationAETitle": "CT_ROOM1"}, True),
    ({"ScheduledStationAETitle": "MR_ROOM", "Modality": "MR"}, True),
    ({"ScheduledStationAETitle": "CT_ROOM1", "Modality": "MR"}, False),  # keys must match within one item
    ({"ScheduledStationAETitle": "*ROOM*"}, True),
    ({"ScheduledStationAETitle": "ct_room1"}, False),
    ({"ScheduledProcedureStepStartDate": "20231231-20240102"}, True),
    ({"ScheduledProcedureStepStartDate": "20240102-"}, False),
    ({"ScheduledStationAETitle": "", "Modality": ""}, True),
    ({}, True),
    ({"ScheduledProtocolCodeSequence": _code("P1")}, True),
    ({"ScheduledProtocolCodeSequence": _code("P2")}, False),
    ({"ScheduledProtocolCodeSequence": _code("P1"), "Modality": "MR"}, False),
]


@pytest.mark.parametrize(("keys", "expected"), SEQUENCE)
def test_sequence_matching(keys: dict[str, Any], expected: bool) -> None:
    query, candidate = _sps_query(**keys), _worklist_item()
    assert m.match_dataset(query, candidate) is expected
    assert m.matches("SQ", query.ScheduledProcedureStepSequence, candidate.ScheduledProcedureStepSequence) is expected


def test_sequence_universal_forms() -> None:
    query, without = Dataset(), Dataset()
    query.ScheduledProcedureStepSequence = []
    assert m.match_dataset(query, _worklist_item()) and m.match_dataset(query, without)
    assert m.match_dataset(_sps_query(), without)
    assert not m.match_dataset(_sps_query(Modality="CT"), without)
    assert m.explain_dataset(_sps_query(Modality="CT"), without) == [
        ("ScheduledProcedureStepSequence", False, "the candidate sequence has no items")]


def test_sequence_key_with_two_items_is_invalid() -> None:
    query = _sps_query(Modality="CT")
    query.ScheduledProcedureStepSequence.append(Dataset())
    with pytest.raises(InvalidQuery):
        m.match_dataset(query, _worklist_item())


@pytest.mark.parametrize(("vr", "query", "stored", "reason"), [
    ("AE", "CT_ROOM2", "CT_ROOM1", "query CT_ROOM2, item CT_ROOM1"),
    ("DA", "20240101-20240103", "20240105", "20240105 is outside range 20240101-20240103"),
    ("CS", "CT\\MR", "US", "query CT\\MR, item US"),
    ("CS", "CT", "", "query CT, item (no value)"),
    ("CS", "CT", "CT", None),
    ("CS", "", "US", None),
])
def test_explain(vr: str, query: str, stored: str, reason: str | None) -> None:
    assert m.explain(vr, query, stored) == reason


def test_explain_dataset() -> None:
    query = _sps_query(ScheduledStationAETitle="CT_ROOM2", Modality="CT")
    query.PatientID = "123"
    query.PatientName = ""
    query.SpecificCharacterSet = "ISO_IR 100"
    query.StudyDate, query.StudyTime = "20240101-20240102", "0800-1600"
    candidate = _worklist_item()
    candidate.StudyDate, candidate.StudyTime = "20240102", "170000"
    entries = m.explain_dataset(query, candidate)
    assert [(path, ok) for path, ok, _ in entries] == [
        ("StudyDate+StudyTime", False),
        ("PatientID", True),
        ("ScheduledProcedureStepSequence>Modality", True),
        ("ScheduledProcedureStepSequence>ScheduledStationAETitle", False),
    ]
    reasons = {path: reason for path, _, reason in entries}
    assert reasons["ScheduledProcedureStepSequence>ScheduledStationAETitle"] == "query CT_ROOM2, item CT_ROOM1"
    assert reasons["StudyDate+StudyTime"] == "20240102 170000.000000 is outside range 20240101-20240102 0800-1600"
    assert not m.match_dataset(query, candidate)


def test_query_dataset_is_not_mutated() -> None:
    query = _sps_query(ScheduledStationAETitle="CT_ROOM*", ScheduledProtocolCodeSequence=_code("P1"))
    query.PatientName = "doe^JA*  "
    query.ModalitiesInStudy = "CT\\MR"
    query.StudyDate, query.StudyTime = "20240101-", "0800-"
    query.StudyInstanceUID = "1.2.3\\1.2.4"
    before, before_json = copy.deepcopy(query), query.to_json_dict()
    candidate = _worklist_item()
    m.match_dataset(query, candidate, fuzzy_pn=True)
    m.explain_dataset(query, candidate)
    m.matches("SQ", query.ScheduledProcedureStepSequence, candidate.ScheduledProcedureStepSequence)
    assert query == before and query.to_json_dict() == before_json
