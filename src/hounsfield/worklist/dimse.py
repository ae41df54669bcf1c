"""Thin DIMSE handlers for the worklist: MWL C-FIND and MPPS N-CREATE / N-SET.

One event → one domain call (``Worklist.find``, ``Mpps.create``, ``Mpps.update``) → one status from the tables
below. Every MWL C-FIND is written to the query log, whatever its outcome (off the answer path: the log writes
in the background), and each C-FIND, N-CREATE and N-SET is an audit event (``audit.actions``: worklist queried,
MPPS received, or access refused), recorded without waiting either.

MWL answers come from ``Worklist.find`` already encoded in the negotiated transfer syntax and go out through
``PendingAnswers``: with the fast paths on, one P-DATA-TF PDU per answer carrying the pending response's command
set (encoded once per request) and the identifier, written as it is read, instead of pynetdicom re-encoding a
dataset and queueing two PDUs per answer for its DUL thread.
"""

from __future__ import annotations

import logging
import struct
import zlib
from functools import lru_cache
from io import BytesIO
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from hounsfield.audit import keys
from hounsfield.audit.actions import ACCESS_REFUSED, FAILURE, MPPS_RECEIVED, REFUSED, SUCCESS, WARNING, WORKLIST_QUERIED
from hounsfield.dimse import fastpath, writer
from hounsfield.dimse import status as st
from hounsfield.errors import Conflict, HounsfieldError, InvalidDataset, InvalidQuery, NotAuthorized, NotFound
from hounsfield.worklist.mpps import DuplicateInstance, MissingAttributes

if TYPE_CHECKING:
    from hounsfield.access import DicomAccess
    from hounsfield.worklist.mpps import Mpps
    from hounsfield.worklist.service import Worklist

log = logging.getLogger("hounsfield.dimse.worklist")
MWL_FIND = str(ModalityWorklistInformationFind)
MPPS = str(ModalityPerformedProcedureStep)

# PS3.4 F.7.2 / PS3.7 C.5: order matters, the first matching class wins.
MPPS_ERROR_STATUS: dict[type[HounsfieldError], int] = {
    NotAuthorized: st.NOT_AUTHORIZED,
    DuplicateInstance: st.DUPLICATE_SOP_INSTANCE,
    NotFound: st.NO_SUCH_OBJECT_INSTANCE,
    Conflict: st.PROCESSING_FAILURE,
    MissingAttributes: st.MISSING_ATTRIBUTE,
    InvalidDataset: st.INVALID_ATTRIBUTE_VALUE,
}


def _requestor(event: evt.Event) -> tuple[str, str]:
    req = event.assoc.requestor
    return str(req.ae_title).strip(), f"{req.address}:{req.port}"


def _mpps_subject(ds: Dataset | None) -> dict[str, str]:
    """The patient of an MPPS (PS3.4 F.7.2.1, Type 2 in N-CREATE) and the study of its first scheduled step."""
    if ds is None:
        return {}
    steps = ds.get("ScheduledStepAttributesSequence") or [Dataset()]
    return {**keys.subject(ds), "study_instance_uid": keys.exact(steps[0], "StudyInstanceUID")}


def _decoded(dataset: Callable[[], Dataset], error: type[HounsfieldError] = InvalidQuery) -> Dataset:
    """The request dataset with every element decoded now, so a malformed one is a domain error here."""
    try:
        ds = dataset()
        for _ in ds.iterall():
            pass
        return ds
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a malformed dataset
        raise error(f"dataset cannot be decoded: {exc}") from exc


def _pending_response(message_id: int, sop_class: str) -> C_FIND:
    response = C_FIND()
    response.MessageIDBeingRespondedTo = message_id
    response.AffectedSOPClassUID = sop_class
    response.Status = st.PENDING
    response.Identifier = BytesIO(b"\0\0")  # a data set follows (CommandDataSetType)
    return response


@lru_cache(maxsize=64)
def _command_set(message_id: int, sop_class: str) -> bytes:
    """The encoded command set of a pending C-FIND response as the last (only) command PDV fragment; it only
    depends on the request's message ID (most requestors start at 1 on every association)."""
    message = C_FIND_RSP()
    message.primitive_to_message(_pending_response(message_id, sop_class))
    return b"\x03" + encode(message.command_set, True, True)


