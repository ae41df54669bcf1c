"""REST API of the worklist (/api/worklist/…) and the receptionist's page (/worklist). Thin routes: parse,
one ``Worklist``/``Mpps`` call, shape the answer.

An item is sent either in the friendly flat form (``WorklistItemIn``) or as DICOM JSON (PS3.18 F.2); a bad
value is HTTP 422 naming the field, and nothing is written.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Callable, Coroutine, Optional, Union

from fastapi import APIRouter, Body, Path as Segment, Query as Param, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PlainSerializer, RootModel,
                      Tag, WithJsonSchema, create_model)
from pydicom.dataset import Dataset

from hounsfield.errors import NotFound
from hounsfield.pacs import Pacs
from hounsfield.web.api import SQL_INT_MAX
from hounsfield.web.auth import user_name
from hounsfield.worklist import flat, items, mwl
from hounsfield.worklist.items import InvalidItem
from hounsfield.worklist.service import Item
from hounsfield.worklist.status import OPEN, STATUSES

STATIC = Path(__file__).parent / "static"
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
# Longest value of each VR in the flat form (PS3.5 6.2); PN: three component groups of 64.
MAX_LENGTH = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 194, "UI": 64, "LT": 10240, "DS": 16, "DA": 10}
# Levels of arrays and objects a DICOM JSON item may nest: a sequence takes three (Value, item, element), so
# this leaves some twenty levels of sequences where items nest two to four; deeper ones would exhaust the
# recursion of parsing and copying the dataset.
MAX_NESTING = 64
Id = Annotated[int, Segment(ge=1, le=SQL_INT_MAX)]
Offset = Annotated[int, Param(ge=0, le=SQL_INT_MAX)]


def _utc(value: datetime) -> datetime:
    """The index keeps UTC; SQLite gives it back without a zone, PostgreSQL in the session's zone."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# Every timestamp of the REST API: ISO 8601 in UTC with its offset written out, microseconds always given
# ("2026-01-31T08:30:00.000000+00:00"), whatever the database returned.
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$"
Timestamp = Annotated[
    datetime, AfterValidator(_utc),
    PlainSerializer(lambda v: _utc(v).isoformat(timespec="microseconds"), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN,
                    "description": "ISO 8601 in UTC, with its offset: 2026-01-31T08:30:00.000000+00:00"},
                   mode="serialization"),
]


