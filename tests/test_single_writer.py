"""One writer per association socket (dimse/writer.py): MWL answers written from the handler's thread and the
PDUs the DUL thread writes never interleave on the wire (PS3.8 9.3: a PDU is its 6-byte header and exactly the
length it announces, and the peer reads the stream as one PDU after another).

First in process, the race made deterministic: the DUL's stand-in is held in the middle of a large PDU (a socket
that writes part of it and waits) while ``PendingAnswers.send`` runs in another thread; the test reads the other
end of the socket pair. With the lock the answer follows the whole PDU; with the lock replaced by one that locks
nothing, the same run puts the answer inside the PDU, and the parser below sees it: the test can see the bug.

Then against a real ``hounsfield serve`` with a worklist of a few thousand items, whose answers are larger than
what the socket buffers hold, so that the server is still answering when the client speaks: a raw-socket
client asks for the whole worklist and, while the answers stream, stores instances on the same association (the
DUL thread answers those, while the handler's thread writes answers) and cancels; on another association it
aborts mid-answer; on a third it sends a PDU the server must abort, so that the DUL writes an A-ABORT while the
answers go out. Every byte received is parsed into PDUs and messages, every answer decoded; the next association
is served. With the fast paths off, every answer goes out as stock pynetdicom sends it: PendingAnswers writes
nothing itself.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_FIND_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage, ModalityWorklistInformationFind as MWL
from pynetdicom.transport import AssociationSocket

from factories import tiny_ct
from hounsfield import config
from hounsfield.dimse import fastpath, writer
from hounsfield.pacs import Pacs
from hounsfield.worklist import flat, items
from hounsfield.worklist.dimse import PendingAnswers
from support import Server
from test_dimse_hostile import associate_rq
from test_worklist_common import TODAY, modality_query

PATIENCE = 60.0  # seconds an awaited event may take before the test fails (never reached when all is well)
A_ASSOCIATE_AC, P_DATA_PDU, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x02, 0x04, 0x05, 0x06, 0x07
ABORT_PDU = struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, 0, 0)  # from the service user (PS3.8 9.3.8)
PENDING, CANCEL = (0xFF00, 0xFF01), 0xFE00
MWL_CONTEXT, CT_CONTEXT = 1, 3  # associate_rq(MWL, CTImageStorage) proposes them in this order


# ---- the wire, parsed -----------------------------------------------------------------------------------------


def pdus(stream: bytes, *, cut_off: bool = False) -> list[tuple[int, bytes]]:
    """``stream`` split into PDUs (type, body), each checked: a known type (PS3.8 9.3.1: 1-7), the reserved
    byte 0, and for a P-DATA-TF the PDV items adding up to its length, each on an odd context ID with a valid
    message control header (PS3.8 9.3.5.1, E.2). ``cut_off``: the connection was dropped, the last PDU may be a
    prefix of one. An AssertionError says where the stream breaks."""
    out, at = [], 0
    while at < len(stream):
        if cut_off and len(stream) - at < 6:
            break
        assert len(stream) - at >= 6, f"{len(stream) - at} bytes at {at}: less than a PDU header"
        pdu_type, reserved, length = struct.unpack_from(">BBL", stream, at)
        assert 1 <= pdu_type <= 7 and reserved == 0, f"no PDU at byte {at}: header {stream[at:at + 6].hex()}"
        body = stream[at + 6:at + 6 + length]
        if cut_off and len(body) < length:
            break
        assert len(body) == length, f"PDU 0x{pdu_type:02X} at {at} announces {length} bytes, {len(body)} follow"
        if pdu_type == P_DATA_PDU:
            pdvs(body)
        out.append((pdu_type, body))
        at += 6 + length
    return out


def pdvs(body: bytes) -> list[tuple[int, int, bytes]]:
    """The (context ID, message control header, fragment) items of a P-DATA-TF PDU's body, checked."""
    out, at = [], 0
    while at < len(body):
        assert len(body) - at >= 6, f"PDV item header cut at {at} of {len(body)}"
        length, context_id, control = struct.unpack_from(">LBB", body, at)
        assert 2 <= length <= len(body) - at - 4, f"PDV at {at} announces {length} bytes of {len(body) - at - 4}"
        assert context_id % 2 == 1 and control <= 3, f"PDV at {at}: context {context_id}, control {control}"
        out.append((context_id, control, body[at + 6:at + 4 + length]))
        at += 4 + length
    return out


