"""A worklist item as a dataset: validation, generated identifiers, character set, and its index columns.

An item is a Modality Worklist Information Model dataset (PS3.4 K.6.1.2.2) whose ScheduledProcedureStepSequence
holds exactly one item: a request with several steps is split into one item per step (``split_steps``).
"""

from __future__ import annotations

import copy
import datetime
import re
import secrets
from typing import Any, Iterator

from pydicom import config
from pydicom.charset import convert_encodings
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid
from pydicom.valuerep import validate_value

from hounsfield import matching
from hounsfield.dicomfile import pack_json, unpack_json
from hounsfield.errors import InvalidDataset
from hounsfield.worklist.status import status_of

STEPS = "ScheduledProcedureStepSequence"
TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}
REQUIRED = ("PatientID", "PatientName")
REQUIRED_STEP = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate")
UTF8 = "ISO_IR 192"
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_VR_LINK = re.compile(r"\s*Please see <[^>]*>.*$", re.S)


class InvalidItem(InvalidDataset):
    """An item that cannot be scheduled; ``field`` names the attribute ("Seq[0].Keyword")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def _elements(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, element) of every element, depth first, sequence items as "Seq[i].Keyword"."""
    for elem in ds:
        path = prefix + (elem.keyword or f"{int(elem.tag):08X}")
        yield path, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                yield from _elements(item, f"{path}[{i}].")


def _check_value(path: str, vr: str, value: Any) -> None:
    values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    for v in values:
        if v is None or v == "":
            continue
        try:
            validate_value(vr, str(v) if vr in ("IS", "DS", "PN") else v, config.RAISE)
        except ValueError as exc:
            raise InvalidItem(path, _VR_LINK.sub("", str(exc))) from None
        if vr in ("DA", "TM", "DT") and not getattr(matching, {"DA": "normalize_date", "TM": "normalize_time",
                                                               "DT": "normalize_datetime"}[vr])(str(v)):
            raise InvalidItem(path, f"{v!r} is not a valid {vr} value")
        if vr == "DA":
            _real_date(path, str(v))


def _real_date(path: str, value: str) -> None:
    try:
        datetime.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        raise InvalidItem(path, f"{value!r} is not a calendar date") from None


def _has(ds: Dataset, keyword: str) -> bool:
    return keyword in ds and ds[keyword].value not in (None, "", [])


def validate(ds: Dataset, *, strict: bool = True) -> None:
    """Raise ``InvalidItem`` for a value that breaks its VR (length, characters, date) or, when ``strict``, a
    required attribute that is missing (PatientID, PatientName and, in every step, Modality, station, date)."""
    if not ds.get(STEPS):
        raise InvalidItem(STEPS, "at least one scheduled procedure step is required")
    for path, elem in _elements(ds):
        if elem.VR != "SQ" and elem.tag.group != 0x0002:
            _check_value(path, elem.VR, elem.value)
    if strict:
        for keyword in REQUIRED:
            if not _has(ds, keyword):
                raise InvalidItem(keyword, "is required")
        for i, step in enumerate(ds[STEPS].value):
            for keyword in REQUIRED_STEP:
                if not _has(step, keyword):
                    raise InvalidItem(f"{STEPS}[{i}].{keyword}", "is required")


def split_steps(ds: Dataset) -> list[Dataset]:
    """One dataset per scheduled procedure step, each carrying the whole request and that one step."""
    steps = list(ds.get(STEPS) or [])
    out = []
    for step in steps:
        one = copy.deepcopy(ds) if len(steps) > 1 else ds
        one[STEPS].value = [step]
        out.append(one)
    return out


def step_of(ds: Dataset) -> Dataset:
    steps = ds.get(STEPS) or []
    return steps[0] if steps else Dataset()


def new_id() -> str:
    """A short identifier for SH attributes (Requested Procedure ID, Scheduled Procedure Step ID)."""
    return secrets.token_hex(6).upper()


def complete(ds: Dataset, *, generate_ids: bool) -> Dataset:
    """Fill what the item must have: a Study Instance UID always; with ``generate_ids`` also the requested
    procedure and step IDs and the step status SCHEDULED."""
    if not _has(ds, "StudyInstanceUID"):
        ds.StudyInstanceUID = generate_uid()
    if generate_ids:
        if not _has(ds, "RequestedProcedureID"):
            ds.RequestedProcedureID = str(ds.get("AccessionNumber") or "") or new_id()
        for step in ds[STEPS].value:
            if not _has(step, "ScheduledProcedureStepID"):
                step.ScheduledProcedureStepID = new_id()
            if not _has(step, "ScheduledProcedureStepStatus"):
                step.ScheduledProcedureStepStatus = "SCHEDULED"
    _fix_charset(ds)
    return ds


