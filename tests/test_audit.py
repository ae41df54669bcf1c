"""The audit trail (issue 12): a scripted day through a real ``hounsfield serve`` (SQLite and PostgreSQL) driven
by pynetdicom, dcmtk's tools, REST and the CLI leaves exactly the audit rows it should; the same events reach a
syslog collector in the test as RFC 5424 messages, framed by octet counting, carrying PS3.15 A.5 DICOM Audit
Messages (over TCP and TLS); a collector that is down, slow or untrusted costs the DICOM service nothing and
loses no row; ``GET /api/audit`` filters and refuses hostile parameters with a 4xx; ``hounsfield audit``.

Every expectation is written from what the test itself did (AE titles, patients, studies, counts) and from
PS3.15 as read here, never from the code under test."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind as FIND,
    StudyRootQueryRetrieveInformationModelGet as GET,
    StudyRootQueryRetrieveInformationModelMove as MOVE,
)

from factories import encode, tiny_ct, write
from support import Server, dcmtk, dcmtk_env, free_port, hounsfield, require_module
from test_worklist_common import add_item, modality_query, mpps, mpps_in_progress, mwl_find

LOOPBACK = "127.0.0.1"
POLL = 0.05
PATIENCE = 60.0  # seconds a condition may take to hold (the server writes audit rows in the background)

# PS3.15 A.5.3 and CID 400 (EventID, EventActionCode) of each kind of event, as this test reads the standard.
ATNA = {
    "instances_stored": ("110104", "C"),  # DICOM Instances Transferred, Create
    "retrieve_answered": ("110104", "R"),  # DICOM Instances Transferred, Read
    "query_answered": ("110112", "E"),  # Query, Execute
    "worklist_queried": ("110112", "E"),
    "worklist_item_created": ("110111", "C"),  # Procedure Record
    "worklist_item_changed": ("110111", "U"),
    "worklist_item_cancelled": ("110111", "U"),
    "mpps_received": ("110111", "U"),
    "study_deleted": ("110105", "D"),  # DICOM Study Deleted
    "access_refused": ("110113", "E"),  # Security Alert
}
OUTCOME_INDICATORS = {"0", "4", "8", "12"}  # A.5.1: success, minor, serious, major failure
SYSLOG_HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) - \xef\xbb\xbf")  # RFC 5424 6, BOM: 6.4


def until(get: Callable[[], Any], ok: Callable[[Any], bool], what: str, timeout: float = PATIENCE) -> Any:
    """``get()`` as soon as ``ok`` holds for it; fails naming ``what`` (and the last value) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s; last seen: {value!r}"[:4000])
        time.sleep(POLL)


# ---- a syslog collector in the test ------------------------------------------------------------------------------
class Collector:
    """Accepts TCP (or, with ``context``, TLS) connections and cuts what arrives into RFC 6587 3.4.1 frames
    (``MSG-LEN SP SYSLOG-MSG``), keeping each SYSLOG-MSG. ``reading=False``: accepts and never reads (a
    collector that has stopped taking messages)."""

    def __init__(self, *, context: ssl.SSLContext | None = None, port: int = 0, reading: bool = True) -> None:
        self.listener = socket.create_server((LOOPBACK, port))
        self.port = self.listener.getsockname()[1]
        self.context = context
        self.reading = reading
        self.frames: list[bytes] = []
        self.errors: list[BaseException] = []
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            if self.reading:
                threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            pending = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
                while b" " in pending:
                    length, _, rest = pending.partition(b" ")
                    assert re.fullmatch(rb"[1-9][0-9]*", length), f"not an octet count: {length[:40]!r}"
                    if len(rest) < int(length):
                        break
                    self.frames.append(rest[:int(length)])
                    pending = rest[int(length):]
        except BaseException as exc:  # noqa: BLE001 - what went wrong is the test's to look at
            self.errors.append(exc)

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


def parse(frame: bytes) -> ET.Element:
    """The DICOM Audit Message in one syslog message, checked against RFC 5424 and PS3.15 A.5.1 on the way."""
    header = SYSLOG_HEADER.match(frame)
    assert header, frame[:200]
    pri, timestamp, _host, app, procid, msgid = header.groups()
    assert int(pri) // 8 == 10 and int(pri) % 8 in (4, 5)  # facility 10 (security), notice or warning
    assert timestamp.endswith(b"Z")
    datetime.fromisoformat(timestamp[:-1].decode() + "+00:00")
    assert app == b"hounsfield" and procid.isdigit() and msgid == b"IHE+RFC-3881"
    message = ET.fromstring(frame[header.end():])
    check_schema(message)
    return message


