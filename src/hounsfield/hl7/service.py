"""An HL7 message applied to the worklist: read, mapped, applied in one transaction (``Worklist.batch``), logged,
audited and acknowledged. The MLLP listener calls ``receive`` for each frame; REST and the CLI call ``replay``.

Orders (ORM^O01, OMI^O23) go by their order control code (ORC-1, HL7 Table 0119) and order status (ORC-5, Table
0038), as the dcm4chee-arc conformance statement's HL7 Order SPS Status table does: NW schedules the order's
steps (SCHEDULED, or IN PROGRESS with ORC-5 IP), XO changes them (a step named by its step ID, or the order's
only one; a step the order lacks is added), CA / OC cancel, DC / OD discontinue, SC moves them to the status of
ORC-5 (SC, IP, CM, DC, CA). An order is found by its placer order number (ORC-2), else its filler order number
(ORC-3); NW of a known order is a resend and is applied as XO. ADT^A08 / A31 change the demographics of the
patient's open steps, ADT^A40 moves every step of the prior patient (MRG-1) to the patient of PID-3.

Whatever a message cannot be applied for is an ``Hl7Error`` and nothing of it is applied (the batch is rolled
back): an AE or AR naming the field. Every value hounsfield had to invent (a Study Instance UID, a Requested
Procedure ID, a step ID) is said in the item's audit event (its history) and in the message's outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Callable, TypeVar

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from hounsfield.audit.actions import FAILURE, HL7_MESSAGE_RECEIVED, NOT_RECORDED, REFUSED, SUCCESS, Recorder
from hounsfield.errors import Conflict
from hounsfield.events import Listeners
from hounsfield.hl7 import ack, mapping, message
from hounsfield.hl7.log import LoggedMessage, MessageLog
from hounsfield.hl7.message import (
    INTERNAL_ERROR,
    REQUIRED_FIELD_MISSING,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY,
    Hl7Error,
    Location,
    application_error,
    rejected,
)
from hounsfield.worklist.items import InvalidItem, new_id
from hounsfield.worklist.service import Batch, Item, Worklist
from hounsfield.worklist.status import CANCELED, COMPLETED, DISCONTINUED, IN_PROGRESS, SCHEDULED

log = logging.getLogger("hounsfield.hl7")
T = TypeVar("T")
NEW, CHANGE, CANCEL, DISCONTINUE, STATUS = "new", "change", "cancel", "discontinue", "status"
# ORC-1 order control codes (HL7 Table 0119) taken, and what they do
CONTROLS = {"NW": NEW, "XO": CHANGE, "XX": CHANGE, "CA": CANCEL, "OC": CANCEL, "DC": DISCONTINUE,
            "OD": DISCONTINUE, "SC": STATUS}
# ORC-5 order status (HL7 Table 0038) → step status
ORDER_STATUS = {"SC": SCHEDULED, "IP": IN_PROGRESS, "CM": COMPLETED, "DC": DISCONTINUED, "CA": CANCELED}
CONTROL_STATUS = {CANCEL: CANCELED, DISCONTINUE: DISCONTINUED}


@dataclass
class Outcome:
    """What a message did: in words, the items it touched, and the patient and study for the audit trail."""

    done: list[str] = field(default_factory=list)
    item_ids: list[int] = field(default_factory=list)
    patient_id: str = ""
    patient_name: str = ""
    study_instance_uid: str = ""

    def touched(self, item: Item, what: str) -> None:
        self.done.append(f"item {item.id} {what}")
        self.item_ids.append(item.id)
        self.study_instance_uid = self.study_instance_uid or str(item.dataset.get("StudyInstanceUID") or "")
        self.patient_name = self.patient_name or str(item.dataset.get("PatientName") or "")

    @property
    def text(self) -> str:
        return "; ".join(self.done) or "nothing to do"


@dataclass(frozen=True)
class Received:
    """A message handled: the ACK to send (bytes, unframed), and its row in the message log."""

    ack: bytes
    message_id: int


class Hl7Service:
    """``receiver``: this server's name in an ACK to a message that names no receiving application (MSH-5)."""

    def __init__(self, worklist: Worklist, messages: MessageLog, *, receiver: str, max_bytes: int,
                 audit: Recorder = NOT_RECORDED, clock: Callable[[], datetime] = datetime.now) -> None:
        self.worklist = worklist
        self.messages = messages
        self.receiver = receiver
        self.max_bytes = max_bytes
        self.audit = audit
        self.clock = clock
        self.listeners: Listeners[int] = Listeners()  # issue 14: the id in the message log of each message handled

    def receive(self, data: bytes, *, address: str, complete: bool = True, replay_of: int | None = None,
                actor: str = "") -> Received:
        """Apply one message (``complete`` False: cut at ``max_bytes``, refused), log it, audit it and return its
        acknowledgment. Never raises for what the message holds. The changes and the message's row in the log are
        one transaction (one commit, one sync of the disk); a message refused is logged in one of its own."""
        head = message.header(data)
        sender = actor or _sender(head)
        log_row = partial(self._log_row, head, data, complete=complete, replay_of=replay_of, address=address)
        outcome, error, logged = Outcome(), None, None
        try:
            if not complete:
                raise rejected(INTERNAL_ERROR, f"the message is longer than the {self.max_bytes} bytes this "
                               "receiver takes (hl7_max_message_bytes)", Location("MSH"))
            read = message.read(data)
            outcome.patient_id = _patient_id(read)
            with self.worklist.batch(actor=sender, origin="hl7") as batch:
                applied = self._apply(read, batch)
                written = log_row(applied, None, session=batch.session)
            outcome, logged = applied, written
        except Hl7Error as exc:
            error = exc
        except Exception:  # noqa: BLE001 - a bug answers AE and is logged; the sender must not wait forever
            log.exception("HL7 %s %s from %s could not be applied", head.kind[:20], head.control_id[:20], address)
            error = application_error(INTERNAL_ERROR, "the receiver failed to apply the message; the cause is in "
                                      "its log")
        code, text, answer, message_id = logged or log_row(outcome, error)
        log.info("HL7 %s %s from %s (message %d): %s %s", head.kind[:20] or "(no header)", head.control_id[:20],
                 address, message_id, code, text[:300])
        self.audit.record(HL7_MESSAGE_RECEIVED, outcome={ack.APPLIED: SUCCESS, ack.ERROR: FAILURE}.get(code, REFUSED),
                          user=sender, address=address.rsplit(":", 1)[0],
                          patient_id=outcome.patient_id, patient_name=outcome.patient_name,
                          study_instance_uid=outcome.study_instance_uid,
                          detail=f"message {message_id}: {head.kind[:20]} {head.control_id[:64]}: {code}: {text}")
        self.listeners(message_id)
        return Received(answer.encode("latin-1", "replace"), message_id)

    def _log_row(self, head: message.Header, data: bytes, outcome: Outcome, error: Hl7Error | None, *,
                 complete: bool, replay_of: int | None, address: str,
                 session: Session | None = None) -> tuple[str, str, str, int]:
        """The acknowledgment of a message applied (``error`` None) or not, written to the message log:
        (ACK code, text, ACK, the message's id in the log)."""
        code = ack.APPLIED if error is None else error.ack
        text = outcome.text if error is None else str(error)
        answer = ack.acknowledgment(head, code, text, error=error, receiver=self.receiver, now=self.clock())
        message_id = self.messages.write(
            raw=data, complete=complete, ack_code=code, ack=answer, outcome=text, item_ids=tuple(outcome.item_ids),
            replay_of=replay_of, address=address, sending_application=head.get(3), sending_facility=head.get(4),
            message_type=head.kind, control_id=head.control_id, patient_id=outcome.patient_id, session=session)
        return code, text, answer, message_id

    def replay(self, message_id: int, *, actor: str = "") -> LoggedMessage:
        """Apply a logged message again, from its bytes, as a new message of the log (``replay_of`` it)."""
        original = self.messages.get(message_id)
        again = self.receive(original.raw, address="replay", complete=original.complete, replay_of=message_id,
                             actor=actor)
        return self.messages.get(again.message_id)

    # ---- applying ----------------------------------------------------------------------------------------
    def _apply(self, msg: message.Message, batch: Batch) -> Outcome:
        kind = msg.header.message_type
        if kind in ("ORM", "OMI"):
            return self._orders(mapping.orders(msg), batch)
        if msg.header.event == "A40":
            return self._merges(mapping.merges(msg), batch)
        return self._demographics(mapping.patient_update(msg), batch)

    def _orders(self, orders: list[mapping.Order], batch: Batch) -> Outcome:
        outcome = Outcome(patient_id=orders[0].patient_id)
        for order in orders:
            self._order(batch, order, outcome)
        return outcome

    def _order(self, batch: Batch, order: mapping.Order, outcome: Outcome) -> None:
        kind = CONTROLS.get(order.control)
        if kind is None:
            raise application_error(TABLE_VALUE_NOT_FOUND, f"order control {order.control[:4]!r} is not one of "
                                    f"{', '.join(CONTROLS)} (HL7 Table 0119)", order.location)
        accession = str(order.requests[0].dataset.get("AccessionNumber") or "")
        existing = batch.items_of_order(placer=order.placer, filler=order.filler, patient_id=order.patient_id,
                                        accession=accession)
        name = f"order {order.placer or order.filler}"
        if kind in (NEW, CHANGE):
            if kind == CHANGE and not existing:
                raise self._unknown(order, name)
            after = self._schedule_or_change(batch, order, existing, outcome)
            target = ORDER_STATUS.get(order.status) if order.status else None
            if order.status and target is None:
                raise application_error(TABLE_VALUE_NOT_FOUND, f"order status {order.status[:4]!r} is not one of "
                                        f"{', '.join(ORDER_STATUS)} (HL7 Table 0038)",
                                        Location("ORC", order.location.sequence, 5))
            if target is not None:
                for item in after:
                    if item.status != target:
                        self._status(batch, order, item, target, outcome)
            return
        if not existing:
            raise self._unknown(order, name)
        target = CONTROL_STATUS.get(kind) or self._reported_status(order)
        for item in existing:
            self._status(batch, order, item, target, outcome)

    @staticmethod
    def _unknown(order: mapping.Order, name: str) -> Hl7Error:
        return application_error(UNKNOWN_KEY, f"{name} has no worklist item (ORC-2 placer, ORC-3 filler order "
                                 "number)", Location("ORC", order.location.sequence, 2 if order.placer else 3))

    @staticmethod
    def _reported_status(order: mapping.Order) -> str:
        where = Location("ORC", order.location.sequence, 5)
        if not order.status:
            raise application_error(REQUIRED_FIELD_MISSING, "ORC-5, the order status, is empty: SC reports it",
                                    where)
        if order.status not in ORDER_STATUS:
            raise application_error(TABLE_VALUE_NOT_FOUND, f"order status {order.status[:4]!r} is not one of "
                                    f"{', '.join(ORDER_STATUS)} (HL7 Table 0038)", where)
        return ORDER_STATUS[order.status]

    def _status(self, batch: Batch, order: mapping.Order, item: Item, target: str, outcome: Outcome) -> None:
        current = item.status
        if current == target:
            outcome.touched(item, f"already {target}")
            return
        try:
            changed = batch.set_status(item.id, target)
        except Conflict as exc:
            raise application_error(INTERNAL_ERROR, f"item {item.id}: {exc}", order.location) from None
        outcome.touched(changed, f"{current} -> {target}")

    def _schedule_or_change(self, batch: Batch, order: mapping.Order, existing: list[Item],
                            outcome: Outcome) -> list[Item]:
        """Each step of the message: the existing step it names changed, or a new one scheduled. Returns the
        order's items now, in id order, as ``Batch.items_of_order`` would find them again: those found before
        (changed ones as changed: a change keeps the order numbers and moves the item to the message's patient)
        and then the new ones (whose ids come after every id before)."""
        current = {item.id: item for item in existing}
        study_uid = str(existing[0].dataset.get("StudyInstanceUID") or "") if existing else ""
        for request in order.requests:
            step_id = request.step_id
            same = [i for i in existing if step_id and str(_step(i).get("ScheduledProcedureStepID") or "") == step_id]
            if not step_id and existing:
                if len(existing) != 1:
                    raise application_error(REQUIRED_FIELD_MISSING, f"order {order.placer or order.filler} has "
                                            f"{len(existing)} steps: the step ID names the one to change",
                                            request.sources["ScheduledProcedureStepID"])
                same = existing
            if same:
                changed = _checked(request, order.location, partial(batch.update, same[0].id, request.dataset))
                outcome.touched(changed, "changed")
                current[changed.id] = changed
                continue
            notes, study_uid = _invent(request, study_uid)
            scheduled = _checked(request, order.location,
                                 partial(batch.schedule, request.dataset, note="; ".join(notes)))
            for item in scheduled:
                outcome.touched(item, "scheduled" + (f" ({'; '.join(notes)})" if notes else ""))
                current[item.id] = item
        return list(current.values())

    def _demographics(self, patient: mapping.Patient, batch: Batch) -> Outcome:
        outcome = Outcome(patient_id=patient.patient_id)
        found = batch.items_of_patient(patient.patient_id, patient.issuer)
        if not len(patient.changes) or not found:
            outcome.done.append(f"no open worklist item of patient {patient.patient_id}" if not found else
                                "no demographics to change")
            return outcome
        for item in found:
            request = mapping.Request(patient.changes, patient.sources)
            changed = _checked(request, patient.sources["PatientID"],
                               partial(batch.update, item.id, patient.changes))
            outcome.touched(changed, "demographics updated")
        return outcome

    def _merges(self, merges: list[mapping.Merge], batch: Batch) -> Outcome:
        outcome = Outcome(patient_id=merges[0].patient.patient_id)
        for merge in merges:
            found = batch.items_of_patient(merge.prior_id, merge.prior_issuer, open_only=False)
            if not found:
                outcome.done.append(f"no worklist item of prior patient {merge.prior_id}")
            request = mapping.Request(merge.patient.changes, merge.patient.sources)
            for item in found:
                note = f"merged from patient {merge.prior_id} into {merge.patient.patient_id}"
                changed = _checked(request, merge.location, partial(
                    batch.update, item.id, merge.patient.changes, closed_too=True, note=note))
                outcome.touched(changed, f"moved from patient {merge.prior_id}")
        return outcome


