"""The per-instance C-STORE path without pynetdicom's generic encoders, byte for byte what pynetdicom writes.

Sending (C-GET, C-MOVE, REST send, the ``store`` command): an instance the receiver accepts as stored goes as a
``retrieve.StoredDataset``, whose stored dataset bytes replace pynetdicom's decode-and-encode of the file.
pynetdicom then cuts the request into P-DATA primitives of the peer's maximum PDU length (storescp: 16 KB, ~32
for a CT slice), each queued to the DUL thread, run through the state machine and encoded as objects. Here the
request's command set is packed with ``struct`` and its PDUs are built in one go (``p_data_pdus``), queued as
one ``EncodedPData`` that the DUL writes as it is (the DT-1 / AR-7 actions), for datasets held in memory of up
to ``MAX_PREENCODED`` bytes.

Receiving:

For every received instance pynetdicom builds two pydicom datasets only to encode them: the file meta it puts
in front of the received dataset (``create_file_meta`` + ``write_file_meta_info``, ~0.2 ms) and the response's
command set (a primitive turned into a Dataset, every value checked, encoded twice for its group length,
~0.3 ms). Together that is a quarter of the DICOM process's CPU per acknowledged instance. Both have a fixed
shape, so they are packed here with ``struct``:
- the file meta group (PS3.10 7.1), explicit VR little endian, with pynetdicom's implementation UID and name;
- the C-STORE response (PS3.7 9.3.1.2), implicit VR little endian (PS3.7 6.3.1), handed to the DUL as its
  ready-made PDU, as a request's.
Any other message (other services, a response with an error comment or an offending element, a dataset sent
from a file, an association with a handler for ``EVT_DIMSE_SENT``, ``EVT_PDU_SENT`` or ``EVT_DATA_SENT``) goes
through pynetdicom unchanged. ``tests/test_store_fastpath.py`` compares every packed byte with pynetdicom's own
encoding.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from pynetdicom.pdu_primitives import P_DATA

from hounsfield.dimse import writer
from hounsfield.headerjson import LONG_VRS

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RSP = 0x8010
C_MOVE_RSP = 0x8021
PENDING = (0xFF00, 0xFF01)  # PS3.4 C.4.2.1.5, C.4.3.1.4: sub-operations are continuing
NO_DATASET = 0x0101
DATASET_PRESENT = 0x0001  # what pynetdicom writes in Command Data Set Type when a dataset follows
COMMAND_FRAGMENT, LAST_COMMAND_FRAGMENT = 0x01, 0x03  # PS3.8 E.2: message control header
DATA_FRAGMENT, LAST_DATA_FRAGMENT = 0x00, 0x02
MAX_PREENCODED = 64 * 1024 * 1024  # larger datasets go through pynetdicom (its file and chunk handling)
_PDU_HEADER = struct.Struct(">BBLLBB")  # P-DATA-TF header, then the PDV item's length, context ID, control


def _uid(value: str) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _explicit(tag: int, vr: str, value: bytes) -> bytes:
    if vr in LONG_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _us(tag: int, value: int) -> bytes:
    return _implicit(tag, struct.pack("<H", value))


def _command_set(*elements: bytes) -> bytes:
    """A command set: its elements after their group length (PS3.7 6.3.1, implicit VR little endian)."""
    body = b"".join(elements)
    return _implicit(0x00000000, struct.pack("<I", len(body))) + body


def request_command_set(message_id: int, sop_class_uid: str, sop_instance_uid: str, priority: int,
                        move_originator: str | None = None, move_originator_id: int | None = None) -> bytes:
    """The encoded command set of a C-STORE request (PS3.7 9.3.1.1)."""
    optional = []
    if move_originator:
        title = move_originator.encode("ascii")
        optional.append(_implicit(0x00001030, title + b" " if len(title) % 2 else title))
    if move_originator_id is not None:
        optional.append(_us(0x00001031, move_originator_id))
    return _command_set(_implicit(0x00000002, _uid(sop_class_uid)), _us(0x00000100, C_STORE_RQ),
                        _us(0x00000110, message_id), _us(0x00000700, priority), _us(0x00000800, DATASET_PRESENT),
                        _implicit(0x00001000, _uid(sop_instance_uid)), *optional)


def p_data_pdus(context_id: int, command: bytes, dataset: memoryview | bytes, max_pdu: int) -> bytes:
    """A whole DIMSE message as the P-DATA-TF PDUs pynetdicom sends for it: one PDV per PDU, fragments of at
    most ``max_pdu - 6`` bytes (``DIMSEMessage.encode_msg``; 0: no maximum), the command set first."""
    step = max_pdu - 6 if max_pdu else max(len(command), len(dataset), 1)
    out: list[bytes | memoryview] = []
    for payload, more, last in ((memoryview(command), COMMAND_FRAGMENT, LAST_COMMAND_FRAGMENT),
                                (memoryview(dataset), DATA_FRAGMENT, LAST_DATA_FRAGMENT)):
        for start in range(0, len(payload), step):
            fragment = payload[start:start + step]
            control = last if start + step >= len(payload) else more
            out.append(_PDU_HEADER.pack(0x04, 0, len(fragment) + 6, len(fragment) + 2, context_id, control))
            out.append(fragment)
    return b"".join(out)


def command_set(message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int) -> bytes:
    """The encoded command set of a C-STORE response (PS3.7 9.3.1.2)."""
    return _command_set(_implicit(0x00000002, _uid(sop_class_uid)), _us(0x00000100, C_STORE_RSP),
                        _us(0x00000120, message_id), _us(0x00000800, NO_DATASET), _us(0x00000900, status),
                        _implicit(0x00001000, _uid(sop_instance_uid)))


def retrieve_pending_command_set(field: int, message_id: int, sop_class_uid: str, status: int,
                                 counts: tuple[int, int, int, int]) -> bytes:
    """The encoded command set of a Pending C-GET or C-MOVE response without identifier (PS3.7 9.3.3.2,
    9.3.4.2): ``counts`` are the Number of Remaining, Completed, Failed and Warning Sub-operations."""
    remaining, completed, failed, warning = counts
    return _command_set(_implicit(0x00000002, _uid(sop_class_uid)), _us(0x00000100, field),
                        _us(0x00000120, message_id), _us(0x00000800, NO_DATASET), _us(0x00000900, status),
                        _us(0x00001020, remaining), _us(0x00001021, completed), _us(0x00001022, failed),
                        _us(0x00001023, warning))


class EncodedPData(P_DATA):
    """A P-DATA primitive whose PDUs are encoded already (``p_data_pdus``); the DUL writes them as they are."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self.encoded = encoded


