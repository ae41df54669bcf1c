"""REST API of the audit trail: ``GET /api/audit``, the events newest first, filtered (the admin page at
/ui/audit.html reads it; ``web.auth`` lets admins only read it when logins are on).

Filters are exact values; ``since`` / ``until`` are ISO 8601 dates or times (UTC unless they say otherwise;
``until`` is exclusive, a day alone includes that day). Bad values are 422 (out of range) or 400 (not a date),
never a server error."""

from __future__ import annotations

from typing import Annotated, Optional

from fastapi import APIRouter, Query as Param, Request
from pydantic import BaseModel, Field

from hounsfield.audit.actions import ACTIONS, OUTCOMES
from hounsfield.audit.trail import parse_time
from hounsfield.web.api import MAX_LIMIT, SQL_INT_MAX, pacs_of
from hounsfield.web.worklist_api import Timestamp

router = APIRouter(prefix="/api/audit", tags=["audit"])
Text = Annotated[Optional[str], Param(max_length=330)]


class AuditEventOut(BaseModel):
    id: int
    at: Timestamp
    action: str = Field(description=f"One of {', '.join(ACTIONS)}")
    outcome: str = Field(description=f"One of {', '.join(OUTCOMES)}")
    user: str = Field(description="The user's name (HTTP, CLI), or empty")
    ae_title: str = Field(description="The calling DICOM node's AE title, or empty")
    address: str = Field(description="Where the request came from (IP address), or empty")
    patient_id: str
    patient_name: str
    study_instance_uid: str
    detail: str


class AuditPage(BaseModel):
    total: int
    offset: int
    limit: int
    events: list[AuditEventOut]


@router.get("", response_model=AuditPage)
def list_events(
    request: Request,
    action: Annotated[Optional[list[str]], Param(max_length=len(ACTIONS), description="Actions (repeatable)")] = None,
    outcome: Annotated[Optional[list[str]], Param(max_length=len(OUTCOMES), description="Outcomes (repeatable)")]
    = None,
    user: Text = None,
    ae_title: Text = None,
    patient_id: Text = None,
    study_instance_uid: Text = None,
    since: Annotated[Optional[str], Param(max_length=64, description="From this date or time (inclusive)")] = None,
    until: Annotated[Optional[str], Param(max_length=64, description="Before this time; a day: to its end")] = None,
    limit: Annotated[int, Param(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Param(ge=0, le=SQL_INT_MAX)] = 0,
) -> AuditPage:
    """Audit events, newest first: who (user, or AE title and address) did what (``action``) to which patient
    and study, when, with which outcome."""
    filters = {"action": action, "outcome": outcome, "user": user, "ae_title": ae_title, "patient_id": patient_id,
               "study_instance_uid": study_instance_uid,
               "since": parse_time(since) if since else None, "until": parse_time(until, end=True) if until else None}
    audit = pacs_of(request).audit
    events = audit.search(**filters, limit=limit, offset=offset)
    return AuditPage(total=audit.count(**filters), offset=offset, limit=limit,
                     events=[AuditEventOut(**e) for e in events])


@router.get("/actions")
def vocabulary() -> dict[str, list[str]]:
    """Every action and outcome an event can have."""
    return {"actions": list(ACTIONS), "outcomes": list(OUTCOMES)}
