"""A Modality Worklist C-FIND identifier (PS3.4 K.6.1.2.2) turned into SQL conditions, a Python-side filter for
keys that are not columns, and the answer builder.

Keys held as columns are matched in SQL with ``matching.sql_*``; the Scheduled Procedure Step Start Date and
Time are matched together (C.2.2.2.5.4); any other non-empty key, at the top level or inside the
ScheduledProcedureStepSequence item, is matched in Python on the stored item (``matching.match_dataset``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from io import BytesIO
from struct import Struct
from typing import Any, Iterable

from pydicom import config
from pydicom.charset import convert_encodings
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName
from sqlalchemy import ColumnElement

from hounsfield import matching
from hounsfield.errors import InvalidQuery
from hounsfield.headerjson import LONG_VRS
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
    """A parsed MWL identifier: ``conditions`` for SQL, ``python_filter`` for the rest, ``encoded_answer`` (or
    ``answer``) per item."""

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

    @cached_property
    def return_keys(self) -> tuple[ReturnKey, ...]:
        """The keys every answer holds, in tag order: the requested ones and the item's Specific Character Set."""
        charset = ReturnKey(0x00080005, _CHARSET, "CS", None, optional=True)
        return tuple(sorted((*return_keys(self.identifier), charset), key=lambda k: k.tag))

    def encoded_answer(self, item: dict[str, Any], encoding: Encoding) -> bytes:
        """The C-FIND response identifier for a stored item (DICOM JSON), encoded in ``encoding`` (implicit VR,
        little endian) exactly as pydicom encodes the same dataset: every requested key with the item's value,
        zero-length when the item has none, plus the item's Specific Character Set, in which its text is
        written. This is what goes on the wire; building it costs a fraction of building a pydicom dataset."""
        return _Encoder(encoding, item.get(_CHARSET)).dataset(self.return_keys, item)

    def answer(self, item: dict[str, Any]) -> Dataset:
        """``encoded_answer`` as a pydicom dataset, for callers that do not send it on the wire."""
        return read_dataset(BytesIO(self.encoded_answer(item, (False, True))), False, True)


@dataclass(frozen=True)
class ReturnKey:
    """One requested key: its tag, its DICOM JSON key and requested VR (for a zero-length answer), and for a
    sequence key with a non-empty item the keys to return from each stored item (None: the whole sequence)."""

    tag: int
    key: str
    vr: str
    within: tuple[ReturnKey, ...] | None
    optional: bool = False  # left out, not zero-length, when the item lacks it


def return_keys(requested: Dataset) -> tuple[ReturnKey, ...]:
    """The keys an answer to ``requested`` returns (not group lengths, command or file meta elements, nor the
    Specific Character Set: that one is the item's)."""
    out = []
    for elem in requested:
        tag = elem.tag
        if tag.group in (0x0000, 0x0002) or tag.element == 0 or tag in _NEVER_MATCHED:
            continue
        within = None
        if elem.VR == "SQ":
            items = list(elem.value or [])
            within = return_keys(items[0]) if items and len(items[0]) else None
        vr = elem.VR.split(" or ")[0]  # an ambiguous VR (implicit VR request) for a zero-length answer
        out.append(ReturnKey(int(tag), f"{int(tag):08X}", vr, within))
    return tuple(out)


def _ascii_superset(charset: dict[str, Any] | None) -> bool:
    """Whether a Specific Character Set (DICOM JSON entry, None when absent) encodes ASCII text as ASCII: a
    single value that is not an ISO 2022 code extension."""
    values = (charset or {}).get("Value") or []
    return len(values) <= 1 and (values[0] if values else "") in ASCII_CHARSETS


