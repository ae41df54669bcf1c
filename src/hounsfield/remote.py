"""Remote nodes as hounsfield's own archive sees them (issue 14): echo a configured peer, query it at each
level (C-FIND, PS3.4 C.4.1) and its worklist (MWL C-FIND, PS3.4 K), and retrieve a study or series from it
into the archive (C-MOVE to this AE, PS3.4 C.4.2; or C-GET on the same association, PS3.4 C.4.3) as a job
with progress (``jobs``). No HTTP here: ``web.remote_api`` is a thin adapter over this.

What is asked is checked before any association is opened (a level, DICOM keywords, bounded values, UIDs),
so that careless or hostile input is refused with a clear ``InvalidQuery`` and never reaches the remote node;
what the node does (no answer, a refused association, a failure status) is a ``RemoteFailure`` naming the
node and the status's meaning (``dimse.status.describe``), never a traceback.

Retrieving brings the node's instances into the archive, so the node must be allowed to store here (``store``
in its ``allow``): with C-MOVE its instances arrive on an association it opens to this AE, which the DICOM
service checks the same way; with C-GET they arrive on this side's own association, so it is checked here.
Received instances go through ``Archive.store_file`` like any other: its duplicate policy decides about an
instance already held, and nothing is written over another's file.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

from pydicom import datadict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from hounsfield.archive import Archive
from hounsfield.config import Peer, Settings
from hounsfield.errors import HounsfieldError, InvalidQuery, NotFound, Rejected, RemoteFailure
from hounsfield.jobs import Job, Jobs
from hounsfield.peers import PeerRegistry

log = logging.getLogger("hounsfield.remote")

LEVELS = {"patient": "PATIENT", "study": "STUDY", "series": "SERIES", "image": "IMAGE"}
RETRIEVE_LEVELS = ("study", "series")
METHODS = ("move", "get")
MAX_KEYS = 64  # query keys in one request
MAX_VALUE = 1024  # characters of one query value (a UID list of ~15 UIDs; any single DICOM value is shorter)
MAX_ANSWERS = 10_000
# The return keys asked for at each level besides the query's own (PS3.4 C.6.1.1 / C.6.2.1: the required and
# unique keys, plus what a person picks a study by).
RETURN_KEYS = {
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"),
    "STUDY": ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
              "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "BodyPartExamined", "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"),
}
# The unique keys of the levels above each level, which a hierarchical query must give (PS3.4 C.4.1.2.1:
# relational queries are an extended negotiation not every SCP offers). Study Root: the study above a series.
PARENT_KEYS = {"PATIENT": (), "STUDY": (), "SERIES": ("StudyInstanceUID",),
               "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID")}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")  # PS3.5 9.1


def check_uid(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 64 or not _UID.match(value):
        raise InvalidQuery(f"{what} must be a UID (digits and dots, at most 64 characters, PS3.5 9.1)")
    return value


def _level(level: Any, allowed: tuple[str, ...] = tuple(LEVELS)) -> str:
    if not isinstance(level, str) or level.lower() not in allowed:
        raise InvalidQuery(f"level must be one of {', '.join(allowed)}")
    return level.lower()


def _checked_keys(query: Any) -> dict[str, str | None]:
    """The query as {keyword: value or None}: DICOM keywords of plain (non-sequence) attributes, text values of
    at most ``MAX_VALUE`` characters; None (or "") asks for the attribute as a return key."""
    if query is None:
        return {}
    if not isinstance(query, dict):
        raise InvalidQuery("query must be an object of DICOM keyword → value")
    if len(query) > MAX_KEYS:
        raise InvalidQuery(f"query has {len(query)} keys, at most {MAX_KEYS} are accepted")
    out: dict[str, str | None] = {}
    for keyword, value in query.items():
        if not isinstance(keyword, str) or datadict.tag_for_keyword(keyword) is None:
            raise InvalidQuery(f"unknown query key {str(keyword)[:64]!r}: use DICOM keywords such as PatientID")
        if keyword == "QueryRetrieveLevel":
            raise InvalidQuery("QueryRetrieveLevel is set by level, not in the query")
        if datadict.dictionary_VR(datadict.tag_for_keyword(keyword)) == "SQ":
            raise InvalidQuery(f"{keyword} is a sequence: query keys are plain attributes")
        if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int, float))):
            raise InvalidQuery(f"{keyword}: the value must be text (or null to ask for it)")
        text = None if value is None else str(value)
        if text is not None and len(text) > MAX_VALUE:
            raise InvalidQuery(f"{keyword}: the value has {len(text)} characters, at most {MAX_VALUE} are accepted")
        out[keyword] = text or None
    return out


def identifier(level: str, query: Any) -> Dataset:
    """The C-FIND identifier for ``level`` (patient, study, series, image) and a {keyword: value} query, with
    the level's usual return keys; ``InvalidQuery`` for what no SCP should be sent."""
    level_name = LEVELS[_level(level)]
    keys = _checked_keys(query)
    missing = [k for k in PARENT_KEYS[level_name] if not keys.get(k)]
    if missing:
        raise InvalidQuery(f"a {level_name} query names its parent by {' and '.join(missing)} "
                           f"(hierarchical query, PS3.4 C.4.1.2.1)")
    ds = Dataset()
    ds.QueryRetrieveLevel = level_name
    for keyword in RETURN_KEYS[level_name]:
        setattr(ds, keyword, None)
    for keyword, value in keys.items():
        try:
            setattr(ds, keyword, value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidQuery(f"{keyword}: {exc}") from exc
    return ds


def as_json(ds: Dataset) -> dict[str, Any]:
    """An answer as {keyword: value}: text, a number, a list for an attribute that may hold several values
    (whatever number it holds), a list of objects for a sequence, null when empty; binary values null,
    private elements left out."""
    out: dict[str, Any] = {}
    for elem in ds:
        if not elem.keyword or elem.tag.element == 0:
            continue
        value = _plain(elem.VR, elem.value)
        if elem.VR != "SQ" and datadict.dictionary_VM(elem.tag) != "1" and not isinstance(value, list):
            value = [] if value is None else [value]  # several values allowed: always a list (ModalitiesInStudy)
        out[elem.keyword] = value
    return out


def _plain(vr: str, value: Any) -> Any:
    if vr == "SQ":
        return [as_json(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, MultiValue):
        return [_plain(vr, v) for v in value]
    if value is None or value == "":
        return None
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, (int, float)):
        return int(value) if isinstance(value, int) else float(value)
    return str(value)


def _describe(service: str, status: int) -> str:
    from hounsfield.dimse.status import describe

    return describe(service, status)


class RemoteNodes:
    """echo / find / find_worklist / retrieve against the configured peers, as this archive's AE."""

    def __init__(self, peers: PeerRegistry, archive: Archive, jobs: Jobs, settings: Settings) -> None:
        from hounsfield.tls import Outgoing

        self.peers = peers
        self.archive = archive
        self.jobs = jobs
        self.settings = settings
        self.outgoing = Outgoing(settings)  # one TLS client context for every association (made on first use)

    @property
    def ae_title(self) -> str:
        return self.settings.ae_title

    def peer(self, name: str) -> Peer:
        """A configured node by name (``NotFound`` otherwise: an address is no node of this archive)."""
        if not isinstance(name, str) or not name or len(name) > 64:
            raise InvalidQuery("a node name has 1 to 64 characters")
        return self.peers.get(name)

    def _remote(self, peer: Peer, what: str, call: Callable[[], Any]) -> Any:
        """Run ``call``, turning whatever the network or the node does wrong into a ``RemoteFailure``."""
        try:
            return call()
        except (InvalidQuery, RemoteFailure):
            raise
        except HounsfieldError as exc:
            raise RemoteFailure(f"{what} {peer.name}: {exc}") from exc
        except (OSError, RuntimeError, ValueError, AttributeError) as exc:
            # pynetdicom: no accepted presentation context (ValueError), association aborted mid-way
            # (RuntimeError), a connection reset (OSError)
            log.info("%s %s failed", what, peer.name, exc_info=exc)
            raise RemoteFailure(f"{what} {peer.name} ({peer.ae_title} at {peer.host}:{peer.port}) failed: "
                                f"{type(exc).__name__}: {exc}") from exc

    # ---- verification ----------------------------------------------------------------------------------
    def echo(self, name: str) -> dict[str, Any]:
        """C-ECHO (PS3.4 A): whether the node answers with Success."""
        from hounsfield.dimse import client

        peer = self.peer(name)
        status = self._remote(peer, "C-ECHO to", lambda: client.echo(peer, self.ae_title, self.outgoing))
        if status < 0:
            raise RemoteFailure(f"C-ECHO to {peer.name} ({peer.ae_title} at {peer.host}:{peer.port}): no answer")
        if status != 0:
            raise RemoteFailure(f"C-ECHO to {peer.name} answered {_describe('C-ECHO', status)}")
        return {"peer": peer.name, "ae_title": peer.ae_title, "ok": True, "status": status}

    # ---- query -----------------------------------------------------------------------------------------
    def find(self, name: str, level: str, query: Any, *, limit: int = 1000) -> dict[str, Any]:
        """C-FIND at ``level``: Patient Root for patients, Study Root for the rest (PS3.4 C.6.1 / C.6.2);
        the answers as {keyword: value}, at most ``limit`` of them (``truncated`` says when there were more)."""
        from hounsfield.dimse import client

        peer = self.peer(name)
        ds = identifier(level, query)
        limit = max(1, min(limit, MAX_ANSWERS))
        model = "patient" if ds.QueryRetrieveLevel == "PATIENT" else "study"
        answers = self._remote(peer, "C-FIND on", lambda: list(
            client.find(peer, ds, self.ae_title, model, self.outgoing)))
        return {"peer": peer.name, "level": _level(level), "count": len(answers), "truncated": len(answers) > limit,
                "matches": [as_json(a) for a in answers[:limit]]}

    def find_worklist(self, name: str, query: Any, *, limit: int = 1000) -> dict[str, Any]:
        """MWL C-FIND (PS3.4 K.6): the query's step attributes (Modality, ScheduledStationAETitle,
        ScheduledProcedureStepStartDate…) go into the Scheduled Procedure Step Sequence item, as
        ``worklist.mwl.identifier`` builds it; the usual return keys are asked for."""
        from hounsfield.worklist import client, mwl

        peer = self.peer(name)
        keys = _checked_keys(query)
        ds = mwl.identifier({k: v or "" for k, v in keys.items()})
        limit = max(1, min(limit, MAX_ANSWERS))
        answers = self._remote(peer, "MWL C-FIND on", lambda: list(
            client.find(peer, ds, self.ae_title, self.outgoing)))
        return {"peer": peer.name, "count": len(answers), "truncated": len(answers) > limit,
                "matches": [as_json(a) for a in answers[:limit]]}

    # ---- retrieve --------------------------------------------------------------------------------------
    def retrieve(self, name: str, *, level: str, study: str, series: str | None = None,
                 method: str = "move") -> dict[str, Any]:
        """Start retrieving a study (or one of its series) from the node into the archive; the job's state.

        ``move``: a C-MOVE with this AE as the destination (the node must know it: a peer entry pointing back
        on another hounsfield, DicomModalities on Orthanc). ``get``: a C-GET whose C-STORE sub-operations
        come back on the same association, stored here as they arrive."""
        peer = self.peer(name)
        level = _level(level, RETRIEVE_LEVELS)
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise InvalidQuery(f"method must be one of {', '.join(METHODS)}")
        method = method.lower()
        check_uid(study, "study")
        if level == "series":
            check_uid(series, "series")
        elif series is not None:
            raise InvalidQuery("series is given only with level series")
        if "store" not in peer.allow:
            raise Rejected(f"node {peer.name} may not store here (store is not in its allow list): "
                           f"retrieving from it would bring in what it may not store")
        ds = Dataset()
        ds.QueryRetrieveLevel = level.upper()
        ds.StudyInstanceUID = study
        if level == "series":
            ds.SeriesInstanceUID = series
        about = {"peer": peer.name, "method": method, "level": level, "study": study, "series": series}
        job = Job("retrieve", **about)
        self.jobs.update(job, stored=0)
        run = self._move if method == "move" else self._get
        return self.jobs.start(job, lambda j: run(j, peer, ds))

    def _progress(self, job: Job) -> Callable[[Dataset], None]:
        """The sub-operation counts of each pending response (PS3.4 C.4.2.1.4, C.4.3.1.4) into ``job``."""
        def update(status: Dataset) -> None:
            if "NumberOfCompletedSuboperations" not in status:  # optional in a pending response
                return
            remaining, completed, failed, warning = (int(status.get(k, 0) or 0) for k in (
                "NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations", "NumberOfFailedSuboperations",
                "NumberOfWarningSuboperations"))
            done = completed + failed + warning
            self.jobs.update(job, total=max(job.total, done + remaining), done=done, failed=failed)
        return update

    def _move(self, job: Job, peer: Peer, ds: Dataset) -> None:
        from hounsfield.dimse import client

        summary = self._remote(peer, "C-MOVE from", lambda: client.move(
            peer, ds, self.ae_title, self.ae_title, "study", self.outgoing, progress=self._progress(job)))
        self.jobs.update(job, stored=summary.completed + summary.warning)  # acknowledged by this AE's C-STORE
        self._finish(job, peer, ds, summary, "C-MOVE")

    def _get(self, job: Job, peer: Peer, ds: Dataset) -> None:
        from hounsfield.dimse import client
        from hounsfield.dimse import status as st

        def receive(event: Any) -> int:
            try:
                try:
                    path = event.dataset_path  # pynetdicom received it to a file (the server's setting)
                except AttributeError:
                    result = self.archive.store_bytes(event.encoded_dataset(), peer.ae_title)
                else:
                    result = self.archive.store_file(path, peer.ae_title)
            except HounsfieldError as exc:
                log.warning("C-GET from %s: instance %s not stored: %s", peer.name,
                            getattr(event.request, "AffectedSOPInstanceUID", "?"), exc)
                return st.status_for(exc, st.STORE_ERROR_STATUS, st.STORE_CANNOT_UNDERSTAND)
            self.jobs.update(job, add={"stored": 1})
            log.debug("C-GET from %s: %s %s", peer.name, result.sop_instance_uid, result.outcome.value)
            return st.SUCCESS

        summary = self._remote(peer, "C-GET from", lambda: client.get(
            peer, ds, None, self.ae_title, "study", self.outgoing, progress=self._progress(job), receive=receive))
        self._finish(job, peer, ds, summary, "C-GET")

    def _finish(self, job: Job, peer: Peer, ds: Dataset, summary: Any, service: str) -> None:
        """The final response decides (PS3.4 C.4.2.1.5): Success, Warning (some sub-operations failed) or a
        failure naming its status; then the archive is settled so that the study is there when the job says
        so (C-MOVE's instances are acknowledged before the indexer has them)."""
        from hounsfield.dimse import status as st

        done = summary.completed + summary.failed + summary.warning
        self.jobs.update(job, total=max(job.total, done), done=max(job.done, done), failed=summary.failed)
        self.archive.settle(timeout=60.0)
        here = self.archive.instances(study_uid=str(ds.StudyInstanceUID),
                                      series_uid=str(ds.SeriesInstanceUID) if "SeriesInstanceUID" in ds else None)
        self.jobs.update(job, local_instances=len(here))
        if summary.status == st.SUCCESS or summary.status == st.SUBOPS_WARNING:
            if done == 0 and not here:
                raise NotFound(f"{peer.name} has no {str(ds.QueryRetrieveLevel).lower()} "
                               f"{ds.get('SeriesInstanceUID') or ds.StudyInstanceUID}")
            return
        if summary.status in st.PENDING_STATUSES:
            raise RemoteFailure(f"{service} from {peer.name}: the association ended before the final response")
        raise RemoteFailure(f"{service} from {peer.name} ended with {_describe(service, summary.status)}")
