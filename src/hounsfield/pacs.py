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
from hounsfield.jobs import Jobs
from hounsfield import processes
from hounsfield.peers import PeerRegistry
from hounsfield.routing.store import Backoff, DeliveryQueue, RuleBook
from hounsfield.storage import FileStore
from hounsfield.worklist import Mpps, Worklist, options_from

log = logging.getLogger("hounsfield")
INDEXER_LAG_LIMIT = 120.0  # seconds an acknowledged instance may wait for the indexer before health says so


class Pacs:
    """Everything one data directory + database holds; CLI commands and ``serve`` both build one."""

    def __init__(self, settings: Settings, *, migrate: bool = True) -> None:
        self.settings = settings
        self._closed = False
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
        self.jobs = Jobs()  # issue 14: the background transfers (send, retrieve) of this process
        # issue 14: HL7 v2 orders and patient updates into the worklist, and their message log
        self.hl7 = Hl7Service(self.worklist, MessageLog(self.db, settings.hl7_log_size), receiver=settings.ae_title,
                              max_bytes=settings.hl7_max_message_bytes, audit=self.audit)
        self._hl7_listener = None
        # issue 14: routing rules (the TOML's and REST's) and their persistent delivery queue; the plugins
        # (``load_plugins``, by serve and its DICOM processes) and what runs events (``start_events``)
        self.routing_rules = RuleBook(self.db, settings.routing,
                                      known_peer=lambda name: any(p.name == name for p in self.peers.all()))
        self.deliveries = DeliveryQueue(self.db, Backoff(settings.routing_retry_seconds,
                                                         settings.routing_retry_max_seconds,
                                                         settings.routing_max_attempts))
        self.plugins: Any = None  # plugins.host.Plugins once loaded
        self._pollers: list[Any] = []
        self._routing: Any = None

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

    @cached_property
    def remote(self):  # noqa: ANN201 - imported lazily, as ``dicom``: the network stack only when used
        """Issue 14: echo, query and retrieve from the configured peers (``remote.RemoteNodes``)."""
        from hounsfield.remote import RemoteNodes

        return RemoteNodes(self.peers, self.archive, self.jobs, self.settings)

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
        if self.plugins is None:  # issue 14: a DICOM process takes the plugins' filters (serve loaded its own)
            self.load_plugins()
        self.dicom.start()
        if primary:
            self._children = processes.start(self.settings, Pacs)

    def load_plugins(self, loaded: list[Any] | None = None) -> None:
        """Issue 14: take the plugins (``loaded`` by serve, which checked them first; else the files of the
        ``plugins`` setting), give the DICOM handlers their filters and the services' listeners their events.
        A ``plugins.api.PluginError`` names a file that cannot be loaded."""
        from hounsfield.plugins.api import Context
        from hounsfield.plugins.host import Plugins
        from hounsfield.plugins.loader import load_all, paths_of

        if loaded is None:
            loaded = load_all(paths_of(self.settings.plugins))
        self.plugins = plugins = Plugins(loaded, lambda name: Context(
            name, settings=self.settings, archive=self.archive, worklist=self.worklist, mpps=self.mpps,
            peers=self.peers))
        if not plugins:
            return
        if plugins.has("filter_incoming_store"):
            self.dicom.handlers.store_filter = plugins.admit
        if plugins.has("filter_worklist_query"):
            self.dicom.worklist.query_filter = plugins.rewrite_query
        if plugins.has("filter_worklist_answer"):
            self.dicom.worklist.answer_filter = plugins.rewrite_answer
        if plugins.has("on_worklist_changed"):
            self.worklist.listeners.add(plugins.emitter("on_worklist_changed"))
        if plugins.has("on_mpps"):
            self.mpps.listeners.add(plugins.emitter("on_mpps"))
        if plugins.has("on_hl7_message"):
            self.hl7.listeners.add(plugins.emitter("on_hl7_message", self.hl7.messages.get))
        log.info("plugins loaded: %s", ", ".join(f"{p.name} ({p.path})" for p in loaded))

    def start_events(self) -> None:
        """Issue 14, in serve's main process once everything listens: routing (from the index into the delivery
        queue, and from there to the nodes), the plugins' index events, then their ``on_started``."""
        from hounsfield.dimse.client import store_instances
        from hounsfield.feed import IndexFeed, Poller
        from hounsfield.routing.worker import POLL, Routing
        from hounsfield.tls import Outgoing

        outgoing = Outgoing(self.settings)
        self._routing = Routing(self.archive, self.peers, self.routing_rules, self.deliveries,
                                ae_title=self.settings.ae_title, stable_seconds=self.settings.study_stable_seconds,
                                sender=lambda peer, instances, ae, syntax: store_instances(
                                    peer, instances, ae, outgoing=outgoing, syntax=syntax))
        self._routing.start()
        plugins = self.plugins
        if plugins is None:
            return
        if plugins.has("on_instance_stored") or plugins.has("on_study_stable"):
            feed = IndexFeed(self.db, after=IndexFeed.last_id(self.db),
                             stable_seconds=self.settings.study_stable_seconds)

            def tell() -> None:
                stored, stable = feed.poll()
                for event in stored:
                    plugins.emit("on_instance_stored", event)
                for study in stable:
                    plugins.emit("on_study_stable", study)

            self._pollers.append(Poller("plugin-feed", tell, POLL).start())
        plugins.emit("on_started")

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
        """Stop what runs and write what is held; a second call does nothing (``serve`` closes its archive
        itself, and the command that opened it closes it again when it ends)."""
        if self._closed:
            return
        self._closed = True
        if self._hl7_listener is not None:
            self._hl7_listener.close(grace)  # the messages being applied finish and are acknowledged
        if "dicom" in self.__dict__:
            self.dicom.stop(grace)
        processes.stop(self._children)
        for poller in self._pollers:  # issue 14: the plugins' feed, routing, the plugins' workers
            poller.stop()
        if self._routing is not None:
            self._routing.stop()
        if self.plugins is not None:
            self.plugins.close()
        self.audit.close()  # what was recorded until now is written (and handed to the forwarder)
        if self.audit_forwarder is not None:
            self.audit_forwarder.close()
        self.db.dispose()
