"""RT Dose grids (PS3.3 C.8.8.3, RT Dose module) in Gy, their geometry, and dose at any point.

The stored pixel values times Dose Grid Scaling (3004,000E) are the dose in Dose Units (3004,0002):
``GY`` or ``RELATIVE``. Dose Type (PHYSICAL, EFFECTIVE, ERROR) and Dose Summation Type (PLAN, BEAM,
FRACTION…) are kept as given.

Frames lie along the slice normal at the distances of Grid Frame Offset Vector (3004,000C), which
PS3.3 C.8.8.3.2 allows in two forms, both read here:

* *relative*: the first offset is 0 and each offset is the distance (mm) of its frame from the first
  frame's Image Position (Patient), along the normal (row cosines x column cosines);
* *absolute*: the first offset equals the z of Image Position (Patient) and the offsets are the frames'
  z coordinates; only valid for axial frames (Image Orientation (Patient) 1\\0\\0\\0\\1\\0).

Dose between voxel centres is trilinear. A point within half a voxel outside the outermost centres takes
the edge value; beyond that it is outside the grid (``nan`` unless told otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from hounsfield.rt.common import RTError, Source, floats, number, object_name, read_rt, text
from hounsfield.rt.grid import CTSeries, Grid, orientation_of, position_of, spacing_of

#: Half-thickness (mm) of the single plane of a one-frame dose grid without Slice Thickness; it is also
#: dicompyler-core's threshold for taking a dose frame as the plane of a contour.
SINGLE_FRAME_HALF_THICKNESS_MM = 0.5


@dataclass(eq=False)
class DoseGrid:
    """The dose of an RT Dose object, ``values[frame, row, column]`` in :attr:`units` (float32)."""

    name: str
    sop_instance_uid: str
    frame_of_reference_uid: str
    grid: Grid
    values: np.ndarray
    units: str  # GY or RELATIVE
    dose_type: str
    summation_type: str
    scaling: float
    offset_form: str  # "relative", "absolute" or "single frame"
    referenced_plan_uids: tuple[str, ...] = ()
    referenced_fraction_group: int | None = None
    referenced_beams: tuple[int, ...] = ()
    study_uid: str = ""
    issues: list[str] = field(default_factory=list)
    dataset: Dataset | None = None

    @classmethod
    def read(cls, source: Source) -> DoseGrid:
        """Read an RTDOSE file or Dataset; anything unusable raises :class:`RTError` naming it."""
        ds = read_rt(source, "RTDOSE")
        return cls.from_dataset(ds)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> DoseGrid:
        name = object_name(ds)
        issues: list[str] = []
        if "PixelData" not in ds:
            raise RTError(f"{name}: RT Dose without Pixel Data (a DVH-only dose has no grid)")
        row, col = orientation_of(ds, name)
        ipp = position_of(ds, name)
        spacing = spacing_of(ds, name)
        frames = int(ds.get("NumberOfFrames") or 1)
        scaling = number(ds, "DoseGridScaling")
        if scaling is None:
            issues.append(f"{name}: no Dose Grid Scaling; taken as 1")
            scaling = 1.0
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a one-line cause
            raise RTError(f"{name}: cannot decode the dose pixels ({type(exc).__name__}: {exc})") from None
        pixels = np.asarray(pixels).reshape(frames, int(ds.Rows), int(ds.Columns))
        values = (pixels.astype(np.float64) * scaling).astype(np.float32)
        offsets, form = _frame_offsets(ds, name, ipp, row, col, frames, issues)
        thickness = number(ds, "SliceThickness") or 2 * SINGLE_FRAME_HALF_THICKNESS_MM
        if frames == 1:
            issues.append(f"{name}: a single dose frame (at {ipp[2]:.2f} mm along the normal): the dose is known "
                          f"on that plane only, {thickness / 2:.2f} mm either side")
        grid = Grid((frames, int(ds.Rows), int(ds.Columns)), ipp, row, col, spacing, offsets, thickness, name)
        units = text(ds, "DoseUnits").upper()
        if units not in ("GY", "RELATIVE"):
            issues.append(f"{name}: Dose Units {units or 'absent'} (GY or RELATIVE expected)")
        plans, group, beams = [], None, []
        for ref in ds.get("ReferencedRTPlanSequence") or []:
            plans.append(text(ref, "ReferencedSOPInstanceUID"))
            for fg in ref.get("ReferencedFractionGroupSequence") or []:
                if group is None and fg.get("ReferencedFractionGroupNumber") not in (None, ""):
                    group = int(fg.ReferencedFractionGroupNumber)
                beams += [int(b.ReferencedBeamNumber) for b in fg.get("ReferencedBeamSequence") or []
                          if b.get("ReferencedBeamNumber") not in (None, "")]
        return cls(name, text(ds, "SOPInstanceUID"), text(ds, "FrameOfReferenceUID"), grid, values, units,
                   text(ds, "DoseType"), text(ds, "DoseSummationType"), float(scaling), form, tuple(plans),
                   group, tuple(beams), text(ds, "StudyInstanceUID"), issues, ds)

    @property
    def max(self) -> float:
        return float(self.values.max()) if self.values.size else 0.0

    @property
    def affine(self) -> np.ndarray:
        """Voxel ``(frame, row, column, 1)`` to patient ``(x, y, z, 1)`` (see :attr:`Grid.affine`)."""
        return self.grid.affine

    def half_extent(self) -> float:
        """Half the slab (mm) of a single frame; for several frames, half the end steps."""
        return self.grid.thickness / 2 if self.grid.shape[0] == 1 else abs(self.grid.slice_step) / 2

    def frame_index(self, w: np.ndarray) -> np.ndarray:
        """Continuous frame index of distances ``w`` along the normal; ``nan`` outside the grid."""
        w = np.asarray(w, dtype=np.float64)
        g = self.grid
        if g.shape[0] == 1:
            return np.where(np.abs(w - g.offsets[0]) <= self.half_extent() + 1e-9, 0.0, np.nan)
        k = g.slice_index(w)
        n = g.shape[0]
        return np.where((k >= -0.5 - 1e-9) & (k <= n - 0.5 + 1e-9), np.clip(k, 0, n - 1), np.nan)

    def sample(self, points: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Trilinear dose at (n, 3) patient points; ``fill`` outside the grid."""
        wvu = self.grid.plane_coordinates(points)
        k = self.frame_index(wvu[:, 0])
        return self._trilinear(k, wvu[:, 1], wvu[:, 2], fill)

    def dose_at(self, point: tuple[float, float, float] | np.ndarray) -> float:
        """Dose (in :attr:`units`) at one patient point (mm); ``nan`` outside the grid."""
        return float(self.sample(np.asarray(point, dtype=np.float64).reshape(1, 3))[0])

    def _trilinear(self, k: np.ndarray, j: np.ndarray, i: np.ndarray, fill: float) -> np.ndarray:
        nk, nj, ni = self.grid.shape
        out = np.full(k.shape, fill, dtype=np.float64)
        ok = np.isfinite(k) & (j >= -0.5) & (j <= nj - 0.5) & (i >= -0.5) & (i <= ni - 0.5)
        if not ok.any():
            return out
        kk, jj, ii = (np.clip(a[ok], 0, n - 1) for a, n in ((k, nk), (j, nj), (i, ni)))
        k0, j0, i0 = (np.minimum(np.floor(a).astype(np.int64), max(n - 2, 0)) for a, n in ((kk, nk), (jj, nj), (ii, ni)))
        fk, fj, fi = kk - k0, jj - j0, ii - i0
        k1, j1, i1 = np.minimum(k0 + 1, nk - 1), np.minimum(j0 + 1, nj - 1), np.minimum(i0 + 1, ni - 1)
        v = self.values
        c00 = v[k0, j0, i0] * (1 - fi) + v[k0, j0, i1] * fi
        c01 = v[k0, j1, i0] * (1 - fi) + v[k0, j1, i1] * fi
        c10 = v[k1, j0, i0] * (1 - fi) + v[k1, j0, i1] * fi
        c11 = v[k1, j1, i0] * (1 - fi) + v[k1, j1, i1] * fi
        out[ok] = (c00 * (1 - fj) + c01 * fj) * (1 - fk) + (c10 * (1 - fj) + c11 * fj) * fk
        return out

    def plane(self, w: float, *, nearest_within: float | None = None) -> np.ndarray | None:
        """The dose plane at distance ``w`` (mm) along the normal, linear between frames; None outside.

        With ``nearest_within``, a frame closer than that is returned as is and a plane beyond the first or
        last frame is outside (dicompyler-core's ``GetDoseGrid``, threshold 0.5 mm).
        """
        g = self.grid
        if nearest_within is not None:
            d = np.abs(g.offsets - w)
            nearest = int(np.argmin(d))
            if d[nearest] < nearest_within:
                return self.values[nearest]
            if w < g.offsets.min() or w > g.offsets.max():
                return None
            order = np.argsort(d)
            ub, lb = int(order[0]), int(order[1])
            fz = (w - g.offsets[lb]) / (g.offsets[ub] - g.offsets[lb])
            return (fz * self.values[ub] + (1.0 - fz) * self.values[lb]).astype(np.float32)
        k = float(self.frame_index(np.array([w]))[0])
        if not np.isfinite(k):
            return None
        k0 = min(int(np.floor(k)), max(g.shape[0] - 2, 0))
        f = k - k0
        if g.shape[0] == 1 or f <= 0:
            return self.values[k0]
        return ((1 - f) * self.values[k0] + f * self.values[k0 + 1]).astype(np.float32)

    def resample(self, target: Grid | CTSeries, fill: float = 0.0) -> np.ndarray:
        """Trilinear dose on every voxel centre of ``target`` (a CT series or any grid), ``target.shape``
        float32; ``fill`` outside the dose grid."""
        grid = target.grid if isinstance(target, CTSeries) else target
        out = np.empty(grid.shape, dtype=np.float32)
        for k in range(grid.shape[0]):
            out[k] = self.resample_slice(grid, k, fill)
        return out

    def resample_slice(self, target: Grid | CTSeries, k: int = 0, fill: float = 0.0) -> np.ndarray:
        """Trilinear dose on the voxel centres of slice ``k`` of ``target`` (rows x columns float32)."""
        grid = target.grid if isinstance(target, CTSeries) else target
        _, ny, nx = grid.shape
        jj, ii = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
        idx = np.column_stack((np.full(jj.size, float(k)), jj.ravel(), ii.ravel()))
        pts = grid.index_to_patient(idx)
        return self.sample(pts, fill).reshape(ny, nx).astype(np.float32)


