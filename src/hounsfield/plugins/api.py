"""The plugin API (issue 14): what a plugin file imports, registers and receives.

A plugin is a plain Python file given to ``hounsfield serve --plugin FILE`` (or ``plugins = [...]`` in the TOML).
Its top level runs once in every process of the server (the DICOM listeners need its filters); it registers
functions with the decorators below and should do its work in them, not at import::

    from hounsfield.plugins import api

    @api.on_instance_stored
    def tell(ctx: api.Context, instance: api.InstanceStored) -> None:
        ctx.log.info("stored %s from %s", instance.sop_instance_uid, instance.calling_ae)

Events (``on_*``) run in a worker thread of the plugin's own, from a bounded queue: they never delay a C-STORE,
an MWL answer, an HL7 ACK or an HTTP answer, one plugin's slow callback never delays another plugin, and what
a callback raises is logged with the plugin's name. The instance or the change it tells of is already
committed. When a plugin's queue is full (``QUEUE_SIZE``), further events for it are dropped and counted in a
warning, rather than holding anything up. ``on_started``, ``on_instance_stored``, ``on_study_stable`` and
``on_hl7_message`` run in the main process; ``on_mpps`` and ``on_worklist_changed`` in the process where it
happened (an MPPS arrives on any DICOM process): share state through the archive and the worklist, not
through module globals.

Filters (``filter_*``) run where the request is being answered, synchronously, so they must be quick. One that
raises is logged and ignored (the instance is taken, the query or answer left as it was): a broken filter
never loses an instance.

``route(path)`` adds an HTTP endpoint under ``/api/plugins/``: a FastAPI endpoint function (plain ``def``: it
runs in the thread pool), given the plugin's ``Context`` when it has a parameter named ``ctx``. It needs the
``admin`` permission unless ``permission=`` names another (``auth.roles``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from pydicom.dataset import Dataset

from hounsfield.auth import roles
from hounsfield.dicomfile import Header
from hounsfield.feed import InstanceStored, StudyStable
from hounsfield.hl7.log import LoggedMessage
from hounsfield.worklist.mpps import MppsEvent, PerformedProcedureStep
from hounsfield.worklist.service import WorklistChange

if TYPE_CHECKING:
    from hounsfield.archive import Archive
    from hounsfield.config import Settings
    from hounsfield.peers import PeerRegistry
    from hounsfield.worklist.mpps import Mpps
    from hounsfield.worklist.service import Worklist

__all__ = [
    "Caller", "Context", "IncomingInstance", "InstanceStored", "LoggedMessage", "MppsEvent", "PerformedProcedureStep",
    "Reject", "StudyStable", "WorklistChange", "filter_incoming_store", "filter_worklist_answer",
    "filter_worklist_query", "on_hl7_message", "on_instance_stored", "on_mpps", "on_started", "on_study_stable",
    "on_worklist_changed", "route",
]

F = TypeVar("F", bound=Callable[..., Any])
EVENTS = ("on_started", "on_instance_stored", "on_study_stable", "on_worklist_changed", "on_mpps", "on_hl7_message")
FILTERS = ("filter_incoming_store", "filter_worklist_query", "filter_worklist_answer")
ROUTE_PREFIX = "/api/plugins/"
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.x: Refused: Not Authorized, what a filter's refusal answers by default


# ---- what callbacks receive ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    """Who sent the request a filter sees: the calling AE title and its address."""

    ae_title: str
    address: str


@dataclass(frozen=True)
class IncomingInstance:
    """An instance offered by C-STORE, before it is taken (``filter_incoming_store``): its whole header as DICOM
    JSON (``header.text("PatientID")``; no pixel data) and who sent it."""

    header: Header
    caller: Caller

    def text(self, keyword: str) -> str:
        """A value of the header as text ("" when absent), e.g. ``instance.text("Modality")``."""
        return self.header.text(keyword)

    @property
    def sop_instance_uid(self) -> str:
        return self.header.sop_instance_uid


@dataclass(frozen=True)
class Reject:
    """What ``filter_incoming_store`` returns to refuse an instance: the C-STORE status to answer (PS3.4 B.2.3;
    by default 0x0124, refused: not authorized) and why (logged, and in the audit trail)."""

    reason: str = "refused by a site filter"
    status: int = NOT_AUTHORIZED


class Context:
    """What a plugin's callbacks work with: the same domain services the server uses (no HTTP, no sockets),
    a logger named after the plugin, and helpers for what plugins most often do."""

    def __init__(self, name: str, *, settings: "Settings", archive: "Archive", worklist: "Worklist",
                 mpps: "Mpps", peers: "PeerRegistry") -> None:
        from hounsfield import imaging

        self.name = name
        self.settings = settings
        self.archive = archive  # find, read, store instances (``hounsfield.archive.Archive``)
        self.worklist = worklist  # schedule, change, find worklist items (``hounsfield.worklist.Worklist``)
        self.mpps = mpps
        self.peers = peers  # the remote nodes, by name (``hounsfield.peers.PeerRegistry``)
        self.imaging = imaging  # render, pixel values, series volumes (``hounsfield.imaging``)
        self.log = logging.getLogger(f"hounsfield.plugin.{name}")

    def find_worklist(self, peer: str, query: Dataset) -> list[Dataset]:
        """The answers of a remote node's Modality Worklist (MWL C-FIND, as this server's AE title) to
        ``query``; ``hounsfield.errors.Rejected`` when the node cannot be reached or refuses."""
        from hounsfield.tls import Outgoing
        from hounsfield.worklist.client import find

        return list(find(self.peers.get(peer), query, self.settings.ae_title, Outgoing(self.settings)))

    def send(self, peer: str, sop_instance_uids: list[str]) -> dict[str, int | None]:
        """C-STORE these instances to a remote node now; each SOP Instance UID's status (None: not sent).
        For deliveries that must survive an outage, use a routing rule instead (a persistent queue)."""
        from hounsfield.dimse.client import store_instances
        from hounsfield.tls import Outgoing

        instances = self.archive.instances(sop_uids=sop_instance_uids)
        statuses = store_instances(self.peers.get(peer), instances, self.settings.ae_title,
                                   outgoing=Outgoing(self.settings))
        return {uid: None for uid in sop_instance_uids} | {i.sop_instance_uid: s for i, s in zip(instances, statuses)}


# ---- registration ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    path: str
    methods: tuple[str, ...]
    endpoint: Callable[..., Any]
    permission: str


@dataclass
class Plugin:
    """One loaded plugin file and what it registered."""

    name: str
    path: Path
    module: ModuleType | None = None
    callbacks: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)

    def of(self, kind: str) -> list[Callable[..., Any]]:
        return self.callbacks.get(kind, [])


class PluginError(Exception):
    """A plugin file that cannot be used; the message names the file and says why, in one line."""


_loading: Plugin | None = None  # the plugin whose file is being run (``loader.load``), None at any other time


def _register(kind: str, func: F) -> F:
    if _loading is None:
        raise PluginError(f"@api.{kind} registers {getattr(func, '__name__', func)!r} only in a plugin file "
                          f"that hounsfield loads (serve --plugin FILE)")
    if not callable(func):
        raise PluginError(f"@api.{kind} decorates a function, not {func!r}")
    _loading.callbacks.setdefault(kind, []).append(func)
    return func


def on_started(func: F) -> F:
    """``func(ctx)``: once, when the server is up (DICOM and HTTP listening), in the main process."""
    return _register("on_started", func)


def on_instance_stored(func: F) -> F:
    """``func(ctx, instance: InstanceStored)``: for every instance the index gains (any way in), in order."""
    return _register("on_instance_stored", func)


def on_study_stable(func: F) -> F:
    """``func(ctx, study: StudyStable)``: a study gained no instance for ``study_stable_seconds``."""
    return _register("on_study_stable", func)


def on_worklist_changed(func: F) -> F:
    """``func(ctx, change: WorklistChange)``: a worklist item created, changed, cancelled or deleted (REST, web
    page, CLI, HL7, import, expiry); MPPS status changes come as ``on_mpps``."""
    return _register("on_worklist_changed", func)


def on_mpps(func: F) -> F:
    """``func(ctx, mpps: MppsEvent)``: an MPPS N-CREATE or N-SET applied (``mpps.step``: status, dataset,
    the worklist items it moved)."""
    return _register("on_mpps", func)


def on_hl7_message(func: F) -> F:
    """``func(ctx, message: LoggedMessage)``: an HL7 message received and acknowledged, as the message log has
    it (raw, type, ACK code, outcome, the items it touched)."""
    return _register("on_hl7_message", func)


def filter_incoming_store(func: F) -> F:
    """``func(ctx, instance: IncomingInstance) -> Reject | None``: before a C-STORE is taken; return a
    ``Reject`` to refuse it with its status, None (or anything else) to take it."""
    return _register("filter_incoming_store", func)


def filter_worklist_query(func: F) -> F:
    """``func(ctx, query: Dataset, caller: Caller) -> Dataset | None``: an MWL C-FIND identifier before it is
    matched; return the identifier to match (a changed copy, or the same one changed), None to leave it."""
    return _register("filter_worklist_query", func)


def filter_worklist_answer(func: F) -> F:
    """``func(ctx, answer: Dataset, query: Dataset, caller: Caller) -> Dataset | None``: each MWL answer before
    it is sent; return the answer to send, None to leave this item out of the answers."""
    return _register("filter_worklist_answer", func)


_ROUTE_PATH = re.compile(r"/api/plugins/[A-Za-z0-9._~{}/-]+")


def route(path: str, *, methods: tuple[str, ...] | list[str] = ("GET",),
          permission: str = roles.ADMIN) -> Callable[[F], F]:
    """An HTTP endpoint at ``path`` (under ``/api/plugins/``, FastAPI path syntax: ``/api/plugins/x/{uid}``),
    for ``methods``, needing ``permission`` (``hounsfield.auth.roles``: read, send, worklist..., admin)."""
    if not _ROUTE_PATH.fullmatch(path):
        raise PluginError(f"route {path!r}: a plugin's routes are paths under {ROUTE_PREFIX}")
    if permission not in roles.PERMISSIONS:
        raise PluginError(f"route {path!r}: permission {permission!r} is none of {', '.join(roles.PERMISSIONS)}")
    wanted = tuple(m.upper() for m in methods)

    def register(func: F) -> F:
        if _loading is None:
            raise PluginError(f"@api.route registers {getattr(func, '__name__', func)!r} only in a plugin file")
        _loading.routes.append(Route(path, wanted, func, permission))
        return func

    return register
