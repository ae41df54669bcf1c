"""Lean C-STORE receivers over raw sockets, so that a retrieval's time is the sending server's.

A C-MOVE is timed to a destination and a C-GET into a client, and both receivers do work per instance that
the server under test waits for: dcmtk's storescp writes every file before it answers, pynetdicom's C-GET SCU
decodes every dataset (~1.5 ms of CPU here) and the benchmark's handler writes it. On a 2-core machine that
work also takes CPU from the server. The receivers here answer each C-STORE-RQ with success as soon as its
last data fragment has arrived, keep no file and decode nothing while the clock runs: per instance they
record the SOP Instance UID, the dataset's byte count and, on request, its CRC-32 (or the bytes themselves),
so that a benchmark still checks after the clock stops that it got exactly the study.

* ``LeanStoreSCP(port, aet)``: a C-STORE SCP, e.g. a C-MOVE destination (PS3.4 C.4.2), a thread per
  association.
* ``lean_get(...)``: a Study Root C-GET SCU (PS3.4 C.4.3) that plays the Storage SCP on its own association
  (SCP/SCU Role Selection, PS3.7 D.3.3.4).

Upper layer as in PS3.8 section 9.3 (PDU formats), DIMSE as in PS3.7 section 9 (C-STORE 9.1.1 / 9.3.1, C-GET
9.1.3 / 9.3.3); command sets are always Implicit VR Little Endian (PS3.7 6.3.1). The PDU and command-set
encoders of the harness's lean C-FIND client (``../shared/bench/leanscu.py``) are reused; what it lacks (the
acceptor's side, several presentation contexts, role selection, fragmenting to the peer's maximum PDU length,
C-STORE and C-GET) is here.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
SHARED_BENCH = Path(os.environ.get("HBENCH_HARNESS", HERE.parent.parent / "shared" / "bench"))
if str(SHARED_BENCH) not in sys.path:
    sys.path.insert(0, str(SHARED_BENCH))

from leanscu import (  # noqa: E402  (the harness's lean C-FIND client)
    APP_CONTEXT, IMPL_CLASS, IMPLICIT_LE, PENDING, _ae, _element, _item, _p_data, _uid, decode_identifier,
    encode_identifier)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
IMPL_VERSION = b"HBENCH_LEAN"
# The maximum PDU length the receivers announce (PS3.8 D.1): dcmtk's default, as storescp and getscu announce
# it, so that a lean receiver differs from theirs only in what it does with the data.
DEFAULT_MAX_PDU = 16384

# PDU types (PS3.8 Table 9-11)
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF = 0x01, 0x02, 0x03, 0x04
A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x05, 0x06, 0x07
# Command Field values (PS3.7 Annex E) and command elements (PS3.7 Table E.1-1)
C_STORE_RQ, C_STORE_RSP, C_GET_RQ, C_GET_RSP = 0x0001, 0x8001, 0x0010, 0x8010
AFFECTED_SOP_CLASS, COMMAND_FIELD, MESSAGE_ID, RESPONDED_TO = 0x00000002, 0x00000100, 0x00000110, 0x00000120
PRIORITY, DATASET_TYPE, STATUS, AFFECTED_SOP_INSTANCE = 0x00000700, 0x00000800, 0x00000900, 0x00001000
REMAINING, COMPLETED, FAILED, WARNING = 0x00001020, 0x00001021, 0x00001022, 0x00001023
NO_DATASET = 0x0101  # CommandDataSetType: no data set follows
# Presentation context results (PS3.8 Table 9-18)
ACCEPTANCE, ABSTRACT_SYNTAX_NOT_SUPPORTED = 0, 3


class ProtocolError(RuntimeError):
    """The peer sent something these lean peers do not handle; the association is aborted."""


# ------------------------------------------------------------------------------------------------ PDUs
class PduReader:
    """Reads whole PDUs (PS3.8 9.3.1: type, reserved, 4-byte length) from a socket into one reused buffer,
    taking as much as the socket has per ``recv_into`` so that a 16 KB P-DATA-TF costs well under one system
    call. ``pdu()`` returns a view into the buffer, valid until the next call."""

    def __init__(self, sock: socket.socket, size: int = 1 << 20) -> None:
        self.sock = sock
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = self.end = 0

    def _fill(self, n: int) -> None:
        while self.end - self.start < n:
            if self.start + n > len(self.buf):  # make room: move the partial PDU to the front (or grow)
                rest = bytes(self.view[self.start:self.end])
                if n > len(self.buf):
                    self.buf = bytearray(max(n, 2 * len(self.buf)))
                    self.view = memoryview(self.buf)
                self.buf[:len(rest)] = rest
                self.start, self.end = 0, len(rest)
            got = self.sock.recv_into(self.view[self.end:])
            if not got:
                raise ConnectionError("connection closed by the peer")
            self.end += got

    def pdu(self) -> tuple[int, memoryview]:
        self._fill(6)
        kind, length = struct.unpack_from(">BxI", self.buf, self.start)
        self._fill(6 + length)
        body = self.view[self.start + 6:self.start + 6 + length]
        self.start += 6 + length
        return kind, body


def items(body: bytes | memoryview, pos: int = 0) -> Iterator[tuple[int, memoryview]]:
    """The items (or sub-items) of an A-ASSOCIATE PDU from ``pos``: type, reserved, 2-byte length, value
    (PS3.8 9.3.2 and 9.3.3, and Annex D for the user information sub-items)."""
    view = memoryview(body)
    while pos + 4 <= len(view):
        kind, length = struct.unpack_from(">BxH", view, pos)
        yield kind, view[pos + 4:pos + 4 + length]
        pos += 4 + length


def _text(raw: bytes | memoryview) -> str:
    """A UID or AE title from a PDU or command set, without the padding either may carry."""
    return bytes(raw).rstrip(b"\0 ").decode("ascii", "replace").strip()


def _p_data_tf(context_id: int, is_command: bool, payload: bytes, max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs carrying one message part, one PDV each, fragmented so that no PDU is longer than
    the peer's maximum length (PS3.8 9.3.5, D.1: it bounds the PDU's variable field; 0 means no limit)."""
    step = max_pdu - 6 if max_pdu else max(len(payload), 1)
    out = []
    for pos in range(0, max(len(payload), 1), step):
        last = pos + step >= len(payload)
        out.append(_p_data(context_id, (1 if is_command else 0) | (2 if last else 0), payload[pos:pos + step]))
    return b"".join(out)


