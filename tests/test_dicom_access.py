"""Per-node DICOM permissions (access.py): a configured peer uses the services its ``allow`` lists, any other
calling AE those of ``unknown_ae_services``; everything else is answered 0x0124 Refused: Not Authorised, logged,
and leaves nothing behind. And a retrieval refused for any reason answers with its failure status, never with
Success (pynetdicom answers a handler's count of 0 with Success)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StudyRootQueryRetrieveInformationModelFind as FIND,
    StudyRootQueryRetrieveInformationModelGet as GET,
    StudyRootQueryRetrieveInformationModelMove as MOVE,
    Verification,
)

from factories import tiny_ct, write
from hounsfield import config
from support import Server, dcmtk, dcmtk_env, free_port

NOT_AUTHORIZED = 0x0124
STUDY = "1.2.826.0.1.3680043.8.498.4242"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    destination = AE(ae_title="FULL")  # a C-MOVE destination: pynetdicom associates with it before any status
    destination.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
    destination.add_supported_context(Verification)
    port = free_port()
    listener = destination.start_server(("127.0.0.1", port), block=False)
    cfg = (
        'unknown_ae_services = "echo,store"\ntrust_loopback_aes = false\n'
        f'[peers.viewer]\nae_title = "VIEWER"\nhost = "127.0.0.1"\nport = {free_port()}\nallow = ["echo", "find"]\n'
        f'[peers.full]\nae_title = "FULL"\nhost = "127.0.0.1"\nport = {port}\n'
    )
    srv = Server(tmp_path_factory.mktemp("access") / "data", config=cfg).start()
    try:
        yield srv
    finally:
        srv.stop()
        listener.shutdown()


def associate(server: Server, calling: str, *contexts: str, roles: tuple = ()):
    ae = AE(ae_title=calling)
    for cx in contexts:
        ae.add_requested_context(cx, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title, ext_neg=list(roles) or None)
    assert assoc.is_established
    return assoc


def study_query() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = STUDY
    return ds


def stored_count(server: Server, study: str) -> int:
    found = requests.get(f"{server.url}/api/studies", params={"StudyInstanceUID": study}, timeout=30).json()
    return sum(s["NumberOfStudyRelatedInstances"] for s in found)


def store(server: Server, calling: str, ds: Dataset) -> int:
    assoc = associate(server, calling, CTImageStorage)
    try:
        return assoc.send_c_store(ds).Status
    finally:
        assoc.release()


def test_an_unknown_ae_may_echo_and_store_and_nothing_else(server: Server, tmp_path: Path) -> None:
    assert store(server, "STRANGER", tiny_ct("ACC-1", STUDY, STUDY + ".1", 1)) == 0x0000
    assert stored_count(server, STUDY) == 1
    assoc = associate(server, "STRANGER", Verification, FIND, GET, MOVE, ModalityWorklistInformationFind,
                      ModalityPerformedProcedureStep, CTImageStorage,
                      roles=(build_role(CTImageStorage, scp_role=True),))
    try:
        assert assoc.send_c_echo().Status == 0x0000
        assert [s.Status for s, _ in assoc.send_c_find(study_query(), FIND)] == [NOT_AUTHORIZED]
        assert [s.Status for s, _ in assoc.send_c_get(study_query(), GET)] == [NOT_AUTHORIZED]
        assert [s.Status for s, _ in assoc.send_c_move(study_query(), "FULL", MOVE)] == [NOT_AUTHORIZED]
        mwl = Dataset()
        mwl.PatientID = ""
        assert [s.Status for s, _ in assoc.send_c_find(mwl, ModalityWorklistInformationFind)] == [NOT_AUTHORIZED]
        step = Dataset()
        step.PerformedProcedureStepStatus = "IN PROGRESS"
        status, _ = assoc.send_n_create(step, ModalityPerformedProcedureStep, generate_uid())
        assert status.Status == NOT_AUTHORIZED
    finally:
        assoc.release()
    log = server.log_text()
    assert "C-FIND from STRANGER" in log and "may not use find" in log
    assert "may not use worklist" in log and "may not use mpps" in log


def test_a_peer_uses_what_its_allow_lists(server: Server, tmp_path: Path) -> None:
    study = generate_uid()
    assert store(server, "VIEWER", tiny_ct("ACC-2", study, study + ".1", 1)) == NOT_AUTHORIZED
    assert stored_count(server, study) == 0  # refused on the fast receive path: nothing stored, nothing pending
    assert server.cli("quarantine").returncode == 0
    assoc = associate(server, "VIEWER", Verification, FIND, GET, roles=(build_role(CTImageStorage, scp_role=True),))
    try:
        assert assoc.send_c_echo().Status == 0x0000
        answers = [(s.Status, ds) for s, ds in assoc.send_c_find(study_query(), FIND)]
        assert answers[-1][0] == 0x0000 and [ds.StudyInstanceUID for s, ds in answers[:-1]] == [STUDY]
        assert [s.Status for s, _ in assoc.send_c_get(study_query(), GET)] == [NOT_AUTHORIZED]
    finally:
        assoc.release()


def test_a_node_added_through_rest_uses_what_its_allow_lists(server: Server) -> None:
    node = {"name": "restnode", "ae_title": "RESTNODE", "host": "127.0.0.1", "port": 104, "allow": ["echo", "find"]}
    r = requests.put(f"{server.url}/api/peers/restnode", json=node, timeout=30)
    assert r.status_code == 200 and r.json()["allow"] == ["echo", "find"]
    listed = {p["name"]: p for p in requests.get(f"{server.url}/api/peers", timeout=30).json()}
    assert listed["restnode"]["allow"] == ["echo", "find"] and listed["full"]["allow"] is None  # None: all
    assert store(server, "RESTNODE", tiny_ct("ACC-9", generate_uid(), generate_uid(), 1)) == NOT_AUTHORIZED
    assoc = associate(server, "RESTNODE", FIND)
    try:
        assert [s.Status for s, _ in assoc.send_c_find(study_query(), FIND)][-1] == 0x0000
    finally:
        assoc.release()
    bad = requests.put(f"{server.url}/api/peers/restnode", json={**node, "allow": ["echo", "root"]}, timeout=30)
    assert bad.status_code == 422
    requests.delete(f"{server.url}/api/peers/restnode", timeout=30)


def test_a_refused_dcmtk_store_is_reported_to_the_modality(server: Server, tmp_path: Path) -> None:
    study = generate_uid()
    path = write(tiny_ct("ACC-3", study, study + ".1", 1), tmp_path / "one.dcm")
    run = subprocess.run([dcmtk("storescu"), "-v", "-aet", "VIEWER", "-aec", server.ae_title, "127.0.0.1",
                          str(server.dicom_port), str(path)], capture_output=True, text=True, env=dcmtk_env(),
                         timeout=120)
    said = (run.stdout + run.stderr).lower()
    assert "status: 0x124" in said, said  # dcmtk 3.6.7's words for a status it has no name for
    assert run.returncode != 0
    assert stored_count(server, study) == 0


def test_a_refused_retrieval_answers_its_failure_not_success(server: Server) -> None:
    """A C-GET / C-MOVE whose identifier cannot be a query gets a failure status (0xA900 / 0xC000), as a C-FIND
    does; pynetdicom would answer the old handlers' "0 sub-operations" with 0x0000."""
    bad = Dataset()
    bad.QueryRetrieveLevel = "NOWHERE"
    assoc = associate(server, "FULL", FIND, GET, MOVE, roles=(build_role(CTImageStorage, scp_role=True),))
    try:
        find = [s.Status for s, _ in assoc.send_c_find(bad, FIND)]
        get = [s.Status for s, _ in assoc.send_c_get(bad, GET)]
        move = [s.Status for s, _ in assoc.send_c_move(bad, "FULL", MOVE)]
    finally:
        assoc.release()
    assert find[-1] in (0xA900, 0xC000)
    assert get[-1] == find[-1] and move[-1] == find[-1]


def test_a_peer_allow_list_with_an_unknown_service_names_the_peer(tmp_path: Path) -> None:
    cfg = tmp_path / "h.toml"
    cfg.write_text('[peers.odd]\nae_title = "ODD"\nhost = "h"\nport = 104\nallow = ["echo", "print"]\n')
    with pytest.raises(ValueError, match=r"peer 'odd' allow: unknown DICOM service\(s\) print"):
        config.load(cfg, environ={})
