"""C-STORE requests received below pynetdicom's DIMSE layer: PDU → file → store → response, in the DUL thread.

pynetdicom receives a C-STORE dataset as a chain of Python objects: the socket read 4 KB at a time, every
P-DATA-TF PDU decoded into PDV objects and a primitive, each fragment written through a temporary-file wrapper,
the command set decoded with pydicom, the request queued to the association thread, which builds an event and a
response primitive and queues that back to the DUL thread to be encoded and sent. For a 0.5 MB CT instance that
is ~1.5 ms of CPU and two thread hand-overs per instance, on a path where the sender waits for each response.

Once ``install``ed, the DUL thread of every association reads each PDU whole into one buffer (``recv_into``),
and acknowledges it at once (TCP_QUICKACK; Linux re-arms delayed ACKs, so every time), after its 6-byte header
already. A peer without TCP_NODELAY (pynetdicom's default, many modalities, dcmtk's tools) sends a second small
write only once the first is acknowledged (Nagle), and Linux delays that ACK by 40 ms: a C-FIND request is two
PDUs, command then identifier, and dcmtk's storescp writes each C-STORE response in two parts, so that was 40 ms
per query, and per instance of a C-MOVE to such a destination.
On an acceptor association of an AE ``enable``d here, the DUL thread also looks at each PDU itself:
- a P-DATA-TF PDU whose first PDV is a complete C-STORE-RQ command set, on an accepted presentation context of
  a storage SOP class equal to the request's, starts a received instance when the association is established
  (Sta6), nothing else is queued either way and no handler watches received PDUs or DIMSE messages: a file in
  the store's incoming directory, with the Part-10 preamble and file meta pynetdicom writes
  (``store_fastpath.file_meta``);
- the data fragments that follow are written to that file straight from the buffer, and their writeback to
  disk starts at once, so that the fsync at the end has little left to wait for;
- after the last fragment, ``ReceivedStore.store_received`` makes the instance durable (the call pynetdicom's
  ``EVT_C_STORE`` handler makes too) and its C-STORE-RSP (``store_fastpath.command_set``) is written to the
  socket (whole, under the socket's write lock: ``dimse.writer``). All of this runs in the DUL thread;
  meanwhile the association handles nothing else, which a requestor waiting for the response does not ask of
  it anyway.
Everything else (other services, a command set split over fragments, other PDU types) goes on to pynetdicom as
it would have. A fragment that breaks the message (a command fragment or another presentation context before
the last data fragment) is a protocol error: pynetdicom's Evt19 (A-ABORT); PDVs after the last fragment are
ignored, as pynetdicom does. An instance still arriving when the association ends is removed.
A P-DATA-TF PDU naming a presentation context that was not accepted has an invalid parameter value (PS3.8
9.3.5, 9.3.8): it goes no further, the association is aborted (Evt19: AA-8, A-ABORT from the service provider).
pynetdicom's DIMSE layer would look the context up in the DUL thread and fail there (a KeyError, the connection
dropped without A-ABORT, for a C-STORE-RQ a temporary file left behind).

No read waits without bound. pynetdicom's reader, and this one before, blocked in ``recv`` until the whole PDU
was there, and its sockets have no timeout (``accept`` does not pass on the listening socket's, where pynetdicom
sets ``network_timeout``): a peer that sent part of a PDU, or a header announcing 4 GB, held the DUL thread,
and with it the association's slot, for as long as it kept the connection open. Nothing pynetdicom has could
free it: the ARTIM timer is looked at by the DUL's loop, which never came back, and the association thread,
when its ACSE timeout (waiting for the A-ASSOCIATE-RQ) or the idle timer (``network_timeout``) expires, asks
the DUL to stop or to abort and waits for it (``Association.kill``, ``Association.abort``). So:
- a PDU begun (its first byte) must be complete within the association's ACSE timeout, which hounsfield's server
  sets to ``dicom_read_timeout``, and where the ARTIM timer runs (Sta2, Sta13; PS3.8 9.1.5: the same period)
  before it expires. Otherwise a WARNING names the peer and what it sent, and the state machine gets the ARTIM
  timer's expiry (Evt18) in those states, AA-2: the connection is closed, there being no association to abort;
  in the others the PDU is one that cannot be received, Evt19, AA-8: A-ABORT, A-P-ABORT indication (the
  association thread sees it and ends). The socket is never waited on for longer: data already there is taken
  at once (MSG_DONTWAIT; over TLS, what OpenSSL has decrypted or can decrypt without waiting), and the wait for
  more ends at the deadline (poll);
- a PDU announcing more than ``LONGEST_PDU`` bytes is refused at its header (Evt19), and one longer than the
  buffer grows as its data arrives: a length announced is never allocated, nor waited for past the deadline;
- ``bound_socket_reads`` bounds pynetdicom's own reader too, for associations this one does not read (the fast
  paths off): every ``recv`` on the socket waits at most the ACSE timeout (SO_RCVTIMEO), after which pynetdicom
  treats the connection as closed (Evt17: AA-5 in Sta2, AA-4 otherwise).
``tests/test_store_receive.py`` checks files, responses and the fall-backs with pynetdicom and hand-made PDUs;
the interop tests send everything through it with dcmtk's storescu; ``tests/test_dimse_hostile.py`` sends
half PDUs, huge lengths and unknown presentation contexts.
"""

