"""pynetdicom's reactor loops poll; here they wait for the thing they poll for instead.

Each association runs two threads that loop "check, and sleep 1 ms when there was nothing to do": the DUL
thread (socket in, primitives out) and the association thread (decoded DIMSE messages). The sleeps put a
millisecond or two of queueing on every C-STORE request and response (a large share of a 0.5 MB CT instance's
few milliseconds), and shortening them makes every idle association burn CPU and wake against the GIL.

pynetdicom has no setting for this. Its ``association`` and ``dul`` modules call ``time.sleep`` through their
own ``time`` name, so they are given a ``time`` whose ``sleep`` blocks on the right thing, up to ``MAX_WAIT``:
- the DUL thread in ``select`` on its socket and on a wake-up (an eventfd; a socket pair where there is none)
  that ``send_pdu`` signals, so incoming data and outgoing primitives wake it at once (over TLS, not at all
  while OpenSSL holds decrypted bytes, which ``select`` does not see);
- the association thread on its DIMSE message queue, which the DUL fills when a message is complete. A
  ``send_*`` call that wants the reactor paused (it clears the checkpoint, then polls every 0.1 ms until the
  reactor says it has paused) wakes the waiting association threads with its first poll; a requestor's reactor
  used to poll every 0.1 ms for that (10,000 wake-ups a second against the GIL for every open C-MOVE
  destination association).
  The DUL's primitives for the association thread (a peer's release request, an abort) wake it too.
Everything else pynetdicom checks once per loop (timers, local flags) is still seen within ``MAX_WAIT``.

The DUL loop also sends every queued primitive before it looks at its socket again, so while a long C-FIND,
C-GET or C-MOVE answer is queued, a C-CANCEL (or an abort) from the peer waits until the whole answer is out.
While the association is established, incoming data is read first when the socket has some.

And pynetdicom's "pause the reactor" hand-shake has a gap: a ``send_*`` call clears the reactor's checkpoint
and goes on as soon as it sees ``_is_paused``, which the reactor sets just before it waits and clears just
after, before it takes the next message off the queue. A reactor in that gap can take the response the
``send_*`` call is waiting for, which then times out and aborts the association (seen with hounsfield's own
C-STORE requests: REST "send to node", C-MOVE sub-operations). A message the reactor takes while a ``send_*``
call has the checkpoint cleared is put back for that call.
"""

from __future__ import annotations

import os
import queue
import select
import socket
import ssl
import threading
import time
import types
import weakref
from typing import Any

MAX_WAIT = 0.005  # seconds: the longest a reactor waits before looking at its timers and flags again
LOOP_DELAY = 0.001  # pynetdicom's reactor loop delay (seconds)


