"""REST API of routing (issue 14): the rules (``GET /api/routing/rules``, ``GET|PUT|DELETE
/api/routing/rules/{name}``) and the delivery queue (``GET /api/routing/jobs?state=pending|failed|done``,
``POST /api/routing/jobs/{id}/retry``). Read by the page at /ui/routing.html.

A rule's shape is checked here (422 naming the field); what only the domain knows — a node that does not
exist, a transfer syntax hounsfield cannot convert to — is a 400 from ``routing.rules`` / ``routing.store``.
Rules of the configuration file are read-only (409). Changing a rule changes where data goes: an audit event,
like a node's permissions."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from fastapi import APIRouter, Query as Param, Request
from pydantic import BaseModel, ConfigDict, Field

from hounsfield.audit.actions import PERMISSION_CHANGED
from hounsfield.routing.models import STATES
from hounsfield.routing.rules import EVENTS, TRANSFER_SYNTAXES
from hounsfield.web.api import MAX_LIMIT, errors, pacs_of
from hounsfield.web.auth import client_address, user_name
from hounsfield.web.worklist_api import Id, Offset, Timestamp

router = APIRouter(prefix="/api/routing", tags=["routing"])
Patterns = Union[Annotated[str, Field(min_length=1, max_length=64)],
                 Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=64)]]


class WhenIn(BaseModel):
    """Conditions, all of which must match: a pattern or a list of patterns each (``*``, ``?``, case ignored)."""

    model_config = ConfigDict(extra="forbid")
    modality: Optional[Patterns] = None
    calling_ae: Optional[Patterns] = None
    study_description: Optional[Patterns] = None


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    on: Literal[EVENTS] = Field("instance_stored",  # type: ignore[valid-type]
                                description="instance_stored, or study_stable (no new instance for "
                                            "study_stable_seconds)")
    send_to: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=32, description="names of remote nodes (GET /api/peers)")
    when: Optional[WhenIn] = Field(None, description="absent: every instance")
    transfer_syntax: Optional[str] = Field(
        None, description=f"UID of the syntax the instances travel in: one of {', '.join(TRANSFER_SYNTAXES)}; "
                          f"absent: as stored")


class RuleOut(BaseModel):
    name: str
    on: str
    send_to: list[str]
    when: dict[str, list[str]]
    transfer_syntax: Optional[str]
    configured: bool = Field(description="from the configuration file (read-only here)")


class JobOut(BaseModel):
    id: int
    rule: str
    peer: str
    scope: str = Field(description="instance, or study (a study_stable rule sends the whole study)")
    study_instance_uid: str
    sop_instance_uid: str
    transfer_syntax: Optional[str]
    state: str = Field(description="pending (waiting or retrying), failed (no attempt left), done")
    attempts: int = Field(description="failed attempts so far")
    next_attempt: Optional[Timestamp] = Field(description="when a pending job is tried next (null unless pending)")
    last_error: str
    created_at: Timestamp
    updated_at: Timestamp


class JobsOut(BaseModel):
    counts: dict[str, int] = Field(description="jobs in each state")
    jobs: list[JobOut]


def _out(pacs: Any, rule: Any) -> RuleOut:
    return RuleOut(**rule.as_dict(), configured=pacs.routing_rules.is_configured(rule.name))


@router.get("/rules")
def list_rules(request: Request) -> list[RuleOut]:
    """Every routing rule: the configuration file's and those added here."""
    pacs = pacs_of(request)
    return [_out(pacs, r) for r in pacs.routing_rules.all()]


@router.get("/rules/{name}", responses=errors(404))
def get_rule(request: Request, name: str) -> RuleOut:
    pacs = pacs_of(request)
    return _out(pacs, pacs.routing_rules.get(name))


@router.put("/rules/{name}", responses=errors(400, 409))
def put_rule(request: Request, name: str, rule: RuleIn) -> RuleOut:
    """Add or change a rule; it applies to what is stored from now on."""
    pacs = pacs_of(request)
    spec = rule.model_dump(exclude_none=True)
    spec["when"] = {k: v for k, v in (rule.when.model_dump(exclude_none=True) if rule.when else {}).items()}
    added = pacs.routing_rules.put(name, spec)
    pacs.audit.record(PERMISSION_CHANGED, user=user_name(request.scope), address=client_address(request.scope),
                      detail=f"routing rule {name}: {added.on} → {', '.join(added.send_to)}")
    return _out(pacs, added)


@router.delete("/rules/{name}", responses=errors(404, 409))
def delete_rule(request: Request, name: str) -> dict[str, str]:
    """Remove a rule; its queued deliveries still go out."""
    pacs = pacs_of(request)
    pacs.routing_rules.remove(name)
    pacs.audit.record(PERMISSION_CHANGED, user=user_name(request.scope), address=client_address(request.scope),
                      detail=f"routing rule {name} removed")
    return {"deleted": name}


@router.get("/jobs")
def list_jobs(request: Request, state: Optional[Literal[STATES]] = None,  # type: ignore[valid-type]
              rule: Annotated[Optional[str], Param(max_length=64)] = None,
              limit: Annotated[int, Param(ge=1, le=MAX_LIMIT)] = 100, offset: Offset = 0) -> JobsOut:
    """Deliveries, newest first, with the count in each state."""
    queue = pacs_of(request).deliveries
    return JobsOut(counts=queue.counts(),
                   jobs=[JobOut(**j.as_dict()) for j in queue.jobs(state, rule=rule, limit=limit, offset=offset)])


@router.post("/jobs/{job_id}/retry", responses=errors(404, 409))
def retry_job(request: Request, job_id: Id) -> JobOut:
    """Try a failed (or waiting) delivery again now, with all its attempts again."""
    return JobOut(**pacs_of(request).deliveries.retry(job_id).as_dict())
