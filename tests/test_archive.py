"""The archive domain: store (atomic, duplicate policy, bad input), query at every level, delete.

Runs in-process against both index back ends (the ``database_url`` fixture)."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from sqlalchemy import func, select

from factories import ct_dataset, encode, tiny_ct
from hounsfield import config, query
from hounsfield.archive import StoreOutcome, relative_path
from hounsfield.dicomfile import read_header
from hounsfield.errors import InvalidDataset, InvalidQuery, NotFound
from hounsfield.models import Instance, Patient, Series, Study
from hounsfield.pacs import Pacs


@pytest.fixture
def pacs(tmp_path: Path, database_url: str):
    p = Pacs(config.load(None, environ={}, data_dir=tmp_path / "data", database_url=database_url))
    yield p
    p.close()


def make_pacs(tmp_path: Path, database_url: str, **settings) -> Pacs:
    return Pacs(config.load(None, environ={}, data_dir=tmp_path / "data", database_url=database_url, **settings))


def count(pacs: Pacs, model) -> int:
    with pacs.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def find(pacs: Pacs, level: str, model: str = "STUDY", **keys) -> list[Dataset]:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(identifier, k, v)
    q = query.Query(identifier, model=model)
    with pacs.db.session() as s:
        return [m.dataset(identifier) for m in query.run(s, q)]


def test_store_keeps_the_bytes_under_a_browsable_path(pacs: Pacs) -> None:
    ds = ct_dataset(PatientID="PAT/1 x")
    data = encode(ds)
    result = pacs.archive.store_bytes(data, "TEST")
    assert result.outcome is StoreOutcome.STORED
    stored = pacs.archive.instance(ds.SOPInstanceUID)
    assert stored.path.read_bytes() == data
    rel = stored.path.relative_to(pacs.files.root).parts
    assert rel == ("PAT_1_x", ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm")
    assert stored.size == len(data)
    assert list(pacs.files.incoming.iterdir()) == []  # no temporary file left behind


def test_duplicate_is_kept_by_default_and_replaced_on_request(tmp_path: Path, database_url: str) -> None:
    first = ct_dataset(StudyDescription="FIRST")
    second = copy.deepcopy(first)
    second.StudyDescription = "SECOND"
    keep = make_pacs(tmp_path, database_url)
    assert keep.archive.store_bytes(encode(first)).outcome is StoreOutcome.STORED
    assert keep.archive.store_bytes(encode(second)).outcome is StoreOutcome.DUPLICATE_KEPT
    assert dcmread(keep.archive.instance(first.SOPInstanceUID).path).StudyDescription == "FIRST"
    keep.close()
    overwrite = make_pacs(tmp_path, database_url, duplicate_policy="overwrite")
    assert overwrite.archive.store_bytes(encode(second)).outcome is StoreOutcome.REPLACED
    assert dcmread(overwrite.archive.instance(first.SOPInstanceUID).path).StudyDescription == "SECOND"
    assert count(overwrite, Instance) == 1
    overwrite.close()


def test_truncated_dataset_is_refused_and_nothing_is_written(pacs: Pacs) -> None:
    data = encode(ct_dataset())
    with pytest.raises(InvalidDataset, match="truncated"):
        pacs.archive.store_bytes(data[:-100])
    assert count(pacs, Instance) == 0 and count(pacs, Study) == 0
    assert not any(p.is_file() for p in pacs.files.root.rglob("*.dcm"))


def test_dataset_without_sop_instance_uid_is_refused(pacs: Pacs) -> None:
    ds = ct_dataset()
    del ds.SOPInstanceUID
    with pytest.raises(InvalidDataset, match="SOPInstanceUID"):
        pacs.archive.store_bytes(encode(ds))
    assert count(pacs, Instance) == 0


def test_not_dicom_is_refused(pacs: Pacs) -> None:
    with pytest.raises(InvalidDataset):
        pacs.archive.store_bytes(b"this is not a DICOM file at all" * 10)


def received(pacs: Pacs, ds: Dataset) -> Path:
    """What the DICOM service hands the archive: a complete Part-10 file in ``.incoming``."""
    path = pacs.files.incoming / f"{generate_uid()}.part"
    path.write_bytes(encode(ds))
    return path


def test_received_instance_is_pending_until_indexed_then_where_store_puts_it(pacs: Pacs) -> None:
    ds = ct_dataset(PatientID="P-ACK")
    data = encode(ds)
    header = pacs.archive.accept_file(received(pacs, ds), "MODALITY")
    assert header.sop_instance_uid == ds.SOPInstanceUID
    pending = pacs.files.pending_files()
    assert len(pending) == 1 and pending[0].read_bytes() == data  # durable, not yet indexed
    assert count(pacs, Instance) == 0 and list(pacs.files.incoming.iterdir()) == []
    assert pacs.archive.index_pending() == 1
    stored = pacs.archive.instance(ds.SOPInstanceUID)
    assert stored.path.read_bytes() == data
    assert stored.path.relative_to(pacs.files.root).parts == (
        "P-ACK", ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.SOPInstanceUID}.dcm")
    with pacs.db.session() as s:
        assert s.scalar(select(Instance.origin)) == "MODALITY"
    assert pacs.files.pending_files() == [] and list(pacs.files.incoming.iterdir()) == []


def test_pending_instances_survive_a_restart_and_a_crash_mid_indexing(tmp_path: Path, database_url: str) -> None:
    first, second = ct_dataset(), ct_dataset()
    before = make_pacs(tmp_path, database_url)
    before.archive.accept_file(received(before, first), "A")
    before.archive.accept_file(received(before, second), "A")
    # A crash after the second file was linked into the layout but before its index row was committed:
    pending = before.files.pending_files()[1]
    before.files.put_link(relative_path(read_header(pending)), pending)
    before.close()
    after = make_pacs(tmp_path, database_url)  # the restart: what was acknowledged is still pending
    assert after.archive.index_pending() == 2
    assert {i.sop_instance_uid for i in after.archive.instances()} == {first.SOPInstanceUID, second.SOPInstanceUID}
    assert after.archive.index_pending() == 0 and count(after, Instance) == 2
    after.close()


def test_indexing_a_pending_file_twice_keeps_one_row(pacs: Pacs) -> None:
    ds = ct_dataset()
    pacs.archive.accept_file(received(pacs, ds), "A")
    pending = pacs.files.pending_files()[0]
    kept = pending.with_name("copy.dcm")
    kept.hardlink_to(pending)  # as if the unlink after the commit was lost in a crash
    assert pacs.archive.index_pending() == 2
    assert count(pacs, Instance) == 1 and pacs.files.pending_files() == []
    assert pacs.archive.instance(ds.SOPInstanceUID).path.read_bytes() == encode(ds)


def test_a_query_indexes_what_a_lagging_indexer_has_not(pacs: Pacs) -> None:
    """No indexer runs here (as when it is starved of CPU): the query indexes what it waits for itself."""
    ds = ct_dataset(PatientID="P-LAG")
    pacs.archive.accept_file(received(pacs, ds), "A")
    assert count(pacs, Instance) == 0
    with pacs.archive.reading() as s:  # what C-FIND, QIDO-RS and the REST API query through
        assert s.scalars(select(Instance.sop_instance_uid)).all() == [ds.SOPInstanceUID]
    assert pacs.files.pending_files() == []


def test_a_query_does_not_wait_on_a_file_the_indexer_holds(tmp_path: Path, database_url: str) -> None:
    """A starved indexer holding its claim on a pending file must not hold a query up past its timeout."""
    import time

    indexer, query_side = make_pacs(tmp_path, database_url), make_pacs(tmp_path, database_url)
    indexer.archive.accept_file(received(indexer, ct_dataset(PatientID="P-HELD")), "A")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with indexer.files.claiming_pending(indexer.files.pending_files()[0]):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(5)
    start = time.monotonic()
    query_side.archive.settle(timeout=0.5)
    assert time.monotonic() - start < 2 and len(query_side.files.pending_files()) == 1
    release.set()
    holder.join()
    query_side.archive.settle(timeout=5)  # the claim is free: the query indexes it itself
    assert query_side.files.pending_files() == [] and count(query_side, Instance) == 1
    indexer.close()
    query_side.close()


def test_two_indexers_work_side_by_side_on_different_files(tmp_path: Path, database_url: str) -> None:
    """A file one indexer holds is skipped by the other, which indexes the rest meanwhile."""
    a, b = make_pacs(tmp_path, database_url), make_pacs(tmp_path, database_url)
    for _ in range(3):
        a.archive.accept_file(received(a, ct_dataset(PatientID="P-SIDE")), "A")
    held = a.files.pending_files()[0]
    with a.files.claiming_pending(held) as claimed:
        assert claimed
        with b.files.claiming_pending(held) as also:
            assert not also  # the same file, claimed anew from another open: refused
        assert b.archive.index_pending() == 2
        assert b.files.pending_files() == [held]
    assert b.archive.index_pending() == 1 and count(b, Instance) == 3
    with b.files.claiming_pending(held) as gone:
        assert not gone
    a.close()
    b.close()


def test_two_pending_copies_of_one_instance_are_never_stored_at_once(tmp_path: Path, database_url: str) -> None:
    """Sent twice, an instance is pending twice; while one copy is stored (its UID claimed), the other waits."""
    a, b = make_pacs(tmp_path, database_url), make_pacs(tmp_path, database_url)
    ds = ct_dataset(PatientID="P-TWICE")
    a.archive.accept_file(received(a, ds), "A")
    a.archive.accept_file(received(a, ds), "A")
    with a.files.claiming_instance(ds.SOPInstanceUID) as mine:
        assert mine
        assert b.archive.index_pending() == 0 and len(b.files.pending_files()) == 2  # both wait
    assert b.archive.index_pending() == 2  # stored once, then the duplicate policy for the second
    assert count(b, Instance) == 1 and b.files.pending_files() == []
    assert b.archive.instance(ds.SOPInstanceUID).path.read_bytes() == encode(ds)
    a.close()
    b.close()


def test_without_flock_indexing_goes_ahead_unclaimed(pacs: Pacs, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Some network file systems refuse flock: indexing must not stop there."""
    import errno
    import fcntl

    def refused(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    pacs.archive.accept_file(received(pacs, ct_dataset(PatientID="P-NFS")), "A")
    monkeypatch.setattr(fcntl, "flock", refused)
    monkeypatch.setattr("hounsfield.storage._no_flock_logged", False)
    assert pacs.archive.index_pending() == 1 and count(pacs, Instance) == 1
    assert "no flock" in caplog.text


def test_two_indexers_on_the_same_queue_leave_one_row_each(tmp_path: Path, database_url: str) -> None:
    """The indexer process and a query's process may index the same pending files at the same time."""
    a, b = make_pacs(tmp_path, database_url), make_pacs(tmp_path, database_url)
    sent = [ct_dataset(PatientID="P-RACE") for _ in range(40)]
    for ds in sent:
        a.archive.accept_file(received(a, ds), "A")
    racers = [threading.Thread(target=x.archive.index_pending) for x in (a, b)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert a.files.pending_files() == [] and not list(a.files.pending.glob("*.failed"))
    assert sorted(i.sop_instance_uid for i in a.archive.instances()) == sorted(ds.SOPInstanceUID for ds in sent)
    for ds in sent:
        assert a.archive.instance(ds.SOPInstanceUID).path.read_bytes() == encode(ds)
    a.close()
    b.close()


def test_duplicates_through_the_pending_queue_follow_the_policy(pacs: Pacs) -> None:
    first = ct_dataset(StudyDescription="FIRST")
    second = copy.deepcopy(first)
    second.StudyDescription = "SECOND"
    pacs.archive.accept_file(received(pacs, first), "A")
    pacs.archive.accept_file(received(pacs, second), "A")
    assert pacs.archive.index_pending() == 2
    assert dcmread(pacs.archive.instance(first.SOPInstanceUID).path).StudyDescription == "FIRST"


@pytest.mark.parametrize("damage", ["truncated", "no SOP Instance UID"])
def test_bad_received_instance_is_refused_before_it_is_pending(pacs: Pacs, damage: str) -> None:
    ds = ct_dataset()
    if damage == "no SOP Instance UID":
        del ds.SOPInstanceUID
    path = received(pacs, ds)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InvalidDataset, match="truncated" if damage == "truncated" else "SOPInstanceUID"):
        pacs.archive.accept_file(path, "A")
    assert pacs.files.pending_files() == []


def test_bare_dataset_gets_a_part10_wrapper(pacs: Pacs, shared_data: Path) -> None:
    src = shared_data / "cr" / "CR-MONO1-10-chest.dcm"  # no preamble, no file meta
    original = dcmread(src, force=True)
    pacs.archive.store_file(src)
    stored = dcmread(pacs.archive.instance(original.SOPInstanceUID).path)  # no force: a real Part-10 file
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert stored.PixelData == original.PixelData


def seed(pacs: Pacs) -> dict[str, str]:
    """Two patients, three studies, four series, nine instances with distinct, known attributes."""
    uids = {k: generate_uid() for k in ("s1", "s2", "s3", "se1", "se2", "se3", "se4")}
    plan = [
        ("P1", "DOE^JOHN", uids["s1"], uids["se1"], "CT", "20240110", "083000", "ACC1", 3),
        ("P1", "DOE^JOHN", uids["s1"], uids["se2"], "SR", "20240110", "083000", "ACC1", 1),
        ("P1", "DOE^JOHN", uids["s2"], uids["se3"], "MR", "20240301", "141500", "ACC2", 2),
        ("P2", "ROE^JANE", uids["s3"], uids["se4"], "CT", "20231231", "235959", "ACC3", 3),
    ]
    for pid, name, study, series, modality, date, time, acc, n in plan:
        for i in range(1, n + 1):
            ds = tiny_ct(pid, study, series, i, PatientName=name, Modality=modality, StudyDate=date,
                         StudyTime=time, AccessionNumber=acc, StudyDescription=f"desc {acc}",
                         PatientBirthDate="19700101" if pid == "P1" else "19851224")
            pacs.archive.store_bytes(encode(ds))
    return uids


def test_find_at_each_level_returns_the_stored_attributes(pacs: Pacs) -> None:
    uids = seed(pacs)
    patients = find(pacs, "PATIENT", "PATIENT", PatientID="", PatientName="",
                    NumberOfPatientRelatedStudies=None, NumberOfPatientRelatedInstances=None)
    by_id = {p.PatientID: p for p in patients}
    assert set(by_id) == {"P1", "P2"}
    assert by_id["P1"].PatientName == "DOE^JOHN"
    assert by_id["P1"].NumberOfPatientRelatedStudies == 2 and by_id["P1"].NumberOfPatientRelatedInstances == 6
    studies = find(pacs, "STUDY", PatientID="P1", StudyInstanceUID="", StudyDate="", ModalitiesInStudy="",
                   NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None, AccessionNumber="")
    s1 = next(s for s in studies if s.StudyInstanceUID == uids["s1"])
    assert (s1.StudyDate, s1.AccessionNumber) == ("20240110", "ACC1")
    assert list(s1.ModalitiesInStudy) == ["CT", "SR"]
    assert (s1.NumberOfStudyRelatedSeries, s1.NumberOfStudyRelatedInstances) == (2, 4)
    series = find(pacs, "SERIES", StudyInstanceUID=uids["s1"], SeriesInstanceUID="", Modality="",
                  NumberOfSeriesRelatedInstances=None)
    assert {(s.Modality, s.NumberOfSeriesRelatedInstances) for s in series} == {("CT", 3), ("SR", 1)}
    images = find(pacs, "IMAGE", StudyInstanceUID=uids["s1"], SeriesInstanceUID=uids["se1"], SOPInstanceUID="",
                  InstanceNumber=None)
    assert [i.InstanceNumber for i in images] == [1, 2, 3]
    assert "RetrieveAETitle" not in images[0]  # only what was asked (plus the level)
    assert images[0].QueryRetrieveLevel == "IMAGE"


def test_computed_attributes_are_right_across_answer_chunks(pacs: Pacs, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts are fetched for a chunk of answers at once; with one answer per chunk every answer still gets
    its own (the seed's plan is the independent truth)."""
    monkeypatch.setattr(query, "CHUNK", 1)
    uids = seed(pacs)
    patients = find(pacs, "PATIENT", "PATIENT", PatientID="", NumberOfPatientRelatedStudies=None,
                    NumberOfPatientRelatedSeries=None, NumberOfPatientRelatedInstances=None)
    assert {(p.PatientID, p.NumberOfPatientRelatedStudies, p.NumberOfPatientRelatedSeries,
             p.NumberOfPatientRelatedInstances) for p in patients} == {("P1", 2, 3, 6), ("P2", 1, 1, 3)}
    studies = find(pacs, "STUDY", StudyInstanceUID="", ModalitiesInStudy="", SOPClassesInStudy="",
                   NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None)
    got = {s.StudyInstanceUID: (s["ModalitiesInStudy"].VM, str(s.ModalitiesInStudy), s.NumberOfStudyRelatedSeries,
                                s.NumberOfStudyRelatedInstances) for s in studies}
    assert got == {uids["s1"]: (2, "['CT', 'SR']", 2, 4), uids["s2"]: (1, "MR", 1, 2), uids["s3"]: (1, "CT", 1, 3)}
    assert all(s.SOPClassesInStudy == CTImageStorage for s in studies)
    series = find(pacs, "SERIES", SeriesInstanceUID="", NumberOfSeriesRelatedInstances=None)
    assert sorted(s.NumberOfSeriesRelatedInstances for s in series) == [1, 2, 3, 3]


def test_requested_keys_without_value_come_back_zero_length(pacs: Pacs) -> None:
    seed(pacs)
    (answer, *_) = find(pacs, "STUDY", PatientID="P2", ReferringPhysicianName="", StudyID="")
    assert answer["ReferringPhysicianName"].is_empty and answer["StudyID"].is_empty


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"PatientID": "P1"}, {"ACC1", "ACC2"}),  # single value
        ({"PatientName": "DOE*"}, {"ACC1", "ACC2"}),  # wildcard *
        ({"PatientName": "?OE^JANE"}, {"ACC3"}),  # wildcard ?
        ({"PatientName": "doe*"}, set()),  # case-sensitive by default
        ({"StudyDate": "20240101-20241231"}, {"ACC1", "ACC2"}),  # closed range
        ({"StudyDate": "-20231231"}, {"ACC3"}),  # open start
        ({"StudyDate": "20240301-"}, {"ACC2"}),  # open end
        ({"StudyDate": "20240110", "StudyTime": "080000-090000"}, {"ACC1"}),
        ({"ModalitiesInStudy": "MR"}, {"ACC2"}),
        ({"ModalitiesInStudy": ["SR", "MR"]}, {"ACC1", "ACC2"}),  # multiple values: any
        ({"AccessionNumber": "ACC3"}, {"ACC3"}),
        ({"PatientBirthDate": "19850101-19851231"}, {"ACC3"}),
        ({"StudyDescription": "desc ACC*"}, {"ACC1", "ACC2", "ACC3"}),
        ({"PatientID": "*"}, {"ACC1", "ACC2", "ACC3"}),  # universal
    ],
)
def test_study_matching_rules(pacs: Pacs, keys: dict, expected: set[str]) -> None:
    seed(pacs)
    got = {a.AccessionNumber for a in find(pacs, "STUDY", **{"AccessionNumber": "", **keys})}
    assert got == expected


