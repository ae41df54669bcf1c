"""What the worklist takes and refuses, in process: the expectations come from the standard, not from the code.

PS3.5 6.2 / Table 6.2-1 (each VR's repertoire, length and format), 6.2.1 (PN: 3 component groups of 5 components),
6.1.3 (control characters), 6.4 (a backslash separates values), 7.1.2 (a 16-bit length field); the VR and VM of
each attribute in the data dictionary (PS3.6, read through ``pydicom.datadict``); the value sets of PS3.3 (Patient's
Sex C.7.1.1, Requested Procedure Priority C.4.11, Modality C.7.3.1.1.1, Scheduled Procedure Step Status C.4.10); the
DICOM JSON model (PS3.18 F.2). A refused item is never written; errors name the field by its label."""

from __future__ import annotations

import base64
import logging
import re
from datetime import date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword

from hounsfield.config import load
from hounsfield.pacs import Pacs
from hounsfield.worklist import Options, Worklist, flat, items, mwl
from hounsfield.worklist.items import InvalidItem

GOOD = {"patient_id": "P1", "patient_name": "DOE^JANE", "modality": "CT", "station_aet": "CT1",
        "start": "2026-11-22 09:30"}
STATIC = Path(__file__).resolve().parents[1] / "src" / "hounsfield" / "web" / "static"


@pytest.fixture
def pacs(tmp_path: Path):
    p = Pacs(load(data_dir=str(tmp_path / "data")))
    yield p
    p.close()


def _count(pacs: Pacs) -> int:
    return pacs.worklist.list(limit=1)[0]


def _refused(pacs: Pacs, ds: Any) -> InvalidItem:
    """The error scheduling ``ds`` raises; nothing may have been written."""
    before = _count(pacs)
    with pytest.raises(InvalidItem) as caught:
        pacs.worklist.schedule(ds)
    assert _count(pacs) == before
    return caught.value


def _tag(keyword: str) -> str:
    return f"{tag_for_keyword(keyword):08X}"


def _json_item(**top: dict) -> dict:
    """A valid DICOM JSON item (PS3.18 F.2) with ``top`` elements (keyword → element) added or replaced."""
    step = {_tag("Modality"): {"vr": "CS", "Value": ["MR"]},
            _tag("ScheduledStationAETitle"): {"vr": "AE", "Value": ["MR1"]},
            _tag("ScheduledProcedureStepStartDate"): {"vr": "DA", "Value": ["20261122"]}}
    item = {_tag("PatientID"): {"vr": "LO", "Value": ["P9"]},
            _tag("PatientName"): {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]},
            _tag(items.STEPS): {"vr": "SQ", "Value": [step]}}
    return {**item, **{_tag(k): v for k, v in top.items()}}


def test_case_is_normalised_where_the_standard_fixes_it(pacs: Pacs) -> None:
    """CS holds upper-case letters only (PS3.5 6.2) and the terms of Patient's Sex, Requested Procedure Priority and
    Modality are upper case (PS3.3): "ct", " f " and "stat" can only mean CT, F and STAT."""
    item = pacs.worklist.schedule(flat.to_dataset({**GOOD, "modality": "ct", "patient_sex": " f ",
                                                   "requested_procedure_priority": "stat"}))[0]
    ds = item.dataset
    assert (ds.PatientSex, ds.RequestedProcedurePriority, items.step_of(ds).Modality) == ("F", "STAT", "CT")
    assert pacs.worklist.list(mwl.identifier({"Modality": "CT"}, return_keys=False))[0] == 1  # as modalities ask


