"""A worklist item as a dataset: the rules its values follow, generated identifiers, character set, and its index
columns.

An item is a Modality Worklist Information Model dataset (PS3.4 K.6.1.2.2) whose ScheduledProcedureStepSequence
holds exactly one item: a request with several steps is split into one item per step (``split_steps``).

A modality is sent exactly what is stored, so what is stored must be what a modality can read. Every way in
(REST in both forms, the web form, the CLI) upper-cases the values whose case the standard fixes (``normalise``)
and then checks the item (``validate``): the VR and the number of values of each attribute against the data
dictionary (PS3.6), each value against its VR (PS3.5 6.2: repertoire, length, format, PN components), the value
sets of the Modality Worklist attributes (PS3.3), and what a request must hold. A DICOM JSON body is checked
against the JSON model (PS3.18 F.2) before pydicom reads it (``from_json``). An error names the field by the
label its user sees (``LABELS``) and the rule by the section of the standard.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import math
import re
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Iterator

from pydicom.charset import convert_encodings
from pydicom.datadict import (
    dictionary_description,
    dictionary_has_tag,
    dictionary_VM,
    dictionary_VR,
    keyword_for_tag,
    tag_for_keyword,
)
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pydicom.valuerep import STANDARD_VR, PersonName

from hounsfield import matching, uids
from hounsfield.dicomfile import pack_json, unpack_json
from hounsfield.errors import InvalidDataset
from hounsfield.headerjson import BINARY_VRS, LONG_VRS, NUMBER_FORMATS
from hounsfield.worklist.status import STEP_STATUS, status_of

STEPS = "ScheduledProcedureStepSequence"
TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC"}
REQUIRED = ("PatientID", "PatientName")
REQUIRED_STEP = ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate")
UTF8 = "ISO_IR 192"
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")

# What people call the attributes: the labels of the web form (worklist.html), which the CLI and the flat form's
# errors use too. Other attributes go by their data dictionary name (PS3.6).
LABELS = {
    "PatientID": "Patient ID",
    "PatientName": "Patient name",
    "IssuerOfPatientID": "Issuer of patient ID",
    "PatientBirthDate": "Birth date",
    "PatientSex": "Sex",
    "PatientWeight": "Weight",
    "PatientSize": "Height",
    "MedicalAlerts": "Medical alerts",
    "Allergies": "Allergies",
    "PatientComments": "Patient comments",
    "AccessionNumber": "Accession number",
    "RequestingPhysician": "Requesting physician",
    "ReferringPhysicianName": "Referring physician",
    "AdmissionID": "Admission ID",
    "RequestedProcedureID": "Requested procedure ID",
    "RequestedProcedureDescription": "Requested procedure",
    "RequestedProcedurePriority": "Priority",
    "RequestedProcedureCodeSequence": "Requested procedure code",
    "StudyInstanceUID": "Study Instance UID",
    "SpecificCharacterSet": "Character set",
    STEPS: "Scheduled step",
    "Modality": "Modality",
    "ScheduledStationAETitle": "Station AE title",
    "ScheduledStationName": "Station name",
    "ScheduledProcedureStepStartDate": "Start",
    "ScheduledProcedureStepStartTime": "Start",
    "ScheduledPerformingPhysicianName": "Performing physician",
    "ScheduledProcedureStepID": "Step ID",
    "ScheduledProcedureStepDescription": "Step description",
    "ScheduledProtocolCodeSequence": "Protocol codes",
    "ScheduledProcedureStepLocation": "Location",
    "RequestedContrastAgent": "Contrast agent",
    "PreMedication": "Pre-medication",
    "CommentsOnTheScheduledProcedureStep": "Step comments",
}


def label(path: str) -> str:
    """What the user calls the attribute a path names ("ScheduledProcedureStepSequence[0].Modality" → "Modality"),
    an item nested in a sequence through its sequence ("Requested procedure code > Code Value"); a name that is no
    attribute (a flat field) comes back as it is. The one step item is no field of its own for the user."""
    keywords = [part.split("[")[0] for part in path.split(".")]
    if len(keywords) > 1 and keywords[0] == STEPS:
        keywords = keywords[1:]
    return " > ".join(_label(k) for k in keywords)


def _label(keyword: str) -> str:
    if keyword in LABELS:
        return LABELS[keyword]
    tag = tag_for_keyword(keyword) or (int(keyword, 16) if _HEX_TAG.fullmatch(keyword) else None)
    if tag is None:
        return keyword
    try:
        return dictionary_description(tag)
    except KeyError:
        return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class InvalidItem(InvalidDataset):
    """An item that cannot be scheduled: ``field`` is the attribute's path ("Seq[0].Keyword"), ``rule`` what the
    value breaks, with the section of the standard, and ``reason`` the two for a person, the field by its label."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        self.reason = f"{label(field)}: {rule}"
        super().__init__(f"{self.reason} ({field})")


