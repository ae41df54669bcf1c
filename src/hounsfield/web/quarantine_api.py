"""REST view of the quarantine: received files the indexer could not take, why, and what to do with them."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from hounsfield.web.worklist_api import Timestamp

router = APIRouter(prefix="/api/quarantine", tags=["quarantine"])


class QuarantinedOut(BaseModel):
    name: str = Field(description="The file's name in the quarantine (what retry and delete take)")
    reason: str
    quarantined_at: Timestamp
    size: int = Field(description="Bytes")
    origin: str = Field("", description="Where the file came from (the sender's AE title, upload…)")


class RetriedOut(BaseModel):
    name: str
    indexed: bool = Field(description="False: it failed again and is back in quarantine, with the new reason")


def _out(record: dict) -> QuarantinedOut:
    """The storage's record (its time in Unix seconds, as written beside the file) as the API gives it."""
    return QuarantinedOut(name=record["name"], reason=record.get("reason", ""),
                          quarantined_at=datetime.fromtimestamp(record.get("quarantined_at", 0), timezone.utc),
                          size=record.get("size", 0), origin=record.get("origin", ""))


@router.get("")
def list_quarantined(request: Request) -> list[QuarantinedOut]:
    """Files set aside by the indexer, oldest first: name, reason, time, size, sender."""
    return [_out(r) for r in request.app.state.pacs.archive.quarantined()]


@router.post("/{name}/retry")
def retry_quarantined(request: Request, name: str) -> RetriedOut:
    """Index a quarantined file again (once its cause is fixed); it goes back to quarantine if it still fails."""
    return RetriedOut(name=name, indexed=request.app.state.pacs.archive.retry_quarantined(name))


@router.delete("/{name}")
def discard_quarantined(request: Request, name: str) -> dict[str, str]:
    """Delete a quarantined file for good."""
    request.app.state.pacs.archive.discard_quarantined(name)
    return {"deleted": name}
