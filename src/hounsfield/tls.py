"""TLS for hounsfield's ways in and out: HTTPS on the HTTP port, DICOM on its own TLS port, and the associations
hounsfield opens over TLS; and which configured node a client certificate belongs to.

One profile for all of them, that of PS3.15 B.9 (the BCP 195 TLS Secure Transport Connection Profile): TLS
as BCP 195 recommends it (RFC 7525, updated by RFC 8996). So TLS 1.2 at least: RFC 8996 retires 1.0 and 1.1,
and a server that refuses them (no fallback) is also what PS3.15 B.10, the Non-downgrading profile, and B.12
ask. TLS 1.2 negotiates one of RFC 7525 section 4.2's four cipher suites (ECDHE or DHE key exchange, RSA
certificates, AES-GCM; those PS3.15 B.9 requires) or their ECDSA twins (EC certificates); TLS 1.3's suites are
all AEAD and stay OpenSSL's. No compression (RFC 7525 3.3) and the server's preference are Python's defaults.

Nodes are identified by their certificates, not their names (PS3.15 B.9 leaves what a certificate means to
the site): a peer of the TOML file owns the certificates its ``tls_certificate`` file holds and those its
``tls_fingerprint`` lists (SHA-256 of the DER certificate). With ``dicom_tls_verify_clients`` the DICOM TLS
port asks every caller for a certificate signed by ``tls_ca``, and an association is accepted only when a
peer owns that certificate and the calling AE title is that peer's (``certificate_refusal``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Callable, Protocol

from hounsfield.errors import HounsfieldError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
ALERT_WAIT = 2.0  # seconds ``handshake_problem`` waits for a refusal after the handshake
CIPHERS = ":".join((  # TLS 1.2 (OpenSSL names): RFC 7525 4.2, then the same with ECDSA certificates
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
))
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.S)
# sha256:HEX, or openssl's "sha256 Fingerprint=AB:CD:…" (its words too, or the hex alone)
_FINGERPRINT = re.compile(r"(?:sha256(?::|\s+fingerprint=))?((?:[0-9a-f]{2}:?){31}[0-9a-f]{2})", re.I)


class TlsError(HounsfieldError):
    """A certificate, key or CA bundle that cannot be used, or TLS asked of a node without the means."""


class TlsSettings(Protocol):
    """The settings TLS uses (``config.Settings``: a protocol, so that ``config``, which reads the peers'
    certificates with this module, and this module do not import each other)."""

    tls_cert: str
    tls_key: str
    tls_ca: str


class Node(Protocol):
    """A remote node as TLS sees it (``config.Peer``)."""

    name: str
    ae_title: str
    host: str
    tls: bool


def _context(protocol: int) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(CIPHERS)
    return context


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"{setting} {path}: cannot read it ({exc.strerror or exc})") from None


def _load_identity(context: ssl.SSLContext, settings: TlsSettings) -> None:
    """This server's certificate chain and key, checked first with ``cryptography`` so that a wrong file is
    named for what is wrong with it (OpenSSL says ``PEM lib`` for most of it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert, key = settings.tls_cert, settings.tls_key
    if not cert or not key:
        raise TlsError("TLS needs both tls_cert and tls_key (a PEM certificate and its private key)")
    try:
        leaf = x509.load_pem_x509_certificates(_read("tls_cert", cert))[0]
    except ValueError:
        raise TlsError(f"tls_cert {cert} holds no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(_read("tls_key", key), password=None)
    except TypeError:
        raise TlsError(f"tls_key {key} is encrypted: give hounsfield the key without a passphrase") from None
    except ValueError:
        raise TlsError(f"tls_key {key} holds no PEM private key hounsfield can use") from None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsError(f"tls_key {key} is not the private key of the certificate in tls_cert {cert}")
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise TlsError(f"tls_cert {cert} / tls_key {key}: {reason(exc)}") from None


def _load_ca(context: ssl.SSLContext, path: str) -> None:
    _read("tls_ca", path)
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise TlsError(f"tls_ca {path} holds no PEM CA certificate ({reason(exc)})") from None


def server_context(settings: TlsSettings, *, client_certificates: bool = False) -> ssl.SSLContext:
    """The context of HTTPS and of the DICOM TLS port. With ``client_certificates`` every caller must present
    a certificate signed by ``tls_ca`` (which must then be set: the system's CAs sign anybody's)."""
    context = _context(ssl.PROTOCOL_TLS_SERVER)
    _load_identity(context, settings)
    if client_certificates:
        if not settings.tls_ca:
            raise TlsError("dicom_tls_verify_clients needs tls_ca: the CA that signs the peers' certificates")
        context.verify_mode = ssl.CERT_REQUIRED
        _load_ca(context, settings.tls_ca)
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context of an association hounsfield opens over TLS: the node's certificate must be signed by
    ``tls_ca`` (the system's CAs when it is empty) and name the host connected to; this server's certificate,
    when it has one, is its client certificate."""
    context = _context(ssl.PROTOCOL_TLS_CLIENT)
    if settings.tls_ca:
        _load_ca(context, settings.tls_ca)
    else:
        context.load_default_certs()
    if settings.tls_cert or settings.tls_key:
        _load_identity(context, settings)
    return context


class Outgoing:
    """The TLS of the associations one process opens (``dimse.client``, C-MOVE sub-operations): with the
    nodes flagged ``tls``, with ``client_context`` made once, on first use."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def args(self, node: Node) -> tuple[ssl.SSLContext, str] | None:
        """pynetdicom's ``tls_args`` for ``node``: None for a node reached without TLS."""
        if not node.tls:
            return None
        with self._lock:
            if self._context is None:
                self._context = client_context(self.settings)
        return self._context, node.host


def reason(exc: BaseException) -> str:
    """What went wrong in a TLS handshake, in words (OpenSSL's reason code, or the certificate check's)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no TLS handshake in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def handshake(sock: ssl.SSLSocket, timeout: float | None) -> str | None:
    """Complete the server side of the handshake of an accepted connection within ``timeout`` seconds; what
    went wrong, or None. Done in the connection's own thread: pynetdicom does it in the thread accepting
    connections, where one caller that sends nothing holds up every other one."""
    sock.settimeout(timeout)
    try:
        sock.do_handshake()
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return reason(exc)
    finally:
        try:
            sock.settimeout(None)
        except OSError:  # closed meanwhile
            pass
    return None


def handshake_problem(args: tuple[ssl.SSLContext, str], port: int, timeout: float) -> str | None:
    """Why TLS with ``args``' host at ``port`` fails, found by trying the handshake alone (pynetdicom logs the
    reason and leaves it out of what it returns; the server sees, and may log, a second connection); None when
    it does not. In TLS 1.3 the server refuses a client certificate after the client's side of the handshake is
    over: its alert is waited for ``ALERT_WAIT`` seconds (a server that accepted says nothing: it waits for an
    association request)."""
    context, host = args
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as sock:
                sock.settimeout(ALERT_WAIT)
                if sock.recv(1) == b"":
                    return "the connection was closed after the handshake"
    except (TimeoutError, socket.timeout):
        return None
    except (OSError, ValueError) as exc:
        return reason(exc)
    return None


def fingerprint(der: bytes) -> str:
    """A certificate's identity: ``sha256:`` and the hex SHA-256 of its DER encoding (what ``openssl x509
    -noout -fingerprint -sha256`` prints, in lower case without colons)."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _parse_fingerprint(text: Any, where: str) -> str:
    match = _FINGERPRINT.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{where}: tls_fingerprint {text!r} is not a SHA-256 fingerprint (sha256: and 64 hex "
                         f"digits, or as openssl x509 -noout -fingerprint -sha256 prints it)")
    return "sha256:" + match[1].replace(":", "").lower()


def _file_fingerprints(path: Path, where: str) -> set[str]:
    try:
        blocks = _PEM_CERTIFICATE.findall(path.read_bytes())
        found = {fingerprint(base64.b64decode(block, validate=False)) for block in blocks}
    except OSError as exc:
        raise ValueError(f"{where}: tls_certificate {path}: cannot read it ({exc.strerror or exc})") from None
    except binascii.Error:
        found = set()
    if not found:
        raise ValueError(f"{where}: tls_certificate {path} holds no PEM certificate")
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def peer_fields(table: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    """The TLS fields of a ``[peers.NAME]`` table: ``tls`` (reached over TLS) and the certificates it owns,
    from ``tls_certificate`` (PEM files, relative to ``base``, the config file's folder) and ``tls_fingerprint``
    (each one or a list). A ValueError names ``where`` and what is wrong."""
    tls = table.get("tls", False)
    if not isinstance(tls, bool):
        raise ValueError(f"{where}: tls must be true or false, not {tls!r}")
    owned: set[str] = set()
    for name in _as_list(table.get("tls_certificate", [])):
        if not isinstance(name, str):
            raise ValueError(f"{where}: tls_certificate must be a file name or a list of them, not {name!r}")
        owned |= _file_fingerprints(base / name, where)
    owned |= {_parse_fingerprint(text, where) for text in _as_list(table.get("tls_fingerprint", []))}
    return {"tls": tls, "tls_fingerprints": frozenset(owned)}


def certificate_refusal(sock: Any, calling_ae: str, owner_of: Callable[[str], Node | None]) -> str | None:
    """Why an association must be refused for its client certificate, or None. Only a connection whose TLS
    context required a certificate (``dicom_tls_verify_clients``) is concerned: the certificate must belong to
    a configured node (``owner_of`` its fingerprint) whose AE title is the calling AE title, so that one
    node's certificate cannot speak for another."""
    if not isinstance(sock, ssl.SSLSocket) or sock.context.verify_mode != ssl.CERT_REQUIRED:
        return None
    der = sock.getpeercert(binary_form=True)
    if der is None:  # (the handshake requires one; never without)
        return "no TLS client certificate"
    owner = owner_of(fingerprint(der))
    if owner is None:
        return f"its TLS client certificate ({fingerprint(der)}) belongs to no configured peer"
    if owner.ae_title != calling_ae:
        return (f"its TLS client certificate belongs to peer {owner.name!r}, whose AE title is "
                f"{owner.ae_title!r}, not {calling_ae!r}")
    return None
