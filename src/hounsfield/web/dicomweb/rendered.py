"""WADO-RS rendered and thumbnail resources (PS3.18 10.4, rendered media types 8.7.4): an instance or frame
as a consumer-ready image/png or image/jpeg, windowed and scaled as the query parameters ask.

Rendering itself is ``hounsfield.imaging.render_instance`` (PS3.3 C.11.2 windowing); this module parses the
``window`` and ``viewport`` parameters and picks what a study's or series' thumbnail shows.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hounsfield.archive import StoredInstance
from hounsfield.errors import InvalidQuery, NotFound
from hounsfield.imaging import render_instance
from hounsfield.web.dicomweb.common import wants
from hounsfield.web.dicomweb.wado import frame_count, frame_numbers, stored

router = APIRouter()

IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg"}
THUMBNAIL_SIZE = 128


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
    offer, _ = wants(request, list(IMAGE_TYPES))
    window = _window(request.query_params.get("window"))
    size = _viewport(request.query_params.get("viewport")) or (THUMBNAIL_SIZE if thumbnail else None)
    if frame >= frame_count(request, inst.sop_instance_uid):
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
    return _render(request, stored(request, study, series, sop)[0], 0)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered",
            summary="WADO-RS: rendered frame")
def rendered_frame(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    numbers = frame_numbers(frames)
    if len(numbers) != 1:
        raise InvalidQuery("rendered frames: give exactly one frame number")
    return _render(request, stored(request, study, series, sop)[0], numbers[0] - 1)


def _representative(found: list[StoredInstance]) -> StoredInstance:
    """The middle instance of the first series: what a study's or series' thumbnail shows."""
    first_series = [i for i in found if i.series_instance_uid == found[0].series_instance_uid]
    return first_series[len(first_series) // 2]


@router.get("/studies/{study}/thumbnail", summary="WADO-RS: study thumbnail")
def study_thumbnail(request: Request, study: str) -> Response:
    return _render(request, _representative(stored(request, study)), 0, thumbnail=True)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="WADO-RS: series thumbnail")
def series_thumbnail(request: Request, study: str, series: str) -> Response:
    return _render(request, _representative(stored(request, study, series)), 0, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail", summary="WADO-RS: instance thumbnail")
def instance_thumbnail(request: Request, study: str, series: str, sop: str) -> Response:
    return _render(request, stored(request, study, series, sop)[0], 0, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail",
            summary="WADO-RS: frame thumbnail")
def frame_thumbnail(request: Request, study: str, series: str, sop: str, frames: str) -> Response:
    return _render(request, stored(request, study, series, sop)[0], frame_numbers(frames)[0] - 1,
                   thumbnail=True)
