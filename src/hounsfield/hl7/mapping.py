"""HL7 segments to Modality Worklist attributes: orders (ORM^O01, v2.3.1; OMI^O23, v2.5.1), patient updates
(ADT^A08, ADT^A31) and merges (ADT^A40).

The mapping is IHE RAD TF-2's for Placer Order Management and Procedure Scheduled / Updated (RAD-2, RAD-4,
RAD-13: 4.4 and 4.13 for v2.3.1 with the ZDS segment, and the OMI^O23 tables of the HL7 v2.5.1 option with IPC
segments) as the dcm4chee-arc HL7 conformance statement implements it; the README's "HL7 orders" table lists
it field by field. What a field holds is read as HL7 v2.5.1 chapter 2.A defines its data type (CX, XPN, XCN, EI,
CE/CWE, TS/DTM, TQ); "" in a field of a patient update (2.5.3: a value of two double quotes) empties the
attribute. Each attribute remembers the field it came from (``Request.sources``), so that a value the worklist
refuses (``items.validate``) is answered by naming the HL7 field (``locate``).

Pure functions of a parsed message: nothing here reads or writes the worklist.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

import hl7
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from hounsfield.hl7.message import (
    DATA_TYPE_ERROR,
    DUPLICATE_KEY,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    Location,
    Message,
    application_error,
    repetitions,
    value,
)
from hounsfield.worklist.items import STEPS, InvalidItem, copied

NULL = '""'  # HL7 v2.5.1 2.5.3: the field's value is to be deleted
MAX_STEPS = 100  # steps (IPC segments, orders) one message may schedule
# HL7 Table 0001 Administrative Sex → Patient's Sex (0010,0040), PS3.3 C.7.1.1 (U, unknown: no value)
SEXES = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": ""}
# Priority (ORC-7.6 of TQ, HL7 Table 0027; TQ1-9, Table 0485) → Requested Procedure Priority (0040,1003),
# as IHE RAD TF-2 4.4 (RAD-4) and dcm4chee-arc map them
PRIORITIES = {"S": "STAT", "A": "HIGH", "R": "ROUTINE", "P": "HIGH", "C": "HIGH", "T": "MEDIUM", "PRN": "LOW"}
_TIMESTAMP = re.compile(r"(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})?(\d{2}(?:\.\d{1,4})?)?)?(?:[+-]\d{4})?")


@dataclass
class Request:
    """One scheduled procedure step of an order: the worklist item (patient, visit, request, one step), the
    HL7 field each attribute comes from, and which identifiers the message left to the receiver."""

    dataset: Dataset
    sources: dict[str, Location]
    missing: list[str] = field(default_factory=list)  # of StudyInstanceUID, RequestedProcedureID, step ID

    @property
    def step(self) -> Dataset:
        return self.dataset[STEPS].value[0]

    @property
    def step_id(self) -> str:
        return str(self.step.get("ScheduledProcedureStepID") or "")


@dataclass
class Order:
    """An ORC group: the order control (ORC-1) and status (ORC-5), the order's numbers, and its steps."""

    control: str
    status: str
    placer: str
    filler: str
    patient_id: str
    location: Location
    requests: list[Request]


@dataclass
class Patient:
    """A patient of an ADT message: the identifier (PID-3) and the attributes the message changes."""

    patient_id: str
    issuer: str
    changes: Dataset
    sources: dict[str, Location]


@dataclass
class Merge:
    """ADT^A40: the steps of the prior patient (MRG-1) become ``patient``'s (PID-3)."""

    prior_id: str
    prior_issuer: str
    patient: Patient
    location: Location


def _put(ds: Dataset, keyword: str, content: Any) -> None:
    """Set an attribute with its data dictionary VR, unchecked: ``items.validate`` reports a value the worklist
    cannot take, and ``locate`` names the HL7 field it came from."""
    known = _DICTIONARY.get(keyword)
    if known is None:
        tag = tag_for_keyword(keyword)
        known = _DICTIONARY[keyword] = (tag, dictionary_VR(tag))
    ds.add(DataElement(known[0], known[1], content, validation_mode=config.IGNORE))


