"""The log of Modality Worklist C-FINDs received: calling AE, address, query keys, answer count and outcome."""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Table, delete, func, insert, select

from hounsfield.db import Database
from hounsfield.errors import NotFound
from hounsfield.worklist.models import WorklistQuery

log = logging.getLogger("hounsfield.worklist")
PRUNE_EVERY = 100  # rows beyond ``keep`` are removed every this many queries
FLUSH_TIMEOUT = 10.0  # seconds a reader (or the process exit) waits for queued entries
WRITER_IDLE = 5.0  # seconds the writer thread waits for entries before it ends
_TABLE: Table = WorklistQuery.__table__  # type: ignore[assignment]
_LOGS: weakref.WeakSet[QueryLog] = weakref.WeakSet()  # flushed at exit


@dataclass(frozen=True)
class LoggedQuery:
    id: int
    received_at: datetime
    calling_ae: str
    address: str
    keys: dict[str, Any]
    answers: int
    status: int
    error: str

    def identifier(self) -> Dataset:
        return Dataset.from_json(self.keys)


def _keys_json(identifier: Dataset | None) -> dict[str, Any]:
    if identifier is None:
        return {}
    try:
        return identifier.to_json_dict()
    except Exception:  # noqa: BLE001 - a malformed identifier is logged without its keys, never lost
        return {}


def _record(row: WorklistQuery) -> LoggedQuery:
    return LoggedQuery(row.id, row.received_at, row.calling_ae, row.address, json.loads(row.keys or "{}"),
                       row.answers, row.status, row.error)


class QueryLog:
    """The log. ``record`` only queues the entry: a background thread writes it, so the final C-FIND response
    never waits for the database (an entry appears within milliseconds; readers in this process wait for it)."""

    def __init__(self, db: Database, keep: int = 10000) -> None:
        self.db = db
        self.keep = keep
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._start = threading.Lock()

    def record(self, *, calling_ae: str, address: str, identifier: Dataset | None, answers: int, status: int,
               error: str = "") -> None:
        """Queue one entry; the writer thread serialises the identifier too (the caller must not change it)."""
        self._enqueue({"calling_ae": calling_ae[:16], "address": address[:64], "keys": identifier,
                       "answers": answers, "status": status, "error": error[:255]})

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait until every entry queued so far is written (at most ``timeout`` seconds)."""
        if self._writer is None:
            return
        done = threading.Event()
        self._enqueue({"flushed": done})
        done.wait(timeout)

    def _enqueue(self, values: dict[str, Any]) -> None:
        self._queue.put(values)
        with self._start:
            if self._writer is None:
                _LOGS.add(self)
                self._writer = threading.Thread(target=self._write_queued, name="worklist-query-log", daemon=True)
                self._writer.start()

    def _write_queued(self) -> None:
        """The writer thread; it ends after ``WRITER_IDLE`` seconds without entries (the next one restarts it)."""
        while True:
            try:
                values = self._queue.get(timeout=WRITER_IDLE)
            except queue.Empty:
                with self._start:
                    if self._queue.empty():
                        self._writer = None
                        return
                continue
            if "flushed" in values:
                values["flushed"].set()
                continue
            try:
                self.write({**values, "keys": json.dumps(_keys_json(values["keys"]))})
            except Exception:  # noqa: BLE001 - a lost log line must not stop the writer
                log.exception("could not write the MWL query log entry of %s", values["calling_ae"])

    def write(self, values: dict[str, Any]) -> int:
        """One INSERT of a row's values (``keys``: the identifier's DICOM JSON text), Core, no ORM unit of
        work; every ``PRUNE_EVERY`` ids, rows beyond ``keep`` go. Returns the entry's id."""
        with self.db.session() as s:
            query_id = int(s.execute(insert(_TABLE).values(**values)).inserted_primary_key[0])
            if self.keep and query_id % PRUNE_EVERY == 0:
                s.execute(delete(WorklistQuery).where(WorklistQuery.id <= query_id - self.keep))
            return query_id

    def get(self, query_id: int) -> LoggedQuery:
        self.flush()
        with self.db.session() as s:
            row = s.get(WorklistQuery, query_id)
            if row is None:
                raise NotFound(f"no worklist query {query_id} in the log")
            return _record(row)

    def recent(self, *, limit: int = 50, offset: int = 0,
               calling_ae: str | None = None) -> tuple[int, list[LoggedQuery]]:
        """(total, newest first) of the logged queries, optionally of one calling AE."""
        where = [WorklistQuery.calling_ae == calling_ae] if calling_ae else []
        self.flush()
        with self.db.session() as s:
            total = s.scalar(select(func.count(WorklistQuery.id)).where(*where)) or 0
            rows = s.scalars(select(WorklistQuery).where(*where).order_by(WorklistQuery.id.desc())
                             .offset(offset).limit(limit))
            return total, [_record(r) for r in rows]


@atexit.register
def _flush_all() -> None:
    for query_log in list(_LOGS):
        query_log.flush()
