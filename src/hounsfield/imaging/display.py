"""From stored values to 8-bit display values: the whole PS3.3 C.11 chain for one frame.

Grayscale: Modality LUT -> VOI (window or VOI LUT Sequence) -> MONOCHROME1 inversion -> 0..255 rounded
to nearest. For integer stored values of at most 16 bits the chain is evaluated once per possible
stored value and the image is converted by a table look-up, which is exact and fast.
Colour images come out as 8-bit RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from hounsfield.imaging.color import is_colour, palette_to_rgb, rgb_to_8_bit
from hounsfield.imaging.io import decode_frame
from hounsfield.imaging.lut import (
    ModalityTransform,
    Window,
    apply_modality,
    apply_voi_lut_sequence,
    apply_window,
    file_windows,
    has_voi_lut_sequence,
    modality_transform,
)
from hounsfield.imaging.presets import data_window, preset_window


@dataclass(frozen=True)
class VoiChoice:
    """How values of interest are chosen: a window, or (``window is None``) the first VOI LUT Sequence item."""

    window: Window | None
    source: str  # "argument", "preset", "file", "voi-lut", "data"


def choose_voi(ds: Dataset, frame: int, modality_values: np.ndarray | None, *,
               window: tuple[float, float] | None = None, preset: str | None = None) -> VoiChoice:
    """Pick the VOI transform: an explicit window, a preset, the file's first window, its VOI LUT, or the data's.

    Explicit windows and presets are LINEAR (C.11.2.1.2.1). ``modality_values`` is only needed for the
    data window and may be ``None`` when the file has a window or a VOI LUT.
    """
    if window is not None:
        return VoiChoice(Window(float(window[0]), float(window[1]), "LINEAR"), "argument")
    if preset is not None:
        return VoiChoice(preset_window(preset), "preset")
    windows = file_windows(ds, frame)
    if windows:
        return VoiChoice(windows[0], "file")
    if has_voi_lut_sequence(ds):
        return VoiChoice(None, "voi-lut")
    if modality_values is None:
        modality_values = apply_modality(decode_frame(ds, frame)[0], modality_transform(ds, frame))
    return VoiChoice(data_window(modality_values), "data")


def grey_to_display(stored: np.ndarray, ds: Dataset, modality: ModalityTransform, voi: VoiChoice,
                    photometric: str) -> np.ndarray:
    """Stored grey values -> uint8 display values (0 = black), via a look-up table when the values allow it."""
    domain = _lut_domain(stored.dtype)
    if domain is None:
        return _chain(stored, ds, modality, voi, photometric)
    table = _chain(domain, ds, modality, voi, photometric)
    index = stored.view(np.dtype(f"u{stored.dtype.itemsize}")) if stored.dtype.kind == "i" else stored
    return np.take(table, index)


def frame_to_display(ds: Dataset, frame: int = 0, *, window: tuple[float, float] | None = None,
                     preset: str | None = None) -> tuple[np.ndarray, VoiChoice | None]:
    """Decode frame ``frame`` and return its display image (uint8, grey 2-D or RGB 3-D) and the VOI used."""
    stored, photometric = decode_frame(ds, frame)
    if is_colour(photometric, stored):
        if photometric == "PALETTE COLOR":
            return palette_to_rgb(stored, ds), None
        return rgb_to_8_bit(stored, int(ds.get("BitsStored") or 8)), None
    modality = modality_transform(ds, frame)
    needs_data = window is None and preset is None
    values = apply_modality(stored, modality) if needs_data and not file_windows(ds, frame) else None
    voi = choose_voi(ds, frame, values, window=window, preset=preset)
    return grey_to_display(stored, ds, modality, voi, photometric), voi


def _lut_domain(dtype: np.dtype) -> np.ndarray | None:
    """Every value of an integer dtype of at most 16 bits, ordered by its unsigned bit pattern."""
    if dtype.kind not in "iu" or dtype.itemsize > 2:
        return None
    unsigned = np.arange(1 << (8 * dtype.itemsize), dtype=np.dtype(f"u{dtype.itemsize}"))
    return unsigned.view(dtype)


def _chain(stored: np.ndarray, ds: Dataset, modality: ModalityTransform, voi: VoiChoice,
           photometric: str) -> np.ndarray:
    values = apply_modality(stored, modality, np.float64)
    if voi.window is None:
        y = apply_voi_lut_sequence(values, ds)
    else:
        y = apply_window(values, voi.window)
    if photometric == "MONOCHROME1":
        y = 1.0 - y
    return np.floor(y * 255.0 + 0.5).astype(np.uint8)