_DICTIONARY: dict[str, tuple[int, str]] = {}  # keyword → (tag, VR), for ``_put``: the keywords of this module


def _set(ds: Dataset, keyword: str, text: str, *, empties: bool = False) -> None:
    """``text`` into ``keyword`` when the message gives it; ``empties``: "" empties the attribute."""
    if text == NULL:
        if empties:
            _put(ds, keyword, "")
    elif text:
        _put(ds, keyword, text)


def _person(parts: list[str]) -> str:
    """A DICOM person name (family^given^middle^prefix^suffix, PS3.5 6.2.1) of HL7 name components in their
    XPN order (family, given, second and further given names, suffix, prefix; HL7 v2.5.1 2.A.88)."""
    family, given, middle, suffix, prefix = (parts + [""] * 5)[:5]
    return "^".join((family, given, middle, prefix, suffix)).rstrip("^")


def person_xpn(segment: hl7.Segment, number: int) -> str:
    """An XPN field's first repetition (the family name's surname: FN.1)."""
    if value(segment, number) == NULL:
        return NULL
    return _person([value(segment, number, 1, 1)] + [value(segment, number, c) for c in range(2, 6)])


def person_xcn(segment: hl7.Segment, number: int) -> str:
    """An XCN field's first repetition: ID number, then the name as XPN has it (HL7 v2.5.1 2.A.89)."""
    return _person([value(segment, number, 2, 1)] + [value(segment, number, c) for c in range(3, 7)])


def timestamp(text: str, where: Location) -> tuple[str, str]:
    """(DA, TM) of a TS / DTM value (YYYYMMDD[HH[MM[SS[.S]]]][+/-ZZZZ], HL7 v2.5.1 2.A.77, 2.A.22); the zone is
    dropped (the worklist holds local times); a value that is no calendar date and time is an AE."""
    match = _TIMESTAMP.fullmatch(text.strip())
    try:
        if match is None:
            raise ValueError(text)
        y, mo, d, h, mi, sec = match.groups()
        datetime.date(int(y), int(mo), int(d))
        if h is not None and (int(h) > 23 or int(mi or 0) > 59 or float(sec or 0) >= 61):
            raise ValueError(text)
    except ValueError:
        raise application_error(DATA_TYPE_ERROR, f"{text[:30]!r} is not a date and time YYYYMMDD[HHMM[SS]] "
                                "(TS, HL7 v2.5.1 2.A.77)", where) from None
    clock = "" if h is None else h + (mi or "00") + (sec or "00")
    return y + mo + d, clock


def _code(segment: hl7.Segment, number: int) -> Dataset | None:
    """A coded entry (Code Value, Coding Scheme Designator, Code Meaning) of a CE / CWE field (identifier,
    text, name of coding system: HL7 v2.5.1 2.A.8); None without a code and its coding system."""
    code, meaning, scheme = (value(segment, number, c) for c in (1, 2, 3))
    if not code or not scheme:
        return None
    item = Dataset()
    _put(item, "CodeValue", code)
    _put(item, "CodingSchemeDesignator", scheme)
    if meaning:
        _put(item, "CodeMeaning", meaning)
    return item


def _identifier(segment: hl7.Segment, number: int) -> tuple[str, str, str, str, int]:
    """(ID, assigning authority namespace, universal ID, its type, repetition) of the first repetition of a CX
    field that holds an ID (HL7 v2.5.1 2.A.14: ID ^ check digit ^ scheme ^ assigning authority (HD))."""
    for rep in range(1, repetitions(segment, number) + 1):
        patient_id = value(segment, number, 1, 1, rep)
        if patient_id and patient_id != NULL:
            return (patient_id, value(segment, number, 4, 1, rep), value(segment, number, 4, 2, rep),
                    value(segment, number, 4, 3, rep), rep)
    return "", "", "", "", 0


