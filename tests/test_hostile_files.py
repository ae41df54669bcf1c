"""Hostile and careless files: nothing one file holds can stop the archive, or take another instance's place.

- Sequences nested beyond ``max_sequence_depth`` are refused by every way in (C-STORE, STOW-RS and upload,
  import); a pending file the indexer cannot take anyway is quarantined, and the files behind it are indexed.
- Names on disk never collide: UIDs that differ only in what a lossy file name would drop, a file of an
  earlier layout already at the place, a crash's leftover. UIDs are checked as PS3.5 9.1 says, with the policy.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND
from sqlalchemy import select, update

from factories import encode, nested_instance, tiny_ct
from hounsfield import config
from hounsfield.archive import StoreOutcome
from hounsfield.dicomfile import read_header
from hounsfield.errors import InvalidDataset
from hounsfield.headerjson import MAX_DEPTH
from hounsfield.models import Instance
from hounsfield.pacs import Pacs
from hounsfield.web.app import create_app
from support import Server, hounsfield


def make_pacs(tmp_path: Path, database_url: str = "", **settings) -> Pacs:
    return Pacs(config.load(None, environ={}, data_dir=tmp_path / "data", database_url=database_url, **settings))


@pytest.fixture
def pacs(tmp_path: Path):
    p = make_pacs(tmp_path)
    yield p
    p.close()


def incoming(pacs: Pacs, data: bytes) -> Path:
    """A complete received file in ``.incoming``, as the DICOM service hands it to the archive."""
    path = pacs.files.incoming / f"{generate_uid()}.part"
    path.write_bytes(data)
    return path


def depth_of(ds: Dataset) -> int:
    depth = 0
    while "ContentSequence" in ds:
        ds, depth = ds.ContentSequence[0], depth + 1
    return depth


# ---- nesting ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("defined", [False, True], ids=["undefined-lengths", "defined-lengths"])
def test_sequences_nested_too_deep_are_refused_by_every_way_in(pacs: Pacs, defined: bool) -> None:
    hostile = nested_instance(1000, defined=defined)  # ~37 KB with undefined lengths, the tester's file
    for keys_only in (True, False):
        with pytest.raises(InvalidDataset, match="nest deeper than 64"):
            read_header(hostile, keys_only=keys_only)
    with pytest.raises(InvalidDataset, match="nest deeper"):
        pacs.archive.accept_file(incoming(pacs, hostile), "HOSTILE")  # C-STORE's way in
    with pytest.raises(InvalidDataset, match="nest deeper"):
        pacs.archive.store_bytes(hostile, "stow")  # STOW-RS, upload, import
    assert pacs.files.pending_files() == [] and pacs.archive.instances() == []


@pytest.mark.parametrize("defined", [False, True], ids=["undefined-lengths", "defined-lengths"])
def test_nesting_up_to_the_limit_is_stored_whole(pacs: Pacs, defined: bool) -> None:
    data = nested_instance(MAX_DEPTH, defined=defined)
    pacs.archive.accept_file(incoming(pacs, data), "SR")
    assert pacs.archive.index_pending() == 1
    (stored,) = pacs.archive.instances()
    assert stored.path.read_bytes() == data
    assert depth_of(dcmread(stored.path)) == MAX_DEPTH


def test_the_depth_limit_is_a_setting(tmp_path: Path) -> None:
    p = make_pacs(tmp_path, max_sequence_depth=3)
    with pytest.raises(InvalidDataset, match="nest deeper than 3"):
        p.archive.store_bytes(nested_instance(4))
    assert p.archive.store_bytes(nested_instance(3)).outcome is StoreOutcome.STORED
    p.close()


# ---- quarantine ------------------------------------------------------------------------------------------
def test_a_pending_file_the_indexer_cannot_take_is_quarantined_and_the_queue_goes_on(pacs: Pacs,
                                                                                      tmp_path: Path) -> None:
    """As if an earlier version had acknowledged the hostile file: it is set aside with its reason, the files
    behind it are indexed, and REST and the CLI show it."""
    before, after = tiny_ct("Q1", generate_uid(), generate_uid(), 1), tiny_ct("Q2", generate_uid(), generate_uid(), 1)
    pacs.archive.accept_file(incoming(pacs, encode(before)), "A")
    hostile = pacs.files.put_pending(incoming(pacs, nested_instance(1000)), "00000000000000000001-1-1_EVIL.dcm")
    pacs.archive.accept_file(incoming(pacs, encode(after)), "A")
    assert pacs.archive.index_pending() == 2
    assert {i.sop_instance_uid for i in pacs.archive.instances()} == {before.SOPInstanceUID, after.SOPInstanceUID}
    assert pacs.files.pending_files() == []
    (record,) = pacs.archive.quarantined()
    assert record["name"] == hostile.name and "nest deeper" in record["reason"] and record["origin"] == "EVIL"
    assert (pacs.files.quarantine_dir / hostile.name).is_file()

    with TestClient(create_app(pacs)) as client:
        listed = client.get("/api/quarantine").json()
        assert [r["name"] for r in listed] == [hostile.name] and "nest deeper" in listed[0]["reason"]
        assert client.get("/health").json()["quarantined"] == 1
        retried = client.post(f"/api/quarantine/{hostile.name}/retry").json()
        assert retried == {"name": hostile.name, "indexed": False}  # still hostile: back in quarantine
        assert len(client.get("/api/quarantine").json()) == 1
        name = client.get("/api/quarantine").json()[0]["name"]
        assert client.delete("/api/quarantine/../index.sqlite").status_code == 404
        assert client.delete(f"/api/quarantine/{name}").json() == {"deleted": name}
        assert client.get("/api/quarantine").json() == []
        assert client.delete(f"/api/quarantine/{name}").status_code == 404


def test_the_cli_lists_the_quarantine(tmp_path: Path) -> None:
    p = make_pacs(tmp_path)
    p.files.put_pending(incoming(p, nested_instance(100)), "00000000000000000001-1-1_EVIL.dcm")
    p.archive.index_pending()
    p.close()
    run = hounsfield("quarantine", "--data-dir", tmp_path / "data", env={"COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "00000000000000000001-1-1_EVIL.dcm" in out and "nest deeper" in out and "EVIL" in out


def test_an_unexpected_failure_quarantines_only_that_file(pacs: Pacs, monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = tiny_ct("U1", generate_uid(), generate_uid(), 1), tiny_ct("U2", generate_uid(), generate_uid(), 1)
    real_index = pacs.archive._index

    def failing(conn, header, *args, **kwargs):  # noqa: ANN001, ANN202 - a bug met by one file only
        if header.sop_instance_uid == bad.SOPInstanceUID:
            raise RecursionError("maximum recursion depth exceeded")
        return real_index(conn, header, *args, **kwargs)

    monkeypatch.setattr(pacs.archive, "_index", failing)
    pacs.archive.accept_file(incoming(pacs, encode(bad)), "A")
    pacs.archive.accept_file(incoming(pacs, encode(good)), "A")
    assert pacs.archive.index_pending() == 1
    assert [i.sop_instance_uid for i in pacs.archive.instances()] == [good.SOPInstanceUID]
    (record,) = pacs.archive.quarantined()
    assert record["reason"].startswith("RecursionError")
    # the layout keeps nothing of the failed one
    assert not list(pacs.files.root.glob(f"U2/**/{bad.SOPInstanceUID}.dcm"))
    monkeypatch.undo()
    assert pacs.archive.retry_quarantined(record["name"]) is True
    assert pacs.archive.instance(bad.SOPInstanceUID).path.read_bytes() == encode(bad)
    assert pacs.archive.quarantined() == []


# ---- names on disk ---------------------------------------------------------------------------------------
def with_uid(sop_uid: str, patient: str = "COLLIDE", **attrs: object) -> bytes:
    ds = tiny_ct(patient, "1.2.826.0.1.3680043.10.1", "1.2.826.0.1.3680043.10.2", 1, **attrs)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    return encode(ds)


def test_uids_that_a_lossy_name_would_merge_get_files_of_their_own(pacs: Pacs) -> None:
    """``1.2.3`` and ``1.2.3.`` (a trailing dot, non-conformant but accepted): two instances, two files."""
    first, second = "1.2.826.0.1.3680043.10.7", "1.2.826.0.1.3680043.10.7."
    data = {uid: with_uid(uid, PatientName=name) for uid, name in ((first, "FIRST"), (second, "SECOND"))}
    for uid in (first, second):
        assert pacs.archive.store_bytes(data[uid]).outcome is StoreOutcome.STORED
    paths = {uid: pacs.archive.instance(uid).path for uid in (first, second)}
    assert paths[first] != paths[second]
    for uid in (first, second):
        assert paths[uid].read_bytes() == data[uid]
    pacs.archive.delete("instance", second)
    assert paths[first].read_bytes() == data[first]  # deleting one never deletes the other's file
    assert not paths[second].exists()


@pytest.mark.parametrize("uid, why", [
    ("1.2.826.0.1.3680043.10/7", "'/'"),
    ("1.2.826.0.1.3680043.10_7", "'_'"),
    ("1.2.826.0.1.3680043.10\x007", "'\\x00'"),
    ("1." + "2" * 78, "80 characters"),
    ("1.2.826.0.1.3680043.10.7abc", "'a'"),
])
def test_values_that_cannot_be_uids_are_refused(pacs: Pacs, uid: str, why: str) -> None:
    original = with_uid("1.2.826.0.1.3680043.10.7")
    pacs.archive.store_bytes(original)
    with pytest.raises(InvalidDataset, match="SOPInstanceUID is not a valid UID") as refused:
        pacs.archive.store_bytes(with_uid(uid))
    assert why in str(refused.value)
    with pytest.raises(InvalidDataset, match="not a valid UID"):
        pacs.archive.accept_file(incoming(pacs, with_uid(uid)), "A")
    assert pacs.archive.instance("1.2.826.0.1.3680043.10.7").path.read_bytes() == original
    assert len(pacs.archive.instances()) == 1


def test_two_long_uids_sharing_their_first_64_characters_are_refused(pacs: Pacs) -> None:
    stem = "1.2.826.0.1.3680043.10." + "1" * 41  # 64 characters: a valid UID
    assert len(stem) == 64
    pacs.archive.store_bytes(with_uid(stem))
    for tail in ("1" * 16, "2" * 16):
        with pytest.raises(InvalidDataset, match="80 characters"):
            pacs.archive.store_bytes(with_uid(stem + tail))
    assert [i.sop_instance_uid for i in pacs.archive.instances()] == [stem]


def test_uid_policy_strict_refuses_what_lenient_keeps(tmp_path: Path) -> None:
    leading_zero = "1.2.826.0.1.3680043.10.07"
    lenient = make_pacs(tmp_path / "lenient")
    assert lenient.archive.store_bytes(with_uid(leading_zero)).outcome is StoreOutcome.STORED
    assert lenient.archive.store_bytes(with_uid("1.2.826.0.1.3680043.10.8 ")).outcome is StoreOutcome.STORED
    assert lenient.archive.instance("1.2.826.0.1.3680043.10.8").sop_instance_uid == "1.2.826.0.1.3680043.10.8"
    lenient.close()
    strict = make_pacs(tmp_path / "strict", uid_policy="strict")
    with pytest.raises(InvalidDataset, match="leading zero"):
        strict.archive.store_bytes(with_uid(leading_zero))
    strict.close()
    with pytest.raises(ValueError, match="uid_policy"):
        config.load(None, environ={"HOUNSFIELD_UID_POLICY": "sloppy"})


def test_a_file_of_another_instance_at_the_place_is_never_replaced(pacs: Pacs) -> None:
    """An earlier layout (or anything else) put another instance's file where this one would go."""
    other = with_uid("1.2.826.0.1.3680043.10.20", PatientName="OTHER")
    pacs.archive.store_bytes(other)
    mine = with_uid("1.2.826.0.1.3680043.10.21", PatientName="MINE")
    mine_rel = "COLLIDE/1.2.826.0.1.3680043.10.1/1.2.826.0.1.3680043.10.2/1.2.826.0.1.3680043.10.21.dcm"
    other_path = pacs.archive.instance("1.2.826.0.1.3680043.10.20").path
    os.rename(other_path, pacs.files.path(mine_rel))
    with pacs.db.session() as s:  # the index says the other instance lives there
        s.execute(update(Instance).where(Instance.sop_instance_uid == "1.2.826.0.1.3680043.10.20")
                  .values(path=mine_rel))
    assert pacs.archive.store_bytes(mine).outcome is StoreOutcome.STORED
    assert pacs.archive.instance("1.2.826.0.1.3680043.10.20").path.read_bytes() == other
    assert pacs.archive.instance("1.2.826.0.1.3680043.10.21").path.read_bytes() == mine


