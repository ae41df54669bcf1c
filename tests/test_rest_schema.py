"""Every JSON answer of the REST API has the shape its OpenAPI document gives (one shape per field): each route
of the archive, peers and worklist APIs is called, in process, and every answer checked against the response
schema of ``app.openapi()`` — ModalitiesInStudy always a list, POST of one worklist item the item itself, and
every timestamp ISO 8601 in UTC with its offset."""

from __future__ import annotations

import copy
import re
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from hounsfield import config, sample
from hounsfield.pacs import Pacs
from hounsfield.web.app import create_app

TODAY = date.today()
ITEM = {"patient_id": "S1", "patient_name": "SCHEMA^ONE", "modality": "CT", "station_aet": "CT1",
        "start": f"{TODAY.isoformat()} 09:30"}
# The routes this module must have seen answer 2xx (method, path template): those of api.py and worklist_api.py.
REQUIRED = {
    *(("GET", f"/api/{r}") for r in ("patients", "studies", "series", "instances")),
    *(("GET", f"/api/{r}/{{uid}}") for r in ("patients", "studies", "series", "instances")),
    *(("DELETE", f"/api/{r}/{{uid}}") for r in ("patients", "studies", "series", "instances")),
    ("GET", "/api/peers"), ("PUT", "/api/peers/{name}"), ("DELETE", "/api/peers/{name}"),
    ("GET", "/api/quarantine"), ("GET", "/health"),
    ("POST", "/api/worklist/items"), ("GET", "/api/worklist/items"), ("GET", "/api/worklist/items/{item_id}"),
    ("PATCH", "/api/worklist/items/{item_id}"), ("DELETE", "/api/worklist/items/{item_id}"),
    ("POST", "/api/worklist/items/{item_id}/cancel"), ("GET", "/api/worklist/queries"),
    ("GET", "/api/worklist/queries/{query_id}"), ("GET", "/api/worklist/queries/{query_id}/explain/{item_id}"),
    ("GET", "/api/worklist/mpps/{uid}"), ("GET", "/api/worklist/statuses"),
}
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


# ---- a JSON Schema check of the subset FastAPI / pydantic write (and jsonschema's too, when installed) ------------

