"""De-identification: PS3.15 Annex E's Basic Application Level Confidentiality Profile with the options Retain
Longitudinal Temporal Information with Full Dates, Retain Patient Characteristics, Clean Descriptors and Retain
UIDs — the library on datasets and stored studies (SQLite and PostgreSQL), an RT set that stays linked, the
``deidentify`` command, and the REST routes of a running server.

Every expectation comes from this file's own rows of PS3.15 Table E.1-1 (written from the standard, not from
``hounsfield.deid.profile``), from the CID 7050 codes, and from the input datasets.
"""

from __future__ import annotations

import copy
import hashlib
import io
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from sqlalchemy import text

from factories import ct_dataset, encode, nested_instance, tiny_ct
from hounsfield import config
from hounsfield.deid.engine import Deidentifier
from hounsfield.deid.profile import Option
from hounsfield.errors import HounsfieldError, NotFound
from hounsfield.pacs import Pacs
from hounsfield.rt.links import resolve
from rt_phantom import make_phantom

import support

UID_FORM = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DATES, PATIENT, DESCRIPTORS, UIDS = ("retain-dates", "retain-patient-characteristics", "clean-descriptors",
                                     "retain-uids")
# CID 7050 De-identification Method (coding scheme DCM).
CID_7050 = {"basic": "113100", DESCRIPTORS: "113105", DATES: "113106", PATIENT: "113108", UIDS: "113110"}

