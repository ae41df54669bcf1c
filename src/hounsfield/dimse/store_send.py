"""C-STORE requests of stored bytes written by the caller's thread, their responses handed straight back to it.

A retrieval's sub-operations (C-GET on the requestor's own association, PS3.4 C.4.3.3; C-MOVE on one to the
destination, C.4.2.3) and hounsfield's own sends wait for each C-STORE-RSP before the next request (one
operation at a time: PS3.7 D.3.3.3, asynchronous operations are not negotiated). Through pynetdicom each one
costs, besides the data: the association's reactor paused and waited for in 0.1 ms sleeps, the request queued to
the DUL thread and that thread woken to write it, and the response decoded into primitives there, queued to the
DIMSE provider and the caller woken again — four thread hand-overs under one GIL, ~2 ms of a 3 ms sub-operation
on this 2-core machine, measured with py-spy.

``send`` does the same exchange with one hand-over:
- the request's PDUs (``store_fastpath.p_data_pdus``: the command set packed with ``struct``, the stored dataset
  bytes as they are, fragments of the peer's maximum PDU length) are written by the calling thread, whole and
  in order, under the socket's one write lock (``writer.exclusive``: only when the DUL has nothing queued and
  the association is established);
- the response is awaited on a ``Waiter`` registered with the association's reader (``store_receive``'s
  ``Receiver``) under its Message ID Being Responded To; the reader hands over the command set of a P-DATA-TF
  PDU that is a whole C-STORE-RSP to an awaited Message ID and pynetdicom never sees it, so that the reactor
  need not be paused (it never finds the response in the DIMSE queue);
- the status comes back as pynetdicom's ``send_c_store`` returns it (a Dataset with Status and the optional
  status elements of PS3.7 9.1.1.1.6-9.1.1.1.9: ``_check_received_status``); no response within the DIMSE
  timeout aborts the association, as there, and so does a response that is not one; the association ending
  while waiting gives an empty Dataset, as there.

Anything else goes through pynetdicom's own ``send_c_store`` unchanged: a dataset that is not stored bytes in the
context's own encoding (``retrieve.StoredDataset``), no accepted context, a handler watching sent or received
PDUs or DIMSE messages, an association that is not established or whose DUL has something queued, a peer
maximum PDU length below 7, a TLS association (only its DUL thread may write: ``writer.encrypted``; the request
then still goes out as ready-made PDUs, ``store_fastpath``, queued for the DUL).
"""

from __future__ import annotations

import logging
import struct
import time
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pynetdicom import evt

from hounsfield.dimse import writer
from hounsfield.dimse.store_fastpath import p_data_pdus, request_command_set
from hounsfield.dimse.store_receive import command_elements, receiver_of

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from hounsfield.dimse.store_receive import Receiver, Waiter

log = logging.getLogger("hounsfield.dimse")

# Command elements of a plain C-STORE-RSP (PS3.7 Table 9.3-2 without the optional status elements): a response
# with only these gives a status Dataset of its Status alone, without decoding the command set with pydicom.
PLAIN_RESPONSE_ELEMENTS = frozenset((0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x1000))
STATUS_OPTIONAL = ("OffendingElement", "ErrorComment")  # pynetdicom's C_STORE.STATUS_OPTIONAL_KEYWORDS
_WATCHERS = ("EVT_PDU_SENT", "EVT_PDU_RECV", "EVT_DIMSE_SENT", "EVT_DIMSE_RECV", "EVT_DATA_SENT")
_WAIT_STEP = 0.5  # seconds between looks at whether the association still stands while a response is awaited


def status_dataset(command: bytes) -> Dataset:
    """What pynetdicom's ``send_c_store`` returns for the C-STORE-RSP ``command``: its Status and any optional
    status elements."""
    values = command_elements(command) or {}
    status = Dataset()
    if values.keys() <= PLAIN_RESPONSE_ELEMENTS:
        status.Status = struct.unpack("<H", values[0x0900])[0]
        return status
    decoded = read_dataset(BytesIO(command), True, True)
    status.Status = decoded.Status
    for keyword in STATUS_OPTIONAL:
        if keyword in decoded:
            setattr(status, keyword, decoded[keyword].value)
    return status


