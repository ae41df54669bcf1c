"""hounsfield as an SCU: echo, store, find, move and get against a remote node, over TLS with a node flagged
``tls`` (``outgoing``: ``tls.Outgoing``, the settings' certificates)."""

from __future__ import annotations

import logging
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from hounsfield.archive import StoredInstance
from hounsfield.config import Peer
from hounsfield.dimse import fastpath, store_receive
from hounsfield.dimse import status as st
from hounsfield.dimse.handlers import accepted_syntaxes, socket_tuning
from hounsfield.dimse.server import STORAGE_SYNTAXES
from hounsfield.errors import NotFound, Rejected
from hounsfield.retrieve import dataset_for, proposed_syntaxes
from hounsfield.tls import Outgoing, handshake_problem

log = logging.getLogger("hounsfield.client")
CONNECT_TIMEOUT = 30.0  # seconds, where pynetdicom's connection timeout is None (its default)

MODELS = {
    "study": (StudyRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelMove,
              StudyRootQueryRetrieveInformationModelGet),
    "patient": (PatientRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelMove,
                PatientRootQueryRetrieveInformationModelGet),
}


@dataclass
class RetrieveSummary:
    status: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    received: list[Path] = field(default_factory=list)


def associate(ae: AE, peer: Peer, outgoing: Outgoing | None, **kwargs) -> Association:
    """An established association with ``peer``, over TLS when it is flagged ``tls`` (``outgoing`` says how);
    otherwise ``Rejected``, saying why when TLS is the reason."""
    fastpath.install()  # the server's fixes for the client too (unless the command turned them off first)
    if peer.tls and outgoing is None:
        raise Rejected(f"{peer.ae_title} at {peer.host}:{peer.port} is reached over TLS, which is not set up here")
    tls_args = outgoing.args(peer) if outgoing is not None else None
    handlers = [*kwargs.pop("evt_handlers", []), *socket_tuning(),
                (evt.EVT_CONN_OPEN, store_receive.bound_socket_reads)]  # pynetdicom's reader too: bounded
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, evt_handlers=handlers, tls_args=tls_args,
                         **kwargs)
    if not assoc.is_established:
        raise Rejected(f"association with {peer.ae_title} at {peer.host}:{peer.port} was not established"
                       f"{_why(assoc, tls_args, peer.port)}")
    return assoc


def _why(assoc: Association, tls_args: tuple[ssl.SSLContext, str] | None, port: int) -> str:
    """What the message of an association that failed adds: that the peer rejected it, or why TLS failed."""
    if assoc.is_rejected:
        return " (rejected by the peer)"
    problem = None if tls_args is None else handshake_problem(tls_args, port,
                                                              assoc.connection_timeout or CONNECT_TIMEOUT)
    return "" if problem is None else f" (TLS: {problem})"


def echo(peer: Peer, calling_ae: str, outgoing: Outgoing | None = None) -> int:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    assoc = associate(ae, peer, outgoing)
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else -1
    finally:
        assoc.release()


def store(peer: Peer, files: Iterable[Path], calling_ae: str,
          progress: Callable[[Path, int | None], None] = lambda _p, _s: None,
          outgoing: Outgoing | None = None) -> dict[Path, int | None]:
    """Send files (the command line's: any Part-10 files); returns each file's C-STORE status (None when it could
    not be sent). Each is sent as ``store_instances`` sends the archive's."""
    files = list(files)
    readable: list[tuple[Path, StoredInstance]] = []
    results: dict[Path, int | None] = {f: None for f in files}
    for f in files:
        try:
            h = dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
            readable.append((f, StoredInstance(str(h.SOPInstanceUID), str(h.SOPClassUID), "", "",
                                               str(h.file_meta.TransferSyntaxUID), f, 0)))
        except Exception:  # noqa: BLE001 - any unreadable file (or one without its identity) is reported, not fatal
            progress(f, None)
    if readable:
        paths = [f for f, _ in readable]
        statuses = store_instances(peer, [i for _, i in readable], calling_ae,
                                   lambda k, status: progress(paths[k], status), outgoing)
        results.update(zip(paths, statuses))
    return results


