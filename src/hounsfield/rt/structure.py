"""RT Structure Sets: the ROIs, their colours and types, and their contours plane by plane.

Read from the Structure Set module (PS3.3 C.8.8.5: Structure Set ROI Sequence, Referenced Frame of
Reference Sequence down to the Contour Image Sequence), the ROI Contour module (PS3.3 C.8.8.6: ROI Display
Color, Contour Sequence with Contour Geometric Type and Contour Data) and the RT ROI Observations module
(PS3.3 C.8.8.8: RT ROI Interpreted Type).

Only ``CLOSED_PLANAR`` contours enclose a region and are rasterised (:mod:`hounsfield.rt.raster`);
``POINT``, ``OPEN_PLANAR`` and ``OPEN_NONPLANAR`` contours are kept (to be shown) but never rasterised.
Problems that do not prevent reading (an ROI without contours, a contour whose point count disagrees with
Number of Contour Points, a closed contour whose points are not on one plane…) are collected in
:attr:`StructureSet.issues`, each naming the ROI and the cause; rasterising an unusable contour raises.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from hounsfield.rt.common import RTError, Source, object_name, read_rt, text

#: A closed contour's points must lie within this distance (mm) of one plane.
PLANE_TOLERANCE_MM = 0.1

CLOSED_PLANAR = "CLOSED_PLANAR"
OPEN_PLANAR = "OPEN_PLANAR"
OPEN_NONPLANAR = "OPEN_NONPLANAR"
POINT = "POINT"


@dataclass(frozen=True, eq=False)
class Contour:
    """One item of the Contour Sequence (PS3.3 C.8.8.6): its points in patient coordinates (mm)."""

    points: np.ndarray  # (n, 3) float64
    geometric_type: str
    index: int  # position in the ROI's Contour Sequence, from 0
    number: int | None = None  # Contour Number, when present
    image_uids: tuple[str, ...] = ()  # Contour Image Sequence: the images the contour was drawn on

    @property
    def closed(self) -> bool:
        return self.geometric_type == CLOSED_PLANAR

    def planarity(self) -> float:
        """Largest distance (mm) of a point from the contour's best-fitting plane (0 for < 4 points)."""
        if len(self.points) < 4:
            return 0.0
        spans = np.ptp(self.points, axis=0)
        if spans.min() <= PLANE_TOLERANCE_MM / 2:  # flat along an axis (axial, sagittal, coronal): no fit needed
            return float(spans.min())
        centred = self.points - self.points.mean(axis=0)
        normal = np.linalg.svd(centred, full_matrices=False)[2][-1]
        return float(np.abs(centred @ normal).max())


@dataclass(frozen=True, eq=False)
class ROI:
    """A region of interest: Structure Set ROI Sequence item + its ROI Contour + its RT ROI Observations."""

    number: int
    name: str
    color: tuple[int, int, int] | None  # ROI Display Color (PS3.3 C.8.8.6), RGB 0-255
    interpreted_type: str  # RT ROI Interpreted Type (PS3.3 C.8.8.8): PTV, ORGAN, EXTERNAL… ('' when absent)
    frame_of_reference_uid: str
    generation_algorithm: str
    contours: tuple[Contour, ...]
    structure_set: str = ""  # name of the structure set, for messages

    @property
    def label(self) -> str:
        """``ROI <number> '<name>'`` for messages."""
        return f"ROI {self.number} '{self.name}'"

    @property
    def closed_contours(self) -> tuple[Contour, ...]:
        return tuple(c for c in self.contours if c.closed)

    @property
    def empty(self) -> bool:
        """True when the ROI has no closed contour, so no volume."""
        return not self.closed_contours

    def geometric_types(self) -> Counter[str]:
        return Counter(c.geometric_type for c in self.contours)

    def plane_positions(self, normal: np.ndarray = np.array([0.0, 0.0, 1.0]), decimals: int = 2) -> np.ndarray:
        """Sorted distinct positions (mm) along ``normal`` of the closed contours' planes."""
        pos = [round(float(c.points[0] @ normal), decimals) for c in self.closed_contours]
        return np.unique(np.array(pos, dtype=np.float64))

    def slab_thickness(self, normal: np.ndarray = np.array([0.0, 0.0, 1.0])) -> float | None:
        """The ROI's contour plane spacing (mm): the most common gap between its planes, None for one plane.

        Each plane stands for a slab of this thickness centred on it (the usual convention of DVH
        calculators; dicompyler-core takes the smallest gap instead, see :mod:`hounsfield.rt.dvh`).
        """
        planes = self.plane_positions(normal)
        if planes.size < 2:
            return None
        gaps = np.round(np.diff(planes), 2)
        values, counts = np.unique(gaps[gaps > 0], return_counts=True)
        return float(values[np.argmax(counts)]) if values.size else None