class _Encoder:
    """Writes DICOM JSON as DICOM in one encoding, byte for byte as pydicom's ``write_dataset`` does (defined
    lengths, values padded to even length). ASCII text in an ASCII-superset character set is written here
    directly (the bulk of an MWL answer); any other element is written by pydicom itself."""

    def __init__(self, encoding: Encoding, charset: dict[str, Any] | None) -> None:
        self.implicit, self.little = encoding
        self.charset = charset
        self.plain_text = _ascii_superset(charset)
        order = "<" if self.little else ">"
        self._implicit = Struct(order + "HHI")
        self._short = Struct(order + "HH2sH")
        self._long = Struct(order + "HH2sHI")

    def header(self, tag: int, vr: str, length: int) -> bytes:
        if self.implicit:
            return self._implicit.pack(tag >> 16, tag & 0xFFFF, length)
        if vr in LONG_VRS:
            return self._long.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
        return self._short.pack(tag >> 16, tag & 0xFFFF, vr.encode(), length)

    def dataset(self, keys: Iterable[ReturnKey], stored: dict[str, Any]) -> bytes:
        """The ``keys`` of ``stored``: absent ones zero-length (optional ones left out)."""
        parts = []
        for key in keys:
            entry = stored.get(key.key)
            if entry is None:
                if not key.optional:
                    parts.append(self.element(key.tag, {"vr": key.vr}))
            elif key.within is not None and entry["vr"] == "SQ":
                items = [self.dataset(key.within, item) for item in entry.get("Value") or []]
                parts.append(self.sequence(key.tag, items))
            else:
                parts.append(self.element(key.tag, entry))
        return b"".join(parts)

    def whole(self, stored: dict[str, Any]) -> bytes:
        """Every element of a stored sequence item, in its own character set when it declares one."""
        encoder = self if _CHARSET not in stored else _Encoder((self.implicit, self.little), stored[_CHARSET])
        tags = sorted(int(key, 16) for key in stored)
        return b"".join(encoder.element(tag, stored[f"{tag:08X}"]) for tag in tags if tag & 0xFFFF or tag >> 16 <= 6)

    def sequence(self, tag: int, items: list[bytes]) -> bytes:
        body = b"".join(self._implicit.pack(0xFFFE, 0xE000, len(item)) + item for item in items)
        return self.header(tag, "SQ", len(body)) + body

    def element(self, tag: int, entry: dict[str, Any]) -> bytes:
        vr = entry["vr"]
        values = entry.get("Value") or []
        if vr == "SQ":
            return self.sequence(tag, [self.whole(item) for item in values])
        if self.plain_text and vr in PLAIN_VRS and "InlineBinary" not in entry and "BulkDataURI" not in entry:
            texts = [pn_text(v) if isinstance(v, dict) else v for v in values] if vr == "PN" else values
            if all(isinstance(t, str) and t.isascii() for t in texts):
                data = "\\".join(texts).encode()
                if len(data) % 2:
                    data += b"\0" if vr == "UI" else b" "
                if len(data) <= 0xFFFF or self.implicit or vr in LONG_VRS:
                    return self.header(tag, vr, len(data)) + data
        return self._by_pydicom(tag, entry)

    def _by_pydicom(self, tag: int, entry: dict[str, Any]) -> bytes:
        out = DicomBytesIO()
        out.is_implicit_VR, out.is_little_endian = self.implicit, self.little
        charset = (self.charset or {}).get("Value") or []
        write_data_element(out, _element(tag, entry), convert_encodings(charset) if charset else None)
        return out.getvalue()


def _element(tag: int, entry: dict[str, Any]) -> DataElement:
    """A (non-sequence) DataElement from its DICOM JSON entry, values taken as they are (they were valid when
    stored)."""
    vr = entry["vr"]
    if "InlineBinary" in entry or "BulkDataURI" in entry:
        return DataElement.from_json(Dataset, f"{tag:08X}", vr, entry.get("InlineBinary"), "InlineBinary")
    values = entry.get("Value") or []
    if vr == "PN":
        values = [PersonName(pn_text(v)) if isinstance(v, dict) else v for v in values]
    elif vr in ("IS", "DS"):
        values = [str(v) for v in values]
    elif vr == "AT":
        values = [int(v, 16) for v in values]
    value = None if not values else values[0] if len(values) == 1 else values
    return DataElement(tag, vr, value, already_converted=True, validation_mode=config.IGNORE)


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
