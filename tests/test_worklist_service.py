"""The worklist domain in process, on SQLite and PostgreSQL: site options, status transitions, expiry,
bulk import, item ids, the migrations against the models."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table

from hounsfield.config import load
from hounsfield.db import MIGRATIONS, Database
from hounsfield.errors import Conflict, InvalidQuery
from hounsfield.models import Base
from hounsfield.pacs import Pacs
from hounsfield.worklist import Options, Worklist, flat, items, mwl
from hounsfield.worklist.items import InvalidItem
from hounsfield.worklist.models import WorklistItem
from test_worklist_common import TODAY, days, modality_query, ymd


@pytest.fixture
def pacs(tmp_path: Path, database_url: str):
    p = Pacs(load(data_dir=str(tmp_path / "data"), database_url=database_url or None))
    yield p
    p.close()


def _body(**fields) -> dict:
    return {"patient_id": "P1", "patient_name": "Doe^Jane", "modality": "CT", "station_aet": "CT1",
            "start": f"{TODAY.isoformat()} 09:30", **fields}


def _add(pacs: Pacs, **fields) -> int:
    return pacs.worklist.schedule(flat.to_dataset(_body(**fields)))[0].id


def _with(pacs: Pacs, **options) -> Worklist:
    return Worklist(pacs.db, Options(**options))


def _ids(worklist: Worklist, calling_ae: str = "CT1", **keys) -> list[str]:
    return [str(a.PatientID) for a in worklist.find(modality_query(**keys), calling_ae=calling_ae)]


def test_migration_matches_models(pacs: Pacs) -> None:
    with pacs.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_item_ids_are_not_reused_after_a_delete(pacs: Pacs) -> None:
    """REST paths, CLI commands and MPPS links name items by id: a deleted item's id must not name another one
    (SQLite's plain rowid hands out the highest id + 1 again; PostgreSQL's sequence never does)."""
    first, second = _add(pacs, patient_id="A"), _add(pacs, patient_id="B")
    pacs.worklist.delete(second)
    third = _add(pacs, patient_id="C")
    assert third > second > first
    pacs.worklist.delete(third)
    reopened = Worklist(Database(pacs.db.url))  # the count is kept in the database, not in the process
    assert reopened.schedule(flat.to_dataset(_body(patient_id="D")))[0].id > third
    reopened.db.dispose()


def test_upgrade_keeps_item_ids_and_stops_their_reuse(tmp_path: Path, database_url: str) -> None:
    """Migration 0004 on an index made before it (at 0003), on SQLite and PostgreSQL alike."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    now = datetime.now()
    rows = [{**items.row(flat.to_dataset(_body(patient_id=p, step_id=p)), origin="api"), "created_at": now,
             "updated_at": now} for p in ("A", "B")]
    with db.engine.begin() as conn:
        table = Table("worklist_items", MetaData(), autoload_with=conn)  # as 0003 made it
        conn.execute(table.insert(), [{c.name: r.get(c.name, "") for c in table.c if c.name != "id"} for r in rows])
    db.migrate()
    worklist = Worklist(db)
    assert [(i.id, str(i.dataset.PatientID)) for i in worklist.list()[1]] == [(1, "A"), (2, "B")]
    worklist.delete(2)
    assert worklist.schedule(flat.to_dataset(_body(patient_id="C")))[0].id == 3
    db.dispose()