@dataclass(frozen=True)
class ReferencedSeries:
    """An RT Referenced Series item (PS3.3 C.8.8.5) with its study and Frame of Reference."""

    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    image_uids: tuple[str, ...]


@dataclass(eq=False)
class StructureSet:
    """An RT Structure Set (PS3.3 C.8.8.5) and its ROIs in Structure Set ROI Sequence order."""

    name: str
    sop_instance_uid: str
    label: str
    study_uid: str
    series_uid: str
    frame_of_reference_uids: tuple[str, ...]
    referenced_series: tuple[ReferencedSeries, ...]
    rois: list[ROI]
    issues: list[str] = field(default_factory=list)
    dataset: Dataset | None = None

    @classmethod
    def read(cls, source: Source) -> StructureSet:
        """Read an RTSTRUCT file (or Dataset); an object that is not one raises :class:`RTError`."""
        ds = read_rt(source, "RTSTRUCT", pixels=False)
        return cls.from_dataset(ds)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StructureSet:
        name = object_name(ds)
        issues: list[str] = []
        refs: list[ReferencedSeries] = []
        frames: list[str] = []
        for fr in ds.get("ReferencedFrameOfReferenceSequence") or []:
            frame = text(fr, "FrameOfReferenceUID")
            frames.append(frame)
            for study in fr.get("RTReferencedStudySequence") or []:
                for series in study.get("RTReferencedSeriesSequence") or []:
                    images = tuple(text(i, "ReferencedSOPInstanceUID") for i in series.get("ContourImageSequence") or [])
                    refs.append(ReferencedSeries(text(series, "SeriesInstanceUID"),
                                                 text(study, "ReferencedSOPInstanceUID"), frame, images))
        if "StructureSetROISequence" not in ds:
            issues.append(f"{name}: no Structure Set ROI Sequence, so no ROIs")
        observations: dict[int, Dataset] = {}
        for obs in ds.get("RTROIObservationsSequence") or []:
            try:
                observations.setdefault(int(obs.ReferencedROINumber), obs)
            except (AttributeError, TypeError, ValueError):
                issues.append(f"{name}: an RT ROI Observations item has no valid Referenced ROI Number")
        contours_of: dict[int, Dataset] = {}
        for rc in ds.get("ROIContourSequence") or []:
            try:
                contours_of.setdefault(int(rc.ReferencedROINumber), rc)
            except (AttributeError, TypeError, ValueError):
                issues.append(f"{name}: an ROI Contour item has no valid Referenced ROI Number")
        rois: list[ROI] = []
        for item in ds.get("StructureSetROISequence") or []:
            try:
                number = int(item.ROINumber)
            except (AttributeError, TypeError, ValueError):
                issues.append(f"{name}: a Structure Set ROI item has no valid ROI Number; left out")
                continue
            roi_name = text(item, "ROIName", f"ROI {number}")
            label = f"ROI {number} '{roi_name}'"
            rc = contours_of.get(number)
            color = _color(rc, issues, name, label) if rc is not None else None
            contours = _contours(rc, issues, name, label) if rc is not None else ()
            if rc is None:
                issues.append(f"{name}: {label} has no ROI Contour item (no contours)")
            elif not contours:
                issues.append(f"{name}: {label} has no contours")
            obs = observations.get(number)
            rois.append(ROI(number, roi_name, color, text(obs, "RTROIInterpretedType") if obs is not None else "",
                            text(item, "ReferencedFrameOfReferenceUID"), text(item, "ROIGenerationAlgorithm"),
                            contours, name))
        for number in sorted(set(contours_of) - {r.number for r in rois}):
            issues.append(f"{name}: ROI Contour item for ROI {number}, which the Structure Set ROI Sequence lacks")
        if not refs:
            issues.append(f"{name}: no RT Referenced Series: the structure set names no image series")
        return cls(name, text(ds, "SOPInstanceUID"), text(ds, "StructureSetLabel"), text(ds, "StudyInstanceUID"),
                   text(ds, "SeriesInstanceUID"), tuple(frames), tuple(refs), rois, issues, ds)

    @property
    def frame_of_reference_uid(self) -> str:
        """The structure set's Frame of Reference: the ROIs' own, else the first referenced one."""
        own = [r.frame_of_reference_uid for r in self.rois if r.frame_of_reference_uid]
        return own[0] if own else (self.frame_of_reference_uids[0] if self.frame_of_reference_uids else "")

    @property
    def referenced_image_uids(self) -> set[str]:
        """Every image the structure set references (RT Referenced Series and each contour's images)."""
        uids = {u for s in self.referenced_series for u in s.image_uids}
        uids.update(u for r in self.rois for c in r.contours for u in c.image_uids)
        return uids

    def names(self) -> list[str]:
        return [r.name for r in self.rois]

    def roi(self, key: str | int) -> ROI:
        """The ROI of that number or name (names matched exactly, then case-insensitively)."""
        for r in self.rois:
            if (isinstance(key, int) and r.number == key) or r.name == key:
                return r
        if isinstance(key, str):
            for r in self.rois:
                if r.name.lower() == key.lower():
                    return r
            if key.isdigit():
                return self.roi(int(key))
        raise RTError(f"{self.name}: no ROI {key!r} (ROIs: {', '.join(self.names()) or 'none'})")


