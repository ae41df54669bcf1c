"""REST and CLI ways in: both body forms, 422 naming the field with nothing half-written, paging, edits,
cancel, the OpenAPI description, the CLI commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
from support import hounsfield
from test_worklist_common import TODAY, add_item, clear_worklist

GOOD = {"patient_id": "P1", "patient_name": "DOE^JANE", "modality": "CT", "station_aet": "CT1",
        "start": f"{TODAY.isoformat()} 09:30"}


@pytest.fixture
def server(shared_server):
    """One server per module and backend; each test starts with an empty worklist."""
    clear_worklist(shared_server.url)
    return shared_server


def _count(url: str) -> int:
    return requests.get(f"{url}/api/worklist/items").json()["total"]


@pytest.mark.parametrize("body,field", [
    ({k: v for k, v in GOOD.items() if k != "patient_id"}, "patient_id"),
    ({k: v for k, v in GOOD.items() if k != "start"}, "start"),
    ({**GOOD, "start": "2026-02-30 09:30"}, "start"),
    ({**GOOD, "start": "tomorrow"}, "start"),
    ({**GOOD, "patient_birth_date": "1970-13-01"}, "patient_birth_date"),
    ({**GOOD, "accession_number": "A" * 17}, "accession_number"),  # SH > 16
    ({**GOOD, "station_aet": "S" * 17}, "station_aet"),  # AE > 16
    ({**GOOD, "patient_name": "X" * 65}, "patient_name"),  # one PN component > 64
    ({**GOOD, "modality": "ct scanner"}, "modality"),  # CT SCANNER: no Modality Defined Term (PS3.3 C.7.3.1.1.1)
    ({**GOOD, "unknown": 1}, "unknown"),
])
def test_bad_flat_item_is_422_naming_the_field(server, body: dict, field: str) -> None:
    before = _count(server.url)
    r = requests.post(f"{server.url}/api/worklist/items", json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["fields"]
    assert _count(server.url) == before


def test_bad_dicom_json_item_writes_nothing(server) -> None:
    steps = [{"00080060": {"vr": "CS", "Value": ["MR"]}, "00400001": {"vr": "AE", "Value": ["MR1"]},
              "00400002": {"vr": "DA", "Value": ["20261122"]}},
             {"00080060": {"vr": "CS", "Value": ["MR"]}, "00400001": {"vr": "AE", "Value": ["MR1" * 6]},
              "00400002": {"vr": "DA", "Value": ["20261123"]}}]
    item = {"00100020": {"vr": "LO", "Value": ["P9"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]},
            "00400100": {"vr": "SQ", "Value": steps}}
    r = requests.post(f"{server.url}/api/worklist/items", json=item)
    assert r.status_code == 422
    assert r.json()["fields"] == ["ScheduledProcedureStepSequence[1].ScheduledStationAETitle"]
    assert _count(server.url) == 0  # the valid first step was not written either
    steps[1]["00400001"]["Value"] = ["MR2"]
    created = requests.post(f"{server.url}/api/worklist/items", json=[item]).json()  # one item per step
    assert [c["fields"]["station_aet"] for c in created] == ["MR1", "MR2"]
    assert len({c["fields"]["study_instance_uid"] for c in created}) == 1
    assert requests.post(f"{server.url}/api/worklist/items", json={"0010002": {"vr": "LO"}}).status_code == 422


def test_list_page_update_cancel_delete(server) -> None:
    ids = [add_item(server.url, patient_id=f"P{i}", start=f"{TODAY.isoformat()} {8 + i:02d}:00")["id"]
           for i in range(5)]
    page = requests.get(f"{server.url}/api/worklist/items", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 5 and [i["id"] for i in page["items"]] == ids[2:4]
    r = requests.patch(f"{server.url}/api/worklist/items/{ids[0]}", json={"patient_name": "DOE^JANET",
                                                                            "station_aet": "CT9"})
    assert r.status_code == 200 and r.json()["fields"]["patient_name"] == "DOE^JANET"
    assert requests.get(f"{server.url}/api/worklist/items", params={"station": "CT9"}).json()["total"] == 1
    bad = requests.patch(f"{server.url}/api/worklist/items/{ids[0]}", json={"station_aet": "X" * 20})
    assert bad.status_code == 422 and bad.json()["fields"] == ["station_aet"]
    assert requests.post(f"{server.url}/api/worklist/items/{ids[1]}/cancel").json()["status"] == "CANCELED"
    assert requests.patch(f"{server.url}/api/worklist/items/{ids[1]}", json={"patient_id": "X"}).status_code == 409
    assert requests.post(f"{server.url}/api/worklist/items/{ids[1]}/cancel").status_code == 409
    assert requests.get(f"{server.url}/api/worklist/items",
                        params={"status": ["SCHEDULED", "IN PROGRESS"]}).json()["total"] == 4
    assert requests.delete(f"{server.url}/api/worklist/items/{ids[4]}").status_code == 200
    assert requests.get(f"{server.url}/api/worklist/items/{ids[4]}").status_code == 404


def test_openapi_documents_both_forms(server) -> None:
    spec = requests.get(f"{server.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"WorklistItemIn", "DicomJsonItem", "WorklistItemOut"} <= set(schemas)
    body = json.dumps(spec["paths"]["/api/worklist/items"]["post"]["requestBody"])
    assert "WorklistItemIn" in body and "DicomJsonItem" in body
    assert '"maxLength": 16' in json.dumps(schemas["WorklistItemIn"]["properties"]["station_aet"])


def test_cli_add_list_update_cancel(fresh_server) -> None:
    """On a server of its own: the first item an archive schedules is item 1."""
    server = fresh_server
    out = server.cli("worklist", "add", "--patient-id", "C1", "--patient-name", "CLI^PATIENT", "--modality", "MR",
                     "--station-aet", "MR1", "--start", f"{TODAY.isoformat()} 10:30").stdout
    assert "scheduled item 1" in out
    bad = server.cli("worklist", "add", "--patient-id", "C2", "--patient-name", "X", "--modality", "MR",
                     "--station-aet", "MR1", "--start", "2026-13-01", check=False)
    assert bad.returncode == 2 and "--start" in bad.stderr
    listed = server.cli("worklist", "list", "--date", "today").stdout
    assert "C1" in listed and "MR1" in listed
    assert "CLI^OTHER" in server.cli("worklist", "update", "1", "--patient-name", "CLI^OTHER").stdout
    assert "CANCELED" in server.cli("worklist", "cancel", "1").stdout
    assert "C1" not in server.cli("worklist", "list").stdout
    assert "C1" in server.cli("worklist", "list", "--all").stdout


def test_cli_find_queries_a_remote_mwl_scp(server) -> None:
    add_item(server.url, patient_id="R1", patient_name="REMOTE^ONE", station_aet="CT7")
    remote = f"HOUNSFIELD@127.0.0.1:{server.dicom_port}"
    table = server.cli("worklist", "find", "--remote", remote, "ScheduledStationAETitle=CT7").stdout
    assert "R1" in table and "1 answers" in table
    as_json = json.loads(server.cli("worklist", "find", "--remote", remote, "PatientID=R1", "--json").stdout)
    assert as_json[0]["00100020"]["Value"] == ["R1"]
    assert json.loads(server.cli("worklist", "find", "--remote", remote, "PatientID=NONE", "--json").stdout) == []


# ---- in process: the app on an SQLite index, through FastAPI's TestClient ----------------------------------------

@pytest.fixture
def client(tmp_path: Path):
    from fastapi.testclient import TestClient

    from hounsfield import config
    from hounsfield.pacs import Pacs
    from hounsfield.web.app import create_app

    pacs = Pacs(config.load(data_dir=str(tmp_path / "data")))
    with TestClient(create_app(pacs), raise_server_exceptions=False) as c:  # a 500 is an answer to assert on
        yield c
    pacs.close()


def _total(client) -> int:
    return client.get("/api/worklist/items").json()["total"]


def _json_item(**elements: dict) -> dict:
    step = {"00080060": {"vr": "CS", "Value": ["MR"]}, "00400001": {"vr": "AE", "Value": ["MR1"]},
            "00400002": {"vr": "DA", "Value": ["20261122"]}}
    return {"00100020": {"vr": "LO", "Value": ["P9"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]},
            "00400100": {"vr": "SQ", "Value": [step]}, **elements}


def test_lower_case_where_the_standard_fixes_case_is_taken(client) -> None:
    """The web form sends what the receptionist typed: "ct" is Modality CT, "m" Patient's Sex M (PS3.5 6.2: CS is
    upper case; PS3.3 C.7.1.1)."""
    r = client.post("/api/worklist/items", json={**GOOD, "modality": "ct", "patient_sex": "m"})
    assert r.status_code == 201, r.text
    assert (r.json()["fields"]["modality"], r.json()["fields"]["patient_sex"]) == ("CT", "M")


@pytest.mark.parametrize("field,value,message", [
    ("patient_id", "P1\\P2", "Patient ID: 2 values"),  # VM 1 (PS3.6); "\\" separates values (PS3.5 6.4)
    ("patient_name", "A^B^C^D^E^F", "Patient name: 6 components"),  # at most 5 (PS3.5 6.2.1)
    ("patient_birth_date", "2100-01-01", "Birth date: "),  # in the future whenever the suite runs
    ("patient_sex", "X", "Sex: 'X' is not one of M, F, O"),  # PS3.3 C.7.1.1
    ("accession_number", "A\tB", "Accession number: control character"),  # PS3.5 6.1.3
])
def test_what_a_modality_cannot_take_is_422_in_the_users_words(client, field: str, value: str,
                                                               message: str) -> None:
    r = client.post("/api/worklist/items", json={**GOOD, field: value})
    assert r.status_code == 422, r.text
    assert r.json()["fields"] == [field]
    assert r.json()["detail"][0]["msg"].startswith(message), r.json()["detail"][0]["msg"]
    assert _total(client) == 0


@pytest.mark.parametrize("elements,field,section", [
    ({"00100020": {"vr": "LO", "Value": ["P"] * 10000}}, "PatientID", "PS3.6"),  # VM 1, 10,000 values
    ({"00100020": {"vr": "LO", "Value": ["P\u0000"]}}, "PatientID", "PS3.5 6.1.3"),
    ({"00104000": {"vr": "LT", "Value": ["bell\u0007"]}}, "PatientComments", "PS3.5 6.1.3"),
    ({"00100020": {"vr": "XX", "Value": ["P9"]}}, "PatientID", "PS3.5 6.2"),
    ({"00400100": {"vr": "SQ", "Value": [{"00080060": {"vr": "XX", "Value": ["MR"]}}]}},
     "ScheduledProcedureStepSequence[0].Modality", "PS3.5 6.2"),
])
def test_bad_dicom_json_is_4xx_naming_attribute_and_rule_and_writes_nothing(client, elements: dict, field: str,
                                                                            section: str) -> None:
    """Once written and then failing as the answer was built (HTTP 500), or taken silently."""
    r = client.post("/api/worklist/items", json=_json_item(**elements))
    assert r.status_code == 422, r.text
    assert r.json()["fields"] == [field]
    assert section in r.json()["detail"][0]["msg"]
    assert _total(client) == 0


@pytest.mark.parametrize("elements,field,section", [
    ({"00420011": {"vr": "OB", "InlineBinary": "@@@@"}}, "EncapsulatedDocument", "PS3.18 F.2.7"),
    ({"00420011": {"vr": "OB", "BulkDataURI": "http://elsewhere/doc"}}, "EncapsulatedDocument", "PS3.18 F.2.6"),
    ({"00100021": {"vr": "LO", "Value": ["A\\B"]}}, "IssuerOfPatientID", "PS3.18 F.2.4"),
])
def test_dicom_json_model_is_checked_before_pydicom_reads_it(client, elements: dict, field: str,
                                                             section: str) -> None:
    """pydicom decodes InlineBinary that is not base64 to whatever its alphabet characters spell, fetches nothing
    for a BulkDataURI, and splits one value holding a backslash in two: the route must read the body with
    ``items.from_json``."""
    r = client.post("/api/worklist/items", json=_json_item(**elements))
    assert r.status_code == 422, r.text
    assert r.json()["fields"] == [field]
    assert section in r.json()["detail"][0]["msg"]
    assert _total(client) == 0


def test_a_requested_procedure_code_is_answered(client) -> None:
    """One item at most (PS3.3 C.4.11): the flat form shows it as one code (the answer was an HTTP 500 after the
    write)."""
    code = {"value": "X1", "scheme": "99LOCAL", "meaning": "Chest"}
    r = client.post("/api/worklist/items", json={**GOOD, "requested_procedure_code": code})
    assert r.status_code == 201, r.text
    assert r.json()["fields"]["requested_procedure_code"] == code


def test_same_accession_for_another_patient_is_a_warning_in_the_answer(client) -> None:
    assert client.post("/api/worklist/items", json={**GOOD, "accession_number": "ACC1"}).json()["warnings"] == []
    r = client.post("/api/worklist/items", json={**GOOD, "patient_id": "P2", "accession_number": "ACC1"})
    assert r.status_code == 201, r.text
    assert len(r.json()["warnings"]) == 1 and "Accession number ACC1" in r.json()["warnings"][0]
    assert _total(client) == 2


# ---- the CLI as a user runs it, on a data directory of its own -------------------------------------------------

def _cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return hounsfield("worklist", *args, "--data-dir", data)


def test_cli_normalises_case_refuses_in_the_users_words_and_warns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    base = ["--patient-name", "CLI^PATIENT", "--station-aet", "MR1", "--start", f"{TODAY.isoformat()} 10:30"]
    added = _cli(data, "add", "--patient-id", "C1", "--modality", "mr", "--accession-number", "ACC1", *base)
    assert added.returncode == 0, added.stderr
    assert "MR on MR1" in added.stdout and "warning" not in added.stderr
    assert "C1" in _cli(data, "list", "--modality", "mr").stdout
    bad = _cli(data, "add", "--patient-id", "C2", "--modality", "MR", "--patient-sex", "X", *base)
    assert bad.returncode == 2
    assert "Sex: 'X' is not one of M, F, O" in bad.stderr and "(--patient-sex)" in bad.stderr
    other = _cli(data, "add", "--patient-id", "C3", "--modality", "MR", "--accession-number", "ACC1", *base)
    assert other.returncode == 0, other.stderr
    assert "warning:" in other.stderr and "Accession number ACC1 is already used by patient C1" in other.stderr
