"""Thin pynetdicom event handlers: one event → one domain call → one status.

pynetdicom's own ``attempt`` wrapper turns an unexpected exception into a logged failure status; here only
domain errors are caught and mapped through ``dimse.status``.

What they answer is also an audit event (``audit.actions``), recorded without waiting (``audit.trail``): a C-FIND,
each study a C-GET or C-MOVE sends, a refusal. Received instances are counted per association and study and
recorded when the association ends (released, aborted or its connection gone), one event per study: a stream
of C-STOREs costs a counter increment per instance.
"""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from hounsfield import query as q
from hounsfield import tls
from hounsfield.access import address_in
from hounsfield.audit import keys
from hounsfield.audit.actions import (
    ACCESS_REFUSED,
    FAILURE,
    INSTANCES_STORED,
    QUERY_ANSWERED,
    REFUSED,
    RETRIEVE_ANSWERED,
    SUCCESS,
    WARNING,
)
from hounsfield.errors import HounsfieldError, InvalidQuery, NotAuthorized
from hounsfield.dimse import fastpath
from hounsfield.dimse import status as st
from hounsfield.retrieve import dataset_for, proposed_syntaxes

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from hounsfield.access import DicomAccess
    from hounsfield.archive import Archive, StoredInstance
    from hounsfield.config import Peer
    from hounsfield.dicomfile import Header
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


@dataclass
class _Received:
    """The C-STOREs of one association, recorded when it ends (``Handlers.on_association_end``)."""

    ae_title: str
    address: str
    stored: Counter[str] = field(default_factory=Counter)  # Study Instance UID -> instances accepted
    refused: Counter[int] = field(default_factory=Counter)  # status -> instances refused
    reasons: dict[int, HounsfieldError] = field(default_factory=dict)  # status -> the first refusal's reason


@dataclass
class _Retrieval:
    """What one C-GET or C-MOVE did, recorded when its handler ends (``Handlers._record_retrieval``)."""

    op: str
    destination: str = ""
    subject: dict[str, str] = field(default_factory=dict)  # the patient and study the identifier names
    found: Counter[str] = field(default_factory=Counter)  # Study Instance UID -> instances matched
    sent: Counter[str] = field(default_factory=Counter)  # Study Instance UID -> instances handed to sub-operations
    error: HounsfieldError | None = None
    finished: bool = False
    cancelled: bool = False


