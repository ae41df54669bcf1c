"""C-STORE received below pynetdicom's DIMSE layer (dimse/store_receive.py): the same files and responses
pynetdicom's own path gives, and pynetdicom's path for everything else.

The expected bytes are built with pydicom and pynetdicom's own encoders. The server runs in this process
(``start_dicom(primary=False)``: no indexer process, the test's reads index what is pending); its pynetdicom
C-STORE handler is replaced by one that fails, so a success proves which path took the instance, or the other
way round for the fall-backs.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, UID
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from factories import tiny_ct
from hounsfield import config
from hounsfield.dimse.store_fastpath import request_command_set
from hounsfield.dimse.store_receive import parse_store_request, response_pdu
from hounsfield.pacs import Pacs
from support import free_port

def _command(primitive) -> bytes:
    """The command set pynetdicom encodes for a DIMSE primitive."""
    message = {C_STORE: C_STORE_RQ, C_FIND: C_FIND_RQ, C_ECHO: C_ECHO_RQ}[type(primitive)]()
    message.primitive_to_message(primitive)
    return b"".join(bytes(data[1:]) for pdata in message.encode_msg(1, 0)
                    for _, data in pdata.presentation_data_value_list if data[0] & 1)


def _store_rq(sop_class: str, sop_instance: str, message_id: int = 1, **extra) -> C_STORE:
    rq = C_STORE()
    rq.MessageID = message_id
    rq.AffectedSOPClassUID = sop_class
    rq.AffectedSOPInstanceUID = sop_instance
    rq.Priority = 2
    rq.DataSet = io.BytesIO(b"\x08\x00\x16\x00")
    for k, v in extra.items():
        setattr(rq, k, v)
    return rq


@pytest.mark.parametrize("sop_instance, message_id, extra", [
    ("1.2.826.0.1.3680043.8.498.1", 1, {}),  # odd length: padded with a NUL
    ("1.2.3.4.55", 65535, {}),
    ("2.25.1234567890123456789012345678901234567", 7,
     {"MoveOriginatorApplicationEntityTitle": "MOVER", "MoveOriginatorMessageID": 3}),
])
def test_a_store_request_is_read_from_pynetdicoms_command_set(sop_instance: str, message_id: int, extra) -> None:
    parsed = parse_store_request(memoryview(_command(_store_rq(CTImageStorage, sop_instance, message_id, **extra))))
    assert parsed is not None
    assert (parsed.message_id, parsed.sop_class_uid, parsed.sop_instance_uid) == (message_id, CTImageStorage,
                                                                                   sop_instance)


def test_other_commands_are_not_store_requests() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = Verification
    find = C_FIND()
    find.MessageID = 2
    find.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelFind
    find.Priority = 2
    find.Identifier = io.BytesIO(b"\x08\x00\x52\x00\x06\x00STUDY ")
    store = _command(_store_rq(CTImageStorage, "1.2.3"))
    # pynetdicom refuses to encode these; the packer tested against it in test_store_fastpath does
    too_long = request_command_set(1, CTImageStorage, "1." * 32 + "1", 2)  # 65 characters (PS3.5 9.1: 64)
    not_a_uid = request_command_set(1, CTImageStorage, "1.2.abc", 2)
    for command in (_command(echo), _command(find), store[:-3], store + b"\x00", too_long, not_a_uid):
        assert parse_store_request(memoryview(command)) is None


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC211])
def test_the_response_pdu_is_what_pynetdicom_sends(status: int) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    rsp.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    [pdata] = list(message.encode_msg(5, 16382))
    pdu = P_DATA_TF()
    pdu.from_primitive(pdata)
    request = parse_store_request(memoryview(_command(_store_rq(CTImageStorage, rsp.AffectedSOPInstanceUID, 9))))
    assert response_pdu(5, request, status) == pdu.encode()


# ---- a running DICOM service ---------------------------------------------------------------------------------


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Pacs]:
    p = Pacs(config.load(None, environ={}, data_dir=tmp_path / "data", dicom_host="127.0.0.1",
                         dicom_port=free_port(), http_port=free_port()))
    yield p
    p.close(grace=2)


def _start(pacs: Pacs, *, pynetdicom_handler_fails: bool) -> None:
    if pynetdicom_handler_fails:
        def fail(event: evt.Event) -> int:
            raise AssertionError("pynetdicom's C-STORE path was taken")

        pacs.dicom.handlers.on_store = fail  # type: ignore[method-assign]
    else:
        def fail_below(path: Path, assoc, sop_instance_uid: str) -> int:
            raise AssertionError("the C-STORE path below pynetdicom was taken")

        received = pacs.dicom.handlers.store_received
        pacs.dicom.handlers.on_store = lambda event: received(Path(event.dataset_path), event.assoc,  # type: ignore
                                                              str(event.request.AffectedSOPInstanceUID))
        pacs.dicom.handlers.store_received = fail_below  # type: ignore[method-assign]
    pacs.start_dicom(primary=False)


def _associate(pacs: Pacs, *contexts: str):
    ae = AE(ae_title="TESTSCU")
    for sop in contexts:
        ae.add_requested_context(sop, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", pacs.settings.dicom_port, ae_title=pacs.settings.ae_title)
    assert assoc.is_established
    return assoc


def _large_ct(patient: str) -> Dataset:
    ds = tiny_ct(patient, "1.2.3.50", "1.2.3.51", 1)
    ds.Rows = ds.Columns = 512
    ds.PixelData = np.arange(512 * 512, dtype=np.int16).tobytes()  # 0.5 MB: several PDUs of 256 KB
    return ds


def _expected_file(ds: Dataset) -> bytes:
    """Preamble, pynetdicom's file meta and the dataset as sent (explicit VR little endian)."""
    meta = io.BytesIO()
    write_file_meta_info(meta, create_file_meta(sop_class_uid=UID(ds.SOPClassUID),
                                                sop_instance_uid=UID(ds.SOPInstanceUID),
                                                transfer_syntax=UID(ExplicitVRLittleEndian)))
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + encode(ds, False, True)


