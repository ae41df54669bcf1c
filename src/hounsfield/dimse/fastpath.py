"""hounsfield's fast paths inside pynetdicom, and the contract they keep with it.

Five modules make hounsfield's DICOM service fast by replacing or wrapping pynetdicom internals that are not
its public API:
- ``tuning``: the reactors wait for their socket or queue instead of polling every millisecond, a gap in
  pynetdicom's "pause the reactor" hand-shake that lost C-STORE responses is closed, and an association
  server's contexts are copied cheaply for each association;
- ``store_fastpath``: C-STORE requests and responses, and a retrieval's Pending responses, go out as ready-made
  PDUs, stored bytes as they are, written by the calling thread when the socket is free;
- ``store_send``: a C-STORE request of stored bytes is written by the caller's thread and its response handed
  back to it by the reader, without pausing the reactor or going through pynetdicom's DIMSE queue;
- ``store_receive``: every PDU is read whole, and C-STORE datasets are received to files in the DUL thread;
- ``writer``: one writer at a time per association socket, so that MWL answers can be written from the
  handler's thread (``worklist.dimse.PendingAnswers``) while the DUL thread writes too.

They are written for one pynetdicom release, ``PINNED`` (and ``pyproject.toml`` pins it). ``install`` checks,
once per process, that the installed pynetdicom is that release and that every internal they rely on
(``INTERNALS``, ``MARKERS``) is there as they expect it, then installs all four or none: when anything
differs, stock pynetdicom serves — the same behaviour, slower — and one warning names what differs. The
setting ``dicom_fast_path = false`` runs stock pynetdicom on purpose. The server and hounsfield's client
commands call the same ``install``, so both get the same fixes.

Over TLS (the DICOM TLS port, nodes flagged ``tls``) they read the same way, what OpenSSL has decrypted without
waiting for more (``store_receive``, ``tuning``), and only the DUL thread writes: OpenSSL's connection may not be
used by two threads at once (``writer.encrypted``), so what other threads would write is queued for it, ready-made.

Two of the fast paths use Linux calls where they exist (``os.eventfd`` to wake a DUL thread, TCP_QUICKACK)
and the portable way elsewhere (a socket pair; the kernel's own ACK timing).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from typing import Any

import pynetdicom

log = logging.getLogger("hounsfield.dimse")

PINNED = "3.0.4"

# (module, attribute path) of every pynetdicom internal the fast paths replace, wrap or read.
INTERNALS: tuple[tuple[str, str], ...] = (
    ("pynetdicom.association", "time"),  # tuning: the module global the reactor sleeps through
    ("pynetdicom.dul", "time"),
    ("pynetdicom.association", "Association._reactor_checkpoint"),
    ("pynetdicom.association", "Association._run_reactor"),
    ("pynetdicom.association", "encode"),  # store_fastpath: how the association encodes what it sends
    ("pynetdicom.dul", "DULServiceProvider.send_pdu"),
    ("pynetdicom.dul", "DULServiceProvider._process_recv_primitive"),
    ("pynetdicom.dul", "DULServiceProvider._read_pdu_data"),  # store_receive: the PDU reader
    ("pynetdicom.dul", "DULServiceProvider.run_reactor"),
    ("pynetdicom.dul", "DULServiceProvider._decode_pdu"),
    ("pynetdicom.dul", "DULServiceProvider.artim_timer"),  # store_receive: a PDU's read deadline
    ("pynetdicom.association", "Association.acse_timeout"),
    ("pynetdicom.dimse", "DIMSEServiceProvider.get_msg"),
    ("pynetdicom.dimse", "DIMSEServiceProvider.receive_primitive"),  # store_receive: an undecodable message
    ("pynetdicom.dimse_messages", "DIMSEMessage._data_set_file"),  # store_receive: a broken-off dataset's file
    ("pynetdicom.association", "Association._serve_request"),  # store_receive: the file of a request not taken
    ("pynetdicom.dimse", "DIMSEServiceProvider.send_msg"),
    ("pynetdicom.association", "Association.send_c_store"),  # store_send: wrapped, same signature
    ("pynetdicom.association", "Association._get_valid_context"),  # store_send: the context to send on
    ("pynetdicom.association", "Association.dimse_timeout"),
    ("pynetdicom.dimse", "DIMSEServiceProvider.maximum_pdu_size"),
    ("pynetdicom.dimse_messages", "create_file_meta"),
    ("pynetdicom.dimse_messages", "write_file_meta_info"),
    ("pynetdicom.fsm", "ACTIONS"),
    ("pynetdicom.fsm", "STATES"),
    ("pynetdicom.transport", "AssociationSocket.send"),  # writer: every PDU is written through it
)
# Source text the fast paths depend on, per (module, attribute): how the code they hook into is shaped.
MARKERS: tuple[tuple[str, str, str], ...] = (
    ("pynetdicom.dul", "DULServiceProvider.run_reactor", "time.sleep(self._run_loop_delay)"),
    ("pynetdicom.dul", "DULServiceProvider.run_reactor", "self._process_recv_primitive()"),
    ("pynetdicom.dul", "DULServiceProvider.__init__", "self._recv_pdu"),
    ("pynetdicom.dul", "DULServiceProvider.__init__", "self.event_queue"),
    ("pynetdicom.association", "Association.__init__", "self._reactor_checkpoint"),
    ("pynetdicom.association", "Association._run_reactor", "time.sleep(0.001)"),
    ("pynetdicom.association", "Association.send_c_store", "time.sleep(0.0001)"),  # tuning: the pause poll
    ("pynetdicom.dimse", "DIMSEServiceProvider.__init__", "self.msg_queue"),
    # tuning: the DUL's primitives for the association thread go through this queue (a queue.Queue)
    ("pynetdicom.dul", "DULServiceProvider.__init__",
     'self.to_user_queue: "queue.Queue[_UserQueuePrimitives]" = queue.Queue()'),
    ("pynetdicom.ae", "ApplicationEntity.__init__", "self._servers"),
    ("pynetdicom.transport", "RequestHandler._create_association", "deepcopy(self.server.contexts)"),
    ("pynetdicom.transport", "AssociationServer.__init__", "self.contexts"),
    ("pynetdicom.presentation", "PresentationContext.__init__", "self._transfer_syntax"),
    # writer: the DUL writes each PDU with one AssociationSocket.send, which loops until all of it is written...
    ("pynetdicom.dul", "DULServiceProvider._send", "self.socket.send(pdu.encode())"),
    ("pynetdicom.dul", "DULServiceProvider.run_reactor", "self.socket.send(abort_pdu.encode())"),
    ("pynetdicom.transport", "AssociationSocket.send", "self.socket.send(bytestream[total_sent:])"),
    # ...and a writer beside it looks at what the DUL has queued and at its state
    ("pynetdicom.dul", "DULServiceProvider.__init__", "self.to_provider_queue"),
    ("pynetdicom.dul", "DULServiceProvider.__init__", "self.state_machine"),
    # store_send: the DIMSE provider's message being assembled (a response is taken only between messages)
    ("pynetdicom.dimse", "DIMSEServiceProvider.__init__", "self.message"),
    # store_receive: an undecodable message ends the association as pynetdicom ends one it cannot make a
    # primitive of, and the temporary file of a C-STORE dataset being received is the message's
    ("pynetdicom.dimse", "DIMSEServiceProvider.receive_primitive", 'self.dul.event_queue.put("Evt19")'),
    ("pynetdicom.dimse_messages", "DIMSEMessage.decode_msg", "NamedTemporaryFile(delete=False"),
    ("pynetdicom.dimse_messages", "DIMSEMessage.message_to_primitive", "primitive._dataset_file = self._data_set_file"),
    # store_receive: a local primitive is taken from the front of the queue (dropped in Sta13)
    ("pynetdicom.dul", "DULServiceProvider._process_recv_primitive", "self.to_provider_queue.queue[0]"),
    ("pynetdicom.association", "Association.send_c_store",
     "def send_c_store(\n        self,\n        dataset: str | Path | Dataset,\n        msg_id: int = 1,\n"
     "        priority: int = 2,\n        originator_aet: str | None = None,\n        originator_id: int | None = None,"),
)
FSM_KEYS = ("DT-1", "AR-7")  # the actions that send a queued P-DATA primitive (store_fastpath)
# Association established (tuning, store_receive); awaiting an A-ASSOCIATE-RQ or a release, where the ARTIM
# timer runs (store_receive's read deadline).
FSM_STATES = ("Sta1", "Sta2", "Sta6", "Sta7", "Sta13")

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "active": bool, once decided in this process


def _resolve(module: str, path: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _has_instance_attribute(module: str, path: str) -> bool:
    """Instance attributes are set in ``__init__``: look there when the class has none."""
    owner, _, name = path.rpartition(".")
    try:
        return f"self.{name}" in inspect.getsource(_resolve(module, f"{owner}.__init__"))
    except (AttributeError, OSError, TypeError):
        return False


def mismatches(version: str | None = None) -> list[str]:
    """What differs from what the fast paths were written for (empty: they can be installed)."""
    found = []
    version = pynetdicom.__version__ if version is None else version
    if version != PINNED:
        found.append(f"pynetdicom {version} is installed, the fast paths are written for {PINNED}")
    for module, path in INTERNALS:
        try:
            _resolve(module, path)
        except (ImportError, AttributeError):
            if not _has_instance_attribute(module, path):
                found.append(f"{module}.{path} is missing")
    for module, path, text in MARKERS:
        try:
            source = inspect.getsource(_resolve(module, path))
        except (ImportError, AttributeError, OSError, TypeError):
            found.append(f"{module}.{path} is missing")
            continue
        if text not in source:
            found.append(f"{module}.{path} no longer has {text!r}")
    try:
        from pynetdicom import fsm

        found += [f"pynetdicom.fsm has no action {k}" for k in FSM_KEYS if k not in fsm.ACTIONS]
        found += [f"pynetdicom.fsm has no state {k}" for k in FSM_STATES if k not in fsm.STATES]
    except (ImportError, AttributeError):
        pass  # reported above
    return found


def install(enabled: bool = True) -> bool:
    """Install the fast paths in this process unless ``enabled`` is False or pynetdicom differs from what
    they were written for; whether they are active. Decided once per process (patches cannot be taken back),
    later calls return the first decision."""
    with _lock:
        if "active" in _state:
            return _state["active"]
        if not enabled:
            log.info("DICOM fast paths off (dicom_fast_path = false): stock pynetdicom %s", pynetdicom.__version__)
            _state["active"] = False
            return False
        problems = mismatches()
        if problems:
            log.warning("DICOM fast paths off, stock pynetdicom serves (slower): %s", "; ".join(problems))
            _state["active"] = False
            return False
        from hounsfield.dimse import store_fastpath, store_receive, store_send, tuning, writer

        tuning.wait_instead_of_polling()
        store_fastpath.install()
        store_receive.install()
        store_send.install()
        writer.install()
        _state["active"] = True
        return True


def active() -> bool:
    """Whether this process runs on the fast paths (False before ``install``)."""
    return bool(_state.get("active"))
