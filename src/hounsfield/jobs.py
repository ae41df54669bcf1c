"""Background jobs with progress: one model for every transfer that outlives its HTTP request (issue 14).

A C-STORE of a local study to a node (``send``) and a C-MOVE / C-GET of a remote study into the archive
(``retrieve``) take seconds to minutes; the request that starts one answers at once with the job, and the
client polls it (``GET /api/jobs/{id}``). A job counts ``total`` sub-operations (instances), ``done`` of them
so far, ``failed`` of those, and kind-specific counters (``sent``, ``stored``…); it ends ``completed`` (all
done, none failed), ``partial`` (some failed), or ``failed`` with a reason a person can read.

Jobs live in memory, in the process that runs them: they report on work this process is doing, and a
restart ends that work anyway. The registry keeps the last ``KEEP`` finished jobs, so that polling a job that
has just ended still answers while memory stays bounded.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Callable

from hounsfield.errors import HounsfieldError, NotFound

log = logging.getLogger("hounsfield.jobs")
KEEP = 500  # finished jobs kept for polling
STATES = ("running", "completed", "partial", "failed")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Job:
    """One job's state; changed only through its ``Jobs`` registry (which holds the lock)."""

    def __init__(self, kind: str, *, total: int = 0, **about: Any) -> None:
        self.id = uuid.uuid4().hex
        self.kind = kind
        self.state = "running"
        self.total = total
        self.done = 0
        self.failed = 0
        self.error: str | None = None
        self.started_at = _now()
        self.finished_at: str | None = None
        self.about = dict(about)  # what the job is about: study, peer, method… (shown as they are)
        self.counters: dict[str, int] = {}

    def as_dict(self) -> dict[str, Any]:
        progress = round(100 * self.done / self.total) if self.total else (100 if self.state != "running" else 0)
        return {"id": self.id, "kind": self.kind, **self.about, "state": self.state, "total": self.total,
                "done": self.done, "failed": self.failed, **self.counters, "progress": min(100, progress),
                "error": self.error, "started_at": self.started_at, "finished_at": self.finished_at}


class Jobs:
    """The jobs of this process: start one in a thread, update its progress, read them."""

    def __init__(self, keep: int = KEEP) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep

    def start(self, job: Job, work: Callable[[Job], None]) -> dict[str, Any]:
        """Register ``job`` and run ``work(job)`` in a daemon thread; ``work`` reports through ``update`` and
        ``finish``. A ``HounsfieldError`` it raises fails the job with its message; anything else fails it as
        an internal error (logged with the traceback, not shown: it may name files of the server)."""
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
            snapshot = job.as_dict()
        threading.Thread(target=self._run, args=(job, work), daemon=True, name=f"{job.kind}-{job.id[:8]}").start()
        return snapshot

    def _run(self, job: Job, work: Callable[[Job], None]) -> None:
        try:
            work(job)
        except HounsfieldError as exc:
            self.finish(job, error=str(exc))
        except Exception:  # noqa: BLE001 - a background job reports every failure in its state
            log.exception("%s job %s failed", job.kind, job.id)
            self.finish(job, error="internal error (the cause is in the server's log)")
        else:
            self.finish(job)

    def update(self, job: Job, *, total: int | None = None, done: int | None = None, failed: int | None = None,
               add: dict[str, int] | None = None, **counters: int) -> None:
        """Set progress; ``add`` adds to counters (``done``, ``failed`` or kind-specific ones)."""
        with self._lock:
            if total is not None:
                job.total = total
            if done is not None:
                job.done = done
            if failed is not None:
                job.failed = failed
            job.counters.update(counters)
            for name, amount in (add or {}).items():
                if name in ("done", "failed"):
                    setattr(job, name, getattr(job, name) + amount)
                else:
                    job.counters[name] = job.counters.get(name, 0) + amount

    def finish(self, job: Job, *, error: str | None = None) -> None:
        """End ``job`` (once: a later call changes nothing). With an ``error`` it failed, and what was not done
        counts as failed; without, it completed, or is partial when some sub-operations failed (failed when all
        did)."""
        with self._lock:
            if job.state != "running":
                return
            if error:
                job.error = error
                job.failed += max(0, job.total - job.done)
                job.state = "failed"
            elif job.total and job.failed >= job.total:
                job.state, job.error = "failed", f"all {job.total} sub-operations failed"
            else:
                job.state = "partial" if job.failed else "completed"
            job.finished_at = _now()

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            return job.as_dict()

    def all(self, *, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The jobs, the newest first."""
        with self._lock:
            return [j.as_dict() for j in reversed(self._jobs.values()) if kind in (None, j.kind)][:limit]

    def _forget_old(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state != "running"]
        for key in finished[:max(0, len(finished) - self._keep)]:
            del self._jobs[key]
