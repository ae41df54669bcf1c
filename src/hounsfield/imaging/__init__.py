"""Seeing the images: correct pixel values, Hounsfield windowing and conversion (PS3.3 C.7.6.3, C.11).

Public API:

* :func:`render_instance` - one frame as PNG/JPEG bytes, windowed per PS3.3 C.11.2.
* :func:`frame_values` - one frame's modality values (HU for CT) as float32.
* :func:`load_series` - a series as a sorted :class:`Volume` with spacing and a voxel-to-patient affine.
* :data:`PRESETS` - named windows, (center, width).
* The pipeline's pure functions in :mod:`hounsfield.imaging.lut` (modality LUT, VOI window/LUT).
"""

from hounsfield.imaging.io import read_dataset
from hounsfield.imaging.lut import (
    ModalityTransform,
    Window,
    apply_modality,
    apply_voi_lut_sequence,
    apply_window,
    file_windows,
    modality_transform,
)
from hounsfield.imaging.presets import PRESETS, data_window, preset_window
from hounsfield.imaging.render import frame_values, render_image, render_instance
from hounsfield.imaging.series import Volume, load_series

__all__ = [
    "PRESETS",
    "ModalityTransform",
    "Volume",
    "Window",
    "apply_modality",
    "apply_voi_lut_sequence",
    "apply_window",
    "data_window",
    "file_windows",
    "frame_values",
    "load_series",
    "modality_transform",
    "preset_window",
    "read_dataset",
    "render_image",
    "render_instance",
]