@dataclass
class Message:
    """One DIMSE message as received: its command set and, when one follows, its data set (both decoded)."""

    context_id: int
    command: Dataset
    data: Dataset | None = None


def implicit(raw: bytes) -> Dataset:
    """A data set in implicit VR little endian (commands always, PS3.7 6.3.1; the contexts here), decoded now."""
    from pydicom.filereader import read_dataset

    ds = read_dataset(DicomBytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    for _ in ds.iterall():  # every element decoded: a broken one raises here
        pass
    return ds


class Messages:
    """The DIMSE messages of a stream of P-DATA-TF PDVs. A message's fragments are contiguous, on one
    presentation context (PS3.8 9.3.5, E.2: its command fragments, then its data fragments when it has a data
    set; PS3.7 6.3.1); anything else fails."""

    def __init__(self) -> None:
        self.done: list[Message] = []
        self._context: int | None = None  # of the message begun
        self._command, self._data = b"", b""
        self._command_set: Dataset | None = None  # once its last command fragment is in

    def add(self, context_id: int, control: int, fragment: bytes) -> None:
        assert self._context in (None, context_id), \
            f"a fragment on context {context_id} inside a message on {self._context}"
        self._context = context_id
        if control & 1:
            assert self._command_set is None, "a command fragment inside a data set"
            self._command += fragment
            if control & 2:
                self._command_set = implicit(self._command)
                if self._command_set.CommandDataSetType == 0x0101:  # no data set
                    self._finish(None)
            return
        assert self._command_set is not None, "a data fragment before the command set"
        self._data += fragment
        if control & 2:
            self._finish(implicit(self._data))

    def _finish(self, data: Dataset | None) -> None:
        assert self._context is not None and self._command_set is not None
        self.done.append(Message(self._context, self._command_set, data))
        self._context, self._command, self._data, self._command_set = None, b"", b"", None

    @property
    def complete(self) -> bool:
        """No message begun and not ended."""
        return self._context is None


# ---- in process: the race, held still ---------------------------------------------------------------------------


class HeldSocket:
    """The server's end of a socket pair as ``AssociationSocket`` writes to it. The first write from the thread
    named ``dul`` sends only ``part`` bytes, then waits until ``handler_arrived``: set when the thread named
    ``handler`` has written, or is waiting for the socket's lock (``WatchedLock``)."""

    def __init__(self, sock: socket.socket, part: int) -> None:
        self.sock = sock
        self.part = part
        self.dul_mid_pdu = threading.Event()
        self.handler_arrived = threading.Event()

    def send(self, data: bytes) -> int:
        name = threading.current_thread().name
        if name == "dul" and not self.dul_mid_pdu.is_set():
            sent = self.sock.send(data[:self.part])
            self.dul_mid_pdu.set()
            self.handler_arrived.wait(PATIENCE)
            return sent
        self.sock.sendall(data)
        if name == "handler":
            self.handler_arrived.set()
        return len(data)

    def fileno(self) -> int:
        return self.sock.fileno()


class WatchedLock:
    """The socket's lock, saying (``arrived``) when a thread has to wait for it."""

    def __init__(self, lock: Any, arrived: threading.Event) -> None:
        self.lock, self.arrived = lock, arrived

    def __enter__(self) -> None:
        if not self.lock.acquire(blocking=False):
            self.arrived.set()
            self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


class NoLock:
    """A lock that locks nothing: the socket as it was before ``writer``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    assert fastpath.install() and fastpath.active()  # as the server runs (installed for the whole process)
    ours, theirs = socket.socketpair()
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def established(ours: socket.socket) -> Association:
    """An acceptor association on ``ours`` whose DUL is in Sta6 (its thread not running: the test writes)."""
    assoc = Association(AE(), mode="acceptor")
    assoc.set_socket(AssociationSocket(assoc, client_socket=ours))
    assoc.dul.state_machine.current_state = "Sta6"
    return assoc


def find_event(assoc: Association) -> SimpleNamespace:
    """What ``PendingAnswers`` reads of an MWL C-FIND event."""
    request = SimpleNamespace(MessageID=7, AffectedSOPClassUID=MWL)
    context = SimpleNamespace(transfer_syntax=ImplicitVRLittleEndian, context_id=MWL_CONTEXT)
    return SimpleNamespace(assoc=assoc, request=request, context=context)


def answer_identifier() -> bytes:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "DOE^JANE", "P1", "A1"
    return encode(ds, True, True)


def large_pdu() -> bytes:
    """A P-DATA-TF PDU of 256 KB, one PDV on another context (as a C-STORE dataset fragment the DUL sends)."""
    fragment = bytes(256 * 1024)
    return struct.pack(">BBLLBB", P_DATA_PDU, 0, len(fragment) + 6, len(fragment) + 2, CT_CONTEXT, 0x02) + fragment


def read_all(sock: socket.socket, into: bytearray) -> threading.Thread:
    """A thread reading ``sock`` into ``into`` until the other end is closed."""
    def run() -> None:
        while chunk := sock.recv(65536):
            into.extend(chunk)

    reader = threading.Thread(target=run, name="reader")
    reader.start()
    return reader


def race(ours: socket.socket, theirs: socket.socket, lock: object | None) -> tuple[bytes, bytes, bytes]:
    """The DUL's stand-in writes ``large_pdu`` and is held after its first 1000 bytes; then ``PendingAnswers``
    sends one answer from the ``handler`` thread. ``lock``: what replaces the socket's lock (None: a
    ``WatchedLock`` around it). (bytes received, the large PDU, the answer's PDU)."""
    assoc = established(ours)
    held = HeldSocket(ours, part=1000)
    assoc.dul.socket.socket = held  # type: ignore[assignment]
    guard = writer.guard(assoc.dul.socket)
    guard.lock = WatchedLock(guard.lock, held.handler_arrived) if lock is None else lock  # type: ignore[assignment]
    answers, identifier = PendingAnswers(find_event(assoc)), answer_identifier()
    received = bytearray()
    reader = read_all(theirs, received)
    big = large_pdu()
    dul = threading.Thread(target=assoc.dul.socket.send, args=(big,), name="dul")
    handler = threading.Thread(target=answers.send, args=(identifier,), name="handler")
    dul.start()
    assert held.dul_mid_pdu.wait(PATIENCE)
    handler.start()
    for thread in (dul, handler):
        thread.join(PATIENCE)
        assert not thread.is_alive()
    ours.shutdown(socket.SHUT_WR)
    reader.join(PATIENCE)
    assert list(assoc.dul.to_provider_queue.queue) == []  # written, not queued for the DUL
    pdv_body = answers._command_pdv + struct.pack(">LBB", len(identifier) + 2, MWL_CONTEXT, 0x02) + identifier
    return bytes(received), big, struct.pack(">BBL", P_DATA_PDU, 0, len(pdv_body)) + pdv_body


def test_an_answer_waits_for_the_pdu_the_dul_is_writing(pair: tuple[socket.socket, socket.socket]) -> None:
    received, big, answer = race(*pair, lock=None)
    assert received == big + answer
    (first_type, first), (second_type, second) = pdus(received)
    assert (first_type, second_type) == (P_DATA_PDU, P_DATA_PDU)
    assert [(c, h) for c, h, _ in pdvs(second)] == [(MWL_CONTEXT, 0x03), (MWL_CONTEXT, 0x02)]
    stream = Messages()
    for pdv in pdvs(second):
        stream.add(*pdv)
    (message,) = stream.done
    assert message.command.Status == 0xFF00 and message.command.MessageIDBeingRespondedTo == 7
    assert message.data is not None and message.data.PatientName == "DOE^JANE"


def test_without_the_lock_the_answer_lands_inside_the_dul_s_pdu(pair: tuple[socket.socket, socket.socket]) -> None:
    """The same run with a lock that locks nothing: the test sees the interleaving it guards against."""
    received, big, answer = race(*pair, lock=NoLock())
    assert received == big[:1000] + answer + big[1000:]
    with pytest.raises(AssertionError, match="no PDU at byte"):
        pdus(received)


def test_after_the_dul_wrote_an_a_abort_answers_go_to_the_dul(pair: tuple[socket.socket, socket.socket]) -> None:
    """pynetdicom leaves Sta6 only once the action that wrote the A-ABORT (AA-8, AA-1) has returned: the answer
    must not follow the A-ABORT on the wire even while the state still says Sta6."""
    ours, theirs = pair
    assoc = established(ours)
    answers = PendingAnswers(find_event(assoc))
    assoc.dul.socket.send(ABORT_PDU)  # the DUL thread's write
    answers.send(answer_identifier())
    ours.shutdown(socket.SHUT_WR)
    received = bytearray()
    read_all(theirs, received).join(PATIENCE)
    assert bytes(received) == ABORT_PDU
    (queued,) = assoc.dul.to_provider_queue.queue
    assert isinstance(queued, P_DATA)
    assert [(c, d[:1]) for c, d in queued.presentation_data_value_list] == [(MWL_CONTEXT, b"\x03"),
                                                                            (MWL_CONTEXT, b"\x02")]


# ---- a real server --------------------------------------------------------------------------------------------

ITEMS = 3000
COMMENT = ("NPO 6 H BEFORE THE EXAMINATION. " * 125).strip()  # LT: ~4 KB per answer, 12 MB in all
RECEIVE_BUFFER = 256 * 1024  # the client's, so that the server's writes wait for it (the window), as for a slow reader


@pytest.fixture(scope="module")
def worklist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with ITEMS scheduled steps (imported in bulk: the REST API takes one at a time)."""
    data_dir = tmp_path_factory.mktemp("single-writer") / "data"
    pacs = Pacs(config.load(None, environ={}, data_dir=data_dir))
    try:
        rows = []
        for n in range(ITEMS):
            ds = flat.to_dataset({"patient_id": f"P{n:05d}", "patient_name": f"DOE^JANE{n}", "modality": "CT",
                                  "station_aet": "CT1", "start": f"{TODAY.isoformat()} 09:30",
                                  "accession_number": f"A{n:05d}", "patient_comments": COMMENT})
            rows.append(items.row(items.complete(ds, generate_ids=True), origin="api"))
        assert pacs.worklist.import_rows(rows).added == ITEMS
    finally:
        pacs.close(grace=0)
    return data_dir


def serve(data_dir: Path, name: str, **env: str) -> Server:
    """A server on ``data_dir`` with its own log: one DICOM process (so the next association meets the same
    one), a short read timeout (at most that long in Sta13, waiting for the peer to close after an A-ABORT)."""
    server = Server(data_dir, env={"HOUNSFIELD_DICOM_PROCESSES": "1", "HOUNSFIELD_DICOM_READ_TIMEOUT": "2", **env})
    server.log_path = data_dir.parent / f"{name}-serve.log"
    return server.start()


def query() -> Dataset:
    return modality_query(PatientComments=None)


def request_pdus(primitive: C_FIND | C_CANCEL | C_STORE, context_id: int) -> bytes:
    """The P-DATA-TF PDUs pynetdicom sends for a request (within the server's maximum PDU length)."""
    message = {C_FIND: C_FIND_RQ, C_CANCEL: C_CANCEL_RQ, C_STORE: C_STORE_RQ}[type(primitive)]()
    message.primitive_to_message(primitive)
    out = b""
    for pdata in message.encode_msg(context_id, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        out += pdu.encode()
    return out


def find_rq(message_id: int) -> bytes:
    rq = C_FIND()
    rq.MessageID, rq.AffectedSOPClassUID, rq.Priority = message_id, MWL, 2
    rq.Identifier = io.BytesIO(encode(query(), True, True))
    return request_pdus(rq, MWL_CONTEXT)


def cancel_rq(message_id: int) -> bytes:
    rq = C_CANCEL()
    rq.MessageIDBeingRespondedTo = message_id
    return request_pdus(rq, MWL_CONTEXT)


def store_rq(message_id: int, n: int) -> bytes:
    ds = tiny_ct("SINGLEWRITER", "1.2.826.0.1.3680043.9.7.1", "1.2.826.0.1.3680043.9.7.2", n)
    rq = C_STORE()
    rq.MessageID, rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID = message_id, CTImageStorage, ds.SOPInstanceUID
    rq.Priority = 2
    rq.DataSet = io.BytesIO(encode(ds, True, True))
    return request_pdus(rq, CT_CONTEXT)


class Peer:
    """A raw-socket requestor that keeps every byte the server sends and reads it PDU by PDU, checking each
    (``pdus``) and putting the DIMSE messages together (``Messages``) as they arrive."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)  # before connecting: the window
        self.sock.settimeout(PATIENCE)
        self.sock.connect(("127.0.0.1", server.dicom_port))
        self.raw = bytearray()
        self.messages = Messages()
        self.sock.sendall(associate_rq(MWL, CTImageStorage))
        pdu_type, body = self.next_pdu()
        assert pdu_type == A_ASSOCIATE_AC, body

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, f"the server closed the connection after {len(self.raw) + len(data)} bytes"
            data += chunk
        self.raw.extend(data)
        return data

    def next_pdu(self) -> tuple[int, bytes]:
        header = self._exactly(6)
        length = struct.unpack(">L", header[2:])[0]
        ((pdu_type, body),) = pdus(header + self._exactly(length))
        if pdu_type == P_DATA_PDU:
            for pdv in pdvs(body):
                self.messages.add(*pdv)
        return pdu_type, body

    def until_messages(self, count: int) -> None:
        """Read until ``count`` messages in all have arrived."""
        while len(self.messages.done) < count:
            pdu_type, body = self.next_pdu()
            assert pdu_type == P_DATA_PDU, f"PDU 0x{pdu_type:02X} {body[:16].hex()} while answers stream"

    def until(self, wanted: Callable[[Message], bool], count: int = 1) -> None:
        """Read until ``count`` more messages that are ``wanted`` have arrived."""
        checked = len(self.messages.done)
        while count > 0:
            self.next_pdu()
            count -= sum(map(wanted, self.messages.done[checked:]))
            checked = len(self.messages.done)

    def rest(self) -> bytes:
        """What the server sends until it closes the connection."""
        start = len(self.raw)
        while chunk := self.sock.recv(65536):
            self.raw.extend(chunk)
        return bytes(self.raw[start:])

    def release(self) -> None:
        self.sock.sendall(struct.pack(">BBLL", A_RELEASE_RQ, 0, 4, 0))
        pdu_type, _ = self.next_pdu()
        assert pdu_type == A_RELEASE_RP
        self.sock.close()  # the requestor closes the connection (AR-3)


def is_final(m: Message) -> bool:
    """Whether ``m`` is the final response to a C-FIND."""
    return m.context_id == MWL_CONTEXT and m.command.CommandField == 0x8020 and m.command.Status not in PENDING


def is_store_response(m: Message) -> bool:
    return m.context_id == CT_CONTEXT and m.command.CommandField == 0x8001


def answers_and_final(messages: list[Message], message_id: int) -> tuple[list[Dataset], int | None]:
    """The pending answers to C-FIND ``message_id`` (each an MWL identifier) and its final status, if any."""
    found, final = [], None
    for m in messages:
        if m.context_id != MWL_CONTEXT or m.command.get("MessageIDBeingRespondedTo") != message_id:
            continue
        assert m.command.CommandField == 0x8020 and final is None, "an answer after the final response"
        if m.command.Status in PENDING:
            assert m.data is not None and m.data.PatientComments == COMMENT
            assert m.data.ScheduledProcedureStepSequence[0].Modality == "CT"
            found.append(m.data)
        else:
            final = int(m.command.Status)
    return found, final


def all_answered(server: Server) -> bytes:
    """A new association gets every answer, each a complete MWL identifier, and success; what it received."""
    peer = Peer(server)
    peer.sock.sendall(find_rq(1))
    peer.until(is_final)
    found, final = answers_and_final(peer.messages.done, 1)
    assert final == 0x0000 and len(found) == ITEMS
    assert sorted(str(a.AccessionNumber) for a in found) == [f"A{n:05d}" for n in range(ITEMS)]
    peer.release()
    return bytes(peer.raw)


def one_pdu_answers(raw: bytes) -> int:
    """How many P-DATA-TF PDUs of ``raw`` hold a whole message in two PDVs, command and identifier: each
    answer ``PendingAnswers`` sends. pynetdicom sends one PDV per PDU (``DIMSEMessage.encode_msg``)."""
    return sum(len(pdvs(body)) == 2 for pdu_type, body in pdus(raw) if pdu_type == P_DATA_PDU)


def test_answers_stores_cancel_and_aborts_never_share_a_pdu(worklist_dir: Path) -> None:
    server = serve(worklist_dir, "fast")
    try:
        # C-FIND, then while the answers stream: C-STOREs (their responses are written by the DUL thread), then
        # C-CANCEL. The server is still answering when each arrives: it cannot have sent more than the client has
        # read and the socket buffers hold (the client's receive buffer, the server's send buffer: at most
        # tcp_wmem's maximum, 4 MB by default), a third of the 12 MB.
        peer = Peer(server)
        peer.sock.sendall(find_rq(1))
        stores = 5
        for n in range(stores):
            peer.until_messages(10 * (n + 1))
            peer.sock.sendall(store_rq(100 + n, n))
        peer.until_messages(10 * (stores + 1))
        peer.sock.sendall(cancel_rq(1))
        peer.until(lambda m: is_final(m) or is_store_response(m),
                   1 + stores - sum(map(is_store_response, peer.messages.done)))
        found, final = answers_and_final(peer.messages.done, 1)
        assert final == CANCEL and 10 * (stores + 1) - stores <= len(found) < ITEMS
        store_responses = [m.command for m in peer.messages.done if is_store_response(m)]
        assert sorted(int(c.MessageIDBeingRespondedTo) for c in store_responses) == list(range(100, 100 + stores))
        assert {int(c.Status) for c in store_responses} == {0x0000}
        peer.release()
        assert peer.messages.complete

        # The peer aborts in the middle of the answers: what came before its A-ABORT is whole PDUs, the
        # connection is closed (the last PDU may be cut off where the server's write was broken off).
        peer = Peer(server)
        peer.sock.sendall(find_rq(1))
        peer.until_messages(20)
        peer.sock.sendall(ABORT_PDU)
        pdus(peer.rest(), cut_off=True)
        peer.sock.close()

        # The server aborts in the middle of the answers (a PDU of an unknown type, PS3.8 9.3.1: Evt19, AA-8):
        # its DUL writes the A-ABORT while the handler writes answers. The A-ABORT is whole, and the last PDU.
        peer = Peer(server)
        peer.sock.sendall(find_rq(1))
        peer.until_messages(20)
        peer.sock.sendall(struct.pack(">BBL", 0x09, 0, 0))
        after = pdus(peer.rest())
        assert after and after[-1] == (A_ABORT, b"\x00\x00\x02\x00")  # source: the service provider
        assert all(pdu_type == P_DATA_PDU for pdu_type, _ in after[:-1])
        for _, body in after[:-1]:
            for pdv in pdvs(body):
                peer.messages.add(*pdv)
        answers_and_final(peer.messages.done, 1)
        peer.sock.close()

        assert one_pdu_answers(all_answered(server)) == ITEMS
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()


def test_with_the_fast_paths_off_pynetdicom_writes_every_answer(worklist_dir: Path) -> None:
    """Stock pynetdicom sends a pending response as two PDUs, the command set's, then the identifier's; the
    answers ``PendingAnswers`` writes or queues itself are one PDU of two PDVs. So the wire says who sent them."""
    server = serve(worklist_dir, "stock", HOUNSFIELD_DICOM_FAST_PATH="false")
    try:
        assert one_pdu_answers(all_answered(server)) == 0
    finally:
        server.stop()
    log = server.log_text()
    assert "DICOM fast paths off (dicom_fast_path = false)" in log and "Traceback" not in log