class Handlers:
    """The archive's DIMSE services (C-STORE, C-FIND, C-GET, C-MOVE) and the association check, on the
    services they use: the archive and the known nodes."""

    def __init__(self, archive: "Archive", peers: "PeerRegistry", access: "DicomAccess", *, ae_title: str,
                 known_aes_only: bool = False, check_called_ae: bool = False,
                 check_peer_address: bool = False) -> None:
        self.archive = archive
        self.peers = peers
        self.access = access
        self.ae_title = ae_title
        self.known_aes_only = known_aes_only
        self.check_called_ae = check_called_ae
        self.check_peer_address = check_peer_address
        self.audit = archive.audit
        self._received: weakref.WeakKeyDictionary[Association, _Received] = weakref.WeakKeyDictionary()
        self._received_lock = threading.Lock()
        self.outgoing: tls.Outgoing | None = None  # the TLS of C-MOVE sub-associations (``DicomService``)
        # issue 14: a site's filter of incoming instances (plugins): admit(header, calling AE, address) raises
        # ``RefusedByPolicy`` to refuse; None: every instance is taken
        self.store_filter: Callable[[Header, str, str], None] | None = None

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
            *((event, self.on_association_end) for event in (evt.EVT_RELEASED, evt.EVT_ABORTED, evt.EVT_CONN_CLOSE)),
        ]

    def on_requested(self, event: evt.Event) -> None:
        # At this point pynetdicom has the A-ASSOCIATE-RQ but has not yet copied its calling AE title.
        calling = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        where = f"{calling} at {event.assoc.requestor.address}:{event.assoc.requestor.port}"
        called = str(event.assoc.requestor.primitive.called_ae_title).strip()
        reason = st.CALLING_AE_NOT_RECOGNIZED
        refusal = self._refusal(event.assoc, calling, where)
        if refusal is None and self.check_called_ae and called != self.ae_title.strip():
            refusal, reason = f"{where}: it called AE title {called!r}, not {self.ae_title.strip()!r}", \
                st.CALLED_AE_NOT_RECOGNIZED
        if refusal:
            log.warning("rejecting association from %s", refusal)
            event.assoc.acse.send_reject(st.REJECTED_PERMANENT, st.REJECT_SOURCE_USER, reason)
            self.audit.record(ACCESS_REFUSED, outcome=REFUSED, ae_title=calling, address=event.assoc.requestor.address,
                              detail=f"association rejected: {refusal}")
            # pynetdicom's association thread shuts the connection down as soon as this handler returns, often
            # before the DUL thread has written the A-ASSOCIATE-RJ: the peer saw the connection dropped (over
            # TLS the rejection even went out unencrypted, the connection's TLS state gone). ``kill`` returns
            # once the DUL is idle: the rejection written and the connection closed by the peer, or the ARTIM
            # timer expired (PS3.8 9.2, Sta13).
            event.assoc.kill()
        else:
            log.info("association requested by %s", where)

    def _refusal(self, assoc: "Association", calling: str, where: str) -> str | None:
        """Who is refused and why, or None: an unknown AE title under ``known_aes_only``, a known node calling
        from an address its host is not under ``check_peer_address``, a TLS client certificate that is not
        the calling node's (``tls.certificate_refusal``)."""
        peer = self.peers.by_ae_title(calling)
        if self.known_aes_only and peer is None:
            return f"unknown AE {where}"
        if self.check_peer_address and peer is not None \
                and not address_in(assoc.requestor.address, [peer.host]):
            return f"{where}: node {peer.name} is configured at {peer.host}"
        refusal = tls.certificate_refusal(assoc.dul.socket.socket, calling, self.peers.owner_of)
        return None if refusal is None else f"{where}: {refusal}"

    def on_echo(self, event: evt.Event) -> int:
        try:
            self.access.check(_calling_ae(event.assoc), "echo", event.assoc.requestor.address)
        except HounsfieldError as exc:
            log.warning("C-ECHO from %s refused (0x%04X): %s", peer_label(event), st.NOT_AUTHORIZED, exc)
            self._refused(event.assoc, "C-ECHO", exc)
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
        received = self._received.get(assoc) or self._receiving(assoc)
        try:
            self.access.check(_calling_ae(assoc), "store", assoc.requestor.address)
            admit = None
            if self.store_filter is not None:
                check, ae, address = self.store_filter, _calling_ae(assoc), assoc.requestor.address
                admit = lambda header: check(header, ae, address)  # noqa: E731
            header = self.archive.accept_file(path, assoc.requestor.ae_title, admit=admit)
        except HounsfieldError as exc:
            code = getattr(exc, "dicom_status", None) or st.status_for(exc, st.STORE_ERROR_STATUS,
                                                                       st.STORE_CANNOT_UNDERSTAND)
            log.warning("C-STORE of %s from %s refused (0x%04X): %s", sop_instance_uid, association_peer(assoc),
                        code, exc)
            received.refused[code] += 1
            received.reasons.setdefault(code, exc)
            return code
        received.stored[header.text("StudyInstanceUID")] += 1
        log.debug("C-STORE %s from %s accepted", header.sop_instance_uid, association_peer(assoc))
        return st.SUCCESS

    def _receiving(self, assoc: "Association") -> _Received:
        with self._received_lock:
            return self._received.setdefault(assoc, _Received(_calling_ae(assoc), assoc.requestor.address))

    def on_association_end(self, event: evt.Event) -> None:
        """The audit events of what the association stored: one per study, and one per kind of refusal. Bound to
        each way an association ends; the first one records, the others find nothing left."""
        with self._received_lock:
            received = self._received.pop(event.assoc, None)
        if received is None:
            return
        who = {"ae_title": received.ae_title, "address": received.address}
        for study, count in received.stored.items():
            self.audit.record(INSTANCES_STORED, **who, study_instance_uid=study,
                              detail=f"C-STORE: instances received: {count}")
        for code, count in received.refused.items():
            reason = received.reasons[code]
            action, outcome = (ACCESS_REFUSED, REFUSED) if isinstance(reason, NotAuthorized) else \
                (INSTANCES_STORED, FAILURE)
            self.audit.record(action, outcome=outcome, **who,
                              detail=f"C-STORE: {count} instances refused (0x{code:04X}), the first: {reason}")

    def _refused(self, assoc: "Association", op: str, exc: HounsfieldError) -> None:
        """The audit event of a request refused before anything was done."""
        action, outcome = (ACCESS_REFUSED, REFUSED) if isinstance(exc, NotAuthorized) else \
            (QUERY_ANSWERED if op == "C-FIND" else RETRIEVE_ANSWERED, FAILURE)
        self.audit.record(action, outcome=outcome, ae_title=_calling_ae(assoc), address=assoc.requestor.address,
                          detail=f"{op} refused: {exc}")

    def _query(self, event: evt.Event, service: str) -> tuple[Dataset, q.Query]:
        self.access.check(_calling_ae(event.assoc), service, event.assoc.requestor.address)
        identifier = _identifier(event)
        return identifier, q.Query(identifier, model=_model(event))

    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        try:
            identifier, query = self._query(event, "find")
        except HounsfieldError as exc:
            log.warning("C-FIND from %s refused: %s", peer_label(event), exc)
            self._refused(event.assoc, "C-FIND", exc)
            yield st.status_for(exc, st.FIND_ERROR_STATUS, st.FIND_UNABLE_TO_PROCESS), None
            return
        count, outcome = 0, FAILURE  # until the answers are all out
        try:
            with self.archive.reading() as s:
                for match in q.run(s, query, tags=query.answer_tags, retrieve_ae=self.ae_title):
                    if event.is_cancelled:
                        log.info("C-FIND from %s cancelled after %d answers", peer_label(event), count)
                        outcome = WARNING
                        yield st.CANCEL, None
                        return
                    count += 1
                    yield st.PENDING, match.dataset(identifier)
            outcome = SUCCESS
            log.info("C-FIND %s level from %s: %d answers", query.level, peer_label(event), count)
        finally:
            ended = {SUCCESS: "", WARNING: ", cancelled", FAILURE: ", not completed"}[outcome]
            self.audit.record(QUERY_ANSWERED, outcome=outcome, ae_title=_calling_ae(event.assoc),
                              address=event.assoc.requestor.address, **keys.subject(identifier),
                              detail=keys.described(f"C-FIND {query.level} level ({_model(event).title()} Root), "
                                                    f"answers: {count}{ended}", identifier))

    def _retrieve_set(self, event: evt.Event, retrieval: _Retrieval) -> "list[StoredInstance] | int":
        """The instances to send, or the failure status to answer with."""
        op = retrieval.op
        try:
            identifier, query = self._query(event, op[2:].lower())
            retrieval.subject = keys.subject(identifier)
            found = self.archive.retrieve(query)
        except HounsfieldError as exc:
            log.warning("%s from %s refused: %s", op, peer_label(event), exc)
            retrieval.error = exc
            return st.status_for(exc, st.FIND_ERROR_STATUS, st.RETRIEVE_UNABLE_TO_PROCESS)
        retrieval.found.update(inst.study_instance_uid for inst in found)
        return found

    def on_get(self, event: evt.Event) -> Iterator[Any]:
        retrieval = _Retrieval("C-GET")
        try:
            yield from self._get(event, retrieval)
        finally:  # also when pynetdicom stops asking (the association gone): the generator is closed
            self._record_retrieval(event, retrieval)

    def _get(self, event: evt.Event, retrieval: _Retrieval) -> Iterator[Any]:
        found = self._retrieve_set(event, retrieval)
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
                retrieval.cancelled = True
                yield st.CANCEL, None
                return
            retrieval.sent[inst.study_instance_uid] += 1
            yield st.PENDING, dataset_for(inst, accepted.get(inst.sop_class_uid, set()), as_bytes=fastpath.active())
        retrieval.finished = True

    def on_move(self, event: evt.Event) -> Iterator[Any]:
        retrieval = _Retrieval("C-MOVE")
        try:
            yield from self._move(event, retrieval)
        finally:
            self._record_retrieval(event, retrieval)

    def _move(self, event: evt.Event, retrieval: _Retrieval) -> Iterator[Any]:
        destination = event.move_destination
        destination = destination.decode(errors="replace") if isinstance(destination, bytes) else destination
        retrieval.destination = str(destination).strip()
        peer = self.peers.by_ae_title(retrieval.destination)
        if peer is None:
            log.warning("C-MOVE from %s to unknown destination AE %r", peer_label(event), destination)
            retrieval.error = HounsfieldError("move destination unknown (0xA801)")
            yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
            return
        found = self._retrieve_set(event, retrieval)
        if isinstance(found, int):
            yield peer.host, peer.port, self._destination(peer, [build_context(Verification)])
            yield from _refused(found)
            return
        contexts: dict[tuple[str, tuple[str, ...]], None] = {}
        for inst in found:
            for syntaxes in proposed_syntaxes(inst.transfer_syntax_uid):
                contexts[(inst.sop_class_uid, tuple(syntaxes))] = None
        built = [build_context(sop, list(ts)) for sop, ts in list(contexts)[:128]]
        yield peer.host, peer.port, self._destination(peer, built)
        log.info("C-MOVE from %s to %s: %d instances", peer_label(event), peer.ae_title, len(found))
        yield len(found)
        accepted: dict[str, set[str]] | None = None
        for inst in found:
            if event.is_cancelled:
                retrieval.cancelled = True
                yield st.CANCEL, None
                return
            if accepted is None:
                accepted = _accepted_by_destination(event, peer.host, peer.port)
            retrieval.sent[inst.study_instance_uid] += 1
            yield st.PENDING, dataset_for(inst, accepted.get(inst.sop_class_uid, set()), as_bytes=fastpath.active())
        retrieval.finished = True

    def _record_retrieval(self, event: evt.Event, r: _Retrieval) -> None:
        """One audit event per study a C-GET / C-MOVE matched (one for the identifier's study when none), or the
        refusal. How each sub-operation ended is pynetdicom's to count (its final response says it); here
        ``sent`` counts the instances handed to it, and the outcome says whether all were."""
        to = f" to {r.destination}" if r.destination else ""
        if r.error is not None:
            self._refused(event.assoc, f"{r.op}{to}", r.error)
            return
        outcome, state = (SUCCESS, "completed") if r.finished else (WARNING, "cancelled") if r.cancelled else \
            (FAILURE, "stopped before the end (association ended, or the destination unreachable)")
        who = {"ae_title": _calling_ae(event.assoc), "address": event.assoc.requestor.address,
               "patient_id": r.subject.get("patient_id", ""), "patient_name": r.subject.get("patient_name", "")}
        for study, count in (r.found or {r.subject.get("study_instance_uid", ""): 0}).items():
            self.audit.record(RETRIEVE_ANSWERED, outcome=outcome, **who, study_instance_uid=study,
                              detail=f"{r.op}{to}: instances sent: {r.sent[study]} of {count}, {state}")

    def _destination(self, peer: "Peer", contexts: list[Any]) -> dict[str, Any]:
        """How pynetdicom is to associate with a C-MOVE destination (``AE.associate``'s keywords): over TLS
        for a node flagged ``tls``, with the settings ``outgoing`` holds (the DICOM service sets it)."""
        options = {"contexts": contexts, "ae_title": peer.ae_title, "evt_handlers": socket_tuning()}
        if peer.tls:
            if self.outgoing is None:
                raise tls.TlsError(f"C-MOVE destination {peer.ae_title} is reached over TLS, not set up here")
            options["tls_args"] = self.outgoing.args(peer)
        return options


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
    for assoc in event.assoc.ae.active_associations:
        if assoc.is_requestor and assoc.is_established and assoc.acceptor.address == host \
                and assoc.acceptor.port == port:
            return accepted_syntaxes(assoc)
    return {}


def accepted_syntaxes(assoc: "Association") -> dict[str, set[str]]:
    """SOP Class UID → the transfer syntaxes the peer accepted for it on ``assoc`` (``retrieve.dataset_for``
    picks among them)."""
    out: dict[str, set[str]] = {}
    for cx in assoc.accepted_contexts:
        out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return out