def _context_id(assoc: "Association", sop_class: str, syntax: str) -> int | None:
    try:
        context = assoc._get_valid_context(sop_class, syntax, "scu", allow_conversion=False)
    except ValueError:
        return None
    return context.context_id


def send(assoc: "Association", dataset: Any, msg_id: int, priority: int, originator_aet: str | None,
         originator_id: int | None) -> Dataset | None:
    """Send ``dataset`` (a ``retrieve.StoredDataset``) as a C-STORE request and return the response's status
    Dataset, as ``Association.send_c_store`` does; None when this path cannot take it (nothing has been sent,
    the caller goes through pynetdicom)."""
    from hounsfield.retrieve import StoredDataset

    if not isinstance(dataset, StoredDataset) or not assoc.is_established or writer.encrypted(assoc.dul) \
            or any(assoc.get_handlers(getattr(evt, name)) for name in _WATCHERS):
        return None
    syntax = dataset.file_meta.TransferSyntaxUID
    context_id = _context_id(assoc, dataset.SOPClassUID, syntax)
    max_pdu = assoc.dimse.maximum_pdu_size or 0
    receiver = receiver_of(assoc.dul)
    if context_id is None or 0 < max_pdu < 7 or receiver is None:
        return None
    command = request_command_set(msg_id, dataset.SOPClassUID, dataset.SOPInstanceUID, priority, originator_aet,
                                  originator_id)
    pdus = p_data_pdus(context_id, command, dataset.stored_view(), max_pdu)
    waiter = receiver.await_response(msg_id)
    if waiter is None:
        return None  # a response to that Message ID is awaited already: pynetdicom's to sort out
    with writer.exclusive(assoc.dul) as sock:
        if sock is not None:
            sock.send(pdus)
    if sock is None:
        receiver.forget(msg_id)
        return None
    return _response(assoc, receiver, msg_id, waiter)


def _response(assoc: "Association", receiver: "Receiver", msg_id: int, waiter: "Waiter") -> Dataset:
    timeout = assoc.dimse_timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not waiter.wait(_WAIT_STEP if deadline is None else max(0.0, min(_WAIT_STEP,
                                                                               deadline - time.monotonic()))):
            if not assoc.is_established:
                return Dataset()  # aborted or closed meanwhile: pynetdicom's reactor logs it
            if deadline is not None and time.monotonic() >= deadline:
                log.error("DIMSE timeout reached while waiting for the C-STORE response")
                assoc.abort()
                return Dataset()
    finally:
        receiver.forget(msg_id)
    if waiter.command is None:
        return Dataset()
    try:
        return status_dataset(waiter.command)
    except Exception as exc:  # noqa: BLE001 - an undecodable response: as pynetdicom, abort
        log.error("Received an invalid C-STORE response from the peer: %s", exc)
        assoc.abort()
        return Dataset()


def _sending_stored(send_c_store: Any) -> Any:
    def send_c_store_fast(self: Any, dataset: Any, msg_id: int = 1, priority: int = 2,
                          originator_aet: str | None = None, originator_id: int | None = None) -> Dataset:
        status = send(self, dataset, msg_id, priority, originator_aet, originator_id)
        if status is None:
            return send_c_store(self, dataset, msg_id, priority, originator_aet, originator_id)
        return status

    send_c_store_fast.__wrapped__ = send_c_store  # type: ignore[attr-defined]
    return send_c_store_fast


def install() -> None:
    """Apply once per process, before associations start (idempotent)."""
    from pynetdicom.association import Association

    if hasattr(Association.send_c_store, "__wrapped__"):
        return
    Association.send_c_store = _sending_stored(Association.send_c_store)  # type: ignore[method-assign]