def _step(item: Item):  # noqa: ANN202 - the item's step dataset
    return item.dataset.ScheduledProcedureStepSequence[0]


def _patient_id(read: message.Message) -> str:
    """PID-3's first ID, for the message log and the audit trail even when the message is not applied."""
    found = read.segments("PID")
    return message.value(found[0], 3, 1) if found else ""


def _sender(head: message.Header) -> str:
    """Who sent a message, as the audit trail and the items' history name it: ``hl7:`` and MSH-3's namespace."""
    return f"hl7:{head.component(3, 1)[:60]}" if head.component(3, 1) else "hl7"


def _invent(request: mapping.Request, study_uid: str) -> tuple[list[str], str]:
    """Fill the identifiers a new step needs and the message left out, saying each (IHE RAD TF-2 4.4, RAD-4:
    the order filler assigns them; here the receiver has to): the Study Instance UID (the order's other steps' one,
    or a new UID), the Requested Procedure ID (the accession number, or a new ID) and the step ID. Returns the
    notes and the order's Study Instance UID."""
    ds, notes = request.dataset, []
    if "StudyInstanceUID" in request.missing:
        generated = not study_uid
        study_uid = study_uid or generate_uid()
        ds.StudyInstanceUID = study_uid
        notes.append(f"Study Instance UID {study_uid} {'generated' if generated else 'of the order'} "
                     f"(no {request.sources['StudyInstanceUID']})")
    else:
        study_uid = study_uid or str(ds.StudyInstanceUID)
    if "RequestedProcedureID" in request.missing:
        ds.RequestedProcedureID = str(ds.get("AccessionNumber") or "") or new_id()
        notes.append(f"Requested Procedure ID {ds.RequestedProcedureID} "
                     f"{'from the accession number' if ds.get('AccessionNumber') else 'generated'} "
                     f"(no {request.sources['RequestedProcedureID']})")
    if "ScheduledProcedureStepID" in request.missing:
        request.step.ScheduledProcedureStepID = new_id()
        notes.append(f"step ID {request.step.ScheduledProcedureStepID} generated "
                     f"(no {request.sources['ScheduledProcedureStepID']})")
    return notes, study_uid


def _checked(request: mapping.Request, where: Location, call: Callable[[], T]) -> T:
    """Run a worklist change; a value the worklist refuses is an AE naming the HL7 field it came from, a change
    the worklist's state refuses (a closed step, a step ID scheduled twice) an AE at ``where``."""
    try:
        return call()
    except InvalidItem as exc:
        code = REQUIRED_FIELD_MISSING if exc.rule == "is required" else message.DATA_TYPE_ERROR
        raise application_error(code, exc.reason, mapping.locate(request.sources, exc)) from None
    except Conflict as exc:
        raise application_error(INTERNAL_ERROR, str(exc), where) from None
