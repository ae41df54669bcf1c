"""pynetdicom's reactor loops poll with a fixed 1 ms sleep between checks.

Each association runs two polling threads (the DUL reading the socket, the association reading the DIMSE
queue), each sleeping 1 ms whenever it finds nothing to do, so every C-STORE request and its response wait up to
a millisecond or two in queues: a large share of a 0.5 MB CT instance's ~7 ms on this hardware (see
bench/RESULTS.md). pynetdicom has no setting for it; its modules call ``time.sleep`` through their own ``time``
name, so giving those two modules a ``time`` whose ``sleep`` is capped shortens the wait without touching any
other code. The cost is more wake-ups while an association sits idle (10,000/s, a few % of a core).
"""

from __future__ import annotations

import time
import types

POLL_INTERVAL = 0.0001  # seconds


def _capped_time_module() -> types.ModuleType:
    shim = types.ModuleType("time")
    shim.__dict__.update({k: v for k, v in vars(time).items() if not k.startswith("__")})
    shim.sleep = lambda seconds: time.sleep(min(seconds, POLL_INTERVAL))  # type: ignore[attr-defined]
    return shim


def shorten_reactor_polling() -> None:
    """Apply once per process, before associations start."""
    from pynetdicom import association, dul

    if getattr(association.time, "sleep", None) is time.sleep:
        shim = _capped_time_module()
        association.time = shim  # type: ignore[attr-defined]
        dul.time = shim  # type: ignore[attr-defined]
