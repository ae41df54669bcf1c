"""The HL7 message log table: every message received, as its bytes, with how it was acknowledged and what was
done (issue 14). Read by REST, the CLI and the HL7 page; a message is replayed from its bytes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hounsfield.models import Base, utcnow


class Hl7Message(Base):
    """One message received (or replayed: ``replay_of`` names the logged message it repeats). Its id is in REST
    paths and CLI commands, so it is never handed out again (AUTOINCREMENT on SQLite, as worklist items)."""

    __tablename__ = "hl7_messages"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True, default=utcnow)
    address: Mapped[str] = mapped_column(String(64), default="")  # the sender's address, or "replay"
    sending_application: Mapped[str] = mapped_column(String(255), default="")  # MSH-3
    sending_facility: Mapped[str] = mapped_column(String(255), default="")  # MSH-4
    message_type: Mapped[str] = mapped_column(String(32), index=True, default="")  # MSH-9, e.g. ORM^O01
    control_id: Mapped[str] = mapped_column(String(64), index=True, default="")  # MSH-10
    patient_id: Mapped[str] = mapped_column(String(64), index=True, default="")  # PID-3
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the bytes between the MLLP start and end blocks
    complete: Mapped[int] = mapped_column(Integer, default=1)  # 0: longer than hl7_max_message_bytes, cut there
    ack_code: Mapped[str] = mapped_column(String(2), index=True, default="")  # AA, AE or AR
    ack: Mapped[str] = mapped_column(Text, default="")  # the acknowledgment sent back
    outcome: Mapped[str] = mapped_column(Text, default="")  # what was done, or why nothing was
    item_ids: Mapped[str] = mapped_column(String(1024), default="")  # the worklist items it touched, "1,2"
    replay_of: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