from __future__ import annotations

import logging
import math
import os
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pynetdicom import evt

from hounsfield.dimse import status as st
from hounsfield.dimse.store_fastpath import (
    C_STORE_RQ,
    C_STORE_RSP,
    NO_DATASET,
    FileMeta,
    command_set,
    file_meta,
    p_data_pdus,
)

if TYPE_CHECKING:
    from pynetdicom import AE
    from pynetdicom.association import Association

log = logging.getLogger("hounsfield.dimse")

P_DATA_TF = 0x04
PDU_NAMES = {0x01: "A-ASSOCIATE-RQ", 0x02: "A-ASSOCIATE-AC", 0x03: "A-ASSOCIATE-RJ", 0x04: "P-DATA-TF",
             0x05: "A-RELEASE-RQ", 0x06: "A-RELEASE-RP", 0x07: "A-ABORT"}  # PS3.8 9.3
# Longest PDU taken (bytes after the header): 16 times the server's maximum PDU length, which conforming peers
# keep to (pynetdicom, dcmtk); an A-ASSOCIATE-RQ or -AC is tens of KB.
LONGEST_PDU = 4 * 1024 * 1024
READ_STEP = 256 * 1024  # a PDU longer than the buffer grows by at most this much before more of it has arrived
# Where the ARTIM timer runs (PS3.8 9.2): awaiting the A-ASSOCIATE-RQ (Sta2; still Sta1 when an acceptor's DUL
# reads it before its loop has taken the queued transport connection indication, Evt5, to Sta2) and the close.
ARTIM_STATES = ("Sta1", "Sta2", "Sta13")
DATA_STATES = ("Sta6", "Sta7")  # where a P-DATA-TF PDU is passed on to the DIMSE layer (PS3.8 9.2, DT-2, AR-6)
COMMAND = 0x01  # message control header bits (PS3.8 E.2)
LAST = 0x02
PREAMBLE = b"\x00" * 128 + b"DICM"
WRITEBACK_STEP = 128 * 1024  # bytes written before their writeback starts (whole pages only)
_WATCHERS = ("EVT_PDU_RECV", "EVT_DIMSE_RECV", "EVT_PDU_SENT")  # events this path does not trigger
_HEADER = struct.Struct(">BBL")
_PDV = struct.Struct(">LBB")
_ELEMENT = struct.Struct("<HHL")


class ReceivedStore(Protocol):
    """Where received instances go (``dimse.handlers.Handlers``)."""

    def new_incoming(self) -> tuple[int, Path]:
        """A new file for an instance still arriving: an open descriptor and its path."""

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        """Data written to an incoming file that will be made durable: start writing it to disk."""

    def store_received(self, path: Path, assoc: "Association", sop_instance_uid: str) -> int:
        """Take the complete received Part-10 file at ``path``; return the C-STORE status."""


_stores: "weakref.WeakKeyDictionary[AE, ReceivedStore]" = weakref.WeakKeyDictionary()


def enable(ae: "AE", store: ReceivedStore) -> None:
    """Receive C-STORE requests on ``ae``'s acceptor associations into ``store`` (``install`` first)."""
    _stores[ae] = store