# (flat field, value, attribute path, words the rule must name). Each expectation is the standard's:
BAD_FLAT = [
    # LO is VM 1 for Patient ID in the data dictionary, and "\" separates values (PS3.5 6.4): two values.
    ("patient_id", "P1\\P2", "PatientID", ["2 values", "allows 1", "PS3.6", "PS3.5 6.4"]),
    ("patient_id", "P\x001", "PatientID", ["0x00 (NUL)", "PS3.5 6.1.3"]),
    ("patient_id", "P\x1f", "PatientID", ["0x1F", "PS3.5 6.1.3"]),
    ("patient_id", "P" * 65, "PatientID", ["65 characters", "64", "PS3.5 6.2"]),
    ("patient_name", "A^B^C^D^E^F", "PatientName", ["6 components", "5", "PS3.5 6.2.1"]),
    ("patient_name", "A=B=C=D", "PatientName", ["4 component groups", "3", "PS3.5 6.2.1"]),
    ("patient_name", "X" * 65, "PatientName", ["65 characters", "64", "PS3.5 6.2"]),
    ("patient_birth_date", "2100-01-01", "PatientBirthDate", ["future"]),  # future whenever the suite runs
    ("patient_birth_date", "1970-02-30", "PatientBirthDate", ["calendar date", "PS3.5 6.2"]),
    ("patient_sex", "X", "PatientSex", ["M, F, O", "Enumerated Values", "PS3.3 C.7.1.1"]),
    ("requested_procedure_priority", "URGENT", "RequestedProcedurePriority", ["STAT", "PS3.3 C.4.11"]),
    ("modality", "CT SCANNER", "ScheduledProcedureStepSequence[0].Modality", ["Defined Terms", "C.7.3.1.1.1"]),
    ("modality", "C-T", "ScheduledProcedureStepSequence[0].Modality", ["upper-case letters", "CS", "PS3.5 6.2"]),
    ("accession_number", "A" * 17, "AccessionNumber", ["17 characters", "16", "SH"]),
    ("station_aet", "   ", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle", ["only spaces", "AE"]),
    ("study_instance_uid", "1.2.abc", "StudyInstanceUID", ["PS3.5 9.1"]),
    ("patient_weight", "1e999", "PatientWeight", ["DS", "PS3.5 6.2"]),
    ("patient_comments", "line\x00", "PatientComments", ["0x00 (NUL)", "LT"]),
]


@pytest.mark.parametrize("name,value,path,words", BAD_FLAT, ids=[f"{b[0]}={b[1][:12]!r}" for b in BAD_FLAT])
def test_bad_flat_values_are_refused_naming_field_and_rule(pacs: Pacs, name: str, value: str, path: str,
                                                            words: list[str]) -> None:
    error = _refused(pacs, flat.to_dataset({**GOOD, name: value}))
    assert error.field == path
    for word in words:
        assert word in error.rule, (word, error.rule)
    assert error.reason.startswith(f"{flat.BY_NAME[name].label}: ")  # the label the user sees, then the rule


def test_the_data_dictionary_is_the_reference() -> None:
    """The premises of the cases above, from PS3.6 as pydicom ships it."""
    assert (dictionary_VR(tag_for_keyword("PatientID")), dictionary_VM(tag_for_keyword("PatientID"))) == ("LO", "1")
    assert dictionary_VM(tag_for_keyword("ScheduledStationAETitle")) == "1-n"
    assert dictionary_VM(tag_for_keyword("SpecificCharacterSet")) == "1-n"


def test_values_at_the_limits_of_their_vr_are_taken(pacs: Pacs) -> None:
    """What the standard allows must pass: the longest LO and SH, a PN of 3 groups of 5 components, text VRs with
    TAB, CR, LF (PS3.5 6.1.3), several station AE titles (VM 1-n), a DT with UTC offset, a TM with fraction."""
    body = {**GOOD, "patient_id": "P" * 64, "accession_number": "A" * 16,
            "patient_name": "F^G^M^P^S=F^G^M^P^S=F^G^M^P^S", "station_aet": "CT1\\CT2\\" + "C" * 16,
            "patient_comments": "line one\r\nline two\tindented", "patient_weight": "72.5",
            "specific_character_set": "ISO_IR 100", "patient_birth_date": date.today().isoformat(),
            "requested_procedure_code": {"value": "X1", "scheme": "99LOCAL", "meaning": "Chest"}}
    ds = flat.to_dataset(body)
    ds.add_new(0x00400244, "DA", "20261122")  # Performed Procedure Step Start Date
    ds.add_new(0x0040A13A, "DT", "20261122093000.123456+0100")  # Referenced DateTime
    items.step_of(ds).ScheduledProcedureStepStartTime = "093000.5"
    ds.PatientAge = "045Y"
    item = pacs.worklist.schedule(ds)[0]
    assert list(items.step_of(item.dataset).ScheduledStationAETitle) == ["CT1", "CT2", "C" * 16]
    assert flat.from_dataset(item.dataset)["requested_procedure_code"] == {"value": "X1", "scheme": "99LOCAL",
                                                                           "meaning": "Chest"}


BAD_JSON = [
    # 10,000 values in Patient ID (VM 1): refused before anything is written, however many.
    ({"PatientID": {"vr": "LO", "Value": ["P"] * 10000}}, "PatientID", ["10000 values", "allows 1"]),
    ({"PatientID": {"vr": "LO", "Value": ["P\x00"]}}, "PatientID", ["0x00 (NUL)", "PS3.5 6.1.3"]),
    ({"PatientComments": {"vr": "LT", "Value": ["bell\x07"]}}, "PatientComments", ["0x07", "PS3.5 6.1.3"]),
    ({"PatientID": {"vr": "XX", "Value": ["P"]}}, "PatientID", ["'XX'", "PS3.5 6.2"]),
    ({"PatientID": {"vr": "DA", "Value": ["20200101"]}}, "PatientID", ["VR DA", "LO", "PS3.6"]),
    ({"PatientID": {"vr": "LO", "Value": ["A\\B"]}}, "PatientID", ["backslash", "PS3.18 F.2.4"]),
    ({"PatientID": {"vr": "LO", "Value": [7]}}, "PatientID", ["not a string", "PS3.18 F.2.3"]),
    ({"PatientName": {"vr": "PN", "Value": ["DOE^JOHN"]}}, "PatientName", ["person name object", "PS3.18"]),
    ({"PatientName": {"vr": "PN", "Value": [{"Alphabetic": "A=B"}]}}, "PatientName", ["'='", "PS3.5 6.2.1"]),
    ({"PregnancyStatus": {"vr": "US", "Value": [70000]}}, "PregnancyStatus", ["0 to 65535", "US"]),
    ({"PixelPaddingValue": {"vr": "US", "Value": ["1"]}}, "PixelPaddingValue", ["JSON number", "PS3.18 F.2.3"]),
    ({"IconImageSequence": {"vr": "SQ", "Value": [{"7FE00010": {"vr": "OB", "InlineBinary": "@@@@"}}]}},
     "IconImageSequence[0].PixelData", ["base64", "PS3.18 F.2.7"]),
    ({"EncapsulatedDocument": {"vr": "OB", "InlineBinary": "AAA"}}, "EncapsulatedDocument", ["base64"]),
    ({"EncapsulatedDocument": {"vr": "OB", "BulkDataURI": "http://elsewhere/doc"}}, "EncapsulatedDocument",
     ["BulkDataURI", "PS3.18 F.2.6"]),
    ({"PatientID": {"vr": "LO", "InlineBinary": "UDk="}}, "PatientID", ["InlineBinary", "PS3.18 F.2.7"]),
    ({"OtherPatientIDsSequence": {"vr": "SQ", "Value": [{"zz": {"vr": "LO"}}]}}, "OtherPatientIDsSequence[0].zz",
     ["8 hex digits", "PS3.18 F.2.1.1"]),
    # VM 1-n, but 5,000 values of 16 characters are 84,999 bytes: more than a 16-bit length field holds.
    ({"OtherPatientIDs": {"vr": "LO", "Value": ["X" * 16] * 5000}}, "OtherPatientIDs", ["PS3.5 7.1.2", "65534"]),
]


@pytest.mark.parametrize("top,path,words", BAD_JSON, ids=[b[1] + "/" + b[2][0][:10] for b in BAD_JSON])
def test_bad_dicom_json_is_refused_naming_attribute_and_rule(pacs: Pacs, top: dict, path: str,
                                                             words: list[str]) -> None:
    before = _count(pacs)
    with pytest.raises(InvalidItem) as caught:
        pacs.worklist.schedule(items.from_json(_json_item(**top)))
    assert _count(pacs) == before
    assert caught.value.field == path
    for word in words:
        assert word in caught.value.rule, (word, caught.value.rule)


def test_good_dicom_json_reads_as_pydicom_reads_it() -> None:
    body = _json_item(EncapsulatedDocument={"vr": "OB", "InlineBinary": base64.b64encode(b"%PDF").decode()},
                      OtherPatientIDs={"vr": "LO", "Value": ["A", None, "B"]})
    ds = items.from_json(body)
    assert ds.EncapsulatedDocument == b"%PDF" and list(ds.OtherPatientIDs) == ["A", "", "B"]


def test_step_status_takes_the_defined_terms_and_the_worklists_own(pacs: Pacs) -> None:
    """PS3.3 C.4.10 Defined Terms (SCHEDULED, ARRIVED, READY, STARTED, DEPARTED), plus the CANCELED, DISCONTINUED,
    COMPLETED this worklist writes when a step closes; nothing else."""
    steps = _json_item()[_tag(items.STEPS)]["Value"][0]
    steps[_tag("ScheduledProcedureStepStatus")] = {"vr": "CS", "Value": ["arrived"]}
    body = _json_item()
    body[_tag(items.STEPS)]["Value"] = [steps]
    item = pacs.worklist.schedule(items.from_json(body))[0]
    assert items.step_of(item.dataset).ScheduledProcedureStepStatus == "ARRIVED"
    steps[_tag("ScheduledProcedureStepStatus")] = {"vr": "CS", "Value": ["WAITING"]}
    error = _refused(pacs, items.from_json(body))
    assert error.field.endswith("ScheduledProcedureStepStatus") and "PS3.3 C.4.10" in error.rule


def test_updates_are_checked_the_same_way(pacs: Pacs) -> None:
    item = pacs.worklist.schedule(flat.to_dataset(GOOD))[0]
    with pytest.raises(InvalidItem) as caught:
        pacs.worklist.update(item.id, flat.to_dataset({"patient_sex": "X"}))
    assert caught.value.field == "PatientSex"
    assert pacs.worklist.update(item.id, flat.to_dataset({"modality": "mr"})).dataset.ScheduledProcedureStepSequence[
        0].Modality == "MR"


def test_birth_date_is_checked_against_the_services_today(pacs: Pacs) -> None:
    later = Worklist(pacs.db, Options(), clock=lambda: datetime(2031, 1, 1, 12))
    assert later.schedule(flat.to_dataset({**GOOD, "patient_birth_date": "2030-12-31"}))
    with pytest.raises(InvalidItem):
        pacs.worklist.schedule(flat.to_dataset({**GOOD, "patient_birth_date": "2999-12-31"}))


def test_same_accession_for_another_patient_is_taken_with_a_warning(pacs: Pacs, caplog) -> None:
    """An accession number identifies one imaging service request (PS3.3 C.4.12): one for two patients is a
    warning (answered and logged), not a refusal; the same patient's further steps are no warning."""
    first = pacs.worklist.schedule(flat.to_dataset({**GOOD, "accession_number": "ACC1"}))[0]
    assert first.warnings == ()
    same_patient = pacs.worklist.schedule(flat.to_dataset({**GOOD, "accession_number": "ACC1", "modality": "MR"}))
    assert same_patient[0].warnings == ()
    with caplog.at_level(logging.WARNING, logger="hounsfield.worklist"):
        other = pacs.worklist.schedule(flat.to_dataset({**GOOD, "patient_id": "P2", "accession_number": "ACC1"}))
    assert len(other) == 1 and len(other[0].warnings) == 1
    assert re.search(rf"Accession number ACC1 .* patient P1 \(item {first.id}\)", other[0].warnings[0])
    assert other[0].warnings[0] in caplog.text
    assert _count(pacs) == 3
    fixed = pacs.worklist.update(other[0].id, flat.to_dataset({"accession_number": "ACC2"}))
    assert fixed.warnings == ()
    again = pacs.worklist.update(other[0].id, flat.to_dataset({"accession_number": "ACC1"}))
    assert len(again.warnings) == 1


class _FormLabels(HTMLParser):
    """name → the text of the <label> around each input and select of the item form."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[str, str] = {}
        self._text: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "label":
            self._text = ""
        elif tag in ("input", "select") and self._text is not None:
            name = dict(attrs).get("name")
            if name:
                self.labels[name] = self._text
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text += data


def test_the_web_form_labels_are_the_names_errors_use() -> None:
    parser = _FormLabels()
    parser.feed((STATIC / "worklist.html").read_text())
    assert parser.labels, "no labelled fields found"
    for name, text in parser.labels.items():
        assert re.sub(r"[*(].*$", "", text, flags=re.S).strip() == flat.BY_NAME[name].label, name
    assert all(f.label for f in flat.FIELDS)
