"""Thin DIMSE handlers for the worklist: MWL C-FIND and MPPS N-CREATE / N-SET.

One event → one domain call (``Worklist.find``, ``Mpps.create``, ``Mpps.update``) → one status from the tables
below. Every MWL C-FIND is written to the query log, whatever its outcome.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from hounsfield.dimse import status as st
from hounsfield.errors import Conflict, HounsfieldError, InvalidDataset, InvalidQuery, NotFound
from hounsfield.worklist.mpps import DuplicateInstance

if TYPE_CHECKING:
    from hounsfield.pacs import Pacs

log = logging.getLogger("hounsfield.dimse.worklist")
MWL_FIND = str(ModalityWorklistInformationFind)
MPPS = str(ModalityPerformedProcedureStep)

# PS3.4 F.7.2 / PS3.7 C.5: order matters, the first matching class wins.
MPPS_ERROR_STATUS: dict[type[HounsfieldError], int] = {
    DuplicateInstance: st.DUPLICATE_SOP_INSTANCE,
    NotFound: st.NO_SUCH_OBJECT_INSTANCE,
    Conflict: st.PROCESSING_FAILURE,
    InvalidDataset: st.INVALID_ATTRIBUTE_VALUE,
}


def _requestor(event: evt.Event) -> tuple[str, str]:
    req = event.assoc.requestor
    return str(req.ae_title).strip(), f"{req.address}:{req.port}"


def _decoded(dataset: Callable[[], Dataset], error: type[HounsfieldError] = InvalidQuery) -> Dataset:
    """The request dataset with every element decoded now, so a malformed one is a domain error here."""
    try:
        ds = dataset()
        for _ in ds.iterall():
            pass
        return ds
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a malformed dataset
        raise error(f"dataset cannot be decoded: {exc}") from exc


def _encoding(event: evt.Event) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the transfer syntax the answers go out in."""
    syntax = UID(event.context.transfer_syntax)
    return syntax.is_implicit_VR, syntax.is_little_endian


class WorklistHandlers:
    def __init__(self, pacs: "Pacs") -> None:
        self.pacs = pacs

    def bindings(self, qr_find: Callable[[evt.Event], Any]) -> list[tuple[Any, Any]]:
        """C-FIND is one event for every model: MWL goes here, anything else to ``qr_find``."""

        def on_find(event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
            if str(event.request.AffectedSOPClassUID) == MWL_FIND:
                return self.on_mwl_find(event)
            return qr_find(event)

        return [(evt.EVT_C_FIND, on_find), (evt.EVT_N_CREATE, self.on_n_create), (evt.EVT_N_SET, self.on_n_set)]

    def on_mwl_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        calling_ae, address = _requestor(event)
        identifier: Dataset | None = None
        count, code, error = 0, st.SUCCESS, ""
        try:
            identifier = _decoded(lambda: event.identifier)
            for answer in self.pacs.worklist.find(identifier, calling_ae=calling_ae, encoding=_encoding(event)):
                if event.is_cancelled:
                    code = st.CANCEL
                    yield code, None
                    return
                count += 1
                yield st.PENDING, answer
        except HounsfieldError as exc:
            code, error = st.status_for(exc, st.FIND_ERROR_STATUS, st.FIND_UNABLE_TO_PROCESS), str(exc)
            log.warning("MWL C-FIND from %s at %s refused (0x%04X): %s", calling_ae, address, code, exc)
            yield code, None
        finally:
            self.pacs.worklist.queries.record(calling_ae=calling_ae, address=address, identifier=identifier,
                                              answers=count, status=code, error=error)
            log.info("MWL C-FIND from %s at %s: %d answers (0x%04X)", calling_ae, address, count, code)

    def on_n_create(self, event: evt.Event) -> tuple[int, Dataset | None]:
        if str(event.request.AffectedSOPClassUID) != MPPS:
            return st.PROCESSING_FAILURE, None
        calling_ae, _ = _requestor(event)
        try:
            attrs = _decoded(lambda: event.attribute_list, InvalidDataset)
            created = self.pacs.mpps.create(event.request.AffectedSOPInstanceUID, attrs, calling_ae)
        except HounsfieldError as exc:
            return self._refused("N-CREATE", calling_ae, exc), None
        log.info("MPPS %s created by %s: %s, steps %s", created.sop_instance_uid, calling_ae, created.status,
                 created.item_ids)
        reply = Dataset()
        if event.request.AffectedSOPInstanceUID is None:
            reply.AffectedSOPInstanceUID = created.sop_instance_uid
        return st.SUCCESS, reply

    def on_n_set(self, event: evt.Event) -> tuple[int, Dataset | None]:
        calling_ae, _ = _requestor(event)
        try:
            changes = _decoded(lambda: event.modification_list, InvalidDataset)
            updated = self.pacs.mpps.update(str(event.request.RequestedSOPInstanceUID), changes)
        except HounsfieldError as exc:
            return self._refused("N-SET", calling_ae, exc), None
        log.info("MPPS %s set by %s: %s, steps %s", updated.sop_instance_uid, calling_ae, updated.status,
                 updated.item_ids)
        return st.SUCCESS, Dataset()

    @staticmethod
    def _refused(op: str, calling_ae: str, exc: HounsfieldError) -> int:
        code = st.status_for(exc, MPPS_ERROR_STATUS, st.PROCESSING_FAILURE)
        log.warning("MPPS %s from %s refused (0x%04X): %s", op, calling_ae, code, exc)
        return code
