"""Dose-volume histograms: computed from an RT Structure Set and an RT Dose, or read from the RT Dose's
DVH Sequence (PS3.3 C.8.8.4, RT DVH module).

**How a DVH is computed.** Each plane of an ROI's closed contours stands for a slab of the ROI's contour
spacing (:meth:`~hounsfield.rt.structure.ROI.slab_thickness`); the plane is sampled on the dose grid's
lattice, holes taken by the even-odd (XOR) rule (:mod:`hounsfield.rt.raster`). Every inside sample
carries the volume of its cell and the dose at it. Two samplings:

* ``method="supersample"`` (default): ``s x s`` samples per dose voxel (``s`` from ``supersample``;
  by default enough for ≤ 0.5 mm, at most 8), over the whole contour even where it leaves the dose grid,
  with the dose interpolated trilinearly (between frames and in the plane);
* ``method="centre"``: exactly dicompyler-core's ``dvhcalc.get_dvh``: dose voxel centres only, planes
  keyed by z rounded to 0.01 mm, slab = the smallest gap between the ROI's planes (0, hence no volume,
  for an ROI on one plane), the dose frame within 0.5 mm of the plane taken as is, else the plane
  interpolated between the two nearest frames, and the in-plane dose of the voxel itself; 1 cGy bins,
  and DxX read as dicompyler-core's ``DVH.dose_constraint`` does (the bin whose cumulative volume is
  nearest X: for a structure of a few tens of voxels it can differ from the interpolated D2 or D95 by
  the dose step between two voxels).

Part of an ROI outside the dose grid counts in its volume; as in dicompyler-core the histogram is scaled
to the whole volume (the outside part is assumed to have the inside's distribution) and a note says how
much was outside. Samples are binned at 1/65536 of the grid's maximum dose; Dmin, Dmax and Dmean are the
exact sample values, DxX and VxGy are read from the cumulative histogram, linear within a bin (except
DxX in the ``centre`` method, see above).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from hounsfield.rt.common import RTError, number, text
from hounsfield.rt.dose import DoseGrid
from hounsfield.rt.raster import fill, roi_planes, sample_offsets
from hounsfield.rt.structure import ROI, StructureSet

Method = Literal["supersample", "centre"]

#: Sub-sample spacing (mm) the default supersampling aims at.
TARGET_SAMPLE_MM = 0.5
MAX_SUPERSAMPLE = 8
_FINE_BINS = 65536
#: dicompyler-core's threshold (mm) for taking a dose frame as a contour's plane without interpolation.
DICOMPYLER_PLANE_THRESHOLD_MM = 0.5

_STATISTIC = re.compile(r"^\s*([DV])\s*(\d+(?:\.\d+)?)\s*(%|gy|cgy|cc|cm3)?\s*$", re.IGNORECASE)


@dataclass(eq=False)
class DVH:
    """A DVH: ``differential_cc[i]`` is the volume (cm³) whose dose lies in ``[edges[i], edges[i+1])`` Gy.

    ``volume_cc`` is the ROI's volume; ``covered_cc`` the part inside the dose grid. ``source`` says how
    it was obtained (``computed/supersample 5x5``, ``computed/centre``, ``stored``).
    """

    roi_number: int
    roi_name: str
    edges: np.ndarray
    differential_cc: np.ndarray
    volume_cc: float
    min_gy: float
    mean_gy: float
    max_gy: float
    source: str
    covered_cc: float = math.nan
    dose_units: str = "GY"
    volume_units: str = "CM3"
    color: tuple[int, int, int] | None = None
    notes: list[str] = field(default_factory=list)
    #: How DxX is read: ``interpolate`` (linear in the cumulative DVH) or ``nearest`` (dicompyler-core's
    #: ``dose_constraint``: the lower edge of the bin whose cumulative volume is nearest X).
    dx_rule: str = "interpolate"

    # -- curves -----------------------------------------------------------------------------------------
    @property
    def cumulative_cc(self) -> np.ndarray:
        """Volume (cm³) receiving at least ``edges[i]``, one value per edge (the last is 0)."""
        return np.concatenate((np.cumsum(self.differential_cc[::-1])[::-1], [0.0]))

    @property
    def total(self) -> float:
        return float(self.differential_cc.sum())

    @property
    def cumulative_pct(self) -> np.ndarray:
        """Cumulative relative volume (%) at each edge."""
        total = self.total
        return self.cumulative_cc * (100.0 / total) if total > 0 else np.zeros(self.edges.size)

    @property
    def differential_pct(self) -> np.ndarray:
        total = self.total
        return self.differential_cc * (100.0 / total) if total > 0 else np.zeros(self.differential_cc.size)

    def curve(self, bin_width: float = 0.01, relative: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The cumulative DVH resampled every ``bin_width`` Gy from 0 to just past Dmax: (dose, volume %
        or cm³)."""
        top = max(self.max_gy, float(self.edges[-1]) if self.total == 0 else self.max_gy)
        n = int(math.floor(top / bin_width)) + 2
        dose = np.arange(n) * bin_width
        cum = self.cumulative_pct if relative else self.cumulative_cc
        return dose, np.interp(dose, self.edges, cum, right=0.0)

    # -- statistics ----------------------------------------------------------------------------------------
    def dose_at_volume(self, volume: float, *, absolute: bool = False) -> float:
        """D at ``volume`` (% of the ROI, or cm³ with ``absolute``): the dose at least that volume receives."""
        total = self.total
        if total <= 0:
            return 0.0
        pct = volume * 100.0 / total if absolute else float(volume)
        if pct <= 0:
            return self.max_gy
        if pct >= 100:
            return self.min_gy
        cum = self.cumulative_pct
        if self.dx_rule == "nearest":
            return float(self.edges[int(np.argmin(np.abs(cum[:-1] - pct)))])
        # cum decreases with dose: the last edge where it is still >= pct, then linear to the next
        above = np.flatnonzero(cum >= pct)
        i = int(above[-1])
        if i >= len(cum) - 1:
            return float(self.edges[-1])
        c0, c1 = cum[i], cum[i + 1]
        f = 0.0 if c0 == c1 else (c0 - pct) / (c0 - c1)
        d = float(self.edges[i] + f * (self.edges[i + 1] - self.edges[i]))
        return float(min(max(d, self.min_gy), self.max_gy))

    def volume_at_dose(self, dose_gy: float, *, relative: bool = False) -> float:
        """V at ``dose_gy``: the volume (cm³, or % with ``relative``) receiving at least that dose."""
        cum = self.cumulative_pct if relative else self.cumulative_cc * (self.volume_cc / self.total
                                                                          if self.total > 0 and math.isfinite(self.volume_cc) else 1.0)
        return float(np.interp(dose_gy, self.edges, cum, right=0.0))

    def statistic(self, name: str, prescription_gy: float | None = None) -> float:
        """A named statistic: ``D95`` / ``D95%`` (Gy at 95 % of the volume), ``D2cc`` (Gy at 2 cm³),
        ``V20Gy`` (cm³ receiving ≥ 20 Gy), ``V20Gy%``-style needs: ``V95%`` (% of the volume receiving ≥ 95 %
        of ``prescription_gy``), ``V2000cGy``; ``Dmin``, ``Dmean``, ``Dmax``."""
        key = name.strip().lower()
        if key in ("dmin", "min"):
            return self.min_gy
        if key in ("dmean", "mean"):
            return self.mean_gy
        if key in ("dmax", "max"):
            return self.max_gy
        m = _STATISTIC.match(name)
        if not m:
            raise ValueError(f"unknown DVH statistic {name!r} (D95, D2cc, V20Gy, V95%, Dmean…)")
        kind, value, unit = m.group(1).upper(), float(m.group(2)), (m.group(3) or "").lower()
        if kind == "D":
            if unit in ("cc", "cm3"):
                return self.dose_at_volume(value, absolute=True)
            return self.dose_at_volume(value)
        if unit == "%":
            if not prescription_gy:
                raise ValueError(f"{name}: a V in % of the prescription needs the prescription dose")
            return self.volume_at_dose(value / 100.0 * prescription_gy, relative=True)
        if unit == "cgy":
            value /= 100.0
        elif unit != "gy":
            raise ValueError(f"{name}: say V{m.group(2)}Gy (cm³) or V{m.group(2)}% (of the prescription)")
        return self.volume_at_dose(value)

    @property
    def d98(self) -> float:
        return self.dose_at_volume(98)

    @property
    def d95(self) -> float:
        return self.dose_at_volume(95)

    @property
    def d50(self) -> float:
        return self.dose_at_volume(50)

    @property
    def d2(self) -> float:
        return self.dose_at_volume(2)

    def summary(self, bin_width: float = 0.01) -> dict[str, object]:
        """The JSON shape of ``hounsfield rt dvh --out x.json``, one ROI."""
        dose, pct = self.curve(bin_width)
        return {"number": self.roi_number, "name": self.roi_name, "volume_cc": _r(self.volume_cc),
                "min_gy": _r(self.min_gy), "mean_gy": _r(self.mean_gy), "max_gy": _r(self.max_gy),
                "d98_gy": _r(self.d98), "d95_gy": _r(self.d95), "d50_gy": _r(self.d50), "d2_gy": _r(self.d2),
                "dose_gy": [round(float(d), 6) for d in dose], "volume_pct": [round(float(v), 4) for v in pct]}


