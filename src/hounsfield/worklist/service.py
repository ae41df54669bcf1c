"""The worklist: schedule, update, cancel, delete and find items; step status and its allowed transitions.

Domain code only: it knows datasets and the index, never sockets or HTTP, and raises ``hounsfield.errors``.
Every way in (REST, web form, CLI, .wl import) calls ``schedule``/``import_items``; the MWL SCP calls ``find``;
MPPS calls ``set_status``; HL7 orders and patient updates (``hounsfield.hl7``) make their changes in a ``batch``,
one transaction per message, after finding the items of an order or a patient (``Batch.items_of_order``,
``Batch.items_of_patient``).

Every change is an audit event (``audit.actions``: worklist item created, changed, cancelled, deleted), recorded
once it is committed, with the patient and study of the item; ``actor`` names the user who made it (the web
layer passes its user; "" is the system or the CLI).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Callable, Collection, Iterable, Iterator

from pydicom.dataset import Dataset
from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session

from hounsfield import matching
from hounsfield.audit.actions import (
    NOT_RECORDED,
    WORKLIST_ITEM_CANCELLED,
    WORKLIST_ITEM_CHANGED,
    WORKLIST_ITEM_CREATED,
    WORKLIST_ITEM_DELETED,
    Recorder,
)
from hounsfield.db import Database
from hounsfield.dicomfile import unpack_json
from hounsfield.errors import Conflict, NotFound
from hounsfield.events import Listeners
from hounsfield.models import Study, utcnow
from hounsfield.worklist import items
from hounsfield.worklist.models import WorklistItem
from hounsfield.worklist.mwl import Encoding, MwlQuery
from hounsfield.worklist.querylog import QueryLog
from hounsfield.worklist.status import (
    CANCELED,
    DISCONTINUED,
    OPEN,
    SCHEDULED,
    check_transition,
    with_status,
)

log = logging.getLogger("hounsfield.worklist")

EXPIRE_CHECK_SECONDS = 60.0
_ORDER = (WorklistItem.start_date, WorklistItem.start_time, WorklistItem.id)
_INSERT_ITEM = WorklistItem.__table__.insert()
# The statements of the checks of every new or changed item, built once (with and without an item to exclude):
# building and caching a statement per call costs more than running it.
_OTHER_PATIENT = {excluding: select(WorklistItem.id, WorklistItem.patient_id).where(
    WorklistItem.accession_number == bindparam("accession"),
    or_(WorklistItem.patient_id != bindparam("patient_id"),
        WorklistItem.issuer_of_patient_id != bindparam("issuer")),
    *([WorklistItem.id != bindparam("exclude")] if excluding else [])).order_by(WorklistItem.id).limit(1)
    for excluding in (False, True)}
_SAME_STEP = {excluding: select(WorklistItem.id).where(
    WorklistItem.study_instance_uid == bindparam("study_instance_uid"), WorklistItem.sps_id == bindparam("sps_id"),
    *([WorklistItem.id != bindparam("exclude")] if excluding else [])).limit(1)
    for excluding in (False, True)}
# Both checks of a new step in one statement: its duplicate (kind 1) and another patient's item with its
# accession number (kind 0).
_dup = _SAME_STEP[False].add_columns(literal(1).label("kind"), WorklistItem.patient_id).subquery()
_acc = _OTHER_PATIENT[False].add_columns(literal(0).label("kind")).subquery()
_NEW_STEP_CHECKS = union_all(select(_dup.c.kind, _dup.c.id, _dup.c.patient_id),
                             select(_acc.c.kind, _acc.c.id, _acc.c.patient_id))
# ``Batch.items_of_order``: by placer (else filler) order number, among the patient's (or accession's) steps; a
# Core read (an ``Item`` needs no ORM object: a change of it gets its row by id).
_OF_ORDER = {(placer, accession): select(WorklistItem.__table__).where(
    (WorklistItem.placer_order_number if placer else WorklistItem.filler_order_number) == bindparam("number"),
    or_(WorklistItem.patient_id == bindparam("patient_id"),
        *([WorklistItem.accession_number == bindparam("accession")] if accession else []))
).order_by(WorklistItem.id) for placer in (False, True) for accession in (False, True)}


class WrittenRow(SimpleNamespace):
    """A worklist row as a Core insert wrote it: its columns as attributes, read as those of a ``WorklistItem``
    (by ``Worklist._item`` and the audit), without an ORM instance, whose instrumented construction cost as much
    as the insert's own SQLAlchemy work."""