def _patient_ds(pid: hl7.Segment, where: int, *, update: bool) -> Patient:
    """The patient of a PID segment: identification (PID-3), name (PID-5), birth date (PID-7), sex (PID-8).
    ``update``: an ADT update, where "" empties an attribute and only what is given changes."""
    loc = lambda number: Location("PID", where, number)  # noqa: E731 - the location of a PID field
    patient_id, issuer, universal, universal_type, _ = _identifier(pid, 3)
    if not patient_id:
        raise application_error(REQUIRED_FIELD_MISSING, "PID-3, the patient identifier list, holds no ID: the "
                                "worklist item's Patient ID", loc(3))
    ds = Dataset()
    sources = {"PatientID": loc(3), "IssuerOfPatientID": loc(3), "IssuerOfPatientIDQualifiersSequence": loc(3),
               "PatientName": loc(5), "PatientBirthDate": loc(7), "PatientSex": loc(8)}
    if not update:
        _put(ds, "PatientID", patient_id)
        _set(ds, "IssuerOfPatientID", issuer)
        if universal:
            qualifiers = Dataset()
            _put(qualifiers, "UniversalEntityID", universal)
            _set(qualifiers, "UniversalEntityIDType", universal_type)
            _put(ds, "IssuerOfPatientIDQualifiersSequence", [qualifiers])
    _set(ds, "PatientName", person_xpn(pid, 5), empties=update)
    born = value(pid, 7, 1)
    if born == NULL and update:
        _put(ds, "PatientBirthDate", "")
    elif born and born != NULL:
        _put(ds, "PatientBirthDate", timestamp(born, loc(7))[0])
    sex = value(pid, 8, 1).upper()
    if sex == NULL.upper() and update:
        _put(ds, "PatientSex", "")
    elif sex and sex != NULL:
        if sex not in SEXES:
            raise application_error(TABLE_VALUE_NOT_FOUND, f"sex {sex[:8]!r} is not one of "
                                    f"{', '.join(SEXES)} (HL7 Table 0001)", loc(8))
        if SEXES[sex] or update:
            _put(ds, "PatientSex", SEXES[sex])
    return Patient(patient_id, issuer, ds, sources)


def _segment(message: Message, segment_id: str) -> tuple[hl7.Segment, int] | None:
    found = message.segments(segment_id)
    return (found[0], 1) if found else None


def patient_update(message: Message) -> Patient:
    """ADT^A08 / ADT^A31: the patient of the PID segment and the demographics to change."""
    pid = _segment(message, "PID")
    if pid is None:
        raise application_error(SEGMENT_SEQUENCE_ERROR, "no PID segment", Location("PID"))
    return _patient_ds(pid[0], 1, update=True)


def merges(message: Message) -> list[Merge]:
    """ADT^A40 (message structure ADT_A39: one or more PID, MRG pairs): the prior identifier of MRG-1 merged into
    the identifier of the PID before it."""
    found: list[Merge] = []
    current: tuple[hl7.Segment, int] | None = None
    counts: dict[str, int] = {}
    for segment in message.parsed:
        name = str(segment[0][0])
        counts[name] = counts.get(name, 0) + 1
        if name == "PID":
            current = (segment, counts[name])
        elif name == "MRG":
            where = Location("MRG", counts[name], 1)
            if current is None:
                raise application_error(SEGMENT_SEQUENCE_ERROR, "an MRG segment without the PID before it", where)
            prior_id, prior_issuer, *_ = _identifier(segment, 1)
            if not prior_id:
                raise application_error(REQUIRED_FIELD_MISSING, "MRG-1, the prior patient identifier list, holds "
                                        "no ID", where)
            patient = _patient_ds(current[0], current[1], update=True)
            if (prior_id, prior_issuer) == (patient.patient_id, patient.issuer):
                raise application_error(DUPLICATE_KEY, "the prior patient identifier is the patient's own "
                                        "(PID-3)", where)
            _put(patient.changes, "PatientID", patient.patient_id)
            _put(patient.changes, "IssuerOfPatientID", patient.issuer)
            found.append(Merge(prior_id, prior_issuer, patient, where))
            current = None
    if not found:
        raise application_error(SEGMENT_SEQUENCE_ERROR, "no MRG segment: ADT^A40 names the prior patient in MRG-1",
                                Location("MRG"))
    return found