def _r(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 6)


def default_supersample(dose: DoseGrid) -> int:
    """Samples per voxel side for ≤ :data:`TARGET_SAMPLE_MM` spacing, 1 to :data:`MAX_SUPERSAMPLE`."""
    return int(min(max(math.ceil(max(dose.grid.pixel_spacing) / TARGET_SAMPLE_MM - 1e-9), 1), MAX_SUPERSAMPLE))


def structure_set_spacing(structure_set: StructureSet, dose: DoseGrid) -> float | None:
    """The most common contour spacing over the structure set's ROIs (the slab of a one-plane ROI)."""
    values = [t for r in structure_set.rois if not r.empty and (t := r.slab_thickness(dose.grid.normal))]
    if not values:
        return None
    uniq, counts = np.unique(np.round(values, 2), return_counts=True)
    return float(uniq[np.argmax(counts)])


def compute_dvh(roi: ROI, dose: DoseGrid, *, method: Method = "supersample", supersample: int | None = None,
                thickness: float | None = None) -> DVH:
    """The DVH of one ROI on ``dose`` (see the module docstring for the two methods).

    ``thickness`` is the slab (mm) of a one-plane ROI in the default method (the structure set's contour
    spacing when called through :func:`compute_dvhs`). Raises :class:`RTError` naming the ROI and the cause
    when there is nothing to compute: no closed contours, contours off their plane or oblique to the dose
    grid, or no part of the ROI inside the dose grid.
    """
    where = f"{roi.structure_set}: {roi.label}"
    if dose.grid.shape[0] == 0 or dose.values.size == 0:
        raise RTError(f"{dose.name}: empty dose grid")
    if roi.empty:
        kinds = ", ".join(f"{n} {k}" for k, n in roi.geometric_types().items())
        raise RTError(f"{where}: no closed contours ({kinds or 'no contours at all'}): no volume, no DVH")
    centre = method == "centre"
    if method not in ("supersample", "centre"):
        raise ValueError(f"unknown DVH method {method!r} (supersample or centre)")
    planes = roi_planes(roi, dose.grid, decimals=2 if centre else None)
    ws = np.array([p.w for p in planes])
    if centre:
        slab = float(np.diff(ws).min()) if ws.size > 1 else 0.0
        s = 1
    else:
        slab = roi.slab_thickness(dose.grid.normal) or thickness or abs(dose.grid.slice_step) or 1.0
        s = int(supersample) if supersample else default_supersample(dose)
        if s < 1:
            raise ValueError(f"supersample must be at least 1, not {supersample}")
    dr, dc = dose.grid.pixel_spacing
    cell_cc = (dr / s) * (dc / s) * slab / 1000.0
    top = max(dose.max, 1e-9)
    # dicompyler-core bins at 1 cGy up to the grid's maximum; the default at 1/65536 of it
    bin_width = 0.01 if centre else top / _FINE_BINS
    nbins = int(top / bin_width) + 1
    hist = np.zeros(nbins, dtype=np.int64)
    count = covered = 0
    lo, hi, total = math.inf, -math.inf, 0.0
    _, ny, nx = dose.grid.shape
    for plane in planes:
        rows, cols = _lattice(plane, ny, nx, s, clip=centre)
        if rows.size == 0 or cols.size == 0:
            continue
        inside = fill(plane.polygons, rows, cols)
        n_in = int(inside.sum())
        if n_in == 0:
            continue
        count += n_in
        if centre:
            dp = dose.plane(plane.w, nearest_within=DICOMPYLER_PLANE_THRESHOLD_MM)
            if dp is None:
                continue
            d = dp[np.ix_(rows.astype(np.int64), cols.astype(np.int64))][inside].astype(np.float64)
        else:
            dp = dose.plane(plane.w)
            if dp is None:
                continue
            d = _bilinear(dp, rows, cols, inside)
        if d.size == 0:
            continue
        covered += d.size
        lo, hi, total = min(lo, float(d.min())), max(hi, float(d.max())), total + float(d.sum(dtype=np.float64))
        scaled = d * 100.0 if centre else d * np.float32(1.0 / bin_width)
        idx = np.clip(scaled, 0, nbins - 1).astype(np.int64)  # truncation is floor for the non-negative
        hist += np.bincount(idx, minlength=nbins)
    volume = count * cell_cc
    label = "centre" if centre else f"supersample {s}x{s}"
    if covered == 0:
        if count == 0:
            raise RTError(f"{where}: its contours enclose no sample of the dose grid's lattice "
                          f"(slab {slab:g} mm; an ROI on a single plane has no volume in this method)"
                          if centre else f"{where}: its contours enclose no sample point")
        raise RTError(f"{where}: lies entirely outside the dose grid of {dose.name}")
    last = int(np.flatnonzero(hist)[-1]) + 1
    edges = np.arange(last + 1, dtype=np.float64) * bin_width
    diff = hist[:last].astype(np.float64) * (volume / covered)
    notes = []
    if covered < count:
        notes.append(f"{(count - covered) * cell_cc:.3f} cm³ of {roi.label} outside the dose grid; "
                     "the histogram is scaled to the whole volume")
    return DVH(roi.number, roi.name, edges, diff, volume, lo, total / covered, hi, f"computed/{label}",
               covered * cell_cc, dose.units or "GY", "CM3", roi.color, notes,
               "nearest" if centre else "interpolate")