class _UntaggedErrors(APIRoute):
    """Validation errors of the flat-or-DICOM-JSON bodies name the field, not the union member it was read as."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise RequestValidationError([{**e, "loc": tuple(p for p in e["loc"] if p not in ("flat", "dicom", "list"))}
                                              for e in exc.errors()]) from exc

        return route


router = APIRouter(prefix="/api/worklist", tags=["worklist"], route_class=_UntaggedErrors)
pages = APIRouter(include_in_schema=False)


class Code(BaseModel):
    """A coded entry (Code Value, Coding Scheme Designator, Code Meaning)."""

    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1, max_length=16)
    scheme: str = Field(min_length=1, max_length=16)
    meaning: str = Field(default="", max_length=64)


def _field_type(f: flat.Field, *, required: bool) -> tuple[Any, Any]:
    if f.vr == "SQ":
        kind: Any = list[Code] if f.name == "protocol_codes" else Code
        return (kind if required else Optional[kind]), Field(default=... if required else None, description=f.help)
    kind = Union[str, float] if f.vr == "DS" else str
    limits: dict[str, Any] = {"min_length": 1, "max_length": MAX_LENGTH[f.vr]} if f.vr in MAX_LENGTH else {}
    if f.name == "start":
        limits = {"pattern": r"^\d{4}-?\d{2}-?\d{2}([ T]\d{2}:?\d{2}(:?\d{2})?)?$"}
    elif f.vr == "DA":
        limits["pattern"] = r"^\d{4}-?\d{2}-?\d{2}$"
    return (kind if required else Optional[kind]), Field(default=... if required else None, description=f.help,
                                                         **(limits if kind is str else {}))


def _model(name: str, doc: str, *, all_optional: bool, **extra: Any) -> type[BaseModel]:
    fields = {f.name: _field_type(f, required=f.required and not all_optional) for f in flat.FIELDS}
    return create_model(name, __doc__=doc, __config__=ConfigDict(extra="forbid"), **fields, **extra)


WorklistItemIn = _model("WorklistItemIn", "A worklist item in the flat form: patient, request, one scheduled step.",
                        all_optional=False)
WorklistItemPatch = _model("WorklistItemPatch", "Fields to change (those absent are kept).", all_optional=True)
WorklistItemFields = _model("WorklistItemFields", "The flat fields of a stored item.", all_optional=True)


class DicomJsonElement(BaseModel):
    """One attribute in the DICOM JSON model (PS3.18 F.2.2)."""

    model_config = ConfigDict(extra="forbid")
    vr: str = Field(pattern=r"^[A-Z]{2}$")
    Value: Optional[list[Any]] = None
    InlineBinary: Optional[str] = None
    BulkDataURI: Optional[str] = None


class DicomJsonItem(RootModel[dict[Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{8}$")], DicomJsonElement]]):
    """A worklist item as a DICOM JSON dataset (Modality Worklist attributes, PS3.4 K.6.1.2.2); several items in
    ScheduledProcedureStepSequence (0040,0100) schedule several steps."""


def _body_kind(value: Any) -> str:
    return "dicom" if isinstance(value, dict) and any(_TAG.fullmatch(str(k)) for k in value) else "flat"


OneItem = Annotated[Union[Annotated[WorklistItemIn, Tag("flat")], Annotated[DicomJsonItem, Tag("dicom")]],
                    Discriminator(_body_kind)]


def _post_kind(value: Any) -> str:
    return "list" if isinstance(value, list) else _body_kind(value)


# POST /items: one item (flat or DICOM JSON), or a list of them.
ItemBody = Annotated[Union[Annotated[WorklistItemIn, Tag("flat")], Annotated[DicomJsonItem, Tag("dicom")],
                           Annotated[list[OneItem], Field(min_length=1, max_length=1000), Tag("list")]],
                     Discriminator(_post_kind), Body()]
PatchBody = Annotated[Union[Annotated[WorklistItemPatch, Tag("flat")], Annotated[DicomJsonItem, Tag("dicom")]],
                      Discriminator(_body_kind), Body()]


class WorklistItemOut(BaseModel):
    id: int
    status: str = Field(description=f"One of {', '.join(STATUSES)}")
    origin: str = Field(description="How the item came in: api, cli, web, import")
    mpps_uid: str = Field(description="The last MPPS that reported on this step")
    study_received: bool = Field(description="Images with the item's Study Instance UID are in the archive")
    created_at: Timestamp
    updated_at: Timestamp
    fields: WorklistItemFields  # type: ignore[valid-type]
    dicom: dict[str, Any] = Field(description="The whole item as DICOM JSON")
    warnings: list[str] = Field(default_factory=list, description="What was taken but deserves a look, e.g. an "
                                "accession number another patient's item has")


class WorklistPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[WorklistItemOut]


class LoggedQueryOut(BaseModel):
    id: int
    received_at: Timestamp
    calling_ae: str
    address: str
    summary: str = Field(description="The non-empty keys, e.g. 'Modality=CT, ScheduledStationAETitle=CT1'")
    keys: dict[str, Any] = Field(description="The identifier as DICOM JSON")
    answers: int
    status: int = Field(description="DIMSE status of the final response")
    error: str


class QueryPage(BaseModel):
    total: int
    queries: list[LoggedQueryOut]


class KeyVerdict(BaseModel):
    key: str
    matched: bool
    reason: str


class Explanation(BaseModel):
    query_id: int
    item_id: int
    returned: bool = Field(description="Whether the query would return the item")
    keys: list[KeyVerdict]


class MppsOut(BaseModel):
    sop_instance_uid: str
    status: str
    calling_ae: str
    item_ids: list[int]
    dicom: dict[str, Any]


def pacs_of(request: Request) -> Pacs:
    return request.app.state.pacs


def _out(item: Item) -> WorklistItemOut:
    return WorklistItemOut(id=item.id, status=item.status, origin=item.origin, mpps_uid=item.mpps_uid,
                           study_received=item.study_received, created_at=item.created_at,
                           updated_at=item.updated_at, fields=flat.from_dataset(item.dataset),
                           dicom=item.dataset.to_json_dict(), warnings=list(item.warnings))


def _nesting(value: Any) -> int:
    """How deep arrays and objects nest in a JSON value (iterative: the point is to refuse what recursion cannot
    take)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in (current.values() if isinstance(current, dict) else current))
    return deepest


