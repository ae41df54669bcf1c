"""Running plugin events off every request's path: one worker thread and one bounded queue per plugin.

``submit`` never waits: a full queue drops the event (and says so in a warning naming the plugin, at most
once a minute with the count), so that a plugin that sleeps or hangs costs nothing but its own events. What a
callback raises is logged with the plugin's name and the callback's, with its traceback, and the worker goes on
with the next event.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger("hounsfield.plugins")
QUEUE_SIZE = 10000  # events waiting per plugin
DROP_WARNING_EVERY = 60.0  # seconds between warnings about a plugin's dropped events
_STOP = object()


class _Worker:
    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.dropped = 0
        self._warned = 0.0
        self.thread = threading.Thread(target=self._run, name=f"plugin-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is _STOP:
                return
            what, func, args = job
            try:
                func(*args)
            except Exception:  # noqa: BLE001 - a plugin's failure is its own: logged, the next event runs
                log.exception("plugin %s: %s callback %s failed", self.name, what, getattr(func, "__name__", func))

    def put(self, job: Any) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            now = time.monotonic()
            if now - self._warned > DROP_WARNING_EVERY:
                self._warned = now
                log.warning("plugin %s: its event queue is full (%d waiting): %d events dropped so far (the "
                            "latest: %s)", self.name, self.queue.qsize(), self.dropped, job[0])


class Runner:
    """The workers of the plugins, started on their first event."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self.size = size
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()

    def submit(self, plugin: str, what: str, func: Callable[..., Any], *args: Any) -> None:
        worker = self._workers.get(plugin)
        if worker is None:
            with self._lock:
                worker = self._workers.setdefault(plugin, _Worker(plugin, self.size))
        worker.put((what, func, args))

    def dropped(self, plugin: str) -> int:
        worker = self._workers.get(plugin)
        return worker.dropped if worker else 0

    def close(self, grace: float = 5.0) -> None:
        """Let each worker finish what it is doing (within ``grace`` seconds in all); queued events are lost
        with the process, as they would be in a crash (they were told, never promised: see ``plugins.api``)."""
        deadline = time.monotonic() + grace
        for worker in self._workers.values():
            while True:  # make room for the stop mark: the queue is dropped, not drained
                try:
                    worker.queue.get_nowait()
                except queue.Empty:
                    break
            try:
                worker.queue.put(_STOP, timeout=0.5)
            except queue.Full:  # refilled meanwhile: the daemon thread ends with the process
                pass
        for worker in self._workers.values():
            worker.thread.join(max(0.0, deadline - time.monotonic()))