@dataclass(frozen=True)
class Options:
    """Site options of the MWL SCP (settings ``worklist_*``)."""

    station_only: bool = False  # answer only items scheduled on the calling AE's station
    days: int = 0  # only items within this many days of today (0: any day)
    max_answers: int = 0  # at most this many answers (0: all)
    fuzzy_pn: bool = False  # case-insensitive person name matching
    show_closed: bool = False  # completed / discontinued / canceled steps still answered
    expire_hours: int = 0  # steps still SCHEDULED this long after their start become DISCONTINUED (0: never)


@dataclass(frozen=True)
class Item:
    """One scheduled procedure step as REST, CLI and the web page show it."""

    id: int
    status: str
    dataset: Dataset
    origin: str
    mpps_uid: str
    created_at: datetime
    updated_at: datetime
    study_received: bool = False  # images with the item's Study Instance UID are in the archive
    warnings: tuple[str, ...] = ()  # what was taken but deserves a look (``schedule`` and ``update`` say)


@dataclass(frozen=True)
class WorklistChange:
    """A committed change of the worklist (issue 14: told to ``Worklist.listeners``). ``item_id`` is None for a
    change of many items at once (an import, the expiry of old steps), which ``detail`` describes."""

    action: str  # the audit action: worklist_item_created, _changed, _cancelled, _deleted
    item_id: int | None
    status: str = ""
    patient_id: str = ""
    study_instance_uid: str = ""
    actor: str = ""
    detail: str = ""


@dataclass
class ImportSummary:
    added: int = 0
    duplicates: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)


def _merge(base: Dataset, changes: Dataset) -> Dataset:
    """``base`` with the elements of ``changes``; the one step item is merged element by element too."""
    merged = items.copied(base)
    for elem in changes:
        if elem.keyword == items.STEPS and elem.value and items.STEPS in merged:
            step = items.step_of(merged)
            for sub in elem.value[0]:
                step[sub.tag] = items.copied_element(sub)
        else:
            merged[elem.tag] = items.copied_element(elem)
    return merged


