"""One writer per association socket: every PDU goes out whole, and the PDUs of two threads never interleave.

The peer's DICOM upper layer reads the TCP stream as one PDU after another, each a 6-byte header (type, reserved,
length) and exactly that many bytes (PS3.8 9.3.1); bytes of another PDU inside one are a broken stream, which
the peer aborts or misreads. Two threads write to an association's socket:
- the DUL thread (PS3.8 9.1: the state machine's actions) writes every PDU pynetdicom sends, through
  ``AssociationSocket.send`` (``DULServiceProvider._send``, and the A-ABORT of the DUL's own exception path),
  and so do hounsfield's fast paths there (``store_receive``'s C-STORE-RSP, ``store_fastpath``'s ready-made
  PDUs);
- the handler's thread writes pending MWL C-FIND answers (``worklist.dimse.PendingAnswers``) while the DUL may
  write at any moment: an A-ABORT, a C-STORE-RSP to a request the peer sent meanwhile on another context...
``AssociationSocket.send`` loops over ``socket.send``, which may return having written part of the PDU, and a
write waiting for room in the socket buffer lets another thread's write in (the kernel holds the socket only
while it copies): the other thread's bytes can go in between.

Over TLS only the DUL thread writes: OpenSSL's connection object may not be used by two threads at once (a write
beside the DUL's read in progress can break the record layer), so ``exclusive`` hands no socket to another
thread and what it would have written is queued for the DUL, as with stock pynetdicom.

So every ``AssociationSocket`` gets one lock, held for the whole of each ``send`` call (``install`` wraps it once
per process, with the other fast paths): each call writes whole PDUs, one after another. A thread other than the
DUL writes only inside ``exclusive``, which holds the same lock while it checks that a PDU may be written now,
and while the caller writes it. A DUL thread waiting for the lock waits for one PDU, as it would for the socket
buffer to drain; reads do not take it.

The DUL's state machine moves to its next state only once the action that wrote a PDU has returned (an A-ABORT
is written in Sta6, the state becomes Sta13 after): the state alone cannot say, under the lock, that nothing but
P-DATA-TF may follow. The lock's holder therefore records when a PDU after which this end sends no P-DATA-TF
(A-RELEASE-RQ, A-RELEASE-RP, A-ABORT: PS3.8 9.2, Sta7 and Sta13) has been written.
"""

from __future__ import annotations

import ssl
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pynetdicom.transport import AssociationSocket

if TYPE_CHECKING:
    from pynetdicom.dul import DULServiceProvider

ENDING_PDUS = frozenset((0x05, 0x06, 0x07))  # A-RELEASE-RQ, A-RELEASE-RP, A-ABORT (PS3.8 9.3.6-9.3.8)
_GUARD = "_hounsfield_writer"  # the AssociationSocket instance attribute holding its Guard


class Guard:
    """What one ``AssociationSocket``'s writers share: the lock (re-entrant: ``exclusive``'s holder writes with
    ``send``, and a handler of pynetdicom's ``EVT_DATA_SENT``, triggered within ``send``, may write too), and
    whether a PDU that ends the sending of P-DATA-TF has been written."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ended = False


def guard(sock: AssociationSocket) -> Guard:
    """The ``Guard`` of ``sock`` (an ``AssociationSocket``), made on first use: ``dict.setdefault`` is atomic,
    so two threads writing first at once get the same one."""
    found = sock.__dict__.get(_GUARD)
    return found if found is not None else sock.__dict__.setdefault(_GUARD, Guard())


def _one_writer(send: Callable[[AssociationSocket, Any], None]) -> Callable[[AssociationSocket, Any], None]:
    def send_whole(self: AssociationSocket, bytestream: bytes | memoryview) -> None:
        held = guard(self)
        with held.lock:
            send(self, bytestream)
            # Every caller writes whole PDUs from the start of the buffer: the first byte is a PDU type.
            if len(bytestream) and bytestream[0] in ENDING_PDUS:
                held.ended = True

    send_whole.__wrapped__ = send  # type: ignore[attr-defined]
    return send_whole


def _installed() -> bool:
    return hasattr(AssociationSocket.send, "__wrapped__")


def encrypted(dul: "DULServiceProvider") -> bool:
    """Whether the DUL's connection is TLS: then no thread but the DUL's may write to it (module docstring)."""
    return isinstance(getattr(dul.socket, "socket", None), ssl.SSLSocket)


@contextmanager
def exclusive(dul: "DULServiceProvider") -> Iterator[AssociationSocket | None]:
    """The DUL's ``AssociationSocket``, for this thread alone until the ``with`` block ends, when a P-DATA-TF PDU
    may be written to it from outside the DUL thread now; None when it must be queued for the DUL instead
    (``send_pdu``): the sockets are not guarded (``install`` not applied: stock pynetdicom), the connection is
    gone or TLS (``encrypted``), the DUL has something queued (it goes first), the association is not established
    (Sta6), or a PDU that ends P-DATA-TF from this end has been written."""
    sock = dul.socket
    if sock is None or not _installed() or encrypted(dul):
        yield None
        return
    held = guard(sock)
    with held.lock:
        may_write = not held.ended and dul.to_provider_queue.empty() and dul.state_machine.current_state == "Sta6"
        yield sock if may_write else None


def install() -> None:
    """Apply once per process, before associations start (idempotent)."""
    if _installed():
        return
    AssociationSocket.send = _one_writer(AssociationSocket.send)  # type: ignore[method-assign]
