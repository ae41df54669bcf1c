"""An RT Structure Set and an RT Dose as volumes on the grid of their CT series, for deep learning: a label map
(one label per ROI), one mask per ROI, and the dose in Gy, voxel for voxel with the HU volume.

**Labels.** Label ``k`` (1, 2, …; 0 is background) is the k-th ROI of the list: the ROIs with closed contours
in ascending ROI Number (PS3.3 C.8.8.5 Structure Set ROI Sequence), or the ROIs asked for, in that order.
Masks come from :func:`hounsfield.rt.raster.roi_mask` (holes by the even-odd rule, the XOR of PS3.3
C.8.8.6 readers). ROIs overlap (a PTV inside its BODY): in the one label map a voxel takes the **last** ROI
of the list that holds it (:data:`OVERLAP_RULE`); the per-ROI masks keep every ROI whole, and
``hidden_voxels`` says how much of each ROI a later one covers in the label map.

**Dose.** The RT Dose (PS3.3 C.8.8.3) resampled trilinearly onto the CT voxel centres
(:meth:`hounsfield.rt.dose.DoseGrid.resample`), in its Dose Units (Gy unless the object says RELATIVE);
voxels outside the dose grid get 0 and are counted.

Both must share the series' Frame of Reference (PS3.3 C.7.4.1): there is no registration here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hounsfield.rt.common import RTError
from hounsfield.rt.dose import DoseGrid
from hounsfield.rt.grid import CTSeries
from hounsfield.rt.raster import DEFAULT_MASK_SUPERSAMPLE, Method, roi_mask
from hounsfield.rt.structure import ROI, StructureSet

OVERLAP_RULE = ("label k is the k-th ROI of 'rois' (ascending ROI Number unless chosen with --roi); a voxel in "
                "several ROIs takes the last of them, the highest label; the npz 'masks' keep every ROI whole, "
                "and each ROI's hidden_voxels counts its voxels that a later ROI covers in the label map")
#: Value of the dose volume outside the dose grid.
OUTSIDE_DOSE = 0.0


@dataclass(frozen=True)
class LabelledROI:
    """One ROI of a label map: its label, what the structure set says of it, and its voxel counts."""

    label: int
    number: int
    name: str
    color: tuple[int, int, int] | None
    interpreted_type: str
    voxels: int
    hidden_voxels: int

    def describe(self) -> dict[str, object]:
        return {"label": self.label, "roi_number": self.number, "name": self.name,
                "color": list(self.color) if self.color else None, "interpreted_type": self.interpreted_type,
                "voxels": self.voxels, "hidden_voxels": self.hidden_voxels}


@dataclass(eq=False)
class LabelMap:
    """``labels[slice, row, column]`` (uint8, uint16 beyond 255 ROIs) and ``masks[roi, slice, row, column]``."""

    labels: np.ndarray
    masks: np.ndarray
    rois: list[LabelledROI]
    sampling: str
    structure_set: StructureSet
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, object]:
        """The sidecar's account of the labels: their names, the overlap rule, the sampling, what was left out."""
        rs = self.structure_set
        return {"structure_set": {"file": rs.name, "sop_instance_uid": rs.sop_instance_uid, "label": rs.label},
                "labels": {"0": "background", **{str(r.label): r.name for r in self.rois}},
                "rois": [r.describe() for r in self.rois], "overlap_rule": OVERLAP_RULE,
                "sampling": self.sampling, "notes": self.notes}


@dataclass(eq=False)
class DoseVolume:
    """The dose on the series' voxel centres, ``values[slice, row, column]`` float32 in :attr:`units`."""

    values: np.ndarray
    dose: DoseGrid
    outside_voxels: int
    notes: list[str] = field(default_factory=list)

    @property
    def units(self) -> str:
        return self.dose.units or "GY"

    def describe(self) -> dict[str, object]:
        return {"dose": {"file": self.dose.name, "sop_instance_uid": self.dose.sop_instance_uid, "units": self.units,
                         "dose_type": self.dose.dose_type, "summation_type": self.dose.summation_type,
                         "interpolation": "trilinear", "outside_voxels": self.outside_voxels,
                         "outside_value": OUTSIDE_DOSE, "grid_maximum": round(self.dose.max, 6),
                         "notes": self.notes}}


def chosen_rois(structure_set: StructureSet, keys: Sequence[str] | None) -> tuple[list[ROI], list[str]]:
    """The ROIs to label, in label order, and a note for each ROI left out. Asked-for ROIs (names or numbers)
    must have closed contours; by default those without any are left out (POINT and OPEN contours enclose
    nothing, PS3.3 C.8.8.6)."""
    if keys:
        chosen: list[ROI] = []
        for key in keys:
            roi = structure_set.roi(key)
            if roi.empty:
                raise RTError(f"{structure_set.name}: {roi.label} has no closed contours, so no voxels to label")
            if all(roi is not other for other in chosen):
                chosen.append(roi)
        return chosen, []
    chosen, notes = [], []
    for roi in sorted(structure_set.rois, key=lambda r: r.number):
        if roi.empty:
            kinds = ", ".join(f"{n} {kind}" for kind, n in roi.geometric_types().items()) or "no contours"
            notes.append(f"{structure_set.name}: {roi.label} has no closed contours ({kinds}); not in the label map")
        else:
            chosen.append(roi)
    if not chosen:
        raise RTError(f"{structure_set.name}: no ROI has closed contours, so there is nothing to label")
    return chosen, notes


