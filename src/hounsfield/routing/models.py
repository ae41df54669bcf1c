"""Tables of routing (issue 14): the rules added through REST, the delivery queue, and the feed's cursor.

A delivery (``RoutingJob``) is one instance (``instance_stored``) or one study at one moment (``study_stable``)
for one node; ``key`` names it uniquely, so that the feed telling an instance again after a restart adds nothing.
``due_ms`` (milliseconds since the epoch) is when it is next tried: a plain number compares the same way on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hounsfield.models import Base, utcnow

PENDING, FAILED, DONE = "pending", "failed", "done"
STATES = (PENDING, FAILED, DONE)


class RoutingRuleRow(Base):
    """A rule added through REST (TOML rules are read-only and not stored here): its definition as JSON."""

    __tablename__ = "routing_rules"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RoutingJob(Base):
    __tablename__ = "routing_jobs"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are in REST paths: never handed out again

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    rule: Mapped[str] = mapped_column(String(64), index=True)
    peer: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_instance_uid: Mapped[str] = mapped_column(String(64), default="")  # "": the whole study
    transfer_syntax: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), index=True, default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_ms: Mapped[int] = mapped_column(BigInteger, index=True, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RoutingCursor(Base):
    """Where the routing feed resumes after a restart (``feed.IndexFeed.resume_point``)."""

    __tablename__ = "routing_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
