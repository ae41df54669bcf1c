"""Mutated PDUs and datasets against a running server's DICOM port (issue 12), while a well-behaved peer keeps
storing and echoing on an association of its own.

Every case starts from bytes pynetdicom and pydicom build (an A-ASSOCIATE-RQ, a C-STORE-RQ command set, a CT
dataset in implicit VR little endian, the P-DATA-TF PDUs carrying them) and mutates them with one seeded
``random.Random``: bytes flipped, inserted or cut, length fields made wrong, fragments broken off, presentation
contexts and message control headers changed. Raw sockets send them, several connections at once.

What "malformed" means here, by construction: a dataset truncated inside its Pixel Data, one whose Pixel Data
declares more bytes than follow, one whose SOP Instance UID has letters and a slash, random bytes in place of a
dataset, a message broken off before its last fragment (A-ABORT, A-RELEASE-RQ or the connection closed). The
server must never store one (index and quarantine), nor answer it 0x0000. A mutation whose outcome cannot be
known beforehand (a dataset with bytes flipped outside its SOP Instance UID, a mutated command set, mutated PDV
framing) may be stored, but then exactly as sent, and only if the server did not refuse it; whatever the server
answered 0x0000 is stored (index, or quarantine when the indexer cannot take it). The datasets whose message is
complete and whose command set is intact are answered, success or failure.

Meanwhile the well-behaved association gets every answer (all 0x0000); afterwards the server process is alive,
C-ECHO and /health answer, the index holds exactly the well-behaved instances and the mutated ones it answered
0x0000, and no partial file remains in ``files/.incoming``. Fixed seed, bounded count; waits are bounded polls
for conditions, and no assertion is about how long anything took.
"""

from __future__ import annotations

import io
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification

from support import Server

SEED = 20260112
CASES = 240  # mutated connections
WORKERS = 8  # raw connections at once (the server takes 16 associations)
READ_TIMEOUT = 2  # the server's dicom_read_timeout: a stalled PDU is given up after this
PATIENCE = 60.0  # seconds an awaited event may take before the test fails
SHORT_WAIT = 3.0  # how long a mutated message whose end may have been lost is given for its answer
STORE_CONTEXT, ECHO_CONTEXT = 1, 3
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RP, A_ABORT = 0x02, 0x03, 0x04, 0x06, 0x07
A_RELEASE_RQ_PDU = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
A_ABORT_PDU = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"
MALFORMED = ("truncated-in-pixels", "pixel-length-past-end", "uid-not-a-uid", "random-bytes", "broken-off")
UNKNOWN = ("flipped", "command", "framing")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("fuzz-dicom") / "data", env={
        "HOUNSFIELD_DICOM_READ_TIMEOUT": str(READ_TIMEOUT), "HOUNSFIELD_DICOM_PROCESSES": "1"}).start()
    try:
        yield srv
    finally:
        srv.stop()


# ---- valid bytes to start from -----------------------------------------------------------------------------------
def uid_from(rng: random.Random) -> str:
    return f"2.25.{rng.getrandbits(120)}"