def orders(message: Message) -> list[Order]:
    """ORM^O01 / OMI^O23: one ``Order`` per ORC segment, with the OBR, TQ1, ZDS and IPC segments after it
    (message structures ORM_O01 and OMI_O23); one step per IPC segment, or one from the OBR without any."""
    pid = _segment(message, "PID")
    if pid is None:
        raise application_error(SEGMENT_SEQUENCE_ERROR, "no PID segment: an order names its patient",
                                Location("PID"))
    patient = _patient_ds(pid[0], 1, update=False)
    if "PatientName" not in patient.changes:
        raise application_error(REQUIRED_FIELD_MISSING, "PID-5, the patient name, is empty: the worklist item's "
                                "Patient's Name", Location("PID", 1, 5))
    base = patient.changes
    if message.dicom_charset:
        _put(base, "SpecificCharacterSet", message.dicom_charset)
    pv1 = _segment(message, "PV1")
    sources = dict(patient.sources)
    if pv1 is not None:
        _visit(base, pv1[0], sources)
    groups = _groups(message)
    if not groups:
        raise application_error(REQUIRED_FIELD_MISSING, "no ORC segment: an order message holds one per order",
                                Location("ORC"))
    found = [_order(base, sources, patient.patient_id, group) for group in groups]
    steps = sum(len(o.requests) for o in found)
    if steps > MAX_STEPS:
        raise application_error(SEGMENT_SEQUENCE_ERROR, f"{steps} steps, more than the {MAX_STEPS} one message "
                                "may schedule here", Location("IPC"))
    return found


def _visit(ds: Dataset, pv1: hl7.Segment, sources: dict[str, Location]) -> None:
    """PV1-8 Referring Doctor → Referring Physician's Name; PV1-19 Visit Number → Admission ID and its issuer."""
    sources.update({"ReferringPhysicianName": Location("PV1", 1, 8), "AdmissionID": Location("PV1", 1, 19),
                    "IssuerOfAdmissionIDSequence": Location("PV1", 1, 19)})
    _set(ds, "ReferringPhysicianName", person_xcn(pv1, 8))
    admission, issuer, *_ = _identifier(pv1, 19)
    _set(ds, "AdmissionID", admission)
    if admission and issuer:
        item = Dataset()
        _put(item, "LocalNamespaceEntityID", issuer)
        _put(ds, "IssuerOfAdmissionIDSequence", [item])


Group = dict[str, list[tuple[hl7.Segment, int]]]


def _groups(message: Message) -> list[Group]:
    """The segments of each ORC group, with their sequence numbers in the message (ERR-2)."""
    groups: list[Group] = []
    counts: dict[str, int] = {}
    for segment in message.parsed:
        name = str(segment[0][0])
        counts[name] = counts.get(name, 0) + 1
        if name == "ORC":
            groups.append({"ORC": [(segment, counts[name])]})
        elif name in ("OBR", "TQ1", "ZDS", "IPC"):
            if not groups:
                raise application_error(SEGMENT_SEQUENCE_ERROR, f"an {name} segment before any ORC",
                                        Location(name, counts[name]))
            groups[-1].setdefault(name, []).append((segment, counts[name]))
    return groups


def _first(group: Group, name: str) -> tuple[hl7.Segment, int] | None:
    return group[name][0] if name in group else None


