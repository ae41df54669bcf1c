"""hounsfield and dcmtk's wlmscpfs serve the same items and give the same answers: hounsfield's export served
by wlmscpfs, and dcmtk's example worklists imported into hounsfield."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from support import dcmtk, free_port
from test_worklist_common import TODAY, add_item, clear_worklist, days, modality_query, mwl_find, ymd

KEYS = ("PatientID", "PatientName", "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID",
        "RequestedProcedureDescription", "PatientBirthDate", "PatientSex")
STEP_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
             "ScheduledProcedureStepStartTime", "ScheduledProcedureStepID", "ScheduledPerformingPhysicianName",
             "ScheduledProcedureStepDescription", "ScheduledStationName", "ScheduledProcedureStepLocation")


def _signature(answer: Dataset) -> tuple:
    step = answer.ScheduledProcedureStepSequence[0]
    return (tuple(str(answer.get(k, "") or "") for k in KEYS) +
            tuple(str(step.get(k, "") or "") for k in STEP_KEYS))


class Wlmscpfs:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([dcmtk("wlmscpfs"), "-dfp", str(root), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                mwl_find(self.port, modality_query(PatientID="none"), aet="WLAET")
                return
            except AssertionError:
                time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def server(shared_server):
    """One server per module and backend; each test starts with an empty worklist."""
    clear_worklist(shared_server.url)
    return shared_server


def _compare(server, wl_port: int, queries: dict[str, Dataset]) -> None:
    for name, query in queries.items():
        ours, status = mwl_find(server.dicom_port, query)
        theirs, their_status = mwl_find(wl_port, query, aet="WLAET")
        assert status == their_status == 0, name
        assert sorted(map(_signature, ours)) == sorted(map(_signature, theirs)), name


def _queries(first: Dataset) -> dict[str, Dataset]:
    step = first.ScheduledProcedureStepSequence[0]
    return {
        "universal": modality_query(),
        "patient id": modality_query(PatientID=str(first.PatientID)),
        "name wildcard": modality_query(PatientName=str(first.PatientName)[:3] + "*"),
        "modality": modality_query(Modality=str(step.Modality)),
        "station": modality_query(ScheduledStationAETitle=str(step.ScheduledStationAETitle[0]
                                                              if step["ScheduledStationAETitle"].VM > 1
                                                              else step.ScheduledStationAETitle)),
        "date range": modality_query(ScheduledProcedureStepStartDate=f"{ymd(days(-1))}-{ymd(days(6))}"),
        "date-time range": modality_query(ScheduledProcedureStepStartDate="19950101-19961231",
                                          ScheduledProcedureStepStartTime="090000-160000"),
    }


def test_export_served_by_wlmscpfs_answers_the_same(server, tmp_path: Path) -> None:
    for i, (station, start, mod) in enumerate([("CT1", TODAY.isoformat() + " 08:00", "CT"),
                                               ("CT2", TODAY.isoformat() + " 11:15", "CT"),
                                               ("MR1", days(2).isoformat() + " 13:30", "MR"),
                                               ("US1", days(9).isoformat() + " 07:45", "US")]):
        add_item(server.url, patient_id=f"P{i}", patient_name=f"PATIENT^{i}", station_aet=station, start=start,
                 modality=mod, accession_number=f"ACC{i}", requested_procedure_description="PROC",
                 step_description="STEP", patient_birth_date="1970-01-0" + str(i + 1), patient_sex="F")
    root = tmp_path / "wl"
    out = server.cli("worklist", "export", str(root / "WLAET")).stdout
    assert "exported 4 items" in out
    wl = Wlmscpfs(root)
    try:
        first = mwl_find(server.dicom_port, modality_query(PatientID="P0"))[0][0]
        _compare(server, wl.port, _queries(first))
    finally:
        wl.stop()


@pytest.mark.parametrize("flavour", ["dcmtk", "orthanc"])
def test_example_worklists_import_and_answer_as_wlmscpfs(server, shared_data: Path, tmp_path: Path,
                                                         flavour: str) -> None:
    root = tmp_path / "wl"
    (root / "WLAET").mkdir(parents=True)
    (root / "WLAET" / "lockfile").touch()
    for f in sorted((shared_data / "worklists" / flavour).glob("*.wl")):
        shutil.copy(f, root / "WLAET")
    out = server.cli("worklist", "import", str(root / "WLAET")).stdout
    assert "imported 5 items" in out
    again = server.cli("worklist", "import", str(root / "WLAET")).stdout
    assert "imported 0 items; 5 already present" in again
    wl = Wlmscpfs(root)
    try:
        first = mwl_find(wl.port, modality_query(AccessionNumber="00000"), aet="WLAET")[0][0]
        _compare(server, wl.port, _queries(first))
    finally:
        wl.stop()
