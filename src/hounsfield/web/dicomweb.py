"""DICOMweb (PS3.18) at ``/dicom-web``: QIDO-RS search, WADO-RS retrieve / metadata / frames / bulk data /
rendered / thumbnail, and STOW-RS store.

The routes are thin: query parameters become a ``query.Query`` identifier, retrieval goes through
``Archive.instances``, storage through ``Archive.store_bytes``, rendering through ``hounsfield.imaging``.
Metadata is served from the DICOM JSON the index keeps (never from the files), instances as the stored bytes.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydicom import datadict
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from hounsfield import query as q
from hounsfield.archive import StoredInstance
from hounsfield.dicomfile import json_text, read_header
from hounsfield.errors import HounsfieldError, InvalidDataset, InvalidQuery, NotFound, StorageFull
from hounsfield.models import Instance, Series, Study
from hounsfield.pacs import Pacs
from hounsfield.web import multipart
from hounsfield.web.multipart import MediaType, NotAcceptable, UnsupportedMediaType

router = APIRouter(prefix="/dicom-web", tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
MAX_LIMIT = 100_000
MAX_OFFSET = 1_000_000_000
THUMBNAIL_SIZE = 128
CHUNK = 4 << 20

# Default return attributes, PS3.18 Table 6.7.1-2 (study), 6.7.1-2a (series), 6.7.1-2b (instance); the
# level UIDs above the resource are always returned so that a client can build the next URL.
STUDY_ATTRS = ("SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
               "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC", "PatientName",
               "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription",
               "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_ATTRS = ("SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription",
                "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
                "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "RequestAttributesSequence",
                "StudyInstanceUID")
INSTANCE_ATTRS = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability",
                  "TimezoneOffsetFromUTC", "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames",
                  "StudyInstanceUID", "SeriesInstanceUID")
QIDO_CONTROL = {"includefield", "fuzzymatching", "limit", "offset", "accept", "charset"}
LIST_VRS = {"UI", "CS"}  # PS3.18 8.3.4.1: comma-separated values are list matching for these

# STOW-RS Failure Reason values (PS3.18 Table 10.5.3-1 / PS3.4 Annex B)
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900  # also used for "instance is not of the study in the request URL"
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110


def pacs_of(request: Request) -> Pacs:
    return request.app.state.pacs


def root_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + router.prefix


def _url(request: Request, study: str, series: str | None = None, sop: str | None = None) -> str:
    url = f"{root_url(request)}/studies/{study}"
    if series:
        url += f"/series/{series}"
    if sop:
        url += f"/instances/{sop}"
    return url


def _tag(keyword: str) -> str:
    return f"{datadict.tag_for_keyword(keyword):08X}"


# ------------------------------------------------------------------------------------------------ CORS
class DicomWebCORS:
    """CORS for the DICOMweb root only (OHIF and other browser clients on another origin), plain ASGI so that
    streamed responses pass through untouched."""

    HEADERS = [
        (b"access-control-allow-origin", b"*"),
        (b"access-control-expose-headers", b"Content-Type, Content-Length, Content-Location, Warning"),
    ]

    def __init__(self, app: Any, prefix: str = "/dicom-web") -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            allow_headers = headers.get(b"access-control-request-headers", b"Accept, Content-Type")
            await send({"type": "http.response.start", "status": 204, "headers": self.HEADERS + [
                (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
                (b"access-control-allow-headers", allow_headers),
                (b"access-control-max-age", b"86400"),
            ]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or []) + self.HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_cors)


# ------------------------------------------------------------------------------------------------ QIDO-RS
def _int_param(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidQuery(f"{name}={text!r} is not an integer") from None
    if not low <= value <= high:
        raise InvalidQuery(f"{name}={value} is out of range {low}-{high}")
    return value


class QidoRequest:
    """The query parameters of a QIDO-RS request, parsed (PS3.18 8.3.4)."""

    def __init__(self, request: Request, level: str, scope: dict[str, str]) -> None:
        self.level, self.scope = level, scope
        self.limit: int | None = None
        self.offset = 0
        self.fuzzy = False
        self.include_all = False
        self.include: list[str] = []
        values: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            name = key.strip()
            lower = name.lower()
            if lower == "includefield":
                for field in value.split(","):
                    if field.strip().lower() == "all":
                        self.include_all = True
                    elif field.strip():
                        self.include.append(q.tag_key(field))
            elif lower == "fuzzymatching":
                if value.lower() not in ("true", "false"):
                    raise InvalidQuery(f"fuzzymatching={value!r} is neither true nor false")
                self.fuzzy = value.lower() == "true"
            elif lower == "limit":
                self.limit = _int_param("limit", value, 1, MAX_LIMIT)
            elif lower == "offset":
                self.offset = _int_param("offset", value, 0, MAX_OFFSET)
            elif lower in QIDO_CONTROL:
                continue
            else:
                values.setdefault(q.tag_key(name), []).append(value)
        self.identifier = Dataset()
        self.match_tags: list[str] = []
        for tag, texts in values.items():
            self._add(tag, texts)
        for keyword, uid in scope.items():  # UIDs in the URL path
            self.identifier.add(_element(_tag(keyword), uid))
        # Computed attributes (counts, ModalitiesInStudy…) answered by default or asked for by includefield.
        wanted = set(self.default_attrs()) | {datadict.keyword_for_tag(int(t, 16)) for t in self.include}
        self.computed = {k for k in wanted if k in q.COMPUTED} if not self.include_all else set(q.COMPUTED)

    def _add(self, tag: str, texts: list[str]) -> None:
        self.match_tags.append(tag)
        vr = datadict.dictionary_VR(int(tag, 16)) if datadict.dictionary_has_tag(int(tag, 16)) else ""
        if not vr:
            raise InvalidQuery(f"attribute {tag} is not in the data dictionary")
        if vr == "SQ":
            raise InvalidQuery(f"{datadict.keyword_for_tag(int(tag, 16))}: sequence matching is not supported")
        vr = vr.split(" or ")[0]
        parts = []
        for text in texts:
            parts += text.split(",") if vr in LIST_VRS else [text]
        self.identifier.add(_element(tag, "\\".join(parts), vr))

    def default_attrs(self) -> tuple[str, ...]:
        if self.level == "STUDY":
            return STUDY_ATTRS
        if self.level == "SERIES":
            return SERIES_ATTRS + (() if "StudyInstanceUID" in self.scope else STUDY_ATTRS)
        attrs = INSTANCE_ATTRS
        if "SeriesInstanceUID" not in self.scope:
            attrs += SERIES_ATTRS
        if "StudyInstanceUID" not in self.scope:
            attrs += STUDY_ATTRS
        return attrs

    def return_tags(self) -> list[str] | None:
        if self.include_all:
            return None
        tags = {_tag(k) for k in self.default_attrs()} | set(self.include) | set(self.match_tags)
        return sorted(tags)


def _element(tag: str, text: str, vr: str | None = None) -> Any:
    from pydicom.dataelem import DataElement

    vr = vr or datadict.dictionary_VR(int(tag, 16)).split(" or ")[0]
    value: Any = text
    if vr in ("US", "UL", "SS", "SL", "SV", "UV") and text:
        try:
            value = [int(v) for v in text.split("\\")]
        except ValueError:
            raise InvalidQuery(f"{datadict.keyword_for_tag(int(tag, 16))}={text!r} is not an integer") from None
    elif vr in ("FL", "FD") and text:
        try:
            value = [float(v) for v in text.split("\\")]
        except ValueError:
            raise InvalidQuery(f"{datadict.keyword_for_tag(int(tag, 16))}={text!r} is not a number") from None
    try:
        return DataElement(Tag(int(tag, 16)), vr, value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidQuery(f"{datadict.keyword_for_tag(int(tag, 16))}: {exc}") from None


URL_TAGS = ("0020000D", "0020000E", "00080018")  # the UIDs an answer's RetrieveURL is made of


def _qido(request: Request, level: str, scope: dict[str, str]) -> Response:
    params = QidoRequest(request, level, scope)
    query = q.Query(params.identifier, model="STUDY", level=level, fuzzy_pn=params.fuzzy)
    tags = params.return_tags()
    needed = None if tags is None else {*tags, *URL_TAGS}
    pacs = pacs_of(request)
    answers = []
    with pacs.archive.reading() as s:
        for match in q.run(s, query, tags=needed, computed=params.computed, offset=params.offset,
                           limit=params.limit):
            item = match.json(tags)
            item.pop("00080052", None)  # QueryRetrieveLevel is C-FIND only
            study = _first(match.attrs, "0020000D")
            series = _first(match.attrs, "0020000E") if level != "STUDY" else None
            sop = _first(match.attrs, "00080018") if level == "IMAGE" else None
            item["00081190"] = {"vr": "UR", "Value": [_url(request, study, series, sop)]}
            answers.append(dict(sorted(item.items())))
    if not answers:
        return Response(status_code=204)
    return Response(json.dumps(answers, separators=(",", ":")), media_type=DICOM_JSON)


def _first(json_ds: dict[str, Any], tag: str) -> str:
    values = json_ds.get(tag, {}).get("Value") or [""]
    return str(values[0])


@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request) -> Response:
    return _qido(request, "STUDY", {})


@router.get("/series", summary="QIDO-RS: search for series")
def search_series(request: Request) -> Response:
    return _qido(request, "SERIES", {})


@router.get("/instances", summary="QIDO-RS: search for instances")
def search_instances(request: Request) -> Response:
    return _qido(request, "IMAGE", {})


@router.get("/studies/{study}/series", summary="QIDO-RS: search for series of a study")
def search_study_series(request: Request, study: str) -> Response:
    return _qido(request, "SERIES", {"StudyInstanceUID": study})


@router.get("/studies/{study}/instances", summary="QIDO-RS: search for instances of a study")
def search_study_instances(request: Request, study: str) -> Response:
    return _qido(request, "IMAGE", {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances", summary="QIDO-RS: search for instances of a series")
def search_series_instances(request: Request, study: str, series: str) -> Response:
    return _qido(request, "IMAGE", {"StudyInstanceUID": study, "SeriesInstanceUID": series})


# ------------------------------------------------------------------------------------------------ negotiation
def _accepts(request: Request) -> list[MediaType]:
    accept = request.query_params.get("accept") or request.headers.get("accept")
    return multipart.split_accept(accept)


def _wants(request: Request, offers: list[str]) -> tuple[str, MediaType]:
    """The first offered media type (``multipart/related;type=X`` written as ``X`` with a multipart flag
    handled by the caller) that the Accept header allows, and the matching media range."""
    for wanted in _accepts(request):
        for offer in offers:
            main, _, sub = offer.partition("/")
            if wanted.type in (offer, "*/*", f"{main}/*"):
                return offer, wanted
    raise NotAcceptable(f"none of {', '.join(offers)} is acceptable (Accept: {request.headers.get('accept')})")


def _multipart_type(request: Request, default: str, allowed: set[str]) -> str:
    """For a multipart/related resource: the part type the client asked for (``type=`` parameter)."""
    for wanted in _accepts(request):
        if wanted.type in ("*/*", "multipart/*"):
            return default
        if wanted.type == "multipart/related":
            part = wanted.params.get("type", default).lower()
            if part in allowed or part in ("*/*", "*"):
                return default if part in ("*/*", "*") else part
        if wanted.type in allowed:  # single-part form asked for (e.g. Accept: application/dicom)
            return wanted.type
    raise NotAcceptable(f"this resource is available as multipart/related; type=\"{default}\" only")


# ------------------------------------------------------------------------------------------------ WADO-RS
def _stored(request: Request, study: str, series: str | None = None, sop: str | None = None) -> list[StoredInstance]:
    found = pacs_of(request).archive.instances(study_uid=study, series_uid=series,
                                               sop_uids=[sop] if sop is not None else None)
    if not found:
        what = f"instance {sop}" if sop else f"series {series}" if series else f"study {study}"
        raise NotFound(f"no {what} in the archive" + (f" under study {study}" if sop or series else ""))
    return found


def _file_chunks(path: Any) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _retrieve(request: Request, study: str, series: str | None = None, sop: str | None = None) -> Response:
    part_type = _multipart_type(request, "application/dicom", {"application/dicom"})
    found = _stored(request, study, series, sop)
    boundary = multipart.new_boundary()
    parts = ((f"application/dicom; transfer-syntax={inst.transfer_syntax_uid}",
              {"Content-Location": _url(request, inst.study_instance_uid, inst.series_instance_uid,
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


def _metadata(request: Request, study: str, series: str | None = None, sop: str | None = None) -> Response:
    _wants(request, [DICOM_JSON, "application/json"])
    stmt = (select(Instance.header).join(Series, Instance.series_fk == Series.id)
            .join(Study, Series.study_fk == Study.id).where(Study.study_instance_uid == study))
    if series is not None:
        stmt = stmt.where(Series.series_instance_uid == series)
    if sop is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop)
    stmt = stmt.order_by(Series.id, Instance.instance_number, Instance.id)
    with pacs_of(request).archive.reading() as s:
        blobs = s.scalars(stmt).all()
    if not blobs:
        _stored(request, study, series, sop)  # raises NotFound naming what is missing
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


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise InvalidQuery(f"frame list {text!r} is not a comma-separated list of frame numbers") from None
    if not numbers or any(n < 1 for n in numbers):
        raise InvalidQuery(f"frame list {text!r}: frame numbers start at 1")
    return numbers


def frame_bytes(inst: StoredInstance, number: int) -> bytes:
    """The uncompressed little-endian bytes of frame ``number`` (1-based), reading only that frame."""
    import numpy as np
    from pydicom.pixels import pixel_array

    from hounsfield.imaging import read_dataset
    from hounsfield.imaging.io import decode_frame, number_of_frames

    try:
        arr = pixel_array(str(inst.path), index=number - 1, raw=True)
    except Exception:  # noqa: BLE001 - no Part-10 meta, deflate, a codec pydicom's reader lacks: full read
        ds = read_dataset(inst.path)
        frames = number_of_frames(ds)
        if number > frames:
            raise NotFound(f"instance {inst.sop_instance_uid} has {frames} frame(s), not {number}") from None
        arr, _ = decode_frame(ds, number - 1)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr).tobytes()


def _number_of_frames(request: Request, sop: str) -> int:
    with pacs_of(request).archive.reading() as s:
        n = s.scalar(select(Instance.number_of_frames).where(Instance.sop_instance_uid == sop))
    return n or 1


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
            summary="WADO-RS: uncompressed frames (multipart/related application/octet-stream)")
def retrieve_frames(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    numbers = _frame_numbers(frames)
    _multipart_type(request, "application/octet-stream", {"application/octet-stream"})
    inst = _stored(request, study, series, sop)[0]
    available = _number_of_frames(request, sop)
    for n in numbers:
        if n > available:
            raise NotFound(f"instance {sop} has {available} frame(s), not {n}")
    boundary = multipart.new_boundary()
    url = _url(request, study, series, sop)
    parts = (("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
              {"Content-Location": f"{url}/frames/{n}"}, [frame_bytes(inst, n)]) for n in numbers)
    return StreamingResponse(multipart.stream_parts(boundary, parts),
                             media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')


def _find_element(ds: Dataset, tag: int) -> Any:
    if tag in ds:
        return ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found = _find_element(item, tag)
                if found is not None:
                    return found
    return None


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulk/{tag}",
            summary="WADO-RS: bulk data named by a BulkDataURI in the metadata")
def retrieve_bulkdata(request: Request, study: str, series: str, sop: str, tag: str) -> Response:
    from hounsfield.imaging import read_dataset

    try:
        wanted = int(tag, 16)
    except ValueError:
        raise InvalidQuery(f"bulk data tag {tag!r} is not 8 hexadecimal digits") from None
    part_type = _multipart_type(request, "application/octet-stream", {"application/octet-stream"})
    inst = _stored(request, study, series, sop)[0]
    ds = read_dataset(inst.path, pixels=wanted in (0x7FE00010, 0x7FE00008, 0x7FE00009))
    elem = _find_element(ds, wanted)
    if elem is None or elem.value is None:
        raise NotFound(f"instance {sop} has no bulk data element {tag}")
    value = elem.value if isinstance(elem.value, bytes) else ds[wanted].value
    if not isinstance(value, bytes):
        value = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in (value or []))
    if part_type == "application/octet-stream" and not any(
            m.type == "multipart/related" for m in _accepts(request)):
        return Response(value, media_type="application/octet-stream")
    boundary = multipart.new_boundary()
    body = b"".join(multipart.stream_parts(boundary, [("application/octet-stream", {}, [value])]))
    return Response(body, media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}')


# ------------------------------------------------------------------------------------------------ rendered
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg"}


def _window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    fields = [f.strip() for f in text.split(",")]
    try:
        center, width = float(fields[0]), float(fields[1])
    except (ValueError, IndexError):
        raise InvalidQuery(f"window={text!r}: expected center,width[,function]") from None
    function = fields[2].lower() if len(fields) > 2 and fields[2] else "linear"
    if function != "linear":
        raise InvalidQuery(f"window function {function!r} is not supported (linear only)")
    if width < 1:
        raise InvalidQuery(f"window width {width:g} must be at least 1 for a linear window")
    return center, width


def _viewport(text: str | None) -> int | None:
    """viewport=vw,vh[,...]: the longer side of the rendered image is bounded by the smaller of vw, vh."""
    if not text:
        return None
    fields = text.split(",")
    try:
        sizes = [int(f) for f in fields[:2] if f.strip()]
    except ValueError:
        raise InvalidQuery(f"viewport={text!r}: expected width,height in pixels") from None
    if not sizes or any(not 1 <= s <= 16384 for s in sizes):
        raise InvalidQuery(f"viewport={text!r}: sizes must be 1-16384")
    return min(sizes)


def _render(request: Request, inst: StoredInstance, frame: int, *, thumbnail: bool = False) -> Response:
    from hounsfield.imaging import render_instance

    offer, _ = _wants(request, list(IMAGE_TYPES))
    window = _window(request.query_params.get("window"))
    size = _viewport(request.query_params.get("viewport")) or (THUMBNAIL_SIZE if thumbnail else None)
    if frame >= _number_of_frames(request, inst.sop_instance_uid):
        raise NotFound(f"instance {inst.sop_instance_uid} has no frame {frame + 1}")
    try:
        data = render_instance(inst.path, frame=frame, window=window, fmt=IMAGE_TYPES[offer], max_size=size,
                               preset=request.query_params.get("preset"))  # hounsfield extension: named window
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    return Response(data, media_type=offer)


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered",
            summary="WADO-RS: rendered instance (image/png or image/jpeg)")
def rendered_instance(request: Request, study: str, series: str, sop: str) -> Response:
    return _render(request, _stored(request, study, series, sop)[0], 0)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
            summary="WADO-RS: rendered frame")
def rendered_frame(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    numbers = _frame_numbers(frames)
    if len(numbers) != 1:
        raise InvalidQuery("rendered frames: give exactly one frame number")
    return _render(request, _stored(request, study, series, sop)[0], numbers[0] - 1)


def _representative(found: list[StoredInstance]) -> StoredInstance:
    first_series = [i for i in found if i.series_instance_uid == found[0].series_instance_uid]
    return first_series[len(first_series) // 2]


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: study thumbnail")
def study_thumbnail(request: Request, study: str) -> Response:
    return _render(request, _representative(_stored(request, study)), 0, thumbnail=True)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: series thumbnail")
def series_thumbnail(request: Request, study: str, series: str) -> Response:
    return _render(request, _representative(_stored(request, study, series)), 0, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail", summary="WADO-RS: instance thumbnail")
def instance_thumbnail(request: Request, study: str, series: str, sop: str) -> Response:
    return _render(request, _stored(request, study, series, sop)[0], 0, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail",
            summary="WADO-RS: frame thumbnail")
def frame_thumbnail(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    return _render(request, _stored(request, study, series, sop)[0], _frame_numbers(frames)[0] - 1,
                   thumbnail=True)


# ------------------------------------------------------------------------------------------------ STOW-RS
def _sop_item(class_uid: str, instance_uid: str) -> dict[str, Any]:
    return {"00081150": {"vr": "UI", "Value": [class_uid]} if class_uid else {"vr": "UI"},
            "00081155": {"vr": "UI", "Value": [instance_uid]} if instance_uid else {"vr": "UI"}}


def store_parts(pacs: Pacs, parts: Iterable[multipart.Part], study: str | None, origin: str,
                base: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
    """Store each part; returns (ReferencedSOPSequence items, FailedSOPSequence items, stored study UIDs)."""
    stored, failed, studies = [], [], set()
    for part in parts:
        media = multipart.parse_media_type(part.content_type or "application/dicom")
        class_uid = instance_uid = ""
        try:
            if media.type != "application/dicom":
                raise InvalidDataset(f"part media type {media.type!r} is not application/dicom")
            header = read_header(part.body)
            class_uid = header.text("SOPClassUID")
            instance_uid = header.sop_instance_uid
            part_study = header.text("StudyInstanceUID")
            if study is not None and part_study != study:
                item = _sop_item(class_uid, instance_uid)
                item["00081197"] = {"vr": "US", "Value": [DATASET_DOES_NOT_MATCH]}
                failed.append(item)
                continue
            result = pacs.archive.store_bytes(part.body, origin, header=header)
        except InvalidDataset:
            reason = CANNOT_UNDERSTAND
        except StorageFull:
            reason = OUT_OF_RESOURCES
        except HounsfieldError:
            reason = PROCESSING_FAILURE
        else:
            item = _sop_item(result.sop_class_uid, result.sop_instance_uid)
            item["00081190"] = {"vr": "UR", "Value": [
                f"{base}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
                f"/instances/{result.sop_instance_uid}"]}
            stored.append(item)
            studies.add(result.study_instance_uid)
            continue
        item = _sop_item(class_uid, instance_uid)
        item["00081197"] = {"vr": "US", "Value": [reason]}
        failed.append(item)
    return stored, failed, studies


async def _stow(request: Request, study: str | None) -> Response:
    content_type = multipart.parse_media_type(request.headers.get("content-type", ""))
    if content_type.type != "multipart/related":
        raise UnsupportedMediaType(f"STOW-RS takes multipart/related; type=\"application/dicom\", "
                                   f"not {content_type.type or 'a body without Content-Type'}")
    part_type = content_type.params.get("type", "application/dicom").lower()
    if part_type != "application/dicom":
        raise UnsupportedMediaType(f"STOW-RS here takes parts of type application/dicom, not {part_type}")
    body = await request.body()
    parts = multipart.parse(body, content_type.params.get("boundary", ""))
    if not parts:
        raise multipart.MalformedMultipart("multipart body has no parts")
    origin = f"STOW-RS {request.client.host if request.client else ''}".strip()
    pacs = pacs_of(request)
    base = root_url(request)
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
