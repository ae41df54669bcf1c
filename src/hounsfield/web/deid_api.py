"""REST for de-identification (PS3.15 Annex E, Basic Application Level Confidentiality Profile): a
de-identified copy of a study inside the archive (as Orthanc's /studies/{id}/anonymize), the same as a zip of
DICOM files streamed instance by instance, and the mappings back to the originals (for admins).

Options are named as ``profile.Option`` names them (``retain-dates``, ``retain-patient-characteristics``,
``clean-descriptors``, ``retain-uids``); an unknown one is a 400 naming it.
"""

from __future__ import annotations

import zipfile
from typing import Annotated, Iterator, Optional

from fastapi import APIRouter, Query as Param, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from hounsfield.deid.engine import CopyReport, Deidentifier, DeidentifiedInstance, file_name
from hounsfield.deid.mappings import Mappings
from hounsfield.deid.profile import Option, parse_options
from hounsfield.errors import InvalidDataset
from hounsfield.web.api import MAX_LIMIT, SQL_INT_MAX, pacs_of
from hounsfield.web.worklist_api import Timestamp

router = APIRouter(prefix="/api", tags=["de-identification"])
OPTIONS_HELP = "Options of the Basic Profile (PS3.15 E.3): " + ", ".join(o.value for o in Option) + "."
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # every member's date: the zip says nothing of when, and is the same every time


class DeidentifyIn(BaseModel):
    options: list[str] = Field(default_factory=list, description=OPTIONS_HELP)


class FailedInstance(BaseModel):
    sop_instance_uid: str = Field(description="The original SOP Instance UID.")
    problem: str


class DeidentifiedStudy(BaseModel):
    study_instance_uid: str = Field(description="The copy's Study Instance UID.")
    patient_id: str = Field(description="The copy's Patient ID (a pseudonym, the same for every study of the "
                                        "original Patient ID; empty when the original had none).")
    options: list[str]
    instances: int = Field(description="Instances of the original study.")
    stored: int
    replaced: int = Field(description="Copies stored over an earlier copy (duplicate_policy overwrite).")
    duplicates_kept: int = Field(description="Copies already in the archive from an earlier de-identification "
                                             "(the same UIDs), kept as they were (duplicate_policy keep).")
    failed: list[FailedInstance]


class DeidMappingOut(BaseModel):
    kind: str = Field(description="uid or patient_id")
    original: str = Field(description="The original value (sha256:… for one longer than 330 characters).")
    replacement: str
    created_at: Timestamp


def _deidentifier(request: Request, options: list[str]) -> Deidentifier:
    pacs = pacs_of(request)
    return Deidentifier(pacs.db, parse_options(options), max_depth=pacs.settings.max_sequence_depth)


@router.post("/studies/{uid}/deidentify", status_code=201, response_model=DeidentifiedStudy,
             responses={400: {"description": "An unsupported option, retain-uids, or no instance could be "
                                             "de-identified"}, 404: {"description": "No such study"}})
def deidentify_study(request: Request, uid: str, body: Optional[DeidentifyIn] = None) -> DeidentifiedStudy:
    """Store a de-identified copy of a study in the archive (a new study, new patient pseudonym): 201 with the
    copy's Study Instance UID and what happened to each instance. The original is not changed. retain-uids is
    refused here (the copy would have the original's UIDs); the zip takes it."""
    pacs = pacs_of(request)
    report = _deidentifier(request, body.options if body else []).copy_study(pacs.archive, uid)
    if report.instances and len(report.failed) == report.instances:
        raise InvalidDataset(f"none of the {report.instances} instances of study {uid} could be de-identified: "
                             f"{report.failed[0][1]}")
    return _answer(report)


def _answer(report: CopyReport) -> DeidentifiedStudy:
    return DeidentifiedStudy(
        study_instance_uid=report.study_instance_uid, patient_id=report.patient_id,
        options=[o.value for o in report.options], instances=report.instances, stored=report.stored,
        replaced=report.replaced, duplicates_kept=report.duplicates_kept,
        failed=[FailedInstance(sop_instance_uid=sop, problem=why) for sop, why in report.failed])


class _Sink:
    """Where ``zipfile`` writes: kept until the response takes it (zipfile writes a stream it cannot seek with
    data descriptors, so nothing but the current member is ever held)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self._chunks = b"".join(self._chunks), []
        return out


def zip_stream(deid: Deidentifier, outcomes: Iterator[DeidentifiedInstance]) -> Iterator[bytes]:
    """A zip of the de-identified instances (STUDY/SERIES/SOP.dcm), written as each one is made. One that cannot
    be de-identified is left out and counted in SKIPPED.txt, without its original UID (the zip is
    de-identified; the server log names it)."""
    sink = _Sink()
    skipped = total = 0
    with zipfile.ZipFile(sink, "w") as zf:
        for outcome in outcomes:
            total += 1
            ds = outcome.dataset
            if ds is None:
                skipped += 1
                continue
            member = zipfile.ZipInfo(str(file_name(ds)), ZIP_DATE)
            member.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(member, deid.encode(ds), compresslevel=1)
            yield sink.take()
        if skipped:
            zf.writestr(zipfile.ZipInfo("SKIPPED.txt", ZIP_DATE),
                        f"{skipped} of the study's {total} instances could not be de-identified and are not in "
                        "this archive; the server's log says why.\n")
    yield sink.take()


@router.get("/studies/{uid}/deidentified.zip", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "The de-identified study"},
                       400: {"description": "An unsupported option"}, 404: {"description": "No such study"}})
def deidentified_zip(request: Request, uid: str,
                     option: Annotated[Optional[list[str]], Param(description=OPTIONS_HELP)] = None
                     ) -> StreamingResponse:
    """A zip of the study de-identified as DICOM files (STUDY/SERIES/SOP.dcm by their new UIDs), streamed one
    instance at a time; nothing is stored. Options repeat: ?option=retain-dates&option=clean-descriptors."""
    deid = _deidentifier(request, option or [])
    outcomes = deid.study(pacs_of(request).archive, uid)  # a missing study is a 404 before anything is sent
    name = f"{deid.uid(uid)}.zip"
    return StreamingResponse(zip_stream(deid, outcomes), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/deid/mappings", response_model=list[DeidMappingOut])
def list_mappings(
    request: Request,
    original: Annotated[Optional[str], Param(max_length=4096, description="An original value.")] = None,
    replacement: Annotated[Optional[str], Param(max_length=330, description="A replacement.")] = None,
    kind: Annotated[Optional[str], Param(max_length=16, description="uid or patient_id.")] = None,
    limit: Annotated[int, Param(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Param(ge=0, le=SQL_INT_MAX)] = 0,
) -> list[DeidMappingOut]:
    """What de-identification replaced, oldest first, filtered by original and/or replacement (exact): the way
    back from a de-identified UID or pseudonym to the original. For admins."""
    found = Mappings(pacs_of(request).db).search(original=original, replacement=replacement, kind=kind,
                                                limit=limit, offset=offset)
    return [DeidMappingOut(kind=m.kind, original=m.original, replacement=m.replacement, created_at=m.created_at)
            for m in found]
