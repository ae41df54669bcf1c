"""REST API over the archive: list/search/delete patients, studies, series and instances; download an
instance; the remote nodes. Search parameters are DICOM keywords and use the shared matching rules.

Patient and study records say whether the demographics under their Patient ID differ between studies
(``demographics_conflict``, ``demographics_variants``): the demographics are kept and matched per study
(``query``), so a Patient ID reused by another system, or a name corrected later, shows up here."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from fastapi import APIRouter, Query as Param, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, create_model
from pydicom import datadict
from pydicom.dataset import Dataset

from hounsfield import query as q
from hounsfield.access import ALL_SERVICES, SERVICES
from hounsfield.config import Peer
from hounsfield.errors import InvalidQuery, NotFound
from hounsfield.pacs import Pacs
from hounsfield.web.auth import client_address, user_name

router = APIRouter(prefix="/api")

LEVEL_OF = {"patients": "PATIENT", "studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
UID_KEY = {"patients": "PatientID", "studies": "StudyInstanceUID", "series": "SeriesInstanceUID",
           "instances": "SOPInstanceUID"}
SUMMARY = {
    "PATIENT": ["PatientID", "PatientName", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"],
    "STUDY": ["StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime", "AccessionNumber",
              "StudyDescription", "ReferringPhysicianName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances"],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "BodyPartExamined", "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
              "Rows", "Columns", "NumberOfFrames"],
}
DEMOGRAPHIC_LEVELS = ("PATIENT", "STUDY")  # records that carry the demographics flag
MAX_LIMIT = 10000
SQL_INT_MAX = 2**63 - 1  # the largest integer SQLite and PostgreSQL (BIGINT) take: an offset or id beyond is a 422


def pacs_of(request: Request) -> Pacs:
    return request.app.state.pacs


class ErrorOut(BaseModel):
    """Every error answer (``web.app``'s handlers): the kind (InvalidQuery, NotFound, Rejected, RemoteFailure,
    ValidationError…) and what went wrong; a 422 gives each problem and the fields named."""

    error: str
    detail: Union[str, list[dict[str, Any]]]
    fields: Optional[list[str]] = Field(None, description="422 only: the fields that failed validation")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route whose errors are these statuses, each with ``ErrorOut``'s shape."""
    return {code: {"model": ErrorOut} for code in codes}


INTEGER_VRS = {"IS", "US", "UL", "SS", "SL", "UV", "SV"}
DECIMAL_VRS = {"DS", "FL", "FD"}


def _multi_valued(keyword: str) -> bool:
    """Whether the data dictionary lets ``keyword`` hold several values (VM 1-n, 2, …): such a field is always a
    list in a record, whatever number of values a record has."""
    return datadict.dictionary_VM(datadict.tag_for_keyword(keyword)) != "1"


def _vr(keyword: str) -> str:
    return datadict.dictionary_VR(datadict.tag_for_keyword(keyword))


