"""MLLP, the Minimal Lower Layer Protocol HL7 v2 messages travel in over TCP (HL7 v2.5.1 Appendix C.4; HL7
Version 3 Standard: Transport Specification - MLLP, Release 2): each message framed as <SB> data <EB><CR>, with
SB = 0x0B, EB = 0x1C, CR = 0x0D, the acknowledgment framed the same way on the same connection.

``Listener`` serves the HL7 port in threads of the ``serve`` process: one accepts connections, one per
connection reads frames and hands each to the service, which answers its ACK; a message is acknowledged before
the next one of that connection is read (original mode, 2.9.2). What is not MLLP is answered by closing the
connection, with a log line naming the sender and why: data before the start block, a start block inside a
frame (a frame without its end), an end block without its CR, a frame not finished within the read timeout,
binary noise. A frame longer than ``max_bytes`` is handed over cut (the service answers AR), then the connection
is closed unless its end was seen. Connections are served in parallel, at most ``MAX_CONNECTIONS`` at once: one
sender that stalls or misbehaves holds up no other.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable

from hounsfield import tls

log = logging.getLogger("hounsfield.hl7")
START, END, CR = b"\x0b", b"\x1c", b"\r"
MAX_CONNECTIONS = 32  # connections served at once; more are closed at once, with a log line
IDLE_TIMEOUT = 3600.0  # seconds a connection may wait between messages before it is closed (senders reconnect)
ACCEPT_POLL = 0.5  # seconds between looks at whether the listener is stopping
_BETWEEN_FRAMES = b" \t\r\n"  # what senders leave between frames, taken as nothing


class FramingError(Exception):
    """The bytes of a connection are not MLLP frames; the connection is closed."""


@dataclass(frozen=True)
class Frame:
    """A message's bytes (without SB, EB, CR). ``complete`` False: longer than the limit, cut there; ``ended``
    False: its end was not read either, so the connection cannot go on."""

    data: bytes
    complete: bool = True
    ended: bool = True


class FrameReader:
    """The frames of one connection, in order. ``read_timeout``: seconds the rest of a frame may take once its
    first byte came; ``idle_timeout``: seconds to wait for the next frame."""

    def __init__(self, sock: socket.socket, *, max_bytes: int, read_timeout: float,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self._buffer = bytearray()

    def next(self) -> Frame | None:
        """The next frame; None when the peer closed the connection between frames (or stayed idle too long);
        ``FramingError`` for anything else."""
        while True:
            del self._buffer[:len(self._buffer) - len(self._buffer.lstrip(_BETWEEN_FRAMES))]
            if self._buffer:
                break
            if not self._receive(self.idle_timeout, idle=True):
                return None
        if self._buffer[:1] != START:
            raise FramingError("data before the start block 0x0B: not an MLLP frame")
        deadline = time.monotonic() + self.read_timeout
        scanned = 1
        while True:
            end = self._buffer.find(END, scanned)
            body_end = end if end >= 0 else len(self._buffer)
            if self._buffer.find(START, scanned, body_end) >= 0:
                raise FramingError("a start block 0x0B inside a frame: the frame before it has no end block")
            scanned = body_end
            if end >= 0 and len(self._buffer) > end + 1:
                if self._buffer[end + 1:end + 2] != CR:
                    raise FramingError("the end block 0x1C is not followed by 0x0D")
                data = bytes(self._buffer[1:end])
                del self._buffer[:end + 2]
                return Frame(data[:self.max_bytes], complete=len(data) <= self.max_bytes)
            if body_end - 1 > self.max_bytes:
                return Frame(bytes(self._buffer[1:1 + self.max_bytes]), complete=False, ended=False)
            if not self._receive(deadline - time.monotonic(), idle=False):
                raise FramingError("the connection was closed in the middle of a frame")

    def _receive(self, timeout: float, *, idle: bool) -> bool:
        """Read what has arrived into the buffer; False when the peer closed (or, ``idle``, said nothing)."""
        if timeout <= 0:
            raise FramingError(f"the frame was not finished within {self.read_timeout:g} s (hl7_read_timeout)")
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            if idle:
                return False
            raise FramingError(f"the frame was not finished within {self.read_timeout:g} s (hl7_read_timeout)") \
                from None
        self._buffer += chunk
        return bool(chunk)


def frame(data: bytes) -> bytes:
    return START + data + END + CR


def listening_socket(host: str, port: int) -> socket.socket:
    """The HL7 port's socket, bound and listening (``OSError`` when it cannot be)."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


Handler = Callable[[Frame, str], bytes]  # (frame, sender's address) → the ACK, unframed


