"""Thin pynetdicom event handlers: one event → one domain call → one status.

pynetdicom's own ``attempt`` wrapper turns an unexpected exception into a logged failure status; here only
domain errors are caught and mapped through ``dimse.status``.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from hounsfield import query as q
from hounsfield.errors import HounsfieldError, InvalidQuery
from hounsfield.dimse import fastpath
from hounsfield.dimse import status as st
from hounsfield.retrieve import dataset_for, proposed_syntaxes

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from hounsfield.access import DicomAccess
    from hounsfield.archive import Archive, StoredInstance
    from hounsfield.peers import PeerRegistry

log = logging.getLogger("hounsfield.dimse")
PATIENT_ROOT_PREFIX = "1.2.840.10008.5.1.4.1.2.1."


def set_nodelay(event: evt.Event) -> None:
    """Small DIMSE answers must not wait for delayed ACKs (Nagle): set TCP_NODELAY on every socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # closed, or not a TCP socket
            pass


def socket_tuning() -> list[tuple[Any, Any]]:
    """The handlers for every association hounsfield opens or accepts: answers go out at once (TCP_NODELAY).
    What arrives is acknowledged at once by ``store_receive``'s reader (TCP_QUICKACK)."""
    return [(evt.EVT_CONN_OPEN, set_nodelay)]


def peer_label(event: evt.Event) -> str:
    return association_peer(event.assoc)


def association_peer(assoc: "Association") -> str:
    req = assoc.requestor
    return f"{req.ae_title} at {req.address}:{req.port}"


def _calling_ae(assoc: "Association") -> str:
    return str(assoc.requestor.ae_title).strip()


def _identifier(event: evt.Event) -> Dataset:
    try:
        return event.identifier
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a malformed identifier
        raise InvalidQuery(f"identifier cannot be decoded: {exc}") from exc


def _model(event: evt.Event) -> str:
    sop = str(event.request.AffectedSOPClassUID)
    return "PATIENT" if sop.startswith(PATIENT_ROOT_PREFIX) else "STUDY"


