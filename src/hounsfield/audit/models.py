"""The audit trail (issue 12): one append-only row per event that matters for patient privacy and for
security (PS3.15 A.5 and IHE ATNA name the same events: who did what to which patient's data, from where,
with which outcome). Nothing updates or deletes these rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hounsfield.models import Base, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    user: Mapped[str] = mapped_column(String(64), default="", index=True)  # a user's name, or ""
    ae_title: Mapped[str] = mapped_column(String(16), default="")  # the DICOM node's, or ""
    address: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(330), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    detail: Mapped[str] = mapped_column(Text, default="")


Index("ix_audit_events_action_at", AuditEvent.action, AuditEvent.at)
