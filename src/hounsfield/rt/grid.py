"""Voxel lattices in patient coordinates: a CT series' grid or an RT Dose grid.

A :class:`Grid` is the geometry of PS3.3 C.7.6.2.1.1 (Image Plane): the first slice's Image Position
(Patient), the row and column direction cosines of Image Orientation (Patient), Pixel Spacing (row spacing,
column spacing) and, for the slices, their distances along the slice normal (row cosines x column cosines).
Those distances need not be uniform (an RT Dose's Grid Frame Offset Vector, PS3.3 C.8.8.3.2, may not be).
Indices are always ``(slice, row, column)``, the order of the NumPy arrays, as in
:class:`hounsfield.imaging.series.Volume`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from hounsfield.imaging.series import dicom_files
from hounsfield.rt.common import RTError, Source, floats, object_name, read_rt

_ORIENTATION_TOLERANCE = 1e-4


@dataclass(frozen=True, eq=False)
class Grid:
    """A lattice of voxel centres in patient coordinates (DICOM LPS, mm), indexed ``[slice, row, column]``.

    ``offsets`` are the slices' distances from ``origin`` along :attr:`normal`, strictly increasing or
    strictly decreasing. ``thickness`` is the nominal slab of a grid with one slice.
    """

    shape: tuple[int, int, int]
    origin: np.ndarray
    row_cosines: np.ndarray  # direction of increasing column index (IOP[0:3])
    column_cosines: np.ndarray  # direction of increasing row index (IOP[3:6])
    pixel_spacing: tuple[float, float]  # (between rows, between columns), PS3.3 C.7.6.2.1.1
    offsets: np.ndarray
    thickness: float = 1.0
    name: str = ""
    slice_uids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.offsets) != self.shape[0]:
            raise RTError(f"{self.name}: {len(self.offsets)} slice offsets for {self.shape[0]} slices")
        steps = np.diff(self.offsets)
        if steps.size and not (np.all(steps > 0) or np.all(steps < 0)):
            raise RTError(f"{self.name}: slice positions are not strictly monotonic along the slice normal")

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, row cosines x column cosines."""
        n = np.cross(self.row_cosines, self.column_cosines)
        return n / np.linalg.norm(n)

    @property
    def slice_step(self) -> float:
        """Mean signed distance between consecutive slices (the nominal ``thickness`` for one slice)."""
        if self.shape[0] < 2:
            return float(self.thickness)
        return float((self.offsets[-1] - self.offsets[0]) / (self.shape[0] - 1))

    @property
    def uniform(self) -> bool:
        """True when the slices are evenly spaced (to 1 µm), so that :attr:`affine` is exact."""
        return self.shape[0] < 3 or bool(np.ptp(np.diff(self.offsets)) < 1e-3)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(slice, row, column) spacing in mm, all positive."""
        return (abs(self.slice_step), self.pixel_spacing[0], self.pixel_spacing[1])

    @property
    def voxel_volume_cc(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix taking ``(slice, row, column, 1)`` to patient ``(x, y, z, 1)`` (PS3.3 C.7.6.2.1.1 extended
        along the normal by the mean slice step; exact when :attr:`uniform`)."""
        a = np.eye(4)
        a[:3, 0] = self.normal * self.slice_step
        a[:3, 1] = self.column_cosines * self.pixel_spacing[0]
        a[:3, 2] = self.row_cosines * self.pixel_spacing[1]
        a[:3, 3] = self.origin + self.normal * self.offsets[0]
        return a

    def slice_positions(self) -> np.ndarray:
        """(slices, 3) patient position of each slice's first voxel (its Image Position (Patient))."""
        return self.origin + np.outer(self.offsets, self.normal)

    def plane_coordinates(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) patient points to ``(w, row, column)``: the distance along the normal from ``origin`` in mm
        and the continuous row and column indices."""
        d = np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.origin
        return np.column_stack((d @ self.normal, d @ self.column_cosines / self.pixel_spacing[0],
                                d @ self.row_cosines / self.pixel_spacing[1]))

    def slice_index(self, w: np.ndarray) -> np.ndarray:
        """Continuous slice index of distances ``w`` along the normal (linear between slices, extrapolated
        with the end steps outside)."""
        w = np.asarray(w, dtype=np.float64)
        if self.shape[0] == 1:
            return (w - self.offsets[0]) / (self.thickness or 1.0)
        offsets, idx = self.offsets, np.arange(self.shape[0], dtype=np.float64)
        if offsets[0] > offsets[-1]:
            offsets, idx = offsets[::-1], idx[::-1]
        out = np.interp(w, offsets, idx)
        lo, hi = w < offsets[0], w > offsets[-1]
        out = np.where(lo, idx[0] + (w - offsets[0]) / (offsets[1] - offsets[0]) * (idx[1] - idx[0]), out)
        return np.where(hi, idx[-1] + (w - offsets[-1]) / (offsets[-1] - offsets[-2]) * (idx[-1] - idx[-2]), out)

    def patient_to_index(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) patient points to continuous ``(slice, row, column)`` indices."""
        wvu = self.plane_coordinates(points)
        return np.column_stack((self.slice_index(wvu[:, 0]), wvu[:, 1], wvu[:, 2]))

    def index_to_patient(self, indices: np.ndarray) -> np.ndarray:
        """(n, 3) continuous ``(slice, row, column)`` indices to patient points (slices interpolated)."""
        ijk = np.asarray(indices, dtype=np.float64).reshape(-1, 3)
        if self.shape[0] == 1:
            w = self.offsets[0] + ijk[:, 0] * (self.thickness or 1.0)
        else:
            k = np.arange(self.shape[0], dtype=np.float64)
            w = np.interp(ijk[:, 0], k, self.offsets)
            step0, step1 = self.offsets[1] - self.offsets[0], self.offsets[-1] - self.offsets[-2]
            w = np.where(ijk[:, 0] < 0, self.offsets[0] + ijk[:, 0] * step0, w)
            w = np.where(ijk[:, 0] > k[-1], self.offsets[-1] + (ijk[:, 0] - k[-1]) * step1, w)
        return (self.origin + np.outer(w, self.normal) + np.outer(ijk[:, 1] * self.pixel_spacing[0],
                self.column_cosines) + np.outer(ijk[:, 2] * self.pixel_spacing[1], self.row_cosines))

    def voxel_centres(self) -> np.ndarray:
        """(slices, rows, columns, 3) patient coordinates of every voxel centre."""
        k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in self.shape), indexing="ij")
        return self.index_to_patient(np.column_stack((k.ravel(), j.ravel(), i.ravel()))).reshape(*self.shape, 3)

    def same_orientation(self, other: Grid, tolerance: float = _ORIENTATION_TOLERANCE) -> bool:
        return bool(np.allclose(self.row_cosines, other.row_cosines, atol=tolerance)
                    and np.allclose(self.column_cosines, other.column_cosines, atol=tolerance))

    def slice_grid(self, k: int) -> Grid:
        """The one-slice grid of slice ``k``."""
        return Grid((1, self.shape[1], self.shape[2]), self.origin, self.row_cosines, self.column_cosines,
                    self.pixel_spacing, self.offsets[k:k + 1].copy(), abs(self.slice_step), self.name,
                    self.slice_uids[k:k + 1])


