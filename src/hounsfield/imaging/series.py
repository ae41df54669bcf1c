"""A series of single-frame slices as one volume of modality values, with its patient geometry.

Slices are ordered along the slice normal, the cross product of the row and column direction cosines of
Image Orientation (Patient), by the projection of Image Position (Patient) on it (PS3.3 C.7.6.2.1.1);
Instance Number is never used. The affine follows the same section's equation, for array indices.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from hounsfield.errors import InvalidDataset
from hounsfield.imaging.annotate import pixel_spacing
from hounsfield.imaging.io import (
    FileProblem,
    decode_frame,
    looks_like_dicom,
    number_of_frames,
    read_dataset,
    sop_class_text,
)
from hounsfield.imaging.lut import apply_modality, modality_transform
from hounsfield.imaging.native import read_native

_ORIENTATION_TOLERANCE = 1e-4
_IO_THREADS = 8


@dataclass(frozen=True)
class Volume:
    """Modality values (HU for CT) of a series, float32, indexed ``values[slice, row, column]``.

    ``spacing`` is (slice, row, column) in mm, in the same order as the array axes. ``affine`` maps
    ``(slice, row, column, 1)`` to patient coordinates in mm (DICOM LPS). ``paths`` are in slice order.
    """

    values: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    orientation: np.ndarray  # (2, 3): row direction cosines, column direction cosines
    positions: np.ndarray  # (slices, 3): Image Position (Patient) of each slice
    paths: tuple[str, ...]


@dataclass(frozen=True)
class _Slice:
    path: str
    header: Dataset
    stored: np.ndarray


# What a folder of a study may hold beside the slices of its series, skipped with a note when asked to.
SKIPPABLE = frozenset({"not-dicom", "empty", "no-pixels", "not-a-slice"})


def dicom_files(inputs: list[str | os.PathLike[str]], skipped: list[FileProblem] | None = None) -> list[str]:
    """Expand directories (recursively, hidden files skipped) into the sorted list of files they hold.

    With ``skipped``, files found in a directory that do not start like a DICOM file (a README, a
    MANIFEST.md…) are left out and added to it; files named in ``inputs`` are always kept (reading them says
    what they are)."""
    files: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for p in sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                if skipped is not None and not _starts_like_dicom(p):
                    skipped.append(FileProblem("not-dicom", p))
                else:
                    files.append(p)
        else:
            files.append(str(path))
    return files


def _starts_like_dicom(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return looks_like_dicom(fh.read(132))
    except OSError:
        return True  # reading it says why it cannot be read


def read_slice(path: str | os.PathLike[str]) -> tuple[Dataset, np.ndarray]:
    """Header and stored values of a single-frame grey slice, via the fast native path when possible."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError:
        read_dataset(name, pixels=False)  # the one reading path names what is wrong
        raise
    native = read_native(data)
    if native is not None:
        header, stored = native
        header.filename = name
    else:
        header = read_dataset(name)
        frames = number_of_frames(header) if "PixelData" in header else 1
        if frames > 1:
            raise FileProblem("not-a-slice", name, what=f"{sop_class_text(header)} with {frames} frames")
        stored = decode_frame(header, 0)[0]
        if stored.ndim != 2:
            raise FileProblem("not-a-slice", name, what=f"colour {sop_class_text(header)}")
    return header, stored


