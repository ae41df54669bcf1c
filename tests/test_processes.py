"""How ``serve`` makes its children (``hounsfield.processes``): forked by the main process before it has threads
where it may, else from a fork server where the platform has one, spawned where it has not."""

from __future__ import annotations

import multiprocessing

import pytest

from hounsfield import processes
from hounsfield.config import Settings


def test_children_come_from_a_fork_server() -> None:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("this platform has no fork server")
    context = processes._context()
    assert context.get_start_method() == "forkserver"
    for module in processes.PRELOAD:  # what it imports before forking must exist
        __import__(module)


def test_without_a_fork_server_the_children_are_spawned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on Windows
    assert processes._context().get_start_method() == "spawn"
    monkeypatch.setattr(processes, "_may_fork_now", lambda: False)
    processes.warm_up(Settings())  # nothing to warm up: no error, no fork server, no child


def test_sigterm_only_sets_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler takes no lock: it may run inside any wait of the thread it interrupts."""
    import signal

    handlers = {}
    monkeypatch.setattr(signal, "signal", lambda sig, handler: handlers.setdefault(sig, handler))
    stopping = processes._Stopping()
    assert not stopping.requested
    handlers[signal.SIGTERM](signal.SIGTERM, None)
    assert stopping.requested


def test_a_forked_child_never_started_leaves_when_the_pipe_closes() -> None:
    """What a ``serve`` that fails before ``start`` leaves: children that exit without building anything."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("this platform cannot fork")
    context = multiprocessing.get_context("fork")
    pipes = [context.Pipe(duplex=False)]
    child = context.Process(target=processes._when_started, args=(pipes[0][0], pipes, "indexer"))
    child.start()
    pipes[0][0].close()
    pipes[0][1].close()  # as _release does
    child.join(60)
    assert child.exitcode == 0
