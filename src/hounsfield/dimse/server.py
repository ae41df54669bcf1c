"""The DICOM service: one pynetdicom AE with every SCP role hounsfield plays."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any

from pydicom import config as pydicom_config
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid, uid_to_service_class
from pynetdicom.transport import ThreadedAssociationServer

from hounsfield import tls
from hounsfield.config import Settings
from hounsfield.dimse.handlers import Handlers
from hounsfield.worklist.dimse import WorklistHandlers
from hounsfield.dimse import fastpath, store_receive, tuning


log = logging.getLogger("hounsfield.dimse")

# Received datasets go straight to a file as they arrive instead of being held in memory.
_config.STORE_RECV_CHUNKED_DATASET = True
# pynetdicom's standard handlers format every message for its log; the handlers here log what matters.
_config.LOG_HANDLER_LEVEL = "none"
# ...and would format every C-FIND/C-GET identifier (request and each answer) for a debug line nobody reads.
_config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = False
# pydicom checks every value a DIMSE command set or primitive holds against its VR (regular expressions, several
# per message); the server keeps what peers send and has no use for those warnings.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

STORAGE_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
]
QR_CLASSES = (
    PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove,
)


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pynetdicom or pydicom knows, retired and trial ones included (PS3.6 Annex A):
    old modalities still send e.g. Ultrasound Image Storage (Retired), 1.2.840.10008.5.1.4.1.1.6, and an
    archive must keep what it is given. Storage Commitment, the Media Storage Directory and the storage
    management classes are services, not objects, and are left out. The classes pynetdicom does not list are
    registered with its Storage Service Class (``register_uid``, its public API for this) so that a C-STORE on
    them is served like any other."""
    from pydicom._uid_dict import UID_dictionary

    known = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    seen = set(known)
    for uid, (name, kind, _info, _retired, keyword) in sorted(UID_dictionary.items()):
        if kind == "SOP Class" and "Storage" in name and uid not in seen \
                and not any(word in name for word in ("Commitment", "Directory", "Management")):
            if uid_to_service_class(uid) is not StorageServiceClass:
                register_uid(uid, keyword, StorageServiceClass)
            known.append(uid)
            seen.add(uid)
    return known


def build_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = 262144
    ae.maximum_associations = settings.max_associations
    ae.network_timeout = 60
    # How long a peer may take over its A-ASSOCIATE-RQ (the ARTIM timer, PS3.8 9.1.5, and the acceptor's wait
    # for it) and over the rest of any PDU it has begun (``store_receive``): then its slot is freed.
    ae.acse_timeout = settings.dicom_read_timeout
    ae.dimse_timeout = 60
    ae.add_supported_context(Verification)
    for sop_class in storage_sop_classes():
        ae.add_supported_context(sop_class, STORAGE_SYNTAXES, scp_role=True, scu_role=True)
    for sop in QR_CLASSES:
        ae.add_supported_context(sop)
    ae.add_supported_context(ModalityWorklistInformationFind)  # worklist: MWL SCP
    ae.add_supported_context(ModalityPerformedProcedureStep)  # worklist: MPPS SCP
    # As C-GET SCP and C-MOVE SCU, hounsfield proposes storage contexts itself.
    ae.requested_contexts = []
    return ae


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other hounsfield processes may listen on too (SO_REUSEPORT):
    the kernel spreads new associations over them, so parallel associations use more than one core."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class TlsServer(SharedPortServer):
    """The DICOM TLS port (PS3.15 B.9; its context: ``tls.server_context``). pynetdicom wraps each accepted
    connection and completes the TLS handshake in the thread that accepts them all, with no time limit, so that
    one caller that sends nothing (or a plain DICOM client, until it gives up) holds up every other one. Here
    the handshake happens in the connection's own thread, within the ACSE timeout (``dicom_read_timeout``, the
    time an association request may take), and a connection whose handshake fails is closed and logged with
    its address and the reason. Every DICOM process serves the port, as the plain one: TLS costs CPU for every
    byte, so TLS associations need the cores as much."""

    def get_request(self) -> tuple[ssl.SSLSocket, tuple[str, int]]:
        client, address = self.socket.accept()
        return self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False), address

    def process_request_thread(self, request: ssl.SSLSocket, client_address: tuple[str, int]) -> None:
        problem = tls.handshake(request, self.ae.acse_timeout)
        if problem is not None:
            log.warning("TLS connection from %s:%d refused: %s", client_address[0], client_address[1], problem)
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)


def claim_port(host: str, port: int) -> None:
    """Fail (OSError) when something already listens on the port. SO_REUSEPORT would let a second hounsfield
    of the same user share it silently, each taking part of the associations into its own archive."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        probe.bind(address)


class DicomService:
    """Starts the AE in the background; ``stop`` lets in-flight associations finish first. The archive's
    handlers and the worklist's share the AE; C-FIND goes to one or the other by its SOP class."""

    def __init__(self, settings: Settings, handlers: Handlers, worklist: WorklistHandlers) -> None:
        self.settings = settings
        self.ae = build_ae(settings)
        self.handlers = handlers
        self.worklist = worklist
        self.servers: list[ThreadedAssociationServer] = []
        handlers.outgoing = tls.Outgoing(settings)

    def start(self) -> None:
        """Listen on the DICOM port and, when ``dicom_tls_port`` is set, on the DICOM TLS port, with the same
        services; a certificate or key that cannot be used is a ``tls.TlsError`` before either listens."""
        s = self.settings
        context = tls.server_context(s, client_certificates=s.dicom_tls_verify_clients) if s.dicom_tls_port else None
        fast = fastpath.install(s.dicom_fast_path)
        if fast:
            store_receive.enable(self.ae, self.handlers)
        self._listen(s.dicom_port, SharedPortServer, fast)
        if context is not None:
            self._listen(s.dicom_tls_port, TlsServer, fast, ssl_context=context)

    def _listen(self, port: int, kind: type[ThreadedAssociationServer], fast: bool, **options: Any) -> None:
        s = self.settings
        bindings = [*self.handlers.bindings(), *self.worklist.bindings(qr_find=self.handlers.on_find),
                    (evt.EVT_CONN_OPEN, store_receive.bound_socket_reads)]
        server = self.ae.make_server((s.dicom_host, port), evt_handlers=bindings, server_class=kind, **options)
        if fast:
            tuning.cheap_context_copies(server)
        threading.Thread(target=server.serve_forever, name=f"dicom-acceptor-{port}", daemon=True).start()
        self.ae._servers.append(server)  # so that pynetdicom's own bookkeeping (shutdown) knows it
        self.servers.append(server)
        log.info("DICOM service %s listening on %s:%d%s", s.ae_title, s.dicom_host, port,
                 " (TLS)" if kind is TlsServer else "")

    def stop(self, grace: float = 30.0) -> None:
        servers, self.servers = self.servers, []
        if not servers:
            return
        for server in servers:  # stop accepting at once
            threading.Thread(target=server.shutdown, daemon=True).start()

        def active() -> list[Any]:
            return [assoc for server in servers for assoc in server.active_associations]

        deadline = time.monotonic() + grace
        while any(a.is_established for a in active()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in active():  # idle connections and what outlived the grace period
            if assoc.is_established:
                log.warning("aborting association with %s after %.0f s shutdown grace",
                            assoc.requestor.ae_title, grace)
            assoc.abort()
        log.info("DICOM service stopped")