@dataclass
class _Request:
    """What a C-STORE-RQ command set says (the elements the response and the file meta need)."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str


class Waiter:
    """One awaited C-STORE-RSP: the reader ``deliver``s its command set, or ``end``s the wait (None) when the
    association goes away first."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.command: bytes | None = None

    def deliver(self, command: bytes | None) -> None:
        self.command = command
        self._ready.set()

    def wait(self, seconds: float) -> bool:
        return self._ready.wait(seconds)


def command_elements(command: bytes | memoryview) -> dict[int, memoryview] | None:
    """The (0000,eeee) elements of an encoded command set (implicit VR little endian, PS3.7 6.3.1) by element
    number; None when it does not parse as one."""
    view = memoryview(command)
    values: dict[int, memoryview] = {}
    pos, end = 0, len(view)
    while pos + 8 <= end:
        group, element, length = _ELEMENT.unpack_from(view, pos)
        pos += 8
        if group != 0 or pos + length > end:
            return None
        values[element] = view[pos:pos + length]
        pos += length
    return values if pos == end else None


def awaited_response(values: dict[int, memoryview] | None) -> int | None:
    """The Message ID a C-STORE-RSP command set answers, or None for any other command."""
    try:
        field, = struct.unpack("<H", values[0x0100]) if values else (None,)
        if field != C_STORE_RSP or len(values[0x0900]) != 2:
            return None
        answered, = struct.unpack("<H", values[0x0120])
    except (KeyError, struct.error):
        return None
    return answered


def parse_store_request(command: memoryview) -> _Request | None:
    """The C-STORE-RQ in an encoded command set (implicit VR little endian), or None for any other command or
    one that cannot be read here."""
    values = command_elements(command)
    try:
        field, = struct.unpack("<H", values[0x0100])  # type: ignore[index]
        message_id, = struct.unpack("<H", values[0x0110])  # type: ignore[index]
        data_set_type, = struct.unpack("<H", values[0x0800])  # type: ignore[index]
        sop_class = bytes(values[0x0002]).rstrip(b"\x00 ").decode("ascii")  # type: ignore[index]
        sop_instance = bytes(values[0x1000]).rstrip(b"\x00 ").decode("ascii")  # type: ignore[index]
    except (KeyError, TypeError, struct.error, UnicodeDecodeError):
        return None
    if field != C_STORE_RQ or data_set_type == NO_DATASET or not _is_uid(sop_class) or not _is_uid(sop_instance):
        return None  # an invalid UID is left to pynetdicom's own handling
    return _Request(message_id, sop_class, sop_instance)


def _is_uid(value: str) -> bool:
    """A UID as PS3.5 9.1 has it: at most 64 characters, digits and dots."""
    return 0 < len(value) <= 64 and not value.strip("0123456789.")


def response_pdu(context_id: int, request: _Request, status: int) -> bytes:
    """The P-DATA-TF PDU carrying the C-STORE-RSP to ``request``."""
    return p_data_pdus(context_id, command_set(request.message_id, request.sop_class_uid, request.sop_instance_uid,
                                               status), b"", 0)