def ct(sop_instance_uid: str, patient_id: str) -> pydicom.Dataset:
    """pydicom's CT_small with a 4x4 image (its Pixel Data the last element, 32 bytes)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 4
    ds.PixelData = bytes(range(32))
    for tag in [t for t in ds.keys() if t > 0x7FE00010]:  # the private elements after it
        del ds[tag]
    ds.SOPInstanceUID = sop_instance_uid
    ds.PatientID = patient_id
    return ds


def dataset(sop_instance_uid: str, patient_id: str) -> bytes:
    """``ct`` encoded in implicit VR little endian (the context's syntax), as a C-STORE carries it."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ct(sop_instance_uid, patient_id), (True, True))
    return buffer.getvalue()


def associate_rq() -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing CT Image Storage (context 1) and Verification (3), as pynetdicom
    encodes it."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "MUTANT"
    primitive.called_ae_title = "HOUNSFIELD"
    contexts = []
    for context_id, sop_class in ((STORE_CONTEXT, CTImageStorage), (ECHO_CONTEXT, Verification)):
        context = build_context(sop_class, [ImplicitVRLittleEndian])
        context.context_id = context_id
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0"
    primitive.user_information = [max_length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def store_command(message_id: int, sop_instance_uid: str) -> bytes:
    """The C-STORE-RQ command set pynetdicom encodes (a data set follows)."""
    rq = C_STORE()
    rq.MessageID, rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID, rq.Priority = \
        message_id, CTImageStorage, sop_instance_uid, 2
    rq.DataSet = io.BytesIO(b"\x08\x00\x16\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    return b"".join(bytes(data[1:]) for pdata in message.encode_msg(STORE_CONTEXT, 0)
                    for _, data in pdata.presentation_data_value_list if data[0] & 1)


def _pdvs_of(pdu: bytes) -> list[tuple[int, int, bytes]]:
    """The (context ID, message control header, fragment) items of a P-DATA-TF PDU made by ``p_data_tf``."""
    out, pos = [], 6
    while pos < len(pdu):
        length, cid, control = struct.unpack_from(">LBB", pdu, pos)
        out.append((cid, control, pdu[pos + 6:pos + 4 + length]))
        pos += 4 + length
    return out


def p_data_tf(*pdvs: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) of (context ID, message control header, fragment) items."""
    items = b"".join(struct.pack(">LBB", len(data) + 2, cid, control) + data for cid, control, data in pdvs)
    return struct.pack(">BBL", P_DATA_TF, 0, len(items)) + items


# ---- mutations ---------------------------------------------------------------------------------------------------
def flipped(rng: random.Random, data: bytes, keep: range = range(0)) -> bytes:
    """``data`` with 1 to 8 bytes XORed with a random non-zero byte (none in ``keep``)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(out))
        if at not in keep:
            out[at] ^= rng.randint(1, 255)
    return bytes(out)


def mutated_bytes(rng: random.Random, data: bytes) -> bytes:
    """One of: bytes flipped, cut short, bytes inserted, a slice repeated, a 16- or 32-bit field overwritten
    (the length fields of PDUs, items and sub-items are such fields)."""
    how = rng.randrange(5)
    if how == 0:
        return flipped(rng, data)
    if how == 1:
        return data[:rng.randrange(1, len(data))]
    at = rng.randrange(len(data))
    if how == 2:
        return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]
    if how == 3:
        end = min(len(data), at + rng.randint(1, 64))
        return data[:end] + data[at:end] + data[end:]
    size = rng.choice((2, 4))
    at = min(at, len(data) - size)
    value = rng.choice((0, 1, 0xFFFF, 0xFFFFFFFF, rng.getrandbits(8 * size), len(data), len(data) + 1))
    return data[:at] + (value & (1 << 8 * size) - 1).to_bytes(size, "big") + data[at + size:]


# ---- a raw connection --------------------------------------------------------------------------------------------
class Peer:
    """A raw socket to the DICOM port: PDUs written as they are, PDUs read with a deadline."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.dicom_port), timeout=PATIENCE)
        self.received = b""

    def send(self, data: bytes) -> bool:
        """False when the server has closed the connection already."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def pdu(self, wait: float = PATIENCE) -> tuple[int, bytes] | None:
        """The next PDU (type, what follows its header), None when the connection is closed or nothing came
        within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            if len(self.received) >= 6:
                length = struct.unpack_from(">L", self.received, 2)[0] + 6
                if len(self.received) >= length:
                    pdu, self.received = self.received[:length], self.received[length:]
                    return pdu[0], pdu[6:]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, OSError):
                return None
            if not chunk:
                return None
            self.received += chunk

    def until_closed(self) -> None:
        """Read until the server closes the connection (it must, within ``PATIENCE``)."""
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                if not self.sock.recv(65536):
                    return
            except TimeoutError:
                break
            except OSError:
                return
        raise AssertionError(f"the server kept a connection open for {PATIENCE:.0f} s")

    def associate(self) -> bool:
        """An association established (False: the server refused it, e.g. for its local limit)."""
        self.send(associate_rq())
        answer = self.pdu()
        return answer is not None and answer[0] == A_ASSOCIATE_AC

    def close(self) -> None:
        self.sock.close()


def store_status(body: bytes) -> int | None:
    """The Status of the C-STORE-RSP in a P-DATA-TF PDU's body, None for any other."""
    pos = 0
    while pos + 6 <= len(body):
        length, _, control = struct.unpack_from(">LBB", body, pos)
        fragment = body[pos + 6:pos + 4 + length]
        pos += 4 + length
        if control & 0x01:
            values, at = {}, 0
            while at + 8 <= len(fragment):
                group, element, size = struct.unpack_from("<HHL", fragment, at)
                values[(group, element)] = fragment[at + 8:at + 8 + size]
                at += 8 + size
            if values.get((0, 0x0100)) == b"\x01\x80" and len(values.get((0, 0x0900), b"")) == 2:
                return struct.unpack("<H", values[(0, 0x0900)])[0]
    return None


