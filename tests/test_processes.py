"""How ``serve`` makes its children (``hounsfield.processes``): from a fork server where the platform has one,
spawned where it has not; the fork server imports what every child needs once."""

from __future__ import annotations

import multiprocessing

import pytest

from hounsfield import processes


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
    processes.warm_up()  # nothing to warm up: no error, no fork server


def test_sigterm_only_sets_a_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler takes no lock: it may run inside any wait of the thread it interrupts."""
    import signal

    handlers = {}
    monkeypatch.setattr(signal, "signal", lambda sig, handler: handlers.setdefault(sig, handler))
    stopping = processes._Stopping()
    assert not stopping.requested
    handlers[signal.SIGTERM](signal.SIGTERM, None)
    assert stopping.requested
