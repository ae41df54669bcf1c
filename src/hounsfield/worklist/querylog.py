"""The log of Modality Worklist C-FINDs received: calling AE, address, query keys, answer count and outcome."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Table, delete, func, insert, select

from hounsfield.db import Database
from hounsfield.errors import NotFound
from hounsfield.worklist.models import WorklistQuery

PRUNE_EVERY = 100  # rows beyond ``keep`` are removed every this many queries
_TABLE: Table = WorklistQuery.__table__  # type: ignore[assignment]


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
    def __init__(self, db: Database, keep: int = 10000) -> None:
        self.db = db
        self.keep = keep

    def record(self, *, calling_ae: str, address: str, identifier: Dataset | None, answers: int, status: int,
               error: str = "") -> int:
        """One INSERT per C-FIND (Core, no ORM unit of work: it runs before the final response goes out)."""
        values = {"calling_ae": calling_ae[:16], "address": address[:64], "keys": json.dumps(_keys_json(identifier)),
                  "answers": answers, "status": status, "error": error[:255]}
        with self.db.session() as s:
            query_id = int(s.execute(insert(_TABLE).values(**values)).inserted_primary_key[0])
            if self.keep and query_id % PRUNE_EVERY == 0:
                s.execute(delete(WorklistQuery).where(WorklistQuery.id <= query_id - self.keep))
            return query_id

    def get(self, query_id: int) -> LoggedQuery:
        with self.db.session() as s:
            row = s.get(WorklistQuery, query_id)
            if row is None:
                raise NotFound(f"no worklist query {query_id} in the log")
            return _record(row)

    def recent(self, *, limit: int = 50, offset: int = 0,
               calling_ae: str | None = None) -> tuple[int, list[LoggedQuery]]:
        """(total, newest first) of the logged queries, optionally of one calling AE."""
        where = [WorklistQuery.calling_ae == calling_ae] if calling_ae else []
        with self.db.session() as s:
            total = s.scalar(select(func.count(WorklistQuery.id)).where(*where)) or 0
            rows = s.scalars(select(WorklistQuery).where(*where).order_by(WorklistQuery.id.desc())
                             .offset(offset).limit(limit))
            return total, [_record(r) for r in rows]
