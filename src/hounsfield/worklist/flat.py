"""The friendly flat JSON form of an item ({"patient_id": ..., "modality": ..., "start": "2026-11-22 09:30"})
and its mapping to and from the DICOM dataset. One table (``FIELDS``) drives both directions, the REST schema
and the CLI flags."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom import config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from hounsfield.worklist.items import InvalidItem, label, step_of, value_problem


@dataclass(frozen=True)
class Field:
    name: str
    keyword: str
    vr: str
    help: str
    step: bool = False  # lives in the ScheduledProcedureStepSequence item
    required: bool = False
    many: bool = False  # a list of codes (SQ fields only; the others hold one code)

    @property
    def label(self) -> str:
        """What the web form and the error messages call the field (``items.LABELS``)."""
        return label(self.keyword)


FIELDS: tuple[Field, ...] = (
    Field("patient_id", "PatientID", "LO", "Patient ID", required=True),
    Field("patient_name", "PatientName", "PN", "Patient name, DICOM form FAMILY^GIVEN^MIDDLE", required=True),
    Field("issuer_of_patient_id", "IssuerOfPatientID", "LO", "Issuer of the patient ID"),
    Field("patient_birth_date", "PatientBirthDate", "DA", "Birth date, YYYY-MM-DD or YYYYMMDD"),
    Field("patient_sex", "PatientSex", "CS", "M, F or O"),
    Field("patient_weight", "PatientWeight", "DS", "Weight in kg"),
    Field("patient_size", "PatientSize", "DS", "Height in m"),
    Field("medical_alerts", "MedicalAlerts", "LO", "Medical alerts"),
    Field("allergies", "Allergies", "LO", "Contrast or other allergies"),
    Field("patient_comments", "PatientComments", "LT", "Comments on the patient"),
    Field("accession_number", "AccessionNumber", "SH", "Accession number of the imaging service request"),
    Field("requesting_physician", "RequestingPhysician", "PN", "Requesting physician"),
    Field("referring_physician_name", "ReferringPhysicianName", "PN", "Referring physician"),
    Field("admission_id", "AdmissionID", "LO", "Admission ID"),
    Field("requested_procedure_id", "RequestedProcedureID", "SH", "Requested procedure ID (generated if absent)"),
    Field("requested_procedure_description", "RequestedProcedureDescription", "LO", "Requested procedure"),
    Field("requested_procedure_priority", "RequestedProcedurePriority", "SH", "STAT, HIGH, ROUTINE, MEDIUM or LOW"),
    Field("requested_procedure_code", "RequestedProcedureCodeSequence", "SQ", "Requested procedure code"),
    Field("study_instance_uid", "StudyInstanceUID", "UI", "Study Instance UID (generated if absent)"),
    Field("specific_character_set", "SpecificCharacterSet", "CS",
          "Character set of the item, e.g. ISO_IR 100 (default: UTF-8 when needed)"),
    Field("modality", "Modality", "CS", "Modality, e.g. CT", step=True, required=True),
    Field("station_aet", "ScheduledStationAETitle", "AE", "AE title of the station that performs the step",
          step=True, required=True),
    Field("station_name", "ScheduledStationName", "SH", "Name of the station", step=True),
    Field("start", "ScheduledProcedureStepStartDate", "DA", "Start: YYYY-MM-DD HH:MM[:SS] (or the date alone)",
          step=True, required=True),
    Field("performing_physician", "ScheduledPerformingPhysicianName", "PN", "Scheduled performing physician",
          step=True),
    Field("step_id", "ScheduledProcedureStepID", "SH", "Scheduled procedure step ID (generated if absent)",
          step=True),
    Field("step_description", "ScheduledProcedureStepDescription", "LO", "Step description", step=True),
    Field("protocol_codes", "ScheduledProtocolCodeSequence", "SQ", "Scheduled protocol codes", step=True,
          many=True),
    Field("location", "ScheduledProcedureStepLocation", "SH", "Where the step takes place", step=True),
    Field("contrast_agent", "RequestedContrastAgent", "LO", "Requested contrast agent", step=True),
    Field("pre_medication", "PreMedication", "LO", "Pre-medication", step=True),
    Field("comments", "CommentsOnTheScheduledProcedureStep", "LT", "Comments on the step", step=True),
)
BY_NAME = {f.name: f for f in FIELDS}
BY_KEYWORD = {f.keyword: f for f in FIELDS}
START_TIME = "ScheduledProcedureStepStartTime"
_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
_START = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})(?:[ T](\d{2}):?(\d{2})(?::?(\d{2}))?)?")


def _date(keyword: str, text: str) -> str:
    match = _DATE.fullmatch(text.strip())
    if not match:
        raise InvalidItem(keyword, f"{text[:40]!r} is not a date (YYYY-MM-DD)")
    return "".join(match.groups())


def _start(text: str) -> tuple[str, str | None]:
    match = _START.fullmatch(text.strip())
    if not match:
        raise InvalidItem(BY_NAME["start"].keyword,
                          f"{text[:40]!r} is not a start date and time (YYYY-MM-DD HH:MM)")
    y, mo, d, h, mi, s = match.groups()
    return y + mo + d, None if h is None else h + mi + (s or "00")


def _codes(value: Any) -> list[Dataset]:
    out = []
    for code in value if isinstance(value, list) else [value]:
        item = Dataset()
        item.CodeValue = code.get("value", "")
        item.CodingSchemeDesignator = code.get("scheme", "")
        if code.get("meaning"):
            item.CodeMeaning = code["meaning"]
        out.append(item)
    return out


def _set(ds: Dataset, keyword: str, vr: str, value: Any) -> None:
    """Set without pydicom's assignment warning: ``items.validate`` reports bad values, naming the field."""
    ds.add(DataElement(tag_for_keyword(keyword), vr, value, validation_mode=config.IGNORE))


