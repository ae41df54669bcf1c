"""REST for what the viewer needs beyond DICOMweb: send a study to a remote node as a background job with
progress, and upload files, folders or zip archives."""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from hounsfield.archive import StoredInstance
from hounsfield.config import Peer, Settings
from hounsfield.dimse.client import store_instances
from hounsfield.dimse.status import STORE_STORED
from hounsfield.errors import HounsfieldError, InvalidQuery, NotFound
from hounsfield.jobs import Job, Jobs
from hounsfield.pacs import Pacs
from hounsfield.tls import Outgoing
from hounsfield.web import multipart
from hounsfield.web.api import errors, pacs_of
from hounsfield.web.worklist_api import Timestamp

router = APIRouter(prefix="/api")

log = logging.getLogger(__name__)
COPY_CHUNK = 1 << 20
# What reading a damaged or unsupported zip raises (encrypted members: RuntimeError; unknown compression:
# NotImplementedError; corrupt deflate data: zlib.error; a member cut short: EOFError).
UNREADABLE_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError)
# Decompression bombs (issue 12): a zip whose members expand beyond what one upload may hold in all, or a large
# member packed tighter than DICOM ever is (deflate reaches ~1000:1 only on runs of one byte; a CT series zips
# 2-10:1), is refused whole before anything is extracted.
ZIP_MAX_RATIO = 200
ZIP_RATIO_FROM = 8 << 20  # members smaller than this may be packed as tight as they like


class SendIn(BaseModel):
    peer: str = Field(min_length=1, max_length=64, description="name of a remote node (GET /api/peers)")


class JobOut(BaseModel):
    """A background job (``hounsfield.jobs``): what it is about (study, peer; a retrieve's method, level,
    series) and the kind's counters (a send's sent; a retrieve's stored, local_instances) come besides these."""

    model_config = ConfigDict(extra="allow")
    id: str
    kind: str = Field(description="send or retrieve")
    state: str = Field(description="running, completed, partial (some sub-operations failed) or failed")
    total: int = Field(description="sub-operations (instances) to do; 0 while a retrieve does not know yet")
    done: int
    failed: int
    progress: int = Field(ge=0, le=100, description="percent done")
    error: Optional[str] = Field(description="why it failed")
    started_at: Timestamp
    finished_at: Optional[Timestamp] = Field(description="null while running")


class UploadedFile(BaseModel):
    file: str = Field(description="the file's name (a zip member: zip name/member path)")
    outcome: str = Field(description="stored, replaced, duplicate-kept or failed")
    error: Optional[str] = Field(None, description="failed only: why")
    sop_instance_uid: Optional[str] = None
    study_instance_uid: Optional[str] = None


class UploadReport(BaseModel):
    received: int
    stored: int
    failed: int
    files: list[UploadedFile]


@router.post("/studies/{uid}/send", tags=["studies"], status_code=202, responses=errors(404))
def send_study(request: Request, uid: str, body: SendIn) -> JobOut:
    """Send a study to a remote node by C-STORE in the background (over TLS to a node flagged tls); poll
    GET /api/jobs/{id} for progress."""
    pacs = pacs_of(request)
    peer = pacs.peers.get(body.peer)
    instances = pacs.archive.instances(study_uid=uid)
    if not instances:
        raise NotFound(f"no study {uid}")
    job = Job("send", total=len(instances), study=uid, peer=peer.name)
    pacs.jobs.update(job, sent=0)
    return JobOut(**pacs.jobs.start(job, lambda j: _run_send(pacs.jobs, j, peer, instances, pacs.settings)))


def _run_send(jobs: Jobs, job: Job, peer: Peer, instances: list[StoredInstance], settings: Settings) -> None:
    """Send ``instances`` (over TLS to a node flagged ``tls``), counting each outcome in ``job``."""
    def progress(_index: int, status: int | None) -> None:
        jobs.update(job, add={"done": 1, "sent" if status in STORE_STORED else "failed": 1})

    store_instances(peer, instances, settings.ae_title, progress, Outgoing(settings))


@router.get("/jobs", tags=["jobs"])
def list_jobs(request: Request, kind: Optional[Literal["send", "retrieve"]] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobOut]:
    """The background jobs of this server since it started (the last 500 finished ones and every running
    one), the newest first; ``kind`` send or retrieve."""
    return [JobOut(**j) for j in pacs_of(request).jobs.all(kind=kind, limit=limit)]


@router.get("/jobs/{job_id}", tags=["jobs"], responses=errors(404))
def get_job(request: Request, job_id: str) -> JobOut:
    """Progress of a background job (a send, a retrieve): state (running, completed, partial, failed), total
    sub-operations, done, failed, progress (percent), the kind's counters (sent; stored, local_instances) and
    the error that failed it."""
    return JobOut(**pacs_of(request).jobs.get(job_id))


