"""The processes ``serve`` starts beside itself: more DICOM listeners and the indexer.

pynetdicom serves each association in a Python thread, so all associations of one process share one core (the
GIL). ``serve`` therefore starts ``dicom_processes - 1`` more processes that each run the same DICOM service on
the same port and the same index and file store; the kernel spreads new associations over them (SO_REUSEPORT).
C-STORE acknowledges an instance once it is durable in the pending queue, and one indexer process puts the
queued instances in the layout and the index (``Archive.index_pending``), off the senders' critical path.
All of them stop with the main process: on its SIGTERM (DICOM listeners after their in-flight associations,
then the indexer after the queue is empty) or when it dies.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Callable, Protocol

from hounsfield.config import Settings


class Served(Protocol):
    """What a child process needs of the application the composition root builds (``pacs.Pacs``)."""

    archive: Any

    def start_dicom(self, *, primary: bool = True) -> None: ...

    def close(self, *, grace: float = 30.0) -> None: ...


Build = Callable[..., Served]  # build(settings, migrate=False): passed by reference to the spawned children

log = logging.getLogger("hounsfield")
INDEXER_IDLE_POLL = 0.002  # seconds between looks at a pending queue that has just emptied
INDEXER_IDLE_POLL_MAX = 0.05  # ... growing to this while it stays empty (an idle server's indexer: ~0.4 % of a core)
CHILD_POLL = 0.2  # seconds between a DICOM process's looks at SIGTERM and at its parent
INDEXER_NICENESS = 19  # where SCHED_IDLE is not available
INDEXER_ERROR_PAUSE = 1.0  # seconds the indexer waits after a failed round


def process_count(settings: Settings) -> int:
    """Processes listening on the DICOM port (0 in the settings: two per core, at most 8)."""
    return settings.dicom_processes or min(8, 2 * (os.cpu_count() or 1))


class _Stopping:
    """Whether SIGTERM has come: a plain flag the handler sets. Not a ``threading.Event``: a handler runs in the
    main thread between two bytecodes, possibly inside ``Event.wait``'s own lock, where ``Event.set`` waits for
    that lock for ever (seen: an indexer polling every 2 ms that never stopped)."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, *_: object) -> None:
        self.requested = True


def _child(settings: Settings, build: Build, parent: int, role: str) -> None:
    started_by = os.getppid()  # the main process (forked by it, or spawned) or the fork server (forkserver)
    # force: a child forked by the main process has the main's handler, without the child's pid in its lines
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format=f"%(asctime)s %(levelname)s %(name)s[{os.getpid()}]: %(message)s", force=True)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stopping = _Stopping()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides; Ctrl-C reaches the whole group
    pacs = build(settings, migrate=False)
    orphaned = False

    def parent_died() -> bool:  # the main process died (SIGKILL): go down with it, as a crash would
        nonlocal orphaned
        orphaned = orphaned or os.getppid() != started_by or not _alive(parent)
        return orphaned

    if role == "indexer":
        _run_when_idle()
        freeze_startup_heap()
        pause = INDEXER_IDLE_POLL
        while not stopping.requested and not parent_died():
            if _index_round(pacs):
                pause = INDEXER_IDLE_POLL
            else:
                time.sleep(pause)
                pause = min(INDEXER_IDLE_POLL_MAX, pause * 2)
        if not orphaned:
            _index_round(pacs)
    else:
        pacs.start_dicom(primary=False)
        freeze_startup_heap()
        while not stopping.requested and not parent_died():
            time.sleep(CHILD_POLL)
    pacs.close(grace=0 if orphaned else 30)


def freeze_startup_heap() -> None:
    """Leave what start-up built (modules, the application, its tables and routes: ~175,000 objects in a DICOM
    process) out of the garbage collector's full collections (``gc.freeze``), once a process is serving.

    They live as long as the process, yet every full collection walks them all: ~110 ms of CPU under the GIL
    each, during which no association moves. pynetdicom's association server runs one every 60 of its loop
    turns (``AssociationServer.service_actions``: after each association and each 0.5 s poll), so a
    retrieval or an ingest stalled 110 ms every few dozen associations; 300 short C-GET associations spent
    two of their five seconds in it (py-spy, GIL samples). After the freeze a full collection walks only what
    came later (under 1 ms). Nothing is collected first: at this point a full collection finds no garbage (0
    unreachable objects in a DICOM process built for serving) and would cost the same 110 ms per process, in
    every start of ``serve``."""
    gc.freeze()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a signal 0 is only an existence check)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or someone else's (the pid was reused)
        return False
    return True


def _index_round(pacs: Served) -> int:
    """One pass over the pending queue. Files that cannot be indexed are quarantined by ``index_pending``;
    anything else that goes wrong (the index unreachable, a bug) is logged and the indexer goes on after a
    pause: it must outlive any one file or outage, or everything acknowledged after it waits for ever."""
    try:
        return pacs.archive.index_pending()
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("indexer round failed; retrying in %.0f s", INDEXER_ERROR_PAUSE)
        time.sleep(INDEXER_ERROR_PAUSE)
        return 0


def indexer_running(children: list[BaseProcess]) -> bool | None:
    """Whether the indexer ``start`` started is alive; None where this process started none."""
    return children[-1].is_alive() if children else None


