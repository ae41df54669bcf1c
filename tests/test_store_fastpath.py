"""The C-STORE fast path packs the same bytes pynetdicom itself writes (dimse/store_fastpath.py)."""

from __future__ import annotations

import io

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import create_file_meta
from pynetdicom.pdu import P_DATA_TF

from hounsfield.dimse.store_fastpath import C_GET_RSP as C_GET_RSP_FIELD
from hounsfield.dimse.store_fastpath import C_MOVE_RSP as C_MOVE_RSP_FIELD
from hounsfield.dimse.store_fastpath import (
    LAST_COMMAND_FRAGMENT,
    _pending_message,
    FileMeta,
    command_set,
    file_meta,
    p_data_pdus,
    request_command_set,
    retrieve_pending_command_set,
)

CASES = [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.8.498.1", "1.2.840.10008.1.2.1"),  # odd-length UIDs
    ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4.55", "1.2.840.10008.1.2"),  # even lengths
    ("1.2.840.10008.5.1.4.1.1.7", "2.25.1234567890123456789012345678901234567", "1.2.840.10008.1.2.4.50"),
]


@pytest.mark.parametrize("message_id, status", [(1, 0x0000), (65535, 0xA700), (7, 0xB000)])
@pytest.mark.parametrize("sop_class, sop_instance, _", CASES)
def test_response_command_set_matches_pynetdicom(sop_class: str, sop_instance: str, _: str, message_id: int,
                                                 status: int) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    pdvs = [tuple(pdv) for pdata in message.encode_msg(1, 16382) for pdv in pdata.presentation_data_value_list]
    assert pdvs == [(1, bytes([LAST_COMMAND_FRAGMENT]) + command_set(message_id, sop_class, sop_instance, status))]


@pytest.mark.parametrize("sop_class, sop_instance, syntax", CASES)
def test_file_meta_matches_pydicom(sop_class: str, sop_instance: str, syntax: str) -> None:
    expected = io.BytesIO()
    write_file_meta_info(expected, create_file_meta(sop_class_uid=UID(sop_class), sop_instance_uid=UID(sop_instance),
                                                    transfer_syntax=UID(syntax)))
    assert file_meta(FileMeta(sop_class, sop_instance, syntax)) == expected.getvalue()


@pytest.mark.parametrize("originator, originator_id", [(None, None), ("MOVER", 3), ("EVEN", 65535)])
@pytest.mark.parametrize("sop_class, sop_instance, _", CASES)
def test_request_command_set_matches_pynetdicom(sop_class: str, sop_instance: str, _: str, originator: str | None,
                                                originator_id: int | None) -> None:
    rq = C_STORE()
    rq.MessageID = 12
    rq.AffectedSOPClassUID = sop_class
    rq.AffectedSOPInstanceUID = sop_instance
    rq.Priority = 1
    rq.MoveOriginatorApplicationEntityTitle = originator
    rq.MoveOriginatorMessageID = originator_id
    rq.DataSet = io.BytesIO(b"\x08\x00\x16\x00\x00\x00\x00\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    command = b"".join(bytes(data[1:]) for pdata in message.encode_msg(1, 0)
                       for _, data in pdata.presentation_data_value_list if data[0] & 1)
    assert request_command_set(12, sop_class, sop_instance, 1, originator, originator_id) == command


@pytest.mark.parametrize("max_pdu", [16384, 262144, 0, 100])
@pytest.mark.parametrize("size", [0, 1, 16377, 16378, 16379, 100001])
def test_message_pdus_match_pynetdicom(max_pdu: int, size: int) -> None:
    """Every PDU pynetdicom would send for a C-STORE request, as one byte string: the fragment boundaries
    (max_pdu - 6 bytes of data per PDV), the control headers, the PDU and item lengths."""
    rq = C_STORE()
    rq.MessageID = 3
    rq.AffectedSOPClassUID = CASES[0][0]
    rq.AffectedSOPInstanceUID = CASES[0][1]
    rq.Priority = 2
    dataset = bytes(range(256)) * (size // 256) + bytes(size % 256)
    rq.DataSet = io.BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    expected = b"".join(P_DATA_TF(pdata).encode() for pdata in message.encode_msg(7, max_pdu))
    command = request_command_set(3, CASES[0][0], CASES[0][1], 2)
    assert p_data_pdus(7, command, memoryview(dataset), max_pdu) == expected


@pytest.mark.parametrize("kind", ["C-GET", "C-MOVE"])
@pytest.mark.parametrize("message_id, status, counts", [(1, 0xFF00, (99, 1, 0, 0)), (65535, 0xFF00, (0, 60000, 3, 2)),
                                                        (7, 0xFF01, (5, 0, 65535, 1))])
def test_pending_retrieve_response_matches_pynetdicom(kind: str, message_id: int, status: int,
                                                      counts: tuple[int, int, int, int]) -> None:
    """A retrieval's Pending response, packed here, is byte for byte pynetdicom's PDU for the same primitive."""
    primitive, message, field = (C_GET(), C_GET_RSP(), C_GET_RSP_FIELD) if kind == "C-GET" \
        else (C_MOVE(), C_MOVE_RSP(), C_MOVE_RSP_FIELD)
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.3" if kind == "C-GET" else "1.2.840.10008.5.1.4.1.2.1.2"
    primitive.Status = status
    (primitive.NumberOfRemainingSuboperations, primitive.NumberOfCompletedSuboperations,
     primitive.NumberOfFailedSuboperations, primitive.NumberOfWarningSuboperations) = counts
    message.primitive_to_message(primitive)
    expected = b"".join(P_DATA_TF(pdata).encode() for pdata in message.encode_msg(5, 16384))
    command = retrieve_pending_command_set(field, message_id, str(primitive.AffectedSOPClassUID), status, counts)
    assert p_data_pdus(5, command, b"", 16384) == expected
    assert _pending_message(primitive, field, 5, 16384) == expected


def test_retrieve_responses_that_are_not_plain_pending_ones_are_left_to_pynetdicom() -> None:
    def pending() -> C_MOVE:
        rsp = C_MOVE()
        rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPClassUID, rsp.Status = 1, "1.2.840.10008.5.1.4.1.2.2.2", 0xFF00
        (rsp.NumberOfRemainingSuboperations, rsp.NumberOfCompletedSuboperations, rsp.NumberOfFailedSuboperations,
         rsp.NumberOfWarningSuboperations) = (1, 2, 3, 4)
        return rsp

    assert _pending_message(pending(), C_MOVE_RSP_FIELD, 1, 0) is not None
    final = pending()
    final.Status = 0x0000
    with_identifier = pending()
    with_identifier.Identifier = io.BytesIO(b"\x08\x00\x58\x11\x00\x00\x00\x00")
    commented = pending()
    commented.ErrorComment = "slow"
    no_counts = pending()
    no_counts.NumberOfWarningSuboperations = None
    for rsp in (final, with_identifier, commented, no_counts):
        assert _pending_message(rsp, C_MOVE_RSP_FIELD, 1, 0) is None
