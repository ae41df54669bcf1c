"""Shared helpers of the worklist tests (no tests here): items through REST, MWL queries through pynetdicom
and dcmtk's findscu, MPPS messages."""

from __future__ import annotations

import subprocess
import time
from datetime import date, timedelta
from typing import Any, Callable
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind as MWL
from support import dcmtk, dcmtk_env

TODAY = date.today()


def eventually(get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """``get()`` once ``ok`` holds for it (or the last try after ``timeout`` seconds): for what the server writes
    right after it answers (the MWL query log) or indexes in the background (received images)."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


def add_item(base_url: str, **fields) -> dict:
    """Schedule through the REST API; returns the created item."""
    body = {"patient_id": "P1", "patient_name": "DOE^JANE", "modality": "CT", "station_aet": "CT1",
            "start": f"{TODAY.isoformat()} 09:30", **fields}
    r = requests.post(f"{base_url}/api/worklist/items", json=body, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def clear_worklist(base_url: str) -> None:
    """Delete every worklist item (each status), so that a test on a shared server starts with an empty
    worklist, as on a server of its own."""
    while True:
        page = requests.get(f"{base_url}/api/worklist/items", params={"limit": 10000}, timeout=30).json()
        for item in page["items"]:
            r = requests.delete(f"{base_url}/api/worklist/items/{item['id']}", timeout=30)
            assert r.status_code == 200, r.text
        if page["total"] <= len(page["items"]):
            break
    assert requests.get(f"{base_url}/api/worklist/items", timeout=30).json()["total"] == 0


def query_log_total(base_url: str) -> int:
    """How many MWL queries the server has logged so far."""
    return requests.get(f"{base_url}/api/worklist/queries", params={"limit": 1}, timeout=30).json()["total"]


def modality_query(**keys) -> Dataset:
    """The identifier a modality sends: the usual return keys, with ``keys`` set (step keys inside the SPS)."""
    step_keys = {"Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                 "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
                 "ScheduledProcedureStepDescription", "ScheduledProcedureStepID", "ScheduledStationName",
                 "ScheduledProcedureStepLocation", "ScheduledProcedureStepStatus"}
    ds, sps = Dataset(), Dataset()
    for k in ("SpecificCharacterSet", "AccessionNumber", "PatientName", "PatientID", "PatientBirthDate",
              "PatientSex", "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription",
              "ReferringPhysicianName", "RequestedProcedurePriority"):
        setattr(ds, k, None)
    for k in step_keys:
        setattr(sps, k, None)
    for k, v in keys.items():
        setattr(sps if k in step_keys else ds, k, v)
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def mwl_find(port: int, query: Dataset, aet: str = "HOUNSFIELD", calling: str = "MODALITY1"
             ) -> tuple[list[Dataset], int]:
    """(answers, final status) of a pynetdicom MWL C-FIND."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    answers, final = [], None
    try:
        for status, ds in assoc.send_c_find(query, MWL):
            if status and status.Status in (0xFF00, 0xFF01):
                answers.append(ds)
            elif status:
                final = int(status.Status)
    finally:
        assoc.release()
    return answers, final


def findscu(port: int, query: Dataset, out_dir: Path, aet: str = "HOUNSFIELD") -> list[Dataset]:
    """dcmtk findscu -W: answers written by -X to ``out_dir`` and read back."""
    out_dir.mkdir(parents=True, exist_ok=True)
    qfile = out_dir / "query.dcm"
    query = Dataset(query)
    query.file_meta = FileMetaDataset()
    query.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    query.save_as(qfile, enforce_file_format=False, implicit_vr=False, little_endian=True)
    proc = subprocess.run([dcmtk("findscu"), "-W", "-aet", "MODALITY1", "-aec", aet, "-X", "-od", str(out_dir),
                           "127.0.0.1", str(port), str(qfile)], capture_output=True, text=True, env=dcmtk_env(),
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [dcmread(f) for f in sorted(out_dir.glob("rsp*.dcm"))]


def mpps(port: int, op: str, uid: str, ds: Dataset, aet: str = "HOUNSFIELD") -> int:
    """Send an MPPS N-CREATE or N-SET; returns the DIMSE status."""
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    try:
        if op == "create":
            status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, uid)
        else:
            status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, uid)
    finally:
        assoc.release()
    return int(status.Status)


def mpps_in_progress(item: dict) -> Dataset:
    ds = Dataset()
    ref = Dataset()
    ref.StudyInstanceUID = item["fields"]["study_instance_uid"]
    ref.ScheduledProcedureStepID = item["fields"]["step_id"]
    ref.AccessionNumber = item["fields"]["accession_number"] or ""
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PatientID = item["fields"]["patient_id"]
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = ymd(TODAY)
    ds.PerformedProcedureStepStartTime = "093500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    return ds


def days(n: int) -> date:
    return TODAY + timedelta(days=n)