def _store_upload(pacs: Pacs, uploads: list[tuple[str, Path]], origin: str) -> dict[str, Any]:
    """Store each uploaded file, or each member of an uploaded zip; report every one."""
    outcomes = []
    for name, path in uploads:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        outcomes += _store_zip(pacs, name, path, origin) if is_zip else [_store_one(pacs, name, path, origin)]
    failed = sum(o["outcome"] == "failed" for o in outcomes)
    return {"received": len(outcomes), "stored": len(outcomes) - failed, "failed": failed, "files": outcomes}


def _store_one(pacs: Pacs, name: str, path: Path, origin: str) -> dict[str, Any]:
    try:
        result = pacs.archive.store_file(path, origin)
    except HounsfieldError as exc:
        return {"file": name, "outcome": "failed", "error": str(exc)}
    return {"file": name, "outcome": result.outcome.value, "sop_instance_uid": result.sop_instance_uid,
            "study_instance_uid": result.study_instance_uid}


def _store_zip(pacs: Pacs, name: str, path: Path, origin: str) -> list[dict[str, Any]]:
    """A zip's members (folders and macOS metadata left out), each extracted to a temporary file in turn: a
    member is no bigger than the request body limit, and only one is on disk beside the upload at a time."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [info for info in zf.infolist()
                       if not info.is_dir() and not info.filename.startswith("__MACOSX/")
                       and not info.filename.rsplit("/", 1)[-1].startswith(".")]
            bomb = zip_bomb(members, pacs.settings.max_upload_bytes)
            if bomb:
                log.warning("upload %s from %s refused: %s", name, origin, bomb)
                return [{"file": name, "outcome": "failed", "error": f"refused zip: {bomb}"}]
            return [_store_member(pacs, zf, info, f"{name}/{info.filename}", origin) for info in members]
    except UNREADABLE_ZIP as exc:
        return [{"file": name, "outcome": "failed", "error": f"unreadable zip: {exc}"}]


def zip_bomb(members: list[zipfile.ZipInfo], limit: int) -> str:
    """Why a zip with these members is a decompression bomb ("" when it is not); from the sizes its central
    directory declares, which bound what reading a member gives (zipfile stops at the declared size)."""
    total = sum(info.file_size for info in members)
    if total > limit:
        return f"its files expand to {total} bytes, over the upload limit of {limit}"
    for info in members:
        if info.file_size >= ZIP_RATIO_FROM and info.file_size > ZIP_MAX_RATIO * max(1, info.compress_size):
            return (f"{info.filename} expands {info.file_size // max(1, info.compress_size)} times (at most "
                    f"{ZIP_MAX_RATIO} for a file of {ZIP_RATIO_FROM >> 20} MiB or more)")
    return ""


def _store_member(pacs: Pacs, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str,
                  origin: str) -> dict[str, Any]:
    limit = min(pacs.settings.max_upload_bytes, multipart.MAX_BODY_BYTES)
    if info.file_size > limit:  # what is read of a member stops at its declared size
        return {"file": name, "outcome": "failed",
                "error": f"{info.file_size} bytes uncompressed, over the limit of {limit}"}
    fd, tmp = pacs.archive.files.new_incoming()
    try:
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as member:
                shutil.copyfileobj(member, out, COPY_CHUNK)
        except UNREADABLE_ZIP as exc:
            return {"file": name, "outcome": "failed", "error": f"unreadable in the zip: {exc}"}
        return _store_one(pacs, name, tmp, origin)
    finally:
        tmp.unlink(missing_ok=True)


@router.post("/upload", tags=["instances"], response_model=UploadReport,
             responses={400: {"model": UploadReport, "description": "Nothing was stored"}, **errors(413)})
async def upload(request: Request) -> Any:
    """Upload DICOM files, a folder's files or zip archives as multipart/form-data (any field name), or one
    file / zip as the request body; each file is stored and reported (outcome stored, replaced,
    duplicate-kept or failed with the reason). 200 when something was stored, 400 when nothing was, 413 when
    the body is over the size limit."""
    # The body is spooled to temporary files as it arrives, so an upload of any size (up to
    # max_upload_bytes) takes bounded memory; the files are stored once it is complete.
    content_type = multipart.parse_media_type(request.headers.get("content-type", ""))
    pacs = pacs_of(request)
    with multipart.Spool(pacs.archive.files.new_incoming) as spool:
        if content_type.type.startswith("multipart/"):
            parts = await multipart.receive_parts(request, content_type.params.get("boundary", ""), spool)
            uploads = [(part.filename or part.name or f"part-{i + 1}", part.path) for i, part in enumerate(parts)
                       if part.filename is not None or part.size]
        else:
            part = await multipart.receive_body(request, spool)
            uploads = [(request.headers.get("x-filename", "upload"), part.path)] if part.size else []
        if not uploads:
            raise InvalidQuery("the upload holds no files")
        origin = f"upload {request.client.host if request.client else ''}".strip()
        report = await run_in_threadpool(_store_upload, pacs, uploads, origin)
    return JSONResponse(report, status_code=200 if report["stored"] else 400)