# ---- the cases ---------------------------------------------------------------------------------------------------
@dataclass
class Case:
    """One mutated connection: what it sent (``kind``), and what the server answered."""

    number: int
    kind: str
    sop_instance_uid: str = ""
    dataset: bytes = b""  # the dataset bytes sent, when the message carried one whole
    status: int | None = None  # the C-STORE-RSP's
    established: bool = False
    run: Callable[[Peer], None] | None = field(default=None, repr=False)


def _wait_answer(case: Case, peer: Peer, wait: float) -> None:
    """Read until the C-STORE-RSP (its status recorded) or the association's end."""
    while (answer := peer.pdu(wait)) is not None:
        if answer[0] == P_DATA_TF:
            case.status = store_status(answer[1])
            if case.status is not None:
                return
        elif answer[0] in (A_ABORT, A_RELEASE_RP):
            return


def _end(peer: Peer, how: int) -> None:
    """Release (0), abort (1) or just close (2), then read until the server closes the connection."""
    if how == 0:
        peer.send(A_RELEASE_RQ_PDU)
    elif how == 1:
        peer.send(A_ABORT_PDU)
    else:
        try:
            peer.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    peer.until_closed()


def build_cases(rng: random.Random) -> list[Case]:
    """``CASES`` cases, each with its bytes decided now (one seeded generator, so the same on every run)."""
    cases = []
    kinds = ("associate", *MALFORMED, *UNKNOWN)
    for number in range(CASES):
        kind = kinds[number % len(kinds)] if number < 2 * len(kinds) else rng.choice(kinds)
        case = Case(number, kind)
        if kind == "associate":
            case.run = _associate_case(rng, case)
        else:
            case.sop_instance_uid = uid_from(rng)
            case.run = _store_case(rng, case)
        cases.append(case)
    return cases


def _associate_case(rng: random.Random, case: Case) -> Callable[[Peer], None]:
    sent = mutated_bytes(rng, associate_rq())
    stop_writing = rng.random() < 0.5  # else the server is left to give up on what is missing (ARTIM)

    def run(peer: Peer) -> None:
        peer.send(sent)
        if stop_writing:
            try:
                peer.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        answer = peer.pdu(READ_TIMEOUT * 4)
        case.established = answer is not None and answer[0] == A_ASSOCIATE_AC
        if case.established:
            peer.send(A_RELEASE_RQ_PDU)
        peer.until_closed()

    return run