# ---- PS3.15 Table E.1-1, the rows this file checks: keyword, Basic Profile action, the options' actions, and
# the value the test dataset gives the attribute (identifying, where the attribute can identify). -----------
ROWS: list[tuple[str, str, dict[str, str], Any]] = [
    ("AccessionNumber", "Z", {}, "ACC123"),
    ("AcquisitionComments", "X", {DESCRIPTORS: "C"}, "by DOE"),
    ("AcquisitionDate", "X/Z", {DATES: "K"}, "20230405"),
    ("AcquisitionDateTime", "X/Z/D", {DATES: "K"}, "20230405101112"),
    ("AcquisitionTime", "X/Z", {DATES: "K"}, "101112"),
    ("AdditionalPatientHistory", "X", {DESCRIPTORS: "C"}, "history of JANE DOE"),
    ("AdmittingDiagnosesDescription", "X", {DESCRIPTORS: "C"}, "fracture"),
    ("Allergies", "X", {PATIENT: "C", DESCRIPTORS: "C"}, "penicillin"),
    ("ContentDate", "Z/D", {DATES: "K"}, "20230405"),
    ("ContentTime", "Z/D", {DATES: "K"}, "101112"),
    ("ContrastBolusAgent", "Z/D", {DESCRIPTORS: "C"}, "IODINE"),
    ("CountryOfResidence", "X", {}, "NOWHERE"),
    ("DerivationDescription", "X", {DESCRIPTORS: "C"}, "derived for DOE"),
    ("DetectorID", "X/D", {}, "DET9"),
    ("DeviceSerialNumber", "X/Z/D", {}, "SN-0042"),
    ("DeviceUID", "U", {UIDS: "K"}, "1.2.826.0.1.3680043.8.498.9001"),
    ("EthnicGroup", "X", {PATIENT: "K"}, "GROUP"),
    ("FrameOfReferenceUID", "U", {UIDS: "K"}, "1.2.826.0.1.3680043.8.498.9002"),
    ("GantryID", "X", {}, "GANTRY1"),
    ("ImageComments", "X", {DESCRIPTORS: "C"}, "seen by REFERRER"),
    ("InstitutionAddress", "X", {}, "1 Main Street"),
    ("InstitutionName", "X/Z/D", {}, "St Elsewhere"),
    ("InstitutionalDepartmentName", "X", {}, "Radiology"),
    ("IrradiationEventUID", "U", {UIDS: "K"}, "1.2.826.0.1.3680043.8.498.9003"),
    ("IssuerOfPatientID", "X", {}, "HOSPITAL"),
    ("MedicalAlerts", "X", {DESCRIPTORS: "C"}, "none"),
    ("MilitaryRank", "X", {}, "GENERAL"),
    ("NameOfPhysiciansReadingStudy", "X", {}, "READER^RITA"),
    ("Occupation", "X", {DESCRIPTORS: "C"}, "teacher"),
    ("OperatorsName", "X/Z/D", {}, "OPERATOR^OTTO"),
    ("OtherPatientIDs", "X", {}, "OTHER-1"),
    ("OtherPatientNames", "X", {}, "ALIAS^ALICE"),
    ("PatientAddress", "X", {}, "2 Side Road"),
    ("PatientAge", "X", {PATIENT: "K"}, "045Y"),
    ("PatientBirthDate", "Z", {}, "19780301"),
    ("PatientBirthName", "X", {}, "MAIDEN^MARY"),
    ("PatientComments", "X", {DESCRIPTORS: "C"}, "anxious"),
    ("PatientID", "Z", {}, "PID-12345"),
    ("PatientMotherBirthName", "X", {}, "MOTHER^MAY"),
    ("PatientName", "Z", {}, "DOE^JANE"),
    ("PatientReligiousPreference", "X", {}, "NONE"),
    ("PatientSex", "Z", {PATIENT: "K"}, "F"),
    ("PatientSexNeutered", "X/Z", {PATIENT: "K"}, "UNALTERED"),
    ("PatientSize", "X", {PATIENT: "K"}, "1.68"),
    ("PatientTelephoneNumbers", "X", {}, "555-0100"),
    ("PatientWeight", "X", {PATIENT: "K"}, "61.5"),
    ("PerformingPhysicianName", "X", {}, "PERFORMER^PAT"),
    ("PhysiciansOfRecord", "X", {}, "RECORD^ROB"),
    ("PlateID", "X", {}, "PLATE7"),
    ("PregnancyStatus", "X", {PATIENT: "K"}, 4),
    ("ProtocolName", "X/D", {DESCRIPTORS: "C"}, "HEAD ROUTINE"),
    ("ReasonForTheRequestedProcedure", "X", {DESCRIPTORS: "C"}, "headache"),
    ("ReferringPhysicianName", "Z", {}, "REFERRER^RAY"),
    ("RegionOfResidence", "X", {}, "NORTH"),
    ("RequestingPhysician", "X", {}, "ASKER^ANN"),
    ("SeriesDate", "X/D", {DATES: "K"}, "20230405"),
    ("SeriesDescription", "X", {DESCRIPTORS: "C"}, "CT THORAX DOE PID-12345"),
    ("SeriesInstanceUID", "U", {UIDS: "K"}, "1.2.826.0.1.3680043.8.498.9004"),
    ("SeriesTime", "X/D", {DATES: "K"}, "101112"),
    ("SmokingStatus", "X", {PATIENT: "K"}, "NO"),
    ("SOPInstanceUID", "U", {UIDS: "K"}, "1.2.826.0.1.3680043.8.498.9005"),
    ("StationName", "X/Z/D", {}, "CTSTATION"),
    ("StudyDate", "Z", {DATES: "K"}, "20230405"),
    ("StudyDescription", "X", {DESCRIPTORS: "C"}, "CHEST for Jane Doe"),
    ("StudyID", "Z", {}, "S42"),
    ("StudyInstanceUID", "U", {UIDS: "K"}, "1.2.826.0.1.3680043.8.498.9006"),
    ("StudyTime", "Z", {DATES: "K"}, "101112"),
    ("TimezoneOffsetFromUTC", "X", {DATES: "K"}, "+0100"),
]
# Sequences of the table (their items are made by ``rich_dataset``).
SEQUENCE_ROWS: list[tuple[str, str, dict[str, str]]] = [
    ("ReferencedImageSequence", "X/Z/U*", {UIDS: "K"}),
    ("ReferencedStudySequence", "X/Z", {UIDS: "K"}),
    ("ReferencedPerformedProcedureStepSequence", "X/Z/D", {UIDS: "K"}),
    ("ReferencedPatientSequence", "X", {UIDS: "X"}),
    ("OtherPatientIDsSequence", "X", {}),
    ("ContentSequence", "D", {}),
    ("IconImageSequence", "X", {}),
    ("RequestAttributesSequence", "X", {DESCRIPTORS: "C"}),
]
# What identifies the patient and the staff in the test dataset: never in a cleaned descriptor.
IDENTIFYING = ("DOE", "JANE", "PID-12345", "REFERRER", "RAY", "19780301")
REFERENCED_IMAGE = "1.2.826.0.1.3680043.8.498.9100"


def expected(keyword_row: tuple[str, str, dict[str, str]], option: str | None) -> str:
    """The action the table gives with ``option`` in use (an option's action overrides the profile's)."""
    _, basic, options = keyword_row[:3]
    return options.get(option, basic) if option else basic