def _set_decimal(ds: Dataset, keyword: str, text: str) -> None:
    """A DS value: pydicom holds any text of other VRs for ``items.validate`` to report, but turns DS into
    floats at once and raises a bare ValueError for text that is no number (a weight of ":" was a 500 over
    REST, found by tests/test_fuzz_http.py); that is the field's fault, said as ``validate`` says it."""
    try:
        _set(ds, keyword, "DS", text)
    except ValueError:
        raise InvalidItem(keyword, value_problem("DS", text) or f"{text[:40]!r} is not a decimal number "
                                                                "(DS, PS3.5 6.2)") from None


def to_dataset(flat: dict[str, Any]) -> Dataset:
    """The item dataset of a flat dict (fields that are None or absent are left out)."""
    ds, step = Dataset(), Dataset()
    for name, value in flat.items():
        field = BY_NAME.get(name)
        if field is None:
            raise InvalidItem(name, "unknown field")
        if value is None:
            continue
        target = step if field.step else ds
        if name == "start":
            day, time = _start(str(value))
            _set(target, field.keyword, "DA", day)
            if time is not None:
                _set(target, START_TIME, "TM", time)
        elif field.vr == "SQ":
            _set(target, field.keyword, "SQ", _codes(value))
        elif field.vr == "DA":
            _set(target, field.keyword, "DA", _date(field.keyword, str(value)))
        elif field.vr == "DS":
            _set_decimal(target, field.keyword, str(value))
        else:
            _set(target, field.keyword, field.vr, value)
    if len(step):
        ds.ScheduledProcedureStepSequence = [step]
    return ds


def _plain(field: Field, elem: Any) -> Any:
    if elem.VR == "SQ":
        codes = [{"value": str(i.get("CodeValue", "")), "scheme": str(i.get("CodingSchemeDesignator", "")),
                  "meaning": str(i.get("CodeMeaning", ""))} for i in elem.value or []]
        return codes if field.many else next(iter(codes), None)
    if elem.VM > 1:
        return "\\".join(str(v) for v in elem.value)
    return None if elem.value in (None, "") else str(elem.value)


def from_dataset(ds: Dataset) -> dict[str, Any]:
    """The flat dict of an item (fields the item lacks are None)."""
    step = step_of(ds)
    out: dict[str, Any] = {}
    for field in FIELDS:
        source = step if field.step else ds
        out[field.name] = _plain(field, source[field.keyword]) if field.keyword in source else None
    day = out["start"]
    if day:
        time = str(step.get(START_TIME) or "")
        clock = f" {time[:2]}:{time[2:4]}" if len(time) >= 4 else ""
        seconds = f":{time[4:6]}" if clock and time[4:6] not in ("", "00") else ""
        out["start"] = f"{day[:4]}-{day[4:6]}-{day[6:8]}{clock}{seconds}"
    if out["patient_birth_date"]:
        b = out["patient_birth_date"]
        out["patient_birth_date"] = f"{b[:4]}-{b[4:6]}-{b[6:8]}" if len(b) == 8 else b
    return out


def field_name(path: str) -> str:
    """The flat field an item path names ("ScheduledProcedureStepSequence[0].Modality" → "modality")."""
    keyword = path.split(".")[-1].split("[")[0]
    if keyword in (START_TIME,):
        return "start"
    field = BY_KEYWORD.get(keyword)
    return field.name if field is not None else path
