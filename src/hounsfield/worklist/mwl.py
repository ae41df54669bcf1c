"""A Modality Worklist C-FIND identifier (PS3.4 K.6.1.2.2) turned into SQL conditions, a Python-side filter for
keys that are not columns, and the answer builder.

Keys held as columns are matched in SQL with ``matching.sql_*``; the Scheduled Procedure Step Start Date and
Time are matched together (C.2.2.2.5.4); any other non-empty key, at the top level or inside the
ScheduledProcedureStepSequence item, is matched in Python on the stored item (``matching.match_dataset``).
"""

from __future__ import annotations

import copy
from typing import Any

from pydicom import config
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName
from sqlalchemy import ColumnElement

from hounsfield import matching
from hounsfield.errors import InvalidQuery
from hounsfield.worklist.items import STEPS, pn_text
from hounsfield.worklist.models import WorklistItem as W

TOP_KEYS: dict[str, tuple[Any, str]] = {
    "PatientID": (W.patient_id, "LO"),
    "IssuerOfPatientID": (W.issuer_of_patient_id, "LO"),
    "PatientName": (W.patient_name, "PN"),
    "PatientBirthDate": (W.patient_birth_date, "DA"),
    "PatientSex": (W.patient_sex, "CS"),
    "AccessionNumber": (W.accession_number, "SH"),
    "RequestedProcedureID": (W.requested_procedure_id, "SH"),
    "StudyInstanceUID": (W.study_instance_uid, "UI"),
    "ReferringPhysicianName": (W.referring_physician_name, "PN"),
    "RequestingPhysician": (W.requesting_physician, "PN"),
}
STEP_KEYS: dict[str, tuple[Any, str]] = {
    "Modality": (W.modality, "CS"),
    "ScheduledStationName": (W.station_name, "SH"),
    "ScheduledPerformingPhysicianName": (W.performing_physician, "PN"),
    "ScheduledProcedureStepID": (W.sps_id, "SH"),
    "ScheduledProcedureStepLocation": (W.sps_location, "SH"),
}
STATION = "ScheduledStationAETitle"
START_DATE, START_TIME = "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"
_NEVER_MATCHED = {0x00080005}  # Specific Character Set
_CHARSET = "00080005"


def query_value(value: Any) -> Any:
    """A key's value as the matching functions take it: text, multiple values joined with "\\"; None if empty."""
    if value is None or value == "" or (isinstance(value, (list, MultiValue)) and not value):
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _step_item(identifier: Dataset) -> Dataset | None:
    """The single item of the ScheduledProcedureStepSequence key; None when the key is absent or universal."""
    if STEPS not in identifier:
        return None
    elem = identifier[STEPS]
    if elem.VR != "SQ":
        raise InvalidQuery(f"{STEPS} must be a sequence, not {elem.VR}")
    items = list(elem.value or [])
    if len(items) > 1:
        raise InvalidQuery(f"{STEPS} must hold a single item (PS3.4 C.2.2.2.6), not {len(items)}")
    return items[0] if items else None


class MwlQuery:
    """A parsed MWL identifier: ``conditions`` for SQL, ``python_filter`` for the rest, ``answer`` per item."""

    def __init__(self, identifier: Dataset, *, fuzzy_pn: bool = False) -> None:
        self.identifier = identifier
        self.fuzzy_pn = fuzzy_pn
        self.conditions: list[ColumnElement[bool]] = []
        self.python_filter = Dataset()
        step = _step_item(identifier)
        self._parse(identifier, TOP_KEYS, self.python_filter, skip={STEPS})
        if step is not None:
            rest = Dataset()
            self._parse_step(step, rest)
            if len(rest):
                self.python_filter.add_new(STEPS, "SQ", [rest])

    def _add(self, condition: ColumnElement[bool] | None) -> None:
        if condition is not None:
            self.conditions.append(condition)

    def _parse(self, ds: Dataset, columns: dict[str, tuple[Any, str]], rest: Dataset, skip: set[str]) -> None:
        for elem in ds:
            keyword = elem.keyword
            if elem.tag.group in (0x0000, 0x0002) or elem.tag in _NEVER_MATCHED or keyword in skip:
                continue
            if keyword in columns:
                column, vr = columns[keyword]
                self._add(matching.sql_condition(column, vr, query_value(elem.value), fuzzy_pn=self.fuzzy_pn))
            elif elem.VR == "SQ" and elem.value or elem.VR != "SQ" and query_value(elem.value) is not None:
                rest.add(copy.deepcopy(elem))

    def _parse_step(self, step: Dataset, rest: Dataset) -> None:
        if STATION in step:
            self._add(matching.sql_multi_value_condition(W.station_aet, "AE", query_value(step[STATION].value)))
        date = query_value(step[START_DATE].value) if START_DATE in step else None
        time = query_value(step[START_TIME].value) if START_TIME in step else None
        self._add(matching.sql_datetime_condition(W.start_date, W.start_time, date, time))
        self._parse(step, STEP_KEYS, rest, skip={STATION, START_DATE, START_TIME})

    def matches(self, item: dict[str, Any]) -> bool:
        """The Python-side keys (those that are not columns) against a stored item (DICOM JSON)."""
        if not len(self.python_filter):
            return True
        tags = [f"{int(elem.tag):08X}" for elem in self.python_filter]
        candidate = Dataset.from_json({t: item[t] for t in tags if t in item})
        return matching.match_dataset(self.python_filter, candidate, fuzzy_pn=self.fuzzy_pn)

    def answer(self, item: dict[str, Any]) -> Dataset:
        """The C-FIND response identifier: every requested key with the item's value, zero-length when the item
        has none; in the item's character set."""
        out = select_keys(self.identifier, item)
        if _CHARSET in item:
            out.add(_element(0x00080005, item[_CHARSET]))
        return out