def _store_case(rng: random.Random, case: Case) -> Callable[[Peer], None]:
    """The PDUs of one C-STORE, mutated as ``case.kind`` says (see the module docstring)."""
    uid, kind = case.sop_instance_uid, case.kind
    data = dataset(uid, f"MUTANT{case.number}")
    command = store_command(1 + case.number % 60000, uid)
    pixels = data.rindex(b"\xe0\x7f\x10\x00")  # the Pixel Data element: tag, 4-byte length, 32 bytes
    assert pixels + 8 + 32 == len(data), "Pixel Data is not the last element"
    uid_value = data.index(uid.encode())
    wait = PATIENCE
    pdus: list[bytes]
    if kind == "truncated-in-pixels":
        data = data[:pixels + 8 + rng.randint(1, 31)]
    elif kind == "pixel-length-past-end":
        data = data[:pixels + 4] + struct.pack("<L", rng.choice((33, 34, 1000, 0xFFFFFFF0))) + data[pixels + 8:]
    elif kind == "uid-not-a-uid":
        bad = bytes(rng.choice(b"abcXYZ/") for _ in uid)
        data = data[:uid_value] + bad + data[uid_value + len(uid):]
    elif kind == "random-bytes":
        data = rng.randbytes(len(data))
    elif kind == "flipped":
        data = flipped(rng, data, keep=range(uid_value, uid_value + len(uid)))
    elif kind == "command":
        command, wait = mutated_bytes(rng, command), SHORT_WAIT
    if rng.random() < 0.25 and len(command) > 1:  # the command set in two fragments: pynetdicom's own path
        at = rng.randrange(1, len(command))
        commands = [p_data_tf((STORE_CONTEXT, 0x01, command[:at])), p_data_tf((STORE_CONTEXT, 0x03, command[at:]))]
    else:  # hounsfield's (store_receive)
        commands = [p_data_tf((STORE_CONTEXT, 0x03, command))]
    cut = rng.randrange(1, len(data))
    if kind == "broken-off":
        pdus = [*commands, p_data_tf((STORE_CONTEXT, 0x00, data[:cut]))]
        data, wait = b"", SHORT_WAIT
    elif rng.random() < 0.5:  # the data in one PDU of its own, or in two
        pdus = [*commands, *([p_data_tf((STORE_CONTEXT, 0x02, data))] if rng.random() < 0.5 else
                             [p_data_tf((STORE_CONTEXT, 0x00, data[:cut])), p_data_tf((STORE_CONTEXT, 0x02, data[cut:]))])]
    else:  # the data in the PDU of the (last) command fragment
        pdus = [*commands[:-1], p_data_tf(*_pdvs_of(commands[-1]), (STORE_CONTEXT, 0x02, data))]
    case.dataset = data
    if kind == "framing":
        at = rng.randrange(len(pdus))
        how = rng.randrange(4)
        if how == 0:  # a PDV on a context that was not accepted, or the other accepted one
            pdus[at] = pdus[at][:10] + bytes([rng.choice((ECHO_CONTEXT, 5, 255))]) + pdus[at][11:]
        elif how == 1:  # the message control header changed
            pdus[at] = pdus[at][:11] + bytes([rng.randrange(256)]) + pdus[at][12:]
        elif how == 2:  # an unknown PDU type, or another PDU type with the same body
            pdus[at] = bytes([rng.choice((0x00, 0x01, 0x05, 0x08, 0xFF))]) + pdus[at][1:]
        else:  # lengths, bytes: anything, the dataset's bytes too (what is stored is then not known)
            pdus[at] = mutated_bytes(rng, pdus[at])
            case.dataset = b""
        wait = SHORT_WAIT
    sent = b"".join(pdus)
    end = rng.randrange(3)

    def run(peer: Peer) -> None:
        case.established = peer.associate()
        if not case.established:
            peer.until_closed()
            return
        if peer.send(sent):
            _wait_answer(case, peer, wait)
        _end(peer, end)

    return run


def run_case(server: Server, case: Case) -> Case:
    """Run one case on a connection of its own, retried (in full) while the association is refused."""
    assert case.run is not None
    deadline = time.monotonic() + PATIENCE
    while True:
        peer = Peer(server)
        try:
            case.run(peer)
        finally:
            peer.close()
        if case.kind == "associate" or case.established or time.monotonic() > deadline:
            return case
        time.sleep(0.05)  # refused for the local limit: the slot of an earlier case is about to be free


# ---- the well-behaved peer ---------------------------------------------------------------------------------------
@dataclass
class WellBehaved:
    stored: list[str] = field(default_factory=list)
    statuses: list[tuple[str, int | None]] = field(default_factory=list)
    error: BaseException | None = None


def well_behaved(server: Server, rng: random.Random, done: threading.Event, result: WellBehaved) -> None:
    """Store a new instance and echo, again and again until ``done`` (and at least 20 times), on one association
    (whose responses pynetdicom's reactor no longer takes from the waiting send: tests/conftest.py)."""
    try:
        ae = AE(ae_title="WELLBEHAVED")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # as CT_small is encoded
        ae.add_requested_context(Verification)
        deadline = time.monotonic() + PATIENCE
        while not (assoc := ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)).is_established:
            assert time.monotonic() < deadline, "the well-behaved peer's association was never accepted"
            time.sleep(0.1)
        rounds = 0
        while not done.is_set() or rounds < 20:
            uid = uid_from(rng)
            message_id = 2 * rounds % 65536 + 1
            status = assoc.send_c_store(ct(uid, "WELLBEHAVED"), msg_id=message_id)
            result.statuses.append(("store", int(status.Status) if "Status" in status else None))
            result.stored.append(uid)
            status = assoc.send_c_echo(msg_id=message_id + 1)
            result.statuses.append(("echo", int(status.Status) if "Status" in status else None))
            rounds += 1
        assoc.release()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        result.error = exc


# ---- the test ----------------------------------------------------------------------------------------------------
def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {PATIENCE:.0f} s: {what}")
        time.sleep(0.05)


def instances(server: Server) -> set[str]:
    r = requests.get(f"{server.url}/api/instances", params={"limit": 10000}, timeout=PATIENCE)
    r.raise_for_status()
    return {i["SOPInstanceUID"] for i in r.json()}