def _coded(element: ET.Element) -> None:
    """A.5.1 CodedValueType: csd-code, codeSystemName and originalText."""
    assert element.get("csd-code") and element.get("codeSystemName") and element.get("originalText"), element.attrib


def check_schema(message: ET.Element) -> None:
    """The shape PS3.15 A.5.1 gives an AuditMessage: EventIdentification, ActiveParticipant+,
    AuditSourceIdentification, ParticipantObjectIdentification* in that order, with their mandatory parts."""
    assert message.tag == "AuditMessage"
    tags = [child.tag for child in message]
    assert re.fullmatch(r"E(A)+S(P)*", "".join({"EventIdentification": "E", "ActiveParticipant": "A",
                                                  "AuditSourceIdentification": "S",
                                                  "ParticipantObjectIdentification": "P"}[t] for t in tags)), tags
    event = message.find("EventIdentification")
    assert event.get("EventActionCode") in set("CRUDE")
    assert datetime.fromisoformat(event.get("EventDateTime")).tzinfo is not None
    assert event.get("EventOutcomeIndicator") in OUTCOME_INDICATORS
    assert [c.tag for c in event][0] == "EventID"
    for coded in event.findall("EventID") + event.findall("EventTypeCode"):
        _coded(coded)
    requestors = 0
    for participant in message.findall("ActiveParticipant"):
        assert participant.get("UserID") is not None
        assert participant.get("UserIsRequestor") in ("true", "false")
        requestors += participant.get("UserIsRequestor") == "true"
        if participant.get("NetworkAccessPointID"):
            assert participant.get("NetworkAccessPointTypeCode") in {"1", "2", "3", "4", "5"}
        for role in participant.findall("RoleIDCode"):
            _coded(role)
    assert requestors == 1
    source = message.find("AuditSourceIdentification")
    assert source.get("AuditSourceID")
    assert {c.get("csd-code") for c in source.findall("AuditSourceTypeCode")} <= set("123456789")
    for obj in message.findall("ParticipantObjectIdentification"):
        assert obj.get("ParticipantObjectID")
        assert obj.get("ParticipantObjectTypeCode") in {"1", "2", "3", "4"}
        assert 1 <= int(obj.get("ParticipantObjectTypeCodeRole")) <= 26
        assert obj[0].tag == "ParticipantObjectIDTypeCode"
        _coded(obj[0])


def what_it_says(message: ET.Element) -> tuple[str, str, str, str, str]:
    """(EventID code, EventActionCode, requestor's UserID, patient ID, Study Instance UID) of a message: the
    patient is the participant object of type Person (1) in the role Patient (1) identified by Patient Number
    (RFC-3881 code 2), the study the one identified by Study Instance UID (DCM 110180)."""
    event = message.find("EventIdentification")
    requestor = next(p.get("UserID") for p in message.findall("ActiveParticipant")
                     if p.get("UserIsRequestor") == "true")
    patient = study = ""
    for obj in message.findall("ParticipantObjectIdentification"):
        id_type = obj.find("ParticipantObjectIDTypeCode").get("csd-code")
        if (obj.get("ParticipantObjectTypeCode"), obj.get("ParticipantObjectTypeCodeRole"), id_type) == ("1", "1", "2"):
            patient = obj.get("ParticipantObjectID")
        elif id_type == "110180":
            study = obj.get("ParticipantObjectID")
    return event.find("EventID").get("csd-code"), event.get("EventActionCode"), requestor, patient, study