def _encodable(ds: Dataset, encodings: list[str]) -> bool:
    for _, elem in _elements(ds):
        if elem.VR not in TEXT_VRS or not elem.value:
            continue
        values = elem.value if elem.VM > 1 else [elem.value]
        for value in values:
            text = str(value)
            if not text.isascii() and not all(any(_encodes(c, e) for e in encodings) for c in set(text)):
                return False
    return True


def _encodes(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
        return True
    except (UnicodeError, LookupError):
        return False


def _fix_charset(ds: Dataset) -> None:
    """Keep the item's Specific Character Set when it can encode every value, else use UTF-8 (ISO_IR 192)."""
    declared = ds.get("SpecificCharacterSet")
    names = list(declared) if isinstance(declared, (list, tuple, MultiValue)) else [declared or ""]
    try:
        encodings = convert_encodings(names)
    except LookupError:
        encodings = []
    if encodings and _encodable(ds, encodings):
        return
    if declared or not _encodable(ds, ["ascii"]):
        ds.SpecificCharacterSet = UTF8


def _tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


def _json_values(js: dict[str, Any], keyword: str) -> list[Any]:
    """The values of an element of a DICOM JSON dataset, PN as "Alphabetic=Ideographic=Phonetic" text."""
    entry = js.get(_tag(keyword), {})
    values = entry.get("Value") or []
    if entry.get("vr") != "PN":
        return values
    return [pn_text(v) for v in values]


def pn_text(value: dict[str, str]) -> str:
    """A PN value of DICOM JSON ({"Alphabetic": ..., "Ideographic": ...}) as DICOM text "A=I=P"."""
    return "=".join(value.get(g, "") for g in _PN_GROUPS).rstrip("=")


def _norm(js: dict[str, Any], keyword: str, vr: str) -> str:
    return matching.normalize_value(vr, [str(v) for v in _json_values(js, keyword)])


def columns(js: dict[str, Any]) -> dict[str, str]:
    """The index columns of a one-step item (DICOM JSON), normalised for matching."""
    steps = _json_values(js, STEPS)
    step = steps[0] if steps else {}
    return {
        "patient_id": _norm(js, "PatientID", "LO"),
        "issuer_of_patient_id": _norm(js, "IssuerOfPatientID", "LO"),
        "patient_name": _norm(js, "PatientName", "PN"),
        "patient_birth_date": _norm(js, "PatientBirthDate", "DA"),
        "patient_sex": _norm(js, "PatientSex", "CS"),
        "accession_number": _norm(js, "AccessionNumber", "SH"),
        "requested_procedure_id": _norm(js, "RequestedProcedureID", "SH"),
        "study_instance_uid": _norm(js, "StudyInstanceUID", "UI"),
        "referring_physician_name": _norm(js, "ReferringPhysicianName", "PN"),
        "requesting_physician": _norm(js, "RequestingPhysician", "PN"),
        "modality": _norm(step, "Modality", "CS"),
        "station_aet": matching.normalize_multi_value("AE", [str(v) for v in
                                                              _json_values(step, "ScheduledStationAETitle")]),
        "station_name": _norm(step, "ScheduledStationName", "SH"),
        "start_date": _norm(step, "ScheduledProcedureStepStartDate", "DA"),
        "start_time": _norm(step, "ScheduledProcedureStepStartTime", "TM"),
        "performing_physician": _norm(step, "ScheduledPerformingPhysicianName", "PN"),
        "sps_id": _norm(step, "ScheduledProcedureStepID", "SH"),
        "sps_location": _norm(step, "ScheduledProcedureStepLocation", "SH"),
    }


def row(ds: Dataset, *, origin: str) -> dict[str, Any]:
    """The values of a new index row for a one-step item (its status from the step, SCHEDULED when absent)."""
    js = ds.to_json_dict()
    return {**columns(js), "status": status_of(step_of(ds)), "origin": origin, "attrs": pack_json(js)}


def pack(ds: Dataset) -> bytes:
    return pack_json(ds.to_json_dict())


def unpack(blob: bytes) -> Dataset:
    return Dataset.from_json(unpack_json(blob))