def _order(base: Dataset, patient_sources: dict[str, Location], patient_id: str, group: Group) -> Order:
    orc, orc_at = group["ORC"][0]
    obr = _first(group, "OBR")
    if obr is None:
        raise application_error(SEGMENT_SEQUENCE_ERROR, "an ORC segment without its OBR (the order detail)",
                                Location("ORC", orc_at))
    obr_seg, obr_at = obr
    control = value(orc, 1).strip().upper()
    if not control:
        raise application_error(REQUIRED_FIELD_MISSING, "ORC-1, the order control code, is empty",
                                Location("ORC", orc_at, 1))
    placer = value(orc, 2, 1) or value(obr_seg, 2, 1)
    filler = value(orc, 3, 1) or value(obr_seg, 3, 1)
    if not placer and not filler:
        raise application_error(REQUIRED_FIELD_MISSING, "ORC-2 and ORC-3, the placer and filler order numbers, "
                                "are both empty: one of them identifies the order", Location("ORC", orc_at, 2))
    request, step = copied(base), Dataset()
    sources = dict(patient_sources)
    _numbers(request, sources, orc, orc_at, obr_seg)
    _timing(request, step, sources, group, orc, orc_at)
    _detail(request, step, sources, obr_seg, obr_at)
    zds = _first(group, "ZDS")
    sources["StudyInstanceUID"] = Location("ZDS", zds[1] if zds else 1, 1)
    if zds:
        _set(request, "StudyInstanceUID", value(zds[0], 1, 1))
    _set(step, "ScheduledStationAETitle", value(orc, 18, 1))
    sources["ScheduledStationAETitle"] = Location("ORC", orc_at, 18)
    request.ScheduledProcedureStepSequence = [step]
    requests = [_procedure(request, sources, ipc) for ipc in group.get("IPC", [])] or [
        _procedure(request, sources, None)]
    status = value(orc, 5).strip().upper()
    return Order(control, status, placer, filler, patient_id, Location("ORC", orc_at, 1), requests)


def _numbers(ds: Dataset, sources: dict[str, Location], orc: hl7.Segment, at: int, obr: hl7.Segment) -> None:
    """ORC-2 / ORC-3 (EI: number ^ namespace) → Placer / Filler Order Number and the Order Placer / Filler
    Identifier Sequences (PS3.3 C.4.13); OBR-2 / OBR-3 when ORC has none (HL7 v2.5.1 4.5.1.2: the same)."""
    for number, keyword, sequence in ((2, "PlacerOrderNumberImagingServiceRequest", "OrderPlacerIdentifierSequence"),
                                      (3, "FillerOrderNumberImagingServiceRequest", "OrderFillerIdentifierSequence")):
        segment = orc if value(orc, number, 1) else obr
        sources[keyword] = sources[sequence] = Location("ORC", at, number)
        _set(ds, keyword, value(segment, number, 1))
        namespace = value(segment, number, 2)
        if value(segment, number, 1) and namespace:
            item = Dataset()
            _put(item, "LocalNamespaceEntityID", namespace)
            _put(ds, sequence, [item])


def _timing(ds: Dataset, step: Dataset, sources: dict[str, Location], group: Group, orc: hl7.Segment,
            at: int) -> None:
    """Start and priority: TQ1-7 and TQ1-9 (v2.5.1), else ORC-7.4 and ORC-7.6 of TQ (v2.3.1)."""
    tq1 = _first(group, "TQ1")
    if tq1 is not None:
        start, start_at = value(tq1[0], 7, 1), Location("TQ1", tq1[1], 7)
        priority, priority_at = value(tq1[0], 9, 1), Location("TQ1", tq1[1], 9)
    else:
        start, start_at = value(orc, 7, 4), Location("ORC", at, 7, 4)
        priority, priority_at = value(orc, 7, 6), Location("ORC", at, 7, 6)
    sources["ScheduledProcedureStepStartDate"] = sources["ScheduledProcedureStepStartTime"] = start_at
    sources["RequestedProcedurePriority"] = priority_at
    if start and start != NULL:
        day, clock = timestamp(start, start_at)
        _put(step, "ScheduledProcedureStepStartDate", day)
        _set(step, "ScheduledProcedureStepStartTime", clock)
    priority = priority.strip().upper()
    if priority and priority != NULL:
        if priority not in PRIORITIES:
            raise application_error(TABLE_VALUE_NOT_FOUND, f"priority {priority[:8]!r} is not one of "
                                    f"{', '.join(PRIORITIES)} (HL7 Table 0027 / 0485)", priority_at)
        _put(ds, "RequestedProcedurePriority", PRIORITIES[priority])