class _Instance:
    """A C-STORE dataset arriving into its file."""

    def __init__(self, store: ReceivedStore, context_id: int, request: _Request, transfer_syntax: str) -> None:
        self.store = store
        self.context_id = context_id
        self.request = request
        self.fd, self.path = store.new_incoming()
        self.error: OSError | None = None
        self.size = 0
        self.written_back = 0
        try:
            self.write(PREAMBLE + file_meta(FileMeta(request.sop_class_uid, request.sop_instance_uid,
                                                     transfer_syntax)))
        except BaseException:
            self.discard()
            raise

    def write(self, data: memoryview | bytes) -> None:
        if self.error is not None:
            return  # a failed write: the rest is read and dropped, and the response says why
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
                self.size += written
        except OSError as exc:
            self.error = exc
            return
        whole_pages = self.size & ~0xFFF
        if whole_pages - self.written_back >= WRITEBACK_STEP:
            self.store.start_writeback(self.fd, self.written_back, whole_pages - self.written_back)
            self.written_back = whole_pages

    def close(self) -> None:
        """Close the file; a failure to close is a failure to write."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError as exc:
                self.error = self.error or exc

    def discard(self) -> None:
        self.close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:  # left for the start-up clean-up of the incoming directory
            log.warning("cannot remove %s: %s", self.path, exc)


class Receiver:
    """The C-STORE receive path of one association's DUL (see the module docstring)."""

    def __init__(self, dul: Any, store: ReceivedStore | None) -> None:
        self.dul = dul
        self.store = store
        ours = dul.assoc.acceptor if dul.assoc.is_acceptor else dul.assoc.requestor
        self.buffer = bytearray(max(ours.maximum_length or 0, 16384) + 6)
        self.instance: _Instance | None = None
        self.received = 0  # bytes of the PDU being read
        self.storage_contexts: dict[int, tuple[str, str] | None] = {}  # ID → (SOP class, transfer syntax)
        self.awaited: dict[int, Waiter] = {}  # C-STORE-RSPs awaited by ``store_send``, by Message ID
        self.ended = False  # the connection is gone: nothing more will be delivered

    def read_pdu(self) -> None:
        """``DULServiceProvider._read_pdu_data`` for this association: same events, same errors, and the PDU
        complete by its deadline (see the module docstring).

        Nothing is read while events of what was read before wait in the queue: the DUL's loop reads, then takes
        one event, so a PDU sent right behind another was read (and its deadline, and what to do when it passes,
        decided) in a state the machine was about to leave. tests/test_fuzz_dicom_port.py found it: an
        A-ASSOCIATE-RQ and one byte of a next PDU, read in Sta2 behind the request's unprocessed Evt6; the ARTIM
        expiry (Evt18) queued for the stalled byte then met Sta3, where it is invalid, and the DUL thread died of
        InvalidEventError. The loop takes the waiting events first and reads on at its next round."""
        dul = self.dul
        if dul.event_queue.queue:
            return
        sock = dul.socket.socket
        started = time.monotonic()
        deadline = self._deadline(started)
        self.received = 0
        pdu_type: int | None = None
        length = 0
        try:
            if not self._fill(sock, memoryview(self.buffer)[:6], deadline):
                return self._closed()
            _quick_ack(sock)  # a peer that writes a PDU in two parts without TCP_NODELAY waits for this ACK (Nagle)
            pdu_type, _, length = _HEADER.unpack_from(self.buffer)
            if pdu_type not in PDU_NAMES:
                log.error("unknown PDU type 0x%02X received from %s", pdu_type, _peer(dul.assoc))
                return self._invalid()
            if length > LONGEST_PDU:
                log.error("%s PDU of %d bytes announced by %s (at most %d taken); aborting", PDU_NAMES[pdu_type],
                          length + 6, _peer(dul.assoc), LONGEST_PDU + 6)
                return self._invalid()
            pdu = self._body(sock, length, deadline)
        except _Stalled:
            return self._stalled(pdu_type, length, time.monotonic() - started)
        except OSError:
            return self._closed()
        if pdu is None:
            return self._closed()
        _quick_ack(sock)
        if pdu_type == P_DATA_TF:
            pdvs = _pdvs(pdu)
            if self._unknown_context(pdvs) or self._answered(pdvs) or self._mine(pdvs):
                return
        if self.instance is not None:  # the message is broken off (an A-ABORT, a release): it was not stored
            self.discard()
        self._to_pynetdicom(pdu)

    def _deadline(self, now: float) -> float | None:
        """When a PDU begun ``now`` must be complete (``time.monotonic``; None: never, an ACSE timeout of None):
        the association's ACSE timeout later, or when the ARTIM timer, which runs for the same time, expires
        first (PS3.8 9.1.5)."""
        dul = self.dul
        budget = dul.assoc.acse_timeout
        if budget is None:
            return None
        if dul.state_machine.current_state in ARTIM_STATES:
            budget = min(budget, dul.artim_timer.remaining)
        return now + max(budget, 0.0)

    def _body(self, sock: socket.socket, length: int, deadline: float | None) -> memoryview | None:
        """The whole PDU of the header in the buffer, once the ``length`` bytes after it are in; None when the
        peer closed the connection first."""
        if length + 6 <= len(self.buffer):
            pdu = memoryview(self.buffer)[:length + 6]
            return pdu if self._fill(sock, pdu[6:], deadline) else None
        # Above our maximum PDU length, as pynetdicom allows: grown as the data arrives.
        whole = bytearray(self.buffer[:6])
        while len(whole) < length + 6:
            step = bytearray(min(READ_STEP, length + 6 - len(whole)))
            if not self._fill(sock, memoryview(step), deadline):
                return None
            whole += step
        return memoryview(whole)

    def _fill(self, sock: socket.socket, view: memoryview, deadline: float | None) -> bool:
        """Read into all of ``view``, counting in ``received``; False when the peer closed the connection
        first, ``_Stalled`` when ``deadline`` passes first."""
        while view:
            n = _recv_by(sock, view, deadline)
            if not n:
                return False
            self.received += n
            view = view[n:]
        return True

    def _stalled(self, pdu_type: int | None, length: int, waited: float) -> None:
        """The rest of a PDU did not arrive by its deadline: close or abort (see the module docstring)."""
        dul = self.dul
        artim = dul.state_machine.current_state in ARTIM_STATES
        if pdu_type is None:
            what = f"{self.received} of the 6 bytes of a PDU header"
        else:
            name = PDU_NAMES[pdu_type]
            what = f"{self.received} of the {length + 6} bytes of {'an' if name[0] == 'A' else 'a'} {name} PDU"
        log.warning("%s sent %s and not the rest within %.1f s; %s", _peer(dul.assoc), what, waited,
                    "closing the connection" if artim else "aborting the association")
        self.discard()
        dul.event_queue.put("Evt18" if artim else "Evt19")  # ARTIM timer expired / invalid PDU

    def _unknown_context(self, pdvs: list[tuple[int, int, memoryview]] | None) -> bool:
        """Abort for a P-DATA-TF PDU with a PDV on a presentation context that was not accepted (see the module
        docstring); False for any other (a malformed one is pynetdicom's to refuse)."""
        dul = self.dul
        if not pdvs or dul.state_machine.current_state not in DATA_STATES:
            return False
        accepted = dul.assoc._accepted_cx
        unknown = next((context_id for context_id, _, _ in pdvs if context_id not in accepted), None)
        if unknown is None:
            return False
        log.error("P-DATA-TF from %s on presentation context %d, which was not accepted; aborting",
                  _peer(dul.assoc), unknown)
        self._invalid()
        return True

    def await_response(self, message_id: int) -> Waiter | None:
        """Register the wait for the C-STORE-RSP to ``message_id`` (``store_send``); None when one is awaited
        already or the connection is gone."""
        waiter = Waiter()
        if self.ended or self.awaited.setdefault(message_id, waiter) is not waiter:
            return None
        return waiter

    def forget(self, message_id: int) -> None:
        self.awaited.pop(message_id, None)

    def _answered(self, pdvs: list[tuple[int, int, memoryview]] | None) -> bool:
        """Hand a whole C-STORE-RSP (one PDV, the last command fragment) to the ``store_send`` waiting for it;
        False leaves the PDU to pynetdicom (and whatever it answers to pynetdicom's own waits)."""
        if not self.awaited or not pdvs or len(pdvs) != 1 or self.instance is not None \
                or pdvs[0][1] & (COMMAND | LAST) != COMMAND | LAST or self.dul.assoc.dimse.message is not None:
            return False
        waiter = self.awaited.get(awaited_response(command_elements(pdvs[0][2])))  # type: ignore[arg-type]
        if waiter is None:
            return False
        waiter.deliver(bytes(pdvs[0][2]))
        return True

    def end_waits(self) -> None:
        """The connection is gone: every awaited response ends without one."""
        self.ended = True
        for waiter in list(self.awaited.values()):
            waiter.deliver(None)

    def _mine(self, pdvs: list[tuple[int, int, memoryview]] | None) -> bool:
        """Handle the PDVs of a P-DATA-TF PDU that belongs to a C-STORE received here; False leaves it to
        pynetdicom."""
        dul = self.dul
        if self.instance is None:
            if (not pdvs or self.store is None or dul.state_machine.current_state != "Sta6" or dul.event_queue.queue
                    or dul.to_provider_queue.queue or not self._start(*pdvs[0])):
                return False  # pynetdicom's, malformed ones included: its decoder says so (Evt19)
            pdvs = pdvs[1:]
        instance = self.instance
        assert instance is not None
        if pdvs is None or dul.state_machine.current_state != "Sta6":
            log.error("C-STORE of %s from %s broken off by %s; aborting", instance.request.sop_instance_uid,
                      _peer(dul.assoc), "a malformed PDU" if pdvs is None else "the association's end")
            self.discard()
            if pdvs is None:
                dul.event_queue.put("Evt19")
            return True  # never half a message to pynetdicom's DIMSE layer
        for context_id, control, data in pdvs:
            if control & COMMAND or context_id != instance.context_id:
                log.error("C-STORE of %s from %s broken off by a %s fragment on context %d; aborting",
                          instance.request.sop_instance_uid, _peer(dul.assoc),
                          "command" if control & COMMAND else "data", context_id)
                self.discard()
                dul.event_queue.put("Evt19")
                return True
            instance.write(data)
            if control & LAST:
                self._complete(instance)
                break  # what follows the last fragment is ignored, as pynetdicom does
        return True

    def _start(self, context_id: int, control: int, data: memoryview) -> bool:
        """Begin a received instance when ``data`` is a whole C-STORE-RQ command set this path may take."""
        assoc = self.dul.assoc
        if control & (COMMAND | LAST) != COMMAND | LAST or assoc.dimse.message is not None or assoc._sent_release \
                or any(assoc.get_handlers(getattr(evt, name)) for name in _WATCHERS):
            return False
        request = parse_store_request(data)
        syntax = self._storage_syntax(context_id, request.sop_class_uid) if request is not None else None
        if request is None or syntax is None:
            return False
        try:
            self.instance = _Instance(self.store, context_id, request, syntax)
        except Exception as exc:  # noqa: BLE001 - pynetdicom's own path then answers for it
            log.error("cannot open a file for an incoming instance: %s", exc)
            return False
        return True

    def _storage_syntax(self, context_id: int, sop_class_uid: str) -> str | None:
        """The transfer syntax of ``context_id`` when it is an accepted storage context of ``sop_class_uid``."""
        if context_id not in self.storage_contexts:
            from pynetdicom.service_class import StorageServiceClass
            from pynetdicom.sop_class import uid_to_service_class

            context = self.dul.assoc._accepted_cx.get(context_id)
            storage = context is not None and uid_to_service_class(context.abstract_syntax) is StorageServiceClass
            self.storage_contexts[context_id] = (str(context.abstract_syntax), str(context.transfer_syntax[0])) \
                if storage else None
        known = self.storage_contexts[context_id]
        return known[1] if known is not None and known[0] == sop_class_uid else None

    def _complete(self, instance: _Instance) -> None:
        self.instance = None
        instance.close()
        request = instance.request
        if instance.error is not None:
            log.error("C-STORE of %s from %s not stored (0x%04X): %s", request.sop_instance_uid,
                      _peer(self.dul.assoc), st.STORE_OUT_OF_RESOURCES, instance.error)
            status = st.STORE_OUT_OF_RESOURCES
        else:
            try:
                status = self.store.store_received(instance.path, self.dul.assoc, request.sop_instance_uid)
            except Exception:  # noqa: BLE001 - as pynetdicom's own handler wrapper: a failure status, and the log
                log.exception("C-STORE of %s failed", request.sop_instance_uid)
                status = st.STORE_UNEXPECTED_FAILURE
        instance.discard()  # gone already when stored (moved to the pending queue)
        self.dul.socket.send(response_pdu(instance.context_id, request, status))

    def _to_pynetdicom(self, pdu: memoryview) -> None:
        dul = self.dul
        try:
            decoded, event = dul._decode_pdu(pdu)
        except Exception as exc:  # noqa: BLE001 - as pynetdicom: an undecodable PDU is Evt19
            log.error("unable to decode the received PDU: %s", exc)
            return self._invalid()
        dul.event_queue.put(event)
        dul._recv_pdu.put(decoded)

    def _closed(self) -> None:
        self.discard()
        self.end_waits()
        self.dul.event_queue.put("Evt17")  # transport connection closed

    def _invalid(self) -> None:
        self.discard()
        self.end_waits()
        self.dul.event_queue.put("Evt19")  # unrecognised or invalid PDU

    def discard(self) -> None:
        if self.instance is not None:
            self.instance.discard()
            self.instance = None