def _item(**attrs: Any) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def rich_dataset() -> Dataset:
    """pydicom's CT slice with every attribute of ROWS and SEQUENCE_ROWS, private attributes (also in an item),
    overlay and curve groups, a sequence the table does not name holding attributes it does, and a preamble."""
    ds = ct_dataset()
    for keyword, _, _, value in ROWS:
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = [_item(ReferencedSOPClassUID=CT_IMAGE, ReferencedSOPInstanceUID=REFERENCED_IMAGE)]
    ds.ReferencedStudySequence = [_item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                                        ReferencedSOPInstanceUID=ds.StudyInstanceUID)]
    ds.ReferencedPerformedProcedureStepSequence = [_item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.3",
                                                         ReferencedSOPInstanceUID=generate_uid())]
    ds.ReferencedPatientSequence = [_item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.1.1",
                                          ReferencedSOPInstanceUID=generate_uid())]
    ds.OtherPatientIDsSequence = [_item(PatientID="OTHER-2", TypeOfPatientID="TEXT")]
    ds.ContentSequence = [_item(RelationshipType="CONTAINS", ValueType="TEXT", TextValue="JANE DOE is well")]
    ds.IconImageSequence = [_item(Rows=1, Columns=1)]
    ds.RequestAttributesSequence = [_item(RequestedProcedureID="RP-1", ScheduledProcedureStepID="SPS-1")]
    # Referenced Series Sequence is not in the table (kept): the profile applies to what its items hold.
    nested = _item(SeriesInstanceUID=ds.SeriesInstanceUID, ReferringPhysicianName="REFERRER^RAY",
                   InstitutionName="St Elsewhere", StudyDate="20230405")
    nested.add_new(0x00110010, "LO", "ACME")
    nested.add_new(0x00111001, "LO", "private DOE")
    ds.ReferencedSeriesSequence = [nested]
    ds.add_new(0x00090010, "LO", "ACME")  # private creator and its element
    ds.add_new(0x00091001, "LO", "JANE DOE secret")
    ds.add_new(0x60000010, "US", 1)  # an Overlay Plane: rows, columns, data, comments
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60003000, "OW", b"\x01" * 2)
    ds.add_new(0x60004000, "LT", "overlay by DOE")
    ds.add_new(0x50003000, "OW", b"\x00\x01" * 4)  # Curve Data (retired)
    ds.preamble = b"SECRET DOE" + b"\x00" * 118
    return ds


def value_of(ds: Dataset, keyword: str) -> Any:
    return ds[keyword].value if keyword in ds else None


def empty(value: Any) -> bool:
    return value is None or value == "" or value == b"" or (isinstance(value, (list, Sequence)) and len(value) == 0)


def action_problem(code: str, original: Any, result: Dataset, keyword: str) -> str | None:
    """Why ``result``'s ``keyword`` breaks action ``code`` of PS3.15 E.1.1 (None: it keeps it)."""
    present = keyword in result
    value = value_of(result, keyword)
    changed = present and not empty(value) and str(value) != str(original)
    ok = {
        "X": not present,
        "Z": present and (empty(value) or str(value) != str(original)),
        "D": changed,
        "U": present and bool(UID_FORM.match(str(value))) and str(value) != str(original),
        "K": present and str(value) == str(original),
        "C": present and not any(t.lower() in str(value).lower() for t in IDENTIFYING),
        "X/Z": not present or empty(value),
        "X/D": not present or changed,
        "X/Z/D": not present or empty(value) or changed,
        "Z/D": present and (empty(value) or changed),
    }
    if code not in ok:
        raise AssertionError(f"no check for {code}")
    became = repr(value) if present else "absent"
    return None if ok[code] else f"{keyword}: {code} broken: {original!r} became {became}"


def sequence_problem(code: str, original: Sequence, result: Dataset, keyword: str) -> str | None:
    """As ``action_problem`` for a sequence: the action applies to the sequence and everything in it."""
    present = keyword in result
    items = list(value_of(result, keyword) or [])
    before = [str(i.get("ReferencedSOPInstanceUID", "")) for i in original]
    after = [str(i.get("ReferencedSOPInstanceUID", "")) for i in items]
    uids_replaced = len(after) == len(before) and \
        all(UID_FORM.match(a) and a != b for a, b in zip(after, before, strict=True))
    same = [i.to_json_dict() for i in items] == [i.to_json_dict() for i in original]
    ok = {
        "X": not present,
        "D": present and bool(items) and not same,
        "X/Z": not present or not items,
        "X/Z/D": not present or not items or not same,
        "X/Z/U*": not present or not items or uids_replaced,
        "K": present and after == before,
        "C": present and not any(t.lower() in str(items).lower() for t in IDENTIFYING),
    }
    return None if ok[code] else f"{keyword}: {code} broken: {len(original)} item(s) became {items!r:.200}"


def walk(ds: Dataset):
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item)


@pytest.fixture
def pacs(tmp_path: Path, database_url: str):
    p = Pacs(config.load(None, environ={}, data_dir=tmp_path / "data", database_url=database_url))
    yield p
    p.close()


def deidentified(pacs: Pacs, ds: Dataset, *options: str) -> Dataset:
    """``ds`` de-identified, written as a Part-10 file and read back by pydicom."""
    deid = Deidentifier(pacs.db, [Option(o) for o in options])
    return dcmread(io.BytesIO(deid.encode(deid.dataset(ds))))


# ---- the table, row by row ----------------------------------------------------------------------------------

@pytest.mark.parametrize("option", [None, DATES, PATIENT, DESCRIPTORS, UIDS])
def test_every_row_gets_the_action_the_table_gives(pacs: Pacs, option: str | None) -> None:
    original = rich_dataset()
    result = deidentified(pacs, original, *([option] if option else []))
    problems = [action_problem(expected(row, option), value_of(original, row[0]), result, row[0]) for row in ROWS]
    problems += [sequence_problem(expected(row, option), original[row[0]].value, result, row[0])
                 for row in SEQUENCE_ROWS]
    assert [p for p in problems if p] == []