def _plain(value: Any) -> Any:
    """A DICOM JSON value as a record holds it: a person name as its alphabetic group (or, without one, the
    groups it has as DICOM writes them, ``=Ideographic``)."""
    if isinstance(value, dict):
        groups = [str(value.get(k) or "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
        return groups[0] or "=".join(groups).rstrip("=")
    return value


def _scalar(vr: str, values: list[Any]) -> Any:
    """The one value of a VM-1 attribute: an integer or a number for the numeric VRs (null when the stored text
    is no number), else a string (several values that break VM 1 are kept, joined with a backslash as DICOM
    encodes them)."""
    if vr in INTEGER_VRS or vr in DECIMAL_VRS:
        kind = int if vr in INTEGER_VRS else float
        first = values[0]
        return kind(first) if isinstance(first, (int, float)) and not isinstance(first, bool) else None
    return "\\".join(str(v) for v in values)


def flatten(json_ds: dict[str, Any], keywords: list[str]) -> dict[str, Any]:
    """{'00100010': {'vr': 'PN', 'Value': [{'Alphabetic': 'A^B'}]}} → {'PatientName': 'A^B'}: one shape per
    keyword — a multi-valued attribute (ModalitiesInStudy) is always a list (empty when absent), any other one
    value or null."""
    out: dict[str, Any] = {}
    for kw in keywords:
        tag = q.tag_key(kw)
        values = [_plain(v) for v in json_ds.get(tag, {}).get("Value", []) if v is not None]
        if _multi_valued(kw):
            out[kw] = [str(v) for v in values]
        else:
            out[kw] = _scalar(_vr(kw), values) if values else None
    return out


def search(pacs: Pacs, level: str, filters: dict[str, str], *, limit: int, offset: int,
           fuzzy: bool = False, exact: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The summaries of the ``level`` records matching ``filters`` with the C-FIND rules and ``exact`` keys by
    equality."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for kw in SUMMARY[level]:
        setattr(identifier, kw, None)
    for kw, value in filters.items():
        try:
            identifier.__setattr__(kw, value)
        except (ValueError, TypeError) as exc:
            raise InvalidQuery(f"{kw}: {exc}") from exc
    query = q.Query(identifier, model="PATIENT" if level == "PATIENT" else "STUDY", fuzzy_pn=fuzzy)
    for kw, value in (exact or {}).items():
        query.require_equal(kw, value)
    with pacs.archive.reading() as s:
        matches = list(q.run(s, query, tags=query.answer_tags, offset=offset, limit=limit))
        records = [flatten(m.json(), SUMMARY[level]) for m in matches]
        if level in DEMOGRAPHIC_LEVELS:
            found = q.demographics(s, level, [m.id for m in matches])
            for m, record in zip(matches, records):
                conflict = q.demographics_conflict(found[m.id])
                record["demographics_conflict"] = conflict
                record["demographics_variants"] = found[m.id] if conflict else []
        return records


def _filters(request: Request) -> dict[str, str]:
    out = {}
    for key, value in request.query_params.items():
        if key in ("limit", "offset", "fuzzy"):
            continue
        if datadict.tag_for_keyword(key) is None:
            raise InvalidQuery(f"unknown search parameter {key!r}: use DICOM keywords such as PatientID")
        out[key] = value
    return out


class DemographicVariant(BaseModel):
    """One combination of patient demographics found among the studies under a Patient ID, normalised as the
    index matches them (names without trailing padding, dates YYYYMMDD)."""

    PatientName: str
    PatientBirthDate: str
    PatientSex: str
    StudyInstanceUIDs: list[str] = Field(description="The studies whose instances give these demographics.")


_DEMOGRAPHIC_FIELDS: dict[str, Any] = {
    "demographics_conflict": (bool, Field(description=(
        "True when the studies under this Patient ID (and Issuer) disagree on PatientName, PatientBirthDate or "
        "PatientSex (two different non-empty values; a value missing from a study is no conflict): a Patient ID "
        "reused by another system, or a name corrected later. Each study is matched and answered with its own "
        "demographics; a patient record with the values of the study that matched the search (of several, "
        "the latest)."))),
    "demographics_variants": (list[DemographicVariant], Field(description=(
        "When demographics_conflict: every distinct (PatientName, PatientBirthDate, PatientSex) under the "
        "Patient ID with the studies giving it, the earliest stored first; empty otherwise."))),
}


def _record_field(keyword: str) -> tuple[Any, Any]:
    """The type of ``keyword`` in a record: what ``flatten`` gives it."""
    vr = _vr(keyword)
    if _multi_valued(keyword):
        return list[str], Field(default_factory=list, description=f"DICOM {keyword}: every value, always a list "
                                                                    "(empty when absent).")
    kind: Any = int if vr in INTEGER_VRS else float if vr in DECIMAL_VRS else str
    what = "an integer" if kind is int else "a number" if kind is float else "a string"
    return Optional[kind], Field(None, description=f"DICOM {keyword} ({vr}), {what}; null when absent"
                                 + (" or not a number." if kind is not str else "."))


def _record_model(level: str) -> type[BaseModel]:
    """The documented shape of a record of ``level`` (OpenAPI only: the records are built by ``search``)."""
    fields: dict[str, Any] = {kw: _record_field(kw) for kw in SUMMARY[level]}
    if level in DEMOGRAPHIC_LEVELS:
        fields.update(_DEMOGRAPHIC_FIELDS)
    name = {"PATIENT": "PatientRecord", "STUDY": "StudyRecord", "SERIES": "SeriesRecord",
            "IMAGE": "InstanceRecord"}[level]
    return create_model(name, __config__=ConfigDict(extra="allow"), **fields)


RECORD_MODELS = {level: _record_model(level) for level in SUMMARY}


def _list_route(resource: str) -> None:
    level = LEVEL_OF[resource]
    record = RECORD_MODELS[level]

    def list_resource(
        request: Request,
        limit: Annotated[int, Param(ge=1, le=MAX_LIMIT)] = 100,
        offset: Annotated[int, Param(ge=0, le=SQL_INT_MAX)] = 0,
        fuzzy: bool = False,
    ) -> list[dict[str, Any]]:
        return search(pacs_of(request), level, _filters(request), limit=limit, offset=offset, fuzzy=fuzzy)

    list_resource.__doc__ = (f"List or search {resource}. Any DICOM keyword is a filter with C-FIND matching "
                             "(wildcards * ?, ranges 20240101-20241231, UID lists).")
    if level in DEMOGRAPHIC_LEVELS:
        list_resource.__doc__ += (
            " Patient attributes are matched on each study's own values"
            + (": a patient matches when one of its studies matches them all, and shows that study's values."
               if level == "PATIENT" else ".")
            + " demographics_conflict says whether the studies under the Patient ID disagree on them.")
    router.add_api_route(f"/{resource}", list_resource, methods=["GET"], tags=[resource],
                         name=f"list_{resource}", response_model=None,
                         responses={200: {"model": list[record], "description": f"The matching {resource}."}})

    def get_one(request: Request, uid: str) -> dict[str, Any]:
        found = search(pacs_of(request), level, {}, exact={UID_KEY[resource]: uid}, limit=1, offset=0)
        if not found:
            raise NotFound(f"no {level.lower()} {uid} in {resource}")
        return found[0]

    router.add_api_route(f"/{resource}/{{uid}}", get_one, methods=["GET"], tags=[resource],
                         name=f"get_{resource}", response_model=None,
                         responses={200: {"model": record, "description": f"The {level.lower()} record."}})

    def delete_one(request: Request, uid: str) -> dict[str, Any]:
        removed = pacs_of(request).archive.delete({"patients": "patient", "studies": "study", "series": "series",
                                                   "instances": "instance"}[resource], uid,
                                                  user=user_name(request.scope), address=client_address(request.scope))
        return {"deleted": uid, "instances_removed": removed}

    router.add_api_route(f"/{resource}/{{uid}}", delete_one, methods=["DELETE"], tags=[resource],
                         name=f"delete_{resource}")


for _resource in LEVEL_OF:
    _list_route(_resource)


@router.get("/instances/{uid}/file", tags=["instances"], response_class=FileResponse)
def download_instance(request: Request, uid: str) -> FileResponse:
    """The stored Part-10 file, byte for byte as received."""
    inst = pacs_of(request).archive.instance(uid)
    return FileResponse(inst.path, media_type="application/dicom", filename=f"{uid}.dcm")


class PeerIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    tls: bool = Field(False, description="reached over TLS: port is then its DICOM TLS port")
    allow: Optional[list[Literal[SERVICES]]] = Field(  # type: ignore[valid-type]
        None, description="DICOM services the node may use here (echo, store, find, get, move, worklist, mpps); "
                          "absent or null: every one")


def _peer_out(p: Peer) -> PeerIn:
    every = p.allow == ALL_SERVICES
    return PeerIn(name=p.name, ae_title=p.ae_title, host=p.host, port=p.port, tls=p.tls,
                  allow=None if every else [s for s in SERVICES if s in p.allow])


@router.get("/peers", tags=["peers"])
def list_peers(request: Request) -> list[PeerIn]:
    """Remote DICOM nodes: from the configuration file and added here, with the services each may use."""
    return [_peer_out(p) for p in pacs_of(request).peers.all()]


@router.put("/peers/{name}", tags=["peers"])
def put_peer(request: Request, name: str, peer: PeerIn) -> PeerIn:
    """Add or change a remote node (C-MOVE destination, known AE) and the DICOM services it may use."""
    allow = ALL_SERVICES if peer.allow is None else frozenset(peer.allow)
    pacs = pacs_of(request)
    added = pacs.peers.add(Peer(name, peer.ae_title, peer.host, peer.port, tls=peer.tls, allow=allow))
    pacs.audit.record("permission_changed", user=user_name(request.scope), address=client_address(request.scope),
                      detail=f"node {name} ({peer.ae_title} at {peer.host}:{peer.port}) may use "
                             f"{', '.join(s for s in SERVICES if s in allow) or 'nothing'}")
    return _peer_out(added)


@router.delete("/peers/{name}", tags=["peers"])
def delete_peer(request: Request, name: str) -> dict[str, str]:
    pacs = pacs_of(request)
    pacs.peers.remove(name)
    pacs.audit.record("permission_changed", user=user_name(request.scope), address=client_address(request.scope),
                      detail=f"node {name} removed")
    return {"deleted": name}