def _release_rq() -> bytes:
    return struct.pack(">BBI", A_RELEASE_RQ, 0, 4) + b"\0" * 4


def _release_rp() -> bytes:
    return struct.pack(">BBI", A_RELEASE_RP, 0, 4) + b"\0" * 4


def _abort(source: int = 0, reason: int = 0) -> bytes:
    """A-ABORT (PS3.8 9.3.8): source 0 = service user, 2 = service provider."""
    return struct.pack(">BBI", A_ABORT, 0, 4) + bytes([0, 0, source, reason])


def _user_information(max_pdu: int, roles: Sequence[str] = ()) -> bytes:
    """User Information item (PS3.8 D.1 maximum length, D.3.3.2 implementation class UID and version name),
    with an SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4) per SOP class in ``roles``: SCU role 0, SCP
    role 1, i.e. this side only receives C-STOREs on it, as a C-GET SCU does."""
    body = _item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, _uid(IMPL_CLASS))
    for sop_class in roles:
        uid = _uid(sop_class)
        body += _item(0x54, struct.pack(">H", len(uid)) + uid + b"\x00\x01")
    return _item(0x50, body + _item(0x55, IMPL_VERSION))


def _max_pdu_of(user_info: memoryview) -> int:
    for kind, value in items(user_info):
        if kind == 0x51 and len(value) == 4:
            return struct.unpack(">I", value)[0]
    return 0