def test_uid_list_matching(pacs: Pacs) -> None:
    uids = seed(pacs)
    got = find(pacs, "STUDY", StudyInstanceUID=[uids["s1"], uids["s3"]])
    assert {a.StudyInstanceUID for a in got} == {uids["s1"], uids["s3"]}


def test_key_outside_the_columns_is_matched_on_the_stored_json(pacs: Pacs) -> None:
    seed(pacs)
    got = find(pacs, "IMAGE", PatientID="P2", RescaleIntercept="-1024", SOPInstanceUID="")
    assert len(got) == 3
    assert find(pacs, "IMAGE", PatientID="P2", RescaleIntercept="7") == []


def test_sequence_matching_on_stored_json(pacs: Pacs) -> None:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-A0100", "SRT", "Brain"
    ds = tiny_ct("SEQ", generate_uid(), generate_uid(), 1, AnatomicRegionSequence=[code])
    pacs.archive.store_bytes(encode(ds))
    wanted, other = Dataset(), Dataset()
    wanted.CodeValue, other.CodeValue = "T-A0100", "T-00000"
    assert len(find(pacs, "IMAGE", PatientID="SEQ", AnatomicRegionSequence=[wanted])) == 1
    assert find(pacs, "IMAGE", PatientID="SEQ", AnatomicRegionSequence=[other]) == []


