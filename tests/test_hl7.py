"""HL7 v2 orders and patient updates into the worklist (issue 14), through a real ``hounsfield serve`` (SQLite and
PostgreSQL): messages sent over MLLP on TCP (a raw client of this module, and python-hl7's own MLLPClient), their
effect read back over REST and MWL C-FIND (pynetdicom) and compared with the message text, the acknowledgments
taken apart (MSA-1/2, the swapped MSH-3/4/5/6, ERR naming the field), every order control, A08 and A40, the
message log over REST and the CLI, replay, and hostile input: broken framing, a frame without end, a half-sent
frame, oversized and binary messages, deep repetition, wrong encoding characters."""

from __future__ import annotations

import base64
import os
import re
import socket
import time
import uuid
from datetime import timedelta

import pytest
import requests
from support import Server, free_port, hounsfield
from test_worklist_common import TODAY, modality_query, mwl_find

SB, EB, CR = b"\x0b", b"\x1c", b"\r"
READ_TIMEOUT = 2  # hl7_read_timeout of the test server
MAX_BYTES = 65536  # hl7_max_message_bytes of the test server
DAY = (TODAY + timedelta(days=1)).strftime("%Y%m%d")


@pytest.fixture(scope="module")
def hl7_server(tmp_path_factory: pytest.TempPathFactory, module_database_url: str):
    port = free_port()
    srv = Server(tmp_path_factory.mktemp("hl7") / "data", database_url=module_database_url,
                 env={"HOUNSFIELD_HL7_PORT": str(port), "HOUNSFIELD_HL7_HOST": "127.0.0.1",
                      "HOUNSFIELD_HL7_READ_TIMEOUT": str(READ_TIMEOUT),
                      "HOUNSFIELD_HL7_MAX_MESSAGE_BYTES": str(MAX_BYTES)})
    srv.hl7_port = port
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(hl7_server):
    from support import SharedServer

    return SharedServer(hl7_server)


# ---- building messages -----------------------------------------------------------------------------------------

def seg(name: str, fields: dict[int, str]) -> str:
    """A segment with the fields given by number (the others empty)."""
    return "|".join([name] + [fields.get(i, "") for i in range(1, max(fields) + 1)])


def msh(kind: str, control: str, version: str = "2.3.1", charset: str = "") -> str:
    return seg("MSH", {1: "^~\\&", 2: "RIS", 3: "HOSPITAL", 4: "PACS", 5: "RADIOLOGY", 6: "20260101120000",
                       8: kind, 9: control, 10: "P", 11: version, **({17: charset} if charset else {})})


def hl7_message(*segments: str) -> bytes:
    return ("\r".join(segments) + "\r").encode("utf-8")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


def pid(patient_id: str, name: str = "HL7TEST^ANNA^MARIA", born: str = "19700102", sex: str = "F") -> str:
    return seg("PID", {1: "1", 3: f"{patient_id}^^^HOSP&1.2.3.4&ISO", 5: name, 7: born, 8: sex})


def orm(control: str, patient_id: str, placer: str, *, order_control: str = "NW", order_status: str = "SC",
        start: str = f"{DAY}093000", modality: str = "CT", station: str = "CT1", step: str = "",
        accession: str = "", procedure: str = "", study: str = "", name: str = "HL7TEST^ANNA^MARIA",
        born: str = "19700102", priority: str = "S") -> bytes:
    """An ORM^O01 (v2.3.1) with one ORC / OBR group, ZDS when ``study`` is given."""
    segments = [msh("ORM^O01", control), pid(patient_id, name, born),
                seg("PV1", {1: "1", 2: "O", 8: "D123^HOUSE^GREGORY^M^JR^DR", 19: "V42^^^HOSP"}),
                seg("ORC", {1: order_control, 2: f"{placer}^RIS", 3: f"F{placer}^PACS", 5: order_status,
                            7: f"^^^{start}^^{priority}", 18: station}),
                seg("OBR", {1: "1", 2: f"{placer}^RIS", 3: f"F{placer}^PACS", 4: "CTHEAD^CT HEAD W/O^99RIS",
                            16: "D456^CUDDY^LISA", 18: accession, 19: procedure, 20: step, 24: modality})]
    if study:
        segments.append(seg("ZDS", {1: f"{study}^RIS^Application^DICOM"}))
    return hl7_message(*segments)


# ---- MLLP clients ----------------------------------------------------------------------------------------------