def compute_dvhs(structure_set: StructureSet, dose: DoseGrid, rois: Iterable[str | int] | None = None, *,
                 method: Method = "supersample", supersample: int | None = None,
                 errors: list[str] | None = None) -> list[DVH]:
    """DVHs of the ROIs named (all ROIs with closed contours by default), in structure set order.

    An ROI that cannot be computed raises, unless ``errors`` is given: then its message is appended there
    and the other ROIs are still computed. An unknown ROI name always raises.
    """
    chosen = [structure_set.roi(k) for k in rois] if rois is not None else [r for r in structure_set.rois]
    explicit = rois is not None
    spacing = structure_set_spacing(structure_set, dose)
    out: list[DVH] = []
    for roi in chosen:
        if roi.empty and not explicit:
            if errors is not None:
                errors.append(f"{structure_set.name}: {roi.label} has no closed contours; no DVH")
            continue
        try:
            out.append(compute_dvh(roi, dose, method=method, supersample=supersample, thickness=spacing))
        except RTError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    return out


def _lattice(plane, ny: int, nx: int, s: int, clip: bool) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Sample rows and columns (continuous indices) covering the plane's polygons."""
    rmin, rmax, cmin, cmax = plane.bounds()
    j0, j1 = int(math.floor(rmin)) - 1, int(math.ceil(rmax)) + 1
    i0, i1 = int(math.floor(cmin)) - 1, int(math.ceil(cmax)) + 1
    if clip:
        j0, j1, i0, i1 = max(j0, 0), min(j1, ny - 1), max(i0, 0), min(i1, nx - 1)
    if j0 > j1 or i0 > i1:
        return np.empty(0), np.empty(0)
    off = sample_offsets(s)
    rows = (np.arange(j0, j1 + 1)[:, None] + off[None, :]).ravel()
    cols = (np.arange(i0, i1 + 1)[:, None] + off[None, :]).ravel()
    return rows, cols