def quarantined(server: Server, uids: set[str]) -> set[str]:
    """Which of ``uids`` are in a quarantined file (the indexer could not take them)."""
    found = set()
    for path in (server.data_dir / "files" / ".quarantine").glob("*.dcm"):
        data = path.read_bytes()
        found |= {uid for uid in uids if uid.encode() in data}
    return found


def echo(server: Server) -> int:
    ae = AE(ae_title="AFTERWARDS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status)


def test_mutated_pdus_and_datasets_store_nothing_malformed_and_stop_no_one(server: Server) -> None:
    rng = random.Random(SEED)
    cases = build_cases(rng)
    before = instances(server)
    done, good = threading.Event(), WellBehaved()
    peer_thread = threading.Thread(target=well_behaved, args=(server, random.Random(rng.getrandbits(32)), done, good))
    peer_thread.start()
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda case: run_case(server, case), cases))
    finally:
        done.set()
        peer_thread.join(PATIENCE * 2)

    # The well-behaved association got every answer, and the server is alive and serving.
    assert not peer_thread.is_alive() and good.error is None, good.error
    assert good.statuses and all(status == 0x0000 for _, status in good.statuses), good.statuses
    assert server.proc is not None and server.proc.poll() is None, server.log_text()[-3000:]
    assert "Exception in thread" not in server.log_text()  # no association's thread died of what it read
    assert echo(server) == 0x0000
    assert requests.get(f"{server.url}/health", timeout=PATIENCE).status_code == 200

    stores = [c for c in cases if c.kind != "associate"]
    assert all(c.established for c in stores), [c for c in stores if not c.established]
    sent = {c.sop_instance_uid: c for c in stores}
    stored = instances(server) - before
    kept = stored | quarantined(server, set(sent))

    # Nothing but what was sent whole: the well-behaved instances and mutated ones it did not refuse.
    assert stored - set(sent) == set(good.stored), "instances no one sent, or well-behaved ones missing"
    for case in stores:
        where = f"case {case.number} ({case.kind}): status {case.status}"
        if case.kind in MALFORMED:
            assert case.sop_instance_uid not in kept, f"{where}: a malformed dataset was stored"
            assert case.status != 0x0000, f"{where}: a malformed dataset was answered success"
        else:
            if case.status == 0x0000:
                assert case.sop_instance_uid in kept, f"{where}: answered success, not stored"
            elif case.sop_instance_uid in kept:
                assert case.status is None, f"{where}: refused, yet stored"
        if case.kind in ("truncated-in-pixels", "pixel-length-past-end", "uid-not-a-uid", "random-bytes",
                         "flipped"):
            assert case.status is not None, f"{where}: a whole C-STORE got no answer"
        if case.sop_instance_uid in stored and case.dataset:  # exactly the bytes sent, after preamble and meta
            r = requests.get(f"{server.url}/api/instances/{case.sop_instance_uid}/file", timeout=PATIENCE)
            assert r.ok and r.content.endswith(case.dataset), where

    # No partial file once the associations are over.
    incoming = server.data_dir / "files" / ".incoming"
    wait_for(lambda: not any(incoming.iterdir()), f"{incoming} empty: {sorted(p.name for p in incoming.iterdir())}")
    outcomes: dict[str, dict[str, int]] = {}
    for case in stores:
        outcome = "stored" if case.sop_instance_uid in kept else f"{case.status:#06x}" if case.status is not None \
            else "no answer"
        outcomes.setdefault(case.kind, {}).setdefault(outcome, 0)
        outcomes[case.kind][outcome] += 1
    print("outcomes:", outcomes, "rounds:", len(good.stored))


# ---- what the fuzzing found, kept as plain regression tests -----------------------------------------------------
def logged(server: Server, since: int, *parts: str) -> bool:
    """Whether a line the server logged after byte ``since`` of its log has all of ``parts``."""
    with open(server.log_path, "rb") as f:
        f.seek(since)
        lines = f.read().decode(errors="replace").splitlines()
    return any(all(part in line for part in parts) for line in lines)


def incoming_files(server: Server) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "files" / ".incoming").iterdir())


def established_peer(server: Server) -> Peer:
    deadline = time.monotonic() + PATIENCE
    while not (peer := Peer(server)).associate():
        peer.close()
        assert time.monotonic() < deadline, "no association accepted"
        time.sleep(0.1)
    return peer