def test_the_rows_hold_inside_sequences_too(pacs: Pacs) -> None:
    original = rich_dataset()
    result = deidentified(pacs, original)
    before, after = original.ReferencedSeriesSequence[0], result.ReferencedSeriesSequence[0]
    for keyword, code in (("ReferringPhysicianName", "Z"), ("InstitutionName", "X/Z/D"), ("StudyDate", "Z"),
                          ("SeriesInstanceUID", "U")):
        assert action_problem(code, before[keyword].value, after, keyword) is None
    assert after.SeriesInstanceUID == result.SeriesInstanceUID  # the same original UID at any depth: the same UID


def test_private_attributes_curves_and_overlays_are_removed(pacs: Pacs) -> None:
    result = deidentified(pacs, rich_dataset())
    tags = [elem.tag for elem in walk(result)]
    assert [t for t in tags if t.group % 2] == []  # (gggg,eeee) with gggg odd: X
    assert 0x50003000 not in result  # Curve Data (50xx,xxxx): X
    assert 0x60003000 not in result and 0x60004000 not in result  # Overlay Data, Overlay Comments: X
    assert "DOE" not in str(result)


def test_the_options_keep_what_they_retain(pacs: Pacs) -> None:
    original = rich_dataset()
    dated = deidentified(pacs, original, DATES)
    for keyword in ("StudyDate", "StudyTime", "SeriesDate", "AcquisitionDate", "ContentDate"):
        assert dated[keyword].value == original[keyword].value
    characterised = deidentified(pacs, original, PATIENT)
    for keyword in ("PatientSex", "PatientAge", "PatientWeight", "PatientSize"):
        assert characterised[keyword].value == original[keyword].value
    same_uids = deidentified(pacs, original, UIDS)
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert same_uids[keyword].value == original[keyword].value
    assert same_uids.ReferencedImageSequence[0].ReferencedSOPInstanceUID == REFERENCED_IMAGE
    cleaned = deidentified(pacs, original, DESCRIPTORS)
    description = str(cleaned.SeriesDescription)
    assert "CT" in description and "THORAX" in description  # the descriptor's meaning stays
    assert not any(t in description for t in IDENTIFYING)
    assert "chest" in str(cleaned.StudyDescription).lower() and "doe" not in str(cleaned.StudyDescription).lower()


def test_dates_and_names_the_table_does_not_list_yet_go_by_their_vr(pacs: Pacs) -> None:
    """PS3.15 E.1.1 Note 4: de-identifiers may handle every date and time by its VR (DA, DT, TM)."""
    original = tiny_ct("VR", generate_uid(), generate_uid(), 1, InstanceCreationDate="20230405",
                       InstanceCreationTime="101112", EvaluatorName="EVALUATOR^EVE")
    code = _item(CodeValue="T-D3000", CodingSchemeDesignator="SRT", CodeMeaning="Chest",
                 ContextGroupVersion="20020904000000")
    original.AnatomicRegionSequence = [code]
    result = deidentified(pacs, original)
    for keyword in ("InstanceCreationDate", "InstanceCreationTime", "EvaluatorName"):
        assert action_problem("Z/D", original[keyword].value, result, keyword) is None
    # the version of a context group is no date of the patient's care
    assert result.AnatomicRegionSequence[0].ContextGroupVersion == "20020904000000"
    dated = deidentified(pacs, original, DATES)
    assert (dated.InstanceCreationDate, dated.InstanceCreationTime) == ("20230405", "101112")


@pytest.mark.parametrize("options", [(), (DATES,), (DATES, PATIENT, DESCRIPTORS, UIDS)])
def test_the_dataset_says_how_it_was_deidentified(pacs: Pacs, options: tuple[str, ...]) -> None:
    result = deidentified(pacs, rich_dataset(), *options)
    assert result.PatientIdentityRemoved == "YES"  # PS3.15 E.1.1 item 6
    codes = {(i.CodingSchemeDesignator, i.CodeValue) for i in result.DeidentificationMethodCodeSequence}
    assert codes == {("DCM", CID_7050[o]) for o in ("basic", *options)}
    assert result.DeidentificationMethod
    flag = result.LongitudinalTemporalInformationModified  # PS3.3 C.7.1.1 (General Study), Enumerated Values
    assert flag == "UNMODIFIED" if DATES in options else flag in ("REMOVED", "MODIFIED")


def test_file_meta_preamble_and_pixels(pacs: Pacs) -> None:
    original = rich_dataset()
    result = deidentified(pacs, original)
    assert result.file_meta.MediaStorageSOPInstanceUID == result.SOPInstanceUID != original.SOPInstanceUID
    assert result.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert result.preamble == b"\x00" * 128  # E.1.1 item 7: the preamble replaced
    assert result.PixelData == original.PixelData


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
                                  "MR_small_RLE.dcm", "image_dfl.dcm"])
