"""Series exports for deep learning: NIfTI-1 (via nibabel), NumPy ``.npz`` and one PNG per slice.

DICOM patient coordinates are LPS (PS3.3 C.7.6.2.1.1); NIfTI's scanner coordinates are RAS, so the
NIfTI affine is the volume's affine with the x and y rows negated. NIfTI data is written in
(column, row, slice) order, the usual i, j, k of NIfTI readers.

Volumes on the same grid as the series (an RT label map, a resampled dose: :mod:`hounsfield.rt.volumes`)
go with it as ``extra``: in NIfTI each its own file beside the volume (``v.nii.gz`` → ``v_labels.nii.gz``)
with the very same affine, in the npz more keys of the same (slice, row, column) order. A JSON sidecar
(``v.json``) says what the files hold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from hounsfield.errors import DependencyMissing
from hounsfield.imaging.lut import Window, apply_window
from hounsfield.imaging.png import encode_png
from hounsfield.imaging.series import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
EXPORT_FORMATS = ("nifti", "npz", "png")

Progress = Callable[[int], None]


def nifti_affine(volume: Volume) -> np.ndarray:
    """The RAS affine of the volume's data transposed to (column, row, slice)."""
    ijk = volume.affine[:, [2, 1, 0, 3]]
    return LPS_TO_RAS @ ijk


def nifti_path(out: Path) -> Path:
    """Where the NIfTI volume goes: ``out`` when it ends in .nii or .nii.gz, else ``out`` as .nii.gz."""
    return out if out.suffix in (".nii", ".gz") else out.with_suffix(".nii.gz")


def _base(out: Path) -> tuple[str, str]:
    """(name without its extension, the extension) of an output file: ``v.nii.gz`` → (``v``, ``.nii.gz``)."""
    for suffix in (".nii.gz", ".nii", ".gz", ".npz"):
        if out.name.endswith(suffix) and len(out.name) > len(suffix):
            return out.name[: -len(suffix)], suffix
    return out.stem, out.suffix


def companion_path(out: Path, name: str) -> Path:
    """The file of the extra volume ``name`` beside ``out``: ``v.nii.gz`` → ``v_labels.nii.gz``."""
    stem, suffix = _base(out)
    return out.with_name(f"{stem}_{name}{suffix}")


def sidecar_path(out: Path) -> Path:
    """The JSON sidecar beside ``out``: ``v.nii.gz`` or ``v.npz`` → ``v.json``."""
    return out.with_name(f"{_base(out)[0]}.json")


def export_nifti(volume: Volume, out: Path, progress: Progress | None = None,
                 extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a NIfTI-1 file (``.nii`` or ``.nii.gz``) of float32 modality values with the RAS affine, and each
    ``extra`` volume ((slice, row, column) like ``volume.values``) to :func:`companion_path` with the same
    affine and its own dtype. Returns the volume's path."""
    try:
        import nibabel
    except ImportError:
        raise DependencyMissing("NIfTI export needs nibabel (pip install nibabel)") from None
    out = nifti_path(out)
    affine = nifti_affine(volume)
    for path, values in ((out, volume.values), *((companion_path(out, k), v) for k, v in (extra or {}).items())):
        if values.shape != volume.values.shape:
            raise ValueError(f"{path}: shape {values.shape} is not the volume's {volume.values.shape}")
        image = nibabel.Nifti1Image(np.ascontiguousarray(values.transpose(2, 1, 0)), affine)
        image.header.set_xyzt_units("mm")
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
        nibabel.save(image, str(path))
    if progress:
        progress(len(volume.paths))
    return out


def export_npz(volume: Volume, out: Path, progress: Progress | None = None,
               extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``volume`` (slice, row, column float32), ``spacing``, ``affine`` (LPS) and ``orientation``, and the
    ``extra`` arrays under their names (compressed then: masks are mostly zeros)."""
    out = out if out.suffix == ".npz" else out.with_suffix(".npz")
    arrays = {"volume": volume.values, "spacing": np.array(volume.spacing), "affine": volume.affine,
              "orientation": volume.orientation, "positions": volume.positions, **(extra or {})}
    (np.savez_compressed if extra else np.savez)(out, **arrays)
    if progress:
        progress(len(volume.paths))
    return out


#: What an npz export holds (more keys come with ``extra``).
NPZ_KEYS = {
    "volume": "modality values (HU for CT), (slice, row, column) float32, slices along the normal",
    "spacing": "(slice, row, column) spacing in mm",
    "affine": "4x4, (slice, row, column, 1) to DICOM patient LPS (x, y, z, 1) in mm",
    "orientation": "(2, 3) row and column direction cosines, Image Orientation (Patient)",
    "positions": "(slices, 3) Image Position (Patient) of each slice, in mm",
}


def describe(volume: Volume, fmt: str, files: Mapping[str, Path], keys: Mapping[str, str]) -> dict[str, object]:
    """The sidecar's account of the files written: their names, shape, spacing and affine (RAS and NIfTI
    (column, row, slice) order for NIfTI; LPS and (slice, row, column) for npz) and, for npz, ``keys``."""
    nifti = fmt == "nifti"
    out: dict[str, object] = {
        "format": fmt, "files": {name: path.name for name, path in files.items()},
        "shape": list(volume.values.shape[::-1] if nifti else volume.values.shape),
        "axes": "column, row, slice (NIfTI i, j, k)" if nifti else "slice, row, column",
        "spacing_mm": list(volume.spacing[::-1] if nifti else volume.spacing),
        "affine": (nifti_affine(volume) if nifti else volume.affine).tolist(),
        "affine_space": "RAS (NIfTI)" if nifti else "LPS (DICOM patient coordinates)"}
    if not nifti:
        out["keys"] = dict(keys)
    return out


def write_sidecar(out: Path, description: Mapping[str, object]) -> Path:
    """Write ``description`` as the JSON sidecar of ``out`` (:func:`sidecar_path`)."""
    path = sidecar_path(out)
    path.write_text(json.dumps(description, indent=2) + "\n")
    return path


def export_png(volume: Volume, out: Path, window: Window, progress: Progress | None = None) -> Path:
    """Write one windowed 8-bit PNG per slice, ``slice_0000.png`` … in slice order, into directory ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for k, values in enumerate(volume.values):
        pixels = np.floor(apply_window(values, window) * 255 + 0.5).astype(np.uint8)
        (out / f"slice_{k:04d}.png").write_bytes(encode_png(pixels))
        if progress:
            progress(1)
    return out
