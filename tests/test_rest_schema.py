"""Every JSON answer of the REST API has the shape its OpenAPI document gives (one shape per field): each route
of the archive, peers, worklist, remote nodes (a second hounsfield in process, and a node on a closed port),
jobs, routing, RT, HL7, audit, users, de-identification and quarantine APIs is called, in process, and every
answer checked against the response schema of ``app.openapi()`` — ModalitiesInStudy always a list, POST of one
worklist item the item itself, errors ``{error, detail}``, and every timestamp (a ``date-time`` of the schema,
and any field named ``at``, ``…_at`` or ``next_attempt``, documented or not) ISO 8601 in UTC with its offset."""

from __future__ import annotations

import copy
import re
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from factories import tiny_ct, write
from hounsfield import config, sample
from hounsfield.pacs import Pacs
from hounsfield.routing.store import NewJob
from hounsfield.web.app import create_app
from rt_phantom import make_phantom
from support import free_port

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
    # and the routes added since (issue 11, second part)
    ("GET", "/api/routing/rules"), ("GET", "/api/routing/rules/{name}"), ("PUT", "/api/routing/rules/{name}"),
    ("DELETE", "/api/routing/rules/{name}"), ("GET", "/api/routing/jobs"), ("POST", "/api/routing/jobs/{job_id}/retry"),
    ("GET", "/api/remote/peers"), ("POST", "/api/peers/{name}/echo"), ("POST", "/api/peers/{name}/find"),
    ("POST", "/api/peers/{name}/find-worklist"), ("POST", "/api/peers/{name}/retrieve"),
    ("POST", "/api/studies/{uid}/send"), ("GET", "/api/jobs"), ("GET", "/api/jobs/{job_id}"), ("POST", "/api/upload"),
    *(("GET", f"/api/rt/{r}") for r in ("studies/{study}", "series/{series}", "structure-sets/{uid}/rois",
                                        "structure-sets/{uid}/contours", "doses/{uid}/slice", "doses/{uid}/isodose",
                                        "dvh", "plans/{uid}")),
    ("GET", "/api/hl7/messages"), ("GET", "/api/hl7/messages/{message_id}"),
    ("POST", "/api/hl7/messages/{message_id}/replay"), ("GET", "/api/audit"), ("GET", "/api/audit/actions"),
    ("GET", "/api/users"), ("POST", "/api/users"), ("PATCH", "/api/users/{name}"), ("GET", "/api/users/{name}/tokens"),
    ("POST", "/api/users/{name}/tokens"), ("DELETE", "/api/tokens/{token_id}"),
    ("POST", "/api/studies/{uid}/deidentify"), ("GET", "/api/deid/mappings"),
    ("POST", "/api/quarantine/{name}/retry"), ("DELETE", "/api/quarantine/{name}"),
}
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
TIME_KEY = re.compile(r"^(at|.+_at|next_attempt)$")  # fields that hold a time, whatever the schema says


def aware(value: Any, where: str = "") -> datetime:
    """``value`` as the API writes a time: ISO 8601 with an offset, which is UTC's."""
    assert isinstance(value, str) and DATE_TIME.match(value), f"{where}: {value!r} is no ISO 8601 date-time"
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0), f"{where}: {value!r} is not in UTC"
    return moment


def timestamp_errors(value: Any, where: str = "$") -> list[str]:
    """Every field named like a time (documented or an extra field) that is not an aware ISO 8601 time."""
    errors: list[str] = []
    if isinstance(value, list):
        for i, v in enumerate(value):
            errors += timestamp_errors(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and TIME_KEY.match(k) and v is not None:
                try:
                    aware(v, f"{where}.{k}")
                except (AssertionError, ValueError) as exc:
                    errors.append(str(exc))
            else:
                errors += timestamp_errors(v, f"{where}.{k}")
    return errors


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
        if schema.get("format") == "date-time":
            try:
                aware(value, where)
            except (AssertionError, ValueError) as exc:
                errors.append(f"{where}: {value!r} is no ISO 8601 date-time in UTC with its offset ({exc})")
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
        if r.headers.get("content-type", "").startswith("application/json"):
            stamps = timestamp_errors(r.json())
            assert not stamps, f"{method} {url} ({r.status_code}):\n" + "\n".join(stamps[:20])
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


# ---- the routes added since: remote nodes and jobs, routing, RT, HL7, audit, users, de-identification ---------

REMOTE_STUDY, REMOTE_SERIES = sample.uid("schema remote study"), sample.uid("schema remote series")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory):
    """A second hounsfield in this process, its DICOM service on a free port, holding a study of two CTs; and a
    peer ``far`` for it in the archive under test, which may store there (a retrieve needs it)."""
    root = tmp_path_factory.mktemp("schema-remote")
    pacs = Pacs(config.load(data_dir=str(root / "data"), environ={}, dicom_host="127.0.0.1", dicom_port=free_port(),
                            ae_title="FAR"))
    for n in (1, 2):
        pacs.archive.store_file(write(tiny_ct("FAR1", REMOTE_STUDY, REMOTE_SERIES, n), root / f"ct{n}.dcm"))
    pacs.start_dicom(primary=False)
    yield pacs
    pacs.close(grace=2)


