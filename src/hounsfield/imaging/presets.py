"""Named windows (center, width in Hounsfield units) and a window estimated from the data.

The CT presets are the usual radiology reading windows. Images without a window in the file (many MR,
CR and DX) get one from the distribution of their modality values.
"""

from __future__ import annotations

import numpy as np

from hounsfield.imaging.lut import Window

PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "temporal-bone": (600.0, 2800.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
    "soft-tissue": (40.0, 400.0),
}

#: Percentiles of the modality values that bound the window estimated from the data.
DATA_WINDOW_PERCENTILES = (0.5, 99.5)

_SAMPLE_LIMIT = 1 << 18  # percentiles of a strided sample of at most this many values


def preset_window(name: str) -> Window:
    """The LINEAR window of a named preset; ``-`` and ``_`` are interchangeable and case is ignored."""
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    center, width = PRESETS[key]
    return Window(center, width, "LINEAR", key)


def data_window(values: np.ndarray) -> Window:
    """A LINEAR window spanning the 0.5th to 99.5th percentile of ``values`` (at least 1 wide)."""
    flat = values.reshape(-1)
    flat = flat[:: max(1, flat.size // _SAMPLE_LIMIT)]
    finite = flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat
    if finite.size == 0:
        return Window(0.5, 1.0, "LINEAR", "data")
    low, high = (float(p) for p in np.percentile(finite, DATA_WINDOW_PERCENTILES))
    width = max(high - low, 1.0)
    return Window((low + high) / 2 + 0.5, width + 1.0, "LINEAR", "data")
