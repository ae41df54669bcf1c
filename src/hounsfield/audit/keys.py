"""What an audit event says of a DICOM dataset a service received (a C-FIND / C-GET / C-MOVE identifier, an MPPS):
the patient and the study it names, and its keys in words. Read from the dataset as received, without reading
any file or the index."""

from __future__ import annotations

from typing import Callable

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from hounsfield.worklist.mwl import summary

WILDCARDS = ("*", "?", "\\")  # PS3.4 C.2.2.2.4 wildcards, and a list of values


def exact(ds: Dataset, keyword: str) -> str:
    """The value of ``keyword`` when it names one thing (a single value, no wildcard); "" otherwise."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a value pydicom cannot decode names nothing
        return ""
    if value is None or isinstance(value, MultiValue):
        return ""
    text = str(value).strip()
    return "" if any(w in text for w in WILDCARDS) else text


def subject(ds: Dataset) -> dict[str, str]:
    """The ``record`` arguments naming the patient and the study of ``ds`` (those it names exactly)."""
    return {"patient_id": exact(ds, "PatientID"), "patient_name": exact(ds, "PatientName"),
            "study_instance_uid": exact(ds, "StudyInstanceUID")}


def described(prefix: str, ds: Dataset) -> Callable[[], str]:
    """An event's detail: ``prefix``, then the non-empty keys of ``ds`` ("PatientID=P1, Modality=CT"), put in
    words when the audit writer writes it (off the answer path; the caller must not change ``ds``)."""
    return lambda: f"{prefix}; keys {summary(ds.to_json_dict())}"
