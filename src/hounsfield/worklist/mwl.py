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
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
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
Encoding = tuple[bool, bool]  # (implicit VR, little endian): how an answer will be written
# String VRs whose ASCII values pydicom writes as the plain ASCII text, "\\"-joined and padded to even length.
PLAIN_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
# Specific Character Set values (single, no code extensions) whose encodings leave ASCII unchanged; "" = default.
ASCII_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 126",
                            "ISO_IR 127", "ISO_IR 138", "ISO_IR 144", "ISO_IR 148", "ISO_IR 166", "ISO_IR 203",
                            "ISO_IR 192", "GB18030", "GBK"})


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

    def answer(self, item: dict[str, Any], encoding: Encoding | None = None) -> Dataset:
        """The C-FIND response identifier: every requested key with the item's value, zero-length when the item
        has none; in the item's character set. With the ``encoding`` the answer will be written in, ASCII text
        comes already encoded when the character set allows it (``_raw``): same bytes, a fraction of the cost."""
        charset = item.get(_CHARSET)
        raw = encoding if _ascii_superset(charset) else None
        out = select_keys(self.identifier, item, raw=raw)
        if charset is not None:
            out[0x00080005] = _element(0x00080005, charset, raw=raw)
        return _marked(out, raw)


def _ascii_superset(charset: dict[str, Any] | None) -> bool:
    """Whether the item's Specific Character Set (DICOM JSON entry, None when absent) encodes ASCII text as
    ASCII: a single value that is not an ISO 2022 code extension."""
    values = (charset or {}).get("Value") or []
    return len(values) <= 1 and (values[0] if values else "") in ASCII_CHARSETS


def _raw(tag: int, vr: str, values: list[Any]) -> RawDataElement | None:
    """The element already encoded, when its VR is a string VR and every value is ASCII text: these bytes are
    exactly what pydicom writes in any transfer syntax and ASCII-superset character set, and writing them
    costs a fraction of pydicom's per-VR encoders (the bulk of a C-FIND answer's cost). None otherwise."""
    if vr not in PLAIN_VRS:
        return None
    texts = [pn_text(v) if isinstance(v, dict) else v for v in values] if vr == "PN" else values
    if not all(isinstance(t, str) and t.isascii() for t in texts):
        return None
    data = "\\".join(texts).encode()
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True, True, False)


def _marked(ds: Dataset, raw: Encoding | None) -> Dataset:
    """``ds`` declared as read in ``raw``, so pydicom writes its raw elements as they are instead of decoding
    them (it decodes whenever a dataset's original encoding or character set differs from the written one)."""
    if raw is not None:
        ds.set_original_encoding(*raw, character_encoding=ds._character_set)
    return ds


def _element(tag: int, entry: dict[str, Any], *, raw: Encoding | None = None) -> DataElement | RawDataElement:
    """A DataElement from its DICOM JSON entry, values taken as they are (they were valid when stored): much
    faster than ``DataElement.from_json``, which matters for answers streamed by the thousand. With ``raw``
    (the answer's encoding, the item in an ASCII-superset character set) ASCII text comes already encoded."""
    vr = entry["vr"]
    encoded = _raw(tag, vr, entry.get("Value") or []) if raw and "InlineBinary" not in entry else None
    if encoded is not None:
        return encoded
    if "InlineBinary" in entry or "BulkDataURI" in entry:
        return DataElement.from_json(Dataset, f"{tag:08X}", vr, entry.get("InlineBinary"), "InlineBinary")
    values = entry.get("Value") or []
    if vr == "SQ":
        value: Any = Sequence([_dataset(item, raw=raw) for item in values])
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


def _dataset(js: dict[str, Any], *, raw: Encoding | None = None) -> Dataset:
    out = Dataset()
    for key, entry in js.items():
        tag = int(key, 16)
        out[tag] = _element(tag, entry, raw=raw)
    return _marked(out, raw)


def _empty(tag: int, vr: str, *, raw: Encoding | None) -> DataElement | RawDataElement:
    """A zero-length element (an empty sequence for SQ)."""
    encoded = _raw(tag, vr, []) if raw else None
    if encoded is not None:
        return encoded
    return DataElement(tag, vr, Sequence() if vr == "SQ" else None, already_converted=True,
                       validation_mode=config.IGNORE)


def select_keys(requested: Dataset, stored: dict[str, Any], *, raw: Encoding | None = None) -> Dataset:
    """The requested attributes of ``stored`` (DICOM JSON); a sequence key with an item selects within each
    stored item, a zero-length one (or one with an empty item) returns the whole stored sequence. ``raw``: the
    encoding the result will be written in, ``stored`` being in an ASCII-superset character set (ASCII text
    then comes already encoded)."""
    out = Dataset()
    for elem in requested:
        tag = elem.tag
        if tag.group in (0x0000, 0x0002) or tag in _NEVER_MATCHED:
            continue
        entry = stored.get(f"{int(tag):08X}")
        wanted = list(elem.value or []) if elem.VR == "SQ" else []
        if entry is None:
            out[tag] = _empty(tag, elem.VR, raw=raw)
        elif entry["vr"] == "SQ" and wanted and len(wanted[0]):
            items = [select_keys(wanted[0], item, raw=raw) for item in entry.get("Value") or []]
            out[tag] = DataElement(tag, "SQ", Sequence(items), already_converted=True,
                                   validation_mode=config.IGNORE)
        else:
            out[tag] = _element(tag, entry, raw=raw)
    return _marked(out, raw)


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