def test_pixel_data_stays_byte_for_byte_in_its_transfer_syntax(pacs: Pacs, name: str) -> None:
    original = dcmread(get_testdata_file(name))
    result = deidentified(pacs, original)
    assert result.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert result.PixelData == original.PixelData
    assert result.SOPInstanceUID != original.SOPInstanceUID


def test_the_same_originals_always_get_the_same_replacements(pacs: Pacs) -> None:
    study, series = generate_uid(), generate_uid()
    first = tiny_ct("PAT-A", study, series, 1)
    second = tiny_ct("PAT-A", study, series, 2)
    other = tiny_ct("PAT-B", generate_uid(), generate_uid(), 1)
    a1, a2 = deidentified(pacs, first), deidentified(pacs, second)
    again = deidentified(pacs, first)  # another Deidentifier: what it knows comes from the table
    b = deidentified(pacs, other)
    assert a1.StudyInstanceUID == a2.StudyInstanceUID == again.StudyInstanceUID != study
    assert a1.SeriesInstanceUID == a2.SeriesInstanceUID != series
    assert a1.SOPInstanceUID == again.SOPInstanceUID != a2.SOPInstanceUID
    assert a1.PatientID == a2.PatientID == again.PatientID not in ("", "PAT-A")
    assert b.PatientID != a1.PatientID and b.StudyInstanceUID != a1.StudyInstanceUID
    with pacs.db.session() as s:  # kept in deid_mappings, kinds "uid" and "patient_id"
        rows = {(k, o): r for k, o, r in s.execute(text("SELECT kind, original, replacement FROM deid_mappings"))}
    assert rows[("uid", study)] == a1.StudyInstanceUID
    assert rows[("uid", first.SOPInstanceUID)] == a1.SOPInstanceUID
    assert rows[("patient_id", "PAT-A")] == a1.PatientID


def test_the_given_dataset_is_not_changed(pacs: Pacs) -> None:
    original = rich_dataset()
    before = copy.deepcopy(original)
    Deidentifier(pacs.db).dataset(original)
    assert original == before and original.preamble == before.preamble


# ---- a stored RT set: CT + RTSTRUCT + RTPLAN + RTDOSE -----------------------------------------------------

def _store_phantom(pacs: Pacs, tmp_path: Path):
    phantom = make_phantom(tmp_path / "phantom")
    for path in (*phantom.ct_paths, phantom.rtstruct, phantom.rtdose, phantom.rtplan):
        pacs.archive.store_file(path)
    return phantom


def _digests(pacs: Pacs, study_uid: str) -> dict[str, str]:
    return {i.sop_instance_uid: hashlib.sha256(i.path.read_bytes()).hexdigest()
            for i in pacs.archive.instances(study_uid=study_uid)}


def test_an_rt_set_stays_linked(pacs: Pacs, tmp_path: Path) -> None:
    phantom = _store_phantom(pacs, tmp_path)
    stored_before = _digests(pacs, phantom.study_uid)
    out = tmp_path / "deid"
    out.mkdir()
    deid = Deidentifier(pacs.db)
    datasets = []
    for outcome in deid.study(pacs.archive, phantom.study_uid):
        assert outcome.problem is None
        path = out / f"{len(datasets)}.dcm"
        path.write_bytes(deid.encode(outcome.dataset))
        datasets.append(dcmread(path))
    by_modality: dict[str, list[Dataset]] = {}
    for ds in datasets:
        by_modality.setdefault(ds.Modality, []).append(ds)
    cts, (rs,), (plan,), (dose,) = (by_modality[m] for m in ("CT", "RTSTRUCT", "RTPLAN", "RTDOSE"))
    originals = [dcmread(p) for p in phantom.ct_paths]
    assert {c.SOPInstanceUID for c in cts}.isdisjoint({c.SOPInstanceUID for c in originals})

    # the references resolve among the de-identified objects, as they did among the originals
    links_before, links_after = resolve([phantom.directory]), resolve([out])
    assert links_after.problems == links_before.problems == []
    assert sorted(link.kind for link in links_after.links) == sorted(link.kind for link in links_before.links)
    assert all(link.target is not None for link in links_after.links)

    # and each one points at the object it pointed at before: contours at the CT slice of their plane
    z_of = {c.SOPInstanceUID: round(float(c.ImagePositionPatient[2]), 2) for c in cts}
    for roi in rs.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            for ref in contour.get("ContourImageSequence", []):
                assert z_of[ref.ReferencedSOPInstanceUID] == round(float(contour.ContourData[2]), 2)
    frame = cts[0].FrameOfReferenceUID
    assert frame != phantom.frame_of_reference_uid
    assert {ds.FrameOfReferenceUID for ds in datasets} == {frame}
    assert rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == frame
    assert {r.ReferencedFrameOfReferenceUID for r in rs.StructureSetROISequence} == {frame}
    study_ref = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert study_ref.ReferencedSOPInstanceUID == cts[0].StudyInstanceUID  # the study UID, wherever it stands
    assert study_ref.RTReferencedSeriesSequence[0].SeriesInstanceUID == cts[0].SeriesInstanceUID
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == rs.SOPInstanceUID
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID

    # pixels unchanged (slices matched by position), the stored originals untouched
    pixels = {round(float(c.ImagePositionPatient[2]), 2): c.PixelData for c in originals}
    assert all(c.PixelData == pixels[z_of[c.SOPInstanceUID]] for c in cts)
    assert dose.PixelData == dcmread(phantom.rtdose).PixelData
    assert _digests(pacs, phantom.study_uid) == stored_before

    # twice: the same UIDs
    again = [o.dataset.SOPInstanceUID for o in Deidentifier(pacs.db).study(pacs.archive, phantom.study_uid)]
    assert sorted(again) == sorted(ds.SOPInstanceUID for ds in datasets)


