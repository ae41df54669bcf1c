"""Audit events forwarded to a syslog collector (an IHE ATNA Audit Record Repository) as DICOM Audit Messages.

Each message is an RFC 5424 syslog message — ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM XML`` with
facility 10 (security/authorization), severity 5 (notice) or 4 (warning) for an event that did not succeed, MSGID
``IHE+RFC-3881`` as IHE ITI TF-2 3.20.4.2 (Record Audit Event) names the DICOM / RFC 3881 message format, and the
XML of ``audit.atna`` as MSG, UTF-8 after its byte order mark (RFC 5424 6.4) — framed by octet counting,
``MSG-LEN SP SYSLOG-MSG`` (RFC 6587 3.4.1, RFC 5425 4.3), over TCP (``tcp://host:port``) or TLS 1.2 or newer
(``tls://host:port``, RFC 5425: the collector's certificate checked against ``tls_ca``, else the system's CAs, and
its name; this server's ``tls_cert`` presented when set, for IHE ATNA's mutual node authentication).

``Forwarder.send`` only puts the event on a bounded queue; one thread builds the messages and writes them. A
collector that is down, slow or gone costs the caller nothing: the thread reconnects with a growing pause
(``RECONNECT_PAUSES``), meanwhile the queue fills, and once it is full further events are dropped and counted
(logged when dropping starts and once delivery resumes). The audit table has every event either way
(``audit.trail``).
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from hounsfield.audit.actions import SUCCESS
from hounsfield.audit.atna import audit_message

log = logging.getLogger("hounsfield.audit")
FACILITY = 10  # security/authorization messages (RFC 5424 6.2.1)
NOTICE, WARNING = 5, 4
MSGID = "IHE+RFC-3881"
APP_NAME = "hounsfield"
BOM = b"\xef\xbb\xbf"
QUEUE_SIZE = 10000  # events waiting for the collector at most; then they are dropped
CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0  # seconds a write may wait for a collector that reads slowly, then the connection is dropped
RECONNECT_PAUSES = (0.5, 1, 2, 5, 10, 30)  # seconds before each further attempt to reach the collector


@dataclass(frozen=True)
class Target:
    """Where messages go: ``tcp://host:port`` or ``tls://host:port`` (the setting ``audit_syslog``)."""

    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> "Target":
        parts = urlsplit(url.strip())
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None or parts.path not in ("", "/"):
            raise ValueError(f"setting audit_syslog must be tcp://HOST:PORT or tls://HOST:PORT, not {url!r}")
        return cls(parts.scheme == "tls", parts.hostname, port)


def printable(text: str, limit: int) -> str:
    """A header field of RFC 5424 6.2: printable US-ASCII without spaces, at most ``limit`` characters, or the
    NILVALUE ``-``."""
    kept = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return kept or "-"


def syslog_message(xml: bytes, *, at: datetime, host: str, failed: bool) -> bytes:
    """The RFC 5424 message carrying ``xml``, framed by octet counting (RFC 6587 3.4.1)."""
    moment = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)
    timestamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    pri = FACILITY * 8 + (WARNING if failed else NOTICE)
    header = f"<{pri}>1 {timestamp} {printable(host, 255)} {APP_NAME} {os.getpid()} {MSGID} -"
    message = header.encode("ascii") + b" " + BOM + xml
    return b"%d " % len(message) + message


def client_context(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    """TLS as RFC 5425 asks of a sender: 1.2 or newer, the collector's certificate and name checked."""
    context = ssl.create_default_context(cafile=ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(cert, key or None)
    return context


class Forwarder:
    """The queue and the thread described in the module's docstring."""

    def __init__(self, target: Target, *, ae_title: str, context: ssl.SSLContext | None = None,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.target = target
        self.ae_title = ae_title
        self.host = socket.gethostname()
        self.context = (context or client_context()) if target.tls else None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.dropped = 0  # events dropped since the start
        self._unreported = 0  # of which not yet logged

    def send(self, event: dict[str, Any]) -> None:
        """Queue ``event`` (the values of an audit row) for the collector; never blocks."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                self._unreported += 1
                first = self._unreported == 1
            if first:
                log.warning("audit forwarding to %s:%d: %d messages wait, dropping new ones until the collector "
                            "takes them", self.target.host, self.target.port, self._queue.maxsize)
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
                    self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for at most ``timeout`` seconds, then stop."""
        thread = self._thread
        if thread is None:
            return
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        thread.join(1.0)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            event = self._queue.get()
            if event is None:
                break
            try:
                message = syslog_message(audit_message(event, ae_title=self.ae_title, host=self.host),
                                         at=event["at"], host=self.host, failed=event["outcome"] != SUCCESS)
            except Exception:  # noqa: BLE001 - one event that cannot be put in XML must not stop forwarding
                log.exception("audit event %s cannot be forwarded", event.get("action"))
                continue
            while not self._stop.is_set():
                try:
                    self._write(message)
                    if failures:
                        log.info("audit collector %s:%d reachable again", self.target.host, self.target.port)
                    failures = 0
                    break
                except OSError as exc:
                    self._disconnect()
                    pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES) - 1)]
                    if failures == 0:
                        log.warning("audit collector %s:%d unreachable (%s); retrying", self.target.host,
                                    self.target.port, exc)
                    failures += 1
                    self._stop.wait(pause)
            self._report_dropped()
        self._disconnect()

    def _write(self, message: bytes) -> None:
        if self._socket is None or _closed_by_peer(self._socket):
            self._disconnect()
            self._socket = self._connect()
        self._socket.sendall(message)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.target.host, self.target.port), timeout=CONNECT_TIMEOUT)
        try:
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.target.host)
            sock.settimeout(SEND_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        return sock

    def _disconnect(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except OSError:
                pass
            self._socket = None

    def _report_dropped(self) -> None:
        with self._lock:
            dropped, self._unreported = self._unreported, 0
        if dropped:
            log.warning("audit forwarding to %s:%d dropped %d messages while its queue was full",
                        self.target.host, self.target.port, dropped)


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the collector has closed the connection: a write into it would succeed and be lost. The
    collector sends nothing, so what is readable is its end (or, over TLS 1.3, a session ticket: no data)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        sock.setblocking(False)
        try:
            return (sock.recv(1) if isinstance(sock, ssl.SSLSocket) else sock.recv(1, socket.MSG_PEEK)) == b""
        finally:
            sock.settimeout(SEND_TIMEOUT)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except (OSError, ValueError):
        return True


def forwarder(setting: str, *, ae_title: str, ca: str = "", cert: str = "", key: str = "") -> Forwarder | None:
    """The forwarder the setting ``audit_syslog`` asks for (None when empty); ``ValueError`` for a bad one."""
    if not setting.strip():
        return None
    target = Target.parse(setting)
    return Forwarder(target, ae_title=ae_title, context=client_context(ca, cert, key) if target.tls else None)