class PendingAnswers:
    """Sends the pending responses of one C-FIND request, their identifiers already encoded (PS3.7 9.1.2.1.6).

    The command set of a pending response is the same for every answer of a request, so it is encoded once;
    each answer is then one P-DATA-TF PDU holding two PDVs, the last command fragment and the identifier (PS3.8
    9.3.5 allows several PDVs in one PDU; a message never shares a PDU with another one).

    The PDU is written to the association's socket from here, the handler's thread, instead of being queued
    for the DUL thread (a primitive, an FSM event and a GIL hand-over per answer). The DUL thread writes to the
    same socket whenever it has to (an A-ABORT, a C-STORE-RSP on another context...), so the check that the
    answer may go out now and its writing are done holding the socket's one write lock (``writer.exclusive``):
    the DUL has nothing queued (pynetdicom queues the final response only after the handler ends, so the order on
    the wire is kept), the association is in Sta6, and the DUL's own PDUs go out before or after this one, never
    inside it. Otherwise the answer is queued like any PDU. An answer too large for the peer's maximum PDU length
    goes through pynetdicom's own fragmenting. Once one answer went through the DUL, the rest follow it there:
    the DUL may still have it to write when the next one is ready, and answers keep their order.

    With the fast paths off (stock pynetdicom) nothing guards the socket: every answer goes through pynetdicom
    (``send_msg``), which leaves the writing to the DUL thread."""

    def __init__(self, event: evt.Event) -> None:
        context = event.context
        syntax = UID(context.transfer_syntax)
        self.encoding = (syntax.is_implicit_VR, syntax.is_little_endian)
        self.deflated = syntax.is_deflated
        self.context_id = context.context_id
        self.assoc = event.assoc
        request = (int(event.request.MessageID), str(event.request.AffectedSOPClassUID))
        self.response = _pending_response(*request)  # for an answer pynetdicom sends
        self.command = _command_set(*request)
        self.max_pdu = self.assoc.dimse.maximum_pdu_size or 0  # the peer's; 0: no limit
        self._command_pdv = struct.pack(">IB", len(self.command) + 1, self.context_id) + self.command  # PS3.8 9.3.5.1
        self._through_pynetdicom = not fastpath.active()
        self._through_dul = False

    def send(self, identifier: bytes) -> None:
        if self.deflated:
            deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
            identifier = deflater.compress(identifier) + deflater.flush()
        if self._through_pynetdicom or self.max_pdu and 12 + len(self.command) + len(identifier) > self.max_pdu:
            self._through_dul = True
            self.response.Identifier = BytesIO(identifier)
            self.assoc.dimse.send_msg(self.response, self.context_id)
            return
        dul = self.assoc.dul
        if not self._through_dul:
            body = self._command_pdv + struct.pack(">IBB", len(identifier) + 2, self.context_id, 0x02) + identifier
            with writer.exclusive(dul) as sock:
                if sock is not None:
                    sock.send(struct.pack(">BBI", 0x04, 0, len(body)) + body)  # PDU type 4, reserved, length
                    return
            self._through_dul = True
        pdata = P_DATA()
        pdata.presentation_data_value_list = [[self.context_id, self.command],
                                              [self.context_id, b"\x02" + identifier]]
        dul.send_pdu(pdata)