def _pending_bytes(pacs: Pacs) -> list[bytes]:
    return [p.read_bytes() for p in pacs.files.pending_files()]


def test_a_received_instance_is_the_file_pynetdicom_would_write(pacs: Pacs) -> None:
    _start(pacs, pynetdicom_handler_fails=True)
    ds = _large_ct("BELOW")
    assoc = _associate(pacs, CTImageStorage)
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    assert _pending_bytes(pacs) == [_expected_file(ds)]
    with pacs.archive.reading():  # indexes it
        pass
    stored = pacs.files.path(f"BELOW/1.2.3.50/1.2.3.51/{ds.SOPInstanceUID}.dcm")
    assert stored.read_bytes() == _expected_file(ds)
    assert list(pacs.files.incoming.iterdir()) == []


def test_other_services_on_the_same_association_go_through_pynetdicom(pacs: Pacs) -> None:
    _start(pacs, pynetdicom_handler_fails=True)
    first, second = tiny_ct("MIXED", "1.2.3.60", "1.2.3.61", 1), tiny_ct("MIXED", "1.2.3.60", "1.2.3.61", 2)
    assoc = _associate(pacs, CTImageStorage, Verification, StudyRootQueryRetrieveInformationModelFind)
    assert assoc.send_c_store(first).Status == 0x0000
    assert assoc.send_c_echo().Status == 0x0000
    assert assoc.send_c_store(second).Status == 0x0000
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = "1.2.3.60"
    query.SOPInstanceUID = ""
    answers = [i.SOPInstanceUID for s, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
               if s.Status == 0xFF00]
    assoc.release()
    assert sorted(answers) == sorted([first.SOPInstanceUID, second.SOPInstanceUID])


# ---- hand-made PDUs ---------------------------------------------------------------------------------------------