def label_map(structure_set: StructureSet, series: CTSeries, rois: Sequence[str] | None = None, *,
              method: Method = "supersample", supersample: int | None = None) -> LabelMap:
    """The label map and masks of ``structure_set`` on ``series`` (see the module docstring for the rules)."""
    series.require_frame_of_reference(structure_set.frame_of_reference_uid, structure_set.name)
    chosen, notes = chosen_rois(structure_set, rois)
    shape = series.grid.shape
    masks = np.zeros((len(chosen), *shape), dtype=bool)
    labels = np.zeros(shape, dtype=np.uint8 if len(chosen) < 256 else np.uint16)
    for n, roi in enumerate(chosen):
        masks[n] = roi_mask(roi, series.grid, method=method, supersample=supersample)
        labels[masks[n]] = n + 1
        if not masks[n].any():
            notes.append(f"{structure_set.name}: {roi.label} covers no voxel of the series")
    entries = [LabelledROI(n + 1, roi.number, roi.name, roi.color, roi.interpreted_type, int(masks[n].sum()),
                           int(np.count_nonzero(masks[n] & (labels != n + 1)))) for n, roi in enumerate(chosen)]
    if method == "centre":
        sampling = "a voxel is in an ROI when its centre is (dicompyler-core's rule); holes by the even-odd rule"
    else:
        s = supersample or DEFAULT_MASK_SUPERSAMPLE
        sampling = (f"{s} x {s} samples per voxel, a voxel is in an ROI when at least half of them are; "
                    "holes by the even-odd rule")
    return LabelMap(labels, masks, entries, sampling, structure_set, notes)


def dose_volume(dose: DoseGrid, series: CTSeries) -> DoseVolume:
    """``dose`` resampled trilinearly onto every voxel centre of ``series``; 0 outside the dose grid."""
    series.require_frame_of_reference(dose.frame_of_reference_uid, dose.name)
    values = dose.resample(series, fill=np.nan)
    outside = np.isnan(values)
    values[outside] = OUTSIDE_DOSE
    count = int(outside.sum())
    notes = list(dose.issues)
    if count:
        notes.append(f"{dose.name}: {count} of {values.size} voxels ({100 * count / values.size:.1f} %) are outside "
                     f"the dose grid; their dose is {OUTSIDE_DOSE:g}")
    return DoseVolume(values, dose, count, notes)


#: The npz keys :func:`volume_arrays` adds, as the sidecar and the README describe them.
NPZ_KEYS = {
    "labels": "label map, (slice, row, column), uint8 (uint16 beyond 255 ROIs), 0 background; see rois",
    "masks": "one mask per ROI, (roi, slice, row, column) bool, channel k-1 for label k, overlaps kept",
    "roi_labels": "label of each ROI, in mask order",
    "roi_numbers": "ROI Number (3006,0022) of each ROI, in mask order",
    "roi_names": "ROI Name (3006,0026) of each ROI, in mask order",
    "dose": "dose on the CT voxel centres, (slice, row, column) float32, in dose.units (Gy), trilinear",
}


def volume_arrays(labels: LabelMap | None, dose: DoseVolume | None, *, per_roi: bool) -> dict[str, np.ndarray]:
    """The arrays that go beside the HU volume: ``labels`` and ``dose``, and with ``per_roi`` (the npz, which
    holds arrays of any shape) the masks and the ROI tables too (:data:`NPZ_KEYS`)."""
    out: dict[str, np.ndarray] = {}
    if labels is not None:
        out["labels"] = labels.labels
        if per_roi:
            out["masks"] = labels.masks
            out["roi_labels"] = np.array([r.label for r in labels.rois], dtype=np.int32)
            out["roi_numbers"] = np.array([r.number for r in labels.rois], dtype=np.int32)
            out["roi_names"] = np.array([r.name for r in labels.rois], dtype=str)
    if dose is not None:
        out["dose"] = dose.values
    return out


def describe(series: CTSeries, labels: LabelMap | None, dose: DoseVolume | None) -> dict[str, object]:
    """The RT part of an export's sidecar: the series, then what :meth:`LabelMap.describe` and
    :meth:`DoseVolume.describe` say."""
    out: dict[str, object] = {"series": {"series_instance_uid": series.series_uid, "study_instance_uid": series.study_uid,
                                         "frame_of_reference_uid": series.frame_of_reference_uid}}
    if labels is not None:
        out.update(labels.describe())
    if dose is not None:
        out.update(dose.describe())
    return out
