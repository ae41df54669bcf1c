"""Radiotherapy REST API (issue 13), under ``/api/rt``: a study's RT set, the RT objects of an image series, the
ROIs of a structure set, contours and dose on a CT slice, isodose lines, DVHs and plan summaries.

Which object references which comes from the index (``hounsfield.rt.models.RTReference``, filled at ingest), so
an RT set is found without reading a file; every computation is :mod:`hounsfield.rt`'s. Objects read from their
files are kept in memory (a few, by SOP Instance UID and SHA-256: a replaced file is read again); DVHs are
kept in the index (``rt_dvh_cache``) once computed.

Pixel coordinates are those of the CT slice named by ``image`` (its SOP Instance UID): ``[x, y]`` = (column,
row) with the centre of the first pixel at ``[0, 0]`` (add 0.5 for a canvas whose pixel (0, 0) spans 0-1).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

import numpy as np
from fastapi import APIRouter, HTTPException, Query as Param, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from hounsfield.errors import InvalidQuery, NotFound
from hounsfield.models import Instance, Series, Study
from hounsfield.pacs import Pacs
from hounsfield.web.paths import path_scrubber, public_detail
from hounsfield.rt import models as rtm
from hounsfield.rt.common import RTError
from hounsfield.rt.dose import DoseGrid
from hounsfield.rt.dvh import compute_dvhs
from hounsfield.rt.grid import CTSeries, Grid, load_series
from hounsfield.rt.overlay import (DEFAULT_ISODOSE, WASH_FLOOR, Overlay, ReferenceDose, _wash_colours,
                                   contour_colour, isodose_line, parse_isodose, slice_contours)
from hounsfield.rt.plan import PlanSummary
from hounsfield.rt.raster import roi_occupancy
from hounsfield.rt.structure import ROI, StructureSet

router = APIRouter(prefix="/api/rt", tags=["radiotherapy"])

KIND_NAMES = {"RTSTRUCT": "RT Structure Set", "RTPLAN": "RT Plan", "RTDOSE": "RT Dose"}
REF_NAMES = {"series": "image series", "structure_set": "RT Structure Set", "plan": "RT Plan", "dose": "RT Dose"}
REF_KIND = {"structure_set": "RTSTRUCT", "plan": "RTPLAN", "dose": "RTDOSE"}
Method = Literal["supersample", "centre"]


RGB = list[int]


# ---- the shapes of the answers (documented in the OpenAPI; tests/test_rest_schema.py checks them) ------------
class SeriesRef(BaseModel):
    kind: Literal["series"]
    uid: str
    found: bool
    instances: int = Field(description="instances of the series in the archive (0 when not found)")


class ObjectRef(BaseModel):
    kind: Literal["structure_set", "plan", "dose"]
    uid: str
    found: bool
    in_study: bool = Field(description="the referenced object is in the same study")


class RTObjectOut(BaseModel):
    sop_instance_uid: str
    kind: str = Field(description="RTSTRUCT, RTPLAN or RTDOSE")
    label: str
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    references: list[Annotated[Union[SeriesRef, ObjectRef], Field(discriminator="kind")]]


class RTSetOut(BaseModel):
    structure_sets: list[RTObjectOut]
    plans: list[RTObjectOut]
    doses: list[RTObjectOut]
    problems: list[str] = Field(description="each missing or inconsistent reference, by name")


class StudyRTSetOut(RTSetOut):
    study_instance_uid: str


class SeriesRTSetOut(RTSetOut):
    series_instance_uid: str
    frame_of_reference_uid: str


class RoiOut(BaseModel):
    number: int
    name: str
    color: RGB = Field(description="the ROI Display Color, else the overlays' palette colour")
    display_color: Optional[RGB] = Field(description="the ROI Display Color as stored (null: none)")
    interpreted_type: str
    contours: int
    geometric_types: dict[str, int]
    volume_cc: Optional[float] = Field(description="null for an ROI without closed contours")
    volume_note: Optional[str]


class RoisOut(BaseModel):
    sop_instance_uid: str
    label: str
    frame_of_reference_uid: str
    rois: list[RoiOut]
    issues: list[str]


class SliceContour(BaseModel):
    type: str = Field(description="Contour Geometric Type: CLOSED_PLANAR, OPEN_PLANAR, POINT…")
    closed: bool
    points: list[list[float]] = Field(description="[x, y] = (column, row)")


class SliceRoi(BaseModel):
    number: int
    name: str
    color: RGB
    contours: list[SliceContour]


class ContoursOut(BaseModel):
    sop_instance_uid: str
    image: str
    slice: int
    rows: int
    columns: int
    rois: list[SliceRoi]


class DoseSliceOut(BaseModel):
    sop_instance_uid: str
    image: str
    rows: int
    columns: int
    units: str
    dose_max: float
    wash_floor: float
    slice_max: Optional[float]
    values: list[list[Optional[float]]] = Field(description="values[row][column]; null outside the dose grid")


class ReferenceOut(BaseModel):
    gy: float
    source: str


class IsodoseLevel(BaseModel):
    gy: float
    color: RGB
    label: str
    pixels: list[list[int]] = Field(description="[x, y] = (column, row)")


class IsodoseOut(BaseModel):
    sop_instance_uid: str
    image: str
    units: str
    rows: int
    columns: int
    reference: ReferenceOut = Field(description="what 100 % is")
    levels: list[IsodoseLevel]


class DvhOut(BaseModel):
    number: int
    name: str
    volume_cc: Optional[float]
    min_gy: Optional[float]
    mean_gy: Optional[float]
    max_gy: Optional[float]
    d98_gy: Optional[float]
    d95_gy: Optional[float]
    d50_gy: Optional[float]
    d2_gy: Optional[float]
    dose_gy: list[float]
    volume_pct: list[float]
    color: Optional[RGB]
    source: str
    notes: list[str]
    covered_cc: Optional[float] = Field(description="the part of the volume inside the dose grid")


class DvhsOut(BaseModel):
    structure_set: str
    dose: str
    method: str
    units: str
    cached: int = Field(description="DVHs answered from the index")
    dvhs: list[DvhOut]
    errors: list[str]


class BeamOut(BaseModel):
    number: int
    name: str
    beam_type: str
    radiation_type: str
    nominal_energy: Optional[float]
    gantry_angle: Optional[float]
    collimator_angle: Optional[float]
    couch_angle: Optional[float]
    meterset: Optional[float]
    meterset_unit: str
    control_points: int
    machine: str
    beam_dose: Optional[float]


class DoseReferenceOut(BaseModel):
    number: Optional[int]
    description: str
    structure_type: str
    reference_type: str
    prescription_gy: Optional[float]
    roi_number: Optional[int]


class FractionGroupOut(BaseModel):
    number: Optional[int]
    fractions: Optional[int]
    beams: list[tuple[int, Optional[float]]] = Field(description="(beam number, meterset)")


class PlanOut(BaseModel):
    sop_instance_uid: str
    label: str
    plan_name: str
    intent: str
    geometry: str
    date: str
    frame_of_reference_uid: str
    study_uid: str
    dose_references: list[DoseReferenceOut]
    fraction_groups: list[FractionGroupOut]
    beams: list[BeamOut]
    structure_set_uids: list[str]
    dose_uids: list[str]
    plan_uids: list[str]
    issues: list[str]
    prescription_gy: Optional[float]
    fractions: Optional[int]
    total_meterset: Optional[float]


def pacs_of(request: Request) -> Pacs:
    return request.app.state.pacs


def _public(pacs: Pacs, text: str) -> str:
    return public_detail(text, path_scrubber(pacs.settings.data_dir))


def _unusable(pacs: Pacs, exc: RTError) -> HTTPException:
    """A stored RT object that cannot be used as asked (another Frame of Reference, no dose grid…): 422."""
    return HTTPException(422, detail=_public(pacs, str(exc)))


# ---- objects read from their files, kept ------------------------------------------------------------------------
class _Kept:
    """A few objects read from files, by key (SOP Instance UID + SHA-256), least recently used dropped."""

    def __init__(self, size: int) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


_objects = _Kept(8)
# What is asked of one CT slice, kept by what it is made of: the dose resampled on it (~100 KB; asked twice as the
# slice comes on screen, the values under the cursor, then the wash or the isodose lines) and a structure set's
# contours on it (JSON); both again while the user scrolls back and forth.
_planes = _Kept(256)


@dataclasses.dataclass(frozen=True)
class _Stored:
    uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    path: Path
    sha256: str


def _stored(pacs: Pacs, uid: str) -> _Stored:
    q = (select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.path, Instance.sha256,
                Series.series_instance_uid, Study.study_instance_uid)
         .join(Series, Instance.series_fk == Series.id).join(Study, Series.study_fk == Study.id)
         .where(Instance.sop_instance_uid == uid))
    with pacs.archive.reading() as s:
        row = s.execute(q).first()
    if row is None:
        raise NotFound(f"no instance with SOP Instance UID {uid}")
    return _Stored(row[0], row[1], row[4], row[5], pacs.archive.files.path(row[2]), row[3])


def _of_kind(pacs: Pacs, uid: str, kind: str) -> _Stored:
    found = _stored(pacs, uid)
    if rtm.RT_SOP_CLASSES.get(found.sop_class_uid) != kind:
        raise InvalidQuery(f"{uid} is not an {KIND_NAMES[kind]} (SOP Class {found.sop_class_uid})")
    return found


def _read(pacs: Pacs, uid: str, kind: str, reader: Callable[[Path], Any]) -> tuple[_Stored, Any]:
    found = _of_kind(pacs, uid, kind)
    try:
        return found, _objects.get((uid, found.sha256), lambda: reader(found.path))
    except RTError as exc:
        raise _unusable(pacs, exc) from None


def structure_set(pacs: Pacs, uid: str) -> tuple[_Stored, StructureSet]:
    return _read(pacs, uid, "RTSTRUCT", StructureSet.read)


def dose_grid(pacs: Pacs, uid: str) -> tuple[_Stored, DoseGrid]:
    return _read(pacs, uid, "RTDOSE", DoseGrid.read)


def plan(pacs: Pacs, uid: str) -> tuple[_Stored, PlanSummary]:
    return _read(pacs, uid, "RTPLAN", PlanSummary.read)


def ct_slice(pacs: Pacs, image_uid: str) -> tuple[CTSeries, int, tuple]:
    """The series of the image ``image_uid`` (its headers, kept), the image's slice index in it, and the key
    the series is kept by (its UID and every instance's SOP Instance UID + SHA-256: what its grid is made of)."""
    if not image_uid:
        raise InvalidQuery("image= (the SOP Instance UID of a CT slice) is required")
    image = _stored(pacs, image_uid)
    if image.sop_class_uid in rtm.RT_SOP_CLASSES:
        raise InvalidQuery(f"image={image_uid} is an {KIND_NAMES[rtm.RT_SOP_CLASSES[image.sop_class_uid]]}, "
                           "not an image slice")
    q = (select(Instance.sop_instance_uid, Instance.path, Instance.sha256, Instance.sop_class_uid)
         .join(Series, Instance.series_fk == Series.id).where(Series.series_instance_uid == image.series_uid))
    with pacs.archive.reading() as s:
        rows = [r for r in s.execute(q).all() if not r[3].startswith("1.2.840.10008.5.1.4.1.1.481.")]
    key = ("series", image.series_uid, tuple(sorted((r[0], r[2]) for r in rows)))
    try:
        series = _objects.get(key, lambda: load_series([pacs.archive.files.path(r[1]) for r in rows]))
    except RTError as exc:
        raise _unusable(pacs, exc) from None
    if image_uid not in series.grid.slice_uids:
        raise InvalidQuery(f"{image_uid} is not an image slice of series {image.series_uid}")
    return series, series.grid.slice_uids.index(image_uid), key


# ---- the RT set, from the index --------------------------------------------------------------------------------
def _objects_of(rows: list[rtm.RTReference]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        obj = out.setdefault(r.sop_instance_uid, {
            "sop_instance_uid": r.sop_instance_uid, "kind": r.kind, "label": r.label,
            "study_instance_uid": r.study_instance_uid, "series_instance_uid": r.series_instance_uid,
            "frame_of_reference_uid": r.frame_of_reference_uid, "references": []})
        if r.ref_kind:
            obj["references"].append({"kind": r.ref_kind, "uid": r.ref_uid})
    return out


def _name(obj: dict[str, Any]) -> str:
    label = f" '{obj['label']}'" if obj["label"] else ""
    return f"{KIND_NAMES[obj['kind']]}{label} ({obj['sop_instance_uid']})"


def _resolve(s: Any, objects: dict[str, dict[str, Any]]) -> list[str]:
    """Each reference marked found or not (``found``, ``in_study``), and the problems, by name."""
    problems: list[str] = []
    series_uids = {ref["uid"] for o in objects.values() for ref in o["references"] if ref["kind"] == "series"}
    series_info: dict[str, tuple[str, int]] = {}
    if series_uids:
        q = (select(Series.series_instance_uid, Series.attrs, func.count(Instance.id))
             .join(Instance, Instance.series_fk == Series.id)
             .where(Series.series_instance_uid.in_(series_uids)).group_by(Series.id))
        for uid, attrs, count in s.execute(q).all():
            frame = ((rtm.unpack(attrs).get("00200052") or {}).get("Value") or [""])[0]
            series_info[uid] = (str(frame or ""), int(count))
    other = {ref["uid"] for o in objects.values() for ref in o["references"] if ref["kind"] != "series"}
    elsewhere = {r.sop_instance_uid: r.kind for r in s.scalars(
        select(rtm.RTReference).where(rtm.RTReference.sop_instance_uid.in_(other - set(objects))))} if other else {}
    for obj in objects.values():
        for ref in obj["references"]:
            what = REF_NAMES[ref["kind"]]
            if ref["kind"] == "series":
                info = series_info.get(ref["uid"])
                ref["found"] = info is not None
                ref["instances"] = info[1] if info else 0
                if info is None:
                    problems.append(f"{_name(obj)} references {what} {ref['uid']}, which is not in the archive")
                elif obj["frame_of_reference_uid"] and info[0] and obj["frame_of_reference_uid"] != info[0]:
                    problems.append(f"{_name(obj)}: Frame of Reference {obj['frame_of_reference_uid']} differs from "
                                    f"the one of {what} {ref['uid']} ({info[0]})")
                continue
            target = objects.get(ref["uid"])
            kind = target["kind"] if target else elsewhere.get(ref["uid"])
            ref["found"] = kind is not None
            ref["in_study"] = target is not None
            if kind is None:
                problems.append(f"{_name(obj)} references {what} {ref['uid']}, which is not in the archive")
            elif kind != REF_KIND[ref["kind"]]:
                problems.append(f"{_name(obj)} references {ref['uid']} as an {what}, but it is an {KIND_NAMES[kind]}")
        if not obj["references"] and obj["kind"] in ("RTSTRUCT", "RTDOSE"):
            problems.append(f"{_name(obj)} references no " + ("image series" if obj["kind"] == "RTSTRUCT" else "RT Plan"))
    return problems


def _answer(objects: dict[str, dict[str, Any]], problems: list[str], **extra: Any) -> dict[str, Any]:
    by_kind = lambda kind: [o for o in objects.values() if o["kind"] == kind]  # noqa: E731
    return {**extra, "structure_sets": by_kind("RTSTRUCT"), "plans": by_kind("RTPLAN"), "doses": by_kind("RTDOSE"),
            "problems": problems}


@router.get("/studies/{study}", summary="A study's RT set: its structure sets, plans and doses, what each "
            "references, and every missing reference by name")
def rt_set(request: Request, study: str) -> StudyRTSetOut:
    """From the index only (no file is read). A reference to an object or series the archive does not hold is a
    ``problems`` entry naming the object and what it misses, and its reference says ``found: false``."""
    pacs = pacs_of(request)
    with pacs.archive.reading() as s:
        if s.scalar(select(Study.id).where(Study.study_instance_uid == study)) is None:
            raise NotFound(f"no study {study}")
        rows = list(s.scalars(select(rtm.RTReference).where(rtm.RTReference.study_instance_uid == study)
                              .order_by(rtm.RTReference.id)))
        objects = _objects_of(rows)
        problems = _resolve(s, objects)
    return StudyRTSetOut(**_answer(objects, problems, study_instance_uid=study))


@router.get("/series/{series}", summary="The RT objects drawn on an image series: the structure sets that "
            "reference it, their plans, and the doses of those plans (or of its Frame of Reference)")
def rt_of_series(request: Request, series: str) -> SeriesRTSetOut:
    pacs = pacs_of(request)
    R = rtm.RTReference
    with pacs.archive.reading() as s:
        found = s.execute(select(Series.attrs, Study.study_instance_uid).join(Study, Series.study_fk == Study.id)
                          .where(Series.series_instance_uid == series)).first()
        if found is None:
            raise NotFound(f"no series {series}")
        frame = str(((rtm.unpack(found[0]).get("00200052") or {}).get("Value") or [""])[0] or "")
        study_rows = list(s.scalars(select(R).where(R.study_instance_uid == found[1]).order_by(R.id)))
        rs = {r.sop_instance_uid for r in study_rows if r.kind == "RTSTRUCT" and r.ref_kind == "series"
              and r.ref_uid == series}
        plans = {r.sop_instance_uid for r in study_rows if r.kind == "RTPLAN" and r.ref_kind == "structure_set"
                 and r.ref_uid in rs}
        doses = {r.sop_instance_uid for r in study_rows if r.kind == "RTDOSE" and (
            (r.ref_kind == "plan" and r.ref_uid in plans) or (r.ref_kind == "structure_set" and r.ref_uid in rs))}
        doses |= {r.sop_instance_uid for r in study_rows if r.kind == "RTDOSE" and frame
                  and r.frame_of_reference_uid == frame}
        plans |= {r.ref_uid for r in study_rows if r.sop_instance_uid in doses and r.ref_kind == "plan"}
        objects = _objects_of([r for r in study_rows if r.sop_instance_uid in rs | plans | doses])
        problems = _resolve(s, objects)
    return SeriesRTSetOut(**_answer(objects, problems, series_instance_uid=series, frame_of_reference_uid=frame))


# ---- structure sets ---------------------------------------------------------------------------------------------
def roi_volume_cc(roi: ROI, default_slab: float | None) -> float | None:
    """The ROI's volume (cm³): its closed contours rasterised (:func:`hounsfield.rt.raster.roi_occupancy`, 4 x 4
    samples per cell, holes by the even-odd rule) on a lattice of its own contour planes, each plane a slab of
    the ROI's contour spacing. None for an ROI without closed contours."""
    if roi.empty:
        return None
    normal = np.array([0.0, 0.0, 1.0])
    planes = roi.plane_positions(normal)
    slab = roi.slab_thickness(normal) or default_slab or 1.0
    pts = np.concatenate([c.points for c in roi.closed_contours])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    step = max(0.5, float(max(hi[0] - lo[0], hi[1] - lo[1])) / 400.0)
    shape = (planes.size, int(math.ceil((hi[1] - lo[1]) / step)) + 3, int(math.ceil((hi[0] - lo[0]) / step)) + 3)
    grid = Grid(shape, np.array([lo[0] - step, lo[1] - step, planes[0]]), np.array([1.0, 0.0, 0.0]),
                np.array([0.0, 1.0, 0.0]), (step, step), planes - planes[0], slab, roi.structure_set)
    occupancy = roi_occupancy(roi, grid, supersample=4, thickness=slab)
    return float(occupancy.sum(dtype=np.float64)) * step * step * slab / 1000.0


def _rois(rs: StructureSet) -> list[dict[str, Any]]:
    slabs = [t for r in rs.rois if not r.empty and (t := r.slab_thickness())]
    default = float(np.median(slabs)) if slabs else None
    out = []
    for roi in rs.rois:
        try:
            volume, why = roi_volume_cc(roi, default), None
        except RTError as exc:
            volume, why = None, str(exc)
        out.append({"number": roi.number, "name": roi.name, "color": list(contour_colour(roi)),
                    "display_color": list(roi.color) if roi.color else None,
                    "interpreted_type": roi.interpreted_type, "contours": len(roi.contours),
                    "geometric_types": dict(roi.geometric_types()),
                    "volume_cc": None if volume is None else round(volume, 4), "volume_note": why})
    return out


@router.get("/structure-sets/{uid}/rois", summary="The ROIs of a structure set: number, name, colour, type, "
            "volume (cm³)")
def rois(request: Request, uid: str) -> RoisOut:
    """``color`` is the ROI Display Color, else the palette colour the overlays use; ``volume_cc`` the volume of
    the closed contours (null for an ROI of points or open lines)."""
    pacs = pacs_of(request)
    found, rs = structure_set(pacs, uid)
    listed = _objects.get(("rois", uid, found.sha256), lambda: _rois(rs))
    return RoisOut(sop_instance_uid=uid, label=rs.label, frame_of_reference_uid=rs.frame_of_reference_uid,
                   rois=listed, issues=[_public(pacs, i) for i in rs.issues])


@router.get("/structure-sets/{uid}/contours", summary="The contours of a structure set on one CT slice, in that "
            "slice's pixel coordinates", responses={200: {"model": ContoursOut}})
def contours(request: Request, uid: str, image: str = Param("", description="SOP Instance UID of the CT slice"),
             roi: list[int] | None = Param(None, description="ROI Numbers (all when absent)")) -> Response:
    """The contours whose points all lie in the slice's slab (half the slice spacing either side of its plane,
    :func:`hounsfield.rt.overlay.slice_contours`): contours off the slice plane are not given. Points are
    ``[x, y]`` = (column, row), the first pixel's centre at ``[0, 0]``."""
    pacs = pacs_of(request)
    stored, rs = structure_set(pacs, uid)
    series, k, series_key = ct_slice(pacs, image)
    try:
        series.require_frame_of_reference(rs.frame_of_reference_uid, rs.name)
    except RTError as exc:
        raise _unusable(pacs, exc) from None

    def answer() -> bytes:  # kept as JSON: a slice's contours are asked each time it comes on screen
        grid = series.grid.slice_grid(k)
        out = []
        for r in rs.rois:
            if roi and r.number not in roi:
                continue
            found = [{"type": c.geometric_type, "closed": c.closed,
                      "points": [[round(float(cc), 3), round(float(rr), 3)] for rr, cc in rows_cols]}
                     for c, rows_cols in slice_contours(r, grid)]
            if found:
                out.append({"number": r.number, "name": r.name, "color": list(contour_colour(r)),
                            "contours": found})
        return json.dumps({"sop_instance_uid": uid, "image": image, "slice": k, "rows": grid.shape[1],
                           "columns": grid.shape[2], "rois": out}, separators=(",", ":")).encode()

    key = ("contours", uid, stored.sha256, series_key, k, tuple(roi or ()))
    return Response(_planes.get(key, answer), media_type="application/json")


# ---- doses ------------------------------------------------------------------------------------------------------
def _dose_plane(pacs: Pacs, uid: str, image: str) -> tuple[DoseGrid, np.ndarray]:
    stored, dose = dose_grid(pacs, uid)
    series, k, series_key = ct_slice(pacs, image)
    try:
        series.require_frame_of_reference(dose.frame_of_reference_uid, dose.name)
    except RTError as exc:
        raise _unusable(pacs, exc) from None
    def resample() -> np.ndarray:
        plane = dose.resample_slice(series.grid, k, fill=np.nan)
        plane.setflags(write=False)  # kept and shared between requests
        return plane

    return dose, _planes.get((uid, stored.sha256, series_key, k), resample)


def _unit(dose: DoseGrid) -> str:
    return "Gy" if dose.units in ("GY", "") else dose.units.lower()


@router.get("/doses/{uid}/slice", summary="The dose resampled on one CT slice: values (JSON or float32) or a "
            "colour-wash PNG", responses={200: {"model": DoseSliceOut, "content": {
                "application/json": {}, "application/octet-stream": {}, "image/png": {}}}})
def dose_slice(request: Request, uid: str, image: str = Param("", description="SOP Instance UID of the CT slice"),
               format: Literal["json", "f32", "png"] = "json") -> Response:
    """Trilinear dose at the slice's pixel centres (:meth:`hounsfield.rt.dose.DoseGrid.resample_slice`), in the
    RT Dose's units (Gy). ``json``: ``values[row][column]``, null outside the dose grid; ``f32``: little-endian
    float32 rows x columns, NaN outside (X-Rows, X-Columns, X-Dose-Max, X-Dose-Units headers); ``png``: RGBA,
    matplotlib's jet from 0 to the grid's maximum where the dose is at least 10 % of it, transparent elsewhere."""
    pacs = pacs_of(request)
    dose, plane = _dose_plane(pacs, uid, image)
    top = dose.max
    headers = {"X-Rows": str(plane.shape[0]), "X-Columns": str(plane.shape[1]), "X-Dose-Max": f"{top:.6g}",
               "X-Dose-Units": _unit(dose), "Cache-Control": "private, max-age=60"}
    if format == "f32":
        return Response(plane.astype("<f4").tobytes(), media_type="application/octet-stream", headers=headers)
    if format == "png":
        from PIL import Image

        rgba = np.zeros((*plane.shape, 4), dtype=np.uint8)
        shown = np.isfinite(plane) & (plane >= WASH_FLOOR * top) & (top > 0)
        rgba[shown, :3] = np.rint(_wash_colours(plane[shown] / (top or 1.0))).astype(np.uint8)
        rgba[shown, 3] = 255
        buf = io.BytesIO()
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png", headers=headers)
    values = [[None if not math.isfinite(v) else round(float(v), 5) for v in row] for row in plane.tolist()]
    finite = plane[np.isfinite(plane)]
    body = {"sop_instance_uid": uid, "image": image, "rows": plane.shape[0], "columns": plane.shape[1],
            "units": _unit(dose), "dose_max": round(top, 6), "wash_floor": round(WASH_FLOOR * top, 6),
            "slice_max": round(float(finite.max()), 6) if finite.size else None, "values": values}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json", headers=headers)


def _reference(pacs: Pacs, dose: DoseGrid) -> ReferenceDose:
    """What 100 % is: the highest Target Prescription Dose of the plan the dose references, else its maximum."""
    for plan_uid in dose.referenced_plan_uids:
        try:
            _, summary = plan(pacs, plan_uid)
        except (NotFound, InvalidQuery, HTTPException):
            continue
        if summary.prescription_gy:
            return ReferenceDose(summary.prescription_gy, f"prescription of RT Plan {summary.label or plan_uid}")
    return ReferenceDose(dose.max, "dose maximum")


@router.get("/doses/{uid}/isodose", summary="Isodose lines on one CT slice, in its pixel coordinates")
def isodose(request: Request, uid: str, image: str = Param("", description="SOP Instance UID of the CT slice"),
            levels: str = Param(DEFAULT_ISODOSE, description="95,50 (% of the prescription), 40Gy, or both")
            ) -> IsodoseOut:
    """Each level's line: the pixels receiving at least the level with a 4-neighbour (inside the grid) below it
    (:func:`hounsfield.rt.overlay.isodose_line`), as ``[x, y]`` = (column, row). 100 % is the prescription of the
    plan the dose references, else the dose maximum (``reference``)."""
    pacs = pacs_of(request)
    try:
        parsed = parse_isodose(levels)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    dose, plane = _dose_plane(pacs, uid, image)
    overlay = Overlay(dose=dose, levels=parsed, reference=_reference(pacs, dose))
    out = []
    for gy, colour, text in overlay.isodose_lines():
        rows, cols = np.nonzero(isodose_line(plane, gy))
        out.append({"gy": round(gy, 6), "color": list(colour), "label": text,
                    "pixels": np.column_stack((cols, rows)).tolist()})
    return IsodoseOut(sop_instance_uid=uid, image=image, units=_unit(dose), rows=plane.shape[0],
                      columns=plane.shape[1], reference=ReferenceOut(gy=overlay.reference.gy,
                                                                     source=overlay.reference.source),
                      levels=out)


# ---- DVHs -------------------------------------------------------------------------------------------------------
def _dvh_json(d: Any) -> dict[str, Any]:
    out = d.summary()
    out.update({"color": list(d.color) if d.color else None, "source": d.source, "notes": d.notes,
                "covered_cc": None if not math.isfinite(d.covered_cc) else round(d.covered_cc, 6)})
    return out


@router.get("/dvh", summary="DVHs of a structure set's ROIs on a dose (computed once, then kept)")
def dvh(request: Request, structure_set_uid: str = Param(..., alias="structure_set"),
        dose_uid: str = Param(..., alias="dose"),
        roi: list[str] | None = Param(None, description="ROI Numbers or names (all with closed contours when absent)"),
        method: Method = "supersample") -> DvhsOut:
    """As ``hounsfield rt dvh`` (:func:`hounsfield.rt.dvh.compute_dvhs`): per ROI volume, Dmin / Dmean / Dmax,
    D98 / D95 / D50 / D2 (Gy) and the cumulative curve (``dose_gy``, ``volume_pct``). Each is computed once per
    structure set, dose, ROI and method and kept in the index until either object is deleted or replaced
    (``cached`` counts those answered from there). An ROI that has no DVH is an ``errors`` entry."""
    pacs = pacs_of(request)
    rs_found, rs = structure_set(pacs, structure_set_uid)
    dose_found, dose = dose_grid(pacs, dose_uid)
    if rs.frame_of_reference_uid and dose.frame_of_reference_uid and \
            rs.frame_of_reference_uid != dose.frame_of_reference_uid:
        raise HTTPException(422, detail=f"RT Dose {dose_uid}: Frame of Reference {dose.frame_of_reference_uid} "
                                        f"differs from the structure set's ({rs.frame_of_reference_uid})")
    try:
        chosen = [rs.roi(int(k) if k.isdigit() else k) for k in roi] if roi else [r for r in rs.rois if not r.empty]
    except RTError as exc:
        raise InvalidQuery(_public(pacs, str(exc))) from None
    C = rtm.RTDVHCache
    with pacs.archive.reading() as s:
        kept = {row.roi_number: rtm.unpack(row.result) for row in s.scalars(select(C).where(
            C.structure_set_uid == structure_set_uid, C.dose_uid == dose_uid, C.method == method,
            C.structure_set_sha256 == rs_found.sha256, C.dose_sha256 == dose_found.sha256))}
    out, errors, new = [], [], []
    for r in chosen:
        if r.number in kept:
            out.append(kept[r.number])
            continue
        problems: list[str] = []
        computed = compute_dvhs(rs, dose, [r.number], method=method, errors=problems)
        errors += [_public(pacs, p) for p in problems]
        if computed:
            result = _dvh_json(computed[0])
            out.append(result)
            new.append(result)
    if new:
        import json
        import zlib

        with pacs.db.session() as s:
            for result in new:
                s.add(C(structure_set_uid=structure_set_uid, dose_uid=dose_uid, roi_number=result["number"],
                        method=method, structure_set_sha256=rs_found.sha256, dose_sha256=dose_found.sha256,
                        result=zlib.compress(json.dumps(result, separators=(",", ":")).encode(), 6)))
    return DvhsOut(structure_set=structure_set_uid, dose=dose_uid, method=method, units=_unit(dose),
                   cached=len(out) - len(new), dvhs=out, errors=errors)


# ---- plans ------------------------------------------------------------------------------------------------------
@router.get("/plans/{uid}", summary="An RT Plan's summary: intent, prescription, fractions, beams and metersets")
def plan_summary(request: Request, uid: str) -> PlanOut:
    pacs = pacs_of(request)
    _, summary = plan(pacs, uid)
    body = dataclasses.asdict(summary)
    body.pop("name", None)  # the file's name: not the client's business
    body["issues"] = [_public(pacs, i) for i in summary.issues]
    body.update({"prescription_gy": summary.prescription_gy, "fractions": summary.fractions,
                 "total_meterset": summary.total_meterset})
    return PlanOut(**body)
