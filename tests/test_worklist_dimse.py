"""The worklist through a real ``hounsfield serve`` (SQLite and PostgreSQL): items created over REST, queried
by dcmtk's findscu -W and pynetdicom as a modality does, MPPS, character sets, bad input, the query log."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from test_worklist_common import (
    TODAY,
    add_item,
    clear_worklist,
    days,
    eventually,
    findscu,
    modality_query,
    mpps,
    mpps_in_progress,
    mwl_find,
    query_log_total,
    ymd,
)

EXPECTED = {  # flat field -> (keyword, in the step item)
    "patient_id": ("PatientID", False), "patient_name": ("PatientName", False),
    "accession_number": ("AccessionNumber", False), "study_instance_uid": ("StudyInstanceUID", False),
    "requested_procedure_id": ("RequestedProcedureID", False),
    "requested_procedure_description": ("RequestedProcedureDescription", False),
    "modality": ("Modality", True), "station_aet": ("ScheduledStationAETitle", True),
    "step_id": ("ScheduledProcedureStepID", True), "step_description": ("ScheduledProcedureStepDescription", True),
    "performing_physician": ("ScheduledPerformingPhysicianName", True),
}


def _check_answer(answer: Dataset, item: dict) -> None:
    """Attribute by attribute against the item as REST returned it."""
    step = answer.ScheduledProcedureStepSequence[0]
    for field, (keyword, in_step) in EXPECTED.items():
        expected = item["fields"][field]
        got = (step if in_step else answer).get(keyword)
        assert str(got or "") == str(expected or ""), (keyword, got, expected)
    start = item["fields"]["start"]
    assert step.ScheduledProcedureStepStartDate == start[:10].replace("-", "")
    assert step.ScheduledProcedureStepStartTime[:4] == start[11:16].replace(":", "")
    for keyword in ("PatientBirthDate", "ReferringPhysicianName"):  # requested, item has none: zero-length
        assert keyword in answer and answer[keyword].is_empty


@pytest.fixture
def server(shared_server):
    """One server per module and backend; each test starts with an empty worklist (what the tests before it
    scheduled is deleted) and looks at the query log from where it stood when the test began."""
    clear_worklist(shared_server.url)
    return shared_server


@pytest.fixture
def schedule(server) -> dict[str, dict]:
    url = server.url
    return {
        "ct1": add_item(url, patient_id="P1", patient_name="DOE^JANE", accession_number="A1", station_aet="CT1",
                        requested_procedure_description="CT CHEST", step_description="CT CHEST W/O",
                        performing_physician="HOUSE^GREGORY"),
        "ct2": add_item(url, patient_id="P2", patient_name="ROE^RICHARD", accession_number="A2", station_aet="CT2",
                        start=f"{TODAY.isoformat()} 10:00"),
        "mr1": add_item(url, patient_id="P1", patient_name="DOE^JANE", accession_number="A3", modality="MR",
                        station_aet="MR1", start=f"{days(3).isoformat()} 14:00"),
        "old": add_item(url, patient_id="P3", patient_name="POE^EDGAR", accession_number="A4", station_aet="CT1",
                        start=f"{days(-20).isoformat()} 08:00"),
    }


QUERY_SHAPES = {
    "today + modality + station": (dict(ScheduledProcedureStepStartDate="TODAY", Modality="CT",
                                        ScheduledStationAETitle="CT1"), {"ct1"}),
    "patient id": (dict(PatientID="P1"), {"ct1", "mr1"}),
    "7-day range": (dict(ScheduledProcedureStepStartDate="WEEK"), {"ct1", "ct2", "mr1"}),
    "universal": ({}, {"ct1", "ct2", "mr1", "old"}),
}


def _query(keys: dict) -> Dataset:
    values = {"TODAY": ymd(TODAY), "WEEK": f"{ymd(TODAY)}-{ymd(days(6))}"}
    return modality_query(**{k: values.get(v, v) for k, v in keys.items()})


@pytest.mark.parametrize("shape", list(QUERY_SHAPES))
def test_modality_query_shapes_findscu_and_pynetdicom(server, schedule, tmp_path: Path, shape: str) -> None:
    keys, expected = QUERY_SHAPES[shape]
    by_accession = {schedule[k]["fields"]["accession_number"]: schedule[k] for k in expected}
    found, final = mwl_find(server.dicom_port, _query(keys))
    assert final == 0
    assert sorted(a.AccessionNumber for a in found) == sorted(by_accession)
    for answer in found:
        _check_answer(answer, by_accession[answer.AccessionNumber])
    dcmtk_answers = findscu(server.dicom_port, _query(keys), tmp_path / "findscu")
    assert sorted(a.AccessionNumber for a in dcmtk_answers) == sorted(by_accession)
    for answer in dcmtk_answers:
        _check_answer(answer, by_accession[answer.AccessionNumber])


def test_matching_rules_over_dimse(server, schedule) -> None:
    port = server.dicom_port
    cases = {
        "name wildcard": (dict(PatientName="DO*"), {"A1", "A3"}),
        "time range combined with date range": (dict(ScheduledProcedureStepStartDate=f"{ymd(TODAY)}-{ymd(days(3))}",
                                                     ScheduledProcedureStepStartTime="0945-1500"), {"A2", "A3"}),
        "open date range": (dict(ScheduledProcedureStepStartDate=f"{ymd(days(1))}-"), {"A3"}),
        "station wildcard": (dict(ScheduledStationAETitle="CT?"), {"A1", "A2", "A4"}),
        "step key matched in Python": (dict(ScheduledProcedureStepDescription="CT CHEST*"), {"A1"}),
        "no match": (dict(PatientID="NOBODY"), set()),
    }
    for name, (keys, expected) in cases.items():
        found, final = mwl_find(port, modality_query(**keys))
        assert final == 0, name
        assert {a.AccessionNumber for a in found} == expected, name


def test_mpps_round_trip(server, schedule) -> None:
    item = schedule["ct1"]
    uid = generate_uid()
    assert mpps(server.dicom_port, "create", uid, mpps_in_progress(item)) == 0x0000
    assert requests.get(f"{server.url}/api/worklist/items/{item['id']}").json()["status"] == "IN PROGRESS"
    found, _ = mwl_find(server.dicom_port, modality_query(AccessionNumber="A1"))
    assert [a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus for a in found] == ["STARTED"]

    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = ymd(TODAY)
    done.PerformedProcedureStepEndTime = "100000"
    assert mpps(server.dicom_port, "set", uid, done) == 0x0000
    assert requests.get(f"{server.url}/api/worklist/items/{item['id']}").json()["status"] == "COMPLETED"
    assert "COMPLETED" in server.cli("worklist", "show", str(item["id"])).stdout
    assert mwl_find(server.dicom_port, modality_query(AccessionNumber="A1"))[0] == []  # closed: not offered
    assert requests.get(f"{server.url}/api/worklist/mpps/{uid}").json()["item_ids"] == [item["id"]]

    assert mpps(server.dicom_port, "set", uid, done) == 0x0110  # already COMPLETED
    assert mpps(server.dicom_port, "set", generate_uid(), done) == 0x0112  # unknown instance
    again = mpps_in_progress(schedule["ct2"])
    assert mpps(server.dicom_port, "create", uid, again) == 0x0111  # duplicate instance
    bad = mpps_in_progress(schedule["ct2"])
    bad.PerformedProcedureStepStatus = "COMPLETED"  # N-CREATE must be IN PROGRESS
    assert mpps(server.dicom_port, "create", generate_uid(), bad) == 0x0106
    assert requests.get(f"{server.url}/api/worklist/items/{schedule['ct2']['id']}").json()["status"] == "SCHEDULED"


def test_mpps_matches_step_not_patient(server, schedule) -> None:
    """P1 has two steps; the MPPS names one of them, the other stays SCHEDULED."""
    assert mpps(server.dicom_port, "create", generate_uid(), mpps_in_progress(schedule["mr1"])) == 0
    items = requests.get(f"{server.url}/api/worklist/items", params={"patient_id": "P1"}).json()["items"]
    assert {i["fields"]["accession_number"]: i["status"] for i in items} == {"A1": "SCHEDULED", "A3": "IN PROGRESS"}


@pytest.mark.parametrize("name,charset", [
    ("山田^太郎=やまだ^たろう", "ISO 2022 IR 87"),
    ("山田^太郎", None),  # UTF-8 chosen by the server
    ("สมชาย^ใจดี", "ISO_IR 166"),
    ("สมหญิง^รักไทย", None),
    ("MÜLLER^JÜRGEN", "ISO_IR 100"),
])
def test_names_round_trip_rest_to_cfind(server, name: str, charset: str | None) -> None:
    fields = {"patient_name": name, "patient_id": "CS1"}
    if charset:
        fields["specific_character_set"] = charset if charset != "ISO 2022 IR 87" else "\\ISO 2022 IR 87"
    item = add_item(server.url, **fields)
    assert item["fields"]["patient_name"] == name
    found, final = mwl_find(server.dicom_port, modality_query(PatientID="CS1"))
    assert final == 0 and len(found) == 1
    assert str(found[0].PatientName) == name
    expected_charset = fields.get("specific_character_set", "ISO_IR 192")
    got = found[0].SpecificCharacterSet
    assert (list(got) if not isinstance(got, str) else [got]) == [c for c in expected_charset.split("\\")]
    by_name, _ = mwl_find(server.dicom_port, modality_query(SpecificCharacterSet="ISO_IR 192",
                                                            PatientName=name.split("^")[0] + "*"))
    assert [str(a.PatientName) for a in by_name] == [name]


def test_malformed_query_is_refused_and_logged(server, schedule) -> None:
    logged_before = query_log_total(server.url)
    two_items = modality_query()
    two_items.ScheduledProcedureStepSequence.append(Dataset())  # a sequence key holds one item only
    found, final = mwl_find(server.dicom_port, two_items)
    assert found == [] and final == 0xA900
    bad_date = modality_query(ScheduledProcedureStepStartDate="2026-99-99")
    assert mwl_find(server.dicom_port, bad_date)[1] == 0xA900
    log = eventually(lambda: requests.get(f"{server.url}/api/worklist/queries").json(),
                     lambda log: log["total"] >= logged_before + 2)  # written just after the final response
    assert log["total"] == logged_before + 2
    log = log["queries"]  # newest first: the two above
    assert [q["status"] for q in log[:2]] == [0xA900, 0xA900]
    assert "must hold a single item" in log[1]["error"]


def test_query_log_and_explain(server, schedule) -> None:
    logged_before = query_log_total(server.url)
    mwl_find(server.dicom_port, _query(dict(ScheduledProcedureStepStartDate="TODAY", Modality="CT",
                                            ScheduledStationAETitle="CT2")), calling="CT_ROOM2")
    log = eventually(lambda: requests.get(f"{server.url}/api/worklist/queries").json(),
                     lambda log: log["total"] > logged_before)
    assert log["total"] == logged_before + 1
    entry = log["queries"][0]
    assert entry["calling_ae"] == "CT_ROOM2" and entry["answers"] == 1
    assert "ScheduledStationAETitle=CT2" in entry["summary"]
    why = requests.get(f"{server.url}/api/worklist/queries/{entry['id']}/explain/{schedule['ct1']['id']}").json()
    assert not why["returned"]
    misses = {k["key"]: k["reason"] for k in why["keys"] if not k["matched"]}
    assert misses == {"ScheduledProcedureStepSequence>ScheduledStationAETitle": "query CT2, item CT1"}
    cli = server.cli("worklist", "explain", str(entry["id"]), str(schedule["ct1"]["id"])).stdout
    assert "query CT2, item CT1" in cli and "would not return" in cli
    assert "CT_ROOM2" in server.cli("worklist", "queries").stdout


def test_study_link_when_images_arrive(server, schedule, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file
    from pydicom import dcmread
    from support import dcmtk, dcmtk_env
    import subprocess

    item = schedule["ct1"]
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID = item["fields"]["study_instance_uid"]
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "ct.dcm")
    proc = subprocess.run([dcmtk("storescu"), "-aec", "HOUNSFIELD", "127.0.0.1", str(server.dicom_port),
                           str(tmp_path / "ct.dcm")], capture_output=True, text=True, env=dcmtk_env())
    assert proc.returncode == 0, proc.stderr
    received = eventually(lambda: requests.get(f"{server.url}/api/worklist/items/{item['id']}").json(),
                          lambda got: got["study_received"])  # the indexer links it in the background
    assert received["study_received"] is True
    assert requests.get(f"{server.url}/api/worklist/items/{schedule['ct2']['id']}").json()["study_received"] is False