class Listener:
    """Serves ``sock`` until ``close``; ``handle`` is called in the connection's thread for each frame.
    ``context``: TLS (the handshake in the connection's thread, within ``read_timeout``)."""

    def __init__(self, sock: socket.socket, handle: Handler, *, max_bytes: int, read_timeout: float,
                 context: ssl.SSLContext | None = None, senders: Callable[[str], bool] = lambda _: True) -> None:
        self.sock = sock
        self.senders = senders
        self.handle = handle
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.context = context
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, bool] = {}  # connection → handling a message now
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="hl7-accept", daemon=True)

    def start(self) -> None:
        self._acceptor.start()

    def close(self, grace: float = 30.0) -> None:
        """Stop accepting, close the idle connections, let the messages being handled finish (``grace``
        seconds at most)."""
        self._stopping.set()
        self._acceptor.join(ACCEPT_POLL * 4)
        self.sock.close()
        with self._lock:
            idle = [conn for conn, busy in self._connections.items() if not busy]
        for conn in idle:
            _shut(conn)
        deadline = time.monotonic() + grace
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _accept(self) -> None:
        self.sock.settimeout(ACCEPT_POLL)
        while not self._stopping.is_set():
            try:
                conn, peer = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("HL7 listener: accept failed")
                time.sleep(ACCEPT_POLL)
                continue
            address = f"{peer[0]}:{peer[1]}"
            if not self.senders(peer[0]):
                log.warning("HL7 connection from %s refused: not one of hl7_senders", address)
                conn.close()
                continue
            with self._lock:
                full = len(self._connections) >= MAX_CONNECTIONS
                if not full:
                    self._connections[conn] = False
            if full:
                log.warning("HL7 connection from %s refused: %d connections are served already", address,
                            MAX_CONNECTIONS)
                conn.close()
                continue
            thread = threading.Thread(target=self._serve, args=(conn, address), name=f"hl7-{address}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, conn: socket.socket, address: str) -> None:
        try:
            no_delay(conn)
            if self.context is not None:
                secured = self._handshake(conn, address)
                if secured is None:
                    return
                conn = secured
            reader = FrameReader(conn, max_bytes=self.max_bytes, read_timeout=self.read_timeout)
            while not self._stopping.is_set():
                received = reader.next()
                if received is None:
                    return
                self._mark(conn, busy=True)
                try:
                    answer = self.handle(received, address)
                    conn.settimeout(self.read_timeout)
                    conn.sendall(frame(answer))
                finally:
                    self._mark(conn, busy=False)
                if not received.ended:
                    log.warning("HL7 connection from %s closed: a message longer than %d bytes "
                                "(hl7_max_message_bytes)", address, self.max_bytes)
                    _drain(conn, self.read_timeout)
                    return
        except FramingError as exc:
            log.warning("HL7 connection from %s closed: %s", address, exc)
        except OSError as exc:
            if not self._stopping.is_set():
                log.info("HL7 connection from %s ended: %s", address, exc.strerror or exc)
        except Exception:  # noqa: BLE001 - e.g. the index is gone: no ACK, so the sender sends the message again
            log.exception("HL7 connection from %s closed: its message could not be handled", address)
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            _shut(conn)

    def _handshake(self, conn: socket.socket, address: str) -> ssl.SSLSocket | None:
        assert self.context is not None
        wrapped = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        with self._lock:
            self._connections[wrapped] = self._connections.pop(conn, False)
        problem = tls.handshake(wrapped, self.read_timeout)
        if problem is None:
            return wrapped
        log.warning("HL7 TLS connection from %s refused: %s", address, problem)
        with self._lock:
            self._connections.pop(wrapped, None)
        _shut(wrapped)
        return None

    def _mark(self, conn: socket.socket, *, busy: bool) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections[conn] = busy


def _drain(conn: socket.socket, timeout: float) -> None:
    """After the AR of a message too long to read to its end: stop sending, and read (and drop) what the sender
    still sends for up to ``timeout`` seconds, so that closing with unread data does not reset the connection
    before the sender has read its acknowledgment (RFC 1122 4.2.2.13)."""
    deadline = time.monotonic() + timeout
    try:
        conn.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            if not conn.recv(65536):
                return
    except OSError:  # the sender went, or kept sending: either way the connection is closed now
        return


def no_delay(conn: socket.socket) -> None:
    """Send each write at once (TCP_NODELAY): an ACK, or a message, is one small write the peer waits for before
    it sends the next, and Nagle's algorithm would hold it back while an earlier segment is unacknowledged, the
    peer's delayed ACK making that up to 40 ms (RFC 1122 4.2.3.2, 4.2.3.4)."""
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not TCP (a socket pair in a test)
        pass


def _shut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()


def send(host: str, port: int, message: bytes, *, timeout: float, context: ssl.SSLContext | None = None,
         max_bytes: int = 1 << 20) -> bytes:
    """Send one message to an MLLP receiver and return its acknowledgment (``hounsfield hl7 send``);
    ``FramingError`` or ``OSError`` when there is none."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        no_delay(raw)
        conn: socket.socket = context.wrap_socket(raw, server_hostname=host) if context is not None else raw
        conn.sendall(frame(message))
        answer = FrameReader(conn, max_bytes=max_bytes, read_timeout=timeout, idle_timeout=timeout).next()
        if answer is None:
            raise FramingError(f"no acknowledgment within {timeout:g} s: the connection was closed")
        return answer.data
