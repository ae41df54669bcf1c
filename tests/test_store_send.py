"""C-STORE requests of stored bytes written by the caller's thread, responses handed back by the reader
(dimse/store_send.py): the same statuses pynetdicom's own send_c_store returns, the exact stored bytes on the
wire, and no wait left hanging when the peer goes away."""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from factories import tiny_ct, write
from hounsfield.archive import StoredInstance
from hounsfield.dimse import fastpath, store_send
from hounsfield.dimse import server as _server  # noqa: F401 - pynetdicom configured as hounsfield runs it
from hounsfield.dimse.store_fastpath import LAST_COMMAND_FRAGMENT
from hounsfield.retrieve import dataset_for
from support import free_port


class Peer:
    """An in-process pynetdicom Storage SCP answering each instance with the status its test asks for."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: dict[str, bytes] = {}
        self.answers: dict[str, Dataset | int] = {}
        self.abort_on: set[str] = set()
        self.ae = AE(ae_title="PEER")
        self.ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian])
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self.on_store)])

    def on_store(self, event: evt.Event) -> Dataset | int:
        uid = str(event.request.AffectedSOPInstanceUID)
        data = Path(event.dataset_path).read_bytes()  # the server's setting: datasets received to a file
        self.received[uid] = data[144 + struct.unpack_from("<I", data, 140)[0]:]
        if uid in self.abort_on:
            event.assoc.abort()
            return 0x0000
        return self.answers.get(uid, 0x0000)


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    assert fastpath.install()
    p = Peer()
    yield p
    p.server.shutdown()


def stored(tmp_path: Path, n: int) -> list[StoredInstance]:
    out = []
    for i in range(n):
        ds = tiny_ct("SEND", "1.2.826.0.1.3680043.8.498.7", "1.2.826.0.1.3680043.8.498.7.1", i + 1)
        path = write(ds, tmp_path / f"{i}.dcm")
        out.append(StoredInstance(str(ds.SOPInstanceUID), CTImageStorage, ds.StudyInstanceUID,
                                  ds.SeriesInstanceUID, ExplicitVRLittleEndian, path, path.stat().st_size))
    return out


def dataset_bytes(instance: StoredInstance) -> bytes:
    data = instance.path.read_bytes()
    return data[144 + struct.unpack_from("<I", data, 140)[0]:]


def associate(peer: Peer, **handlers: object):
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", peer.port, ae_title="PEER", evt_handlers=list(handlers.values()) or None)
    assert assoc.is_established
    return assoc


def stock_send(assoc, ds: Dataset, msg_id: int) -> Dataset:
    """pynetdicom's own send_c_store, under the fast path's wrapper."""
    return type(assoc).send_c_store.__wrapped__(assoc, ds, msg_id)


def test_stored_bytes_go_out_as_they_are_and_statuses_come_back_as_pynetdicom_s(peer: Peer, tmp_path: Path) -> None:
    instances = stored(tmp_path, 6)
    warning, failure = instances[1].sop_instance_uid, instances[2].sop_instance_uid
    commented = Dataset()
    commented.Status = 0xA700
    commented.ErrorComment = "disk full"
    peer.answers.update({warning: 0xB000, failure: commented})
    assoc = associate(peer)
    try:
        fast = [store_send.send(assoc, dataset_for(inst, {ExplicitVRLittleEndian}), i + 1, 2, None, None)
                for i, inst in enumerate(instances[:3])]
        stock = [stock_send(assoc, dataset_for(inst, {ExplicitVRLittleEndian}), 10 + i)
                 for i, inst in enumerate(instances[:3])]
        through_wrapper = assoc.send_c_store(dataset_for(instances[3], {ExplicitVRLittleEndian}), msg_id=20)
    finally:
        assoc.release()
    assert all(status is not None for status in fast)  # the fast path took every one of them
    assert [s.Status for s in fast] == [0x0000, 0xB000, 0xA700]
    assert fast[2].ErrorComment == "disk full"
    assert fast == stock
    assert through_wrapper.Status == 0x0000
    for inst in instances[:4]:
        assert peer.received[inst.sop_instance_uid] == dataset_bytes(inst)


def test_a_peer_that_aborts_ends_the_wait_with_an_empty_status(peer: Peer, tmp_path: Path) -> None:
    inst = stored(tmp_path, 1)[0]
    peer.abort_on.add(inst.sop_instance_uid)
    assoc = associate(peer)
    status = store_send.send(assoc, dataset_for(inst, {ExplicitVRLittleEndian}), 1, 2, None, None)
    assert status == Dataset()
    assoc.join(30)  # the association's reactor, which marks it ended, runs after the DUL has seen the abort
    assert not assoc.is_alive() and not assoc.is_established


def test_what_the_fast_path_cannot_take_goes_through_pynetdicom(peer: Peer, tmp_path: Path) -> None:
    inst = stored(tmp_path, 1)[0]
    sent: list[object] = []
    assoc = associate(peer, watch=(evt.EVT_PDU_SENT, lambda event: sent.append(event.pdu)))
    try:
        assert store_send.send(assoc, dataset_for(inst, {ExplicitVRLittleEndian}), 1, 2, None, None) is None
        decoded = Dataset()
        decoded.SOPClassUID, decoded.SOPInstanceUID = inst.sop_class_uid, inst.sop_instance_uid
        assert store_send.send(assoc, decoded, 2, 2, None, None) is None  # not stored bytes
        status = assoc.send_c_store(dataset_for(inst, {ExplicitVRLittleEndian}), msg_id=3)
    finally:
        assoc.release()
    assert status.Status == 0x0000 and sent  # pynetdicom sent it, and its handler saw the PDUs


@pytest.mark.parametrize("status, comment", [(0x0000, None), (0xB000, None), (0xA700, "disk full"),
                                             (0xC000, "cannot understand"), (0x0107, "attribute list error")])
def test_status_datasets_match_what_pynetdicom_makes_of_the_response(status: int, comment: str | None) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 9
    rsp.AffectedSOPClassUID = CTImageStorage
    rsp.AffectedSOPInstanceUID = "1.2.3.4"
    rsp.Status = status
    rsp.ErrorComment = comment
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    (context_id, data), = [pdv for pdata in message.encode_msg(1, 0) for pdv in pdata.presentation_data_value_list]
    assert data[0] == LAST_COMMAND_FRAGMENT
    expected = Dataset()
    expected.Status = status
    if comment is not None:
        expected.ErrorComment = comment
    assert store_send.status_dataset(bytes(data[1:])) == expected


def test_the_reader_hands_over_only_the_awaited_response() -> None:
    from hounsfield.dimse.store_fastpath import command_set
    from hounsfield.dimse.store_receive import awaited_response, command_elements

    answer = command_set(7, CTImageStorage, "1.2.3", 0xB000)
    assert awaited_response(command_elements(answer)) == 7
    assert awaited_response(command_elements(answer[:-3])) is None  # truncated: not a command set
    from hounsfield.dimse.store_fastpath import request_command_set
    assert awaited_response(command_elements(request_command_set(7, CTImageStorage, "1.2.3", 2))) is None


def test_concurrent_senders_on_separate_associations_each_get_their_own_answers(peer: Peer, tmp_path: Path) -> None:
    instances = stored(tmp_path, 8)
    for i, inst in enumerate(instances):
        peer.answers[inst.sop_instance_uid] = 0xB000 if i % 2 else 0x0000
    results: dict[str, int] = {}

    def run(part: list[StoredInstance]) -> None:
        assoc = associate(peer)
        try:
            for i, inst in enumerate(part):
                results[inst.sop_instance_uid] = assoc.send_c_store(dataset_for(inst, None), msg_id=i + 1).Status
        finally:
            assoc.release()

    threads = [threading.Thread(target=run, args=(instances[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {inst.sop_instance_uid: 0xB000 if i % 2 else 0x0000 for i, inst in enumerate(instances)}