class _Wake:
    """A DUL thread's wake-up: an eventfd on Linux, a socket pair elsewhere (both can be ``select``ed)."""

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._pair: tuple[socket.socket, socket.socket] | None = None
        else:
            self._pair = socket.socketpair()
            for end in self._pair:
                end.setblocking(False)
            self.fd = self._pair[0].fileno()

    def signal(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_write(self.fd, 1)
            else:
                self._pair[1].send(b"\0")
        except (BlockingIOError, OSError):  # already signalled (the pair's buffer full), or closed
            pass

    def clear(self) -> None:
        try:
            if self._pair is None:
                os.eventfd_read(self.fd)
            else:
                self._pair[0].recv(4096)
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        if self._pair is None:
            os.close(self.fd)
        else:
            for end in self._pair:
                end.close()


def _wake(dul: Any) -> _Wake:
    """The DUL's wake-up, made on first use and closed when the DUL is garbage-collected."""
    wake = dul.__dict__.get("_hounsfield_wake")
    if wake is None:
        wake = dul._hounsfield_wake = _Wake()
        weakref.finalize(dul, wake.close)
    return wake


def _wait_dul(dul: Any) -> None:
    wake = _wake(dul)
    sock = getattr(dul.socket, "socket", None)
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return  # decrypted bytes OpenSSL holds already: select would not see them
    watched = [wake.fd] if sock is None or sock.fileno() < 0 else [wake.fd, sock]
    try:
        ready, _, _ = select.select(watched, [], [], MAX_WAIT)
    except (OSError, ValueError):  # the socket closed under us: pynetdicom notices on its next check
        return
    if wake.fd in ready:
        wake.clear()


PAUSE_POLL = 0.0001  # how often pynetdicom's send_* calls look whether the reactor has paused (seconds)
_reactors = weakref.WeakSet()  # association threads that wait in ``_wait_association``
_reactors_lock = threading.Lock()


class _UserQueue(queue.Queue):
    """The DUL's ``to_user_queue`` (the A-RELEASE, A-ABORT and A-P-ABORT primitives for the association
    thread), whose ``put`` also wakes that thread where it waits for DIMSE messages (``_wait_association``):
    it looks for these primitives once per loop, so without the wake-up it saw a peer's release request only
    when ``MAX_WAIT`` ran out (5 ms per release, measured from a raw-socket C-GET client: 5 ms against
    hounsfield, 1 ms against Orthanc). The queue object stays the one pynetdicom made (its class is changed,
    ``_wake_on_user_primitives``), so nothing put in it meanwhile is lost."""

    _hounsfield_assoc: Any

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        assoc = self._hounsfield_assoc()
        messages = getattr(getattr(assoc, "dimse", None), "msg_queue", None)
        if messages is not None:
            with messages.not_empty:
                messages.not_empty.notify_all()


def _wake_on_user_primitives(assoc: Any) -> None:
    user_queue = getattr(getattr(assoc, "dul", None), "to_user_queue", None)
    if type(user_queue) is queue.Queue:
        user_queue._hounsfield_assoc = weakref.ref(assoc)
        user_queue.__class__ = _UserQueue


def _wait_association(assoc: Any) -> None:
    """Wait for a DIMSE message, a primitive from the DUL (``_UserQueue``), or a ``send_*`` call asking this
    reactor to pause (``_pause_wanted``)."""
    if assoc not in _reactors:
        with _reactors_lock:
            _reactors.add(assoc)
        _wake_on_user_primitives(assoc)
    messages = assoc.dimse.msg_queue
    with messages.not_empty:
        if not messages.queue and not assoc.dul.to_user_queue.queue and assoc._reactor_checkpoint.is_set():
            messages.not_empty.wait(MAX_WAIT)


def _pause_wanted() -> None:
    """A ``send_*`` call has cleared a reactor's checkpoint and polls until that reactor has paused: wake the
    waiting reactors, so that the one it wants goes round its loop to the checkpoint now rather than within
    ``MAX_WAIT`` (the call does not say which association it is; there are few, and a woken one that was not
    asked finds nothing to do and waits again)."""
    with _reactors_lock:
        waiting = list(_reactors)
    for assoc in waiting:
        condition = assoc.dimse.msg_queue.not_empty
        with condition:
            condition.notify_all()


def _sleep(seconds: float) -> None:
    """``time.sleep`` for pynetdicom's modules: the reactors' 1 ms loop delays become waits (see the module
    docstring); a poll for a reactor to pause first wakes the waiting reactors; other sleeps (shutdown delays)
    stay as they are. pynetdicom's
    DUL service provider and association are the threads their reactors run in, so the thread calling
    says whose loop it is."""
    if seconds == LOOP_DELAY:
        from pynetdicom.association import Association
        from pynetdicom.dul import DULServiceProvider

        owner = threading.current_thread()
        if isinstance(owner, DULServiceProvider):
            return _wait_dul(owner)
        if isinstance(owner, Association):
            return _wait_association(owner)
    elif seconds == PAUSE_POLL:
        _pause_wanted()
    time.sleep(seconds)


def _waking_send_pdu(send_pdu: Any) -> Any:
    def send_and_wake(self: Any, primitive: Any) -> None:
        send_pdu(self, primitive)
        _wake(self).signal()

    send_and_wake.__wrapped__ = send_pdu  # type: ignore[attr-defined]
    return send_and_wake


def _reading_first(process_recv_primitive: Any) -> Any:
    def process_unless_peer_spoke(self: Any) -> bool:
        if self.to_provider_queue.queue and self.state_machine.current_state == "Sta6" and self.socket \
                and self.socket.ready:
            return False  # run_reactor goes on to read the socket, then comes back to the queue
        return process_recv_primitive(self)

    process_unless_peer_spoke.__wrapped__ = process_recv_primitive  # type: ignore[attr-defined]
    return process_unless_peer_spoke


def _leaving_responses_to_the_sender(get_msg: Any) -> Any:
    def get_msg_unless_paused(self: Any, block: bool = False) -> Any:
        if block:
            return get_msg(self, block)
        messages = self.msg_queue
        try:
            item = messages.get(block=False)
        except queue.Empty:
            return None, None
        # Looked at after taking the item: a send_* call clears the checkpoint before it sends its request,
        # so an item taken while the checkpoint was still set cannot be the answer to it. The abort wake-up
        # (None, None) that pynetdicom queues goes back too, so that the waiting call sees it at once.
        if not self.assoc._reactor_checkpoint.is_set():
            with messages.mutex:  # back in front, for the send_* call waiting on the queue
                messages.queue.appendleft(item)
                messages.not_empty.notify()
            return None, None
        return item

    get_msg_unless_paused.__wrapped__ = get_msg  # type: ignore[attr-defined]
    return get_msg_unless_paused


def wait_instead_of_polling() -> None:
    """Apply once per process, before associations start (idempotent)."""
    from pynetdicom import association, dul

    if getattr(association.time, "sleep", None) is _sleep:
        return
    shim = types.ModuleType("time")
    shim.__dict__.update({k: v for k, v in vars(time).items() if not k.startswith("__")})
    shim.sleep = _sleep  # type: ignore[attr-defined]
    association.time = shim  # type: ignore[attr-defined]
    dul.time = shim  # type: ignore[attr-defined]
    dul.DULServiceProvider.send_pdu = _waking_send_pdu(dul.DULServiceProvider.send_pdu)
    dul.DULServiceProvider._process_recv_primitive = _reading_first(dul.DULServiceProvider._process_recv_primitive)
    leave_responses_to_the_sender()


def leave_responses_to_the_sender() -> None:
    """Close pynetdicom's "pause the reactor" gap alone (module docstring), in this process (idempotent).

    The gap is the requestor's too: after one ``send_*`` call on an association, the next one can find the
    reactor, just woken by the first call's end, still saying it is paused; the reactor then takes the next
    response off the queue and drops it, and the call waits for its DIMSE timeout (30 s) and returns an empty
    status. The faster the peer answers and the busier the requestor's machine, the likelier: a stock
    pynetdicom client doing echo then a refused C-FIND on one association lost one answer in about a hundred
    on a loaded 2-core machine. ``install`` applies it with the rest; a stock pynetdicom client (the test
    suite's) can take this alone."""
    from pynetdicom import dimse

    if not hasattr(dimse.DIMSEServiceProvider.get_msg, "__wrapped__"):
        dimse.DIMSEServiceProvider.get_msg = _leaving_responses_to_the_sender(dimse.DIMSEServiceProvider.get_msg)


class _SupportedContexts(list):
    """An association server's supported presentation contexts, copied cheaply for each association.

    pynetdicom gives every accepted association a ``deepcopy`` of the server's contexts (``RequestHandler.
    _create_association``): with every storage SOP class and 17 transfer syntaxes that is ~3,700 UID objects
    rebuilt through ``copy``'s generic machinery, 20-80 ms before the A-ASSOCIATE-AC can go out (dcmtk's
    echoscu took 0.26-0.39 s against hounsfield, 30 ms against Orthanc). UIDs are immutable, so a copy of each
    context with its own transfer syntax list is the same copy at a fraction of the cost."""

    def __deepcopy__(self, memo: dict) -> list:
        out = []
        for cx in self:
            twin = object.__new__(type(cx))
            twin.__dict__.update(cx.__dict__)
            twin._transfer_syntax = list(cx._transfer_syntax)
            out.append(twin)
        return out


def cheap_context_copies(server: Any) -> None:
    """Give ``server`` (an ``AssociationServer``) contexts that copy cheaply per association."""
    server.contexts = _SupportedContexts(server.contexts)
