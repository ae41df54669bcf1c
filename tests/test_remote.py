"""Remote nodes over REST (issue 14): a hounsfield asks a second hounsfield and a real Orthanc, configured as
its peers, for echo, C-FIND at each level and MWL, and retrieves a study from each by C-MOVE and by C-GET
into its own archive; the errors of careless input and of nodes that fail are clear 4xx / 502 answers and
failed jobs. Every wait polls with a deadline."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from pydicom import dcmread

from remote_support import Site, remote_site, wait_for_job

NAMES = ("find", "move", "get", "series")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from remote_site(tmp_path_factory.mktemp("remote"), NAMES)


def post(site: Site, path: str, body: Any = None) -> requests.Response:
    return requests.post(f"{site.local.url}{path}", json=body, timeout=120)


def local_instances(site: Site, study_uid: str) -> dict[str, bytes]:
    """SOP Instance UID → PixelData of what the local archive holds of ``study_uid`` (its stored files)."""
    r = requests.get(f"{site.local.url}/api/instances", params={"StudyInstanceUID": study_uid}, timeout=60)
    assert r.status_code == 200, r.text
    out = {}
    for record in r.json():
        raw = requests.get(f"{site.local.url}/api/instances/{record['SOPInstanceUID']}/file", timeout=60)
        assert raw.status_code == 200
        out[record["SOPInstanceUID"]] = bytes(dcmread(io.BytesIO(raw.content)).PixelData)
    return out


@pytest.mark.parametrize("peer", ["second", "orthanc"])
def test_echo_answers_and_the_node_list_names_the_peers(site: Site, peer: str) -> None:
    r = post(site, f"/api/peers/{peer}/echo")
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["status"] == 0
    nodes = {n["name"]: n for n in requests.get(f"{site.local.url}/api/remote/peers", timeout=30).json()}
    assert nodes[peer]["can_retrieve"] is True and nodes[peer]["port"] in (site.second.dicom_port,
                                                                          site.orthanc.dicom_port)


@pytest.mark.parametrize("peer", ["second", "orthanc"])
def test_find_at_each_level_answers_what_was_loaded(site: Site, peer: str) -> None:
    study = site.studies[f"{peer}-find"]
    r = post(site, f"/api/peers/{peer}/find", {"level": "study", "query": {"PatientID": study.patient_id}})
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    assert [(m["StudyInstanceUID"], m["PatientID"]) for m in matches] == [(study.study_uid, study.patient_id)]
    assert matches[0]["AccessionNumber"] == study.accession
    assert matches[0]["PatientName"] == f"PATIENT^{study.patient_id}"
    assert matches[0]["ModalitiesInStudy"] == ["CT"]  # may hold several values: always a list
    # by accession number, by date range and by modality too (what the Remote page searches by)
    for query in ({"AccessionNumber": study.accession}, {"PatientID": study.patient_id, "StudyDate": "20240101-20240131"},
                  {"PatientID": study.patient_id, "ModalitiesInStudy": "CT"}):
        found = post(site, f"/api/peers/{peer}/find", {"level": "study", "query": query}).json()["matches"]
        assert [m["StudyInstanceUID"] for m in found] == [study.study_uid], query
    assert post(site, f"/api/peers/{peer}/find", {"query": {"PatientID": study.patient_id,
                                                            "StudyDate": "19990101"}}).json()["matches"] == []

    patients = post(site, f"/api/peers/{peer}/find", {"level": "patient", "query": {"PatientID": study.patient_id}})
    assert patients.status_code == 200, patients.text
    assert [m["PatientID"] for m in patients.json()["matches"]] == [study.patient_id]

    series = post(site, f"/api/peers/{peer}/find", {"level": "series",
                                                    "query": {"StudyInstanceUID": study.study_uid}}).json()
    assert [(m["SeriesInstanceUID"], m["Modality"]) for m in series["matches"]] == [(study.series_uid, "CT")]

    images = post(site, f"/api/peers/{peer}/find", {"level": "image", "query": {
        "StudyInstanceUID": study.study_uid, "SeriesInstanceUID": study.series_uid}}).json()
    assert sorted(m["SOPInstanceUID"] for m in images["matches"]) == sorted(study.pixels)
    assert images["count"] == len(study.pixels) and images["truncated"] is False


@pytest.mark.parametrize("method", ["move", "get"])
@pytest.mark.parametrize("peer", ["second", "orthanc"])
def test_retrieve_a_study_into_the_archive(site: Site, peer: str, method: str) -> None:
    study = site.studies[f"{peer}-{method}"]
    assert local_instances(site, study.study_uid) == {}
    r = post(site, f"/api/peers/{peer}/retrieve", {"level": "study", "study": study.study_uid, "method": method})
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "running" and r.json()["kind"] == "retrieve"
    job = wait_for_job(site.local.url, r.json()["id"])
    assert job["state"] == "completed", job
    assert (job["total"], job["done"], job["failed"], job["local_instances"]) == (3, 3, 0, 3), job
    assert job["stored"] == 3 and job["progress"] == 100
    # exactly the instances loaded, with the same pixel bytes
    assert local_instances(site, study.study_uid) == study.pixels
    listed = requests.get(f"{site.local.url}/api/jobs", params={"kind": "retrieve"}, timeout=30).json()
    assert job["id"] in [j["id"] for j in listed]
    # and the viewer's study list answers it (what "open in the viewer" shows)
    found = requests.get(f"{site.local.url}/dicom-web/studies", params={"StudyInstanceUID": study.study_uid},
                         timeout=30).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [study.study_uid]


@pytest.mark.parametrize("peer", ["second", "orthanc"])
def test_retrieve_one_series(site: Site, peer: str) -> None:
    study = site.studies[f"{peer}-series"]
    r = post(site, f"/api/peers/{peer}/retrieve", {"level": "series", "study": study.study_uid,
                                                    "series": study.series_uid, "method": "get"})
    assert r.status_code == 202, r.text
    job = wait_for_job(site.local.url, r.json()["id"])
    assert job["state"] == "completed" and job["series"] == study.series_uid, job
    assert local_instances(site, study.study_uid) == study.pixels


def test_careless_and_hostile_input_is_refused_with_a_clear_message(site: Site) -> None:
    def refused(path: str, body: Any, status: int, words: str) -> None:
        r = post(site, path, body)
        assert r.status_code == status, (path, body, r.status_code, r.text)
        assert words in str(r.json()["detail"]), r.text

    refused("/api/peers/nosuch/find", {"query": {}}, 404, "no remote node named 'nosuch'")
    refused("/api/peers/nosuch/echo", None, 404, "nosuch")
    refused("/api/peers/nosuch/retrieve", {"study": "1.2.3"}, 404, "nosuch")
    refused("/api/peers/second/find", {"level": "frame"}, 422, "patient")
    refused("/api/peers/second/find", {"query": {"NoSuchKeyword": "x"}}, 400, "unknown query key 'NoSuchKeyword'")
    refused("/api/peers/second/find", {"query": {"PatientID": "x" * 5000}}, 400, "at most 1024")
    refused("/api/peers/second/find", {"query": {f"k{i}": "" for i in range(100)}}, 400, "at most 64")
    refused("/api/peers/second/find", {"query": {"PatientID": {"nested": 1}}}, 400, "must be text")
    refused("/api/peers/second/find", {"query": {"ReferencedStudySequence": "x"}}, 400, "sequence")
    refused("/api/peers/second/find", {"query": {"QueryRetrieveLevel": "IMAGE"}}, 400, "set by level")
    refused("/api/peers/second/find", {"level": "series", "query": {}}, 400, "StudyInstanceUID")
    refused("/api/peers/second/find", {"query": {}, "extra": 1}, 422, "xtra")
    refused("/api/peers/second/retrieve", {"study": "not a uid"}, 400, "must be a UID")
    refused("/api/peers/second/retrieve", {"study": "1.2", "level": "series"}, 400, "series must be a UID")
    refused("/api/peers/second/retrieve", {"study": "1.2", "method": "push"}, 422, "move")
    refused("/api/peers/second/find-worklist", {"query": {"Bogus": "1"}}, 400, "unknown query key")
    assert requests.get(f"{site.local.url}/api/jobs/nosuchjob", timeout=30).status_code == 404


def no_internals(r: requests.Response) -> None:
    text = r.text
    assert "Traceback" not in text and "/tmp" not in text and ".py" not in text, text


def test_a_node_that_does_not_answer_is_a_bad_gateway_and_a_failed_job(site: Site) -> None:
    r = post(site, "/api/peers/dead/echo")
    assert r.status_code == 502 and r.json()["error"] == "RemoteFailure", r.text
    assert "NOBODY" in r.json()["detail"] and "not established" in r.json()["detail"]
    no_internals(r)
    r = post(site, "/api/peers/dead/find", {"query": {"PatientID": "X"}})
    assert r.status_code == 502 and "not established" in r.json()["detail"], r.text
    no_internals(r)
    r = post(site, "/api/peers/dead/retrieve", {"study": "1.2.3", "method": "move"})
    assert r.status_code == 202
    job = wait_for_job(site.local.url, r.json()["id"])
    assert job["state"] == "failed" and "not established" in job["error"], job


def test_a_refused_association_says_so(site: Site) -> None:
    r = post(site, "/api/peers/wrong-ae/echo")
    assert r.status_code == 502, r.text
    assert "rejected by the peer" in r.json()["detail"]
    no_internals(r)
    job = wait_for_job(site.local.url, post(site, "/api/peers/wrong-ae/retrieve",
                                            {"study": "1.2.3", "method": "get"}).json()["id"])
    assert job["state"] == "failed" and "rejected by the peer" in job["error"], job


def test_a_failure_status_fails_the_job_with_its_meaning(site: Site) -> None:
    # the second hounsfield refuses a C-FIND identifier whose date is no date
    r = post(site, "/api/peers/second/find", {"query": {"StudyDate": "not-a-date"}})
    assert r.status_code == 502, r.text
    assert "C-FIND on second: C-FIND failed with status 0xA900 (" in r.json()["detail"], r.text
    no_internals(r)
    # a study the node does not have: nothing to retrieve, said as such
    for peer in ("second", "orthanc"):
        job = wait_for_job(site.local.url, post(site, f"/api/peers/{peer}/retrieve",
                                                {"study": "1.2.3.999", "method": "move"}).json()["id"])
        assert job["state"] == "failed", job
        assert job["error"] == {"second": "second has no study 1.2.3.999",  # answered Success with nothing
                                "orthanc": "C-MOVE from orthanc ended with 0xC000 (Failed: unable to process)"}[peer]


def test_mwl_find_on_a_second_hounsfield(site: Site) -> None:
    item = {"patient_id": "MWL-REMOTE-1", "patient_name": "REMOTE^WORKLIST", "modality": "CT",
            "start": "2026-11-22 09:30", "accession_number": "ACC-REMOTE-1", "station_aet": "CT1"}
    made = requests.post(f"{site.second.url}/api/worklist/items", json=item, timeout=30)
    assert made.status_code in (200, 201), made.text
    r = post(site, "/api/peers/second/find-worklist", {"query": {"PatientID": "MWL-REMOTE-1", "Modality": "CT"}})
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    assert [(m["PatientID"], m["AccessionNumber"]) for m in matches] == [("MWL-REMOTE-1", "ACC-REMOTE-1")]
    step = matches[0]["ScheduledProcedureStepSequence"][0]
    assert step["Modality"] == "CT" and step["ScheduledProcedureStepStartDate"] == "20261122"
    assert post(site, "/api/peers/second/find-worklist", {"query": {"PatientID": "NOBODY-HERE"}}).json()["matches"] == []


def test_a_node_not_allowed_to_store_here_cannot_be_retrieved_from(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from hounsfield import config
    from hounsfield.pacs import Pacs
    from hounsfield.web.app import create_app

    pacs = Pacs(config.Settings(data_dir=tmp_path / "data",
                                peers=(config.Peer("viewer", "VIEWER", "127.0.0.1", 104, allow=frozenset({"find"})),)))
    try:
        with TestClient(create_app(pacs), base_url="http://127.0.0.1") as client:
            r = client.post("/api/peers/viewer/retrieve", json={"study": "1.2.3"})
            assert r.status_code == 409 and "may not store here" in r.json()["detail"], r.text
            assert client.get("/api/remote/peers").json()[0]["can_retrieve"] is False
    finally:
        pacs.close()