def read_frame(sock: socket.socket) -> bytes:
    """One MLLP frame's content; b"" when the server closed the connection first."""
    data = b""
    while not data.endswith(EB + CR):
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    assert data.startswith(SB), data[:20]
    return data[1:-2]


def send(server, data: bytes, timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", server.hl7_port), timeout=timeout) as sock:
        sock.sendall(SB + data + EB + CR)
        return read_frame(sock)


def segments_of(ack: bytes) -> dict[str, list[str]]:
    """The ACK's segments by ID, each as its fields (MSH: fields[n] is MSH-n)."""
    out = {}
    for line in ack.decode("latin-1").split("\r"):
        if line:
            parts = line.split("|")
            out[parts[0]] = ["MSH", "|", *parts[1:]] if parts[0] == "MSH" else parts
    return out


def check_ack(ack: bytes, code: str, control: str, event: str) -> dict[str, list[str]]:
    """MSA-1 and MSA-2, and the header as Mirth / NextGen Connect validate it: sender and receiver swapped."""
    s = segments_of(ack)
    assert s["MSA"][1] == code, ack
    assert s["MSA"][2] == control
    header = s["MSH"]
    assert header[3:7] == ["PACS", "RADIOLOGY", "RIS", "HOSPITAL"], header  # MSH-3..6 of the message swapped
    assert header[9] == f"ACK^{event}^ACK"
    assert header[10] and header[10] != control  # a control ID of its own
    return s


def check_error(ack: bytes, code: str, location: str, error: int) -> None:
    """ERR-2 names the field (segment^sequence^field), ERR-3 the code of HL7 Table 0357; v2.3.1 ERR-1 too."""
    s = segments_of(ack)
    assert s["MSA"][1] == code, ack
    err = s["ERR"]
    assert err[2] == location, ack
    assert err[3].split("^")[0] == str(error), ack
    assert err[4] == "E"
    if s["MSH"][12] == "2.3.1":  # segment^sequence^field^code&text&table
        assert err[1].startswith("^".join((location.split("^") + [""])[:3]) + f"^{error}&"), ack


def items_of(server, patient_id: str) -> list[dict]:
    r = requests.get(f"{server.url}/api/worklist/items", params={"patient_id": patient_id}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def total_items(server) -> int:
    return requests.get(f"{server.url}/api/worklist/items", params={"limit": 1}, timeout=30).json()["total"]


def logged(server, control: str) -> dict:
    page = requests.get(f"{server.url}/api/hl7/messages", params={"control_id": control}, timeout=30).json()
    assert page["total"] >= 1, control
    return requests.get(f"{server.url}/api/hl7/messages/{page['messages'][0]['id']}", timeout=30).json()


# ---- orders ----------------------------------------------------------------------------------------------------

def test_orm_new_order_is_scheduled_as_the_message_says(server) -> None:
    patient, placer, control = unique("P"), unique("PL"), unique("C")
    study = f"1.2.826.0.1.3680043.10.543.{uuid.uuid4().int % 10**12}"
    ack = send(server, orm(control, patient, placer, step="S1", accession=placer[:16], procedure="RP1",
                           study=study))
    check_ack(ack, "AA", control, "O01")
    [item] = items_of(server, patient)
    f = item["fields"]
    assert item["status"] == "SCHEDULED" and item["origin"] == "hl7"
    assert (f["patient_id"], f["issuer_of_patient_id"], f["patient_name"]) == (patient, "HOSP", "HL7TEST^ANNA^MARIA")
    assert (f["patient_birth_date"], f["patient_sex"]) == ("1970-01-02", "F")
    assert f["referring_physician_name"] == "HOUSE^GREGORY^M^DR^JR"  # XCN family^given^middle^suffix^prefix
    assert f["requesting_physician"] == "CUDDY^LISA"
    assert (f["admission_id"], f["accession_number"], f["requested_procedure_id"]) == ("V42", placer[:16], "RP1")
    assert (f["modality"], f["station_aet"], f["step_id"]) == ("CT", "CT1", "S1")
    assert f["start"] == f"{DAY[:4]}-{DAY[4:6]}-{DAY[6:]} 09:30"
    assert (f["requested_procedure_priority"], f["study_instance_uid"]) == ("STAT", study)
    assert f["requested_procedure_code"] == {"value": "CTHEAD", "scheme": "99RIS", "meaning": "CT HEAD W/O"}
    assert f["requested_procedure_description"] == f["step_description"] == "CT HEAD W/O"
    dicom = item["dicom"]
    assert dicom["00402016"]["Value"] == [placer] and dicom["00402017"]["Value"] == [f"F{placer}"]
    assert dicom["00400026"]["Value"][0]["00400031"]["Value"] == ["RIS"]  # ORC-2.2, the placer's namespace
    assert dicom["00100024"]["Value"][0]["00400032"]["Value"] == ["1.2.3.4"]  # PID-3.4.2
    # the same through MWL C-FIND, as a modality asks
    answers, status = mwl_find(server.dicom_port, modality_query(PatientID=patient))
    assert status == 0 and len(answers) == 1
    answer = answers[0]
    step = answer.ScheduledProcedureStepSequence[0]
    assert (answer.PatientID, str(answer.PatientName), answer.PatientBirthDate) == (patient, "HL7TEST^ANNA^MARIA",
                                                                                     "19700102")
    assert (answer.StudyInstanceUID, answer.AccessionNumber, answer.RequestedProcedureID) == (study, placer[:16],
                                                                                              "RP1")
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepID) == ("CT", "CT1", "S1")
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime[:6]) == (DAY, "093000")
    assert str(answer.ReferringPhysicianName) == "HOUSE^GREGORY^M^DR^JR"
    assert answer.RequestedProcedurePriority == "STAT"
    assert "HL7TEST" not in server.log_text()  # patient names go to the audit table only, never to the log


