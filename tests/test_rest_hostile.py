"""Hostile input on the REST API (/api, /api/worklist, /ui/api) answers a clear 4xx, never a 500 and never an
arbitrary record; an unexpected failure is a generic 500 whose cause is logged, not shown. In-process
(TestClient), on SQLite and on PostgreSQL where the database's own limits matter."""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from hounsfield.config import load
from hounsfield.pacs import Pacs
from hounsfield.web.app import create_app

FILES = ("CT_small.dcm", "MR_small.dcm")
SQL_INT_MAX = 2**63 - 1
ITEM = {"patient_id": "P1", "patient_name": "DOE^JANE", "modality": "CT", "station_aet": "CT1",
        "start": f"{date.today().isoformat()} 09:30"}
RESOURCES = {"patients": "PatientID", "studies": "StudyInstanceUID", "series": "SeriesInstanceUID",
             "instances": "SOPInstanceUID"}


@dataclass
class Served:
    client: TestClient
    pacs: Pacs
    backend: str
    data_dir: Path
    stored: list[pydicom.Dataset]  # the stored files, read with pydicom


@contextmanager
def serving(data_dir: Path, backend: str) -> Iterator[Served]:
    """The web app on a fresh archive holding pydicom's CT and MR test files."""
    db = None
    if backend == "postgresql":
        from support import PostgresDatabase

        db = PostgresDatabase()
    pacs = Pacs(load(data_dir=data_dir, environ={}, database_url=db.url if db else ""))
    try:
        for name in FILES:
            pacs.archive.store_file(Path(get_testdata_file(name)))
        stored = [pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True) for name in FILES]
        with TestClient(create_app(pacs), raise_server_exceptions=False) as client:
            yield Served(client, pacs, backend, data_dir, stored)
    finally:
        pacs.close()
        if db is not None:
            db.drop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def any_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """For what the database's limits decide (integers, NUL characters): both backends."""
    with serving(tmp_path_factory.mktemp("hostile") / "data", request.param) as served:
        yield served


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("hostile") / "data", "sqlite") as served:
        yield served


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Served]:
    """An archive of its own, for tests that delete or break it."""
    with serving(tmp_path / "data", "sqlite") as served:
        yield served


def identifiers(served: Served, resource: str) -> list[str]:
    return sorted(str(ds.data_element(RESOURCES[resource]).value) for ds in served.stored)


# ---- 1. paging and ids beyond what SQL takes ------------------------------------------------------------------
LISTS = ["/api/patients", "/api/studies", "/api/series", "/api/instances", "/api/worklist/items",
         "/api/worklist/queries"]


@pytest.mark.parametrize("route", LISTS)
@pytest.mark.parametrize("name,value", [("offset", SQL_INT_MAX + 1), ("offset", 10**40), ("offset", -1),
                                        ("limit", SQL_INT_MAX + 1), ("limit", -(SQL_INT_MAX + 2)), ("limit", 0)])
def test_paging_beyond_range_is_422_naming_the_parameter(any_db: Served, route: str, name: str,
                                                         value: int) -> None:
    r = any_db.client.get(route, params={name: value})
    assert r.status_code == 422, r.text
    assert r.json()["fields"] == [f"query.{name}"]


@pytest.mark.parametrize("route", LISTS)
def test_largest_offset_answers_an_empty_page(any_db: Served, route: str) -> None:
    r = any_db.client.get(route, params={"offset": SQL_INT_MAX})
    assert r.status_code == 200, r.text
    body = r.json()
    page = body if isinstance(body, list) else body.get("items", body.get("queries"))
    assert page == []


