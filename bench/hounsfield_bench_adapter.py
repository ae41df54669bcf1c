"""hounsfield's imaging library as an implementation for the shared render benchmark.

Used as ``bench_render.py --impl name=hounsfield,module=hounsfield_bench_adapter`` with this folder on
PYTHONPATH; see /work/shared/bench/README.md ("Adding a target").
"""

from __future__ import annotations

import numpy as np

import hounsfield
from hounsfield.imaging import load_series, render_instance

__version__ = f"hounsfield {hounsfield.__version__}"


def render_png(path: str, center: float, width: float) -> bytes:
    """PNG of the slice windowed with the PS3.3 C.11.2.1.2.1 linear window, at native size."""
    return render_instance(path, window=(center, width))


def load_volume(paths: list[str]) -> np.ndarray:
    """HU volume (slices, rows, columns), float32, sorted along the slice normal."""
    return load_series(paths).values