def _color(rc: Dataset, issues: list[str], name: str, label: str) -> tuple[int, int, int] | None:
    value = rc.get("ROIDisplayColor")
    if value is None or value == "":
        return None
    try:
        rgb = tuple(int(round(float(v))) for v in value)
    except (TypeError, ValueError):
        issues.append(f"{name}: {label} has an unreadable ROI Display Color ({value!r})")
        return None
    if len(rgb) != 3:
        issues.append(f"{name}: {label} ROI Display Color has {len(rgb)} values, not 3")
        return None
    return (min(max(rgb[0], 0), 255), min(max(rgb[1], 0), 255), min(max(rgb[2], 0), 255))


def _contour_data(item: Dataset) -> np.ndarray | str | None:
    """Contour Data (3006,0050) as floats, parsed straight from the raw bytes when pydicom has not converted
    it yet (converting tens of thousands of DS values one by one takes seconds); a str says what is wrong."""
    elem = item.get_item(0x30060050)
    if elem is None:
        return None
    value = elem.value
    if isinstance(elem, RawDataElement) and isinstance(value, (bytes, bytearray)):
        raw = bytes(value).replace(b"\x00", b" ").strip()
        if not raw:
            return None
        try:
            return np.array(raw.split(b"\\"), dtype=np.float64)
        except ValueError:
            pass  # fall back to pydicom's reading, which names the bad value
    try:
        value = item.ContourData
    except Exception as exc:  # noqa: BLE001 - a malformed value is reported, not raised
        return f"{type(exc).__name__}: {exc}"
    if value is None or value == "":
        return None
    seq = value if hasattr(value, "__len__") and not isinstance(value, str) else [value]
    if len(seq) == 0:
        return None
    try:
        return np.array([float(v) for v in seq], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return str(exc)


def _contours(rc: Dataset, issues: list[str], name: str, label: str) -> tuple[Contour, ...]:
    out: list[Contour] = []
    for index, item in enumerate(rc.get("ContourSequence") or []):
        where = f"{name}: {label}, contour {index + 1}"
        kind = text(item, "ContourGeometricType", "").upper()
        data = _contour_data(item)
        if data is None:
            issues.append(f"{where}: no Contour Data; left out")
            continue
        if isinstance(data, str):
            issues.append(f"{where}: Contour Data is not numeric ({data}); left out")
            continue
        if data.size % 3 or not np.all(np.isfinite(data)):
            issues.append(f"{where}: Contour Data has {data.size} values, not x/y/z triplets; left out")
            continue
        points = data.reshape(-1, 3)
        declared = item.get("NumberOfContourPoints")
        if declared not in (None, "") and int(declared) != len(points):
            issues.append(f"{where}: Number of Contour Points says {int(declared)}, Contour Data has {len(points)}")
        if not kind:
            issues.append(f"{where}: no Contour Geometric Type; taken as CLOSED_PLANAR")
            kind = CLOSED_PLANAR
        if kind == CLOSED_PLANAR and len(points) < 3:
            issues.append(f"{where}: CLOSED_PLANAR with {len(points)} point(s) encloses nothing; left out")
            continue
        number = item.get("ContourNumber")
        images = tuple(text(i, "ReferencedSOPInstanceUID") for i in item.get("ContourImageSequence") or [])
        contour = Contour(points, kind, index, int(number) if number not in (None, "") else None, images)
        if contour.closed and (spread := contour.planarity()) > PLANE_TOLERANCE_MM:
            issues.append(f"{where}: points off its plane (up to {spread:.2f} mm from it); it cannot be rasterised")
        out.append(contour)
    return tuple(out)