def test_omi_schedules_one_step_per_ipc_through_python_hl7s_client(server) -> None:
    from hl7.client import MLLPClient

    patient, placer, control = unique("P"), unique("PL"), unique("C")
    study = f"1.2.826.0.1.3680043.10.543.{uuid.uuid4().int % 10**12}"
    accession = placer[:16]
    message = hl7_message(
        msh("OMI^O23^OMI_O23", control, "2.5.1", "UNICODE UTF-8"), pid(patient, "MÜLLER^JÖRG", sex="M"),
        seg("PV1", {1: "1", 2: "I"}),
        seg("ORC", {1: "NW", 2: placer, 3: f"F{placer}", 5: "SC"}),
        seg("TQ1", {1: "1", 7: f"{DAY}1015", 9: "R"}),
        seg("OBR", {1: "1", 2: placer, 3: f"F{placer}", 4: "MRKNEE^MR KNEE^99RIS"}),
        seg("IPC", {1: accession, 2: "RP7", 3: study, 4: "SPS1", 5: "MR", 6: "P1^KNEE SAG^99RIS", 7: "MRSTATION",
                    8: "ROOM 1", 9: "MR1"}),
        seg("IPC", {1: accession, 2: "RP7", 3: study, 4: "SPS2", 5: "MR", 7: "MRSTATION", 8: "ROOM 1", 9: "MR2"}))
    with MLLPClient("127.0.0.1", server.hl7_port) as client:
        ack = client.send_message(message)
    check_ack(ack.strip(SB + EB + CR), "AA", control, "O23")
    found = sorted(items_of(server, patient), key=lambda i: i["fields"]["step_id"])
    assert [i["fields"]["step_id"] for i in found] == ["SPS1", "SPS2"]
    assert {i["fields"]["study_instance_uid"] for i in found} == {study}
    assert [i["fields"]["station_aet"] for i in found] == ["MR1", "MR2"]
    first = found[0]["fields"]
    assert (first["patient_name"], first["station_name"], first["location"]) == ("MÜLLER^JÖRG", "MRSTATION", "ROOM 1")
    assert (first["start"], first["requested_procedure_priority"]) == (f"{DAY[:4]}-{DAY[4:6]}-{DAY[6:]} 10:15",
                                                                       "ROUTINE")
    assert first["protocol_codes"] == [{"value": "P1", "scheme": "99RIS", "meaning": "KNEE SAG"}]
    answers, _ = mwl_find(server.dicom_port, modality_query(PatientID=patient))
    assert sorted(str(a.PatientName) for a in answers) == ["MÜLLER^JÖRG"] * 2
    assert all(a.SpecificCharacterSet == "ISO_IR 192" for a in answers)