def schema_errors(value: Any, schema: dict[str, Any], spec: dict[str, Any], where: str = "$") -> list[str]:
    if "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return schema_errors(value, node, spec, where)
    errors: list[str] = []
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf")
        passing = [o for o in options if not schema_errors(value, o, spec, where)]
        if not passing or ("oneOf" in schema and len(passing) > 1):
            errors.append(f"{where}: {value!r:.80} matches {len(passing)} of the alternatives")
    for sub in schema.get("allOf", []):
        errors += schema_errors(value, sub, spec, where)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
                  "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
                  "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                  "array": lambda v: isinstance(v, list), "object": lambda v: isinstance(v, dict),
                  "null": lambda v: v is None}
        if not any(checks[k](value) for k in kinds):
            return errors + [f"{where}: {value!r:.80} is not of type {kinds}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} is not {schema['const']!r}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time" and not DATE_TIME.match(value):
            errors.append(f"{where}: {value!r} is no ISO 8601 date-time with a UTC offset")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{where}: length {len(value)} out of bounds")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            errors.append(f"{where}: {value} out of bounds")
    if isinstance(value, list):
        for i, v in enumerate(value):
            errors += schema_errors(v, schema.get("items", {}), spec, f"{where}[{i}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"{where}: {k} is required" for k in schema.get("required", []) if k not in value]
        for k, v in value.items():
            if k in properties:
                errors += schema_errors(v, properties[k], spec, f"{where}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: {k} is not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(v, schema["additionalProperties"], spec, f"{where}.{k}")
    return errors


class CheckedClient:
    """A TestClient whose every JSON answer is checked against the response schema of its route."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.spec = client.app.openapi()
        self.seen: set[tuple[str, str]] = set()
        self.templates = [(re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path)
                          for path in self.spec["paths"]]

    def _template(self, path: str) -> str:
        matches = [t for rx, t in self.templates if rx.match(path)]
        assert matches, f"{path} is not in the OpenAPI document"
        return min(matches, key=lambda t: t.count("{"))  # /api/studies/x before /api/{...}

    def request(self, method: str, url: str, **kwargs: Any):
        r = self.client.request(method, url, **kwargs)
        template = self._template(url.split("?")[0])
        operation = self.spec["paths"][template][method.lower()]
        documented = operation["responses"].get(str(r.status_code))
        assert documented is not None or r.status_code >= 400, f"{method} {url}: {r.status_code} undocumented"
        schema = ((documented or {}).get("content") or {}).get("application/json", {}).get("schema")
        if schema is not None and r.headers.get("content-type", "").startswith("application/json"):
            body = r.json()
            errors = schema_errors(body, schema, self.spec)
            assert not errors, f"{method} {url} ({r.status_code}):\n" + "\n".join(errors[:20])
            _jsonschema_agrees(body, schema, self.spec)
        if r.status_code < 300:
            self.seen.add((method.upper(), template))
        return r

    def get(self, url: str, **kw: Any):
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any):
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any):
        return self.request("PUT", url, **kw)

    def patch(self, url: str, **kw: Any):
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: Any):
        return self.request("DELETE", url, **kw)


def _jsonschema_agrees(body: Any, schema: dict[str, Any], spec: dict[str, Any]) -> None:
    """The same check by the jsonschema package, where it is installed (it is not a test dependency)."""
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(body, {**schema, "components": spec["components"]})


# ---- the archive: pydicom's CT and MR, the sample CT, and a study with two modalities -------------------------

@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("schema")
    pacs = Pacs(config.load(data_dir=str(root / "data"), environ={}))
    for name in ("CT_small.dcm", "MR_small.dcm"):
        pacs.archive.store_file(Path(get_testdata_file(name)))
    written = sample.write_sample(root / "sample")
    for path in written.ct + written.mr:
        pacs.archive.store_file(path)
    mr: Dataset = pydicom.dcmread(written.mr[0])  # an MR series in the sample CT's study: CT and MR
    mr = copy.deepcopy(mr)
    mr.StudyInstanceUID = sample.CT_STUDY_UID
    mr.SeriesInstanceUID = sample.uid("schema MR series in the CT study")
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = sample.uid("schema MR instance")
    mr.save_as(root / "mr-in-ct-study.dcm", enforce_file_format=True)
    pacs.archive.store_file(root / "mr-in-ct-study.dcm")
    with TestClient(create_app(pacs), raise_server_exceptions=False) as client:
        yield CheckedClient(client)
    pacs.close()


def test_archive_records_have_one_shape_per_field(api: CheckedClient) -> None:
    studies = {s["StudyInstanceUID"]: s for s in api.get("/api/studies").json()}
    assert studies[sample.CT_STUDY_UID]["ModalitiesInStudy"] == ["CT", "MR"]
    ct_small = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    assert studies[ct_small.StudyInstanceUID]["ModalitiesInStudy"] == ["CT"]  # one modality: a list too
    assert studies[sample.CT_STUDY_UID]["NumberOfStudyRelatedInstances"] == 6
    assert api.get("/api/studies", params={"ModalitiesInStudy": "MR"}).status_code == 200
    one = api.get(f"/api/studies/{sample.CT_STUDY_UID}").json()
    assert one["ModalitiesInStudy"] == ["CT", "MR"] and one["PatientName"] == sample.PATIENT_NAME
    patients = api.get("/api/patients").json()
    assert {p["PatientID"] for p in patients} >= {sample.PATIENT_ID, "1CT1"}
    api.get(f"/api/patients/{sample.PATIENT_ID}")
    series = api.get("/api/series", params={"StudyInstanceUID": sample.CT_STUDY_UID}).json()
    assert sorted(s["Modality"] for s in series) == ["CT", "MR"]
    assert all(isinstance(s["SeriesNumber"], int) for s in series)
    api.get(f"/api/series/{series[0]['SeriesInstanceUID']}")
    instances = api.get("/api/instances", params={"limit": 3}).json()
    assert all(isinstance(i["Rows"], int) and i["NumberOfFrames"] is None for i in instances)
    api.get(f"/api/instances/{instances[0]['SOPInstanceUID']}")
    assert api.get("/api/studies/1.2.3.4").status_code == 404
    api.get("/api/quarantine")
    api.get("/health")


def test_peers(api: CheckedClient) -> None:
    peer = {"name": "ws", "ae_title": "WS1", "host": "10.0.0.7", "port": 104, "tls": False, "allow": None}
    assert api.put("/api/peers/ws", json=peer).json() == peer
    assert peer in api.get("/api/peers").json()
    limited = {**peer, "allow": ["echo", "store"]}
    assert api.put("/api/peers/ws", json=limited).json() == limited
    assert limited in api.get("/api/peers").json()
    assert api.delete("/api/peers/ws").status_code == 200


def test_posting_one_worklist_item_answers_the_item_and_a_list_answers_a_list(api: CheckedClient) -> None:
    one = api.post("/api/worklist/items", json=ITEM)
    assert one.status_code == 201, one.text
    item = one.json()
    assert isinstance(item, dict) and item["fields"]["patient_id"] == "S1"
    for stamp in (item["created_at"], item["updated_at"]):
        assert stamp.endswith("+00:00"), stamp
    two = api.post("/api/worklist/items", json=[{**ITEM, "patient_id": "S2"}, {**ITEM, "patient_id": "S3"}])
    assert two.status_code == 201, two.text
    assert [i["fields"]["patient_id"] for i in two.json()] == ["S2", "S3"]
    # a list is all or nothing, and its errors name the position
    before = api.get("/api/worklist/items").json()["total"]
    bad = api.post("/api/worklist/items", json=[{**ITEM, "patient_id": "S4"}, {**ITEM, "patient_sex": "X"}])
    assert bad.status_code == 422 and bad.json()["fields"] == ["1.patient_sex"]
    missing = api.post("/api/worklist/items", json=[ITEM, {k: v for k, v in ITEM.items() if k != "patient_id"}])
    assert missing.status_code == 422 and missing.json()["fields"] == ["1.patient_id"]
    assert api.get("/api/worklist/items").json()["total"] == before


def test_a_dicom_json_item_of_several_steps_is_posted_in_a_list(api: CheckedClient) -> None:
    step = {"00080060": {"vr": "CS", "Value": ["MR"]}, "00400001": {"vr": "AE", "Value": ["MR1"]},
            "00400002": {"vr": "DA", "Value": [TODAY.strftime("%Y%m%d")]}}
    item = {"00100020": {"vr": "LO", "Value": ["S9"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]},
            "00400100": {"vr": "SQ", "Value": [step, {**step, "00400001": {"vr": "AE", "Value": ["MR2"]}}]}}
    before = api.get("/api/worklist/items").json()["total"]
    as_object = api.post("/api/worklist/items", json=item)
    assert as_object.status_code == 422 and as_object.json()["fields"] == ["ScheduledProcedureStepSequence"]
    assert "in a list" in as_object.json()["detail"][0]["msg"]
    assert api.get("/api/worklist/items").json()["total"] == before
    created = api.post("/api/worklist/items", json=[item]).json()
    assert [c["fields"]["station_aet"] for c in created] == ["MR1", "MR2"]
    single = api.post("/api/worklist/items", json={**item, "00400100": {"vr": "SQ", "Value": [step]}})
    assert single.status_code == 201 and single.json()["fields"]["station_aet"] == "MR1"


def test_every_worklist_route_answers_its_documented_shape(api: CheckedClient) -> None:
    pacs = api.client.app.state.pacs
    item = api.post("/api/worklist/items", json={**ITEM, "patient_id": "W1", "station_aet": "CT5"}).json()
    page = api.get("/api/worklist/items", params={"station": "CT5"}).json()
    assert [i["id"] for i in page["items"]] == [item["id"]]
    api.get(f"/api/worklist/items/{item['id']}")
    patched = api.patch(f"/api/worklist/items/{item['id']}", json={"patient_name": "SCHEMA^TWO"}).json()
    assert patched["updated_at"] >= patched["created_at"]
    identifier = Dataset()
    identifier.PatientID = "W1"
    pacs.worklist.queries.record(calling_ae="CT5", address="10.0.0.9", identifier=identifier, answers=1, status=0)
    pacs.worklist.queries.flush()
    queries = api.get("/api/worklist/queries").json()["queries"]
    assert queries and queries[0]["received_at"].endswith("+00:00")
    api.get(f"/api/worklist/queries/{queries[0]['id']}")
    assert api.get(f"/api/worklist/queries/{queries[0]['id']}/explain/{item['id']}").json()["returned"] is True
    mpps = Dataset()
    mpps.PerformedProcedureStepStatus = "IN PROGRESS"
    mpps.Modality = "CT"
    ref = Dataset()
    ref.StudyInstanceUID = item["fields"]["study_instance_uid"]
    ref.ScheduledProcedureStepID = item["fields"]["step_id"]
    mpps.ScheduledStepAttributesSequence = [ref]
    step = pacs.mpps.create(None, mpps, calling_ae="CT5")
    assert api.get(f"/api/worklist/mpps/{step.sop_instance_uid}").json()["status"] == "IN PROGRESS"
    other = api.post("/api/worklist/items", json={**ITEM, "patient_id": "W2"}).json()
    assert api.post(f"/api/worklist/items/{other['id']}/cancel").json()["status"] == "CANCELED"
    api.delete(f"/api/worklist/items/{other['id']}")
    api.get("/api/worklist/statuses")


def test_deleting_records(api: CheckedClient) -> None:
    """Last: it empties parts of the archive the other tests read."""
    instance = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)
    assert api.delete(f"/api/instances/{instance.SOPInstanceUID}").json()["instances_removed"] == 1
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    api.delete(f"/api/series/{ct.SeriesInstanceUID}")
    api.delete(f"/api/studies/{sample.MR_STUDY_UID}")
    api.delete(f"/api/patients/{sample.PATIENT_ID}")


def test_every_route_was_checked(api: CheckedClient) -> None:
    missing = REQUIRED - api.seen
    assert not missing, sorted(missing)
