"""REST over ``remote.RemoteNodes`` (issue 14): echo, C-FIND, MWL C-FIND and retrieve from a configured peer,
the calls Orthanc users script against (``/modalities/{id}/echo``, ``/query``, ``/find-worklist``, ``/move``).
Thin: each route validates the body's shape, makes one domain call and returns its result; the domain's
errors become HTTP statuses in ``web.app`` (``InvalidQuery`` 400, ``NotFound`` 404, ``Rejected`` 409,
``RemoteFailure`` 502: the node did not answer, refused the association or answered with a failure status).

Permissions (``web.auth.ROUTE_PERMISSIONS``): listing the nodes, echo and C-FIND need ``read`` (what a
remote archive holds is searched as the local one is); the remote worklist needs ``worklist``; a retrieve
needs ``store``, since it brings instances into the archive (``roles``: "store: bring data in").
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hounsfield.remote import MAX_ANSWERS, MAX_KEYS
from hounsfield.web.api import errors, pacs_of
from hounsfield.web.transfer import JobOut

router = APIRouter(prefix="/api", tags=["remote"])
QueryKeys = Optional[dict[str, Any]]
QUERY_HELP = (f"DICOM keyword → value (at most {MAX_KEYS} keys): C-FIND matching on the remote node (wildcards "
              "* ?, date ranges 20240101-20241231, UID lists); null or \"\" asks for the attribute back.")


class FindIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["patient", "study", "series", "image"] = Field(
        "study", description="Query/Retrieve level; series needs StudyInstanceUID in the query, image also "
                             "SeriesInstanceUID (hierarchical query, PS3.4 C.4.1.2.1)")
    query: QueryKeys = Field(None, description=QUERY_HELP)
    limit: int = Field(1000, ge=1, le=MAX_ANSWERS, description="at most this many matches are returned")


class WorklistFindIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: QueryKeys = Field(None, description=QUERY_HELP + " Step attributes (Modality, ScheduledStationAETitle, "
                             "ScheduledProcedureStepStartDate…) go into the Scheduled Procedure Step item.")
    limit: int = Field(1000, ge=1, le=MAX_ANSWERS)


class RetrieveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["study", "series"] = "study"
    study: str = Field(min_length=1, max_length=64, description="StudyInstanceUID")
    series: Optional[str] = Field(None, min_length=1, max_length=64,
                                  description="SeriesInstanceUID (level series only)")
    method: Literal["move", "get"] = Field(
        "move", description="move: C-MOVE to this server's AE (the node must know it as a destination); "
                            "get: C-GET, the instances come back on the same association")


class RemotePeerOut(BaseModel):
    name: str
    ae_title: str
    host: str
    port: int
    tls: bool
    can_retrieve: bool = Field(description="the node may store here (store in its allow list), which a retrieve "
                                           "needs")


class EchoOut(BaseModel):
    peer: str
    ae_title: str
    ok: bool = Field(description="always true: a node that does not answer Success is a 502")
    status: int = Field(description="the C-ECHO status (0: Success)")


class MatchesOut(BaseModel):
    peer: str
    count: int = Field(description="matches the node answered")
    truncated: bool = Field(description="more than limit answered: only the first limit are given")
    matches: list[dict[str, Any]] = Field(description="each match as {DICOM keyword: value}; a value that may "
                                                      "have several is a list, a sequence a list of objects")


class FindOut(MatchesOut):
    level: str


# The errors of the routes that ask a node (``web.app``): 400 a bad query, 404 no such node, 409 the node may not
# do it, 502 the node did not answer, refused the association or answered a failure.
REMOTE_ERRORS = errors(400, 404, 409, 502)


@router.get("/remote/peers")
def remote_peers(request: Request) -> list[RemotePeerOut]:
    """The configured nodes to query and retrieve from (name, AE title, host, port, tls, and whether it may
    store here, which a retrieve needs). Needs read: the full node list with permissions is GET /api/peers
    (admin)."""
    return [RemotePeerOut(name=p.name, ae_title=p.ae_title, host=p.host, port=p.port, tls=p.tls,
                          can_retrieve="store" in p.allow) for p in pacs_of(request).peers.all()]


@router.post("/peers/{name}/echo", responses=REMOTE_ERRORS)
def echo(request: Request, name: str) -> EchoOut:
    """C-ECHO the node: {ok, status} when it answers Success, 502 with the reason when it does not. Needs
    read."""
    return EchoOut(**pacs_of(request).remote.echo(name))


@router.post("/peers/{name}/find", responses=REMOTE_ERRORS)
def find(request: Request, name: str, body: FindIn) -> FindOut:
    """C-FIND on the node at a level (Patient Root for patient, Study Root otherwise, PS3.4 C.6): the matches
    as {keyword: value} objects (the query's keys and the level's usual return keys), with count and
    truncated. Needs read."""
    return FindOut(**pacs_of(request).remote.find(name, body.level, body.query, limit=body.limit))


@router.post("/peers/{name}/find-worklist", responses=REMOTE_ERRORS)
def find_worklist(request: Request, name: str, body: WorklistFindIn) -> MatchesOut:
    """MWL C-FIND on the node (PS3.4 K): its scheduled procedure steps matching the query, each as
    {keyword: value} with ScheduledProcedureStepSequence a list of objects. Needs worklist."""
    return MatchesOut(**pacs_of(request).remote.find_worklist(name, body.query, limit=body.limit))


@router.post("/peers/{name}/retrieve", status_code=202, responses=REMOTE_ERRORS)
def retrieve(request: Request, name: str, body: RetrieveIn) -> JobOut:
    """Retrieve a study or series from the node into this archive by C-MOVE or C-GET, as a background job:
    poll GET /api/jobs/{id} (state running → completed, partial or failed with the reason; total, done,
    failed, stored, local_instances). Needs store: it brings data in; the node must be allowed to store here."""
    return JobOut(**pacs_of(request).remote.retrieve(name, level=body.level, study=body.study, series=body.series,
                                                     method=body.method))
