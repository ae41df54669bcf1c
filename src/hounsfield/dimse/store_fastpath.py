"""The per-instance C-STORE path without pynetdicom's generic encoders, byte for byte what pynetdicom writes.

Sending (C-GET, C-MOVE): an instance the receiver accepts as stored goes as a ``retrieve.StoredDataset``,
whose stored dataset bytes replace pynetdicom's decode-and-encode of the file.

Receiving:

For every received instance pynetdicom builds two pydicom datasets only to encode them: the file meta it puts
in front of the received dataset (``create_file_meta`` + ``write_file_meta_info``, ~0.2 ms) and the response's
command set (a primitive turned into a Dataset, every value checked, encoded twice for its group length,
~0.3 ms). Together that is a quarter of the DICOM process's CPU per acknowledged instance. Both have a fixed
shape, so they are packed here with ``struct``:
- the file meta group (PS3.10 7.1), explicit VR little endian, with pynetdicom's implementation UID and name;
- the C-STORE response (PS3.7 9.3.1.2), implicit VR little endian (PS3.7 6.3.1), handed to the DUL as one
  P-DATA primitive. Any other message (requests, other services, a response with an error comment or an
  offending element, an association with a handler for ``EVT_DIMSE_SENT``) goes through pynetdicom unchanged.
``tests/test_store_fastpath.py`` compares both with pynetdicom's own encoding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

from hounsfield.headerjson import LONG_VRS

C_STORE_RSP = 0x8001
NO_DATASET = 0x0101
LAST_COMMAND_FRAGMENT = 0x03  # PS3.8 E.2: message control header, command + last fragment


def _uid(value: str) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _implicit(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _explicit(tag: int, vr: str, value: bytes) -> bytes:
    if vr in LONG_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def command_set(message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int) -> bytes:
    """The encoded command set of a C-STORE response."""
    body = b"".join((
        _implicit(0x00000002, _uid(sop_class_uid)),
        _implicit(0x00000100, struct.pack("<H", C_STORE_RSP)),
        _implicit(0x00000120, struct.pack("<H", message_id)),
        _implicit(0x00000800, struct.pack("<H", NO_DATASET)),
        _implicit(0x00000900, struct.pack("<H", status)),
        _implicit(0x00001000, _uid(sop_instance_uid)),
    ))
    return _implicit(0x00000000, struct.pack("<I", len(body))) + body


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


def _direct_store_responses(send_msg: Any) -> Any:
    from pynetdicom import evt
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.pdu_primitives import P_DATA

    def send(self: Any, primitive: Any, context_id: int) -> None:
        if (type(primitive) is C_STORE and primitive.MessageIDBeingRespondedTo is not None
                and primitive.Status is not None and primitive.ErrorComment is None
                and primitive.OffendingElement is None and primitive.AffectedSOPClassUID
                and primitive.AffectedSOPInstanceUID and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            pdata = P_DATA()
            encoded = command_set(primitive.MessageIDBeingRespondedTo, str(primitive.AffectedSOPClassUID),
                                  str(primitive.AffectedSOPInstanceUID), int(primitive.Status))
            pdata.presentation_data_value_list = [[context_id, bytes([LAST_COMMAND_FRAGMENT]) + encoded]]
            self.dul.send_pdu(pdata)
            return
        send_msg(self, primitive, context_id)

    send.__wrapped__ = send_msg  # type: ignore[attr-defined]
    return send


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
    from pynetdicom import association, dimse_messages
    from pynetdicom.dimse import DIMSEServiceProvider

    if hasattr(DIMSEServiceProvider.send_msg, "__wrapped__"):
        return
    DIMSEServiceProvider.send_msg = _direct_store_responses(DIMSEServiceProvider.send_msg)
    # Used there only for the file meta of a C-STORE dataset received to a file (STORE_RECV_CHUNKED_DATASET).
    dimse_messages.create_file_meta = _create_file_meta  # type: ignore[assignment]
    dimse_messages.write_file_meta_info = _write_file_meta_info  # type: ignore[assignment]
    # The association module encodes every dataset it sends with it; only a StoredDataset is treated apart.
    association.encode = _stored_bytes_when_they_fit(association.encode)  # type: ignore[assignment]