# ------------------------------------------------------------------------------------------------ commands
def parse_command(raw: bytes | bytearray) -> dict[int, bytes]:
    """A command set (Implicit VR Little Endian, PS3.7 6.3.1) as {tag: value bytes}."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(raw):
        group, elem, length = struct.unpack_from("<HHI", raw, pos)
        out[group << 16 | elem] = bytes(raw[pos + 8:pos + 8 + length])
        pos += 8 + length
    return out


def _us(command: dict[int, bytes], tag: int, default: int | None = None) -> int | None:
    value = command.get(tag)
    return struct.unpack("<H", value[:2])[0] if value and len(value) >= 2 else default


def command_set(elements: dict[int, bytes]) -> bytes:
    """A command set from {tag: encoded value}, in ascending tag order after its group length (PS3.7 6.3.1,
    Table E.1-1: CommandGroupLength is the byte count of the elements that follow it)."""
    body = b"".join(_element(tag, elements[tag]) for tag in sorted(elements))
    return _element(0x00000000, struct.pack("<I", len(body))) + body


def store_rsp(command: dict[int, bytes], status: int = 0x0000) -> bytes:
    """The C-STORE-RSP to a C-STORE-RQ (PS3.7 Table 9.3-2): its SOP class and instance echoed, no data set."""
    return command_set({
        AFFECTED_SOP_CLASS: command.get(AFFECTED_SOP_CLASS, b""),
        COMMAND_FIELD: struct.pack("<H", C_STORE_RSP),
        RESPONDED_TO: command.get(MESSAGE_ID, b"\0\0"),
        DATASET_TYPE: struct.pack("<H", NO_DATASET),
        STATUS: struct.pack("<H", status),
        AFFECTED_SOP_INSTANCE: command.get(AFFECTED_SOP_INSTANCE, b""),
    })


def get_rq(message_id: int, sop_class: str = STUDY_ROOT_GET) -> bytes:
    """C-GET-RQ command set (PS3.7 Table 9.3-3): medium priority, an identifier follows."""
    return command_set({
        AFFECTED_SOP_CLASS: _uid(sop_class), COMMAND_FIELD: struct.pack("<H", C_GET_RQ),
        MESSAGE_ID: struct.pack("<H", message_id), PRIORITY: struct.pack("<H", 0),
        DATASET_TYPE: struct.pack("<H", 0x0000),
    })


def is_storage_class(uid: str) -> bool:
    """A storage SOP class as pynetdicom knows them (PS3.4 Annex B, retired ones included)."""
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import uid_to_service_class

    return uid_to_service_class(uid) is StorageServiceClass


# ------------------------------------------------------------------------------------------------ receiving
@dataclass(slots=True)
class Received:
    """One C-STORE taken: the command's SOP Instance UID and SOP class, the presentation context's transfer
    syntax, the dataset's byte count, its CRC-32 (with ``crc``) and its bytes (with ``keep_data``)."""
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    size: int
    crc32: int | None = None
    data: bytes | None = None


@dataclass
class AssociationRecord:
    """What one association brought: calling/called AE titles, the instances in arrival order, how it ended
    ("released", "aborted", "closed" without either, "error: ..."; "" while open), and the CPU time of the
    thread serving it (from its start to its last instance, then to its end), i.e. the receiver's own cost."""
    calling_aet: str
    called_aet: str
    peer: str
    instances: list[Received] = field(default_factory=list)
    ended: str = ""
    cpu_s: float = 0.0

    @property
    def uids(self) -> list[str]:
        return [r.sop_instance_uid for r in self.instances]

    @property
    def sizes(self) -> list[int]:
        return [r.size for r in self.instances]