def test_invented_values_are_said_in_the_items_history_and_the_outcome(server) -> None:
    patient, placer, control = unique("P"), unique("PL"), unique("C")
    check_ack(send(server, orm(control, patient, placer)), "AA", control, "O01")
    [item] = items_of(server, patient)
    uid, step = item["fields"]["study_instance_uid"], item["fields"]["step_id"]
    outcome = logged(server, control)["outcome"]
    assert f"Study Instance UID {uid} generated (no ZDS-1)" in outcome
    assert f"step ID {step} generated (no OBR-20)" in outcome
    events = requests.get(f"{server.url}/api/audit", params={"action": "worklist_item_created",
                                                            "patient_id": patient}, timeout=30).json()["events"]
    assert len(events) == 1 and f"Study Instance UID {uid} generated" in events[0]["detail"]
    assert events[0]["user"] == "hl7:RIS"
    received = requests.get(f"{server.url}/api/audit", params={"action": "hl7_message_received",
                                                              "patient_id": patient}, timeout=30).json()["events"]
    assert len(received) == 1 and received[0]["outcome"] == "success" and control in received[0]["detail"]


def test_change_status_cancel_and_discontinue_follow_orc_1_and_orc_5(server) -> None:
    patient, placer = unique("P"), unique("PL")
    for control in (unique("C"), unique("C")):  # the second NW: a resend after a lost ACK, which changes it
        check_ack(send(server, orm(control, patient, placer, step="S1")), "AA", control, "O01")
    [item] = items_of(server, patient)
    control = unique("C")
    check_ack(send(server, orm(control, patient, placer, order_control="XO", step="S1", modality="MR",
                               station="MR1", start=f"{DAY}1400", name="HL7TEST^ANNE")), "AA", control, "O01")
    [changed] = items_of(server, patient)
    assert changed["id"] == item["id"]
    assert (changed["fields"]["modality"], changed["fields"]["station_aet"]) == ("MR", "MR1")
    assert (changed["fields"]["patient_name"], changed["fields"]["start"][-5:]) == ("HL7TEST^ANNE", "14:00")
    for status, expected in (("IP", "IN PROGRESS"), ("CM", "COMPLETED")):
        control = unique("C")
        check_ack(send(server, orm(control, patient, placer, order_control="SC", order_status=status, step="S1",
                                   modality="MR", station="MR1")), "AA", control, "O01")
        assert items_of(server, patient)[0]["status"] == expected
    answers, _ = mwl_find(server.dicom_port, modality_query(PatientID=patient))
    assert answers == []  # a completed step is no longer offered
    for order_control, expected in (("CA", "CANCELED"), ("DC", "DISCONTINUED")):
        other, control = unique("PL"), unique("C")
        check_ack(send(server, orm(control, patient, other)), "AA", control, "O01")
        control = unique("C")
        check_ack(send(server, orm(control, patient, other, order_control=order_control)), "AA", control, "O01")
        [closed] = [i for i in items_of(server, patient) if i["dicom"]["00402016"]["Value"] == [other]]
        assert closed["status"] == expected
        again = send(server, orm(unique("C"), patient, other, order_control=order_control))
        assert segments_of(again)["MSA"][1] == "AA" and b"already " + expected.encode() in again
    refused = send(server, orm(unique("C"), patient, placer, order_control="CA"))  # COMPLETED cannot be canceled
    check_error(refused, "AE", "ORC^1^1", 207)
    unknown = send(server, orm(unique("C"), patient, unique("NOPE"), order_control="XO"))
    check_error(unknown, "AE", "ORC^1^2", 204)
    bad_status = send(server, orm(unique("C"), patient, placer, order_control="SC", order_status="ZZ"))
    check_error(bad_status, "AE", "ORC^1^5", 103)