def test_a_crash_leftover_at_the_place_is_replaced(pacs: Pacs) -> None:
    mine = with_uid("1.2.826.0.1.3680043.10.30")
    rel = "COLLIDE/1.2.826.0.1.3680043.10.1/1.2.826.0.1.3680043.10.2/1.2.826.0.1.3680043.10.30.dcm"
    pacs.files.put_bytes(rel, b"half of an earlier attempt")  # placed, then the crash before the index row
    assert pacs.archive.store_bytes(mine).outcome is StoreOutcome.STORED
    assert pacs.archive.instance("1.2.826.0.1.3680043.10.30").path.read_bytes() == mine


def test_values_longer_than_the_index_columns_are_stored(tmp_path: Path, database_url: str) -> None:
    """PostgreSQL refuses a value longer than its column (SQLite keeps it): the indexer must not choke on a
    10,000-character Patient ID or an Instance Number beyond 32 bits; the header keeps them whole."""
    p = make_pacs(tmp_path, database_url)
    ds = tiny_ct("P" * 10000, generate_uid(), generate_uid(), 1, Modality="X" * 300, StudyID="S" * 100)
    ds.InstanceNumber = 10**12
    p.archive.accept_file(incoming(p, encode(ds)), "A")
    assert p.archive.index_pending() == 1 and p.archive.quarantined() == []
    with p.db.session() as s:
        assert s.scalar(select(Instance.instance_number)) is None
    p.close()