def _run_when_idle() -> None:
    """Receiving and acknowledging come first; the indexer uses what CPU they leave (SCHED_IDLE).

    Measured at one association on two cores, an indexer that competes (nice 10) costs the sender 10-15 % of
    its rate (~270 instead of ~310 instances/s). While the receivers keep every core busy, indexing waits and
    catches up when they pause; a query does not wait for it: after 50 ms it indexes what it needs itself
    (``Archive.settle``).
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(INDEXER_NICENESS)


PRELOAD = ("hounsfield.pacs", "hounsfield.dimse.server", "hounsfield.archive")  # what every child imports
_prepared: list[tuple[BaseProcess, Connection]] = []  # children forked by ``warm_up``, each waiting on its pipe


def _roles(settings: Settings) -> list[tuple[str, str]]:
    """(role, process name) of each child, the indexer last (``stop`` relies on that order)."""
    return [*(("dicom", f"hounsfield-dicom-{i}") for i in range(1, process_count(settings))),
            ("indexer", "hounsfield-indexer")]


def _context() -> multiprocessing.context.BaseContext:
    """How children are made when ``warm_up`` could not fork them: from a fork server where the platform has
    one, else spawned.

    A spawned child is a fresh interpreter that imports hounsfield again (~2 s of CPU each, five processes per
    ``serve`` on two cores). The fork server imports it once (~2 s), before any thread or connection exists, and
    forks each child from that clean state; the children still build their own application (their own database
    connections and sockets). Windows has no fork server and spawns.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    return context


def _may_fork_now() -> bool:
    """Whether this process can fork its children itself: a platform with ``fork`` (not macOS, whose system
    libraries may not be used in a forked child) and this thread alone (a fork copies locks held by other
    threads, held for ever in the child)."""
    return ("fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux")
            and threading.active_count() == 1)


def warm_up(settings: Settings) -> None:
    """Make the children before anything else exists (``serve`` calls this first): forked from this process
    where it may (``_may_fork_now``), else the fork server started so that its imports run on the other core
    while this process migrates the index and builds itself.

    Forked here, after the imports every child needs and before any thread, socket or connection, a child costs
    no import at all (the fork server's ~2 s of CPU per ``serve`` saved). Each one then waits for ``start`` to
    send it the final settings (the plugins are added to them later), and builds its own application as a
    spawned one would. A ``serve`` that stops before ``start`` (a port taken, a bad certificate) closes the
    pipes (``_release``): its children leave without building anything."""
    if _prepared:
        return
    if _may_fork_now():
        for module in PRELOAD:
            importlib.import_module(module)
        context = multiprocessing.get_context("fork")
        roles = _roles(settings)
        pipes = [context.Pipe(duplex=False) for _ in roles]
        for (role, name), (reader, writer) in zip(roles, pipes):
            child = context.Process(target=_when_started, args=(reader, pipes, role), name=name, daemon=False)
            child.start()
            _prepared.append((child, writer))
        for reader, _ in pipes:
            reader.close()
        atexit.register(_release)  # runs before multiprocessing joins its children at exit (registered later)
    elif _context().get_start_method() == "forkserver":
        # imported here: only needed, and only of use, where the platform has a fork server
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _when_started(reader: Connection, pipes: list[tuple[Connection, Connection]], role: str) -> None:
    """A child forked by ``warm_up``: wait for ``start`` (its settings, build and parent), then run as ``_child``;
    leave at once when the pipe closes first (the main process stopped, or died, before starting it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides; Ctrl-C reaches the whole group
    for other, writer in pipes:  # only the main process may hold a writer: its end closing is the EOF
        writer.close()
        if other is not reader:
            other.close()
    try:
        settings, build, parent = reader.recv()
    except EOFError:
        return
    finally:
        reader.close()
    _child(settings, build, parent, role)


def _release() -> None:
    """Close the pipes of children ``start`` never started: they leave (``_when_started``)."""
    while _prepared:
        _, writer = _prepared.pop()
        writer.close()


def start(settings: Settings, build: Build) -> list[BaseProcess]:
    """The extra DICOM processes, then the indexer (``stop`` relies on that order); each builds its own
    application with ``build`` (a module-level callable: the children get it by name, not by memory). Those
    ``warm_up`` forked are sent their start; otherwise they are made now (``_context``)."""
    if len(_prepared) == len(_roles(settings)):
        children = []
        for child, writer in _prepared:
            writer.send((settings, build, os.getpid()))
            writer.close()
            children.append(child)
        _prepared.clear()
        return children
    _release()
    context = _context()
    children = [context.Process(target=_child, args=(settings, build, os.getpid(), role), name=name, daemon=False)
                for role, name in _roles(settings)]
    for child in children:
        child.start()
    return children


def stop(children: list[BaseProcess], grace: float = 35.0) -> None:
    """Stop the DICOM processes first, so that what they acknowledge last is still indexed."""
    for group in (children[:-1], children[-1:]):
        for child in group:
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM)
        for child in group:
            child.join(grace)
            if child.is_alive():
                log.warning("process %s (%s) did not stop in %.0f s; killing it", child.pid, child.name, grace)
                child.kill()