def _element(tag: int, entry: dict[str, Any]) -> DataElement:
    """A DataElement from its DICOM JSON entry, values taken as they are (they were valid when stored): much
    faster than ``DataElement.from_json``, which matters for answers streamed by the thousand."""
    vr = entry["vr"]
    if "InlineBinary" in entry or "BulkDataURI" in entry:
        return DataElement.from_json(Dataset, f"{tag:08X}", vr, entry.get("InlineBinary"), "InlineBinary")
    values = entry.get("Value") or []
    if vr == "SQ":
        value: Any = Sequence([_dataset(item) for item in values])
    elif vr == "PN":
        value = [PersonName(pn_text(v)) for v in values]
    elif vr in ("IS", "DS"):
        value = [str(v) for v in values]
    elif vr == "AT":
        value = [int(v, 16) for v in values]
    else:
        value = values
    if vr != "SQ":
        value = None if not value else value[0] if len(value) == 1 else value
    return DataElement(tag, vr, value, already_converted=True, validation_mode=config.IGNORE)


def _dataset(js: dict[str, Any]) -> Dataset:
    out = Dataset()
    for key, entry in js.items():
        out.add(_element(int(key, 16), entry))
    return out


def select_keys(requested: Dataset, stored: dict[str, Any]) -> Dataset:
    """The requested attributes of ``stored`` (DICOM JSON); a sequence key with an item selects within each
    stored item, a zero-length one (or one with an empty item) returns the whole stored sequence."""
    out = Dataset()
    for elem in requested:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag in _NEVER_MATCHED:
            continue
        entry = stored.get(f"{int(elem.tag):08X}")
        wanted = list(elem.value or []) if elem.VR == "SQ" else []
        if entry is None:
            out.add(DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None,
                                already_converted=True, validation_mode=config.IGNORE))
        elif entry["vr"] == "SQ" and wanted and len(wanted[0]):
            items = [select_keys(wanted[0], item) for item in entry.get("Value") or []]
            out.add(DataElement(elem.tag, "SQ", Sequence(items), already_converted=True,
                                validation_mode=config.IGNORE))
        else:
            out.add(_element(int(elem.tag), entry))
    return out


# The attributes of a Scheduled Procedure Step item (PS3.4 K.6.1.2.2), for building identifiers from keywords.
STEP_ATTRIBUTES = frozenset({
    "Modality", "ScheduledStationAETitle", "ScheduledStationName", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate", "ScheduledProcedureStepEndTime",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription", "ScheduledProtocolCodeSequence",
    "ScheduledProcedureStepID", "ScheduledProcedureStepLocation", "ScheduledProcedureStepStatus",
    "PreMedication", "RequestedContrastAgent", "CommentsOnTheScheduledProcedureStep",
})
# What a modality typically asks for (the return keys of K.6.1.2.2 a worklist screen shows).
DEFAULT_KEYS = ("SpecificCharacterSet", "AccessionNumber", "PatientName", "PatientID", "PatientBirthDate",
                "PatientSex", "StudyInstanceUID", "RequestedProcedureID", "RequestedProcedureDescription",
                "RequestedProcedurePriority", "ReferringPhysicianName")
DEFAULT_STEP_KEYS = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                     "ScheduledProcedureStepStartTime", "ScheduledPerformingPhysicianName",
                     "ScheduledProcedureStepDescription", "ScheduledProcedureStepID", "ScheduledStationName",
                     "ScheduledProcedureStepLocation", "ScheduledProcedureStepStatus")


def identifier(keys: dict[str, str], *, return_keys: bool = True) -> Dataset:
    """An MWL identifier from {keyword: value}: step attributes go into the ScheduledProcedureStepSequence item;
    with ``return_keys`` the usual return keys are asked for too (zero-length)."""
    ds, step = Dataset(), Dataset()
    if return_keys:
        for keyword in DEFAULT_KEYS:
            setattr(ds, keyword, None)
        for keyword in DEFAULT_STEP_KEYS:
            setattr(step, keyword, None)
    for keyword, value in keys.items():
        if tag_for_keyword(keyword) is None:
            raise InvalidQuery(f"{keyword!r} is not a DICOM keyword")
        target = step if keyword in STEP_ATTRIBUTES else ds
        try:
            setattr(target, keyword, value if value != "" else None)
        except (ValueError, TypeError) as exc:
            raise InvalidQuery(f"{keyword}={value!r}: {exc}") from exc
    if return_keys or len(step):
        ds.ScheduledProcedureStepSequence = [step]
    return ds


def key_values(keys: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(keyword, value) of the non-empty keys of a DICOM JSON identifier, sequence items flattened."""
    out: list[tuple[str, str]] = []
    for tag, entry in keys.items():
        keyword = keyword_for_tag(int(tag, 16)) or tag
        values = entry.get("Value") or []
        if entry.get("vr") == "SQ":
            for item in values:
                out += key_values(item, prefix)
        elif values and tag != _CHARSET:
            text = "\\".join(pn_text(v) if isinstance(v, dict) else str(v) for v in values)
            out.append((prefix + keyword, text))
    return out


def summary(keys: dict[str, Any]) -> str:
    """"PatientID=P1, Modality=CT" from the DICOM JSON of a query (non-empty keys only, steps flattened)."""
    return ", ".join(f"{k}={v}" for k, v in key_values(keys)) or "(universal)"