# ---- the rules of the VRs (PS3.5 6.2, Table 6.2-1) ---------------------------------------------------------------

# The longest value of each VR that has a limit, in characters where Specific Character Set (0008,0005) may extend
# the repertoire, else in bytes (the same thing: those VRs are ASCII); PN per component group; UI in ``uids``.
MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "LT": 10240, "PN": 64,
              "SH": 16, "ST": 1024, "TM": 14}
# Control characters allowed in a value (PS3.5 6.1.3): ESC, for code extension, where (0008,0005) may extend the
# repertoire; TAB, LF, FF and CR too in the text VRs, which hold paragraphs; none in any other VR.
_TEXT_CONTROLS = "\t\n\x0c\r\x1b"
CONTROLS_ALLOWED = {"SH": "\x1b", "LO": "\x1b", "UC": "\x1b", "PN": "\x1b", "ST": _TEXT_CONTROLS,
                    "LT": _TEXT_CONTROLS, "UT": _TEXT_CONTROLS}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: no graphic character of any repertoire
_CONTROL_NAMES = {"\x00": "NUL", "\t": "TAB", "\n": "LF", "\x0c": "FF", "\r": "CR", "\x1b": "ESC", "\x7f": "DEL"}
# VRs of the extensible repertoire in which "\" is no character: it separates values (PS3.5 6.2, 6.4).
_NO_BACKSLASH = frozenset({"SH", "LO", "UC", "PN"})
# The format of the VRs of the Default Character Repertoire, as stored values (the range forms belong to queries,
# PS3.4 C.2.2.2.5); a trailing space pads a value to even length.
_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "AE": (re.compile(r"[\x20-\x5b\x5d-\x7e]*"), "printable ASCII without a backslash"),
    "AS": (re.compile(r"\d{3}[DWMY]"), "an age nnnD, nnnW, nnnM or nnnY"),
    "CS": (re.compile(r"[A-Z0-9 _]*"), "upper-case letters, digits, space and underscore"),
    "DA": (re.compile(r"(\d{4})(\d{2})(\d{2})"), "a date YYYYMMDD"),
    "DS": (re.compile(r" *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *"), "a decimal number"),
    "DT": (re.compile(r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)?)?)?)?"
                      r"([+-]\d{4})? ?"), "a date-time YYYYMMDDHHMMSS.FFFFFF&ZZXX"),
    "IS": (re.compile(r" *[+-]?\d+ *"), "an integer"),
    "TM": (re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d{1,6})?)?)? ?"), "a time HHMMSS.FFFFFF"),
    "UR": (re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]* *"), "a URI (RFC 3986)"),
}
# The range of the binary integer VRs (AT is a tag: two 16-bit numbers), and of IS.
_INT_RANGES = {"US": (0, 0xFFFF), "SS": (-0x8000, 0x7FFF), "UL": (0, 0xFFFFFFFF), "SL": (-0x80000000, 0x7FFFFFFF),
               "UV": (0, 2 ** 64 - 1), "SV": (-2 ** 63, 2 ** 63 - 1), "AT": (0, 0xFFFFFFFF)}