class Worklist:
    def __init__(self, db: Database, options: Options = Options(), *, query_log_size: int = 10000,
                 clock: Callable[[], datetime] = datetime.now, audit: Recorder = NOT_RECORDED) -> None:
        self.db = db
        self.audit = audit  # also the MWL and MPPS handlers' (``worklist.dimse``)
        self.options = options
        self.queries = QueryLog(db, query_log_size)
        self.clock = clock
        self._last_expiry = 0.0
        self._expiry_lock = threading.Lock()
        self.listeners: Listeners[WorklistChange] = Listeners()  # issue 14: the plugins' on_worklist_changed

    # ---- ways in -------------------------------------------------------------------------------------------
    def schedule(self, ds: Dataset, *, origin: str = "api", actor: str = "") -> list[Item]:
        """Validate a new request (one or more steps), fill its identifiers and store one row per step; each item
        returned carries the warnings about the request (``_accession_warnings``)."""
        return self.schedule_many([ds], origin=origin, actor=actor)

    def schedule_many(self, requests: Iterable[Dataset], *, origin: str = "api",
                      max_steps: int | None = None, actor: str = "") -> list[Item]:
        """``schedule`` for several requests in one transaction: each is validated in turn (an ``InvalidItem``
        carries the request's position as ``request_index``), then every step of every request is stored, in
        order, or none is. ``max_steps``: a request with more steps is an ``InvalidItem`` too (REST: one object
        posted answers one item)."""
        created: list[Item] = []
        with self.batch(actor=actor, origin=origin) as batch:
            for index, ds in enumerate(requests):
                try:
                    created.extend(batch.schedule(ds, max_steps=max_steps))
                except items.InvalidItem as exc:
                    exc.request_index = index
                    raise
        return created

    @contextmanager
    def batch(self, *, actor: str = "", origin: str = "api") -> Iterator["Batch"]:
        """A ``Batch`` of changes in one transaction: committed when the block ends, rolled back (nothing
        written, nothing audited) when it raises; the audit events are recorded once committed."""
        with self.db.session() as s:
            batch = Batch(self, s, actor=actor, origin=origin)
            yield batch
        for action, row, what in batch.events:
            self._audit(action, row, actor, what)

    def _check(self, ds: Dataset, *, strict: bool) -> None:
        """Normalise the case of ``ds`` and validate it (``items``), a birth date against the service's today."""
        items.normalise(ds)
        items.validate(ds, strict=strict, today=self.clock().date())

    def _new_row(self, s: Session, values: dict[str, Any], *, checked: bool = False) -> WrittenRow:
        """Insert one row (a Core insert in the session's transaction: no unit of work to flush) and return what
        was written, its defaults included. ``checked``: the caller has refused a duplicate already
        (``_new_step_checks``)."""
        if not checked:
            self._refuse_duplicate(s, values)
        now = utcnow()
        full = {"mpps_uid": "", **values, "created_at": now, "updated_at": now}
        new_id = s.connection().execute(_INSERT_ITEM, full).inserted_primary_key[0]
        return WrittenRow(id=int(new_id), **full)

    @staticmethod
    def _accession_warnings(s: Session, cols: dict[str, Any], exclude: int | None = None) -> tuple[str, ...]:
        """A warning (also logged) when another patient's item has the same accession number: it identifies one
        imaging service request (Accession Number (0008,0050), PS3.3 C.4.12), so images filed under it would be
        mixed up. Taken all the same: the order system owns the number, and one of the two may be a typo the desk
        corrects with ``update``."""
        accession = cols["accession_number"]
        if not accession:
            return ()
        s.flush()  # the batch's pending changes too: a Core read on the session's connection does not autoflush
        found = s.connection().execute(_OTHER_PATIENT[exclude is not None], {
            "accession": accession, "patient_id": cols["patient_id"], "issuer": cols["issuer_of_patient_id"],
            "exclude": exclude}).first()
        return Worklist._accession_warning(cols, found)

    @staticmethod
    def _new_step_checks(s: Session, cols: dict[str, Any]) -> tuple[str, ...]:
        """``_accession_warnings`` and then ``_refuse_duplicate`` of a new step, in one statement when both apply."""
        if not cols["accession_number"] or not cols["sps_id"]:
            warnings = Worklist._accession_warnings(s, cols)
            Worklist._refuse_duplicate(s, cols)
            return warnings
        s.flush()
        found = s.connection().execute(_NEW_STEP_CHECKS, {
            "accession": cols["accession_number"], "patient_id": cols["patient_id"],
            "issuer": cols["issuer_of_patient_id"], "study_instance_uid": cols["study_instance_uid"],
            "sps_id": cols["sps_id"]}).all()
        warnings = Worklist._accession_warning(cols, next((r for r in found if r.kind == 0), None))
        if any(r.kind == 1 for r in found):
            raise Conflict(f"step {cols['sps_id']} of study {cols['study_instance_uid']} is already scheduled")
        return warnings

    @staticmethod
    def _accession_warning(cols: dict[str, Any], found: Any) -> tuple[str, ...]:
        if found is None:
            return ()
        accession = cols["accession_number"]
        warning = (f"Accession number {accession} is already used by patient {found.patient_id} (item {found.id}): "
                   "an accession number identifies one imaging service request (PS3.3 C.4.12)")
        log.warning("patient %s: %s", cols["patient_id"], warning)
        return (warning,)

    @staticmethod
    def _refuse_duplicate(s: Session, cols: dict[str, str], exclude: int | None = None) -> None:
        if not cols["sps_id"]:
            return
        s.flush()
        same = {"study_instance_uid": cols["study_instance_uid"], "sps_id": cols["sps_id"], "exclude": exclude}
        if s.connection().scalar(_SAME_STEP[exclude is not None], same) is not None:
            raise Conflict(f"step {cols['sps_id']} of study {cols['study_instance_uid']} is already scheduled")

    def import_rows(self, rows: Iterable[dict[str, Any]], *, batch: int = 2000, actor: str = "") -> ImportSummary:
        """Bulk insert of prepared rows (``items.row``), in batches; a step already present (same Study Instance
        UID and step ID, in the index or earlier in ``rows``) is counted as a duplicate and skipped. One audit
        event tells the whole import (a .wl folder may hold thousands of items)."""
        summary = ImportSummary()
        pending: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for row in rows:
            key = (row["study_instance_uid"], row["sps_id"])
            if row["sps_id"] and key in seen:
                summary.duplicates += 1
                continue
            seen.add(key)
            pending.append(row)
            if len(pending) >= batch:
                self._insert(pending, summary)
                pending = []
        self._insert(pending, summary)
        if summary.added:
            detail = f"{summary.added} items imported ({summary.duplicates} duplicates skipped)"
            self.audit.record(WORKLIST_ITEM_CREATED, user=actor, detail=detail)
            self.listeners(WorklistChange(WORKLIST_ITEM_CREATED, None, actor=actor, detail=detail))
        return summary

    def _insert(self, rows: list[dict[str, Any]], summary: ImportSummary) -> None:
        if not rows:
            return
        keys = [(r["study_instance_uid"], r["sps_id"]) for r in rows if r["sps_id"]]
        now = utcnow()
        with self.db.session() as s:
            present: set[tuple[str, str]] = set()
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                present |= {tuple(row) for row in s.execute(select(WorklistItem.study_instance_uid,
                                                                    WorklistItem.sps_id).where(
                    tuple_(WorklistItem.study_instance_uid, WorklistItem.sps_id).in_(chunk)))}
            fresh = [{**r, "created_at": now, "updated_at": now} for r in rows
                     if not r["sps_id"] or (r["study_instance_uid"], r["sps_id"]) not in present]
            if fresh:
                s.execute(WorklistItem.__table__.insert(), fresh)
        summary.added += len(fresh)
        summary.duplicates += len(rows) - len(fresh)

    def update(self, item_id: int, changes: Dataset, *, actor: str = "") -> Item:
        """Change attributes of an open step (elements given replace the stored ones; status is not changed)."""
        with self.batch(actor=actor) as batch:
            return batch.update(item_id, changes)

    def set_status(self, item_id: int, status: str, *, mpps_uid: str | None = None,
                   session: Session | None = None, actor: str = "") -> Item:
        """Move a step to ``status`` if the transition is allowed (``Conflict`` otherwise). Within the caller's
        ``session`` (MPPS) the caller's own audit event tells the change."""
        if session is None:
            with self.batch(actor=actor) as batch:
                return batch.set_status(item_id, status, mpps_uid=mpps_uid)
        row = self._row(session, item_id)
        check_transition(row.status, status)
        self._write_status(row, status)
        if mpps_uid is not None:
            row.mpps_uid = mpps_uid
        return self._item(row)

    @staticmethod
    def _write_status(row: WorklistItem, status: str) -> None:
        row.status, row.updated_at = status, utcnow()
        ds = items.unpack(row.attrs)
        with_status(items.step_of(ds), status)
        row.attrs = items.pack(ds)

    def cancel(self, item_id: int, *, actor: str = "") -> Item:
        return self.set_status(item_id, CANCELED, actor=actor)

    def delete(self, item_id: int, *, actor: str = "") -> None:
        with self.db.session() as s:
            row = self._row(s, item_id)
            s.delete(row)
        self._audit(WORKLIST_ITEM_DELETED, row, actor, f"was {row.status}")

    def expire(self, now: datetime | None = None) -> int:
        """Steps still SCHEDULED ``expire_hours`` after their start become DISCONTINUED; returns how many."""
        if not self.options.expire_hours:
            return 0
        cutoff = (now or self.clock()) - timedelta(hours=self.options.expire_hours)
        day, moment = cutoff.strftime("%Y%m%d"), cutoff.strftime("%H%M%S.%f")
        stale = and_(WorklistItem.status == SCHEDULED, WorklistItem.start_date != "",
                     or_(WorklistItem.start_date < day,
                         and_(WorklistItem.start_date == day, WorklistItem.start_time < moment)))
        with self.db.session() as s:
            rows = s.scalars(select(WorklistItem).where(stale)).all()
            for row in rows:
                self._write_status(row, DISCONTINUED)
        if rows:
            log.info("%d scheduled steps expired to DISCONTINUED (start before %s)", len(rows), cutoff)
            detail = f"{len(rows)} scheduled steps expired to DISCONTINUED (start before {cutoff:%Y-%m-%d %H:%M})"
            self.audit.record(WORKLIST_ITEM_CHANGED, detail=detail)
            self.listeners(WorklistChange(WORKLIST_ITEM_CHANGED, None, detail=detail))
        return len(rows)

    def _maybe_expire(self) -> None:
        """Run ``expire`` at most once a minute, from whichever query comes first."""
        if not self.options.expire_hours:
            return
        with self._expiry_lock:
            if time.monotonic() - self._last_expiry < EXPIRE_CHECK_SECONDS:
                return
            self._last_expiry = time.monotonic()
        self.expire()

    # ---- ways out ------------------------------------------------------------------------------------------
    def get(self, item_id: int) -> Item:
        with self.db.session() as s:
            row = self._row(s, item_id)
            return self._item(row, self._received(s, [row.study_instance_uid]))

    def list(self, identifier: Dataset | None = None, *, statuses: Iterable[str] | None = None,
             limit: int = 100, offset: int = 0) -> tuple[int, list[Item]]:
        """(total, page) of the items matching an MWL identifier (same rules as C-FIND), in schedule order."""
        query = MwlQuery(identifier or Dataset(), fuzzy_pn=self.options.fuzzy_pn)
        where = list(query.conditions)
        if statuses:
            where.append(WorklistItem.status.in_(list(statuses)))
        with self.db.session() as s:
            if not len(query.python_filter):
                total = s.scalar(select(func.count(WorklistItem.id)).where(*where)) or 0
                page = select(WorklistItem).where(*where).order_by(*_ORDER).offset(offset).limit(limit)
                found = list(s.scalars(page))
            else:
                rows = s.scalars(select(WorklistItem).where(*where).order_by(*_ORDER))
                matched = [r for r in rows if query.matches(unpack_json(r.attrs))]
                total, found = len(matched), matched[offset:offset + limit]
            received = self._received(s, [r.study_instance_uid for r in found])
            return total, [self._item(r, received) for r in found]

    def find(self, identifier: Dataset, *, calling_ae: str = "",
             encoding: Encoding | None = None) -> Iterator[Dataset | bytes]:
        """The MWL C-FIND answers to ``identifier`` for ``calling_ae``, one per step, with the site options
        applied; a generator, so answers stream while the index is read. With ``encoding`` (implicit VR, little
        endian) the answers come encoded in it, ready to send (``MwlQuery.encoded_answer``), else as datasets."""
        self._maybe_expire()
        query = MwlQuery(identifier, fuzzy_pn=self.options.fuzzy_pn)
        stmt = select(WorklistItem.attrs).where(*query.conditions, *self.site_conditions(calling_ae))
        stmt = stmt.order_by(*_ORDER)
        limit = self.options.max_answers
        if limit and not len(query.python_filter):
            stmt = stmt.limit(limit)
        produced = 0
        with self.db.engine.connect() as conn:  # a plain read: no ORM session needed
            for (blob,) in conn.execution_options(yield_per=200).execute(stmt):
                item = unpack_json(blob)
                if not query.matches(item):
                    continue
                yield query.answer(item) if encoding is None else query.encoded_answer(item, encoding)
                produced += 1
                if limit and produced >= limit:
                    return

    def site_conditions(self, calling_ae: str) -> list[ColumnElement[bool]]:
        """The SQL form of the site options (closed steps, calling station, days around today)."""
        out: list[ColumnElement[bool]] = []
        if not self.options.show_closed:
            out.append(WorklistItem.status.in_(OPEN))
        if self.options.station_only:
            station = matching.sql_multi_value_condition(WorklistItem.station_aet, "AE", calling_ae.strip())
            out.append(false() if station is None else station)
        if self.options.days:
            first, last = self._window()
            out.append(WorklistItem.start_date.between(first, last))
        return out

    def _window(self) -> tuple[str, str]:
        today = self.clock().date()
        span = timedelta(days=self.options.days)
        return (today - span).strftime("%Y%m%d"), (today + span).strftime("%Y%m%d")

    def explain(self, query_id: int, item_id: int) -> list[tuple[str, bool, str]]:
        """Replay a logged MWL query against an item: (key, matched, why) for every non-universal key, then
        the site options that would hide the item."""
        logged = self.queries.get(query_id)
        item = self.get(item_id)
        entries = matching.explain_dataset(logged.identifier(), item.dataset, fuzzy_pn=self.options.fuzzy_pn)
        return entries + self._site_entries(item, logged.calling_ae)

    def _site_entries(self, item: Item, calling_ae: str) -> list[tuple[str, bool, str]]:
        out = []
        if not self.options.show_closed:
            ok = item.status in OPEN
            out.append(("status", ok, "matches" if ok else
                        f"the step is {item.status}; closed steps are not offered (worklist_show_closed)"))
        if self.options.station_only:
            stations = items.step_of(item.dataset).get("ScheduledStationAETitle")
            ok = matching.matches("AE", calling_ae, stations)
            out.append(("calling AE", ok, "matches" if ok else
                        f"calling AE {calling_ae} is not the item's station {stations or '(none)'} "
                        "(worklist_station_only)"))
        if self.options.days:
            first, last = self._window()
            start = matching.normalize_date(str(items.step_of(item.dataset).get("ScheduledProcedureStepStartDate")
                                                or ""))
            ok = first <= start <= last if start else False
            out.append(("days", ok, "matches" if ok else
                        f"start {start or '(none)'} is outside {first}-{last} (worklist_days)"))
        return out

    # ---- helpers -------------------------------------------------------------------------------------------
    def _audit(self, action: str, row: WorklistItem | WrittenRow, actor: str, what: str) -> None:
        self.audit.record(action, user=actor, patient_id=row.patient_id, patient_name=row.patient_name,
                          study_instance_uid=row.study_instance_uid, detail=f"item {row.id}: {what}")
        if self.listeners:
            self.listeners(WorklistChange(action, row.id, row.status, row.patient_id, row.study_instance_uid, actor,
                                          what))

    @staticmethod
    def _row(s: Session, item_id: int) -> WorklistItem:
        row = s.get(WorklistItem, item_id)
        if row is None:
            raise NotFound(f"no worklist item {item_id}")
        return row

    @staticmethod
    def _received(s: Session, uids: list[str]) -> set[str]:
        """Which of these Study Instance UIDs the archive holds (the item → study link, made at query time)."""
        wanted = [u for u in set(uids) if u]
        if not wanted:
            return set()
        return set(s.scalars(select(Study.study_instance_uid).where(Study.study_instance_uid.in_(wanted))))

    @staticmethod
    def _item(row: WorklistItem | WrittenRow, received: Collection[str] = (), warnings: tuple[str, ...] = (),
              dataset: Dataset | None = None) -> Item:
        """The item of ``row``; ``dataset``: what its ``attrs`` hold, when the caller has it in hand (parsing the
        stored DICOM JSON is the dearest part of reading an item)."""
        return Item(row.id, row.status, items.unpack(row.attrs) if dataset is None else dataset, row.origin,
                    row.mpps_uid, row.created_at, row.updated_at, row.study_instance_uid in received, warnings)



