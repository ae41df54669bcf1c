"""REST API of the HL7 message log (issue 14): ``GET /api/hl7/messages`` (newest first, filtered),
``GET /api/hl7/messages/{id}`` (one message: as received, parsed, its acknowledgment and outcome) and
``POST /api/hl7/messages/{id}/replay`` (apply it again; the answer is the new logged message). Read by the page
at /ui/hl7.html; ``web.auth`` lets admins only use it when logins are on (the log holds every patient's orders)."""

from __future__ import annotations

import base64
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Query as Param, Request
from pydantic import BaseModel, Field

from hounsfield.hl7 import message
from hounsfield.hl7.log import LoggedMessage
from hounsfield.web.api import MAX_LIMIT, pacs_of
from hounsfield.web.auth import user_name
from hounsfield.web.worklist_api import Id, Offset, Timestamp

router = APIRouter(prefix="/api/hl7", tags=["hl7"])


class Hl7MessageSummary(BaseModel):
    id: int
    received_at: Timestamp
    address: str = Field(description="The sender's address (IP:port), or 'replay'")
    sending_application: str = Field(description="MSH-3 as sent")
    sending_facility: str = Field(description="MSH-4 as sent")
    message_type: str = Field(description="MSH-9, e.g. ORM^O01; empty when the message had no usable header")
    control_id: str = Field(description="MSH-10, echoed in the acknowledgment's MSA-2")
    patient_id: str = Field(description="PID-3 of the message, when it was read")
    ack_code: str = Field(description="MSA-1 of the acknowledgment sent: AA, AE or AR")
    outcome: str = Field(description="What was done, or why nothing was")
    item_ids: list[int] = Field(description="The worklist items the message scheduled or changed")
    replay_of: Optional[int] = Field(description="The logged message this one replayed")
    complete: bool = Field(description="False: longer than hl7_max_message_bytes, kept cut there")


class Hl7MessageOut(Hl7MessageSummary):
    raw: str = Field(description="The message as text, one segment per line (bytes that are no character of "
                                 "its character set replaced)")
    raw_base64: str = Field(description="The bytes received, exactly")
    segments: Optional[list[list[str]]] = Field(description="The message parsed: each segment's fields as sent "
                                                           "(MSH-1 and MSH-2 first in MSH); null when unreadable")
    ack: str = Field(description="The acknowledgment sent back, one segment per line")


class Hl7Page(BaseModel):
    total: int
    offset: int
    limit: int
    messages: list[Hl7MessageSummary]


def _summary(m: LoggedMessage) -> Hl7MessageSummary:
    return Hl7MessageSummary(id=m.id, received_at=m.received_at, address=m.address,
                             sending_application=m.sending_application, sending_facility=m.sending_facility,
                             message_type=m.message_type, control_id=m.control_id, patient_id=m.patient_id,
                             ack_code=m.ack_code, outcome=m.outcome, item_ids=list(m.item_ids),
                             replay_of=m.replay_of, complete=m.complete)


def _full(m: LoggedMessage) -> Hl7MessageOut:
    return Hl7MessageOut(**_summary(m).model_dump(), raw=message.readable(m.raw),
                         raw_base64=base64.b64encode(m.raw).decode("ascii"), segments=message.fields(m.raw),
                         ack=m.ack.replace("\r", "\n").strip())


Text = Annotated[Optional[str], Param(max_length=64)]


@router.get("/messages", response_model=Hl7Page)
def list_messages(request: Request, limit: Annotated[int, Param(ge=1, le=MAX_LIMIT)] = 50, offset: Offset = 0,
                  ack_code: Optional[Literal["AA", "AE", "AR"]] = None, message_type: Text = None,
                  patient_id: Text = None, control_id: Text = None) -> Hl7Page:
    """The HL7 messages received, newest first, filtered by acknowledgment code, type (ORM^O01…), Patient ID or
    control ID (exact values)."""
    total, found = pacs_of(request).hl7.messages.recent(limit=limit, offset=offset, ack_code=ack_code,
                                                        message_type=message_type, patient_id=patient_id,
                                                        control_id=control_id)
    return Hl7Page(total=total, offset=offset, limit=limit, messages=[_summary(m) for m in found])


@router.get("/messages/{message_id}", response_model=Hl7MessageOut)
def get_message(request: Request, message_id: Id) -> Hl7MessageOut:
    """One logged message: as received, parsed, and the acknowledgment sent back."""
    return _full(pacs_of(request).hl7.messages.get(message_id))


@router.post("/messages/{message_id}/replay", response_model=Hl7MessageOut)
def replay_message(request: Request, message_id: Id) -> Hl7MessageOut:
    """Apply a logged message to the worklist again, from its bytes (after fixing what made it fail): the answer
    is the new message of the log, with its acknowledgment (``replay_of`` the original)."""
    return _full(pacs_of(request).hl7.replay(message_id, actor=user_name(request.scope)))