@dataclass(frozen=True)
class FileMeta:
    """What ``create_file_meta`` is given; ``file_meta`` encodes it."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    implementation_uid: str = ""
    implementation_version: str = ""


def file_meta(meta: FileMeta) -> bytes:
    """The encoded file meta group (without preamble and prefix)."""
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

    version = (meta.implementation_version or PYNETDICOM_IMPLEMENTATION_VERSION).encode("ascii")
    body = b"".join((
        _explicit(0x00020001, "OB", b"\x00\x01"),
        _explicit(0x00020002, "UI", _uid(meta.sop_class_uid)),
        _explicit(0x00020003, "UI", _uid(meta.sop_instance_uid)),
        _explicit(0x00020010, "UI", _uid(meta.transfer_syntax)),
        _explicit(0x00020012, "UI", _uid(meta.implementation_uid or PYNETDICOM_IMPLEMENTATION_UID)),
        _explicit(0x00020013, "SH", version + b" " if len(version) % 2 else version),
    ))
    return _explicit(0x00020000, "UL", struct.pack("<I", len(body))) + body


def _create_file_meta(**kwargs: Any) -> FileMeta:
    return FileMeta(**{k: str(v) for k, v in kwargs.items()})


def _write_file_meta_info(fp: BinaryIO, meta: FileMeta, *_: Any, **__: Any) -> None:
    fp.write(file_meta(meta))


def _watched(assoc: Any) -> bool:
    """Whether a handler watches what this path does not trigger for a message (sent DIMSE messages, PDUs)."""
    from pynetdicom import evt

    return any(assoc.get_handlers(e) for e in (evt.EVT_DIMSE_SENT, evt.EVT_PDU_SENT, evt.EVT_DATA_SENT))


def _store_message(primitive: Any, context_id: int, max_pdu: int) -> bytes | None:
    """The PDUs of a C-STORE request (command and dataset) or response, or None for one left to pynetdicom."""
    if not primitive.AffectedSOPClassUID or not primitive.AffectedSOPInstanceUID or 0 < max_pdu < 7:
        return None  # (pynetdicom refuses a maximum below 7)
    sop_class, sop_instance = str(primitive.AffectedSOPClassUID), str(primitive.AffectedSOPInstanceUID)
    if primitive.MessageIDBeingRespondedTo is None:
        dataset = primitive.DataSet.getvalue() if isinstance(primitive.DataSet, io.BytesIO) else None
        if dataset is None or primitive.MessageID is None or len(dataset) > MAX_PREENCODED:
            return None
        command = request_command_set(primitive.MessageID, sop_class, sop_instance, primitive.Priority,
                                      primitive.MoveOriginatorApplicationEntityTitle,
                                      primitive.MoveOriginatorMessageID)
    elif primitive.Status is None or primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    else:
        dataset = b""
        command = command_set(primitive.MessageIDBeingRespondedTo, sop_class, sop_instance, int(primitive.Status))
    return p_data_pdus(context_id, command, memoryview(dataset), max_pdu)


def _pending_message(primitive: Any, field: int, context_id: int, max_pdu: int) -> bytes | None:
    """The PDU of a Pending C-GET / C-MOVE response without identifier or error elements, or None for any other
    one (left to pynetdicom)."""
    counts = (primitive.NumberOfRemainingSuboperations, primitive.NumberOfCompletedSuboperations,
              primitive.NumberOfFailedSuboperations, primitive.NumberOfWarningSuboperations)
    if primitive.MessageIDBeingRespondedTo is None or primitive.Status not in PENDING or None in counts \
            or primitive.Identifier is not None or primitive.ErrorComment is not None \
            or primitive.OffendingElement is not None \
            or not primitive.AffectedSOPClassUID or 0 < max_pdu < 7:
        return None
    command = retrieve_pending_command_set(field, primitive.MessageIDBeingRespondedTo,
                                           str(primitive.AffectedSOPClassUID), int(primitive.Status), counts)
    return p_data_pdus(context_id, command, b"", max_pdu)


def _direct_store_messages(send_msg: Any) -> Any:
    """pynetdicom's ``DIMSEServiceProvider.send_msg`` for the messages of a C-STORE and the Pending responses of
    a retrieval: encoded here, and written by the calling thread when the socket may be written now
    (``writer.exclusive``: the DUL has nothing queued, the association is established), otherwise queued for the
    DUL as one ``EncodedPData``."""
    from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE

    def send(self: Any, primitive: Any, context_id: int) -> None:
        encoded = None
        kind = type(primitive)
        if kind in (C_STORE, C_GET, C_MOVE) and not _watched(self.assoc):
            if kind is C_STORE:
                encoded = _store_message(primitive, context_id, self.maximum_pdu_size)
            else:
                encoded = _pending_message(primitive, C_GET_RSP if kind is C_GET else C_MOVE_RSP, context_id,
                                           self.maximum_pdu_size)
        if encoded is None:
            return send_msg(self, primitive, context_id)
        with writer.exclusive(self.dul) as sock:
            if sock is not None:
                sock.send(encoded)
                return None
        self.dul.send_pdu(EncodedPData(encoded))
        return None

    send.__wrapped__ = send_msg  # type: ignore[attr-defined]
    return send


def _sending_encoded(action: tuple[str, Any, str]) -> tuple[str, Any, str]:
    """A state-machine action that sends the next queued P-DATA primitive: an ``EncodedPData`` goes out as its
    bytes, in one write."""
    description, run, next_state = action

    def run_or_write(dul: Any) -> str:
        if type(dul.to_provider_queue.queue[0]) is EncodedPData:
            primitive = dul.to_provider_queue.get(False)
            dul.socket.send(memoryview(primitive.encoded))
            return next_state
        return run(dul)

    run_or_write.__wrapped__ = run  # type: ignore[attr-defined]
    return description, run_or_write, next_state


def _stored_bytes_when_they_fit(encode: Any) -> Any:
    """pynetdicom's ``encode`` for the dataset of a C-STORE request: a ``StoredDataset`` asked for in its own
    encoding is its stored bytes; in another one, its decoded copy encoded."""
    from hounsfield.retrieve import StoredDataset

    def encode_or_stored(ds: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> Any:
        if isinstance(ds, StoredDataset):
            if ds.stored_encoding() == (is_implicit_vr, is_little_endian, deflated):
                return ds.stored_bytes()
            ds = ds.decoded()
        return encode(ds, is_implicit_vr, is_little_endian, deflated)

    encode_or_stored.__wrapped__ = encode  # type: ignore[attr-defined]
    return encode_or_stored


def install() -> None:
    """Apply once per process, before associations start (idempotent)."""
    from pynetdicom import association, dimse_messages, fsm
    from pynetdicom.dimse import DIMSEServiceProvider

    if hasattr(DIMSEServiceProvider.send_msg, "__wrapped__"):
        return
    DIMSEServiceProvider.send_msg = _direct_store_messages(DIMSEServiceProvider.send_msg)
    for name in ("DT-1", "AR-7"):  # the two actions that send a queued P-DATA primitive (Sta6; Sta8)
        fsm.ACTIONS[name] = _sending_encoded(fsm.ACTIONS[name])
    # Used there only for the file meta of a C-STORE dataset received to a file (STORE_RECV_CHUNKED_DATASET).
    dimse_messages.create_file_meta = _create_file_meta  # type: ignore[assignment]
    dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[assignment]
    # The association module encodes every dataset it sends with it; only a StoredDataset is treated apart.
    association.encode = _stored_bytes_when_they_fit(association.encode)  # type: ignore[assignment]
