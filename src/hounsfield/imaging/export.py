"""Series exports for deep learning: NIfTI-1 (via nibabel), NumPy ``.npz`` and one PNG per slice.

DICOM patient coordinates are LPS (PS3.3 C.7.6.2.1.1); NIfTI's scanner coordinates are RAS, so the
NIfTI affine is the volume's affine with the x and y rows negated. NIfTI data is written in
(column, row, slice) order, the usual i, j, k of NIfTI readers.
"""

from __future__ import annotations

from collections.abc import Callable
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


def export_nifti(volume: Volume, out: Path, progress: Progress | None = None) -> Path:
    """Write a NIfTI-1 file (``.nii`` or ``.nii.gz``) of float32 modality values with the RAS affine."""
    try:
        import nibabel
    except ImportError:
        raise DependencyMissing("NIfTI export needs nibabel (pip install nibabel)") from None
    data = np.ascontiguousarray(volume.values.transpose(2, 1, 0))
    image = nibabel.Nifti1Image(data, nifti_affine(volume))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    if out.suffix not in (".nii", ".gz"):
        out = out.with_suffix(".nii.gz")
    nibabel.save(image, str(out))
    if progress:
        progress(len(volume.paths))
    return out


def export_npz(volume: Volume, out: Path, progress: Progress | None = None) -> Path:
    """Write ``volume`` (slice, row, column float32), ``spacing``, ``affine`` (LPS) and ``orientation``."""
    out = out if out.suffix == ".npz" else out.with_suffix(".npz")
    np.savez(out, volume=volume.values, spacing=np.array(volume.spacing), affine=volume.affine,
             orientation=volume.orientation, positions=volume.positions)
    if progress:
        progress(len(volume.paths))
    return out


def export_png(volume: Volume, out: Path, window: Window, progress: Progress | None = None) -> Path:
    """Write one windowed 8-bit PNG per slice, ``slice_0000.png`` … in slice order, into directory ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for k, values in enumerate(volume.values):
        pixels = np.floor(apply_window(values, window) * 255 + 0.5).astype(np.uint8)
        (out / f"slice_{k:04d}.png").write_bytes(encode_png(pixels))
        if progress:
            progress(1)
    return out