def test_a08_updates_the_demographics_of_the_patients_open_items_only(server) -> None:
    patient = unique("P")
    placers = [unique("PL") for _ in range(3)]
    for placer in placers:
        assert segments_of(send(server, orm(unique("C"), patient, placer)))["MSA"][1] == "AA"
    assert segments_of(send(server, orm(unique("C"), patient, placers[2], order_control="CA")))["MSA"][1] == "AA"
    control = unique("C")
    message = hl7_message(msh("ADT^A08^ADT_A01", control, "2.5.1"), pid(patient, "HL7TEST^ANNIKA", '""', "O"),
                          seg("PV1", {1: "1", 2: "O"}))
    check_ack(send(server, message), "AA", control, "A08")
    by_placer = {i["dicom"]["00402016"]["Value"][0]: i for i in items_of(server, patient)}
    for placer in placers[:2]:
        f = by_placer[placer]["fields"]
        assert (f["patient_name"], f["patient_sex"], f["patient_birth_date"]) == ("HL7TEST^ANNIKA", "O", None)
    assert by_placer[placers[2]]["fields"]["patient_name"] == "HL7TEST^ANNA^MARIA"  # canceled: left as it was
    answers, _ = mwl_find(server.dicom_port, modality_query(PatientID=patient))
    assert sorted(str(a.PatientName) for a in answers) == ["HL7TEST^ANNIKA"] * 2
    nobody = hl7_message(msh("ADT^A31^ADT_A05", unique("C"), "2.5.1"), pid(unique("NOBODY")))
    assert b"no open worklist item" in send(server, nobody)


def test_a40_moves_every_item_of_the_prior_patient(server) -> None:
    prior, survivor = unique("OLD"), unique("NEW")
    for placer, control in ((unique("PL"), "NW"), (unique("PL"), "CA")):
        send(server, orm(unique("C"), prior, placer))
        if control == "CA":
            send(server, orm(unique("C"), prior, placer, order_control="CA"))
    control = unique("C")
    merge = hl7_message(msh("ADT^A40^ADT_A39", control, "2.5.1"), pid(survivor, "HL7TEST^MERGED"),
                        seg("MRG", {1: f"{prior}^^^HOSP&1.2.3.4&ISO"}))
    check_ack(send(server, merge), "AA", control, "A40")
    assert items_of(server, prior) == []
    moved = items_of(server, survivor)
    assert sorted(i["status"] for i in moved) == ["CANCELED", "SCHEDULED"]
    assert {i["fields"]["patient_name"] for i in moved} == {"HL7TEST^MERGED"}
    without = hl7_message(msh("ADT^A40^ADT_A39", unique("C"), "2.5.1"), pid(survivor), seg("MRG", {7: "X^Y"}))
    check_error(send(server, without), "AE", "MRG^1^1", 101)
    itself = hl7_message(msh("ADT^A40^ADT_A39", unique("C"), "2.5.1"), pid(survivor),
                         seg("MRG", {1: f"{survivor}^^^HOSP"}))
    check_error(send(server, itself), "AE", "MRG^1^1", 205)


# ---- what cannot be applied -----------------------------------------------------------------------------------

@pytest.mark.parametrize("change,location,error", [
    (lambda m: re.sub(rb"PID\|1\|\|[^|]*\|", b"PID|1|||", m), "PID^1^3", 101),  # no PID-3
    (lambda m: m.replace(b"19700102", b"19701302"), "PID^1^7", 102),  # month 13
    (lambda m: m.replace(f"^^^{DAY}093000".encode(), b"^^^2026023109"), "ORC^1^7^1^4", 102),  # 31 February
    (lambda m: m.replace(b"|CT\r", b"|SCANNER\r"), "OBR^1^24", 102),  # no Modality Defined Term
    (lambda m: m.replace(b"|CT1\r", b"|\r"), "ORC^1^18", 101),  # no Scheduled Station AE Title
    (lambda m: m.replace(b"|HL7TEST^ANNA^MARIA|", b"||"), "PID^1^5", 101),  # no patient name
    (lambda m: m.replace(b"^S|", b"^Q|"), "ORC^1^7^1^6", 103),  # priority not in HL7 Table 0027
    (lambda m: m.replace(b"ORC|NW", b"ORC|ZZ"), "ORC^1^1", 103),  # order control not in Table 0119
])
def test_a_message_that_cannot_be_applied_is_ae_naming_the_field_and_applies_nothing(server, change, location,
                                                                                   error) -> None:
    patient, control = unique("P"), unique("C")
    message = change(orm(control, patient, unique("PL")))
    before = total_items(server)
    ack = send(server, message)
    check_error(ack, "AE", location, error)
    assert segments_of(ack)["MSA"][2] == control
    assert total_items(server) == before


def test_nothing_is_half_applied(server) -> None:
    """Two orders in one message, the second one wrong: the first one is not scheduled either."""
    patient, control = unique("P"), unique("C")
    good = orm(control, patient, unique("PL")).decode()
    bad = orm(control, patient, unique("PL"), modality="SCANNER").decode()
    groups = [s for s in bad.split("\r") if s.startswith(("ORC", "OBR"))]
    before = total_items(server)
    ack = send(server, (good.rstrip("\r") + "\r" + "\r".join(groups) + "\r").encode())
    check_error(ack, "AE", "OBR^2^24", 102)
    assert total_items(server) == before and items_of(server, patient) == []