def _frame_offsets(ds: Dataset, name: str, ipp: np.ndarray, row: np.ndarray, col: np.ndarray, frames: int,
                   issues: list[str]) -> tuple[np.ndarray, str]:
    """Frame distances along the normal from the first frame, and which form of PS3.3 C.8.8.3.2 they had."""
    raw = ds.get("GridFrameOffsetVector")
    if raw is None or raw == "":
        if frames == 1:
            return np.zeros(1), "single frame"
        raise RTError(f"{name}: {frames} frames but no Grid Frame Offset Vector (PS3.3 C.8.8.3.2): "
                      "the frames cannot be placed")
    gfov = floats(raw, "Grid Frame Offset Vector", name)
    if gfov.size != frames:
        raise RTError(f"{name}: Grid Frame Offset Vector has {gfov.size} values for {frames} frames")
    normal = np.cross(row, col)
    axial = bool(np.allclose(row, [1, 0, 0], atol=1e-4) and np.allclose(col, [0, 1, 0], atol=1e-4))
    if frames == 1:
        return np.zeros(1), "single frame"
    if abs(gfov[0]) < 1e-3:
        offsets, form = gfov, "relative"
    elif abs(gfov[0] - ipp[2]) < 1e-2:
        if not axial:
            issues.append(f"{name}: absolute Grid Frame Offset Vector with non-axial orientation "
                          "(PS3.3 C.8.8.3.2 allows it for 1\\0\\0\\0\\1\\0 only); read as z coordinates")
        if abs(normal[2]) < 1e-3:
            raise RTError(f"{name}: absolute Grid Frame Offset Vector but the frames are not transverse")
        offsets, form = (gfov - gfov[0]) / normal[2], "absolute"
    else:
        issues.append(f"{name}: Grid Frame Offset Vector starts at {gfov[0]:g}, neither 0 (relative) nor the "
                      f"Image Position z {ipp[2]:g} (absolute); read as offsets from the first frame")
        offsets, form = gfov - gfov[0], "relative"
    steps = np.diff(offsets)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        raise RTError(f"{name}: Grid Frame Offset Vector is not strictly monotonic")
    return offsets, form
