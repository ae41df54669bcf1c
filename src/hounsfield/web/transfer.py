"""REST for what the viewer needs beyond DICOMweb: send a study to a remote node as a background job with
progress, and upload files, folders or zip archives."""

from __future__ import annotations

import io
import logging
import threading
import uuid
import zipfile
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from hounsfield.config import Peer
from hounsfield.dimse.client import store
from hounsfield.errors import HounsfieldError, InvalidQuery, NotFound
from hounsfield.pacs import Pacs
from hounsfield.web import multipart
from hounsfield.web.api import pacs_of

router = APIRouter(prefix="/api")

log = logging.getLogger(__name__)
_JOBS: dict[str, dict[str, Any]] = {}
_JOBS_LOCK = threading.Lock()
_SUCCESS_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}  # C-STORE success and warnings (PS3.4 B.2.3)


class SendIn(BaseModel):
    peer: str = Field(min_length=1, max_length=64, description="name of a remote node (GET /api/peers)")


@router.post("/studies/{uid}/send", tags=["studies"], status_code=202)
def send_study(request: Request, uid: str, body: SendIn) -> dict[str, Any]:
    """Send a study to a remote node by C-STORE in the background; poll GET /api/jobs/{id} for progress."""
    pacs = pacs_of(request)
    peer = pacs.peers.get(body.peer)
    files = [inst.path for inst in pacs.archive.instances(study_uid=uid)]
    if not files:
        raise NotFound(f"no study {uid}")
    job = {"id": uuid.uuid4().hex, "kind": "send", "study": uid, "peer": peer.name, "state": "running",
           "total": len(files), "done": 0, "sent": 0, "failed": 0, "error": None}
    with _JOBS_LOCK:
        _JOBS[job["id"]] = job
    threading.Thread(target=_run_send, args=(job, peer, files, pacs.settings.ae_title), daemon=True,
                      name=f"send-{job['id'][:8]}").start()
    return dict(job)


def _run_send(job: dict[str, Any], peer: Peer, files: list, calling_ae: str) -> None:
    def progress(_path: Any, status: int | None) -> None:
        with _JOBS_LOCK:
            job["done"] += 1
            job["sent" if status in _SUCCESS_STATUSES else "failed"] += 1

    try:
        store(peer, files, calling_ae, progress)
    except HounsfieldError as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a background job reports every failure in its state
        log.exception("sending study %s to %s failed", job["study"], peer.name)
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = None
    with _JOBS_LOCK:
        job["error"] = error
        job["failed"] += job["total"] - job["done"] if error else 0
        job["state"] = "failed" if error or job["sent"] == 0 else "completed" if not job["failed"] else "partial"


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: str) -> dict[str, Any]:
    """Progress of a background job: state (running, completed, partial, failed), total, done, sent, failed."""
    with _JOBS_LOCK:
        job = _JOBS.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return dict(job)


def _upload_items(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """A zip's members (folders and macOS metadata left out), or the file itself."""
    if data[:4] != b"PK\x03\x04":
        return [(name, data)]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(f"{name}/{info.filename}", zf.read(info)) for info in zf.infolist()
                    if not info.is_dir() and not info.filename.startswith("__MACOSX/")
                    and not info.filename.rsplit("/", 1)[-1].startswith(".")]
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        return [(f"{name} (unreadable zip: {exc})", b"")]


def _store_upload(pacs: Pacs, items: list[tuple[str, bytes]], origin: str) -> dict[str, Any]:
    outcomes = []
    for name, data in items:
        try:
            result = pacs.archive.store_bytes(data, origin)
        except HounsfieldError as exc:
            outcomes.append({"file": name, "outcome": "failed", "error": str(exc)})
        else:
            outcomes.append({"file": name, "outcome": result.outcome.value,
                             "sop_instance_uid": result.sop_instance_uid,
                             "study_instance_uid": result.study_instance_uid})
    failed = sum(o["outcome"] == "failed" for o in outcomes)
    return {"received": len(outcomes), "stored": len(outcomes) - failed, "failed": failed, "files": outcomes}


@router.post("/upload", tags=["instances"])
async def upload(request: Request) -> Any:
    """Upload DICOM files, a folder's files or zip archives as multipart/form-data (any field name), or one
    file / zip as the request body; each file is stored and reported (outcome stored, replaced,
    duplicate-kept or failed with the reason). 200 when something was stored, 400 when nothing was."""
    content_type = multipart.parse_media_type(request.headers.get("content-type", ""))
    body = await request.body()
    items: list[tuple[str, bytes]] = []
    if content_type.type.startswith("multipart/"):
        for i, part in enumerate(multipart.parse(body, content_type.params.get("boundary", ""))):
            if part.filename is None and not part.body:
                continue
            items += _upload_items(part.filename or part.name or f"part-{i + 1}", part.body)
    elif body:
        items = _upload_items(request.headers.get("x-filename", "upload"), body)
    if not items:
        raise InvalidQuery("the upload holds no files")
    origin = f"upload {request.client.host if request.client else ''}".strip()
    report = await run_in_threadpool(_store_upload, pacs_of(request), items, origin)
    return JSONResponse(report, status_code=200 if report["stored"] else 400)