class Handlers:
    """The archive's DIMSE services (C-STORE, C-FIND, C-GET, C-MOVE) and the association check, on the
    services they use: the archive and the known nodes."""

    def __init__(self, archive: "Archive", peers: "PeerRegistry", access: "DicomAccess", *, ae_title: str,
                 known_aes_only: bool = False) -> None:
        self.archive = archive
        self.peers = peers
        self.access = access
        self.ae_title = ae_title
        self.known_aes_only = known_aes_only

    def bindings(self) -> list[tuple[Any, Any]]:
        """The event handlers to bind; C-FIND (``on_find``) is bound by whoever routes C-FIND between the
        Query/Retrieve and the worklist models (``dimse.server.DicomService``)."""
        return [
            *socket_tuning(),
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_C_MOVE, self.on_move),
        ]

    def on_requested(self, event: evt.Event) -> None:
        # At this point pynetdicom has the A-ASSOCIATE-RQ but has not yet copied its calling AE title.
        calling = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        where = f"{calling} at {event.assoc.requestor.address}:{event.assoc.requestor.port}"
        if self.known_aes_only and self.peers.by_ae_title(calling) is None:
            log.warning("rejecting association from unknown AE %s", where)
            event.assoc.acse.send_reject(st.REJECTED_PERMANENT, st.REJECT_SOURCE_USER, st.CALLING_AE_NOT_RECOGNIZED)
        else:
            log.info("association requested by %s", where)

    def on_echo(self, event: evt.Event) -> int:
        try:
            self.access.check(_calling_ae(event.assoc), "echo", event.assoc.requestor.address)
        except HounsfieldError as exc:
            log.warning("C-ECHO from %s refused (0x%04X): %s", peer_label(event), st.NOT_AUTHORIZED, exc)
            return st.NOT_AUTHORIZED
        return st.SUCCESS

    def on_store(self, event: evt.Event) -> int:
        return self.store_received(Path(event.dataset_path), event.assoc, str(event.request.AffectedSOPInstanceUID))

    # ---- dimse.store_receive.ReceivedStore: C-STOREs received below pynetdicom, and ``on_store`` ----
    def new_incoming(self) -> tuple[int, Path]:
        return self.archive.files.new_incoming()

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        self.archive.files.start_writeback(fd, offset, length)

    def store_received(self, path: Path, assoc: "Association", sop_instance_uid: str) -> int:
        try:
            self.access.check(_calling_ae(assoc), "store", assoc.requestor.address)
            header = self.archive.accept_file(path, assoc.requestor.ae_title)
        except HounsfieldError as exc:
            code = st.status_for(exc, st.STORE_ERROR_STATUS, st.STORE_CANNOT_UNDERSTAND)
            log.warning("C-STORE of %s from %s refused (0x%04X): %s", sop_instance_uid, association_peer(assoc),
                        code, exc)
            return code
        log.debug("C-STORE %s from %s accepted", header.sop_instance_uid, association_peer(assoc))
        return st.SUCCESS

    def _query(self, event: evt.Event, service: str) -> tuple[Dataset, q.Query]:
        self.access.check(_calling_ae(event.assoc), service, event.assoc.requestor.address)
        identifier = _identifier(event)
        return identifier, q.Query(identifier, model=_model(event))

    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        try:
            identifier, query = self._query(event, "find")
        except HounsfieldError as exc:
            log.warning("C-FIND from %s refused: %s", peer_label(event), exc)
            yield st.status_for(exc, st.FIND_ERROR_STATUS, st.FIND_UNABLE_TO_PROCESS), None
            return
        count = 0
        with self.archive.reading() as s:
            for match in q.run(s, query, tags=query.answer_tags, retrieve_ae=self.ae_title):
                if event.is_cancelled:
                    log.info("C-FIND from %s cancelled after %d answers", peer_label(event), count)
                    yield st.CANCEL, None
                    return
                count += 1
                yield st.PENDING, match.dataset(identifier)
        log.info("C-FIND %s level from %s: %d answers", query.level, peer_label(event), count)

    def _retrieve_set(self, event: evt.Event, op: str) -> "list[StoredInstance] | int":
        """The instances to send, or the failure status to answer with."""
        try:
            _, query = self._query(event, op[2:].lower())
            return self.archive.retrieve(query)
        except HounsfieldError as exc:
            log.warning("%s from %s refused: %s", op, peer_label(event), exc)
            return st.status_for(exc, st.FIND_ERROR_STATUS, st.RETRIEVE_UNABLE_TO_PROCESS)

    def on_get(self, event: evt.Event) -> Iterator[Any]:
        found = self._retrieve_set(event, "C-GET")
        if isinstance(found, int):
            yield from _refused(found)
            return
        accepted: dict[str, set[str]] = {}
        for cx in event.assoc.accepted_contexts:
            if cx.as_scu:  # the storage contexts on which hounsfield sends (the requestor took the SCP role)
                accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
        log.info("C-GET from %s: %d instances", peer_label(event), len(found))
        yield len(found)
        for inst in found:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            yield st.PENDING, dataset_for(inst, accepted.get(inst.sop_class_uid, set()), as_bytes=fastpath.active())

    def on_move(self, event: evt.Event) -> Iterator[Any]:
        destination = event.move_destination
        destination = destination.decode(errors="replace") if isinstance(destination, bytes) else destination
        peer = self.peers.by_ae_title(str(destination).strip())
        if peer is None:
            log.warning("C-MOVE from %s to unknown destination AE %r", peer_label(event), destination)
            yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
            return
        found = self._retrieve_set(event, "C-MOVE")
        if isinstance(found, int):
            yield peer.host, peer.port, {"contexts": [build_context(Verification)], "ae_title": peer.ae_title,
                                         "evt_handlers": socket_tuning()}
            yield from _refused(found)
            return
        contexts: dict[tuple[str, tuple[str, ...]], None] = {}
        for inst in found:
            for syntaxes in proposed_syntaxes(inst.transfer_syntax_uid):
                contexts[(inst.sop_class_uid, tuple(syntaxes))] = None
        built = [build_context(sop, list(ts)) for sop, ts in list(contexts)[:128]]
        yield peer.host, peer.port, {"contexts": built, "ae_title": peer.ae_title,
                                     "evt_handlers": socket_tuning()}
        log.info("C-MOVE from %s to %s: %d instances", peer_label(event), peer.ae_title, len(found))
        yield len(found)
        accepted: dict[str, set[str]] | None = None
        for inst in found:
            if event.is_cancelled:
                yield st.CANCEL, None
                return
            if accepted is None:
                accepted = _accepted_by_destination(event, peer.host, peer.port)
            yield st.PENDING, dataset_for(inst, accepted.get(inst.sop_class_uid, set()), as_bytes=fastpath.active())


def _refused(status: int) -> Iterator[Any]:
    """What a C-GET / C-MOVE handler yields after the destination to answer with a failure ``status``.
    pynetdicom answers a count of 0 with Success at once and never asks for the status; with a count of one it
    takes the failure status that follows as the final response (its Number of Failed Sub-operations then says 1:
    pynetdicom counts the remaining one as failed). For a C-MOVE pynetdicom opens the association to the
    destination before it asks for that status: a refused C-MOVE to a destination that cannot be reached is
    answered 0xA801 instead."""
    yield 1
    yield status, None


def _accepted_by_destination(event: evt.Event, host: str, port: int) -> dict[str, set[str]]:
    """What the C-MOVE destination accepted: pynetdicom opens that association itself and does not hand it
    over, so find it among the AE's open requestor associations."""
    out: dict[str, set[str]] = {}
    for assoc in event.assoc.ae.active_associations:
        if assoc.is_requestor and assoc.is_established and assoc.acceptor.address == host \
                and assoc.acceptor.port == port:
            for cx in assoc.accepted_contexts:
                out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
            break
    return out

