"""Modality Performed Procedure Step (PS3.4 F.7): N-CREATE and N-SET → the status of the scheduled steps.

An MPPS names the steps it performs in its ScheduledStepAttributesSequence; each item is matched to a worklist
step by Study Instance UID *and* Scheduled Procedure Step ID (never by patient alone). IN PROGRESS starts those
steps, COMPLETED or DISCONTINUED closes them. An MPPS that names no known step (unscheduled) is kept all the same.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from hounsfield.db import Database
from hounsfield.events import Listeners
from hounsfield.errors import Conflict, InvalidDataset, NotFound
from hounsfield.models import utcnow
from hounsfield.worklist import items
from hounsfield.worklist.models import PerformedStep, WorklistItem
from hounsfield.worklist.service import Worklist
from hounsfield.worklist.status import COMPLETED, DISCONTINUED, IN_PROGRESS, TRANSITIONS

log = logging.getLogger("hounsfield.mpps")
MPPS_STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)


class DuplicateInstance(Conflict):
    """N-CREATE of an MPPS SOP Instance UID that already exists."""


class MissingAttributes(InvalidDataset):
    """N-CREATE without an Attribute List (it is optional in DIMSE, PS3.7 10.1.5): none of the attributes the
    SCU must send (PS3.4 F.7.2.1, PerformedProcedureStepStatus among them) is there."""


@dataclass(frozen=True)
class PerformedProcedureStep:
    sop_instance_uid: str
    status: str
    calling_ae: str
    dataset: Dataset
    item_ids: list[int]
    created_at: datetime
    updated_at: datetime


def _status(ds: Dataset, allowed: tuple[str, ...]) -> str:
    status = str(ds.get("PerformedProcedureStepStatus") or "").strip().upper()
    if status not in allowed:
        raise InvalidDataset(f"PerformedProcedureStepStatus {status or '(empty)'!r} is not one of "
                             f"{', '.join(allowed)}")
    return status


def _step_keys(ds: Dataset) -> list[tuple[str, str]]:
    """(Study Instance UID, Scheduled Procedure Step ID) of every referenced step that names both."""
    out = []
    for ref in ds.get("ScheduledStepAttributesSequence") or []:
        study = str(ref.get("StudyInstanceUID") or "").strip()
        step = str(ref.get("ScheduledProcedureStepID") or "").strip()
        if study and step:
            out.append((study, step))
    return out


@dataclass(frozen=True)
class MppsEvent:
    """An MPPS received and applied (issue 14: told to ``Mpps.listeners`` once committed)."""

    operation: str  # "N-CREATE" or "N-SET"
    step: PerformedProcedureStep


class Mpps:
    def __init__(self, db: Database, worklist: Worklist) -> None:
        self.db = db
        self.worklist = worklist
        self.listeners: Listeners[MppsEvent] = Listeners()  # issue 14: the plugins' on_mpps

    def create(self, sop_instance_uid: str | None, attrs: Dataset, calling_ae: str = "") -> PerformedProcedureStep:
        """N-CREATE: store the MPPS (IN PROGRESS) and start the steps it names."""
        if len(attrs) == 0:
            raise MissingAttributes("N-CREATE without attributes (no Attribute List)")
        status = _status(attrs, (IN_PROGRESS,))
        uid = (sop_instance_uid or "").strip() or generate_uid()
        with self.db.session() as s:
            if s.get(PerformedStep, uid) is not None:
                raise DuplicateInstance(f"MPPS {uid} already exists")
            row = PerformedStep(sop_instance_uid=uid, status=status, calling_ae=calling_ae[:16],
                                attrs=items.pack(attrs))
            s.add(row)
            ids = self._link(s, uid, attrs, status)
            s.flush()
            created = self._record(row, ids)
        self.listeners(MppsEvent("N-CREATE", created))
        return created

    def update(self, sop_instance_uid: str, changes: Dataset) -> PerformedProcedureStep:
        """N-SET: change an MPPS that is still IN PROGRESS; COMPLETED or DISCONTINUED closes its steps."""
        with self.db.session() as s:
            row = s.get(PerformedStep, sop_instance_uid)
            if row is None:
                raise NotFound(f"no MPPS instance {sop_instance_uid}")
            if row.status != IN_PROGRESS:
                raise Conflict(f"MPPS {sop_instance_uid} is {row.status} and can no longer be changed")
            merged = items.unpack(row.attrs)
            for elem in changes:
                merged[elem.tag] = copy.deepcopy(elem)
            status = _status(merged, MPPS_STATUSES)
            row.attrs, row.status, row.updated_at = items.pack(merged), status, utcnow()
            ids = self._link(s, sop_instance_uid, merged, status)
            updated = self._record(row, ids)
        self.listeners(MppsEvent("N-SET", updated))
        return updated

    def _link(self, s: Session, uid: str, attrs: Dataset, status: str) -> list[int]:
        """Move the referenced steps (and those already linked to this MPPS) to ``status``."""
        keys = _step_keys(attrs)
        rows = {r.id: r for r in s.scalars(select(WorklistItem).where(WorklistItem.mpps_uid == uid))}
        for study, step in keys:
            rows.update({r.id: r for r in s.scalars(select(WorklistItem).where(
                WorklistItem.study_instance_uid == study, WorklistItem.sps_id == step))})
        for row in rows.values():
            if status not in TRANSITIONS[row.status]:
                log.warning("MPPS %s is %s but step %d is %s: step left unchanged", uid, status, row.id, row.status)
                continue
            self.worklist.set_status(row.id, status, mpps_uid=uid, session=s)
        if not rows:
            log.info("MPPS %s names no scheduled step (unscheduled procedure)", uid)
        return sorted(rows)

    def get(self, sop_instance_uid: str) -> PerformedProcedureStep:
        with self.db.session() as s:
            row = s.get(PerformedStep, sop_instance_uid)
            if row is None:
                raise NotFound(f"no MPPS instance {sop_instance_uid}")
            ids = s.scalars(select(WorklistItem.id).where(WorklistItem.mpps_uid == sop_instance_uid)).all()
            return self._record(row, list(ids))

    @staticmethod
    def _record(row: PerformedStep, ids: list[int]) -> PerformedProcedureStep:
        return PerformedProcedureStep(row.sop_instance_uid, row.status, row.calling_ae, items.unpack(row.attrs),
                                      ids, row.created_at, row.updated_at)