def _bilinear(plane: np.ndarray, rows: np.ndarray, cols: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Bilinear dose of ``plane`` at the inside lattice points that lie on the grid (within half a voxel
    of the outer centres, edge values beyond the centres); points off the grid dropped.

    The lattice is regular, so the interpolation is separable: along the columns for the lattice rows
    that hold inside points, then along the rows; only rows and columns with inside points are computed.
    """
    ny, nx = plane.shape
    rsel = np.flatnonzero(((rows >= -0.5) & (rows <= ny - 0.5)) & inside.any(axis=1))
    csel = np.flatnonzero(((cols >= -0.5) & (cols <= nx - 0.5)) & inside.any(axis=0))
    if rsel.size == 0 or csel.size == 0:
        return np.empty(0, dtype=np.float32)
    r, c = np.clip(rows[rsel], 0, ny - 1), np.clip(cols[csel], 0, nx - 1)
    r0 = np.minimum(np.floor(r).astype(np.int64), max(ny - 2, 0))
    c0 = np.minimum(np.floor(c).astype(np.int64), max(nx - 2, 0))
    fr, fc = (r - r0).astype(np.float32)[:, None], (c - c0).astype(np.float32)[None, :]
    r1, c1 = np.minimum(r0 + 1, ny - 1), np.minimum(c0 + 1, nx - 1)
    cmin, cmax = int(c0.min()), int(c1.max()) + 1
    sub = np.ascontiguousarray(plane[:, cmin:cmax], dtype=np.float32)
    top, bottom = sub[r0], sub[r1]
    bottom -= top
    bottom *= fr
    top += bottom  # (selected rows, columns of sub): interpolated between rows
    left, right = top[:, c0 - cmin], top[:, c1 - cmin]
    right -= left
    right *= fc
    left += right
    return left[inside[np.ix_(rsel, csel)]]


def stored_dvhs(ds: Dataset | None) -> dict[int, DVH]:
    """The DVHs of an RT Dose's DVH Sequence (PS3.3 C.8.8.4), keyed by referenced ROI number.

    DVH Data holds (bin width, volume) pairs in DVH Dose Scaling x Dose Units and DVH Volume Units;
    cumulative, differential and natural (per unit dose) DVHs are all turned into a differential DVH.
    """
    out: dict[int, DVH] = {}
    if ds is None:
        return out
    for item in ds.get("DVHSequence") or []:
        refs = item.get("DVHReferencedROISequence") or []
        if not refs or refs[0].get("ReferencedROINumber") in (None, ""):
            continue
        number_ = int(refs[0].ReferencedROINumber)
        raw = item.get("DVHData")
        if raw is None:
            continue
        try:
            data = np.array([float(v) for v in raw], dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if data.size < 2 or data.size % 2:
            continue
        scaling = number(item, "DVHDoseScaling") or 1.0
        widths, volumes = data[0::2] * scaling, data[1::2]
        edges = np.concatenate(([0.0], np.cumsum(widths)))
        kind = text(item, "DVHType", "CUMULATIVE").upper()
        if kind == "CUMULATIVE":
            diff = np.abs(np.diff(np.append(volumes, 0.0)))
        elif kind == "NATURAL":
            diff = volumes * widths
        else:
            diff = volumes.copy()
        nz = np.flatnonzero(diff > 0)
        mins = number(item, "DVHMinimumDose")
        maxs = number(item, "DVHMaximumDose")
        mean = number(item, "DVHMeanDose")
        if nz.size:
            centres = 0.5 * (edges[1:] + edges[:-1])
            mins = mins if mins is not None else float(edges[nz[0]])
            maxs = maxs if maxs is not None else float(edges[nz[-1] + 1])
            mean = mean if mean is not None else float((centres * diff).sum() / diff.sum())
        units = text(item, "DVHVolumeUnits", "CM3").upper()
        volume = float(diff.sum()) if units == "CM3" else math.nan
        out[number_] = DVH(number_, "", edges, diff, volume, mins or 0.0, mean or 0.0, maxs or 0.0, "stored",
                           volume, text(item, "DoseUnits", "GY").upper(), units)
    return out


def matching_stored(dvhs: Sequence[DVH], dose: DoseGrid, structure_set: StructureSet | None = None) -> dict[int, DVH]:
    """The stored DVHs of ``dose`` for the ROIs of ``dvhs``, named after them."""
    stored = stored_dvhs(dose.dataset)
    out = {}
    for d in dvhs:
        if d.roi_number in stored:
            s = stored[d.roi_number]
            s.roi_name = d.roi_name
            out[d.roi_number] = s
    return out
