"""Worklist tables: one row per Scheduled Procedure Step, the MPPS instances, and the log of MWL queries.

As in the archive index (``hounsfield.models``) the matching keys are indexed columns holding values normalised
with ``matching.normalize_*``; the full item is kept as zlib-compressed DICOM JSON (``attrs``), holding exactly
one item in its ScheduledProcedureStepSequence, so every attribute received is returned as received.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hounsfield.models import Base, utcnow


class WorklistItem(Base):
    """One scheduled procedure step. Its id is in REST paths, CLI commands and the MPPS link, so it is never
    handed out again once deleted: AUTOINCREMENT on SQLite, whose plain rowid would reuse the highest id after a
    delete (migration 0004); PostgreSQL's sequence never gives a value twice."""

    __tablename__ = "worklist_items"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="SCHEDULED")
    patient_id: Mapped[str] = mapped_column(String(64), index=True, default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(330), index=True, default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), index=True, default="")
    requested_procedure_id: Mapped[str] = mapped_column(String(64), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(330), default="")
    requesting_physician: Mapped[str] = mapped_column(String(330), default="")
    modality: Mapped[str] = mapped_column(String(64), default="")
    station_aet: Mapped[str] = mapped_column(String(340), default="")  # normalize_multi_value: "\A\B\"
    station_name: Mapped[str] = mapped_column(String(64), default="")
    start_date: Mapped[str] = mapped_column(String(8), default="")
    start_time: Mapped[str] = mapped_column(String(13), default="")
    performing_physician: Mapped[str] = mapped_column(String(330), default="")
    sps_id: Mapped[str] = mapped_column(String(64), default="")
    sps_location: Mapped[str] = mapped_column(String(64), default="")
    # the order an HL7 message names (``Batch.items_of_order``), as stored (stripped), cut to the column
    placer_order_number: Mapped[str] = mapped_column(String(64), index=True, default="")
    filler_order_number: Mapped[str] = mapped_column(String(64), index=True, default="")
    mpps_uid: Mapped[str] = mapped_column(String(64), default="")
    origin: Mapped[str] = mapped_column(String(64), default="")
    attrs: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# The shapes a modality asks: day (+ time) range, day + modality (+ station), step of a study (MPPS).
# Day + modality: the entries of one modality's day come in answer order (start, then id: no sort) and hold the
# station, so "which of them are on my station" is answered from the index, before any row is read.
Index("ix_worklist_items_start", WorklistItem.start_date, WorklistItem.start_time)
Index("ix_worklist_items_modality_day", WorklistItem.modality, WorklistItem.start_date, WorklistItem.start_time,
      WorklistItem.id, WorklistItem.station_aet)
Index("ix_worklist_items_study_step", WorklistItem.study_instance_uid, WorklistItem.sps_id)


class PerformedStep(Base):
    """A Modality Performed Procedure Step instance (N-CREATE, then N-SET until COMPLETED or DISCONTINUED)."""

    __tablename__ = "mpps"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    attrs: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WorklistQuery(Base):
    """One MWL C-FIND received: who asked, what, and how many answers went back ("why didn't my modality see it?")."""

    __tablename__ = "worklist_queries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True, default=utcnow)
    calling_ae: Mapped[str] = mapped_column(String(16), index=True, default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    keys: Mapped[str] = mapped_column(Text)  # DICOM JSON of the identifier
    answers: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(String(255), default="")
