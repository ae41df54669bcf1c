"""Listeners of domain events (issue 14): what a service tells once a change is committed — a worklist item
changed, an MPPS received, an HL7 message applied — to whoever the composition root subscribed (the plugins).

A listener must return at once (the plugins' runner only queues the event); one that raises anyway is logged
and changes nothing for the service's caller: the change is made, the DIMSE or HL7 answer goes out.
"""

from __future__ import annotations

import logging
from typing import Callable, Generic, TypeVar

log = logging.getLogger("hounsfield.events")
E = TypeVar("E")


class Listeners(Generic[E]):
    """Callbacks of one kind of event, told in the order they were added."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[E], None]] = []

    def add(self, callback: Callable[[E], None]) -> None:
        self._callbacks.append(callback)

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def __call__(self, event: E) -> None:
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - see the module docstring
                log.exception("a listener of %s failed", type(event).__name__)