def _pdu(*pdvs: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) of (context ID, message control header, fragment) items."""
    items = b"".join(struct.pack(">LBB", len(data) + 2, cid, control) + data for cid, control, data in pdvs)
    return struct.pack(">BBL", 4, 0, len(items)) + items


@contextmanager
def _paused(assoc) -> Iterator[None]:
    """Keep the requestor's reactor off its message queue while the test reads the response (as send_* do)."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        yield
    finally:
        assoc._reactor_checkpoint.set()


def _send_raw(assoc, *pdus: bytes) -> int | None:
    """Send PDUs as they are and return the C-STORE response status (None when the association ended)."""
    with _paused(assoc):
        for pdu in pdus:
            assoc.dul.socket.send(pdu)
        _, rsp = assoc.dimse.get_msg(block=True)
    return None if rsp is None else int(rsp.Status)


def _wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _raw_store(pacs: Pacs, patient: str, n: int, *contexts: str, pynetdicom_handler_fails: bool = True):
    """A running service, an association (CT storage first), and a small CT with its C-STORE-RQ command set."""
    _start(pacs, pynetdicom_handler_fails=pynetdicom_handler_fails)
    ds = tiny_ct(patient, f"1.2.3.{n}", f"1.2.3.{n + 1}", 1)
    assoc = _associate(pacs, *(contexts or (CTImageStorage,)))
    command = _command(_store_rq(CTImageStorage, ds.SOPInstanceUID))
    return ds, assoc, assoc.accepted_contexts[0].context_id, command


def test_tiny_fragments_and_several_per_pdu_are_received_below_pynetdicom(pacs: Pacs) -> None:
    ds, assoc, cid, command = _raw_store(pacs, "FRAG", 70)
    data = encode(ds, False, True)
    pieces = [data[i:i + 100] for i in range(0, len(data), 100)]
    fragments = [(cid, 0x02 if i == len(pieces) - 1 else 0x00, p) for i, p in enumerate(pieces)]
    # The command with the first three fragments in one PDU, then two fragments per PDU.
    pdus = [_pdu((cid, 0x03, command), *fragments[:3])]
    pdus += [_pdu(*fragments[i:i + 2]) for i in range(3, len(fragments), 2)]
    assert _send_raw(assoc, *pdus) == 0x0000
    assoc.release()
    assert _pending_bytes(pacs) == [_expected_file(ds)]


def test_a_command_set_split_over_fragments_goes_through_pynetdicom(pacs: Pacs) -> None:
    ds, assoc, cid, command = _raw_store(pacs, "SPLIT", 80, pynetdicom_handler_fails=False)
    assert _send_raw(assoc, _pdu((cid, 0x01, command[:20])), _pdu((cid, 0x03, command[20:])),
                     _pdu((cid, 0x02, encode(ds, False, True)))) == 0x0000
    assoc.release()
    assert _pending_bytes(pacs) == [_expected_file(ds)]


