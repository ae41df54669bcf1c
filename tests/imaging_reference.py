"""Independent reference computations for the imaging tests: the standard's formulas, written out here.

Nothing in this module imports hounsfield.
"""

from __future__ import annotations

import numpy as np
import pydicom


def linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 with output range 0..255 (not rounded)."""
    return np.clip(((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0, 0, 255)


def linear_exact_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.2, output 0..1."""
    return np.clip((x - c) / w + 0.5, 0, 1)


def sigmoid_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.3.1, output 0..1."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))


def hu(ds: pydicom.Dataset) -> np.ndarray:
    """Stored value * Rescale Slope + Rescale Intercept (PS3.3 C.11.1.1.2), float64, from pydicom's decode."""
    return ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def first_window(ds: pydicom.Dataset) -> tuple[float, float]:
    c, w = ds.WindowCenter, ds.WindowWidth
    return float(c[0] if ds["WindowCenter"].VM > 1 else c), float(w[0] if ds["WindowWidth"].VM > 1 else w)


def reference_render(ds: pydicom.Dataset, window: tuple[float, float] | None = None) -> np.ndarray:
    """The acceptance reference: linear window on modality values, MONOCHROME1 inverted (float 0..255)."""
    c, w = window if window is not None else first_window(ds)
    y = linear_window(hu(ds), c, w)
    return 255.0 - y if ds.PhotometricInterpretation == "MONOCHROME1" else y


def read_cases(path: str) -> list[tuple[str, tuple[float, float] | None]]:
    """The lines of an imaging-cases.txt: relative path and optional (center, width)."""
    cases = []
    with open(path) as fh:
        lines = fh.read().splitlines()
    for line in lines:
        parts = line.split("#")[0].split()
        if parts:
            cases.append((parts[0], (float(parts[1]), float(parts[2])) if len(parts) == 3 else None))
    return cases
