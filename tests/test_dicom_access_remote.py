"""Unknown AE titles by where they call from (issue 12): from another host they may echo and store only
(``unknown_ae_services``, Orthanc's defaults); from this machine's loopback every service
(``trust_loopback_aes``), unless that is turned off. The other host is a network namespace joined to this one
by a veth pair, made by the test (root and iproute2 needed: a developer machine without them skips)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from typing import Iterator

import pytest

from support import Server, require

NOT_AUTHORIZED = 0x0124
CLIENT = r"""
import json, sys
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification, StudyRootQueryRetrieveInformationModelFind as FIND
from hounsfield.dimse.tuning import leave_responses_to_the_sender
leave_responses_to_the_sender()  # three requests on one association: see tests/conftest.py
host, port = sys.argv[1], int(sys.argv[2])
ae = AE(ae_title="STRANGER")
for cx in (Verification, FIND, CTImageStorage):
    ae.add_requested_context(cx, [ExplicitVRLittleEndian])
assoc = ae.associate(host, port, ae_title="HOUNSFIELD")
out = {"echo": assoc.send_c_echo().Status}
q = Dataset(); q.QueryRetrieveLevel = "STUDY"; q.StudyInstanceUID = ""
out["find"] = [s.Status for s, _ in assoc.send_c_find(q, FIND)][-1]
ds = Dataset()
ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID, ds.Modality = generate_uid(), generate_uid(), "REMOTE1", "CT"
ds.file_meta = Dataset(); ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
out["store"] = assoc.send_c_store(ds).Status
assoc.release()
print(json.dumps(out))
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def other_host() -> Iterator[tuple[str, str]]:
    """(namespace, this host's address as the namespace reaches it)."""
    require(os.geteuid() == 0 and shutil.which("ip") is not None, "network namespaces need root and iproute2")
    name = f"hf{uuid.uuid4().hex[:8]}"
    host_if, ns_if = f"{name}a", f"{name}b"
    ip("netns", "add", name)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", name)
        ip("addr", "add", "10.231.7.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", name, "ip", "addr", "add", "10.231.7.2/30", "dev", ns_if)
        ip("netns", "exec", name, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield name, "10.231.7.1"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def statuses(server: Server, host: str, namespace: str | None = None) -> dict[str, int]:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    proc = subprocess.run([*prefix, sys.executable, "-c", CLIENT, host, str(server.dicom_port)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("trust_loopback", [True, False])
def test_an_unknown_ae_may_do_what_its_address_allows(tmp_path, other_host, trust_loopback: bool) -> None:
    namespace, address = other_host
    srv = Server(tmp_path / "data", config=f"trust_loopback_aes = {str(trust_loopback).lower()}\n").start()
    try:
        remote = statuses(srv, address, namespace)
        assert remote == {"echo": 0, "find": NOT_AUTHORIZED, "store": 0}
        local = statuses(srv, "127.0.0.1")
        assert local == ({"echo": 0, "find": 0, "store": 0} if trust_loopback
                         else {"echo": 0, "find": NOT_AUTHORIZED, "store": 0})
        log = srv.log_text()
        assert "STRANGER" in log and "10.231.7.2" in log and "may not use find" in log
    finally:
        srv.stop()


ECHO = r"""
import sys
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
host, port, calling, called = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
reasons = []
ae = AE(ae_title=calling)
ae.add_requested_context(Verification)
assoc = ae.associate(host, port, ae_title=called,
                     evt_handlers=[(evt.EVT_REJECTED, lambda e: reasons.append(e.assoc.acceptor.primitive.diagnostic))])
if assoc.is_established:
    print("echo", assoc.send_c_echo().Status)
    assoc.release()
else:
    print("rejected", reasons[0] if reasons else None)
"""


def echo(server: Server, host: str, calling: str, called: str = "HOUNSFIELD", namespace: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    proc = subprocess.run([*prefix, sys.executable, "-c", ECHO, host, str(server.dicom_port), calling, called],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_a_node_calling_from_another_address_and_a_wrong_called_ae_are_rejected(tmp_path, other_host) -> None:
    namespace, address = other_host
    config = ("check_peer_address = true\ncheck_called_ae = true\n"
              '[peers.local]\nae_title = "LOCALNODE"\nhost = "127.0.0.1"\nport = 104\n')
    srv = Server(tmp_path / "data", config=config).start()
    try:
        assert echo(srv, "127.0.0.1", "LOCALNODE") == "echo 0"  # from its own host
        assert echo(srv, address, "LOCALNODE", namespace=namespace) == "rejected 3"  # calling AE not recognised
        assert echo(srv, address, "SOMEONE", namespace=namespace) == "echo 0"  # unknown AEs: unknown_ae_services
        assert echo(srv, "127.0.0.1", "LOCALNODE", called="NOTTHISONE") == "rejected 7"  # called AE not recognised
        log = srv.log_text()
        assert "node local is configured at 127.0.0.1" in log and "10.231.7.2" in log
        assert "it called AE title 'NOTTHISONE'" in log
    finally:
        srv.stop()