class _StoreReceiver:
    """Turns P-DATA-TF PDUs into C-STORE sub-operations (PS3.8 9.3.5, Annex E: a PDV's message control
    header says command or data set, and last fragment or not). A C-STORE-RQ's data set follows its command
    on the same presentation context; it is counted (and checksummed) as it arrives and acknowledged with
    success the moment its last fragment is in. Other commands go to ``on_command``."""

    def __init__(self, sock: socket.socket, contexts: dict[int, tuple[str, str]], peer_max_pdu: int,
                 record: Callable[[Received], None], on_command: Callable[[int, dict[int, bytes]], None],
                 crc: bool, keep_data: bool) -> None:
        self.sock, self.contexts, self.peer_max_pdu = sock, contexts, peer_max_pdu
        self.record, self.on_command, self.crc, self.keep_data = record, on_command, crc, keep_data
        self.command = bytearray()
        self.store: dict[int, bytes] | None = None  # the C-STORE-RQ whose data set is arriving
        self.store_context = 0
        self.size, self.crc_value, self.parts = 0, 0, []  # type: ignore[var-annotated]
        self.other_data = bytearray()  # a data set following another command (e.g. a C-GET-RSP identifier)
        self.other_done: Callable[[bytes], None] | None = None

    def p_data(self, body: memoryview) -> None:
        pos, end_of_pdu = 0, len(body)
        while pos < end_of_pdu:
            length, context_id, control = struct.unpack_from(">IBB", body, pos)
            fragment = body[pos + 6:pos + 4 + length]
            pos += 4 + length
            if context_id not in self.contexts:
                raise ProtocolError(f"PDV on presentation context {context_id}, which is not accepted")
            if control & 1:
                self.command += fragment
                if control & 2:
                    command, self.command = parse_command(self.command), bytearray()
                    self._command(context_id, command)
            elif self.store is not None:
                self.size += len(fragment)
                if self.crc:
                    self.crc_value = zlib.crc32(fragment, self.crc_value)
                if self.keep_data:
                    self.parts.append(bytes(fragment))
                if control & 2:
                    self._stored()
            elif self.other_done is not None:
                self.other_data += fragment
                if control & 2:
                    done, self.other_done = self.other_done, None
                    done(bytes(self.other_data))
                    self.other_data = bytearray()
            else:
                raise ProtocolError("data set fragment without a command that announces one")

    def _command(self, context_id: int, command: dict[int, bytes]) -> None:
        if _us(command, COMMAND_FIELD) != C_STORE_RQ:
            self.on_command(context_id, command)
            return
        if _us(command, DATASET_TYPE, NO_DATASET) == NO_DATASET:
            raise ProtocolError("C-STORE-RQ without a data set")
        self.store, self.store_context = command, context_id
        self.size, self.crc_value, self.parts = 0, 0, []

    def _stored(self) -> None:
        command, self.store = self.store, None
        assert command is not None
        self.record(Received(_text(command.get(AFFECTED_SOP_INSTANCE, b"")),
                             _text(command.get(AFFECTED_SOP_CLASS, b"")), self.contexts[self.store_context][1],
                             self.size, self.crc_value if self.crc else None,
                             b"".join(self.parts) if self.keep_data else None))
        self.parts = []
        self.sock.sendall(_p_data_tf(self.store_context, True, store_rsp(command), self.peer_max_pdu))


@dataclass
class AssociateRQ:
    """The parts of an A-ASSOCIATE-RQ (PS3.8 9.3.2) an acceptor answers from."""
    called: bytes
    calling: bytes
    application_context: str
    contexts: list[tuple[int, str, list[str]]]  # (context ID, abstract syntax, proposed transfer syntaxes)
    max_pdu: int