def _dataset(body: BaseModel) -> Dataset:
    """The item dataset of either body form; an unreadable DICOM JSON body is a 422 too."""
    if isinstance(body, DicomJsonItem):
        json_ds = body.model_dump(exclude_none=True)
        if _nesting(json_ds) > MAX_NESTING:
            raise _invalid("body", f"arrays and objects nest deeper than {MAX_NESTING} levels")
        try:
            return items.from_json(json_ds)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise _invalid("body", f"not a DICOM JSON dataset: {exc}") from exc
    return flat.to_dataset(body.model_dump(exclude_none=True))


def _invalid(field: str, message: str, index: int | None = None) -> RequestValidationError:
    loc = ("body", field) if index is None else ("body", index, field)
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


def _write(body: BaseModel, call: Callable[[Dataset], Any]) -> Any:
    """Run a write with the body's dataset; an invalid value becomes 422 naming the field in the body's form."""
    try:
        return call(_dataset(body))
    except InvalidItem as exc:
        raise _invalid(_field_of(body, exc), exc.reason) from exc


def _field_of(body: BaseModel, exc: InvalidItem) -> str:
    return flat.field_name(exc.field) if not isinstance(body, DicomJsonItem) else exc.field


@router.post("/items", status_code=201, response_model=Union[WorklistItemOut, list[WorklistItemOut]],
             responses={201: {"description": "The item created, as an object, when one item was posted; a list "
                                             "(one item per scheduled procedure step, in order) when a list was "
                                             "posted."}})
def create_item(request: Request, body: ItemBody) -> Union[WorklistItemOut, list[WorklistItemOut]]:
    """Schedule an item (flat form or DICOM JSON) and answer it, or schedule a list of them (in one transaction:
    all or none) and answer the list. The Study Instance UID, Requested Procedure ID and step ID are generated
    when not given. A DICOM JSON item with several scheduled procedure steps makes one item per step: post it
    in a list."""
    bodies = body if isinstance(body, list) else [body]
    datasets = []
    position = (lambda i: i) if isinstance(body, list) else (lambda i: None)
    for index, one in enumerate(bodies):
        try:
            datasets.append(_dataset(one))
        except InvalidItem as exc:
            raise _invalid(_field_of(one, exc), exc.reason, position(index)) from exc
        except RequestValidationError as exc:
            if not isinstance(body, list):
                raise
            raise RequestValidationError([{**e, "loc": ("body", index, *e["loc"][1:])} for e in exc.errors()]) \
                from exc
    try:
        created = pacs_of(request).worklist.schedule_many(datasets, origin="api", actor=user_name(request.scope),
                                                          max_steps=None if isinstance(body, list) else 1)
    except InvalidItem as exc:
        index = getattr(exc, "request_index", 0)
        raise _invalid(_field_of(bodies[index], exc), exc.reason, position(index)) from exc
    return [_out(i) for i in created] if isinstance(body, list) else _out(created[0])


@router.get("/items", response_model=WorklistPage)
def list_items(
    request: Request,
    date_: Annotated[Optional[str], Param(alias="date", description="Start date or range YYYYMMDD[-YYYYMMDD]; "
                                                                      "'today'")] = None,
    station: Annotated[Optional[str], Param(description="Scheduled station AE title (wildcards * ?)")] = None,
    modality: Optional[str] = None,
    patient_id: Optional[str] = None,
    patient_name: Annotated[Optional[str], Param(description="Patient name (wildcards * ?)")] = None,
    accession_number: Optional[str] = None,
    status: Annotated[Optional[list[str]], Param(description="Statuses (repeatable); default: every status")] = None,
    limit: Annotated[int, Param(ge=1, le=10000)] = 100,
    offset: Offset = 0,
) -> WorklistPage:
    """Items in schedule order, filtered with the MWL matching rules."""
    day = date.today().strftime("%Y%m%d") if date_ == "today" else date_
    keys = {k: v for k, v in {"ScheduledProcedureStepStartDate": day, "ScheduledStationAETitle": station,
                               "Modality": modality, "PatientID": patient_id, "PatientName": patient_name,
                               "AccessionNumber": accession_number}.items() if v}
    statuses = [s.upper() for s in status] if status else None
    total, found = pacs_of(request).worklist.list(mwl.identifier(keys, return_keys=False), statuses=statuses,
                                                  limit=limit, offset=offset)
    return WorklistPage(total=total, offset=offset, limit=limit, items=[_out(i) for i in found])