class Batch:
    """Changes of the worklist made together, in one transaction (``Worklist.batch``): all of them or none, as an
    HL7 message is applied whole or not at all (HL7 v2.5.1 2.9.2: an AE or AR acknowledgment leaves the receiver
    as it was). Each change is audited like the ``Worklist`` method of the same name, with ``note`` (what the
    caller had to invent, e.g. a generated Study Instance UID) added to the event's detail."""

    def __init__(self, worklist: Worklist, session: Session, *, actor: str, origin: str) -> None:
        self.worklist = worklist
        self.session = session
        self.actor = actor
        self.origin = origin
        # recorded by ``Worklist.batch`` once committed
        self.events: list[tuple[str, WorklistItem | WrittenRow, str]] = []

    def schedule(self, ds: Dataset, *, max_steps: int | None = None, note: str = "") -> list[Item]:
        """Validate a new request (one or more steps), fill its identifiers and store one row per step; each item
        carries the warnings about the request (``Worklist._accession_warnings``)."""
        ds = items.copied(ds)  # the caller's dataset stays as it was
        self.worklist._check(ds, strict=True)
        steps = len(ds.get(items.STEPS) or [])
        if max_steps is not None and steps > max_steps:
            raise items.InvalidItem(items.STEPS, f"{steps} steps make {steps} worklist items: send the item in a "
                                    "list ([item]) to schedule them all and have each back")
        items.complete(ds, generate_ids=True)
        steps = items.split_steps(ds)
        new = [items.row(step, origin=self.origin) for step in steps]
        warnings = self.worklist._new_step_checks(self.session, new[0])
        rows = [self.worklist._new_row(self.session, values, checked=i == 0) for i, values in enumerate(new)]
        for row in rows:
            self._event(WORKLIST_ITEM_CREATED, row, f"{row.modality or 'no modality'} on "
                        f"{row.start_date or 'no date'} ({self.origin})", note)
        # each item's dataset is the step just stored (this batch's own copy), not read back from its row
        return [self.worklist._item(r, warnings=warnings, dataset=step) for r, step in zip(rows, steps)]

    def update(self, item_id: int, changes: Dataset, *, closed_too: bool = False, note: str = "") -> Item:
        """Change attributes of an open step (elements given replace the stored ones; status is not changed);
        ``closed_too``: of a closed one as well (a patient merge moves every step of the patient)."""
        row = self.worklist._row(self.session, item_id)
        if row.status not in OPEN and not closed_too:
            raise Conflict(f"item {item_id} is {row.status} and can no longer be changed")
        merged = _merge(items.unpack(row.attrs), changes)
        self.worklist._check(merged, strict=row.origin != "import")
        if len(merged[items.STEPS].value) != 1:
            raise items.InvalidItem(items.STEPS, "an item has exactly one scheduled procedure step")
        items.complete(merged, generate_ids=False)
        values = items.row(merged, origin=row.origin)
        self.worklist._refuse_duplicate(self.session, values, exclude=item_id)
        warnings = self.worklist._accession_warnings(self.session, values, exclude=item_id)
        for name, value in values.items():
            if name not in ("status", "origin"):  # the status changes only through set_status
                setattr(row, name, value)
        row.updated_at = utcnow()
        self._event(WORKLIST_ITEM_CHANGED, row, ", ".join(e.keyword or str(e.tag) for e in changes), note)
        return self.worklist._item(row, warnings=warnings)

    def set_status(self, item_id: int, status: str, *, mpps_uid: str | None = None) -> Item:
        """Move a step to ``status`` if the transition is allowed (``Conflict`` otherwise)."""
        before = self.worklist._row(self.session, item_id).status
        item = self.worklist.set_status(item_id, status, mpps_uid=mpps_uid, session=self.session)
        row = self.worklist._row(self.session, item_id)
        self._event(WORKLIST_ITEM_CANCELLED if status == CANCELED else WORKLIST_ITEM_CHANGED, row,
                    f"status {before} -> {status}", "")
        return item

    def items_of_patient(self, patient_id: str, issuer: str = "", *, open_only: bool = True) -> list[Item]:
        """The steps of a patient, by Patient ID and, when ``issuer`` is given, Issuer of Patient ID (a step
        stored without an issuer is taken as the same patient's), in id order."""
        where = [WorklistItem.patient_id == matching.normalize_value("LO", patient_id)]
        if issuer:
            where.append(WorklistItem.issuer_of_patient_id.in_(["", matching.normalize_value("LO", issuer)]))
        if open_only:
            where.append(WorklistItem.status.in_(OPEN))
        rows = self.session.scalars(select(WorklistItem).where(*where).order_by(WorklistItem.id))
        return [self.worklist._item(r) for r in rows]

    def items_of_order(self, *, placer: str, filler: str, patient_id: str, accession: str = "") -> list[Item]:
        """The steps of one imaging service request, every status: those whose Placer Order Number (0040,2016)
        is ``placer`` or, without one, whose Filler Order Number (0040,2017) is ``filler`` (PS3.3 C.4.13; exact
        values: an order number holding "*" is no wildcard). Searched among the steps of the patient and of the
        accession number with that order number (indexed columns), then on the stored items: a column holds the
        number cut to its length (``items.order_number``)."""
        if not placer and not filler:
            return []
        keyword, wanted = (("PlacerOrderNumberImagingServiceRequest", placer) if placer else
                           ("FillerOrderNumberImagingServiceRequest", filler))
        self.session.flush()  # a Core read on the session's connection does not autoflush the batch's changes
        rows = self.session.connection().execute(_OF_ORDER[bool(placer), bool(accession)], {
            "number": items.order_number(wanted), "patient_id": matching.normalize_value("LO", patient_id),
            "accession": matching.normalize_value("SH", accession) if accession else ""})
        found = (self.worklist._item(r) for r in rows)
        return [item for item in found if str(item.dataset.get(keyword) or "").strip() == wanted.strip()]

    def _event(self, action: str, row: WorklistItem | WrittenRow, what: str, note: str) -> None:
        self.events.append((action, row, f"{what}: {note}" if note else what))