def test_upgrade_fills_the_order_numbers(tmp_path: Path, database_url: str) -> None:
    """Migration 0012 fills the order number columns of the items stored before it from their DICOM JSON."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0011")
    now = datetime.now()
    ds = flat.to_dataset(_body(patient_id="A", step_id="A"))
    ds.PlacerOrderNumberImagingServiceRequest, ds.FillerOrderNumberImagingServiceRequest = " PL1 ", "FI1"
    row = items.row(ds, origin="hl7")
    assert (row["placer_order_number"], row["filler_order_number"]) == ("PL1", "FI1")
    old = {k: v for k, v in row.items() if not k.endswith("_order_number")}
    plain = {k: v for k, v in items.row(flat.to_dataset(_body(patient_id="B", step_id="B")), origin="api").items()
             if not k.endswith("_order_number")}
    with db.engine.begin() as conn:
        table = Table("worklist_items", MetaData(), autoload_with=conn)  # as 0011 made it
        conn.execute(table.insert(), [{c.name: {**r, "created_at": now, "updated_at": now}.get(c.name, "")
                                       for c in table.c if c.name != "id"} for r in (old, plain)])
    db.migrate()
    worklist = Worklist(db)
    with worklist.batch() as batch:
        assert [i.dataset.PatientID for i in batch.items_of_order(placer="PL1", filler="", patient_id="A")] == ["A"]
        assert [i.dataset.PatientID for i in batch.items_of_order(placer="", filler="FI1", patient_id="A")] == ["A"]
        assert batch.items_of_order(placer="PL2", filler="FI1", patient_id="A") == []
    with db.session() as s:
        assert s.query(WorklistItem.patient_id, WorklistItem.placer_order_number).order_by(WorklistItem.id).all() \
            == [("A", "PL1"), ("B", "")]
    db.dispose()


def test_site_options(pacs: Pacs) -> None:
    _add(pacs, patient_id="TODAY_CT1")
    _add(pacs, patient_id="TODAY_CT2", station_aet="CT2")
    _add(pacs, patient_id="FAR", start=f"{days(10).isoformat()} 09:00")
    assert sorted(_ids(pacs.worklist)) == ["FAR", "TODAY_CT1", "TODAY_CT2"]
    assert sorted(_ids(_with(pacs, station_only=True))) == ["FAR", "TODAY_CT1"]
    assert _ids(_with(pacs, station_only=True), calling_ae="NOBODY") == []
    assert sorted(_ids(_with(pacs, days=2))) == ["TODAY_CT1", "TODAY_CT2"]
    assert len(_ids(_with(pacs, max_answers=2))) == 2
    assert _ids(pacs.worklist, PatientName="DOE*") == []  # case-sensitive by default
    assert len(_ids(_with(pacs, fuzzy_pn=True), PatientName="doe")) == 3


def test_status_transitions_and_closed_steps(pacs: Pacs) -> None:
    item = _add(pacs)
    with pytest.raises(Conflict):
        pacs.worklist.set_status(item, "COMPLETED")  # must start first
    pacs.worklist.set_status(item, "IN PROGRESS")
    assert _ids(pacs.worklist) == ["P1"]
    pacs.worklist.set_status(item, "COMPLETED")
    assert _ids(pacs.worklist) == []
    assert _ids(_with(pacs, show_closed=True)) == ["P1"]
    for status in ("SCHEDULED", "IN PROGRESS", "CANCELED"):
        with pytest.raises(Conflict):
            pacs.worklist.set_status(item, status)


def test_expiry_discontinues_stale_steps(pacs: Pacs) -> None:
    stale = _add(pacs, patient_id="STALE", start=f"{days(-2).isoformat()} 09:00")
    fresh = _add(pacs, patient_id="FRESH", start=f"{TODAY.isoformat()} 23:59")
    started = _add(pacs, patient_id="STARTED", start=f"{days(-2).isoformat()} 10:00")
    pacs.worklist.set_status(started, "IN PROGRESS")
    worklist = _with(pacs, expire_hours=24)
    assert worklist.expire(datetime.combine(TODAY, datetime.min.time()) + timedelta(hours=12)) == 1
    statuses = {i: pacs.worklist.get(i).status for i in (stale, fresh, started)}
    assert statuses == {stale: "DISCONTINUED", fresh: "SCHEDULED", started: "IN PROGRESS"}
    step = pacs.worklist.get(stale).dataset.ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepStatus == "DISCONTINUED"
    assert sorted(_ids(worklist)) == ["FRESH", "STARTED"]


def test_duplicate_step_is_refused(pacs: Pacs) -> None:
    first = pacs.worklist.get(_add(pacs, step_id="S1"))
    with pytest.raises(Conflict):
        _add(pacs, step_id="S1", study_instance_uid=str(first.dataset.StudyInstanceUID))


def test_invalid_items_and_queries(pacs: Pacs) -> None:
    with pytest.raises(InvalidItem) as bad:
        _add(pacs, patient_sex="MALE!")
    assert bad.value.field == "PatientSex"
    with pytest.raises(InvalidQuery):
        list(pacs.worklist.find(modality_query(ScheduledProcedureStepStartDate="20260230"), calling_ae="X"))
    with pytest.raises(InvalidQuery):
        mwl.identifier({"NoSuchKeyword": "1"})


def test_explain_names_each_key(pacs: Pacs) -> None:
    item = _add(pacs)
    query = modality_query(PatientID="P1", Modality="MR", ScheduledProcedureStepStartDate=f"{ymd(days(1))}-")
    list(pacs.worklist.find(query, calling_ae="MR1"))
    pacs.worklist.queries.record(calling_ae="MR1", address="127.0.0.1:1", identifier=query, answers=0, status=0)
    _, logged = pacs.worklist.queries.recent(limit=1)
    verdicts = {key: (ok, why) for key, ok, why in pacs.worklist.explain(logged[0].id, item)}
    assert verdicts["PatientID"] == (True, "matches")
    assert verdicts["ScheduledProcedureStepSequence>Modality"] == (False, "query MR, item CT")
    assert not verdicts["ScheduledProcedureStepSequence>ScheduledProcedureStepStartDate"][0]


def _reference_answer(requested, stored):
    """The answer as plain pydicom builds it: each requested key from the stored item (zero-length when it has
    none; a sequence key with an item selects within each stored item), plus the item's character set."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    out = Dataset()
    for elem in requested:
        if elem.tag.group == 0 or elem.tag == 0x00080005:
            continue
        wanted = list(elem.value or []) if elem.VR == "SQ" else []
        if elem.tag not in stored:
            out.add_new(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None)
        elif stored[elem.tag].VR == "SQ" and wanted and len(wanted[0]):
            out.add_new(elem.tag, "SQ", Sequence([_reference_answer(wanted[0], item)
                                                  for item in stored[elem.tag].value]))
        else:
            out[elem.tag] = stored[elem.tag]
    if "SpecificCharacterSet" in stored:
        out.SpecificCharacterSet = stored.SpecificCharacterSet
    return out