def test_a_copy_in_the_archive_is_a_study_of_its_own(pacs: Pacs, tmp_path: Path) -> None:
    phantom = _store_phantom(pacs, tmp_path)
    before = _digests(pacs, phantom.study_uid)
    report = Deidentifier(pacs.db, [Option.RETAIN_DATES]).copy_study(pacs.archive, phantom.study_uid)
    assert (report.instances, report.stored, report.failed) == (40, 40, [])
    copies = pacs.archive.instances(study_uid=report.study_instance_uid)
    assert len(copies) == 40 and report.study_instance_uid != phantom.study_uid
    assert {dcmread(c.path).PatientID for c in copies} == {report.patient_id} != {"RTPHANTOM"}
    assert _digests(pacs, phantom.study_uid) == before
    again = Deidentifier(pacs.db, [Option.RETAIN_DATES]).copy_study(pacs.archive, phantom.study_uid)
    assert (again.study_instance_uid, again.stored, again.duplicates_kept) == (report.study_instance_uid, 0, 40)


def test_refusals_are_domain_errors(pacs: Pacs) -> None:
    with pytest.raises(NotFound):
        Deidentifier(pacs.db).study(pacs.archive, "1.2.3.4.5.6")
    with pytest.raises(HounsfieldError, match="retain-uids"):
        Deidentifier(pacs.db, [Option.RETAIN_UIDS]).copy_study(pacs.archive, "1.2.3.4.5.6")


# ---- hostile input ------------------------------------------------------------------------------------------

def _nested(depth: int) -> Dataset:
    ds = tiny_ct("DEEP", generate_uid(), generate_uid(), 1)
    inner = _item(ReferringPhysicianName="DEEP^DOWN")
    for _ in range(depth):
        inner = _item(ReferencedSeriesSequence=[inner])
    ds.ReferencedSeriesSequence = inner.ReferencedSeriesSequence
    return ds


def test_sequences_nested_too_deep_are_refused_in_words(pacs: Pacs) -> None:
    with pytest.raises(HounsfieldError, match="nest deeper"):
        Deidentifier(pacs.db, max_depth=64).dataset(_nested(300))
    result = Deidentifier(pacs.db, max_depth=64).dataset(_nested(40))
    inner = result
    while "ReferencedSeriesSequence" in inner:
        inner = inner.ReferencedSeriesSequence[0]
    assert not inner.ReferringPhysicianName  # the profile applied at the bottom too (Z)


def malformed_instance() -> bytes:
    """A tiny CT whose values break their VRs: a weight, a date, a time and a referenced UID that are not (each
    value replaced in the encoded bytes, found by its element's tag and VR: explicit VR little endian)."""
    ds = tiny_ct("MALFORMED", generate_uid(), generate_uid(), 1, PatientWeight="61.5", AcquisitionDate="20240115",
                 AcquisitionTime="101500", ReferencedImageSequence=[
                     _item(ReferencedSOPClassUID=CT_IMAGE, ReferencedSOPInstanceUID="1.2.3.4")])
    data = encode(ds)
    for header, good, bad in ((b"\x10\x00\x30\x10DS\x04\x00", b"61.5", b"ab.c"),
                              (b"\x08\x00\x22\x00DA\x08\x00", b"20240115", b"2024XX15"),
                              (b"\x08\x00\x32\x00TM\x06\x00", b"101500", b"1O:5!!"),
                              (b"\x08\x00\x55\x11UI\x08\x00", b"1.2.3.4\x00", b"1.X.3.4\x00")):
        assert data.count(header + good) == 1
        data = data.replace(header + good, header + bad)
    return data