def parse_associate_rq(body: memoryview) -> AssociateRQ:
    called, calling = bytes(body[4:20]), bytes(body[20:36])
    app, contexts, max_pdu = "", [], 0
    for kind, value in items(body, 68):
        if kind == 0x10:
            app = _text(value)
        elif kind == 0x20:
            abstract, syntaxes = "", []
            for sub, sub_value in items(value, 4):
                if sub == 0x30:
                    abstract = _text(sub_value)
                elif sub == 0x40:
                    syntaxes.append(_text(sub_value))
            contexts.append((value[0], abstract, syntaxes))
        elif kind == 0x50:
            max_pdu = _max_pdu_of(value)
    return AssociateRQ(called, calling, app, contexts, max_pdu)


def choose_syntax(proposed: Sequence[str]) -> str:
    """The first proposed transfer syntax that is Implicit or Explicit VR Little Endian, else the first: the
    receiver never looks into the data, so any encoding will do, and one of the two uncompressed ones is what
    every sender can send without converting."""
    return next((ts for ts in proposed if ts in (IMPLICIT_LE, EXPLICIT_LE)), proposed[0] if proposed else "")


def associate_ac(rq: AssociateRQ, accepted: dict[int, str], max_pdu: int) -> bytes:
    """A-ASSOCIATE-AC (PS3.8 9.3.3): called and calling AE titles as received, one Presentation Context item
    per proposed context (accepted with its transfer syntax, else 'abstract syntax not supported' with the
    first proposed one, a value the requestor must not test), and our maximum PDU length."""
    body = struct.pack(">HH", 1, 0) + rq.called + rq.calling + b"\0" * 32 + _item(0x10, _uid(APP_CONTEXT))
    for context_id, _abstract, proposed in rq.contexts:
        result = ACCEPTANCE if context_id in accepted else ABSTRACT_SYNTAX_NOT_SUPPORTED
        syntax = accepted.get(context_id) or (proposed[0] if proposed else IMPLICIT_LE)
        body += _item(0x21, struct.pack(">BBBB", context_id, 0, result, 0) + _item(0x40, _uid(syntax)))
    body += _user_information(max_pdu)
    return struct.pack(">BBI", A_ASSOCIATE_AC, 0, len(body)) + body