def test_a_command_set_pynetdicom_cannot_decode_aborts_the_association(server: Server) -> None:
    """pynetdicom's decoder raised AttributeError in the DUL thread for a command set without a Command Field
    (the fast path leaves such a command to it), and the thread died: no A-ABORT, a traceback on stderr."""
    since = server.log_size()
    peer = established_peer(server)
    port = peer.sock.getsockname()[1]
    without_field = b"".join(struct.pack("<HHL", 0, element, len(value)) + value for element, value in (
        (0x0002, b"1.2.840.10008.5.1.4.1.1.2\x00"), (0x0110, b"\x01\x00"), (0x0800, b"\x01\x00")))
    peer.send(p_data_tf((STORE_CONTEXT, 0x03, without_field)))
    answer = peer.pdu()
    peer.until_closed()
    peer.close()
    assert answer is not None and answer[0] == A_ABORT, answer  # AA-8, then the close
    wait_for(lambda: logged(server, since, "unable to decode the DIMSE message received from",
                            f"127.0.0.1:{port}", "CommandField"), "the error naming the peer")
    assert "Exception in thread" not in server.log_text()
    assert echo(server) == 0x0000


@pytest.mark.parametrize("ending", [A_ABORT_PDU, A_RELEASE_RQ_PDU, b""], ids=["abort", "release", "close"])
def test_a_c_store_broken_off_on_pynetdicoms_path_leaves_no_file(server: Server, ending: bytes) -> None:
    """A command set in two fragments goes to pynetdicom, which receives the dataset to a temporary file in the
    incoming directory; broken off, the file stayed there until the next start."""
    peer = established_peer(server)
    uid = uid_from(random.Random(len(ending)))
    command = store_command(1, uid)
    peer.send(p_data_tf((STORE_CONTEXT, 0x01, command[:20])) + p_data_tf((STORE_CONTEXT, 0x03, command[20:]))
              + p_data_tf((STORE_CONTEXT, 0x00, dataset(uid, "BROKEN")[:100])))
    wait_for(lambda: len(incoming_files(server)) == 1, "pynetdicom's file of the dataset in .incoming")
    if ending:
        peer.send(ending)
    else:
        peer.sock.shutdown(socket.SHUT_WR)
    peer.until_closed()
    peer.close()
    wait_for(lambda: incoming_files(server) == [], "the partial file removed")
    assert uid not in instances(server)


def test_a_c_store_no_service_class_takes_leaves_no_file(server: Server) -> None:
    """A whole C-STORE-RQ whose SOP Class UID pynetdicom knows no service for (here mutated to hold spaces) is
    dropped by pynetdicom unanswered, and its dataset's temporary file stayed in the incoming directory."""
    since = server.log_size()
    peer = established_peer(server)
    uid = uid_from(random.Random(7))
    command = store_command(1, uid).replace(b"1.2.840.10008.5.1.4.1.1.2", b"1.2.840.1000  5.1.4.1.1.2")
    peer.send(p_data_tf((STORE_CONTEXT, 0x03, command), (STORE_CONTEXT, 0x02, dataset(uid, "NOSERVICE"))))
    wait_for(lambda: logged(server, since, "No supported service class", "1.2.840.1000  5.1.4.1.1.2"),
             "pynetdicom's error")
    wait_for(lambda: incoming_files(server) == [], "the file removed")
    peer.send(A_RELEASE_RQ_PDU)
    peer.until_closed()
    peer.close()
    assert uid not in instances(server)


def test_a_pdu_begun_right_behind_the_association_request_and_stalled_is_aborted(server: Server) -> None:
    """An A-ASSOCIATE-RQ and one byte of a next PDU in one write: the reader read on before the state machine
    had taken the request's event, found the second PDU stalled while still in Sta2 and queued the ARTIM timer's
    expiry (Evt18) behind it; in Sta3 that event is invalid, and the DUL thread died of InvalidEventError."""
    since = server.log_size()
    peer = Peer(server)
    port = peer.sock.getsockname()[1]
    peer.send(associate_rq() + b"\x04")
    while (answer := peer.pdu()) is not None and answer[0] != A_ABORT:
        pass  # the A-ASSOCIATE-AC, then the A-ABORT (AA-8) once the rest of the second PDU is overdue
    peer.until_closed()
    peer.close()
    wait_for(lambda: logged(server, since, f"127.0.0.1:{port} sent 1 of the 6 bytes of a PDU header"),
             "the warning naming the peer")
    assert not logged(server, since, "Exception in thread") and not logged(server, since, "InvalidEventError")
    assert echo(server) == 0x0000