def test_malformed_values_are_deidentified_not_crashed_on(pacs: Pacs) -> None:
    original = dcmread(io.BytesIO(malformed_instance()))
    result = deidentified(pacs, original)
    assert action_problem("X", "ab.c", result, "PatientWeight") is None
    assert action_problem("X/Z", "2024XX15", result, "AcquisitionDate") is None
    assert action_problem("X/Z", "1O:5!!", result, "AcquisitionTime") is None
    assert sequence_problem("X/Z/U*", original.ReferencedImageSequence, result, "ReferencedImageSequence") is None


# ---- the command line -----------------------------------------------------------------------------------------

def hounsfield(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return support.hounsfield(*args, "--data-dir", data_dir)


def test_the_deidentify_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    pacs = Pacs(config.load(None, environ={}, data_dir=data_dir))
    study = generate_uid()
    series = generate_uid()
    originals = [tiny_ct("CLI-PAT", study, series, n, StudyDate="20240115", PatientName="CLI^PATIENT")
                 for n in (1, 2, 3)]
    for ds in originals:
        pacs.archive.store_bytes(encode(ds))
    pacs.close()
    out = tmp_path / "out"

    done = hounsfield("deidentify", study, "--out", str(out), "--option", DATES, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4 and all("wrote" in line for line in lines[:3]) and "0 failed" in lines[3]
    written = [dcmread(p) for p in sorted(out.rglob("*.dcm"))]
    assert len(written) == 3
    assert {ds.StudyDate for ds in written} == {"20240115"}  # retain-dates: K
    assert {ds.PatientID for ds in written} != {"CLI-PAT"} and len({ds.PatientID for ds in written}) == 1
    assert {ds.PixelData for ds in written} == {ds.PixelData for ds in originals}
    assert study not in done.stdout  # what it prints is about the copy

    stored = hounsfield("deidentify", study, "--store", data_dir=data_dir)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.count(": stored") == 3
    pacs = Pacs(config.load(None, environ={}, data_dir=data_dir))
    try:
        new_study = written[0].StudyInstanceUID  # the same mapping: the same new Study Instance UID
        assert len(pacs.archive.instances(study_uid=new_study)) == 3
        assert len(pacs.archive.instances(study_uid=study)) == 3
    finally:
        pacs.close()

    for args, code, words in (
            (("deidentify", study, "--out", str(out), "--option", "nope"), 2, "nope"),
            (("deidentify", "1.2.3.999", "--out", str(out)), 1, "no study 1.2.3.999"),
            (("deidentify", study, "--store", "--option", UIDS), 2, "retain-uids"),
            (("deidentify", study), 2, "--out")):
        failed = hounsfield(*args, data_dir=data_dir)
        assert failed.returncode == code and words in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr


# ---- REST, against a running server (SQLite and PostgreSQL) ----------------------------------------------------

@pytest.fixture
def server(shared_server):
    return shared_server


def upload(server, blobs: list[tuple[str, bytes]]) -> None:
    r = requests.post(f"{server.url}/api/upload", timeout=120,
                      files=[("file", (name, data, "application/dicom")) for name, data in blobs])
    assert r.status_code == 200 and r.json()["failed"] == 0, r.text


def upload_phantom(server, tmp_path: Path):
    phantom = make_phantom(tmp_path / "phantom")
    paths = [*phantom.ct_paths, phantom.rtstruct, phantom.rtdose, phantom.rtplan]
    upload(server, [(p.name, p.read_bytes()) for p in paths])
    return phantom, paths


def studies(server, uid: str) -> list[dict[str, Any]]:
    r = requests.get(f"{server.url}/api/studies", params={"StudyInstanceUID": uid}, timeout=30)
    assert r.status_code == 200
    return r.json()


def test_rest_copy_inside_the_archive(server, tmp_path: Path) -> None:
    phantom, paths = upload_phantom(server, tmp_path)
    r = requests.post(f"{server.url}/api/studies/{phantom.study_uid}/deidentify", json={"options": [DATES]},
                      timeout=300)
    assert r.status_code == 201, r.text
    body = r.json()
    new = body["study_instance_uid"]
    assert UID_FORM.match(new) and new != phantom.study_uid
    assert (body["instances"], body["stored"], body["failed"]) == (40, 40, [])
    (copy_record,) = studies(server, new)
    assert copy_record["PatientID"] == body["patient_id"] != "RTPHANTOM"
    assert copy_record["StudyDate"] == "20240101"  # retain-dates
    assert copy_record["NumberOfStudyRelatedInstances"] == 40
    (original,) = studies(server, phantom.study_uid)  # the original is still there, unchanged
    assert original["PatientID"] == "RTPHANTOM" and original["NumberOfStudyRelatedInstances"] == 40
    ct = dcmread(paths[0])
    got = requests.get(f"{server.url}/api/instances/{ct.SOPInstanceUID}/file", timeout=30)
    assert got.content == paths[0].read_bytes()

    again = requests.post(f"{server.url}/api/studies/{phantom.study_uid}/deidentify", json={"options": [DATES]},
                          timeout=300).json()
    assert (again["study_instance_uid"], again["stored"], again["duplicates_kept"]) == (new, 0, 40)

    found = requests.get(f"{server.url}/api/deid/mappings", params={"original": phantom.study_uid}, timeout=30)
    assert [(m["kind"], m["replacement"]) for m in found.json()] == [("uid", new)]
    back = requests.get(f"{server.url}/api/deid/mappings", params={"replacement": body["patient_id"]}, timeout=30)
    assert [(m["kind"], m["original"]) for m in back.json()] == [("patient_id", "RTPHANTOM")]


def test_rest_zip_streams_the_deidentified_study(server, tmp_path: Path) -> None:
    phantom, paths = upload_phantom(server, tmp_path)
    with requests.get(f"{server.url}/api/studies/{phantom.study_uid}/deidentified.zip",
                      params={"option": [DATES, DESCRIPTORS]}, stream=True, timeout=300) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/zip"
        assert "content-length" not in r.headers and r.headers.get("transfer-encoding") == "chunked"
        assert r.headers["content-disposition"].startswith("attachment")
        data = b"".join(r.iter_content(1 << 16))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        datasets = [dcmread(io.BytesIO(zf.read(name))) for name in zf.namelist()]
    assert len(datasets) == 40
    assert {ds.StudyDate for ds in datasets} == {"20240101"}
    assert {ds.PatientIdentityRemoved for ds in datasets} == {"YES"}
    new_study = {ds.StudyInstanceUID for ds in datasets}
    assert len(new_study) == 1 and new_study != {phantom.study_uid}
    originals = [dcmread(p) for p in paths]
    assert sorted(ds.PixelData for ds in datasets if "PixelData" in ds) == \
        sorted(ds.PixelData for ds in originals if "PixelData" in ds)
    # the zip and a copy in the archive are one de-identification: the same UIDs
    copied = requests.post(f"{server.url}/api/studies/{phantom.study_uid}/deidentify", timeout=300).json()
    assert {copied["study_instance_uid"]} == new_study

    kept = requests.get(f"{server.url}/api/studies/{phantom.study_uid}/deidentified.zip",
                        params={"option": UIDS}, timeout=300)
    with zipfile.ZipFile(io.BytesIO(kept.content)) as zf:
        uids = {dcmread(io.BytesIO(zf.read(n))).SOPInstanceUID for n in zf.namelist()}
    assert uids == {ds.SOPInstanceUID for ds in originals}


def test_rest_refusals_name_their_cause(server, tmp_path: Path) -> None:
    phantom, _ = upload_phantom(server, tmp_path)
    base = f"{server.url}/api/studies"
    unknown = requests.post(f"{base}/1.2.3.4.5.999/deidentify", timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"] == "NotFound"
    assert requests.get(f"{base}/1.2.3.4.5.999/deidentified.zip", timeout=30).status_code == 404
    bad = requests.post(f"{base}/{phantom.study_uid}/deidentify", json={"options": ["bogus-option"]}, timeout=30)
    assert bad.status_code in (400, 422) and "bogus-option" in bad.text
    bad_zip = requests.get(f"{base}/{phantom.study_uid}/deidentified.zip", params={"option": "nope"}, timeout=30)
    assert bad_zip.status_code in (400, 422) and "nope" in bad_zip.text
    same_uids = requests.post(f"{base}/{phantom.study_uid}/deidentify", json={"options": [UIDS]}, timeout=30)
    assert same_uids.status_code == 400 and "retain-uids" in same_uids.json()["detail"]
    assert studies(server, phantom.study_uid)[0]["PatientID"] == "RTPHANTOM"


def test_rest_hostile_studies(server) -> None:
    malformed = malformed_instance()
    deep = nested_instance(60, PatientName="DEEP^DOWN")
    upload(server, [("malformed.dcm", malformed), ("deep.dcm", deep)])
    for data in (malformed, deep):
        study = str(dcmread(io.BytesIO(data)).StudyInstanceUID)
        r = requests.post(f"{server.url}/api/studies/{study}/deidentify", timeout=60)
        assert r.status_code == 201, r.text
        assert r.json()["stored"] == 1
        assert len(studies(server, r.json()["study_instance_uid"])) == 1

    broken = tiny_ct("BROKEN", generate_uid(), generate_uid(), 1)
    upload(server, [("broken.dcm", encode(broken))])
    (stored_file,) = server.data_dir.rglob(f"{broken.SOPInstanceUID}.dcm")
    stored_file.write_bytes(b"\x00" * 64)  # the stored file damaged behind the archive's back
    r = requests.post(f"{server.url}/api/studies/{broken.StudyInstanceUID}/deidentify", timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "InvalidDataset"
    assert str(server.data_dir) not in r.text and str(server.data_dir.resolve()) not in r.text
    assert requests.get(f"{server.url}/health", timeout=30).status_code == 200
