"""Waiting for what a server does in the background (indexing, events, deliveries): poll until it holds, fail
naming what was awaited and the last value seen. A deadline guards against a hang; it is not a time bound on
the behaviour under test."""

from __future__ import annotations

import time
from typing import Any, Callable

POLL = 0.1  # seconds between looks


def eventually(get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 60.0, what: str = "") -> Any:
    """``get()`` as soon as ``ok`` holds for it; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'the condition'}; last: {value!r}")
        time.sleep(POLL)