@router.get("/items/{item_id}", response_model=WorklistItemOut)
def get_item(request: Request, item_id: Id) -> WorklistItemOut:
    """One item, with whether its images have arrived."""
    return _out(pacs_of(request).worklist.get(item_id))


@router.patch("/items/{item_id}", response_model=WorklistItemOut)
def update_item(request: Request, item_id: Id, body: PatchBody) -> WorklistItemOut:
    """Change an open item: the fields (or DICOM attributes) given replace the stored ones."""
    return _out(_write(body, lambda ds: pacs_of(request).worklist.update(item_id, ds,
                                                                                 actor=user_name(request.scope))))


@router.post("/items/{item_id}/cancel", response_model=WorklistItemOut)
def cancel_item(request: Request, item_id: Id) -> WorklistItemOut:
    """Cancel a scheduled item: it is no longer offered to modalities."""
    return _out(pacs_of(request).worklist.cancel(item_id, actor=user_name(request.scope)))


@router.delete("/items/{item_id}")
def delete_item(request: Request, item_id: Id) -> dict[str, int]:
    """Remove an item altogether."""
    pacs_of(request).worklist.delete(item_id, actor=user_name(request.scope))
    return {"deleted": item_id}


def _query_out(q: Any) -> LoggedQueryOut:
    return LoggedQueryOut(id=q.id, received_at=q.received_at, calling_ae=q.calling_ae, address=q.address,
                          summary=mwl.summary(q.keys), keys=q.keys, answers=q.answers, status=q.status,
                          error=q.error)


@router.get("/queries", response_model=QueryPage)
def list_queries(request: Request, limit: Annotated[int, Param(ge=1, le=1000)] = 50,
                 offset: Offset = 0, calling_ae: Optional[str] = None) -> QueryPage:
    """The MWL C-FINDs received, newest first: who asked, with which keys, how many answers went back."""
    total, found = pacs_of(request).worklist.queries.recent(limit=limit, offset=offset, calling_ae=calling_ae)
    return QueryPage(total=total, queries=[_query_out(q) for q in found])


@router.get("/queries/{query_id}", response_model=LoggedQueryOut)
def get_query(request: Request, query_id: Id) -> LoggedQueryOut:
    return _query_out(pacs_of(request).worklist.queries.get(query_id))


@router.get("/queries/{query_id}/explain/{item_id}", response_model=Explanation)
def explain(request: Request, query_id: Id, item_id: Id) -> Explanation:
    """Replay a logged query against an item, key by key: which matched, which did not, and why."""
    entries = pacs_of(request).worklist.explain(query_id, item_id)
    return Explanation(query_id=query_id, item_id=item_id, returned=all(ok for _, ok, _ in entries),
                       keys=[KeyVerdict(key=k, matched=ok, reason=why) for k, ok, why in entries])


@router.get("/mpps/{uid}", response_model=MppsOut)
def get_mpps(request: Request, uid: str) -> MppsOut:
    """A Modality Performed Procedure Step received by N-CREATE / N-SET, and the steps it reports on."""
    step = pacs_of(request).mpps.get(uid)
    return MppsOut(sop_instance_uid=step.sop_instance_uid, status=step.status, calling_ae=step.calling_ae,
                   item_ids=step.item_ids, dicom=step.dataset.to_json_dict())


@router.get("/statuses")
def statuses() -> dict[str, list[str]]:
    """Every step status, and those still offered to modalities."""
    return {"all": list(STATUSES), "open": list(OPEN)}


@pages.get("/worklist")
def worklist_page() -> FileResponse:
    """The receptionist's page: today's schedule per station, add/edit/cancel, the query log."""
    return FileResponse(STATIC / "worklist.html", media_type="text/html")


@pages.get("/worklist/static/{name}")
def worklist_asset(name: str) -> FileResponse:
    if name not in ("worklist.js", "worklist.css"):
        raise NotFound(f"no asset {name}")
    return FileResponse(STATIC / name)