@pytest.mark.parametrize("method,route", [
    ("GET", "/api/worklist/items/{id}"), ("DELETE", "/api/worklist/items/{id}"),
    ("POST", "/api/worklist/items/{id}/cancel"), ("PATCH", "/api/worklist/items/{id}"),
    ("GET", "/api/worklist/queries/{id}"), ("GET", "/api/worklist/queries/{id}/explain/1"),
    ("GET", "/api/worklist/queries/1/explain/{id}"),
])
@pytest.mark.parametrize("item_id", [SQL_INT_MAX + 1, -(SQL_INT_MAX + 2), 0])
def test_id_beyond_range_is_422(any_db: Served, method: str, route: str, item_id: int) -> None:
    r = any_db.client.request(method, route.format(id=item_id), json={"patient_id": "P2"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "ValidationError"


@pytest.mark.parametrize("number", [str(SQL_INT_MAX + 1), "2147483648", "1\\9223372036854775808"])
def test_instance_number_beyond_the_is_range_is_400(any_db: Served, number: str) -> None:
    r = any_db.client.get("/api/instances", params={"InstanceNumber": number})
    assert r.status_code == 400, r.text
    assert "InstanceNumber" in r.json()["detail"]


# ---- 2. bodies that are not JSON, or not the JSON expected ------------------------------------------------------
def body_routes(served: Served) -> list[tuple[str, str]]:
    item_id = served.client.get("/api/worklist/items").json()["items"][0]["id"]
    study = served.stored[0].StudyInstanceUID
    return [("PUT", "/api/peers/node1"), ("POST", "/api/worklist/items"), ("PATCH", f"/api/worklist/items/{item_id}"),
            ("POST", f"/api/studies/{study}/send")]


@pytest.fixture(scope="module")
def with_item(sqlite: Served) -> Served:
    """The SQLite archive with one worklist item (PATCH needs one)."""
    assert sqlite.client.post("/api/worklist/items", json=ITEM).status_code == 201
    return sqlite


def state(served: Served) -> tuple:
    """What a refused body must leave unchanged: the peers and the worklist items."""
    items = served.client.get("/api/worklist/items").json()["items"]
    return served.client.get("/api/peers").json(), [(i["id"], i["fields"], i["updated_at"]) for i in items]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_body_not_sent_as_json_is_415(with_item: Served, content_type: str | None) -> None:
    before = state(with_item)
    headers = {"content-type": content_type} if content_type else {}
    for method, route in body_routes(with_item):
        r = with_item.client.request(method, route, content=json.dumps(ITEM).encode(), headers=headers)
        assert r.status_code == 415, (route, r.text)
        assert r.json()["error"] == "UnsupportedMediaType" and "application/json" in r.json()["detail"]
    assert state(with_item) == before


@pytest.mark.parametrize("body,error", [
    (b"{not json", "json_invalid"),
    (b'{"name": "\xc3("}', None),  # not UTF-8 either
    (b"[1, 2]", "model_attributes_type"),
    (b"42", "model_attributes_type"),
    (json.dumps("x" * 10_000_000).encode(), "model_attributes_type"),
    (b"[" * 100_000 + b"]" * 100_000, None),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, None),
])
def test_body_of_the_wrong_shape_is_4xx_and_short(with_item: Served, body: bytes, error: str | None) -> None:
    before = state(with_item)
    for method, route in body_routes(with_item):
        r = with_item.client.request(method, route, content=body, headers={"content-type": "application/json"})
        if error is None:  # not parsed at all: FastAPI's own answer
            assert r.status_code == 400 and r.json()["detail"], (route, r.text)
        else:
            assert r.status_code == 422, (route, r.text)
            assert [e["type"] for e in r.json()["detail"]][:1] == [error]
        assert len(r.content) < 2000  # what was sent does not come back
    assert state(with_item) == before


def nested_value(depth: int) -> dict:
    return {"00100020": {"vr": "LO", "Value": json.loads("[" * depth + "]" * depth)}}


def nested_sequence(depth: int) -> dict:
    item: dict = {}
    for _ in range(depth):
        item = {"00400100": {"vr": "SQ", "Value": [item]}}
    return item


@pytest.mark.parametrize("body", [nested_value(65), nested_value(500), nested_sequence(30), nested_sequence(100)],
                         ids=["value-65", "value-500", "sq-30", "sq-100"])
def test_deeply_nested_dicom_json_item_is_422(with_item: Served, body: dict) -> None:
    before = state(with_item)
    for method, route in body_routes(with_item)[1:3]:  # the worklist item routes take DICOM JSON
        r = with_item.client.request(method, route, content=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        assert r.status_code == 422, (route, r.text[:300])
        assert "nest deeper" in r.json()["detail"][0]["msg"]
    assert state(with_item) == before


def test_validation_errors_still_name_the_field(with_item: Served) -> None:
    r = with_item.client.put("/api/peers/node1", json={"ae_title": "X", "host": "h"})
    assert r.status_code == 422 and "port" in r.json()["fields"]
    r = with_item.client.post("/api/worklist/items", json={**ITEM, "accession_number": "A" * 17})
    assert r.status_code == 422 and r.json()["fields"] == ["accession_number"]
    assert r.json()["detail"][0]["msg"] and "input" not in r.json()["detail"][0]


# ---- 3. a single-record route names one record exactly -------------------------------------------------------
@pytest.mark.parametrize("resource", RESOURCES)
def test_single_record_routes_match_exactly(any_db: Served, resource: str) -> None:
    for uid in identifiers(any_db, resource):
        r = any_db.client.get(f"/api/{resource}/{uid}")
        assert r.status_code == 200, r.text
        assert r.json()[RESOURCES[resource]] == uid


def hostile_identifiers(served: Served, resource: str) -> list[str]:
    """Wildcards, a wildcard on a real identifier's prefix, a list of the real identifiers, ranges."""
    first, second = identifiers(served, resource)
    return ["*", "?", "**", f"{first[:-2]}*", f"{first[:-1]}?", f"{first}\\{second}", f"\\{first}",
            f"{first}-{second}", f"-{second}", f"{first}-", " ", f"{first} "]


@pytest.mark.parametrize("resource", RESOURCES)
def test_wildcards_lists_and_ranges_name_no_record(any_db: Served, resource: str) -> None:
    for uid in hostile_identifiers(any_db, resource):
        r = any_db.client.get(f"/api/{resource}/{quote(uid, safe='')}")
        assert r.status_code == 404, (uid, r.text)
        assert set(r.json()) == {"error", "detail"} and r.json()["error"] == "NotFound"


@pytest.mark.parametrize("resource", RESOURCES)
@pytest.mark.parametrize("uid", ["\x00", "a\x00b", "{first}\x00", "\x01", "\x1b", "\x7f", "{first}\n"])
def test_control_characters_name_no_record(any_db: Served, resource: str, uid: str) -> None:
    first = identifiers(any_db, resource)[0]
    uid = uid.format(first=first)
    for method in ("GET", "DELETE"):
        r = any_db.client.request(method, f"/api/{resource}/{quote(uid, safe='')}")
        # SQLite finds no record; PostgreSQL refuses a NUL in a query, which is the client's error
        expected = 400 if any_db.backend == "postgresql" and "\x00" in uid else 404
        assert r.status_code == expected, (method, uid, r.text)
        assert set(r.json()) == {"error", "detail"}
    assert identifiers(any_db, resource) == sorted(
        r[RESOURCES[resource]] for r in any_db.client.get(f"/api/{resource}").json())


@pytest.mark.parametrize("uid", ["*", "%00", "a%00b"])
def test_file_download_of_a_wildcard_or_nul_is_4xx(any_db: Served, uid: str) -> None:
    r = any_db.client.get(f"/api/instances/{uid}/file")
    assert r.status_code == (400 if any_db.backend == "postgresql" and "%00" in uid else 404), r.text
    assert r.headers["content-type"] == "application/json"


def test_nul_in_a_search_filter_is_no_500(any_db: Served) -> None:
    for route, params in [("/api/studies", {"PatientID": "1CT1\x00"}),
                          ("/api/worklist/items", {"patient_id": "a\x00b"}),
                          ("/api/worklist/queries", {"calling_ae": "a\x00b"})]:
        r = any_db.client.get(route, params=params)
        if any_db.backend == "postgresql":
            assert r.status_code == 400 and r.json()["error"] == "InvalidQuery", (route, r.text)
        else:
            assert r.status_code == 200, (route, r.text)
            assert r.json() in ([], {"total": 0, "offset": 0, "limit": 100, "items": []}, {"total": 0, "queries": []})


@pytest.mark.parametrize("resource", RESOURCES)
def test_delete_of_a_wildcard_deletes_nothing(fresh: Served, resource: str) -> None:
    before = {res: fresh.client.get(f"/api/{res}").json() for res in RESOURCES}
    for uid in hostile_identifiers(fresh, resource) + ["\x00"]:
        r = fresh.client.delete(f"/api/{resource}/{quote(uid, safe='')}")
        assert r.status_code == 404, (uid, r.text)
    assert {res: fresh.client.get(f"/api/{res}").json() for res in RESOURCES} == before
    assert all(i.path.is_file() for i in fresh.pacs.archive.instances())
    first, second = identifiers(fresh, resource)
    r = fresh.client.delete(f"/api/{resource}/{first}")
    assert r.json() == {"deleted": first, "instances_removed": 1}
    assert [r[RESOURCES[resource]] for r in fresh.client.get(f"/api/{resource}").json()] == [second]


# ---- 4. error bodies show nothing internal ---------------------------------------------------------------------
def test_error_about_a_stored_file_does_not_show_where_it_is(sqlite: Served) -> None:
    ds = sqlite.stored[0]
    r = sqlite.client.get(f"/ui/api/values/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}",
                          params={"frame": 7})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "frame 7" in detail and f"{ds.SOPInstanceUID}.dcm" in detail
    for internal in (str(sqlite.data_dir), str(sqlite.data_dir.resolve()), "/files/"):
        assert internal not in r.text


def test_unexpected_failure_is_a_generic_500_and_logged(fresh: Served, caplog: pytest.LogCaptureFixture) -> None:
    ds = fresh.stored[0]
    fresh.pacs.archive.instance(ds.SOPInstanceUID).path.unlink()  # the file vanished under the archive
    with caplog.at_level(logging.ERROR, logger="hounsfield.web"):
        r = fresh.client.get(f"/api/instances/{ds.SOPInstanceUID}/file")
    assert r.status_code == 500
    assert r.json() == {"error": "InternalError", "detail": "the server failed to answer this request; "
                        "the cause is in its log"}
    logged = [rec for rec in caplog.records if rec.name == "hounsfield.web"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert ds.SOPInstanceUID in str(logged[0].exc_info[1])  # the cause, with the path, is in the log


# ---- DICOMweb: a UID in the URL path names one study or series ------------------------------------------------
@pytest.mark.parametrize("route", ["/dicom-web/studies/{study}/series", "/dicom-web/studies/{study}/instances",
                                   "/dicom-web/studies/{study}/series/{series}/instances"])
def test_dicomweb_scoped_searches_match_the_path_exactly(sqlite: Served, route: str) -> None:
    real, other = sqlite.stored
    exact = sqlite.client.get(route.format(study=real.StudyInstanceUID, series=real.SeriesInstanceUID))
    assert exact.status_code == 200
    assert {a["0020000D"]["Value"][0] for a in exact.json()} == {real.StudyInstanceUID}
    patterns = ["*", f"{real.StudyInstanceUID[:-2]}*", f"{real.StudyInstanceUID}\\{other.StudyInstanceUID}"]
    cases = [(study, real.SeriesInstanceUID) for study in patterns]
    if "{series}" in route:
        cases += [(real.StudyInstanceUID, "*"), (real.StudyInstanceUID, f"{real.SeriesInstanceUID[:-2]}*")]
    for study, series in cases:
        r = sqlite.client.get(route.format(study=quote(study, safe=""), series=quote(series, safe="")))
        # no match (PS3.18 10.6.3.3), or a pattern refused as one (wildcards in a UI value, PS3.4 C.2.2.2.4)
        assert r.status_code == 204 or (r.status_code == 400 and r.json()["error"] == "InvalidQuery"), \
            (study, series, r.text)
