"""What de-identification replaced (issue 12): the original of every UID and patient identity it generated, so
that the same original always gets the same replacement (a structure set de-identified after its CT still
points at it) and an admin can go back. Only admins may read it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from hounsfield.models import Base, utcnow


class DeidMapping(Base):
    __tablename__ = "deid_mappings"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "uid", "patient_id", ...
    original: Mapped[str] = mapped_column(String(330), primary_key=True)
    replacement: Mapped[str] = mapped_column(String(330), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
