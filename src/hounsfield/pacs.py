"""The composition root: builds the index, the file store, the archive and the services from Settings."""

from __future__ import annotations

import logging
import socket
import tempfile
from functools import cached_property
from multiprocessing.process import BaseProcess
from typing import Any

from hounsfield.access import DicomAccess, parse_services
from hounsfield.archive import Archive
from hounsfield.audit import syslog
from hounsfield.audit.trail import AuditTrail
from hounsfield.auth.users import Users
from hounsfield.config import Settings
from hounsfield.db import Database
from hounsfield.hl7.log import MessageLog
from hounsfield.hl7.service import Hl7Service
from hounsfield import processes
from hounsfield.peers import PeerRegistry
from hounsfield.storage import FileStore
from hounsfield.worklist import Mpps, Worklist, options_from

log = logging.getLogger("hounsfield")
INDEXER_LAG_LIMIT = 120.0  # seconds an acknowledged instance may wait for the indexer before health says so


class Pacs:
    """Everything one data directory + database holds; CLI commands and ``serve`` both build one."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.index_url)
        if migrate:
            self.db.migrate()
        self.files = FileStore(settings.data_dir / "files", fsync=settings.fsync)
        # issue 12: the audit trail, forwarded to a syslog collector when audit_syslog names one
        self.audit_forwarder = syslog.forwarder(settings.audit_syslog, ae_title=settings.ae_title,
                                                ca=settings.tls_ca, cert=settings.tls_cert, key=settings.tls_key)
        self.audit = AuditTrail(self.db, forward=self.audit_forwarder.send if self.audit_forwarder else None)
        self.archive = Archive(self.db, self.files, duplicate_policy=settings.duplicate_policy,
                               uid_policy=settings.uid_policy, max_depth=settings.max_sequence_depth,
                               audit=self.audit)
        self.peers = PeerRegistry(self.db, settings.peers)
        self._children: list[BaseProcess] = []
        self.worklist = Worklist(self.db, options_from(settings), query_log_size=settings.worklist_query_log_size,
                                 audit=self.audit)
        self.mpps = Mpps(self.db, self.worklist)
        self.users = Users(self.db)
        # issue 14: HL7 v2 orders and patient updates into the worklist, and their message log
        self.hl7 = Hl7Service(self.worklist, MessageLog(self.db, settings.hl7_log_size), receiver=settings.ae_title,
                              max_bytes=settings.hl7_max_message_bytes, audit=self.audit)
        self._hl7_listener = None

    @cached_property
    def dicom(self):  # noqa: ANN201 - imported lazily: CLI commands that only read need no network stack
        from hounsfield.dimse.handlers import Handlers
        from hounsfield.dimse.server import DicomService
        from hounsfield.worklist.dimse import WorklistHandlers

        access = DicomAccess(self.peers, parse_services(self.settings.unknown_ae_services, "unknown_ae_services"),
                             trust_loopback=self.settings.trust_loopback_aes)
        handlers = Handlers(self.archive, self.peers, access, ae_title=self.settings.ae_title,
                            known_aes_only=self.settings.known_aes_only,
                            check_called_ae=self.settings.check_called_ae,
                            check_peer_address=self.settings.check_peer_address)
        return DicomService(self.settings, handlers, WorklistHandlers(self.worklist, self.mpps, access))

    def start_dicom(self, *, primary: bool = True) -> None:
        """Start the DICOM service; the primary process also cleans up after a crash and starts the other
        DICOM processes and the indexer."""
        if primary:  # the port first: a second server on the same data must not clean up the first one's files
            from hounsfield.dimse.server import claim_port

            for port in (self.settings.dicom_port, self.settings.dicom_tls_port):
                if port:  # (dicom_tls_port 0: no TLS port)
                    claim_port(self.settings.dicom_host, port)
            removed = self.files.clean_incoming()
            if removed:
                log.warning("removed %d partial incoming files left by an earlier crash", removed)
        # pynetdicom writes incoming datasets with tempfile; keep them on the store's file system.
        tempfile.tempdir = str(self.files.incoming)
        self.dicom.start()
        if primary:
            self._children = processes.start(self.settings, Pacs)

    def start_hl7(self, sock: socket.socket) -> None:
        """Serve HL7 v2 over MLLP on ``sock`` (bound by ``serve``, the HL7 port: ``hl7.mllp.listening_socket``),
        over TLS when ``hl7_tls``, in threads of this process."""
        from hounsfield.hl7 import mllp
        from hounsfield.tls import server_context

        context = server_context(self.settings) if self.settings.hl7_tls else None
        self._hl7_listener = mllp.Listener(
            sock, lambda frame, address: self.hl7.receive(frame.data, address=address, complete=frame.complete).ack,
            max_bytes=self.settings.hl7_max_message_bytes, read_timeout=self.settings.hl7_read_timeout,
            context=context, senders=self._hl7_sender_check())
        self._hl7_listener.start()

    def _hl7_sender_check(self) -> Any:
        """Who may send HL7 (``hl7_senders``; empty: loopback only): orders create and cancel worklist items
        and merge patients, so an HL7 port open to anyone would be a way around every permission."""
        from hounsfield.access import address_in, is_loopback_address
        from hounsfield.config import split_list

        senders = split_list(self.settings.hl7_senders)
        return (lambda address: address_in(address, senders)) if senders else is_loopback_address

    def health(self) -> dict[str, Any]:
        """What ``/health`` reports beside the index answering: the indexer's state and backlog, and the
        quarantine. ``problems`` is empty when all is well."""
        waiting, oldest = self.archive.backlog()
        running = processes.indexer_running(self._children)
        quarantined = len(self.archive.quarantined())
        problems = []
        if running is False:
            problems.append("the indexer process has stopped: received instances are not indexed")
        if oldest > INDEXER_LAG_LIMIT:
            problems.append(f"the indexer lags: {waiting} received instances wait, the oldest for {oldest:.0f} s")
        pid = self._children[-1].pid if self._children else None
        return {"indexer": {"running": running, "pid": pid, "pending": waiting,
                            "oldest_pending_seconds": round(oldest, 1)},
                "quarantined": quarantined, "problems": problems}

    def close(self, *, grace: float = 30.0) -> None:
        if self._hl7_listener is not None:
            self._hl7_listener.close(grace)  # the messages being applied finish and are acknowledged
        if "dicom" in self.__dict__:
            self.dicom.stop(grace)
        processes.stop(self._children)
        self.audit.close()  # what was recorded until now is written (and handed to the forwarder)
        if self.audit_forwarder is not None:
            self.audit_forwarder.close()
        self.db.dispose()