# ---- TLS material made for the test -----------------------------------------------------------------------------
def make_ca(tmp: Path, name: str) -> tuple[Path, Any, Any]:
    """A self-signed CA: (its PEM file, its certificate, its key)."""
    x509 = require_module("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def collector_context(tmp: Path, ca_cert: Any, ca_key: Any) -> ssl.SSLContext:
    """The TLS server side of a collector at 127.0.0.1, its certificate signed by the CA."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "collector")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = tmp / "collector.pem", tmp / "collector.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


# ---- DICOM clients -----------------------------------------------------------------------------------------------
def store(server: Server, calling: str, datasets: list[Dataset]) -> list[int]:
    """C-STORE every dataset over one pynetdicom association; the statuses (all Success unless ``refused``)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(LOOPBACK, server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def study_of(patient_id: str, count: int) -> tuple[str, list[Dataset]]:
    study, series = generate_uid(), generate_uid()
    return study, [tiny_ct(patient_id, study, series, n + 1) for n in range(count)]


def pynetdicom_find(server: Server, calling: str, **keys: str) -> tuple[int, list[Dataset]]:
    """(final status, answers) of a Study Root C-FIND by ``calling``."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(FIND)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.PatientName = ""
    for k, v in keys.items():
        setattr(identifier, k, v)
    assoc = ae.associate(LOOPBACK, server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    answers, final = [], None
    try:
        for status, ds in assoc.send_c_find(identifier, FIND):
            if status.Status in (0xFF00, 0xFF01):
                answers.append(ds)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return final, answers


def study_level(study: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    return identifier


def pynetdicom_move(server: Server, calling: str, study: str, destination: str) -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(MOVE)
    assoc = ae.associate(LOOPBACK, server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    try:
        *_, (status, _) = assoc.send_c_move(study_level(study), destination, MOVE)
    finally:
        assoc.release()
    return int(status.Status)


def pynetdicom_get(server: Server, calling: str, study: str) -> tuple[int, int]:
    """(final status, instances received) of a C-GET of ``study``."""
    received = []
    ae = AE(ae_title=calling)
    ae.add_requested_context(GET)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(LOOPBACK, server.dicom_port, ae_title=server.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(1) or 0x0000)])
    assert assoc.is_established
    try:
        *_, (status, _) = assoc.send_c_get(study_level(study), GET)
    finally:
        assoc.release()
    return int(status.Status), len(received)


def dcmtk_tool(tool: str, server: Server, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([dcmtk(tool), "-aec", server.ae_title, *args, LOOPBACK, str(server.dicom_port)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


class Destination:
    """A C-MOVE destination in the test (pynetdicom storage SCP) counting the instances it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        ae = AE(ae_title="DEST")
        ae.add_supported_context(CTImageStorage)
        self.server = ae.start_server((LOOPBACK, self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, lambda e: self.received.append(e.request.AffectedSOPInstanceUID) or 0x0000)])

    def close(self) -> None:
        self.server.shutdown()


# ---- the audit rows ----------------------------------------------------------------------------------------------
def events(server: Server, **params: Any) -> list[dict[str, Any]]:
    r = requests.get(f"{server.url}/api/audit", params={"limit": 10000, **params}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["events"]


KEY = ("action", "outcome", "user", "ae_title", "address", "patient_id", "patient_name", "study_instance_uid")


def row(action: str, *, outcome: str = "success", **fields: str) -> tuple[str, ...]:
    values = {"action": action, "outcome": outcome, **fields}
    return tuple(values.get(k, "") for k in KEY)


def rows_of(found: list[dict[str, Any]]) -> Counter:
    return Counter(tuple(e[k] for k in KEY) for e in found)


def settle(server: Server, expected: list[tuple[str, ...]]) -> list[dict[str, Any]]:
    """The server's audit events once they are exactly ``expected`` (as a multiset; fails when that does not
    come about)."""
    return until(lambda: events(server), lambda found: rows_of(found) == Counter(expected),
                 f"the audit rows {Counter(expected)}")


def detail_of(found: list[dict[str, Any]], action: str, **fields: str) -> str:
    [event] = [e for e in found if e["action"] == action and all(e[k] == v for k, v in fields.items())]
    return event["detail"]


# ---- the scripted day --------------------------------------------------------------------------------------------
def test_a_scripted_day_leaves_exactly_the_expected_rows_and_messages(tmp_path: Path, database_url: str) -> None:
    collector = Collector()
    destination = Destination()
    config = (f'audit_syslog = "tcp://{LOOPBACK}:{collector.port}"\n'
              f'[peers.dest]\nae_title = "DEST"\nhost = "{LOOPBACK}"\nport = {destination.port}\n'
              f'[peers.limited]\nae_title = "LIMITED"\nhost = "{LOOPBACK}"\nport = 104\nallow = ["echo"]\n')
    server = Server(tmp_path / "data", database_url=database_url, config=config).start()
    try:
        run_the_day(server, destination, collector, tmp_path)
    finally:
        server.stop()
        destination.close()
        collector.close()


def run_the_day(server: Server, destination: Destination, collector: Collector, tmp_path: Path) -> None:
    expected: list[tuple[str, ...]] = []
    uid = generate_uid()[-8:]
    pa, pb, pw = f"PA{uid}", f"PB{uid}", f"PW{uid}"
    dicom = {"address": LOOPBACK}

    # 07:00 the CT sends a study of 5 instances on one association, a second modality (storescu) one of 3
    study_a, a_instances = study_of(pa, 5)
    assert store(server, "MODALITY", a_instances) == [0] * 5
    study_b, b_instances = study_of(pb, 3)
    files = [write(ds, tmp_path / "b" / f"{n}.dcm") for n, ds in enumerate(b_instances)]
    subprocess.run([dcmtk("storescu"), "-aec", server.ae_title, "-aet", "STORESCU", LOOPBACK, str(server.dicom_port),
                    *map(str, files)], check=True, capture_output=True, env=dcmtk_env(), timeout=120)
    expected += [row("instances_stored", ae_title="MODALITY", **dicom, patient_id=pa, patient_name=f"PATIENT^{pa}",
                     study_instance_uid=study_a),
                 row("instances_stored", ae_title="STORESCU", **dicom, patient_id=pb, patient_name=f"PATIENT^{pb}",
                     study_instance_uid=study_b)]
    found = settle(server, expected)
    assert "5" in detail_of(found, "instances_stored", study_instance_uid=study_a)
    assert "3" in detail_of(found, "instances_stored", study_instance_uid=study_b)

    # 08:00 a workstation looks for the patient (pynetdicom), another by name with a wildcard (findscu)
    status, answers = pynetdicom_find(server, "FINDER", PatientID=pa)
    assert status == 0 and [a.StudyInstanceUID for a in answers] == [study_a]
    dcmtk_tool("findscu", server, "-S", "-aet", "FINDSCU", "-k", "QueryRetrieveLevel=STUDY",
               "-k", f"PatientName=PATIENT^P?{uid}", "-k", "StudyInstanceUID")
    expected += [row("query_answered", ae_title="FINDER", **dicom, patient_id=pa),
                 row("query_answered", ae_title="FINDSCU", **dicom)]
    found = settle(server, expected)
    assert "answers: 1" in detail_of(found, "query_answered", ae_title="FINDER")
    assert f"PatientID={pa}" in detail_of(found, "query_answered", ae_title="FINDER")
    assert "answers: 2" in detail_of(found, "query_answered", ae_title="FINDSCU")

    # 09:00 both studies are moved to the reading room (movescu, pynetdicom) and fetched (getscu, pynetdicom)
    dcmtk_tool("movescu", server, "-S", "-aet", "MOVESCU", "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY",
               "-k", f"StudyInstanceUID={study_a}")
    assert pynetdicom_move(server, "MOVER", study_b, "DEST") == 0
    assert sorted(destination.received) == sorted(d.SOPInstanceUID for d in a_instances + b_instances)
    out = tmp_path / "got"
    out.mkdir()
    dcmtk_tool("getscu", server, "-S", "-aet", "GETSCU", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
               "-k", f"StudyInstanceUID={study_a}")
    assert len(list(out.iterdir())) == 5
    assert pynetdicom_get(server, "GETTER", study_b) == (0, 3)
    a, b = ({"patient_id": p, "patient_name": f"PATIENT^{p}", "study_instance_uid": s}
            for p, s in ((pa, study_a), (pb, study_b)))
    expected += [row("retrieve_answered", ae_title="MOVESCU", **dicom, **a),
                 row("retrieve_answered", ae_title="MOVER", **dicom, **b),
                 row("retrieve_answered", ae_title="GETSCU", **dicom, **a),
                 row("retrieve_answered", ae_title="GETTER", **dicom, **b)]
    found = settle(server, expected)
    moved = detail_of(found, "retrieve_answered", ae_title="MOVESCU")
    assert "C-MOVE" in moved and "DEST" in moved and "5 of 5" in moved
    assert "3 of 3" in detail_of(found, "retrieve_answered", ae_title="GETTER")

    # 10:00 a node allowed to echo only tries a C-FIND
    assert pynetdicom_find(server, "LIMITED", PatientID=pa)[0] == 0x0124
    expected.append(row("access_refused", outcome="refused", ae_title="LIMITED", **dicom))
    settle(server, expected)

    # 11:00 the desk schedules two items, changes and cancels the second; the modality queries, performs the first
    patient = {"patient_id": pw, "patient_name": "WORK^LIST"}
    first = add_item(server.url, **patient, accession_number=f"A1{uid}")
    second = add_item(server.url, **patient, accession_number=f"A2{uid}")
    r = requests.patch(f"{server.url}/api/worklist/items/{second['id']}", json={"accession_number": f"A3{uid}"},
                       timeout=30)
    assert r.status_code == 200, r.text
    assert requests.post(f"{server.url}/api/worklist/items/{second['id']}/cancel", timeout=30).status_code == 200
    answers, final = mwl_find(server.dicom_port, modality_query(PatientID=pw), calling="MODALITY1")
    assert final == 0 and len(answers) == 1
    performed = mpps_in_progress(first)
    performed.PatientName = "WORK^LIST"
    mpps_uid = generate_uid()
    assert mpps(server.dicom_port, "create", mpps_uid, performed) == 0
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    assert mpps(server.dicom_port, "set", mpps_uid, done) == 0
    item = lambda it: {**patient, "study_instance_uid": it["fields"]["study_instance_uid"]}  # noqa: E731
    expected += [row("worklist_item_created", **item(first)), row("worklist_item_created", **item(second)),
                 row("worklist_item_changed", **item(second)), row("worklist_item_cancelled", **item(second)),
                 row("worklist_queried", ae_title="MODALITY1", **dicom, patient_id=pw),
                 row("mpps_received", ae_title="MODALITY1", **dicom, **item(first)),
                 row("mpps_received", ae_title="MODALITY1", **dicom, **item(first))]
    found = settle(server, expected)
    mpps_details = sorted(e["detail"] for e in found if e["action"] == "mpps_received")
    assert ["N-CREATE" in mpps_details[0], "N-SET" in mpps_details[1]] == [True, True]
    assert "COMPLETED" in mpps_details[1]

    # 12:00 study B is deleted over REST, study A with the CLI
    r = requests.delete(f"{server.url}/api/studies/{study_b}", timeout=30)
    assert r.status_code == 200 and r.json()["instances_removed"] == 3
    server.cli("delete", study_a, "--yes")
    expected += [row("study_deleted", address=LOOPBACK, **b), row("study_deleted", **a)]  # REST: from its address
    found = settle(server, expected)
    assert "3" in detail_of(found, "study_deleted", study_instance_uid=study_b)

    # every row went to the collector too, once, as a DICOM Audit Message
    frames = until(lambda: list(collector.frames), lambda f: len(f) >= len(expected), "every message collected")
    assert not collector.errors
    said = Counter(what_it_says(parse(f)) for f in frames)
    fields = [dict(zip(KEY, r, strict=True)) for r in expected]
    # the requestor of each message: the user, else the calling AE, else an anonymous one at its address (a REST
    # call with logins off), else (the system's doing) this server
    assert said == Counter((*ATNA[f["action"]], f["user"] or f["ae_title"] or ("" if f["address"] else server.ae_title),
                            f["patient_id"],
                            f["study_instance_uid"]) for f in fields)
    assert len(collector.frames) == len(expected)


def test_stock_pynetdicom_counts_per_association_too_and_refusals_are_counted(tmp_path: Path) -> None:
    """With the fast paths off (pynetdicom's own C-STORE handling): the same one row per association and study; a
    node allowed to echo only is refused every instance, told in one row with the count."""
    config = ('dicom_fast_path = false\n'
              f'[peers.limited]\nae_title = "LIMITED"\nhost = "{LOOPBACK}"\nport = 104\nallow = ["echo"]\n')
    server = Server(tmp_path / "data", config=config).start()
    try:
        uid = generate_uid()[-8:]
        first, a = study_of(f"K{uid}", 4)
        second, b = study_of(f"L{uid}", 2)
        assert store(server, "STOCK", a + b) == [0] * 6
        assert store(server, "LIMITED", study_of(f"M{uid}", 3)[1]) == [0x0124] * 3
        found = settle(server, [
            row("instances_stored", ae_title="STOCK", address=LOOPBACK, patient_id=f"K{uid}",
                patient_name=f"PATIENT^K{uid}", study_instance_uid=first),
            row("instances_stored", ae_title="STOCK", address=LOOPBACK, patient_id=f"L{uid}",
                patient_name=f"PATIENT^L{uid}", study_instance_uid=second),
            row("access_refused", outcome="refused", ae_title="LIMITED", address=LOOPBACK)])
        assert "4" in detail_of(found, "instances_stored", study_instance_uid=first)
        assert "2" in detail_of(found, "instances_stored", study_instance_uid=second)
        assert "3 instances refused (0x0124)" in detail_of(found, "access_refused")
    finally:
        server.stop()


# ---- TLS, and collectors that do not take what is sent -----------------------------------------------------------
def test_messages_go_over_tls_to_a_collector_the_ca_vouches_for(tmp_path: Path) -> None:
    ca_file, ca_cert, ca_key = make_ca(tmp_path, "audit-ca")
    collector = Collector(context=collector_context(tmp_path, ca_cert, ca_key))
    config = f'audit_syslog = "tls://{LOOPBACK}:{collector.port}"\ntls_ca = "{ca_file}"\n'
    server = Server(tmp_path / "data", config=config).start()
    try:
        study, instances = study_of(f"TLS{generate_uid()[-6:]}", 2)
        assert store(server, "TLSMOD", instances) == [0, 0]
        [frame] = until(lambda: list(collector.frames), lambda f: len(f) == 1, "the message over TLS")
        assert what_it_says(parse(frame)) == ("110104", "C", "TLSMOD", instances[0].PatientID, study)
        assert not collector.errors
    finally:
        server.stop()
        collector.close()


def test_a_collector_that_is_down_loses_no_row_and_gets_its_messages_once_up(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet
    server = Server(tmp_path / "data", config=f'audit_syslog = "tcp://{LOOPBACK}:{port}"\n').start()
    collector = None
    try:
        for n in range(3):
            assert store(server, f"DOWN{n}", study_of(f"DOWN{n}", 2)[1]) == [0, 0]
        assert pynetdicom_find(server, "DOWNFIND", PatientID="DOWN0")[0] == 0
        until(lambda: events(server), lambda found: len(found) == 4, "four rows")
        collector = Collector(port=port)
        frames = until(lambda: list(collector.frames), lambda f: len(f) == 4, "the messages after the collector "
                       "came up")
        assert sorted(what_it_says(parse(f))[2] for f in frames) == ["DOWN0", "DOWN1", "DOWN2", "DOWNFIND"]
        assert "unreachable" in server.log_text()
    finally:
        server.stop()
        if collector is not None:
            collector.close()


def test_a_collector_that_stops_reading_does_not_hold_up_storage(tmp_path: Path) -> None:
    """The collector accepts connections and never reads: each TLS handshake of the forwarder waits for an answer
    that never comes (the forwarder is stuck on the network all along); C-STOREs and audit rows are not."""
    collector = Collector(reading=False)
    server = Server(tmp_path / "data", config=f'audit_syslog = "tls://{LOOPBACK}:{collector.port}"\n').start()
    try:
        studies = []
        for n in range(20):
            study, instances = study_of(f"SLOW{n}", 3)
            assert store(server, "SLOWMOD", instances) == [0, 0, 0]
            studies.append(study)
        found = until(lambda: events(server, ae_title="SLOWMOD"), lambda f: len(f) == 20, "twenty rows")
        assert {e["study_instance_uid"] for e in found} == set(studies)
        assert collector.connections  # the forwarder did try
    finally:
        server.stop()
        collector.close()


def test_the_forwarder_never_blocks_and_counts_what_it_drops(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                              ) -> None:
    """In process: a collector that takes nothing (its buffers full), a queue of 10: each ``send`` returns at
    once, whatever cannot wait is dropped and counted, and ``close`` ends."""
    from hounsfield.audit.syslog import Forwarder, Target

    collector = Collector(reading=False)
    forwarder = Forwarder(Target(False, LOOPBACK, collector.port), ae_title="HOUNSFIELD", queue_size=10)
    event = {"at": datetime.now(timezone.utc), "action": "query_answered", "outcome": "success", "user": "",
             "ae_title": "FLOOD", "address": LOOPBACK, "patient_id": "", "patient_name": "", "study_instance_uid": "",
             "detail": "x" * 4000}
    try:
        with caplog.at_level("WARNING", logger="hounsfield.audit"):
            for _ in range(3000):  # some 15 MB of messages: far beyond what the socket buffers hold
                forwarder.send(dict(event))
            assert forwarder.dropped > 0
            assert "dropping new ones" in caplog.text
        assert forwarder.dropped <= 3000 - 10
    finally:
        forwarder.close(timeout=1)
        collector.close()


def test_an_untrusted_collector_gets_nothing(tmp_path: Path) -> None:
    """TLS against a collector whose certificate the configured CA did not sign: no message is sent."""
    from hounsfield.audit.syslog import Forwarder, Target, client_context

    _, ca_cert, ca_key = make_ca(tmp_path, "collector-ca")
    other_ca, _, _ = make_ca(tmp_path, "another-ca")
    collector = Collector(context=collector_context(tmp_path, ca_cert, ca_key))
    forwarder = Forwarder(Target(True, LOOPBACK, collector.port), ae_title="HOUNSFIELD",
                          context=client_context(str(other_ca)))
    try:
        forwarder.send({"at": datetime.now(timezone.utc), "action": "login", "outcome": "success", "user": "u",
                        "ae_title": "", "address": LOOPBACK, "patient_id": "", "patient_name": "",
                        "study_instance_uid": "", "detail": ""})
        until(lambda: collector.errors, bool, "the collector seeing the handshake fail")
        assert collector.frames == []
    finally:
        forwarder.close(timeout=1)
        collector.close()


# ---- the message itself ------------------------------------------------------------------------------------------
def test_hostile_values_still_make_well_formed_messages() -> None:
    from hounsfield.audit.atna import audit_message
    from hounsfield.audit.syslog import Target, syslog_message

    event = {"at": datetime(2026, 1, 31, 8, 30), "action": "instances_stored", "outcome": "failure",
             "user": "", "ae_title": "EVIL\x00<AE>", "address": "not an address", "patient_id": "ID&\x01",
             "patient_name": "<script>^]]>", "study_instance_uid": "1.2.3", "detail": "\x1b[31m & <b>"}
    framed = syslog_message(audit_message(event, ae_title="HOUNSFIELD", host="host name"),
                            at=event["at"], host="host\nname", failed=True)
    length, _, frame = framed.partition(b" ")
    assert int(length) == len(frame)
    message = parse(frame)
    assert what_it_says(message)[:3] == ("110104", "C", "EVIL\ufffd<AE>")
    assert message.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    [patient] = [o for o in message.findall("ParticipantObjectIdentification")
                 if o.get("ParticipantObjectTypeCode") == "1"]
    assert patient.find("ParticipantObjectName").text == "<script>^]]>"
    for bad in ("", "udp://host:514", "tcp://host", "tls://:6514", "tcp://host:99999", "host:514", "tcp://h:1/x"):
        with pytest.raises(ValueError, match="audit_syslog"):
            Target.parse(bad)
    assert Target.parse("tls://[::1]:6514") == Target(True, "::1", 6514)


# ---- the services record, in process -----------------------------------------------------------------------------
def test_actors_reach_the_rows_and_a_failing_detail_loses_no_event(tmp_path: Path) -> None:
    from hounsfield import config
    from hounsfield.pacs import Pacs
    from hounsfield.worklist import flat

    pacs = Pacs(config.load(None, data_dir=str(tmp_path / "data")))
    try:
        [item] = pacs.worklist.schedule(flat.to_dataset({
            "patient_id": "ACT1", "patient_name": "ACTOR^ONE", "modality": "CT", "station_aet": "CT1",
            "start": "2026-01-31 09:30"}), actor="alice")
        pacs.worklist.cancel(item.id, actor="bob")
        study, [instance] = study_of("ACT2", 1)
        pacs.archive.store_bytes(encode(instance))
        pacs.archive.delete("study", study, user="carol", address="10.0.0.7")
        pacs.audit.record("access_refused", outcome="refused", user="mallory", detail=lambda: 1 / 0)
        found = pacs.audit.search()
        assert [(e["action"], e["user"], e["patient_id"]) for e in found] == [
            ("access_refused", "mallory", ""), ("study_deleted", "carol", "ACT2"),
            ("worklist_item_cancelled", "bob", "ACT1"), ("worklist_item_created", "alice", "ACT1")]
        assert found[0]["detail"].startswith("(detail unavailable")
        assert found[1]["address"] == "10.0.0.7" and found[1]["patient_name"] == "PATIENT^ACT2"
        assert [e["user"] for e in pacs.audit.search(user="bob")] == ["bob"]
        assert pacs.audit.count(action=["worklist_item_created", "worklist_item_cancelled"]) == 2
        newest = found[0]["at"]
        assert pacs.audit.search(since=newest) == found[:1]
        assert pacs.audit.search(until=newest) == found[1:]
    finally:
        pacs.close()


# ---- REST and CLI ------------------------------------------------------------------------------------------------
@pytest.fixture
def server(shared_server):
    return shared_server


def test_rest_filters_and_paging(server) -> None:
    uid = generate_uid()[-8:]
    items = [add_item(server.url, patient_id=f"R{uid}", patient_name="REST^ONE", accession_number=f"R{n}{uid}")
             for n in range(3)]
    other = add_item(server.url, patient_id=f"S{uid}", patient_name="REST^TWO")
    requests.post(f"{server.url}/api/worklist/items/{items[0]['id']}/cancel", timeout=30)
    assert pynetdicom_find(server, f"F{uid}", PatientID=f"R{uid}")[0] == 0
    mine = until(lambda: events(server, patient_id=f"R{uid}"), lambda f: len(f) == 5, "five events of the patient")
    assert [e["action"] for e in mine] == ["query_answered", "worklist_item_cancelled"] + ["worklist_item_created"] * 3
    assert [e["at"] for e in mine] == sorted((e["at"] for e in mine), reverse=True)  # newest first
    ids = [e["id"] for e in mine]
    page = requests.get(f"{server.url}/api/audit", params={"patient_id": f"R{uid}", "limit": 2, "offset": 1},
                        timeout=30).json()
    assert page["total"] == 5 and [e["id"] for e in page["events"]] == ids[1:3]
    assert [e["ae_title"] for e in events(server, ae_title=f"F{uid}")] == [f"F{uid}"]
    created = events(server, action="worklist_item_created", study_instance_uid=other["fields"]["study_instance_uid"])
    assert [e["patient_id"] for e in created] == [f"S{uid}"]
    both = events(server, patient_id=f"R{uid}", action=["worklist_item_cancelled", "query_answered"])
    assert len(both) == 2
    assert events(server, patient_id=f"R{uid}", outcome="refused") == []
    oldest = mine[-1]["at"]
    assert len(events(server, patient_id=f"R{uid}", since=oldest)) == 5
    assert events(server, patient_id=f"R{uid}", until=oldest) == []
    day = oldest[:10]
    assert len(events(server, patient_id=f"R{uid}", since=day, until=day)) == 5  # a day: that whole day
    assert set(requests.get(f"{server.url}/api/audit/actions", timeout=30).json()) == {"actions", "outcomes"}


@pytest.mark.parametrize("params,status", [
    ({"limit": 0}, 422), ({"limit": 10001}, 422), ({"limit": "many"}, 422), ({"offset": -1}, 422),
    ({"offset": 2**63}, 422), ({"offset": 10**30}, 422), ({"offset": 2**63 - 1}, 200),
    ({"since": "yesterday"}, 400), ({"until": "2026-02-30"}, 400), ({"since": "0001-01-01T00:00+05:00"}, 400),
    ({"since": "0001-01-01", "until": "9999-12-31"}, 200), ({"since": "x" * 100}, 422),
    ({"patient_id": "x" * 10000}, 422), ({"patient_id": "\x00"}, None), ({"action": "no-such-action"}, 200),
    ({"user": "' OR 1=1 --"}, 200),
])
def test_rest_hostile_parameters_are_4xx(server, params: dict, status: int | None) -> None:
    r = requests.get(f"{server.url}/api/audit", params=params, timeout=30)
    if status is None:  # SQLite matches it (nothing), PostgreSQL refuses a NUL: either way no 5xx
        assert r.status_code in (200, 400), r.text
    else:
        assert r.status_code == status, r.text
    if r.status_code == 200 and set(params) & {"offset", "action", "user"}:
        assert r.json()["events"] == []


def cli(server: Server, *args: str) -> subprocess.CompletedProcess:
    """``hounsfield`` on the server's data, its tables as wide as they need (Rich reads COLUMNS)."""
    return hounsfield(*args, *server.args(), env={"COLUMNS": "400"})


def test_cli_lists_filters_and_refuses_in_one_line(server) -> None:
    uid = generate_uid()[-8:]
    item = add_item(server.url, patient_id=f"C{uid}", patient_name="CLI^ONE")
    until(lambda: events(server, patient_id=f"C{uid}"), lambda f: len(f) == 1, "the event of the new item")
    shown = cli(server, "audit", "--patient-id", f"C{uid}", "--action", "worklist_item_created")
    assert shown.returncode == 0, shown.stderr
    assert "worklist_item_created" in shown.stdout and f"C{uid} CLI^ONE" in shown.stdout
    assert item["fields"]["study_instance_uid"] in shown.stdout
    assert "no audit events match" in cli(server, "audit", "--patient-id", f"NOBODY{uid}").stdout
    for args in (("--since", "someday"), ("--action", "no_such_action"), ("--limit", "0"), ("--outcome", "meh")):
        proc = cli(server, "audit", *args)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "error" in proc.stderr


# ---- the admin page ----------------------------------------------------------------------------------------------
STATIC = Path(__file__).resolve().parents[1] / "src" / "hounsfield" / "web" / "static"


def test_the_page_has_nothing_inline_for_the_content_security_policy(server) -> None:
    html = (STATIC / "audit.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) and " style=" not in html and "<style" not in html
    r = requests.get(f"{server.url}/ui/audit.html", timeout=30)
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]


@pytest.mark.browser
def test_the_admin_page_lists_and_filters_events(server) -> None:
    from browser import chromium_page

    uid = generate_uid()[-8:]
    for n in range(2):
        add_item(server.url, patient_id=f"W{n}{uid}", patient_name="PAGE^VIEW")
    until(lambda: events(server, patient_id=f"W1{uid}"), lambda f: len(f) == 1, "the events of the new items")
    for page, errors in chromium_page():
        page.goto(f"{server.url}/ui/audit.html")
        page.locator("#audit-rows tr", has_text=f"W1{uid}").wait_for()
        page.locator("#filter-action option[value=worklist_item_created]").wait_for(state="attached")
        page.fill("#filter-patient", f"W0{uid}")
        page.select_option("#filter-action", "worklist_item_created")
        page.click("#filter-apply")
        page.locator("#audit-rows tr", has_text=f"W1{uid}").wait_for(state="detached")
        rows = page.locator("#audit-rows tr")
        assert rows.count() == 1 and f"W0{uid} PAGE^VIEW" in rows.inner_text()
        assert "worklist_item_created" in rows.inner_text()
        assert page.locator("#audit-status").inner_text() == "1 event"
        assert errors == []