def load_series(paths: list[str | os.PathLike[str]], *, skipped: list[FileProblem] | None = None) -> Volume:
    """Read the slices of one series (files or directories) into a :class:`Volume` sorted along the normal.

    Every file must be a slice of the series, unless ``skipped`` is given: then what a study folder holds
    beside the slices (files that are not DICOM, objects without pixel data such as RT Structure Sets and
    Plans, multi-frame or colour objects) is left out and added to it, each with its reason."""
    files = dicom_files(paths, skipped)
    if not files:
        raise InvalidDataset(f"{', '.join(map(str, paths)) or '<none>'}: no {'DICOM ' if skipped else ''}files")
    with ThreadPoolExecutor(max_workers=min(_IO_THREADS, len(files))) as pool:
        results = list(pool.map(functools.partial(_read_or_skip, lenient=skipped is not None), files))
    slices = []
    for f, result in zip(files, results):
        if isinstance(result, FileProblem):
            skipped.append(result)  # type: ignore[union-attr] - only returned when lenient
        else:
            slices.append(_Slice(f, *result))
    if not slices:
        raise InvalidDataset(f"{', '.join(map(str, paths))}: no image slices "
                             f"({len(results)} DICOM file(s), none a single-frame grey image)")
    _check_one_series(slices)
    orientation = _orientation(slices)
    normal = np.cross(orientation[0], orientation[1])
    positions = np.array([_position(s) for s in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[i] for i in order]
    positions = positions[order]
    _check_distinct(slices, positions @ normal)
    first = slices[0]
    shape = first.stored.shape
    values = np.empty((len(slices), *shape), np.float32)
    for k, s in enumerate(slices):
        if s.stored.shape != shape:
            raise InvalidDataset(f"{s.path}: {s.stored.shape[0]}x{s.stored.shape[1]} pixels, "
                                 f"the series' first slice has {shape[0]}x{shape[1]}")
        apply_modality(s.stored, modality_transform(s.header, 0), out=values[k])
    spacing_rc = pixel_spacing(first.header) or (1.0, 1.0)
    step = _slice_step(first.header, positions, normal)
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = orientation[1] * spacing_rc[0]
    affine[:3, 2] = orientation[0] * spacing_rc[1]
    affine[:3, 3] = positions[0]
    return Volume(values, (float(np.linalg.norm(step)), *spacing_rc), affine, orientation, positions,
                  tuple(s.path for s in slices))


def _read_or_skip(path: str, *, lenient: bool) -> tuple[Dataset, np.ndarray] | FileProblem:
    try:
        return read_slice(path)
    except FileProblem as exc:
        if lenient and exc.kind in SKIPPABLE:
            return exc
        raise


def _check_one_series(slices: list[_Slice]) -> None:
    uids = {str(s.header.get("SeriesInstanceUID", "")) for s in slices}
    if len(uids) > 1:
        raise InvalidDataset(f"{slices[0].path}: the files belong to {len(uids)} different series; "
                             "pass the files or folder of one series")


def _orientation(slices: list[_Slice]) -> np.ndarray:
    def cosines(s: _Slice) -> np.ndarray:
        iop = s.header.get("ImageOrientationPatient")
        if iop is None or len(iop) != 6:
            raise InvalidDataset(f"{s.path}: no Image Orientation (Patient), cannot place the slice in a volume")
        return np.array([float(v) for v in iop]).reshape(2, 3)

    first = cosines(slices[0])
    for s in slices[1:]:
        if not np.allclose(cosines(s), first, atol=_ORIENTATION_TOLERANCE):
            raise InvalidDataset(f"{s.path}: Image Orientation (Patient) differs from {slices[0].path}")
    return first


def _position(s: _Slice) -> np.ndarray:
    ipp = s.header.get("ImagePositionPatient")
    if ipp is None or len(ipp) != 3:
        raise InvalidDataset(f"{s.path}: no Image Position (Patient), cannot place the slice in a volume")
    return np.array([float(v) for v in ipp])


def _check_distinct(slices: list[_Slice], distances: np.ndarray) -> None:
    duplicates = np.flatnonzero(np.diff(distances) < 1e-3)
    if duplicates.size:
        i = int(duplicates[0])
        raise InvalidDataset(f"{slices[i + 1].path}: same slice position as {slices[i].path}")


def _slice_step(header: Dataset, positions: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Patient-space vector from one slice to the next: the mean step, or the nominal spacing for one slice."""
    if len(positions) > 1:
        return (positions[-1] - positions[0]) / (len(positions) - 1)
    thickness = header.get("SpacingBetweenSlices") or header.get("SliceThickness") or 1.0
    return normal * float(thickness)
