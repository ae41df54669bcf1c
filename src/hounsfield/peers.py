"""Remote DICOM nodes: those from the TOML file (read-only) plus those added through the REST API."""

from __future__ import annotations

import re

from sqlalchemy import delete, select

from hounsfield.access import ALL_SERVICES, SERVICES, parse_services
from hounsfield.config import Peer
from hounsfield.db import Database
from hounsfield.errors import Conflict, InvalidQuery, NotFound
from hounsfield.models import PeerRow

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash or control chars


class PeerRegistry:
    def __init__(self, db: Database, configured: tuple[Peer, ...] = ()) -> None:
        self.db = db
        self.configured = {p.name: p for p in configured}

    def all(self) -> list[Peer]:
        with self.db.session() as s:
            stored = [Peer(r.name, r.ae_title, r.host, r.port, tls=r.tls,
                           allow=ALL_SERVICES if r.allow is None else parse_services(r.allow, f"node {r.name}"))
                      for r in s.scalars(select(PeerRow))]
        merged = {p.name: p for p in stored} | self.configured
        return sorted(merged.values(), key=lambda p: p.name)

    def get(self, name: str) -> Peer:
        for p in self.all():
            if p.name == name:
                return p
        raise NotFound(f"no remote node named {name!r}")

    def by_ae_title(self, ae_title: str) -> Peer | None:
        wanted = ae_title.strip()
        return next((p for p in self.all() if p.ae_title == wanted), None)

    def owner_of(self, fingerprint: str) -> Peer | None:
        """The node owning the TLS client certificate of ``fingerprint`` (``tls.fingerprint``): only the config
        file gives nodes certificates, so that nobody with REST access can make one speak for a node."""
        return next((p for p in self.configured.values() if fingerprint in p.tls_fingerprints), None)

    def add(self, peer: Peer) -> Peer:
        if not _AE_TITLE.match(peer.ae_title) or peer.ae_title.strip() == "":
            raise InvalidQuery(f"ae_title {peer.ae_title!r} is not a valid AE title (1-16 characters, no '\\')")
        if not 0 < peer.port < 65536:
            raise InvalidQuery(f"port {peer.port} is out of range 1-65535")
        if peer.name in self.configured:
            raise Conflict(f"remote node {peer.name!r} is defined in the configuration file")
        with self.db.session() as s:
            row = s.get(PeerRow, peer.name) or PeerRow(name=peer.name)
            row.ae_title, row.host, row.port, row.tls = peer.ae_title, peer.host, peer.port, peer.tls
            row.allow = None if peer.allow == ALL_SERVICES else ",".join(s for s in SERVICES if s in peer.allow)
            s.add(row)
        return peer

    def remove(self, name: str) -> None:
        if name in self.configured:
            raise Conflict(f"remote node {name!r} is defined in the configuration file")
        with self.db.session() as s:
            if s.execute(delete(PeerRow).where(PeerRow.name == name)).rowcount == 0:
                raise NotFound(f"no remote node named {name!r}")

    def resolve(self, spec: str) -> Peer:
        """A node name, an AE title, or ``[AET@]HOST:PORT`` (for the command-line client)."""
        for p in self.all():
            if spec in (p.name, p.ae_title):
                return p
        address = parse_address(spec)
        if address is None:
            raise NotFound(f"{spec!r} is neither a known remote node nor [AET@]HOST:PORT")
        return address


def parse_address(spec: str) -> Peer | None:
    """``[AET@]HOST:PORT`` → a Peer (AE title ANY-SCP when not given), or None when ``spec`` is not one."""
    match = re.fullmatch(r"(?:(?P<aet>[^@]+)@)?(?P<host>[^:@]+):(?P<port>\d+)", spec)
    if match is None:
        return None
    return Peer(spec, match["aet"] or "ANY-SCP", match["host"], int(match["port"]))