@pytest.mark.parametrize("level", [None, "", "FOO"])
def test_missing_or_unknown_level_is_an_invalid_query(level: str | None) -> None:
    identifier = Dataset()
    if level is not None:
        identifier.QueryRetrieveLevel = level
    with pytest.raises(InvalidQuery, match="QueryRetrieveLevel"):
        query.Query(identifier)


def test_study_root_has_no_patient_level() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    with pytest.raises(InvalidQuery, match="Study Root"):
        query.Query(identifier, model="STUDY")


def test_malformed_date_range_is_an_invalid_query(pacs: Pacs) -> None:
    with pytest.raises(InvalidQuery):
        find(pacs, "STUDY", StudyDate="2024-13-45xx")


def test_delete_study_removes_rows_and_files(pacs: Pacs) -> None:
    uids = seed(pacs)
    paths = [i.path for i in pacs.archive.instances(study_uid=uids["s1"])]
    assert len(paths) == 4 and all(p.exists() for p in paths)
    assert pacs.archive.delete("study", uids["s1"]) == 4
    assert not any(p.exists() for p in paths)
    assert {a.StudyInstanceUID for a in find(pacs, "STUDY", StudyInstanceUID="")} == {uids["s2"], uids["s3"]}
    assert count(pacs, Series) == 2
    pacs.archive.delete("patient", "P2")
    assert count(pacs, Patient) == 1
    with pytest.raises(NotFound):
        pacs.archive.delete("study", uids["s1"])


def test_migrations_are_idempotent(tmp_path: Path, database_url: str) -> None:
    first = make_pacs(tmp_path, database_url)
    first.archive.store_bytes(encode(ct_dataset()))
    first.close()
    again = make_pacs(tmp_path, database_url)  # upgrading an up-to-date index changes nothing, loses nothing
    assert count(again, Instance) == 1
    again.close()
