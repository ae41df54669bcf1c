"""The HL7 message log: each message as received (its bytes), its header, the acknowledgment sent back and
what was done with it; the newest first, filtered, and pruned beyond ``hl7_log_size``.

Written synchronously, with the changes of the message applied (in their transaction) or after it was refused,
and before its ACK is sent: an ACK the sender got always has its row (the MWL query log queues instead, since a
C-FIND answer must not wait; an HL7 sender waits for the ACK anyway)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hounsfield.db import Database
from hounsfield.errors import NotFound
from hounsfield.hl7.models import Hl7Message
from hounsfield.models import utcnow

PRUNE_EVERY = 100  # rows beyond ``keep`` are removed every this many messages
_INSERT = Hl7Message.__table__.insert()
FIELDS = ("address", "sending_application", "sending_facility", "message_type", "control_id", "patient_id")


_LENGTHS = {name: Hl7Message.__table__.c[name].type.length for name in FIELDS}


@dataclass(frozen=True)
class LoggedMessage:
    id: int
    received_at: datetime
    address: str
    sending_application: str
    sending_facility: str
    message_type: str
    control_id: str
    patient_id: str
    raw: bytes
    complete: bool
    ack_code: str
    ack: str
    outcome: str
    item_ids: tuple[int, ...]
    replay_of: int | None


def _fitted(values: dict[str, Any]) -> dict[str, Any]:
    """Values cut to their columns' lengths (a header field may be as long as the message)."""
    out = dict(values)
    for name, length in _LENGTHS.items():
        out[name] = str(out.get(name, ""))[:length]
    return out


def _record(row: Hl7Message) -> LoggedMessage:
    return LoggedMessage(row.id, row.received_at, row.address, row.sending_application, row.sending_facility,
                         row.message_type, row.control_id, row.patient_id, row.raw, bool(row.complete),
                         row.ack_code, row.ack, row.outcome,
                         tuple(int(i) for i in row.item_ids.split(",") if i), row.replay_of)


class MessageLog:
    def __init__(self, db: Database, keep: int = 100000) -> None:
        self.db = db
        self.keep = keep

    def write(self, *, raw: bytes, complete: bool, ack_code: str, ack: str, outcome: str,
              item_ids: tuple[int, ...] = (), replay_of: int | None = None, session: Session | None = None,
              **header: str) -> int:
        """One row (``header``: the values of ``FIELDS``); returns its id. Every ``PRUNE_EVERY`` ids, rows beyond
        ``keep`` go. ``session``: written in the caller's transaction (the message's changes of the worklist:
        one commit for the two), else in a transaction of its own."""
        values = _fitted({**header, "received_at": utcnow(), "raw": raw, "complete": int(complete),
                          "ack_code": ack_code, "ack": ack, "outcome": outcome,
                          "item_ids": ",".join(map(str, item_ids))[:1024], "replay_of": replay_of})
        if session is not None:
            return self._insert(session, values)
        with self.db.session() as s:
            return self._insert(s, values)

    def _insert(self, s: Session, values: dict[str, Any]) -> int:
        conn = s.connection()  # a Core insert in the session's transaction: no ORM statement machinery
        message_id = int(conn.execute(_INSERT, values).inserted_primary_key[0])
        if self.keep and message_id % PRUNE_EVERY == 0:
            conn.execute(delete(Hl7Message.__table__).where(Hl7Message.__table__.c.id <= message_id - self.keep))
        return message_id

    def get(self, message_id: int) -> LoggedMessage:
        with self.db.session() as s:
            row = s.get(Hl7Message, message_id)
            if row is None:
                raise NotFound(f"no HL7 message {message_id} in the log")
            return _record(row)

    def recent(self, *, limit: int = 50, offset: int = 0, ack_code: str | None = None,
               message_type: str | None = None, patient_id: str | None = None,
               control_id: str | None = None) -> tuple[int, list[LoggedMessage]]:
        """(total, newest first) of the logged messages matching every filter given (exact values)."""
        where = [column == wanted for column, wanted in (
            (Hl7Message.ack_code, ack_code), (Hl7Message.message_type, message_type),
            (Hl7Message.patient_id, patient_id), (Hl7Message.control_id, control_id)) if wanted]
        with self.db.session() as s:
            total = s.scalar(select(func.count(Hl7Message.id)).where(*where)) or 0
            rows = s.scalars(select(Hl7Message).where(*where).order_by(Hl7Message.id.desc())
                             .offset(offset).limit(limit))
            return total, [_record(r) for r in rows]