def orientation_of(ds: Dataset, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines of Image Orientation (Patient), checked orthonormal."""
    if ds.get("ImageOrientationPatient") is None:
        raise RTError(f"{owner}: no Image Orientation (Patient)")
    iop = floats(ds.ImageOrientationPatient, "Image Orientation (Patient)", owner, 6)
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise RTError(f"{owner}: Image Orientation (Patient) is not two orthogonal unit vectors ({list(iop)})")
    return row / np.linalg.norm(row), col / np.linalg.norm(col)


def position_of(ds: Dataset, owner: str) -> np.ndarray:
    if ds.get("ImagePositionPatient") is None:
        raise RTError(f"{owner}: no Image Position (Patient)")
    return floats(ds.ImagePositionPatient, "Image Position (Patient)", owner, 3)


def spacing_of(ds: Dataset, owner: str) -> tuple[float, float]:
    if ds.get("PixelSpacing") is None:
        raise RTError(f"{owner}: no Pixel Spacing")
    row, col = floats(ds.PixelSpacing, "Pixel Spacing", owner, 2)
    if row <= 0 or col <= 0:
        raise RTError(f"{owner}: Pixel Spacing must be positive ({row}, {col})")
    return float(row), float(col)


@dataclass(frozen=True, eq=False)
class CTSeries:
    """The headers of one image series (CT, MR…) and its :class:`Grid`, slices sorted along the normal."""

    grid: Grid
    headers: tuple[Dataset, ...]
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return self.grid.slice_uids

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(str(getattr(h, "filename", "") or "") for h in self.headers)

    def require_frame_of_reference(self, frame_uid: str, owner: str) -> None:
        """Refuse an object of another Frame of Reference (PS3.3 C.7.4.1): its patient coordinates are not the
        images' and no registration is applied here, so its contours or dose cannot be placed on them. An
        object or series that names none is taken as it is."""
        if frame_uid and self.frame_of_reference_uid and frame_uid != self.frame_of_reference_uid:
            raise RTError(f"{owner}: Frame of Reference {frame_uid} differs from the images' "
                          f"({self.frame_of_reference_uid}, {self.grid.name}): it cannot be placed on them")


def load_series(sources: Sequence[Source | os.PathLike[str]] | str | os.PathLike[str]) -> CTSeries:
    """Read the headers of one series (files, folders or Datasets) into a :class:`CTSeries`.

    Files that are not images (RT objects, say, in the same folder) are left out; images of more than one
    series are an error naming them.
    """
    items = [sources] if isinstance(sources, (str, os.PathLike, Dataset, bytes)) else list(sources)
    headers: list[Dataset] = []
    for item in items:
        if isinstance(item, (Dataset, bytes)):
            headers.append(read_rt(item, pixels=False))
            continue
        for path in dicom_files([item]):
            ds = read_rt(path, pixels=False)
            if "ImagePositionPatient" in ds and "Rows" in ds and str(ds.get("Modality", "")) not in ("RTDOSE",):
                headers.append(ds)
    if not headers:
        raise RTError(f"{', '.join(map(os.fspath, [i for i in items if not isinstance(i, (Dataset, bytes))])) or '<datasets>'}"
                      ": no image slices")
    return series_from_headers(headers)


def series_from_headers(headers: Sequence[Dataset]) -> CTSeries:
    """Build a :class:`CTSeries` from slice headers (sorted here along the slice normal)."""
    first = headers[0]
    name0 = object_name(first)
    uids = {str(h.get("SeriesInstanceUID", "")) for h in headers}
    if len(uids) > 1:
        raise RTError(f"{name0}: the images belong to {len(uids)} series ({', '.join(sorted(uids))}); "
                      "give the images of one series")
    row, col = orientation_of(first, name0)
    spacing = spacing_of(first, name0)
    shape = (int(first.Rows), int(first.Columns))
    for h in headers[1:]:
        r, c = orientation_of(h, object_name(h))
        if not (np.allclose(r, row, atol=_ORIENTATION_TOLERANCE) and np.allclose(c, col, atol=_ORIENTATION_TOLERANCE)):
            raise RTError(f"{object_name(h)}: Image Orientation (Patient) differs from {name0}")
        if (int(h.Rows), int(h.Columns)) != shape:
            raise RTError(f"{object_name(h)}: {h.Rows}x{h.Columns} pixels, {name0} has {shape[0]}x{shape[1]}")
    normal = np.cross(row, col)
    positions = np.array([position_of(h, object_name(h)) for h in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    headers = [headers[i] for i in order]
    positions, along = positions[order], along[order]
    dup = np.flatnonzero(np.diff(along) < 1e-3)
    if dup.size:
        raise RTError(f"{object_name(headers[dup[0] + 1])}: same slice position as {object_name(headers[dup[0]])}")
    origin = positions[0]
    thickness = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    grid = Grid((len(headers), *shape), origin, row, col, spacing, along - along[0], thickness,
                name=f"series {next(iter(uids))}", slice_uids=tuple(str(h.get("SOPInstanceUID", "")) for h in headers))
    return CTSeries(grid, tuple(headers), next(iter(uids)), str(first.get("StudyInstanceUID", "")),
                    str(first.get("FrameOfReferenceUID", "")))
