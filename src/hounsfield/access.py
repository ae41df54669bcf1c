"""Which DICOM services each calling AE may use: the per-node permissions of a DICOM node (as Orthanc's
AllowEcho / AllowStore / AllowFind / AllowGet / AllowMove per modality, plus the worklist and MPPS).

A node configured as a peer (``[peers.NAME]`` with ``allow = [...]``) may use what it lists (every service when
it lists nothing); any other calling AE title may use what ``unknown_ae_services`` names (echo and store by
default, Orthanc's defaults), or every service when it calls from a loopback address of this machine and
``trust_loopback_aes`` is on (local tools on a fresh install are trusted, as PostgreSQL's default ``local``
rule trusts local users). ``known_aes_only`` refuses unknown callers at the association already
(``dimse.handlers``). A refused request is answered with
0x0124 Refused: Not Authorised (a general status of PS3.7 Annex C) and logged
with the caller's AE title and address.

The calling AE title is what the peer says it is: without TLS client certificates (issue 12, next) this is
a guard against mistakes and casual misuse, not against a peer that lies about its name.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any, Iterable, Protocol

from hounsfield.errors import NotAuthorized

REMEMBER_FOR = 2.0  # seconds a calling AE's permissions are used without looking its node up again
SERVICES = ("echo", "store", "find", "get", "move", "worklist", "mpps")
ALL_SERVICES = frozenset(SERVICES)


def parse_services(value: str | Iterable[str], where: str) -> frozenset[str]:
    """A set of service names from a comma-separated text or a list; a name not in ``SERVICES`` is a
    ValueError naming ``where`` it came from."""
    names = [v.strip().lower() for v in (value.split(",") if isinstance(value, str) else value)]
    names = [n for n in names if n]
    unknown = sorted(set(names) - ALL_SERVICES)
    if unknown:
        raise ValueError(f"{where}: unknown DICOM service(s) {', '.join(unknown)} "
                         f"(known: {', '.join(SERVICES)})")
    return frozenset(names)


def is_loopback_address(address: str) -> bool:
    """Whether ``address`` (as a socket gives it: IPv4, IPv6, IPv4-mapped IPv6) is a loopback address."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def address_in(address: str, entries: Iterable[str]) -> bool:
    """Whether a caller's ``address`` is one of ``entries``: an address, a network (``10.1.0.0/16``) or a host
    name (resolved now: a node's address may change, and a connection is rare enough to look it up each time).
    IPv4-mapped IPv6 addresses count as their IPv4 address."""
    def normal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        ip = ipaddress.ip_address(text.split("%")[0])
        return getattr(ip, "ipv4_mapped", None) or ip

    try:
        wanted = normal(address)
    except ValueError:
        return False
    for entry in entries:
        try:
            if wanted in ipaddress.ip_network(entry.strip("[]"), strict=False):
                return True
            continue
        except ValueError:
            pass
        try:
            if wanted in {normal(info[4][0]) for info in socket.getaddrinfo(entry, None)}:
                return True
        except (OSError, ValueError):
            continue
    return False


class KnownNodes(Protocol):
    """Where the configured nodes are looked up (``peers.PeerRegistry``; its nodes have an ``allow`` set). A
    protocol, so that ``config``, which reads the services of a node from the TOML file here, and ``peers``,
    which reads ``config``, do not import each other through this module."""

    def by_ae_title(self, ae_title: str) -> Any: ...


class DicomAccess:
    """The permissions of calling AE titles, from the known nodes and the policy for the others."""

    def __init__(self, peers: KnownNodes, unknown_ae_services: frozenset[str] = ALL_SERVICES, *,
                 trust_loopback: bool = False) -> None:
        self.peers = peers
        self.unknown_ae_services = unknown_ae_services
        self.trust_loopback = trust_loopback
        # AE title → (when looked up, the node's services, or None for an unknown AE title)
        self._recent: dict[str, tuple[float, frozenset[str] | None]] = {}

    def allowed(self, calling_ae: str, address: str = "") -> frozenset[str]:
        """The services ``calling_ae`` may use when it calls from ``address``. The nodes are in the index (REST
        adds them), and a look-up per received instance was a query per C-STORE: an answer is kept for
        ``REMEMBER_FOR`` seconds, so a node added or changed takes effect within that time."""
        now = time.monotonic()
        known = self._recent.get(calling_ae)
        if known is None or now - known[0] >= REMEMBER_FOR:
            peer = self.peers.by_ae_title(calling_ae)
            known = (now, None if peer is None else peer.allow)
            self._recent[calling_ae] = known
        if known[1] is not None:
            return known[1]
        return ALL_SERVICES if self.trust_loopback and is_loopback_address(address) else self.unknown_ae_services

    def check(self, calling_ae: str, service: str, address: str = "") -> None:
        """Raise ``NotAuthorized`` unless ``calling_ae``, calling from ``address``, may use ``service``."""
        if service not in self.allowed(calling_ae, address):
            known = self.peers.by_ae_title(calling_ae) is not None  # (a refusal may cost a look-up)
            raise NotAuthorized(f"{'node' if known else 'unknown AE'} {calling_ae.strip()!r} may not use {service}")
