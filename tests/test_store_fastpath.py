"""The C-STORE fast path packs the same bytes pynetdicom itself writes (dimse/store_fastpath.py)."""

from __future__ import annotations

import io

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta

from hounsfield.dimse.store_fastpath import LAST_COMMAND_FRAGMENT, FileMeta, command_set, file_meta

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