# ---- the running server ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("hostile") / "data").start()
    yield srv
    srv.stop()


def send(server: Server, data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """C-STORE the bytes as they are (pynetdicom's chunked send: the client does not decode the dataset)."""
    path = tmp_path / f"{generate_uid()}.dcm"
    path.write_bytes(data)
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return assoc.send_c_store(path).Status
    finally:
        assoc.release()


def find_patient(server: Server, patient_id: str) -> list[str]:
    ae = AE(ae_title="FINDER")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    q = Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.PatientID = patient_id
    q.StudyInstanceUID = q.SeriesInstanceUID = q.SOPInstanceUID = ""
    found = [str(i.SOPInstanceUID) for s, i in assoc.send_c_find(q, FIND) if s and s.Status == 0xFF00]
    assoc.release()
    return found


def test_c_store_of_a_hostile_dataset_is_refused_and_the_server_goes_on(server: Server, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert send(server, nested_instance(1000), tmp_path, monkeypatch) == 0xC000
    assert send(server, nested_instance(1000, defined=True), tmp_path, monkeypatch) == 0xC000
    assert "nest deeper than 64" in server.log_text()
    assert send(server, with_uid("1.2.826.0.1.3680043.10.40/1"), tmp_path, monkeypatch) == 0xC000
    assert "not a valid UID" in server.log_text()
    good = tiny_ct("AFTER-HOSTILE", generate_uid(), generate_uid(), 1)
    assert send(server, encode(good), tmp_path, monkeypatch) == 0x0000
    assert find_patient(server, "AFTER-HOSTILE") == [good.SOPInstanceUID]
    health = requests.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["indexer"]["running"] is True and health.json()["quarantined"] == 0
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + nested_instance(1000) + b"\r\n--b--\r\n"
    stow = requests.post(f"{server.url}/dicom-web/studies", data=body, timeout=30,
                         headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert stow.status_code == 409  # PS3.18 10.5.3: none stored, with a failure reason per instance
    assert find_patient(server, "NESTED") == []


def test_health_reports_a_stopped_indexer(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        pid = requests.get(f"{srv.url}/health", timeout=10).json()["indexer"]["pid"]
        os.kill(pid, signal.SIGKILL)
        while (answer := requests.get(f"{srv.url}/health", timeout=10)).status_code == 200:
            pass  # until the main process sees the indexer gone
        assert answer.status_code == 503 and answer.json()["status"] == "degraded"
        assert any("indexer process has stopped" in p for p in answer.json()["problems"])
    finally:
        srv.stop()
