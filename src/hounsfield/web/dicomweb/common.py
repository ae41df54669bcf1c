"""What the DICOMweb services share: the archive of a request, the URLs of resources, and content negotiation
of the Accept header (PS3.18 8.7: media types; the ``accept`` query parameter overrides the header, 8.3.3.1).
"""

from __future__ import annotations

from fastapi import Request

from hounsfield.pacs import Pacs
from hounsfield.web import multipart
from hounsfield.web.multipart import MediaType, NotAcceptable

PREFIX = "/dicom-web"
DICOM_JSON = "application/dicom+json"


def pacs_of(request: Request) -> Pacs:
    return request.app.state.pacs


def root_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


def resource_url(request: Request, study: str, series: str | None = None, sop: str | None = None) -> str:
    """The URL of a study, series or instance resource (RetrieveURL, Content-Location)."""
    url = f"{root_url(request)}/studies/{study}"
    if series:
        url += f"/series/{series}"
    if sop:
        url += f"/instances/{sop}"
    return url


def accepts(request: Request) -> list[MediaType]:
    accept = request.query_params.get("accept") or request.headers.get("accept")
    return multipart.split_accept(accept)


def wants(request: Request, offers: list[str]) -> tuple[str, MediaType]:
    """The first offered media type (``multipart/related;type=X`` written as ``X`` with a multipart flag
    handled by the caller) that the Accept header allows, and the matching media range."""
    for wanted in accepts(request):
        for offer in offers:
            if wanted.type in (offer, "*/*", f"{offer.partition('/')[0]}/*"):
                return offer, wanted
    raise NotAcceptable(f"none of {', '.join(offers)} is acceptable (Accept: {request.headers.get('accept')})")


def multipart_type(request: Request, default: str, allowed: set[str]) -> str:
    """For a multipart/related resource: the part type the client asked for (``type=`` parameter)."""
    for wanted in accepts(request):
        if wanted.type in ("*/*", "multipart/*"):
            return default
        if wanted.type == "multipart/related":
            part = wanted.params.get("type", default).lower()
            if part in allowed or part in ("*/*", "*"):
                return default if part in ("*/*", "*") else part
        if wanted.type in allowed:  # single-part form asked for (e.g. Accept: application/dicom)
            return wanted.type
    raise NotAcceptable(f"this resource is available as multipart/related; type=\"{default}\" only")