@pytest.mark.parametrize("kind,version,error", [("ORU^R01", "2.3.1", 200), ("ADT^A01", "2.5.1", 201),
                                                ("ORM^O01", "3.0", 203)])
def test_unsupported_messages_are_rejected(server, kind: str, version: str, error: int) -> None:
    control = unique("C")
    ack = send(server, hl7_message(msh(kind, control, version), pid(unique("P"))))
    check_error(ack, "AR", "MSH^1^9" if error != 203 else "MSH^1^12", error)
    assert segments_of(ack)["MSA"][2] == control


# ---- hostile input ---------------------------------------------------------------------------------------------

def connection(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.hl7_port), timeout=30)


def still_serving(server) -> None:
    control = unique("C")
    assert segments_of(send(server, orm(control, unique("P"), unique("PL"))))["MSA"][2] == control


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def wait_for_log(server, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log_text():
        assert time.monotonic() < deadline, f"no log line with {text!r}: {server.log_text()[-2000:]}"
        time.sleep(0.05)


@pytest.mark.parametrize("data,reason", [
    (b"GET / HTTP/1.1\r\n\r\n", "data before the start block"),
    (SB + b"MSH|^~\\&|A\r" + SB + b"MSH|^~\\&|B\r" + EB + CR, "a start block 0x0B inside a frame"),
    (SB + b"MSH|^~\\&|A\r" + EB + b"X", "not followed by 0x0D"),
])
def test_broken_framing_closes_the_connection_with_a_log_line(server, data: bytes, reason: str) -> None:
    with connection(server) as sock:
        sock.sendall(data)
        assert closed(sock)
    wait_for_log(server, reason)
    still_serving(server)


def test_a_half_sent_frame_is_cut_off_while_other_connections_are_served(server) -> None:
    with connection(server) as stalled:
        stalled.sendall(SB + b"MSH|^~\\&|RIS|HOSPITAL|PACS|RADIOLOGY|")
        started = time.monotonic()
        still_serving(server)  # another sender is answered meanwhile
        assert closed(stalled)
        assert READ_TIMEOUT - 0.5 < time.monotonic() - started < READ_TIMEOUT + 10
    wait_for_log(server, "not finished within 2 s (hl7_read_timeout)")


def test_an_oversized_message_is_rejected(server) -> None:
    control = unique("C")
    head = orm(control, unique("P"), unique("PL"))
    with connection(server) as sock:  # no end in sight: AR, then the connection is closed
        sock.sendall(SB + head + b"NTE|1||" + b"A" * (MAX_BYTES + 10))
        ack = read_frame(sock)
        check_error(ack, "AR", "MSH^1", 207)
        assert segments_of(ack)["MSA"][2] == control and b"65536 bytes" in ack
        assert closed(sock)
    wait_for_log(server, "a message longer than 65536 bytes")
    with connection(server) as sock:  # a whole frame too long: AR, and the connection goes on
        sock.sendall(SB + head + b"NTE|1||" + b"A" * MAX_BYTES + EB + CR)
        assert segments_of(read_frame(sock))["MSA"][1] == "AR"
        good = unique("C")
        sock.sendall(SB + orm(good, unique("P"), unique("PL")) + EB + CR)
        assert segments_of(read_frame(sock))["MSA"][1:3] == ["AA", good]
    assert not logged(server, control)["complete"]


def test_binary_garbage_in_a_frame_is_rejected_and_the_connection_goes_on(server) -> None:
    noise = bytes(b for b in os.urandom(4000) if b not in (0x0B, 0x1C))
    with connection(server) as sock:
        sock.sendall(SB + noise + EB + CR)
        ack = read_frame(sock)
        assert segments_of(ack)["MSA"][1] == "AR" and b"not an HL7 v2 message" in ack
        control = unique("C")
        sock.sendall(SB + orm(control, unique("P"), unique("PL")) + EB + CR)
        assert segments_of(read_frame(sock))["MSA"][2] == control


@pytest.mark.parametrize("change,code,location,error", [
    (lambda m: m.replace(b"MSH|^~\\&|", b"MSH|^^\\&|"), "AR", "MSH^1^2", 102),  # encoding characters repeated
    (lambda m: m.replace(b"MSH|^~\\&|", b"MSH|^~|"), "AR", "MSH^1^2", 102),  # two of four
    (lambda m: m.replace(b"MSH|", b"MSHA", 1), "AR", "MSH^1^1", 102),  # a letter as field separator
    (lambda m: m.replace(b"^^^HOSP&1.2.3.4&ISO", b"~X" * 500), "AE", "PID^1^3", 102),  # 500 repetitions
    (lambda m: m.replace(b"\rPV1", b"\rNTE|1" * 2000 + b"\rPV1"), "AE", "MSH^1", 100),  # 2000 segments
    (lambda m: m.replace(b"HL7TEST", b"HL7\x00TEST"), "AE", "PID^1", 102),  # NUL
    (lambda m: m.replace(b"\rPV1", b"\r\x7f\x80\x81|x\rPV1"), "AE", "MSH^1", 100),  # a segment without ID
])
def test_hostile_messages_get_a_clear_ack(server, change, code: str, location: str, error: int) -> None:
    message = change(orm(unique("C"), unique("P"), unique("PL")))
    before = total_items(server)
    check_error(send(server, message), code, location, error)
    assert total_items(server) == before


def test_a_message_in_other_separators_is_answered_in_them(server) -> None:
    control = unique("C")
    message = orm(control, unique("P"), unique("PL")).replace(b"|", b"#").replace(b"^", b"*")
    ack = send(server, message).decode()
    assert ack.startswith("MSH#*~\\&#PACS#RADIOLOGY#RIS#HOSPITAL#") and f"\rMSA#AA#{control}#" in ack


# ---- the message log, replay, the CLI --------------------------------------------------------------------------

def test_message_log_over_rest_and_replay(server) -> None:
    patient, placer, control = unique("P"), unique("PL"), unique("C")
    change = orm(control, patient, placer, order_control="XO")
    check_error(send(server, change), "AE", "ORC^1^2", 204)  # no such order yet
    entry = logged(server, control)
    assert (entry["message_type"], entry["ack_code"], entry["address"].split(":")[0]) == ("ORM^O01", "AE",
                                                                                         "127.0.0.1")
    assert base64.b64decode(entry["raw_base64"]) == change
    assert entry["raw"].split("\n")[0].startswith("MSH|^~\\&|RIS|HOSPITAL|")
    assert entry["segments"][1][:4] == ["PID", "1", "", f"{patient}^^^HOSP&1.2.3.4&ISO"]
    assert entry["ack"].split("\n")[1].startswith(f"MSA|AE|{control}|")
    page = requests.get(f"{server.url}/api/hl7/messages", params={"ack_code": "AE", "patient_id": patient},
                        timeout=30).json()
    assert [m["control_id"] for m in page["messages"]] == [control]
    assert segments_of(send(server, orm(unique("C"), patient, placer)))["MSA"][1] == "AA"  # the order, now
    again = requests.post(f"{server.url}/api/hl7/messages/{entry['id']}/replay", timeout=30)
    assert again.status_code == 200, again.text
    replayed = again.json()
    assert (replayed["ack_code"], replayed["replay_of"], replayed["address"]) == ("AA", entry["id"], "replay")
    assert replayed["item_ids"] == [items_of(server, patient)[0]["id"]]
    assert requests.get(f"{server.url}/api/hl7/messages/999999", timeout=30).status_code == 404
    assert requests.post(f"{server.url}/api/hl7/messages/0/replay", timeout=30).status_code == 422


def test_the_cli_sends_lists_shows_and_replays(server, tmp_path) -> None:
    patient, placer, control = unique("P"), unique("PL"), unique("C")
    file = tmp_path / "orders.hl7"  # as an editor writes it: LF line ends, two messages
    text = (orm(control, patient, placer) + orm(unique("C"), patient, placer, order_control="SC",
                                                order_status="ZZ")).decode()
    file.write_text(text.replace("\r", "\n"))
    sent = hounsfield("hl7", "send", file, "--to", f"127.0.0.1:{server.hl7_port}")
    lines = sent.stdout.strip().splitlines()
    assert sent.returncode == 1, sent.stderr  # the second one is AE
    assert lines[0].startswith(f"{control}: AA item ") and " AE " in lines[1] and "ZZ" in lines[1]
    listing = server.cli("hl7", "log", "--patient-id", patient).stdout
    assert control in listing and "AA" in listing and "AE" in listing
    message_id = logged(server, control)["id"]
    shown = server.cli("hl7", "show", str(message_id)).stdout
    assert f"PID|1||{patient}^^^HOSP&1.2.3.4&ISO|" in shown and f"MSA|AA|{control}|" in shown
    replayed = server.cli("hl7", "replay", str(message_id), check=False)
    assert replayed.returncode == 0 and f"message {message_id} replayed as message" in replayed.stdout
    assert len(items_of(server, patient)) == 1  # NW of a known order changes it: still one item
    wrong = server.cli("hl7", "show", "999999", check=False)
    assert wrong.returncode == 1 and "no HL7 message 999999" in wrong.stderr


# ---- MLLP over TLS (in process: the listener of ``serve`` on a Pacs of its own) -----------------------------------

def test_mllp_over_tls(tmp_path, caplog) -> None:
    from test_tls import Pki, _issue

    from hounsfield import config
    from hounsfield.hl7 import mllp
    from hounsfield.pacs import Pacs

    folder = tmp_path / "certs"
    folder.mkdir()
    ca = _issue(folder, "ca", None)
    _issue(folder, "server", ca)
    pki = Pki(folder, {})
    port = free_port()
    pacs = Pacs(config.load(data_dir=str(tmp_path / "data"), tls_cert=str(pki.cert("server")),
                            tls_key=str(pki.key("server")), hl7_tls="true", hl7_read_timeout="5"))
    pacs.start_hl7(mllp.listening_socket("127.0.0.1", port))
    try:
        control, patient = unique("C"), unique("P")
        ack = mllp.send("127.0.0.1", port, orm(control, patient, unique("PL")), timeout=30,
                        context=pki.client_context(None))
        check_ack(ack, "AA", control, "O01")
        assert [i.dataset.PatientID for i in pacs.worklist.list()[1]] == [patient]
        with caplog.at_level("WARNING", logger="hounsfield.hl7"):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as plain:  # MLLP without TLS
                plain.sendall(SB + orm(unique("C"), unique("P"), unique("PL")) + EB + CR)
                assert closed(plain)
            deadline = time.monotonic() + 10
            while "HL7 TLS connection from 127.0.0.1" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
        assert "HL7 TLS connection from 127.0.0.1" in caplog.text and "refused" in caplog.text
        file = tmp_path / "one.hl7"
        file.write_bytes(orm(unique("C"), unique("P"), unique("PL")))
        sent = hounsfield("hl7", "send", file, "--to", f"127.0.0.1:{port}", "--tls", "--tls-ca", pki.ca)
        assert sent.returncode == 0 and ": AA item " in sent.stdout, sent.stderr
    finally:
        pacs.close(grace=5)


@pytest.mark.parametrize("senders, accepted", [("", True), ("192.0.2.7", False), ("192.0.2.0/24, 127.0.0.0/8", True),
                                               ("localhost", True)])
def test_only_the_configured_senders_may_send(tmp_path, caplog, senders: str, accepted: bool) -> None:
    """hl7_senders: empty means this machine's loopback only; a sender not listed is closed on and logged, and
    nothing it sent is applied."""
    import logging

    from hounsfield import config
    from hounsfield.hl7 import mllp
    from hounsfield.pacs import Pacs

    port = free_port()
    pacs = Pacs(config.load(data_dir=str(tmp_path / "data"), hl7_senders=senders, hl7_read_timeout="5"))
    pacs.start_hl7(mllp.listening_socket("127.0.0.1", port))
    try:
        control, patient = unique("C"), unique("P")
        with caplog.at_level(logging.WARNING, "hounsfield"):
            if accepted:
                check_ack(mllp.send("127.0.0.1", port, orm(control, patient, unique("PL")), timeout=30), "AA",
                          control, "O01")
            else:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                    try:
                        sock.sendall(mllp.frame(orm(control, patient, unique("PL"))))
                        answer = sock.recv(4096)
                    except (ConnectionResetError, BrokenPipeError):  # closed before or while it was sent
                        answer = b""
                    assert answer == b""  # closed without an answer
        total, _ = pacs.worklist.list(limit=10)
        assert total == (1 if accepted else 0)
        if not accepted:
            assert any("not one of hl7_senders" in m for m in caplog.messages)
    finally:
        pacs.close()