def _peer(assoc: Any) -> str:
    """The other side's address."""
    peer = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    return f"{peer.address}:{peer.port}"


class _Stalled(Exception):
    """The rest of a PDU did not arrive by its deadline."""


def _recv_by(sock: socket.socket, view: memoryview, deadline: float | None) -> int:
    """One ``recv_into``: what has arrived, else what arrives before ``deadline`` (``time.monotonic``; None: no
    bound), else ``_Stalled``; 0 when the peer closed the connection."""
    while True:
        try:
            if isinstance(sock, ssl.SSLSocket):
                return _recv_decrypted(sock, view)
            return sock.recv_into(view, 0, socket.MSG_DONTWAIT)
        except ssl.SSLWantWriteError:  # (TLS: OpenSSL must write before it can read on, a key update)
            wanted = select.POLLOUT
        except (BlockingIOError, ssl.SSLWantReadError):
            wanted = select.POLLIN
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            raise _Stalled
        poller = select.poll()
        poller.register(sock, wanted)
        if not poller.poll(None if wait is None else math.ceil(wait * 1000)):
            raise _Stalled


def _recv_decrypted(sock: ssl.SSLSocket, view: memoryview) -> int:
    """``recv_into`` on a TLS socket without waiting (SSLSocket takes no MSG_DONTWAIT): the decrypted bytes
    OpenSSL holds already (which ``poll`` does not see), else those of the records that have arrived whole;
    ``ssl.SSLWantReadError`` when there are none (poll may have seen part of a record, or a record carrying no
    data, a TLS 1.3 session ticket). Only the DUL thread uses a TLS socket (``writer.encrypted``), so switching
    it to non-blocking for the call disturbs no other reader or writer."""
    previous = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv_into(view)
    finally:
        sock.settimeout(previous)