_IS_RANGE = (-0x80000000, 0x7FFFFFFF)
# Bytes per value of the binary VRs (OW is a stream of 16-bit words, and so on).
_WORD = {"OB": 1, "UN": 1, "OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# The longest value of an element whose explicit VR length field has 16 bits (PS3.5 7.1.2), values being even.
SHORT_LENGTH_MAX = 0xFFFE


def _shown(text: str) -> str:
    """A value quoted for a message, cut short: the message goes back to whoever sent a 10 MB string."""
    return repr(text[:40]) + ("…" if len(text) > 40 else "")


def _control(char: str) -> str:
    return f"0x{ord(char):02X}" + (f" ({_CONTROL_NAMES[char]})" if char in _CONTROL_NAMES else "")


def _date_problem(year: str, month: str | None, day: str | None) -> str | None:
    try:
        datetime.date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        return "not a calendar date"
    return None


def _time_problem(hour: str | None, minute: str | None, second: str | None) -> str | None:
    within = all(part is None or int(part) <= top for part, top in ((hour, 23), (minute, 59), (second, 60)))
    return None if within else "not a time of day"


def _format_problem(vr: str, match: re.Match[str], text: str) -> str | None:
    """What the format alone does not say: a real date and time, an integer in range, a finite number."""
    if vr == "DA":
        return _date_problem(*match.groups())
    if vr == "TM":
        return _time_problem(*match.groups())
    if vr == "DT":
        year, month, day, hour, minute, second, offset = match.groups()
        problem = _date_problem(year, month, day) or _time_problem(hour, minute, second)
        if not problem and offset and not -1200 <= int(offset) <= 1400:
            problem = "a UTC offset outside -1200 to +1400"
        return problem
    if vr == "IS":
        low, high = _IS_RANGE
        return None if low <= int(text) <= high else f"outside {low} to {high}"
    if vr == "DS":
        return None if math.isfinite(float(text)) else "beyond the range of a 64-bit floating point number"
    if vr == "AE" and not text.strip(" "):
        return "only spaces"
    return None


def _pn_problem(text: str) -> str | None:
    """PS3.5 6.2.1: at most three component groups (alphabetic, ideographic, phonetic), each of at most five
    components (family name, given name, middle name, prefix, suffix) and 64 characters."""
    groups = text.split("=")
    if len(groups) > 3:
        return f"{len(groups)} component groups, more than the 3 of PN (alphabetic, ideographic, phonetic; PS3.5 6.2.1)"
    for name, group in zip(_PN_GROUPS, groups):
        components = group.split("^")
        if len(components) > 5:
            return (f"{len(components)} components in its {name.lower()} group, more than the 5 of PN (family name, "
                    "given name, middle name, prefix, suffix; PS3.5 6.2.1)")
        if len(group) > MAX_LENGTH["PN"]:
            return (f"{len(group)} characters in its {name.lower()} group, more than the {MAX_LENGTH['PN']} PN "
                    "allows (PS3.5 6.2)")
    return None


def _text_problem(vr: str, text: str) -> str | None:
    """Why a value of a character string VR breaks it (PS3.5 6.2, Table 6.2-1), or None."""
    if vr == "UI":
        return uids.problem(text, strict=True)
    control = next((c for c in _CONTROL.findall(text) if c not in CONTROLS_ALLOWED.get(vr, "")), None)
    if control is not None:
        return f"control character {_control(control)}, which {vr} does not allow (PS3.5 6.1.3)"
    if vr in _NO_BACKSLASH and "\\" in text:
        return "a backslash, which separates values and so is no character of a value (PS3.5 6.2, 6.4)"
    if vr == "PN":
        return _pn_problem(text)
    limit = MAX_LENGTH.get(vr)
    if limit is not None and len(text) > limit:
        return f"{len(text)} characters, more than the {limit} {vr} allows (PS3.5 6.2)"
    if vr in _FORMATS:
        pattern, form = _FORMATS[vr]
        match = pattern.fullmatch(text)
        problem = _format_problem(vr, match, text) if match else f"not {form}"
        return None if problem is None else f"{_shown(text)} is {problem} ({vr}, PS3.5 6.2)"
    return None


def value_problem(vr: str, value: Any) -> str | None:
    """Why one value breaks its VR (PS3.5 6.2), or None: the one place for the rules of VRs in the worklist."""
    if vr in _INT_RANGES:
        low, high = _INT_RANGES[vr]
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{value!r} is not an integer ({vr}, PS3.5 6.2)"
        return None if low <= value <= high else f"{value} is outside {low} to {high} ({vr}, PS3.5 6.2)"
    if vr in ("FL", "FD"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if number else f"{value!r} is not a number ({vr}, PS3.5 6.2)"
    if vr in _WORD:
        if not isinstance(value, (bytes, bytearray)):
            return f"not binary data ({vr}, PS3.5 6.2)"
        size = _WORD[vr]
        return None if len(value) % size == 0 else \
            f"{len(value)} bytes, not a whole number of {8 * size}-bit values ({vr}, PS3.5 6.2)"
    number = vr in ("IS", "DS") and isinstance(value, (int, float)) and not isinstance(value, bool)
    if not isinstance(value, (str, PersonName)) and not number:
        return f"{type(value).__name__} where {vr} takes text (PS3.5 6.2)"
    return _text_problem(vr, str(value))


def _vm_allows(vm: str, count: int) -> bool:
    """Whether ``count`` values fit a data dictionary VM: "1", "1-3", "1-n", "2-2n" (pairs), "3-3n"..."""
    low, _, high = vm.partition("-")
    if not high:
        return count == int(low)
    if high.endswith("n"):
        return count >= int(low) and count % int(high[:-1] or 1) == 0
    return int(low) <= count <= int(high)


def _values(elem: DataElement) -> list[Any]:
    if elem.value is None or elem.value == "":
        return []
    return list(elem.value) if isinstance(elem.value, (list, tuple, MultiValue)) else [elem.value]


def _encoded_length(vr: str, values: list[Any]) -> int:
    """The bytes of the element's value, text counted as UTF-8 (the widest character set ``complete`` picks)."""
    if vr in NUMBER_FORMATS:
        size = len(values) * struct.calcsize(NUMBER_FORMATS[vr])
    elif vr == "AT":
        size = 4 * len(values)
    else:
        size = len("\\".join("" if v is None else str(v) for v in values).encode("utf-8"))
    return size + size % 2


# ---- the value sets of the Modality Worklist attributes (PS3.3) ---------------------------------------------------

@dataclass(frozen=True)
class ValueSet:
    """The values an attribute may take: Enumerated Values, or Defined Terms. An implementation may extend Defined
    Terms (PS3.5 6.3); this worklist extends none but the step statuses it writes itself (``status.STEP_STATUS``),
    since a modality asks with, and understands, the standard's terms."""

    terms: tuple[str, ...]
    source: str
    enumerated: bool = False

    def problem(self, text: str) -> str | None:
        if text in self.terms:
            return None
        kind = "Enumerated Values" if self.enumerated else "Defined Terms"
        shown = ", ".join(self.terms[:12]) + (", …" if len(self.terms) > 12 else "")
        return f"{_shown(text)} is not one of {shown} ({kind}, {self.source})"


# Modality (0008,0060): PS3.3 C.7.3.1.1.1, the terms not retired.
MODALITIES = (
    "CT", "MR", "CR", "DX", "US", "MG", "NM", "PT", "XA", "RF", "IO", "PX", "OT", "ES", "XC", "GM", "SM", "OP", "OPT",
    "ANN", "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CFM", "CTPROTOCOL", "DG", "DMS", "DOC", "ECG", "EEG", "EMG",
    "EOG", "EPS", "FID", "HC", "HD", "IOL", "IVOCT", "IVUS", "KER", "KO", "LEN", "LS", "M3D", "OAM", "OCT", "OPM",
    "OPTBSV", "OPTENF", "OPV", "OSS", "PA", "PLAN", "POS", "PR", "REG", "RESP", "RG", "RTDOSE", "RTIMAGE",
    "RTINTENT", "RTPLAN", "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SMR", "SR", "SRF", "STAIN",
    "TEXTUREMAP", "TG", "VA", "XAPROTOCOL",
)
VALUE_SETS = {
    "PatientSex": ValueSet(("M", "F", "O"), "PS3.3 C.7.1.1", enumerated=True),
    "Modality": ValueSet(MODALITIES, "PS3.3 C.7.3.1.1.1"),
    "RequestedProcedurePriority": ValueSet(("STAT", "HIGH", "ROUTINE", "MEDIUM", "LOW"), "PS3.3 C.4.11"),
    "ScheduledProcedureStepStatus": ValueSet(tuple(dict.fromkeys(
        ("SCHEDULED", "ARRIVED", "READY", "STARTED", "DEPARTED", *STEP_STATUS.values()))), "PS3.3 C.4.10"),
}
# Sequences of which the MWL IOD permits a single item.
SINGLE_ITEM = {"RequestedProcedureCodeSequence": "PS3.3 C.4.11"}
# The coded entries of the flat form; each needs its Code Value and Coding Scheme Designator (PS3.3 Table 8.8-1).
CODE_SEQUENCES = ("RequestedProcedureCodeSequence", "ScheduledProtocolCodeSequence")


# Per-tag data dictionary look-ups, cached: validating an item asks each of them several times per element, and
# pydicom answers each through a Tag conversion and a couple of dictionary searches.
_KEYWORDS: dict[int, str] = {}
_DICTIONARY: dict[int, tuple[list[str], str] | None] = {}
_CACHED_TAGS = 20000  # more than the data dictionary holds: tags sent that it does not know are not kept forever


def _keyword(tag: int) -> str:
    """``DataElement.keyword`` of ``tag`` (the data dictionary keyword, "" for a private or unknown one)."""
    keyword = _KEYWORDS.get(tag)
    if keyword is None:
        keyword = keyword_for_tag(tag) if dictionary_has_tag(tag) else ""
        if len(_KEYWORDS) < _CACHED_TAGS:
            _KEYWORDS[tag] = keyword
    return keyword


def _dictionary(tag: int) -> tuple[list[str], str] | None:
    """(VRs, VM) the data dictionary gives ``tag``, None for one it does not know."""
    if tag in _DICTIONARY:
        return _DICTIONARY[tag]
    try:
        known: tuple[list[str], str] | None = (dictionary_VR(tag).split(" or "), dictionary_VM(tag))
    except KeyError:
        known = None
    if len(_DICTIONARY) < _CACHED_TAGS:
        _DICTIONARY[tag] = known
    return known


def _elements(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, element) of every element, depth first, sequence items as "Seq[i].Keyword"."""
    for elem in ds:
        path = prefix + (_keyword(elem.tag) or f"{int(elem.tag):08X}")
        yield path, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                yield from _elements(item, f"{path}[{i}].")


def _has(ds: Dataset, keyword: str) -> bool:
    return keyword in ds and ds[keyword].value not in (None, "", [])


def incomplete_code(item: Dataset) -> bool:
    """Whether a coded entry lacks its Code Value or its Coding Scheme Designator (PS3.3 Table 8.8-1)."""
    return not _has(item, "CodeValue") or not _has(item, "CodingSchemeDesignator")


def _upper(value: Any) -> Any:
    return value.strip(" ").upper() if isinstance(value, str) else value


def normalise(ds: Dataset) -> None:
    """Upper-case (and trim) the values whose case the standard fixes, so that "ct", "m" or "stat" are taken as
    what they can only mean: every CS value (upper-case letters only, leading and trailing spaces not significant,
    PS3.5 6.2) and the attributes with a value set, whose terms are all upper case (Requested Procedure Priority
    is SH). ``validate`` then checks the result; no other value is changed."""
    for _, elem in _elements(ds):
        if elem.VR == "CS" or _keyword(elem.tag) in VALUE_SETS:
            values = elem.value
            elem.value = [_upper(v) for v in values] if isinstance(values, (list, MultiValue)) else _upper(values)


def _check_dictionary(path: str, elem: DataElement) -> None:
    """The VR and the number of values the data dictionary gives a standard attribute (PS3.6 Table 6-1); private
    and unknown attributes are taken as sent."""
    if elem.tag.is_private or elem.tag.element == 0:
        return
    known = _dictionary(elem.tag)
    if known is None:
        return
    vrs, vm = known
    if elem.VR not in vrs:
        raise InvalidItem(path, f"VR {elem.VR}, where the data dictionary gives {' or '.join(vrs)} (PS3.6)")
    if elem.VR != "SQ" and elem.VM and not _vm_allows(vm, elem.VM):
        raise InvalidItem(path, f"{elem.VM} values, where the data dictionary allows {vm} (PS3.6; a backslash "
                                "separates values, PS3.5 6.4)")


def _check_items(path: str, elem: DataElement) -> None:
    """What the IOD asks of the items of a sequence: how many, and complete coded entries."""
    items = list(elem.value or [])
    keyword = _keyword(elem.tag)
    if keyword in SINGLE_ITEM and len(items) > 1:
        raise InvalidItem(path, f"{len(items)} items, where only one is permitted ({SINGLE_ITEM[keyword]})")
    if keyword in CODE_SEQUENCES:
        for i, item in enumerate(items):
            if incomplete_code(item):
                raise InvalidItem(f"{path}[{i}]", "a coded entry needs its Code Value and Coding Scheme Designator "
                                                  "(PS3.3 Table 8.8-1)")


def _check_element(path: str, elem: DataElement, today: str) -> None:
    vr = elem.VR
    if vr not in STANDARD_VR:
        raise InvalidItem(path, f"VR {vr!r} is not a DICOM value representation (PS3.5 6.2)")
    _check_dictionary(path, elem)
    if vr == "SQ":
        _check_items(path, elem)
        return
    values = _values(elem)
    keyword = _keyword(elem.tag)
    for i, value in enumerate(values):
        problem = None if value is None or value == "" else value_problem(vr, value)
        if problem is None and keyword in VALUE_SETS and value not in (None, ""):
            problem = VALUE_SETS[keyword].problem(str(value))
        if problem is not None:
            raise InvalidItem(path, f"value {i + 1}: {problem}" if len(values) > 1 else problem)
    if vr not in LONG_VRS and (size := _encoded_length(vr, values)) > SHORT_LENGTH_MAX:
        raise InvalidItem(path, f"{size} bytes, more than the {SHORT_LENGTH_MAX} an element of VR {vr} holds "
                                "(16-bit length, PS3.5 7.1.2)")
    if keyword == "PatientBirthDate" and values and str(values[0]) > today:
        raise InvalidItem(path, f"{values[0]} is in the future (today is {today})")


def validate(ds: Dataset, *, strict: bool = True, today: datetime.date | None = None) -> None:
    """Raise ``InvalidItem`` for the first attribute that breaks a rule: its VR or number of values against the
    data dictionary, a value against its VR, a value outside the attribute's value set, a birth date after
    ``today``, a coded entry without code or scheme; and when ``strict`` a required attribute that is missing
    (PatientID, PatientName and, in every step, Modality, station, date). Call ``normalise`` first."""
    if not ds.get(STEPS):
        raise InvalidItem(STEPS, "at least one scheduled procedure step is required")
    day = (today or datetime.date.today()).strftime("%Y%m%d")
    for path, elem in _elements(ds):
        if elem.tag.group != 0x0002:
            _check_element(path, elem, day)
    if strict:
        for keyword in REQUIRED:
            if not _has(ds, keyword):
                raise InvalidItem(keyword, "is required")
        for i, step in enumerate(ds[STEPS].value):
            for keyword in REQUIRED_STEP:
                if not _has(step, keyword):
                    raise InvalidItem(f"{STEPS}[{i}].{keyword}", "is required")


# ---- DICOM JSON (PS3.18 F.2) ---------------------------------------------------------------------------------------

def from_json(js: dict[str, Any]) -> Dataset:
    """The item a DICOM JSON body describes, each attribute first checked against the JSON model (PS3.18 F.2):
    pydicom reads some malformed ones without a word (InlineBinary that is not base64 decodes to what its
    alphabet characters spell, a backslash inside one value makes two) and fails on others naming no attribute.
    ``validate`` then checks the values."""
    _check_json(js, "")
    return Dataset.from_json(js)


def _check_json(js: dict[str, Any], prefix: str) -> None:
    for key, element in js.items():
        if not isinstance(key, str) or not _HEX_TAG.fullmatch(key):
            raise InvalidItem(prefix + str(key)[:16], "not a tag: DICOM JSON names an attribute by 8 hex digits "
                                                      "(PS3.18 F.2.1.1)")
        path = prefix + (keyword_for_tag(int(key, 16)) or key.upper())
        if not isinstance(element, dict):
            raise InvalidItem(path, "not an attribute object (PS3.18 F.2.2)")
        vr = element.get("vr")
        if vr not in STANDARD_VR:
            raise InvalidItem(path, f"VR {str(vr)[:16]!r} is not a DICOM value representation (PS3.5 6.2)")
        extra = sorted(set(element) - {"vr", "Value", "InlineBinary", "BulkDataURI"})
        if extra:
            raise InvalidItem(path, f"{str(extra[0])[:16]!r} is no member of an attribute object (PS3.18 F.2.2)")
        if sum(k in element for k in ("Value", "InlineBinary", "BulkDataURI")) > 1:
            raise InvalidItem(path, "more than one of Value, InlineBinary and BulkDataURI (PS3.18 F.2.2)")
        if "BulkDataURI" in element:
            raise InvalidItem(path, "a BulkDataURI, which an item cannot refer to: send the value as InlineBinary "
                                    "(PS3.18 F.2.6, F.2.7)")
        if "InlineBinary" in element:
            _check_inline_binary(path, vr, element["InlineBinary"])
        if "Value" in element:
            _check_json_values(path, vr, element["Value"])


def _check_inline_binary(path: str, vr: str, text: Any) -> None:
    if vr not in BINARY_VRS:
        raise InvalidItem(path, f"InlineBinary, which only {', '.join(sorted(BINARY_VRS))} take (PS3.18 F.2.7)")
    try:
        if not isinstance(text, str):
            raise ValueError(text)
        base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidItem(path, "InlineBinary that is not base64 (PS3.18 F.2.7; RFC 4648 section 4)") from None


def _check_json_values(path: str, vr: str, values: Any) -> None:
    if not isinstance(values, list):
        raise InvalidItem(path, "a Value that is not an array (PS3.18 F.2.4)")
    if vr in BINARY_VRS:
        raise InvalidItem(path, f"a Value array, where VR {vr} is sent as InlineBinary (PS3.18 F.2.7)")
    for i, value in enumerate(values):
        if vr == "SQ":
            if not isinstance(value, dict):
                raise InvalidItem(path, f"item {i + 1} is not an object (PS3.18 F.2.4)")
            _check_json(value, f"{path}[{i}].")
            continue
        problem = None if value is None else _json_value_problem(vr, value)  # null: an empty value (F.2.5)
        if problem is not None:
            raise InvalidItem(path, f"value {i + 1}: {problem}" if len(values) > 1 else problem)


def _json_value_problem(vr: str, value: Any) -> str | None:
    """Whether one JSON value has the type PS3.18 F.2.3 gives its VR (the VR's own rules come in ``validate``)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if vr == "PN":
        groups = value.values() if isinstance(value, dict) and set(value) <= set(_PN_GROUPS) else None
        if groups is None or not all(isinstance(g, str) for g in groups):
            return "not a person name object of Alphabetic, Ideographic and Phonetic strings (PS3.18 F.2.2)"
        if any("=" in g or "\\" in g for g in groups):
            return "a component group holding '=' or '\\', which separate groups and values (PS3.5 6.2.1)"
        return None
    if vr in NUMBER_FORMATS:
        integer = isinstance(value, int) and not isinstance(value, bool)
        return None if integer or (number and vr in ("FL", "FD")) else f"not a JSON number of VR {vr} (PS3.18 F.2.3)"
    if vr in ("IS", "DS"):
        return None if number or isinstance(value, str) else "not a number or a string (PS3.18 F.2.3)"
    if vr == "AT":
        return None if isinstance(value, str) and _HEX_TAG.fullmatch(value) else \
            "not a tag of 8 hex digits (PS3.18 F.2.3)"
    if not isinstance(value, str):
        return f"not a string, as VR {vr} is sent (PS3.18 F.2.3)"
    if "\\" in value and vr not in matching.TEXT_VRS:
        return "a backslash, which separates values: send each value as an element of the array (PS3.18 F.2.4)"
    return None


# Values a copy of an element can share with the original: nothing changes them in place (DSfloat, IS, BaseTag
# and the date / time values are subclasses of these, PersonName keeps its text).
_IMMUTABLE = (str, int, float, bytes, PersonName, datetime.date, datetime.time, type(None))


def copied(ds: Dataset) -> Dataset:
    """A deep copy of an item, as ``copy.deepcopy`` makes it but five to ten times faster: ``deepcopy`` walks every
    attribute of every element, tag and value through its generic machinery (0.4 ms for an HL7 order's item,
    copied once per order, once per step and again by ``Batch.schedule``). Here each element is a new one, values
    of immutable types are shared, sequences are copied item by item, and anything else (a list of values)
    goes to ``deepcopy``. Not a plain ``Dataset`` (a ``FileDataset``, with its file meta and buffer): ``deepcopy``."""
    if type(ds) is not Dataset:
        return copy.deepcopy(ds)
    out = Dataset.__new__(Dataset)
    out.__dict__.update(ds.__dict__)
    out.__dict__.update(_dict={}, _private_blocks={})  # the private blocks name their dataset: made again on use
    for tag, elem in ds._dict.items():
        # a raw element (of a dataset read from a file) is converted first: deepcopy would keep it raw
        out._dict[tag] = copied_element(elem if isinstance(elem, DataElement) else ds[tag])
    return out


def copied_element(elem: DataElement) -> DataElement:
    """A deep copy of one element, as ``copied`` makes them."""
    new = DataElement.__new__(DataElement)
    new.__dict__.update(elem.__dict__)
    value = elem._value
    if isinstance(value, Sequence):
        items = Sequence([copied(item) for item in value])
        items.__dict__.update((k, v) for k, v in value.__dict__.items() if k != "_list")
        new._value = items
    elif not isinstance(value, _IMMUTABLE):
        new._value = copy.deepcopy(value)
    return new


def split_steps(ds: Dataset) -> list[Dataset]:
    """One dataset per scheduled procedure step, each carrying the whole request and that one step."""
    steps = list(ds.get(STEPS) or [])
    out = []
    for step in steps:
        one = copied(ds) if len(steps) > 1 else ds
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
        "placer_order_number": _order_number(js, "PlacerOrderNumberImagingServiceRequest"),
        "filler_order_number": _order_number(js, "FillerOrderNumberImagingServiceRequest"),
    }


ORDER_NUMBER_LENGTH = 64  # of the index columns (LO)


def order_number(text: str) -> str:
    """An order number as its index column holds it: stripped, as HL7 order messages are matched, and cut to the
    column (a longer one, of an imported item, is told apart on the stored item: ``Batch.items_of_order``)."""
    return text.strip()[:ORDER_NUMBER_LENGTH]


def _order_number(js: dict[str, Any], keyword: str) -> str:
    return order_number("\\".join("" if v is None else str(v) for v in _json_values(js, keyword)))


def row(ds: Dataset, *, origin: str) -> dict[str, Any]:
    """The values of a new index row for a one-step item (its status from the step, SCHEDULED when absent)."""
    js = ds.to_json_dict()
    return {**columns(js), "status": status_of(step_of(ds)), "origin": origin, "attrs": pack_json(js)}


def pack(ds: Dataset) -> bytes:
    return pack_json(ds.to_json_dict())


def unpack(blob: bytes) -> Dataset:
    return Dataset.from_json(unpack_json(blob))
