"""Closed contours to voxel masks on any :class:`~hounsfield.rt.grid.Grid` (a CT series' or a dose grid).

**Holes.** All the closed contours of an ROI on one plane are filled together with the even-odd rule: a
point is inside when it is enclosed by an odd number of them. That is the XOR of the contours' masks, the
rule dicompyler-core (``dvhcalc.calculate_plane_histogram``) and rt-utils (OpenCV ``fillPoly``) use, so a
contour drawn inside another is a hole and a contour inside a hole is an island. PS3.3 C.8.8.6 leaves
the nesting semantics to the application; this is what treatment planning systems export.

**Planes.** Each contour plane stands for a slab of the ROI's contour spacing centred on it
(:meth:`~hounsfield.rt.structure.ROI.slab_thickness`); a grid slice (or sub-slice, when supersampling
along the normal) takes the contours of the nearest plane whose slab holds it, and is empty elsewhere, so
gaps between planes stay gaps. Contours must be parallel to the grid's slices.

**Sampling.** ``method="centre"`` tests voxel centres only, as dicompyler-core does (its points in polygon
are the dose grid's voxel centres, ``matplotlib.path.Path.contains_points``). ``method="supersample"``
(the default) tests ``s x s`` (x ``sz``) evenly spaced points per voxel and gives each voxel the fraction
inside, which is what small structures need: voxel-centre sampling is off by tens of per cent for a
structure a few voxels across.

The filling is a scan-line even-odd fill: each polygon edge toggles the parity of the samples to its right
on every sample row it crosses (half-open in the row direction), so no point is counted twice at a vertex.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hounsfield.rt.common import RTError
from hounsfield.rt.grid import Grid
from hounsfield.rt.structure import PLANE_TOLERANCE_MM, ROI

Method = Literal["supersample", "centre"]

#: In-plane supersampling of masks when the caller gives none: 4 x 4 points per voxel.
DEFAULT_MASK_SUPERSAMPLE = 4


@dataclass(frozen=True, eq=False)
class Plane:
    """The closed contours of an ROI on one plane, in a grid's frame: ``w`` is the plane's distance (mm)
    along the grid normal, each polygon a (n, 2) array of continuous (row, column) indices."""

    w: float
    polygons: tuple[np.ndarray, ...]

    def bounds(self) -> tuple[float, float, float, float]:
        """(row min, row max, column min, column max) over the polygons."""
        pts = np.concatenate(self.polygons)
        return float(pts[:, 0].min()), float(pts[:, 0].max()), float(pts[:, 1].min()), float(pts[:, 1].max())


def roi_planes(roi: ROI, grid: Grid, decimals: int | None = None) -> list[Plane]:
    """The ROI's closed contours grouped by plane in ``grid``'s frame, sorted by ``w``.

    Raises :class:`RTError` naming the ROI and contour when a closed contour's points are off its plane or
    the plane is not parallel to the grid's slices. ``decimals`` rounds ``w`` (dicompyler-core groups
    contours by z rounded to 2 decimals); otherwise contours within 0.01 mm share a plane.
    """
    groups: dict[float, list[np.ndarray]] = {}
    keys: list[float] = []
    for c in roi.closed_contours:
        wvu = grid.plane_coordinates(c.points)
        spread = float(np.ptp(wvu[:, 0]))
        if spread > PLANE_TOLERANCE_MM:
            cause = ("points off its plane" if c.planarity() > PLANE_TOLERANCE_MM
                     else "plane not parallel to the grid's slices")
            raise RTError(f"{roi.structure_set}: {roi.label}, contour {c.index + 1}: {cause} "
                          f"(its points span {spread:.2f} mm along the slice normal of {grid.name or 'the grid'})")
        w = float(wvu[:, 0].mean())
        if decimals is not None:
            w = round(w, decimals)
        else:
            near = [k for k in keys if abs(k - w) < 0.01]
            w = near[0] if near else w
        if w not in groups:
            groups[w] = []
            keys.append(w)
        groups[w].append(wvu[:, 1:])
    return [Plane(w, tuple(groups[w])) for w in sorted(groups)]


def fill(polygons: tuple[np.ndarray, ...] | list[np.ndarray], rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Even-odd fill of ``polygons`` ((n, 2) row/column coordinates) sampled at the lattice
    ``rows x columns`` (increasing, evenly spaced 1-D coordinate arrays): a (len(rows), len(columns)) bool
    array, True inside an odd number of polygons."""
    ny, nx = len(rows), len(columns)
    out = np.zeros((ny, nx), dtype=bool)
    if ny == 0 or nx == 0:
        return out
    r0, c0 = float(rows[0]), float(columns[0])
    dr = float(rows[1] - rows[0]) if ny > 1 else 1.0
    dc = float(columns[1] - columns[0]) if nx > 1 else 1.0
    starts, ends = [], []
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64)
        starts.append(p)
        ends.append(np.roll(p, -1, axis=0))
    a, b = np.concatenate(starts), np.concatenate(ends)
    ya, yb, xa, xb = a[:, 0], b[:, 0], a[:, 1], b[:, 1]
    lo, hi = np.minimum(ya, yb), np.maximum(ya, yb)
    # sample rows j with lo <= r0 + j*dr < hi (half-open: a vertex on a row is counted once)
    j_lo = np.maximum(np.ceil((lo - r0) / dr), 0).astype(np.int64)
    j_hi = np.minimum(np.ceil((hi - r0) / dr) - 1, ny - 1).astype(np.int64)
    n = np.where(hi > lo, j_hi - j_lo + 1, 0).clip(min=0)
    total = int(n.sum())
    if total == 0:
        return out
    edge = np.repeat(np.arange(len(n)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    j = j_lo[edge] + (np.arange(total) - first)
    y = r0 + j * dr
    t = (y - ya[edge]) / (yb[edge] - ya[edge])
    x = xa[edge] + t * (xb[edge] - xa[edge])
    # the crossing toggles every sample strictly to its right
    col = np.clip(np.floor((x - c0) / dc).astype(np.int64) + 1, 0, nx)
    toggles = np.bincount(j * (nx + 1) + col, minlength=ny * (nx + 1)).reshape(ny, nx + 1)[:, :nx]
    np.cumsum(toggles, axis=1, out=toggles)
    return (toggles & 1).astype(bool)


def sample_offsets(s: int) -> np.ndarray:
    """Offsets (in voxels, about the centre) of ``s`` evenly spaced samples across a voxel."""
    return (np.arange(s) + 0.5) / s - 0.5


def _supersample(value: int | tuple[int, int, int] | None, method: Method) -> tuple[int, int, int]:
    if method == "centre":
        return (1, 1, 1)
    if method != "supersample":
        raise ValueError(f"unknown sampling method {method!r} (supersample or centre)")
    if value is None:
        return (1, DEFAULT_MASK_SUPERSAMPLE, DEFAULT_MASK_SUPERSAMPLE)
    if isinstance(value, int):
        value = (1, value, value)
    sz, sy, sx = (int(v) for v in value)
    if min(sz, sy, sx) < 1:
        raise ValueError(f"supersampling factors must be at least 1, not {value}")
    return sz, sy, sx


def roi_occupancy(roi: ROI, grid: Grid, *, supersample: int | tuple[int, int, int] | None = None,
                  method: Method = "supersample", thickness: float | None = None) -> np.ndarray:
    """Fraction (0-1, float32, ``grid.shape``) of each voxel inside the ROI.

    ``supersample`` is the number of samples per voxel along the rows and columns (an int) or along
    (slices, rows, columns); default 1 x 4 x 4. ``method="centre"`` samples voxel centres only (0 or 1, as
    dicompyler-core does). ``thickness`` overrides the slab each contour plane stands for (mm). POINT and
    OPEN contours are never rasterised. See the module docstring for holes (even-odd, XOR) and planes.
    """
    sz, sy, sx = _supersample(supersample, method)
    out = np.zeros(grid.shape, dtype=np.float32)
    planes = roi_planes(roi, grid)
    if not planes:
        return out
    ws = np.array([p.w for p in planes])
    half = 0.5 * (thickness or roi.slab_thickness(grid.normal) or abs(grid.slice_step) or 1.0)
    steps = _local_steps(grid)
    cache: dict[int, np.ndarray] = {}
    ny, nx = grid.shape[1], grid.shape[2]
    for k in range(grid.shape[0]):
        acc = None
        for dz in sample_offsets(sz):
            w = grid.offsets[k] + dz * steps[k]
            p = int(np.argmin(np.abs(ws - w)))
            if abs(ws[p] - w) > half + 1e-6:
                continue
            if p not in cache:
                cache[p] = _plane_fraction(planes[p], ny, nx, sy, sx)
            acc = cache[p] if acc is None else acc + cache[p]
        if acc is not None:
            out[k] = acc / sz
    return out


def roi_mask(roi: ROI, grid: Grid, *, supersample: int | tuple[int, int, int] | None = None,
             method: Method = "supersample", threshold: float = 0.5, thickness: float | None = None) -> np.ndarray:
    """Boolean mask (``grid.shape``) of the voxels at least ``threshold`` inside the ROI (see
    :func:`roi_occupancy`; with ``method="centre"`` a voxel is in when its centre is)."""
    occupancy = roi_occupancy(roi, grid, supersample=supersample, method=method, thickness=thickness)
    return occupancy >= threshold if method == "supersample" else occupancy > 0


def _local_steps(grid: Grid) -> np.ndarray:
    if grid.shape[0] == 1:
        return np.array([grid.thickness or 1.0])
    d = np.abs(np.diff(grid.offsets))
    return np.concatenate(([d[0]], 0.5 * (d[:-1] + d[1:]) if d.size > 1 else [], [d[-1]]))


def _plane_fraction(plane: Plane, ny: int, nx: int, sy: int, sx: int) -> np.ndarray:
    """Fraction of each in-plane voxel of a (ny, nx) slice inside the plane's polygons."""
    out = np.zeros((ny, nx), dtype=np.float32)
    rmin, rmax, cmin, cmax = plane.bounds()
    j0, j1 = max(int(np.floor(rmin)) - 1, 0), min(int(np.ceil(rmax)) + 1, ny - 1)
    i0, i1 = max(int(np.floor(cmin)) - 1, 0), min(int(np.ceil(cmax)) + 1, nx - 1)
    if j0 > j1 or i0 > i1:
        return out
    rows = (np.arange(j0, j1 + 1)[:, None] + sample_offsets(sy)[None, :]).ravel()
    cols = (np.arange(i0, i1 + 1)[:, None] + sample_offsets(sx)[None, :]).ravel()
    inside = fill(plane.polygons, rows, cols)
    block = inside.reshape(j1 - j0 + 1, sy, i1 - i0 + 1, sx).mean(axis=(1, 3), dtype=np.float32)
    out[j0:j1 + 1, i0:i1 + 1] = block
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