def bound_socket_reads(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler for every association, fast paths or not: no blocking ``recv`` on its socket
    waits longer than the association's ACSE timeout (SO_RCVTIMEO; sends are left alone). That is for
    pynetdicom's own reader, where this module's is not installed: it blocks in ``recv`` until the whole PDU is
    there (see the module docstring). This module's reader never blocks in ``recv`` and has its own deadline.
    A TLS socket ignores SO_RCVTIMEO (OpenSSL's read, told to retry, blocks again): pynetdicom's reader gets a
    socket timeout instead, which bounds its sends too (a peer that reads nothing for that long is gone as
    well); this module's reader, which switches the socket to non-blocking and back, is left alone."""
    timeout = event.assoc.acse_timeout
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None or timeout is None:
        return
    seconds = max(timeout, 0.001)
    try:
        if isinstance(sock, ssl.SSLSocket):
            if not _installed():
                sock.settimeout(seconds)
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                        struct.pack("@ll", int(seconds), int(seconds % 1 * 1_000_000)))  # struct timeval
    except OSError:  # closed already
        pass


def _quick_ack(sock: socket.socket) -> None:
    """Acknowledge what has arrived at once (see the module docstring)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except (OSError, AttributeError):
        pass


def _pdvs(pdu: memoryview) -> list[tuple[int, int, memoryview]] | None:
    """The (context ID, message control header, fragment) of each PDV item; None when they do not add up."""
    out = []
    pos, end = 6, len(pdu)
    while pos < end:
        if pos + 6 > end:
            return None
        length, context_id, control = _PDV.unpack_from(pdu, pos)
        if length < 2 or pos + 4 + length > end:
            return None
        out.append((context_id, control, pdu[pos + 6:pos + 4 + length]))
        pos += 4 + length
    return out


def _installed() -> bool:
    """Whether this module reads for every association of the process (``install``)."""
    from pynetdicom.dul import DULServiceProvider

    return hasattr(DULServiceProvider._read_pdu_data, "__wrapped__")


def receiver_of(dul: Any) -> Receiver | None:
    """The reader of ``dul``'s association when this module reads for it (``install``ed), else None."""
    if not _installed() or dul.socket is None:
        return None
    return _receiver(dul)


def _receiver(dul: Any) -> Receiver:
    receiver = dul.__dict__.get("_hounsfield_receiver")
    if receiver is None:
        assoc = dul.assoc
        receiver = Receiver(dul, _stores.get(assoc.ae) if assoc.is_acceptor else None)
        dul._hounsfield_receiver = receiver
    return receiver


def _drop_partial_message(dimse: Any) -> None:
    """Forget the DIMSE message pynetdicom is assembling, and remove the file its C-STORE dataset was being
    received to (``STORE_RECV_CHUNKED_DATASET``: a temporary file in the store's incoming directory, which only
    a complete message's service handler removes)."""
    message, dimse.message = dimse.message, None
    part = getattr(message, "_data_set_file", None)
    if part is None:
        return
    try:
        part.close()
        os.unlink(part.name)
    except OSError as exc:  # left for the start-up clean-up of the incoming directory
        log.warning("cannot remove %s: %s", part.name, exc)


def install() -> None:
    """Route every association's reads through ``Receiver``; C-STOREs are taken where ``enable``d (idempotent;
    per process).

    Two faults of pynetdicom's own DIMSE path, which gets the messages this module leaves to it (a command set
    it cannot read, one split over fragments), are mended here too; tests/test_fuzz_dicom_port.py found both
    with mutated command sets:
    - its decoder raises for a command set without the elements it looks for (AttributeError for a missing
      Command Field, pydicom's BytesLengthException, KeyError...) in the DUL thread, which died of it: no
      A-ABORT, a traceback on stderr. An undecodable message is an invalid PDU, as pynetdicom treats one whose
      primitive cannot be made: logged, Evt19 (AA-8: A-ABORT);
    - a message broken off (an abort, a release, the connection closed, that decoder's failure) left its
      C-STORE dataset's temporary file in the incoming directory until the next start: it is removed when the
      DUL ends, as ``Receiver.discard`` removes this module's. So is the file of a whole C-STORE-RQ that no
      service class took (a SOP Class UID pynetdicom knows no service for, a context it refuses): only the
      storage service's SCP removed it.
    And one of its state machine: a local primitive queued while the DUL aborts (the association thread's
    A-ASSOCIATE-AC, while the reader gives up on a PDU begun behind the request) reached the machine in Sta13,
    which has no event for any (InvalidEventError: the DUL thread died). Nothing can be sent once the connection
    is closing: in Sta13 queued primitives are dropped."""
    from pynetdicom.association import Association
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dul import DULServiceProvider

    if _installed():
        return
    read_pdu_data = DULServiceProvider._read_pdu_data
    run_reactor = DULServiceProvider.run_reactor
    receive_primitive = DIMSEServiceProvider.receive_primitive
    serve_request = Association._serve_request
    process_recv_primitive = DULServiceProvider._process_recv_primitive

    def read(self: Any) -> None:
        _receiver(self).read_pdu()

    def run_and_discard(self: Any) -> None:
        try:
            run_reactor(self)
        finally:
            receiver = self.__dict__.get("_hounsfield_receiver")
            if receiver is not None:
                receiver.discard()
                receiver.end_waits()
            _drop_partial_message(self.assoc.dimse)

    def receive_or_abort(self: Any, primitive: Any) -> None:
        try:
            receive_primitive(self, primitive)
        except Exception as exc:  # noqa: BLE001 - whatever the decoder raises: the message is invalid
            log.error("unable to decode the DIMSE message received from %s (%s: %s); aborting",
                      _peer(self.assoc), type(exc).__name__, exc)
            _drop_partial_message(self)
            self.dul.event_queue.put("Evt19")  # invalid PDU

    def serve_and_discard(self: Any, msg: Any, context_id: int) -> None:
        try:
            serve_request(self, msg, context_id)
        finally:
            part = getattr(msg, "_dataset_file", None)  # removed already when a handler took it
            if part is not None:
                part.close()
                Path(part.name).unlink(missing_ok=True)

    def nothing_to_send_when_closing(self: Any) -> bool:
        if self.state_machine.current_state != "Sta13":
            return process_recv_primitive(self)
        with self.to_provider_queue.mutex:
            dropped = len(self.to_provider_queue.queue)
            self.to_provider_queue.queue.clear()
        if dropped:
            log.debug("%d primitives for %s dropped: the connection is closing", dropped, _peer(self.assoc))
        return False

    read.__wrapped__ = read_pdu_data  # type: ignore[attr-defined]
    run_and_discard.__wrapped__ = run_reactor  # type: ignore[attr-defined]
    receive_or_abort.__wrapped__ = receive_primitive  # type: ignore[attr-defined]
    serve_and_discard.__wrapped__ = serve_request  # type: ignore[attr-defined]
    nothing_to_send_when_closing.__wrapped__ = process_recv_primitive  # type: ignore[attr-defined]
    DULServiceProvider._read_pdu_data = read
    DULServiceProvider.run_reactor = run_and_discard
    DIMSEServiceProvider.receive_primitive = receive_or_abort
    Association._serve_request = serve_and_discard  # type: ignore[method-assign]
    DULServiceProvider._process_recv_primitive = nothing_to_send_when_closing