def test_a_command_fragment_inside_a_dataset_aborts_and_keeps_nothing(pacs: Pacs,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    ds, assoc, cid, command = _raw_store(pacs, "BROKEN", 90)
    data = encode(ds, False, True)
    with caplog.at_level(logging.ERROR, logger="hounsfield.dimse"):
        status = _send_raw(assoc, _pdu((cid, 0x03, command), (cid, 0x00, data[:50])), _pdu((cid, 0x03, command)))
    assert status is None and _wait_until(lambda: assoc.is_aborted)
    assert f"C-STORE of {ds.SOPInstanceUID}" in caplog.text and "broken off by a command fragment" in caplog.text
    assert pacs.files.pending_files() == [] and list(pacs.files.incoming.iterdir()) == []


def test_a_connection_dropped_inside_a_dataset_leaves_no_file(pacs: Pacs) -> None:
    ds, assoc, cid, command = _raw_store(pacs, "DROPPED", 100)
    with _paused(assoc):
        assoc.dul.socket.send(_pdu((cid, 0x03, command), (cid, 0x00, encode(ds, False, True)[:50])))
        assert _wait_until(lambda: len(list(pacs.files.incoming.iterdir())) == 1)  # arriving
        assoc.dul.socket.socket.close()
    assert _wait_until(lambda: list(pacs.files.incoming.iterdir()) == [])
    assert pacs.files.pending_files() == []


def test_a_write_failing_part_way_answers_out_of_resources(pacs: Pacs, caplog: pytest.LogCaptureFixture) -> None:
    _start(pacs, pynetdicom_handler_fails=True)
    handlers = pacs.dicom.handlers
    new_incoming = handlers.new_incoming
    pipes: list[int] = []

    def filling_up() -> tuple[int, Path]:  # a pipe nobody reads: writes fail once 64 KB are in, as a full disk
        fd, path = new_incoming()
        os.close(fd)
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        pipes.append(read_end)
        return write_end, path

    handlers.new_incoming = filling_up  # type: ignore[method-assign]
    ds = _large_ct("FULL")
    assoc = _associate(pacs, CTImageStorage)
    with caplog.at_level(logging.ERROR, logger="hounsfield.dimse"):
        assert assoc.send_c_store(ds).Status == 0xA700
    assoc.release()
    for fd in pipes:
        os.close(fd)
    assert f"C-STORE of {ds.SOPInstanceUID}" in caplog.text and "not stored (0xA700)" in caplog.text
    assert pacs.files.pending_files() == [] and list(pacs.files.incoming.iterdir()) == []


def test_a_pdu_above_the_maximum_length_is_still_received(pacs: Pacs) -> None:
    _start(pacs, pynetdicom_handler_fails=True)
    ds = _large_ct("LONGPDU")
    assoc = _associate(pacs, CTImageStorage)
    cid = assoc.accepted_contexts[0].context_id
    data = encode(ds, False, True)
    assert len(data) > assoc.acceptor.maximum_length  # one PDU of 0.5 MB where the server asked for 256 KB
    command = _command(_store_rq(CTImageStorage, ds.SOPInstanceUID))
    assert _send_raw(assoc, _pdu((cid, 0x03, command)), _pdu((cid, 0x02, data))) == 0x0000
    assoc.release()
    assert _pending_bytes(pacs) == [_expected_file(ds)]


def test_pdvs_after_the_last_fragment_are_ignored(pacs: Pacs) -> None:
    ds, assoc, cid, command = _raw_store(pacs, "TRAILING", 120, CTImageStorage, Verification)
    data = encode(ds, False, True)
    assert _send_raw(assoc, _pdu((cid, 0x03, command), (cid, 0x02, data), (cid, 0x02, b"\x08\x00"))) == 0x0000
    assert assoc.send_c_echo().Status == 0x0000  # no second response came before this one's
    assoc.release()
    assert _pending_bytes(pacs) == [_expected_file(ds)]


def test_an_abort_inside_a_dataset_leaves_no_file(pacs: Pacs) -> None:
    ds, assoc, cid, command = _raw_store(pacs, "ABORTED", 130)
    with _paused(assoc):
        assoc.dul.socket.send(_pdu((cid, 0x03, command), (cid, 0x00, encode(ds, False, True)[:50])))
        assert _wait_until(lambda: len(list(pacs.files.incoming.iterdir())) == 1)
    assoc.abort()
    assert _wait_until(lambda: list(pacs.files.incoming.iterdir()) == [])
    assert pacs.files.pending_files() == []


def test_a_store_request_on_a_non_storage_context_is_left_to_pynetdicom(pacs: Pacs) -> None:
    ds, assoc, cid, command = _raw_store(pacs, "ECHOCX", 140, Verification, pynetdicom_handler_fails=False)
    # pynetdicom picks the service from the request's SOP class and stores it
    assert _send_raw(assoc, _pdu((cid, 0x03, command)), _pdu((cid, 0x02, encode(ds, False, True)))) == 0x0000
    assoc.release()
    assert len(pacs.files.pending_files()) == 1