def associate_rj(result: int = 1, source: int = 1, reason: int = 2) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4); default: permanent, by the service user, application context name not
    supported."""
    return struct.pack(">BBI", A_ASSOCIATE_RJ, 0, 4) + bytes([0, result, source, reason])


class LeanStoreSCP:
    """A C-STORE SCP on 127.0.0.1:``port`` (by default) that accepts every storage presentation context
    proposed, acknowledges every C-STORE with success at once and keeps only a record per association
    (``associations``, ``take()``). A thread accepts, a thread per association serves it.

    ``crc``: compute each dataset's CRC-32 as it arrives (~0.1 ms per 0.5 MB). ``keep_data``: keep each
    dataset's bytes (for tests). ``accept``: which abstract syntaxes to accept (default: storage SOP classes).
    """

    def __init__(self, port: int, aet: str, host: str = "127.0.0.1", max_pdu: int = DEFAULT_MAX_PDU,
                 crc: bool = False, keep_data: bool = False, accept: Callable[[str], bool] = is_storage_class,
                 timeout: float = 120.0) -> None:
        self.port, self.aet, self.host, self.max_pdu = port, aet, host, max_pdu
        self.crc, self.keep_data, self.accept, self.timeout = crc, keep_data, accept, timeout
        self.associations: list[AssociationRecord] = []
        self._lock = threading.Condition()
        self._open = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ---- life cycle
    def start(self) -> LeanStoreSCP:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]  # port 0: the one the system chose
        self._listener, self._stopping = listener, False
        self._thread = threading.Thread(target=self._accept_loop, name=f"leanstore-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._listener is None:
            return
        self._stopping = True
        try:  # wake the accept() of the loop, which then sees _stopping
            socket.create_connection((self.host, self.port), timeout=2).close()
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(10)
        self._listener.close()
        self._listener = None

    def __enter__(self) -> LeanStoreSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- results
    def take(self) -> list[AssociationRecord]:
        """The associations recorded so far, and forget them (one measurement's worth)."""
        with self._lock:
            out, self.associations = self.associations, []
        return out

    def wait_closed(self, timeout: float = 30.0) -> bool:
        """Wait until no association is open (a condition, not a poll); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._open == 0, timeout)

    # ---- serving
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, addr = self._listener.accept()
            except OSError:
                return
            if self._stopping:
                conn.close()
                return
            with self._lock:
                self._open += 1
            threading.Thread(target=self._serve, args=(conn, addr), name=f"leanstore-{addr[1]}",
                             daemon=True).start()

    def _serve(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        record: AssociationRecord | None = None
        cpu0 = time.thread_time()
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a response goes out at once
            conn.settimeout(self.timeout)
            reader = PduReader(conn)
            kind, body = reader.pdu()
            if kind != A_ASSOCIATE_RQ:
                raise ProtocolError(f"PDU type {kind:#04x} before A-ASSOCIATE-RQ")
            rq = parse_associate_rq(body)
            if rq.application_context != APP_CONTEXT:
                conn.sendall(associate_rj())
                return
            accepted = {cid: choose_syntax(ts) for cid, abstract, ts in rq.contexts if self.accept(abstract)}
            contexts = {cid: (abstract, accepted[cid]) for cid, abstract, _ in rq.contexts if cid in accepted}
            record = AssociationRecord(_text(rq.calling), _text(rq.called), f"{addr[0]}:{addr[1]}")
            with self._lock:
                self.associations.append(record)
            conn.sendall(associate_ac(rq, accepted, self.max_pdu))

            def unexpected(_context_id: int, command: dict[int, bytes]) -> None:
                raise ProtocolError(f"command {_us(command, COMMAND_FIELD)!r} is not a C-STORE-RQ")

            def took(instance: Received, record: AssociationRecord = record) -> None:
                record.instances.append(instance)  # before its response: recorded once the sender knows
                record.cpu_s = time.thread_time() - cpu0

            receiver = _StoreReceiver(conn, contexts, rq.max_pdu, took, unexpected, self.crc, self.keep_data)
            while True:
                kind, body = reader.pdu()
                if kind == P_DATA_TF:
                    receiver.p_data(body)
                elif kind == A_RELEASE_RQ:
                    record.ended = "released"
                    conn.sendall(_release_rp())
                    return
                elif kind == A_ABORT:
                    record.ended = "aborted"
                    return
                else:
                    raise ProtocolError(f"unexpected PDU type {kind:#04x}")
        except ProtocolError as exc:
            if record is not None:
                record.ended = f"error: {exc}"
            try:
                conn.sendall(_abort(2))
            except OSError:
                pass
        except (OSError, ConnectionError) as exc:
            if record is not None and not record.ended:
                record.ended = f"closed: {exc}"
        finally:
            conn.close()
            if record is not None:
                record.cpu_s = time.thread_time() - cpu0
            with self._lock:
                self._open -= 1
                self._lock.notify_all()


# ------------------------------------------------------------------------------------------------ C-GET SCU
class GetResult(NamedTuple):
    """A lean C-GET: seconds from sending the request to the final response; per instance received (arrival
    order) its SOP Instance UID, byte count, presentation context transfer syntax and CRC-32 (None without
    ``crc``); the final status and sub-operation counts (PS3.7 Table 9.3-4; None when the SCP left them out);
    the Failed SOP Instance UID List of the final response's identifier, if it sent one; the CPU time this
    thread spent while the clock ran (the receiver's own cost); and, outside the clock, the seconds from
    connecting to the A-ASSOCIATE-AC and from the A-RELEASE-RQ to the A-RELEASE-RP."""
    seconds: float
    uids: list[str]
    sizes: list[int]
    status: int
    completed: int | None
    failed: int | None
    warning: int | None
    transfer_syntaxes: list[str]
    crc32: list[int | None]
    failed_uids: list[str]
    cpu_seconds: float
    associate_seconds: float
    release_seconds: float


def associate_rq(called: str, calling: str, contexts: Sequence[tuple[str, Sequence[str]]], max_pdu: int,
                 roles: Sequence[str] = ()) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2) with a presentation context per (abstract syntax, transfer syntaxes),
    IDs 1, 3, 5, ... (odd, at most 128 of them, PS3.8 9.3.2.2), and role selection for ``roles``."""
    if len(contexts) > 128:
        raise ValueError(f"{len(contexts)} presentation contexts: at most 128 fit in an association")
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\0" * 32 + _item(0x10, _uid(APP_CONTEXT))
    for k, (abstract, syntaxes) in enumerate(contexts):
        sub = _item(0x30, _uid(abstract)) + b"".join(_item(0x40, _uid(ts)) for ts in syntaxes)
        body += _item(0x20, struct.pack(">BBBB", 2 * k + 1, 0, 0, 0) + sub)
    body += _user_information(max_pdu, roles)
    return struct.pack(">BBI", A_ASSOCIATE_RQ, 0, len(body)) + body


def get_contexts(storage_classes: Sequence[str], transfer_syntaxes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The C-GET context, then a context per (storage class, transfer syntax): the SCP can then send each
    instance in any of them it has, without converting (one context with several would get one accepted)."""
    return [(STUDY_ROOT_GET, [IMPLICIT_LE])] + [(sop, [ts]) for sop in storage_classes for ts in transfer_syntaxes]


def study_identifier(study_uid: str) -> bytes:
    """The C-GET identifier (PS3.4 C.4.3.1.3.1, Study Root, C.6.2): QueryRetrieveLevel STUDY and the study's
    Unique Key, Implicit VR Little Endian as the GET context has it."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return encode_identifier(ds)


def lean_get(host: str, port: int, called_aet: str, calling_aet: str, study_uid: str,
             storage_classes: Sequence[str], transfer_syntaxes: Sequence[str] = (EXPLICIT_LE, IMPLICIT_LE), *,
             max_pdu: int = DEFAULT_MAX_PDU, crc: bool = False, keep_data: bool = False,
             timeout: float = 600.0, records: list[Received] | None = None) -> GetResult:
    """One Study Root C-GET (PS3.4 C.4.3) of ``study_uid`` on a fresh association: the C-STORE sub-operations
    arrive on this association (PS3.4 C.4.3.3) on the storage contexts proposed with SCP role selection, and
    each is answered with success the moment its data set is in. The clock runs from sending the C-GET-RQ to
    receiving its final (non-Pending) C-GET-RSP; the association is released, and the final response's
    identifier (Failed SOP Instance UID List) decoded, after it stops. ``records`` receives the instances in
    full (with ``keep_data``, their bytes) when given."""
    contexts = get_contexts(storage_classes, transfer_syntaxes)
    t_connect = time.perf_counter()
    sock = socket.create_connection((host, port), timeout=timeout)
    release_seconds = float("nan")
    got: list[Received] = [] if records is None else records
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(associate_rq(called_aet, calling_aet, contexts, max_pdu, list(dict.fromkeys(storage_classes))))
        reader = PduReader(sock)
        kind, body = reader.pdu()
        associate_seconds = time.perf_counter() - t_connect
        if kind != A_ASSOCIATE_AC:
            raise ConnectionRefusedError(f"association not accepted (PDU type {kind:#04x}: {bytes(body).hex()})")
        accepted: dict[int, tuple[str, str]] = {}
        peer_max_pdu = 0
        for item_kind, value in items(body, 68):
            if item_kind == 0x21 and value[2] == ACCEPTANCE:
                syntax = next((_text(v) for k, v in items(value, 4) if k == 0x40), "")
                context_id = value[0]
                if context_id % 2 and context_id // 2 < len(contexts):
                    accepted[context_id] = (contexts[context_id // 2][0], syntax)
            elif item_kind == 0x50:
                peer_max_pdu = _max_pdu_of(value)
        if 1 not in accepted:
            sock.sendall(_abort(0))
            raise RuntimeError("the Study Root C-GET presentation context was not accepted")

        final: dict[int, bytes] = {}
        identifier: list[bytes] = []
        expect_identifier = [False]

        def on_command(_context_id: int, command: dict[int, bytes]) -> None:
            if _us(command, COMMAND_FIELD) != C_GET_RSP:
                raise ProtocolError(f"command {_us(command, COMMAND_FIELD)!r} during C-GET")
            if _us(command, STATUS) not in PENDING:
                final.update(command)
                if _us(command, DATASET_TYPE, NO_DATASET) != NO_DATASET:
                    expect_identifier[0] = True
                    receiver.other_done = identifier.append
            elif _us(command, DATASET_TYPE, NO_DATASET) != NO_DATASET:
                receiver.other_done = lambda _raw: None  # a Pending response's identifier: not needed

        receiver = _StoreReceiver(sock, accepted, peer_max_pdu, got.append, on_command, crc, keep_data)
        request = (_p_data_tf(1, True, get_rq(1), peer_max_pdu)
                   + _p_data_tf(1, False, study_identifier(study_uid), peer_max_pdu))
        cpu0, t0 = time.thread_time(), time.perf_counter()
        sock.sendall(request)
        while not final:
            kind, body = reader.pdu()
            if kind != P_DATA_TF:
                raise ProtocolError(f"PDU type {kind:#04x} during C-GET")
            receiver.p_data(body)
        seconds, cpu_seconds = time.perf_counter() - t0, time.thread_time() - cpu0
        while expect_identifier[0] and not identifier:
            kind, body = reader.pdu()
            if kind != P_DATA_TF:
                break
            receiver.p_data(body)
        try:  # the measurement is complete: a peer that closes instead of answering the release spoils nothing
            t_release = time.perf_counter()
            sock.sendall(_release_rq())
            while reader.pdu()[0] not in (A_RELEASE_RP, A_ABORT):  # skip a late PDU until A-RELEASE-RP (PS3.8 9.2)
                pass
            release_seconds = time.perf_counter() - t_release
        except (OSError, ConnectionError):
            pass
    except ProtocolError:
        try:
            sock.sendall(_abort(0))
        except OSError:
            pass
        raise
    finally:
        sock.close()
    failed_uids: list[str] = []
    if identifier:
        listed = decode_identifier(identifier[0]).get("FailedSOPInstanceUIDList") or []  # UI, VM 1-n
        failed_uids = [str(listed)] if isinstance(listed, str) else [str(u) for u in listed]
    return GetResult(seconds, [r.sop_instance_uid for r in got], [r.size for r in got], _us(final, STATUS, -1),
                     _us(final, COMPLETED), _us(final, FAILED), _us(final, WARNING),
                     [r.transfer_syntax for r in got], [r.crc32 for r in got], failed_uids, cpu_seconds,
                     associate_seconds, release_seconds)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Run a LeanStoreSCP until interrupted, printing what it received.")
    ap.add_argument("port", type=int)
    ap.add_argument("--aet", default="HBLEAN")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--crc", action="store_true")
    a = ap.parse_args()
    scp = LeanStoreSCP(a.port, a.aet, host=a.host, crc=a.crc).start()
    print(f"LeanStoreSCP {a.aet} on {a.host}:{scp.port}; Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(1)
            records = scp.take()
            with scp._lock:  # those still open go back, to be printed once they end
                scp.associations[:0] = [r for r in records if not r.ended]
            for rec in records:
                if rec.ended:
                    print(f"{rec.calling_aet} ({rec.peer}): {len(rec.instances)} instances, {sum(rec.sizes)} bytes,"
                          f" {rec.ended}", flush=True)
    except KeyboardInterrupt:
        scp.stop()
