"""WADO-RS, the Retrieve Transaction (PS3.18 10.4): instances, metadata, frames and bulk data.

Instances go out as the stored bytes, streamed file by file in a multipart/related body; metadata is the
DICOM JSON the index keeps (never read from the files, PS3.18 F.2); frames and bulk data are decoded by
``hounsfield.imaging.frames``. The rendered and thumbnail resources are in ``rendered``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from hounsfield import query as q
from hounsfield.archive import StoredInstance
from hounsfield.dicomfile import json_text
from hounsfield.errors import InvalidQuery, NotFound
from hounsfield.imaging.frames import bulk_data, frame_bytes
from hounsfield.web import multipart
from hounsfield.web.dicomweb.common import DICOM_JSON, accepts, multipart_type, pacs_of, resource_url, wants

router = APIRouter()

CHUNK = 4 << 20
OCTETS = "application/octet-stream"
FRAME_TYPE = f"{OCTETS}; transfer-syntax=1.2.840.10008.1.2.1"  # PS3.18 8.7.3.3: Explicit VR Little Endian


def stored(request: Request, study: str, series: str | None = None, sop: str | None = None) -> list[StoredInstance]:
    """The stored instances of the resource, ``NotFound`` naming what is missing."""
    found = pacs_of(request).archive.instances(study_uid=study, series_uid=series,
                                               sop_uids=[sop] if sop is not None else None)
    if not found:
        what = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
        raise NotFound(f"no {what} in the archive" + (f" under study {study}" if sop or series else ""))
    return found


def frame_numbers(text: str) -> list[int]:
    """The frame list of a frames resource: comma-separated frame numbers, the first frame is 1."""
    try:
        numbers = [int(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise InvalidQuery(f"frame list {text!r} is not a comma-separated list of frame numbers") from None
    if not numbers or any(n < 1 for n in numbers):
        raise InvalidQuery(f"frame list {text!r}: frame numbers start at 1")
    return numbers


def frame_count(request: Request, sop: str) -> int:
    """How many frames the index says an instance has."""
    with pacs_of(request).archive.reading() as s:
        return q.number_of_frames(s, sop)


# ------------------------------------------------------------------------------------------------ instances
def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _retrieve(request: Request, study: str, series: str | None = None, sop: str | None = None) -> Response:
    part_type = multipart_type(request, "application/dicom", {"application/dicom"})
    found = stored(request, study, series, sop)
    boundary = multipart.new_boundary()
    parts = ((f"application/dicom; transfer-syntax={inst.transfer_syntax_uid}",
              {"Content-Location": resource_url(request, inst.study_instance_uid, inst.series_instance_uid,
                                                inst.sop_instance_uid)},
              _file_chunks(inst.path)) for inst in found)
    return StreamingResponse(multipart.stream_parts(boundary, parts),
                             media_type=f'multipart/related; type="{part_type}"; boundary={boundary}')


@router.get("/studies/{study}", summary="WADO-RS: retrieve a study (stored bytes, multipart/related)")
def retrieve_study(request: Request, study: str) -> Response:
    return _retrieve(request, study)


@router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(request: Request, study: str, series: str) -> Response:
    return _retrieve(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}", summary="WADO-RS: retrieve an instance")
def retrieve_instance(request: Request, study: str, series: str, sop: str) -> Response:
    return _retrieve(request, study, series, sop)


# ------------------------------------------------------------------------------------------------ metadata
def _metadata(request: Request, study: str, series: str | None = None, sop: str | None = None) -> Response:
    wants(request, [DICOM_JSON, "application/json"])
    with pacs_of(request).archive.reading() as s:
        blobs = q.instance_headers(s, study, series, sop)
    if not blobs:
        stored(request, study, series, sop)  # raises NotFound naming what is missing
    # The index keeps each header as DICOM JSON text: concatenate, never parse; make BulkDataURIs absolute.
    body = b"[" + b",".join(json_text(b) for b in blobs) + b"]"
    if b'"BulkDataURI":"/' in body and _host_is_reliable(request):
        base = str(request.base_url).rstrip("/").encode()
        body = body.replace(b'"BulkDataURI":"/', b'"BulkDataURI":"' + base + b"/")
    return Response(body, media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata", summary="WADO-RS: metadata of a study (DICOM JSON)")
def study_metadata(request: Request, study: str) -> Response:
    return _metadata(request, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: metadata of a series")
def series_metadata(request: Request, study: str, series: str) -> Response:
    return _metadata(request, study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata",
            summary="WADO-RS: metadata of an instance")
def instance_metadata(request: Request, study: str, series: str, sop: str) -> Response:
    return _metadata(request, study, series, sop)


def _host_is_reliable(request: Request) -> bool:
    """Whether the Host header names this service fully: some clients (dicomweb-client) send the host without
    its port; then the BulkDataURIs stay absolute paths ("/dicom-web/…", PS3.18 F.2.6 allows relative URIs)."""
    host = request.headers.get("host", "")
    has_port = ":" in host.rsplit("]", 1)[-1]
    server = request.scope.get("server") or (None, None)
    return bool(host) and (has_port or server[1] in (80, 443, None))


# ------------------------------------------------------------------------------------------------ frames, bulk data
@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
            summary="WADO-RS: uncompressed frames (multipart/related application/octet-stream)")
def retrieve_frames(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    numbers = frame_numbers(frames)
    multipart_type(request, OCTETS, {OCTETS})
    inst = stored(request, study, series, sop)[0]
    available = frame_count(request, sop)
    for n in numbers:
        if n > available:
            raise NotFound(f"instance {sop} has {available} frame(s), not {n}")
    boundary = multipart.new_boundary()
    url = resource_url(request, study, series, sop)
    parts = ((FRAME_TYPE, {"Content-Location": f"{url}/frames/{n}"}, [frame_bytes(inst.path, n)]) for n in numbers)
    return StreamingResponse(multipart.stream_parts(boundary, parts),
                             media_type=f'multipart/related; type="{OCTETS}"; boundary={boundary}')


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{tag}",
            summary="WADO-RS: bulk data named by a BulkDataURI in the metadata")
def retrieve_bulkdata(request: Request, study: str, series: str, sop: str, tag: str) -> Response:
    try:
        wanted = int(tag, 16)
    except ValueError:
        raise InvalidQuery(f"bulk data tag {tag!r} is not 8 hexadecimal digits") from None
    part_type = multipart_type(request, OCTETS, {OCTETS})
    value = bulk_data(stored(request, study, series, sop)[0].path, wanted)
    if part_type == OCTETS and not any(m.type == "multipart/related" for m in accepts(request)):
        return Response(value, media_type=OCTETS)
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream_parts(boundary, [(OCTETS, {}, [value])]))
    return Response(body, media_type=f'multipart/related; type="{OCTETS}"; boundary={boundary}')
