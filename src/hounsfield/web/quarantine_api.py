"""REST view of the quarantine: received files the indexer could not take, why, and what to do with them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(prefix="/api/quarantine", tags=["quarantine"])


@router.get("")
def list_quarantined(request: Request) -> list[dict[str, Any]]:
    """Files set aside by the indexer, oldest first: name, reason, time (Unix seconds), size, sender AE."""
    return request.app.state.pacs.archive.quarantined()


@router.post("/{name}/retry")
def retry_quarantined(request: Request, name: str) -> dict[str, Any]:
    """Index a quarantined file again (once its cause is fixed); it goes back to quarantine if it still fails."""
    return {"name": name, "indexed": request.app.state.pacs.archive.retry_quarantined(name)}


@router.delete("/{name}")
def discard_quarantined(request: Request, name: str) -> dict[str, str]:
    """Delete a quarantined file for good."""
    request.app.state.pacs.archive.discard_quarantined(name)
    return {"deleted": name}
