"""STOW-RS, the Store Transaction (PS3.18 10.5): instances sent as a multipart/related body of
application/dicom parts.

The body is split as it arrives and each part spooled to a temporary file (``multipart.Spool``), so a
request of any size takes bounded memory; parts are stored from their files once the body is complete, so a
malformed or half-sent body stores nothing. The answer (PS3.18 10.5.3) lists each instance stored
(ReferencedSOPSequence) or not (FailedSOPSequence, with the C-STORE status of the reason from the one table
in ``dimse.status``): 200 when all were stored, 202 when some were, 409 when none was.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from hounsfield.dicomfile import read_header
from hounsfield.dimse.status import PROCESSING_FAILURE, STORE_DATASET_MISMATCH, STORE_ERROR_STATUS, status_for
from hounsfield.errors import HounsfieldError, InvalidDataset
from hounsfield.pacs import Pacs
from hounsfield.web import multipart
from hounsfield.web.dicomweb.common import DICOM_JSON, pacs_of, root_url
from hounsfield.web.multipart import MalformedMultipart, SpooledPart, UnsupportedMediaType

router = APIRouter()


def _sop_item(class_uid: str, instance_uid: str) -> dict[str, Any]:
    """An item of ReferencedSOPSequence or FailedSOPSequence: the instance's SOP Class and Instance UIDs."""
    return {"00081150": {"vr": "UI", "Value": [class_uid]} if class_uid else {"vr": "UI"},
            "00081155": {"vr": "UI", "Value": [instance_uid]} if instance_uid else {"vr": "UI"}}


def _failed(class_uid: str, instance_uid: str, reason: int) -> dict[str, Any]:
    return {**_sop_item(class_uid, instance_uid), "00081197": {"vr": "US", "Value": [reason]}}  # FailureReason


def store_parts(pacs: Pacs, parts: Iterable[SpooledPart], study: str | None, origin: str,
                base: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """Store each part; returns (ReferencedSOPSequence items, FailedSOPSequence items, stored study UIDs)."""
    stored, failed, studies = [], [], set()
    for part in parts:
        media = multipart.parse_media_type(part.content_type or "application/dicom")
        class_uid = instance_uid = ""
        try:
            if media.type != "application/dicom":
                raise InvalidDataset(f"part media type {media.type!r} is not application/dicom")
            header = read_header(part.path, keys_only=True)
            class_uid, instance_uid = header.text("SOPClassUID"), header.sop_instance_uid
            if study is not None and header.text("StudyInstanceUID") != study:
                failed.append(_failed(class_uid, instance_uid, STORE_DATASET_MISMATCH))
                continue
            result = pacs.archive.store_file(part.path, origin)
        except HounsfieldError as exc:
            failed.append(_failed(class_uid, instance_uid, status_for(exc, STORE_ERROR_STATUS, PROCESSING_FAILURE)))
            continue
        url = (f"{base}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
               f"/instances/{result.sop_instance_uid}")
        stored.append({**_sop_item(result.sop_class_uid, result.sop_instance_uid),
                       "00081190": {"vr": "UR", "Value": [url]}})  # RetrieveURL
        studies.add(result.study_instance_uid)
    return stored, failed, studies


async def _stow(request: Request, study: str | None) -> Response:
    content_type = multipart.parse_media_type(request.headers.get("content-type", ""))
    if content_type.type != "multipart/related":
        raise UnsupportedMediaType(f"STOW-RS takes multipart/related; type=\"application/dicom\", "
                                   f"not {content_type.type or 'a body without Content-Type'}")
    part_type = content_type.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise UnsupportedMediaType(f"STOW-RS here takes parts of type application/dicom, not {part_type}")
    origin = f"STOW-RS {request.client.host if request.client else ''}".strip()
    pacs = pacs_of(request)
    base = root_url(request)
    with multipart.Spool(pacs.archive.files.new_incoming) as spool:
        parts = await multipart.receive_parts(request, content_type.params.get("boundary", ""), spool)
        if not parts:
            raise MalformedMultipart("multipart body has no parts")
        stored, failed, studies = await run_in_threadpool(store_parts, pacs, parts, study, origin, base)
    answer: dict[str, Any] = {}
    if len(studies) == 1 or study is not None:
        answer["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study or next(iter(studies))}"]}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        answer["00081199"] = {"vr": "SQ", "Value": stored}
    status = 200 if not failed else 409 if not stored else 202
    return Response(json.dumps(answer, separators=(",", ":")), status_code=status, media_type=DICOM_JSON)


@router.post("/studies", summary="STOW-RS: store instances (multipart/related; type=\"application/dicom\")")
async def stow_studies(request: Request) -> Response:
    return await _stow(request, None)


@router.post("/studies/{study}", summary="STOW-RS: store instances of one study")
async def stow_study(request: Request, study: str) -> Response:
    return await _stow(request, study)