def store_instances(peer: Peer, instances: Sequence[StoredInstance], calling_ae: str,
                    progress: Callable[[int, int | None], None] = lambda _k, _s: None,
                    outgoing: Outgoing | None = None, syntax: str = "") -> list[int | None]:
    """C-STORE ``instances`` to ``peer`` on one association (over TLS to a node flagged ``tls``); each one's status
    in order (None: not sent), ``progress(index, status)`` after each.

    Each is sent the way a C-MOVE sub-operation is (``retrieve.dataset_for``): its stored bytes as they are when
    the peer accepts the stored transfer syntax, else converted losslessly to an uncompressed one it accepts;
    ``syntax`` (an uncompressed one) asks for that one only. The contexts proposed are those of C-MOVE
    (``retrieve.proposed_syntaxes``): the stored syntax with the uncompressed ones after it, PS3.4 C.4.2.3.1."""
    contexts: dict[tuple[str, tuple[str, ...]], None] = {}
    for inst in instances:
        for syntaxes in ([[syntax]] if syntax else proposed_syntaxes(inst.transfer_syntax_uid)):
            contexts[(inst.sop_class_uid, tuple(syntaxes))] = None
    if not contexts:
        return [None] * len(instances)
    ae = AE(ae_title=calling_ae)
    for sop, syntaxes in list(contexts)[:128]:
        ae.add_requested_context(sop, list(syntaxes))
    results: list[int | None] = []
    assoc = associate(ae, peer, outgoing)
    try:
        accepted = accepted_syntaxes(assoc)
        for k, inst in enumerate(instances):
            status = None
            wanted = accepted.get(inst.sop_class_uid, set())
            try:
                ds = dataset_for(inst, wanted & {syntax} if syntax else wanted, as_bytes=fastpath.active())
                rsp = assoc.send_c_store(ds)
                status = int(rsp.Status) if rsp else None
            except (ValueError, AttributeError, OSError) as exc:
                log.warning("%s not sent: %s", inst.sop_instance_uid, exc)
            results.append(status)
            progress(k, status)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return results + [None] * (len(instances) - len(results))


def find(peer: Peer, identifier: Dataset, calling_ae: str, model: str = "study",
         outgoing: Outgoing | None = None) -> Iterator[Dataset]:
    sop = MODELS[model][0]
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(sop)
    assoc = associate(ae, peer, outgoing)
    try:
        for status, ds in assoc.send_c_find(identifier, sop):
            if status and status.Status in st.PENDING_STATUSES and ds is not None:
                yield ds
            elif status and status.Status != st.SUCCESS:
                raise NotFound(f"C-FIND failed with status {st.describe('C-FIND', status.Status)}")
    finally:
        assoc.release()


def move(peer: Peer, identifier: Dataset, destination: str, calling_ae: str,
         model: str = "study", outgoing: Outgoing | None = None,
         progress: Callable[[Dataset], None] | None = None) -> RetrieveSummary:
    """C-MOVE to ``destination``; ``progress`` sees each response (pending ones count the sub-operations,
    PS3.4 C.4.2.1.4)."""
    sop = MODELS[model][1]
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(sop)
    assoc = associate(ae, peer, outgoing)
    summary = RetrieveSummary()
    try:
        for status, _ in assoc.send_c_move(identifier, destination, sop):
            if status:
                _count(summary, status)
                if progress is not None:
                    progress(status)
    finally:
        assoc.release()
    return summary


def get(peer: Peer, identifier: Dataset, out_dir: Path | None, calling_ae: str,
        model: str = "study", outgoing: Outgoing | None = None,
        progress: Callable[[Dataset], None] | None = None,
        receive: Callable[[evt.Event], int] | None = None) -> RetrieveSummary:
    """C-GET into ``out_dir``; each instance is written as received (its own transfer syntax). With
    ``receive``, each C-STORE sub-operation goes to it instead (its return value is the C-STORE status);
    ``progress`` sees each C-GET response."""
    sop = MODELS[model][2]
    if receive is None:
        assert out_dir is not None, "C-GET needs a folder or a receiver"
        out_dir.mkdir(parents=True, exist_ok=True)
    summary = RetrieveSummary()

    def on_store(event: evt.Event) -> int:
        if receive is not None:
            return receive(event)
        assert out_dir is not None
        path = out_dir / f"{event.request.AffectedSOPInstanceUID}.dcm"
        try:  # received to a temporary file when pynetdicom is in chunked mode (as the server sets it)
            shutil.copyfile(event.dataset_path, path)
        except AttributeError:
            path.write_bytes(event.encoded_dataset())
        summary.received.append(path)
        return st.SUCCESS

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(sop)
    for cx in StoragePresentationContexts[:127]:
        ae.add_requested_context(cx.abstract_syntax, STORAGE_SYNTAXES[:4])
    roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in StoragePresentationContexts[:127]]
    assoc = associate(ae, peer, outgoing, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        for status, _ in assoc.send_c_get(identifier, sop):
            if status:
                _count(summary, status)
                if progress is not None:
                    progress(status)
    finally:
        assoc.release()
    return summary


def _count(summary: RetrieveSummary, status: Dataset) -> None:
    summary.status = int(status.Status)
    if status.Status not in st.PENDING_STATUSES:
        summary.completed = int(status.get("NumberOfCompletedSuboperations", 0) or 0)
        summary.failed = int(status.get("NumberOfFailedSuboperations", 0) or 0)
        summary.warning = int(status.get("NumberOfWarningSuboperations", 0) or 0)
