"""The audit trail: ``record`` an event (one append-only row of ``audit_events``), ``search`` the rows.

Recording never fails nor slows the operation it records: ``record`` only queues the event, and one writer
thread per process inserts what has queued in one transaction, then hands each event to the forwarder (DICOM
Audit Messages to a syslog collector, ``audit.syslog``), which has its own queue and thread. A DICOM association
therefore never waits for the database or the network because of the audit trail, and the rows of a busy
C-STORE stream cost one INSERT per association and study (``dimse.handlers``), not one per instance.

An event that names a study but not its patient gets the patient (ID and name) from the study's index row when
it is written. The instances an association stored may still be in the pending queue when the association ends
(the indexer only gets the CPU the receivers leave), so an ``instances_stored`` event waits up to
``INDEX_WAIT`` seconds for its study's row before it is written without the patient.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import ColumnElement, func, insert, select

from hounsfield.archive import fitted
from hounsfield.audit.actions import INSTANCES_STORED, SUCCESS, Detail
from hounsfield.audit.models import AuditEvent
from hounsfield.db import Database
from hounsfield.errors import InvalidQuery
from hounsfield.models import Patient, Study, utcnow

log = logging.getLogger("hounsfield.audit")
INDEX_WAIT = 10.0  # seconds an instances_stored event waits for its study's index row
HOLD_POLL = 0.1  # seconds between looks at the index for the studies of held events
BATCH = 500  # events written in one transaction at most
# Seconds the writer goes on gathering events after the first one before it writes them (unless a flush or the
# stop asks for them at once): a steady stream (an HL7 sender, a busy REST client: an event or two per request)
# is then written in a few transactions a second, not one per request, each of which would take the index's
# write lock and sync the disk while the requests' own transactions wait for them.
LINGER = 0.1
WRITE_ATTEMPTS = 3  # a failed INSERT is tried this many times, a second apart, before its events are dropped
FLUSH_TIMEOUT = 10.0  # seconds ``flush`` (a search, the process exit) waits for the writer
MAX_DETAIL = 4000  # characters of an event's detail kept
FIELDS = ("user", "ae_title", "address", "patient_id", "patient_name", "study_instance_uid")
_TRAILS: "weakref.WeakSet[AuditTrail]" = weakref.WeakSet()  # flushed at exit
_STOP = object()


class AuditTrail:
    """The ``Recorder`` of a process (``audit.actions``). ``forward``: called by the writer with each event
    written (a dict of the row's values), e.g. ``syslog.Forwarder.send``; it must not block."""

    def __init__(self, db: Database, *, forward: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.db = db
        self.forward = forward
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._start = threading.Lock()

    def record(self, action: str, *, outcome: str = SUCCESS, user: str = "", ae_title: str = "",
               address: str = "", patient_id: str = "", patient_name: str = "", study_instance_uid: str = "",
               detail: Detail = "") -> None:
        """Queue one event, stamped now. ``detail`` may be a callable (evaluated by the writer thread: a query's
        keys are put in words off the answer path; what it reads must not change meanwhile)."""
        self._queue.put({"at": utcnow(), "action": action, "outcome": outcome, "user": user,
                         "ae_title": ae_title, "address": address, "patient_id": patient_id,
                         "patient_name": patient_name, "study_instance_uid": study_instance_uid, "detail": detail})
        if self._writer is None:
            self._start_writer()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait until every event recorded so far in this process is written (an ``instances_stored`` event
        still waiting for its study's index row excepted), at most ``timeout`` seconds."""
        if self._writer is None:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Write everything recorded (held events at once, without their patient if the index still lacks it)
        and stop the writer."""
        with self._start:  # a writer being started by another thread's first event is started once this is had
            writer = self._writer
        if writer is None:
            return
        self._queue.put(_STOP)
        writer.join(timeout)

    # ---- reading ---------------------------------------------------------------------------------------
    def search(self, *, action: str | Sequence[str] | None = None, user: str | None = None,
               ae_title: str | None = None, patient_id: str | None = None, study_instance_uid: str | None = None,
               since: datetime | None = None, until: datetime | None = None,
               outcome: str | Sequence[str] | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """The events that match every filter given, newest first. ``action`` and ``outcome`` take one value
        or several; ``since`` is inclusive, ``until`` exclusive (naive times are UTC)."""
        where = _conditions(action=action, user=user, ae_title=ae_title, patient_id=patient_id,
                            study_instance_uid=study_instance_uid, since=since, until=until, outcome=outcome)
        self.flush()
        query = (select(AuditEvent).where(*where).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                 .offset(offset).limit(limit))
        with self.db.session() as s:
            return [_as_dict(row) for row in s.scalars(query)]

    def count(self, **filters: Any) -> int:
        """How many events ``search`` with the same filters finds, without limit."""
        where = _conditions(**filters)
        self.flush()
        with self.db.session() as s:
            return s.scalar(select(func.count(AuditEvent.id)).where(*where)) or 0

    # ---- the writer thread -----------------------------------------------------------------------------
    def _start_writer(self) -> None:
        with self._start:
            if self._writer is None:
                _TRAILS.add(self)
                self._writer = threading.Thread(target=self._write_queued, name="audit-writer", daemon=True)
                self._writer.start()

    def _write_queued(self) -> None:
        held: list[tuple[float, dict[str, Any]]] = []  # (deadline, event) waiting for their study's row
        while True:
            batch = self._take(HOLD_POLL if held else None)
            stop = _STOP in batch
            now = time.monotonic()
            for event in (item for item in batch if isinstance(item, dict)):
                waits = event["action"] == INSTANCES_STORED and event["study_instance_uid"] and not event["patient_id"]
                held.append((now + INDEX_WAIT if waits else 0.0, event))
            try:
                ready, held = self._resolve(held, give_up=stop)
                self._write(ready)
            except Exception:  # noqa: BLE001 - a bug must not stop the writer: what it held is lost, and said
                log.exception("audit writer failed; %d events lost", len(held))
                held = []
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if stop:
                with self._start:
                    self._writer = None
                return

    def _take(self, timeout: float | None) -> list[Any]:
        """What has queued: the first item waited for (``timeout`` seconds at most), then what comes within
        ``LINGER`` seconds of it, up to ``BATCH`` items or a flush or the stop."""
        try:
            batch = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        until = time.monotonic() + LINGER
        while len(batch) < BATCH and isinstance(batch[-1], dict):
            try:
                batch.append(self._queue.get(timeout=max(0.0, until - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _resolve(self, held: list[tuple[float, dict[str, Any]]], *,
                 give_up: bool) -> tuple[list[dict[str, Any]], list[tuple[float, dict[str, Any]]]]:
        """(events to write now, events still waiting): each event naming a study but no patient gets the
        patient of the study's index row; one still without it waits until its deadline."""
        wanted = {e["study_instance_uid"] for _, e in held if e["study_instance_uid"] and not e["patient_id"]}
        try:
            found = _patients(self.db, wanted) if wanted else {}
        except Exception as exc:  # noqa: BLE001 - the index may come back before the deadlines pass
            log.warning("audit writer: cannot look up the patients of %d studies: %s", len(wanted), exc)
            found = {}
        ready, waiting = [], []
        now = time.monotonic()
        for deadline, event in held:
            patient = found.get(event["study_instance_uid"]) if not event["patient_id"] else None
            if patient is not None:
                event["patient_id"], event["patient_name"] = patient
            elif not event["patient_id"] and deadline > now and not give_up:
                waiting.append((deadline, event))
                continue
            ready.append(event)
        return ready, waiting

    def _write(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        rows = [_row(e) for e in events]
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.db.session() as s:
                    s.execute(insert(AuditEvent), rows)
                break
            except Exception as exc:  # noqa: BLE001 - the database may come back; the events are kept meanwhile
                if attempt == WRITE_ATTEMPTS:
                    log.error("audit writer: %d events could not be written and are lost: %s", len(rows), exc)
                else:
                    time.sleep(1.0)
        if self.forward is not None:
            for row in rows:
                self.forward(row)


def _row(event: dict[str, Any]) -> dict[str, Any]:
    """The column values of an event: the detail evaluated and bounded, every value cut to its column."""
    detail = event["detail"]
    if callable(detail):
        try:
            detail = detail()
        except Exception as exc:  # noqa: BLE001 - an event is written without its detail rather than lost
            detail = f"(detail unavailable: {type(exc).__name__})"
    values = {k: ("" if v is None else str(v)) if k in FIELDS else v for k, v in event.items()}
    return fitted(AuditEvent, {**values, "detail": str(detail)[:MAX_DETAIL]})


def _patients(db: Database, study_uids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Patient ID and name of each study of the index, by Study Instance UID."""
    query = (select(Study.study_instance_uid, Patient.patient_id, Study.patient_name)
             .join(Patient, Study.patient_fk == Patient.id).where(Study.study_instance_uid.in_(list(study_uids))))
    with db.session() as s:
        return {uid: (pid, name) for uid, pid, name in s.execute(query)}


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _conditions(*, action: str | Sequence[str] | None = None, user: str | None = None,
                ae_title: str | None = None, patient_id: str | None = None, study_instance_uid: str | None = None,
                since: datetime | None = None, until: datetime | None = None,
                outcome: str | Sequence[str] | None = None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    for column, wanted in ((AuditEvent.action, action), (AuditEvent.outcome, outcome)):
        if wanted:
            where.append(column.in_([wanted] if isinstance(wanted, str) else list(wanted)))
    for column, value in ((AuditEvent.user, user), (AuditEvent.ae_title, ae_title),
                          (AuditEvent.patient_id, patient_id), (AuditEvent.study_instance_uid, study_instance_uid)):
        if value:
            where.append(column == value)
    if since is not None:
        where.append(AuditEvent.at >= _utc(since))
    if until is not None:
        where.append(AuditEvent.at < _utc(until))
    return where


def _as_dict(row: AuditEvent) -> dict[str, Any]:
    return {"id": row.id, "at": _utc(row.at), "action": row.action, "outcome": row.outcome,
            **{name: getattr(row, name) for name in FIELDS}, "detail": row.detail}


def parse_time(text: str, *, end: bool = False) -> datetime:
    """A search bound given as ISO 8601 text (``2026-01-31``, ``2026-01-31T08:30``, with ``Z`` or an offset;
    without one it is UTC). A day alone is its start, or with ``end`` the start of the next day (``until`` is
    exclusive: ``until=2026-01-31`` includes that day). ``InvalidQuery`` for anything else."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidQuery(f"{text!r} is not a date or time (ISO 8601: 2026-01-31 or 2026-01-31T08:30Z)") from None
    if end and len(text.strip()) in (8, 10):  # a day alone
        try:
            moment += timedelta(days=1)
        except OverflowError:  # 9999-12-31: to the end of time
            moment = datetime.max
    try:
        return _utc(moment)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before the first day there is in UTC
        raise InvalidQuery(f"{text!r} is out of range") from None


@atexit.register
def _flush_all() -> None:
    for trail in list(_TRAILS):
        trail.flush()