@pytest.mark.parametrize("charset, name", [(None, "Doe^Jane"), ("ISO_IR 100", "Müller^Jörg"),
                                           ("ISO_IR 192", "Doe^Jane=山田^太郎"),
                                           (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎")])
def test_answers_encode_as_pydicom_would(charset, name) -> None:
    """Answers are encoded (ASCII text directly, anything else through pydicom) byte for byte as pydicom encodes
    the same dataset, in every transfer syntax; ``answer`` is that dataset."""
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    item = mwl.identifier({"PatientID": "P1", "Modality": "CT", "ScheduledStationAETitle": "CT1\\CT2",
                           "ScheduledProcedureStepStartDate": "20260101", "AccessionNumber": "A1"}, return_keys=False)
    item.PatientName = name
    if charset:
        item.SpecificCharacterSet = charset
    item.StudyInstanceUID = "1.2.3"  # odd length: padded with NUL
    item.PatientWeight = "72.5"  # DS, IS, US, binary and a code sequence: written by pydicom
    item.add_new(0x00201208, "IS", "12")
    item.add_new(0x00281050, "DS", ["40", "400.5"])
    item.add_new(0x00280010, "US", 512)
    item.add_new(0x00420011, "OB", b"\x01\x02")
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CT1", "99X", name
    item.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = [code]
    stored = item.to_json_dict()
    whole_steps = Dataset()
    whole_steps.PatientName = None
    whole_steps.PatientWeight = None
    whole_steps.ScheduledProcedureStepSequence = []  # zero-length: the whole stored sequence
    every = Dataset.from_json(stored)
    for keys in (mwl.identifier({}), Dataset(), whole_steps, every):
        query = mwl.MwlQuery(keys)
        reference = _reference_answer(keys, Dataset.from_json(stored))
        for implicit, little in ((True, True), (False, True), (False, False)):
            assert query.encoded_answer(stored, (implicit, little)) == encode(reference, implicit, little)
        assert encode(query.answer(stored), False, True) == encode(reference, False, True)