def _detail(ds: Dataset, step: Dataset, sources: dict[str, Location], obr: hl7.Segment, at: int) -> None:
    """OBR: the procedure (OBR-4 Universal Service ID → Requested Procedure Code Sequence and Description, and
    the step's description), ordering provider (OBR-16 → Requesting Physician), accession number (OBR-18,
    Placer Field 1), Requested Procedure ID (OBR-19, Placer Field 2), step ID (OBR-20, Filler Field 1),
    modality (OBR-24, Diagnostic Service Section ID)."""
    loc = lambda number: Location("OBR", at, number)  # noqa: E731 - the location of an OBR field
    for keyword, number in (("RequestedProcedureCodeSequence", 4), ("RequestedProcedureDescription", 4),
                            ("ScheduledProcedureStepDescription", 4), ("RequestingPhysician", 16),
                            ("AccessionNumber", 18), ("RequestedProcedureID", 19), ("ScheduledProcedureStepID", 20),
                            ("Modality", 24)):
        sources[keyword] = loc(number)
    code = _code(obr, 4)
    if code is not None:
        _put(ds, "RequestedProcedureCodeSequence", [code])
    _set(ds, "RequestedProcedureDescription", value(obr, 4, 2))
    _set(step, "ScheduledProcedureStepDescription", value(obr, 4, 2))
    _set(ds, "RequestingPhysician", person_xcn(obr, 16))
    _set(ds, "AccessionNumber", value(obr, 18, 1))
    _set(ds, "RequestedProcedureID", value(obr, 19, 1))
    _set(step, "ScheduledProcedureStepID", value(obr, 20, 1))
    _set(step, "Modality", value(obr, 24, 1))


def _procedure(order: Dataset, order_sources: dict[str, Location], ipc: tuple[hl7.Segment, int] | None) -> Request:
    """One step of the order: its IPC segment's values (v2.5.1 4.5.6: accession, Requested Procedure ID, Study
    Instance UID, step ID, modality, protocol code, station name, location, station AE title) over the OBR's
    and ZDS's; without IPC the order's own (its only step: the order's dataset is taken as it is, not copied)."""
    ds, sources = (order if ipc is None else copied(order)), dict(order_sources)
    step = ds[STEPS].value[0]
    if ipc is not None:
        segment, at = ipc
        for target, keyword, number in ((ds, "AccessionNumber", 1), (ds, "RequestedProcedureID", 2),
                                        (ds, "StudyInstanceUID", 3), (step, "ScheduledProcedureStepID", 4),
                                        (step, "Modality", 5), (step, "ScheduledStationName", 7),
                                        (step, "ScheduledProcedureStepLocation", 8),
                                        (step, "ScheduledStationAETitle", 9)):
            sources[keyword] = Location("IPC", at, number)
            _set(target, keyword, value(segment, number, 1))
        sources["ScheduledProtocolCodeSequence"] = Location("IPC", at, 6)
        protocol = _code(segment, 6)
        if protocol is not None:
            _put(step, "ScheduledProtocolCodeSequence", [protocol])
    missing = [k for k, where in (("StudyInstanceUID", ds), ("RequestedProcedureID", ds),
                                  ("ScheduledProcedureStepID", step)) if not where.get(k)]
    return Request(ds, sources, missing)


def locate(sources: dict[str, Location], error: InvalidItem) -> Location | None:
    """The HL7 field a refused attribute came from: ``error.field`` is its path in the item
    ("ScheduledProcedureStepSequence[0].Modality", "RequestedProcedureCodeSequence[0].CodeValue")."""
    keywords = [part.split("[")[0] for part in error.field.split(".")]
    if keywords and keywords[0] == STEPS and len(keywords) > 1:
        keywords = keywords[1:]
    return sources.get(keywords[0]) if keywords else None