def wait_for_job(api: CheckedClient, job_id: str) -> dict[str, Any]:
    end = time.monotonic() + 60
    while True:
        job = api.get(f"/api/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        assert time.monotonic() < end, job
        time.sleep(0.05)


def closed_port() -> int:
    return free_port()  # bound, released, and handed out to nobody else in this run


def test_remote_nodes_and_jobs(api: CheckedClient, remote: Pacs) -> None:
    far = {"name": "far", "ae_title": "FAR", "host": "127.0.0.1", "port": remote.settings.dicom_port, "tls": False,
           "allow": None}
    api.put("/api/peers/far", json=far)
    nodes = {n["name"]: n for n in api.get("/api/remote/peers").json()}
    assert nodes["far"]["can_retrieve"] is True and nodes["far"]["port"] == remote.settings.dicom_port
    echo = api.post("/api/peers/far/echo").json()
    assert echo["ok"] is True and echo["status"] == 0
    found = api.post("/api/peers/far/find", json={"level": "study", "query": {"PatientID": "FAR1"}}).json()
    assert [m["StudyInstanceUID"] for m in found["matches"]] == [REMOTE_STUDY] and found["level"] == "study"
    series = api.post("/api/peers/far/find", json={"level": "series", "query": {"StudyInstanceUID": REMOTE_STUDY}})
    assert series.json()["count"] == 1
    assert api.post("/api/peers/far/find-worklist", json={"query": {"PatientID": "NOBODY"}}).json()["count"] == 0
    started = api.post("/api/peers/far/retrieve", json={"study": REMOTE_STUDY, "method": "get"})
    assert started.status_code == 202, started.text
    aware(started.json()["started_at"])
    job = wait_for_job(api, started.json()["id"])
    assert job["state"] == "completed" and job["stored"] == 2, job
    assert aware(job["finished_at"]) >= aware(job["started_at"])
    sent = api.post(f"/api/studies/{REMOTE_STUDY}/send", json={"peer": "far"})
    assert sent.status_code == 202, sent.text
    assert wait_for_job(api, sent.json()["id"])["state"] == "completed"
    assert {j["kind"] for j in api.get("/api/jobs").json()} == {"send", "retrieve"}
    assert [j["kind"] for j in api.get("/api/jobs", params={"kind": "send"}).json()] == ["send"]
    # the errors have one shape too: {error, detail}, documented
    assert api.get("/api/jobs/nosuchjob").status_code == 404
    api.put("/api/peers/closed", json={**far, "name": "closed", "port": closed_port()})
    for path, body in (("echo", None), ("find", {"query": {"PatientID": "X"}}), ("find-worklist", {}),
                       ("retrieve", {"study": REMOTE_STUDY})):
        r = api.post(f"/api/peers/closed/{path}", json=body)
        if path == "retrieve":  # a background job: it fails, with the reason
            assert r.status_code == 202, r.text
            failed = wait_for_job(api, r.json()["id"])
            assert failed["state"] == "failed" and failed["error"], failed
        else:
            assert r.status_code == 502 and r.json()["error"] == "RemoteFailure", r.text
    assert api.post("/api/peers/nosuch/echo").json()["error"] == "NotFound"
    assert api.post("/api/peers/far/find", json={"level": "series"}).status_code == 400
    assert api.post("/api/peers/far/find", json={"level": "nonsense"}).status_code == 422
    api.delete("/api/peers/closed")


def test_routing_rules_and_jobs(api: CheckedClient) -> None:
    pacs = api.client.app.state.pacs
    api.put("/api/peers/route-to", json={"name": "route-to", "ae_title": "ROUTE", "host": "127.0.0.1",
                                         "port": closed_port(), "tls": False, "allow": None})
    rule = api.put("/api/routing/rules/ct-out", json={"send_to": ["route-to"], "when": {"modality": "CT"}}).json()
    assert rule == {"name": "ct-out", "on": "instance_stored", "send_to": ["route-to"], "when": {"modality": ["CT"]},
                    "transfer_syntax": None, "configured": False}
    assert rule in api.get("/api/routing/rules").json()
    assert api.get("/api/routing/rules/ct-out").json() == rule
    assert api.get("/api/routing/rules/nosuch").status_code == 404
    assert api.put("/api/routing/rules/bad", json={"send_to": ["nosuch-node"]}).status_code == 400
    before = time.time()
    pacs.deliveries.add([NewJob("schema-1", "ct-out", "route-to", sample.CT_STUDY_UID, "1.2.3.4.5", ""),
                         NewJob("schema-2", "ct-out", "route-to", sample.CT_STUDY_UID, "", "")],
                        pacs.deliveries.cursor() or 0)
    page = api.get("/api/routing/jobs", params={"rule": "ct-out"}).json()
    assert page["counts"]["pending"] == 2 and len(page["jobs"]) == 2
    for job in page["jobs"]:
        assert abs(aware(job["next_attempt"]).timestamp() - before) < 60
        assert aware(job["created_at"]) <= aware(job["updated_at"])
        assert abs(aware(job["created_at"]).timestamp() - before) < 60  # SQLite's naive time was UTC
    one, two = page["jobs"]
    pacs.deliveries.attempt_failed([one["id"]], "no answer", final=True)
    failed = api.get("/api/routing/jobs", params={"state": "failed"}).json()["jobs"]
    assert [j["id"] for j in failed] == [one["id"]] and failed[0]["next_attempt"] is None
    retried = api.post(f"/api/routing/jobs/{one['id']}/retry").json()
    assert retried["state"] == "pending" and retried["attempts"] == 0 and retried["next_attempt"]
    pacs.deliveries.done([two["id"]])
    assert api.post(f"/api/routing/jobs/{two['id']}/retry").status_code == 409
    assert api.post("/api/routing/jobs/999999/retry").status_code == 404
    api.delete("/api/routing/rules/ct-out")
    api.delete("/api/peers/route-to")


def test_rt(api: CheckedClient, tmp_path: Path) -> None:
    pacs = api.client.app.state.pacs
    ph = make_phantom(tmp_path / "phantom")
    for path in [*ph.ct_paths, ph.rtstruct, ph.rtdose, ph.rtplan]:
        pacs.archive.store_file(path)
    image = pydicom.dcmread(ph.ct_paths[len(ph.ct_paths) // 2], stop_before_pixels=True).SOPInstanceUID
    rt_set = api.get(f"/api/rt/studies/{ph.study_uid}").json()
    assert rt_set["problems"] == [] and rt_set["structure_sets"][0]["references"][0]["kind"] == "series"
    assert rt_set["doses"][0]["references"] == [{"kind": "plan", "uid": ph.plan_uid, "found": True, "in_study": True}]
    assert api.get(f"/api/rt/series/{ph.series_uid}").json()["frame_of_reference_uid"] == ph.frame_of_reference_uid
    rois = api.get(f"/api/rt/structure-sets/{ph.structure_set_uid}/rois").json()["rois"]
    assert rois[0]["name"] == "sphere"
    assert api.get(f"/api/rt/structure-sets/{ph.structure_set_uid}/contours", params={"image": image}).json()["rois"]
    dose = api.get(f"/api/rt/doses/{ph.dose_uid}/slice", params={"image": image}).json()
    assert len(dose["values"]) == dose["rows"]
    assert api.get(f"/api/rt/doses/{ph.dose_uid}/isodose", params={"image": image}).json()["levels"]
    dvh = api.get("/api/rt/dvh", params={"structure_set": ph.structure_set_uid, "dose": ph.dose_uid,
                                         "roi": "sphere"}).json()
    assert [d["name"] for d in dvh["dvhs"]] == ["sphere"] and dvh["cached"] == 0
    assert api.get("/api/rt/dvh", params={"structure_set": ph.structure_set_uid, "dose": ph.dose_uid,
                                          "roi": "sphere"}).json()["dvhs"] == dvh["dvhs"]  # kept: the same shape
    plan = api.get(f"/api/rt/plans/{ph.plan_uid}").json()
    assert plan["fractions"] == 30 and "name" not in plan
    assert api.get("/api/rt/studies/1.2.3.999").json()["error"] == "NotFound"


def test_hl7_messages(api: CheckedClient) -> None:
    pacs = api.client.app.state.pacs
    day = (TODAY + timedelta(days=1)).strftime("%Y%m%d")
    segments = ["MSH|^~\\&|RIS|HOSPITAL|PACS|RADIOLOGY|20260101120000||ORM^O01|SCHEMA1|P|2.3.1",
                "PID|1||H7^^^HOSP||SCHEMA^HL7||19700102|F",
                "ORC|NW|P1^RIS|FP1^PACS||SC||^^^" + day + "093000^^S",
                "OBR|1|P1^RIS|FP1^PACS|CTHEAD^CT HEAD^99RIS|||||||||||||||||||CT"]
    pacs.hl7.receive(("\r".join(segments) + "\r").encode(), address="127.0.0.1:5000")
    page = api.get("/api/hl7/messages", params={"control_id": "SCHEMA1"}).json()
    assert page["total"] == 1
    message = api.get(f"/api/hl7/messages/{page['messages'][0]['id']}").json()
    assert message["control_id"] == "SCHEMA1" and message["segments"][0][0] == "MSH"
    replayed = api.post(f"/api/hl7/messages/{message['id']}/replay").json()
    assert replayed["replay_of"] == message["id"] and aware(replayed["received_at"]) >= aware(message["received_at"])


def test_audit_users_and_tokens(api: CheckedClient) -> None:
    user = api.post("/api/users", json={"name": "schema-user", "role": "viewer",
                                        "password": "correct horse battery staple 11"})
    assert user.status_code == 201, user.text
    assert abs(aware(user.json()["created_at"]) - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert user.json() in api.get("/api/users").json()
    assert api.patch("/api/users/schema-user", json={"disabled": True}).json()["disabled"] is True
    token = api.post("/api/users/schema-user/tokens", json={"label": "ci", "expires_days": 2}).json()
    assert token["token"]
    listed = api.get("/api/users/schema-user/tokens").json()
    assert [t["id"] for t in listed] == [token["id"]] and listed[0]["last_used_at"] is None
    assert abs(aware(listed[0]["expires_at"]) - aware(listed[0]["created_at"]) - timedelta(days=2)) < timedelta(seconds=5)
    assert api.delete(f"/api/tokens/{token['id']}").json() == {"id": token["id"], "user": "schema-user",
                                                               "revoked": True}
    events = api.get("/api/audit", params={"action": "user_changed"}).json()["events"]
    assert events and all(aware(e["at"]) for e in events)
    assert api.get("/api/audit", params={"since": "2000-01-01"}).json()["total"] >= len(events)
    assert "user_changed" in api.get("/api/audit/actions").json()["actions"]


def test_deidentification_upload_and_quarantine(api: CheckedClient, tmp_path: Path) -> None:
    pacs = api.client.app.state.pacs
    copy_ = api.post(f"/api/studies/{sample.CT_STUDY_UID}/deidentify", json={"options": ["retain-dates"]})
    assert copy_.status_code == 201, copy_.text
    mappings = api.get("/api/deid/mappings", params={"replacement": copy_.json()["study_instance_uid"]}).json()
    assert [m["original"] for m in mappings] == [sample.CT_STUDY_UID]
    upload = api.post("/api/upload", content=Path(get_testdata_file("CT_small.dcm")).read_bytes(),
                      headers={"content-type": "application/dicom", "x-filename": "ct.dcm"})
    assert upload.status_code == 200 and upload.json()["files"][0]["outcome"] in ("stored", "duplicate-kept", "replaced")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not DICOM at all")
    pacs.files.quarantine(junk, "schema test: not DICOM", origin="SCHEMA")
    listed = {q["name"]: q for q in api.get("/api/quarantine").json()}
    assert listed["junk.dcm"]["origin"] == "SCHEMA" and listed["junk.dcm"]["size"] == 16
    assert abs(aware(listed["junk.dcm"]["quarantined_at"]) - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert api.post("/api/quarantine/junk.dcm/retry").json() == {"name": "junk.dcm", "indexed": False}
    for name in {q["name"] for q in api.get("/api/quarantine").json()}:
        api.delete(f"/api/quarantine/{name}")
    assert api.get("/api/quarantine").json() == []


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