class WorklistHandlers:
    """MWL C-FIND and MPPS N-CREATE / N-SET, on the worklist and MPPS services."""

    def __init__(self, worklist: "Worklist", mpps: "Mpps", access: "DicomAccess") -> None:
        self.worklist = worklist
        self.mpps = mpps
        self.access = access
        # issue 14: a site's rewriting of MWL queries and answers (plugins), None when there is none:
        # query_filter(identifier, calling AE, address) → the identifier to match;
        # answer_filter(answer, identifier, calling AE, address) → the answer to send, None to leave it out
        self.query_filter: Callable[[Dataset, str, str], Dataset] | None = None
        self.answer_filter: Callable[[Dataset, Dataset, str, str], Dataset | None] | None = None

    def bindings(self, qr_find: Callable[[evt.Event], Any]) -> list[tuple[Any, Any]]:
        """C-FIND is one event for every model: MWL goes here, anything else to ``qr_find``."""

        def on_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
            if str(event.request.AffectedSOPClassUID) == MWL_FIND:
                return self.on_mwl_find(event)
            return qr_find(event)

        return [(evt.EVT_C_FIND, on_find), (evt.EVT_N_CREATE, self.on_n_create), (evt.EVT_N_SET, self.on_n_set)]

    def on_mwl_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        """Pending answers are sent here as they are read (``PendingAnswers``); pynetdicom sends the final
        status when this generator ends, or the one it yields (cancel, failure)."""
        calling_ae, address = _requestor(event)
        identifier: Dataset | None = None
        count, code, error, refused = 0, st.SUCCESS, "", False
        try:
            self.access.check(calling_ae, "worklist", event.assoc.requestor.address)
            identifier = _decoded(lambda: event.identifier)
            if self.query_filter is not None:
                identifier = self.query_filter(identifier, calling_ae, event.assoc.requestor.address)
            answers = PendingAnswers(event)
            for answer in self.worklist.find(identifier, calling_ae=calling_ae, encoding=answers.encoding):
                if self.answer_filter is not None:
                    answer = self._filtered(answer, identifier, answers.encoding, calling_ae,
                                            event.assoc.requestor.address)
                    if answer is None:
                        continue
                if event.is_cancelled:
                    code = st.CANCEL
                    yield code, None
                    return
                if not event.assoc.is_established:  # aborted or released under us: nobody to answer
                    return
                answers.send(answer)
                count += 1
        except HounsfieldError as exc:
            code, error = st.status_for(exc, st.FIND_ERROR_STATUS, st.FIND_UNABLE_TO_PROCESS), str(exc)
            refused = isinstance(exc, NotAuthorized)
            log.warning("MWL C-FIND from %s at %s refused (0x%04X): %s", calling_ae, address, code, exc)
            yield code, None
        finally:
            self.worklist.queries.record(calling_ae=calling_ae, address=address, identifier=identifier,
                                              answers=count, status=code, error=error)
            log.info("MWL C-FIND from %s at %s: %d answers (0x%04X)", calling_ae, address, count, code)
            self._record_query(event, identifier, count, code, error, refused)

    def _filtered(self, answer: bytes, identifier: Dataset, encoding: tuple[bool, bool], calling_ae: str,
                  address: str) -> bytes | None:
        """An encoded answer through ``answer_filter``: decoded for it, encoded again as negotiated."""
        assert self.answer_filter is not None
        decoded = read_dataset(BytesIO(answer), *encoding)
        rewritten = self.answer_filter(decoded, identifier, calling_ae, address)
        return None if rewritten is None else encode(rewritten, *encoding)

    def _record_query(self, event: evt.Event, identifier: Dataset | None, count: int, code: int, error: str,
                      refused: bool) -> None:
        who = {"ae_title": _requestor(event)[0], "address": event.assoc.requestor.address}
        if refused:
            self.worklist.audit.record(ACCESS_REFUSED, outcome=REFUSED, **who, detail=f"MWL C-FIND refused: {error}")
            return
        outcome = SUCCESS if code == st.SUCCESS else WARNING if code == st.CANCEL else FAILURE
        said = f"MWL C-FIND, answers: {count} (0x{code:04X}){f': {error}' if error else ''}"
        self.worklist.audit.record(WORKLIST_QUERIED, outcome=outcome, **who,
                                   **(keys.subject(identifier) if identifier is not None else {}),
                                   detail=keys.described(said, identifier) if identifier is not None else said)

    def on_n_create(self, event: evt.Event) -> tuple[int, Dataset | None]:
        if str(event.request.AffectedSOPClassUID) != MPPS:
            return st.PROCESSING_FAILURE, None
        calling_ae, _ = _requestor(event)
        try:
            self.access.check(calling_ae, "mpps", event.assoc.requestor.address)
            attrs = _decoded(lambda: event.attribute_list, InvalidDataset)
            created = self.mpps.create(event.request.AffectedSOPInstanceUID, attrs, calling_ae)
        except HounsfieldError as exc:
            return self._refused(event, "N-CREATE", exc), None
        log.info("MPPS %s created by %s: %s, steps %s", created.sop_instance_uid, calling_ae, created.status,
                 created.item_ids)
        self._record_mpps(event, "N-CREATE", created.dataset,
                          f"{created.sop_instance_uid} {created.status}, steps {created.item_ids}")
        reply = Dataset()
        if event.request.AffectedSOPInstanceUID is None:
            reply.AffectedSOPInstanceUID = created.sop_instance_uid
        return st.SUCCESS, reply

    def on_n_set(self, event: evt.Event) -> tuple[int, Dataset | None]:
        calling_ae, _ = _requestor(event)
        try:
            self.access.check(calling_ae, "mpps", event.assoc.requestor.address)
            changes = _decoded(lambda: event.modification_list, InvalidDataset)
            updated = self.mpps.update(str(event.request.RequestedSOPInstanceUID), changes)
        except HounsfieldError as exc:
            return self._refused(event, "N-SET", exc), None
        log.info("MPPS %s set by %s: %s, steps %s", updated.sop_instance_uid, calling_ae, updated.status,
                 updated.item_ids)
        self._record_mpps(event, "N-SET", updated.dataset,
                          f"{updated.sop_instance_uid} {updated.status}, steps {updated.item_ids}")
        return st.SUCCESS, Dataset()

    def _refused(self, event: evt.Event, op: str, exc: HounsfieldError) -> int:
        code = st.status_for(exc, MPPS_ERROR_STATUS, st.PROCESSING_FAILURE)
        log.warning("MPPS %s from %s refused (0x%04X): %s", op, _requestor(event)[0], code, exc)
        action, outcome = (ACCESS_REFUSED, REFUSED) if isinstance(exc, NotAuthorized) else (MPPS_RECEIVED, FAILURE)
        self._record_mpps(event, op, None, f"refused (0x{code:04X}): {exc}", action=action, outcome=outcome)
        return code

    def _record_mpps(self, event: evt.Event, op: str, ds: Dataset | None, what: str, *,
                     action: str = MPPS_RECEIVED, outcome: str = SUCCESS) -> None:
        self.worklist.audit.record(action, outcome=outcome, ae_title=_requestor(event)[0],
                                   address=event.assoc.requestor.address, **_mpps_subject(ds),
                                   detail=f"MPPS {op} {what}")
