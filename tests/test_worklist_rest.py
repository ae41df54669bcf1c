"""REST and CLI ways in: both body forms, 422 naming the field with nothing half-written, paging, edits,
cancel, the OpenAPI description, the CLI commands."""

from __future__ import annotations

import json

import pytest
import requests
from test_worklist_common import TODAY, add_item

GOOD = {"patient_id": "P1", "patient_name": "DOE^JANE", "modality": "CT", "station_aet": "CT1",
        "start": f"{TODAY.isoformat()} 09:30"}


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
    ({**GOOD, "modality": "ct scanner"}, "modality"),  # CS: upper case, no lower-case letters
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
    created = requests.post(f"{server.url}/api/worklist/items", json=item).json()
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


def test_cli_add_list_update_cancel(server) -> None:
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
