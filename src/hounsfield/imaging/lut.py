"""The grayscale pipeline of PS3.3 C.11 as pure functions, in the standard's order.

1. Modality LUT (C.11.1): stored values -> modality values (Hounsfield units for CT), through
   Rescale Slope/Intercept or a Modality LUT Sequence.
2. VOI LUT (C.11.2): modality values -> values of interest, here normalised to 0..1, through a window
   (C.11.2.1.2, with the VOI LUT Function of C.11.2.1.3) or a VOI LUT Sequence.
3. Presentation LUT: MONOCHROME1 is inverted (C.7.6.3.1.2) by the caller, after the VOI step.

For multi-frame instances (Enhanced CT/MR, PS3.3 C.7.6.16) the parameters of one frame come from the
Per-Frame Functional Groups, then the Shared Functional Groups, then the top-level data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut as _pydicom_modality_lut
from pydicom.pixels import apply_voi as _pydicom_voi

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
VOI_FUNCTIONS: tuple[VoiFunction, ...] = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


def frame_group(ds: Dataset, frame: int, sequence: str) -> Dataset:
    """The functional group item ``sequence`` that applies to ``frame`` (PS3.3 C.7.6.16.1).

    Per-frame items take precedence over shared ones; without either, the top-level data set itself
    holds the attributes (single-frame IODs).
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame) and per_frame[frame].get(sequence):
        return per_frame[frame][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and shared[0].get(sequence):
        return shared[0][sequence][0]
    return ds


@dataclass(frozen=True)
class ModalityTransform:
    """The Modality LUT stage of one frame (PS3.3 C.11.1): a rescale, or a LUT when ``lut`` is set."""

    slope: float = 1.0
    intercept: float = 0.0
    lut: Dataset | None = None  # a data set holding a Modality LUT Sequence, applied by pydicom


def modality_transform(ds: Dataset, frame: int = 0) -> ModalityTransform:
    """Read Rescale Slope/Intercept (or the Modality LUT Sequence) that applies to ``frame``."""
    if ds.get("ModalityLUTSequence"):
        return ModalityTransform(lut=ds)
    item = frame_group(ds, frame, "PixelValueTransformationSequence")
    return ModalityTransform(slope=_number(item.get("RescaleSlope"), 1.0),
                             intercept=_number(item.get("RescaleIntercept"), 0.0))


def apply_modality(stored: np.ndarray, transform: ModalityTransform,
                   dtype: type[np.floating] = np.float32, out: np.ndarray | None = None) -> np.ndarray:
    """Modality values from stored values: ``stored * slope + intercept`` (C.11.1.1.2) or the LUT (C.11.1.1.1).

    The result has ``dtype``, or is written into ``out`` when given (one pass over the data).
    """
    if out is None:
        out = np.empty(stored.shape, dtype)
    if transform.lut is not None:
        out[...] = _pydicom_modality_lut(stored, transform.lut)
        return out
    if transform.slope == 1.0:
        return np.add(stored, out.dtype.type(transform.intercept), out=out, casting="unsafe")
    np.multiply(stored, out.dtype.type(transform.slope), out=out, casting="unsafe")
    if transform.intercept != 0.0:
        out += out.dtype.type(transform.intercept)
    return out


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center and width in modality units, and the VOI LUT Function."""

    center: float
    width: float
    function: VoiFunction = "LINEAR"
    explanation: str = ""

    def __post_init__(self) -> None:
        if self.function not in VOI_FUNCTIONS:
            raise ValueError(f"unknown VOI LUT Function {self.function!r} (expected one of {', '.join(VOI_FUNCTIONS)})")
        valid = self.width >= 1 if self.function == "LINEAR" else self.width > 0
        if not valid:
            raise ValueError(f"window width {self.width:g} is invalid for {self.function} (C.11.2.1.2)")


def file_windows(ds: Dataset, frame: int = 0) -> list[Window]:
    """Every Window Center/Width pair that applies to ``frame``, with its explanation, in file order.

    Pairs with an invalid width (e.g. 0) are left out; an unknown VOI LUT Function falls back to LINEAR,
    the default of C.11.2.1.3.
    """
    item = frame_group(ds, frame, "FrameVOILUTSequence")
    centers = _numbers(item.get("WindowCenter"))
    widths = _numbers(item.get("WindowWidth"))
    explanations = [str(x) for x in _as_list(item.get("WindowCenterWidthExplanation"))]
    function = str(item.get("VOILUTFunction") or ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in VOI_FUNCTIONS:
        function = "LINEAR"
    windows = []
    for i, (center, width) in enumerate(zip(centers, widths)):
        explanation = explanations[i] if i < len(explanations) else ""
        try:
            windows.append(Window(center, width, function, explanation))  # type: ignore[arg-type]
        except ValueError:
            continue
    return windows


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Apply a window to modality values; output in 0..1 (PS3.3 C.11.2.1.2.1, C.11.2.1.3.1, C.11.2.1.3.2).

    LINEAR:        y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to 0..1
    LINEAR_EXACT:  y = (x - c) / w + 0.5, clipped to 0..1
    SIGMOID:       y = 1 / (1 + exp(-4 (x - c) / w))
    """
    dtype = values.dtype if values.dtype.kind == "f" else np.dtype(np.float64)
    x = values.astype(dtype, copy=False)
    c, w = dtype.type(window.center), dtype.type(window.width)
    if window.function == "SIGMOID":
        with np.errstate(over="ignore"):  # exp overflows to inf far below the center: y is then 0
            return 1 / (1 + np.exp(-4 * (x - c) / w))
    if window.function == "LINEAR_EXACT":
        y = (x - c) / w + dtype.type(0.5)
    elif window.width == 1:  # the formula's w - 1 is 0: a step at c - 0.5
        y = (x > c - dtype.type(0.5)).astype(dtype)
    else:
        y = (x - (c - dtype.type(0.5))) / (w - 1) + dtype.type(0.5)
    return np.clip(y, 0, 1, out=y)


def has_voi_lut_sequence(ds: Dataset) -> bool:
    """True when (0028,3010) VOI LUT Sequence holds a usable item (descriptor and data)."""
    items = ds.get("VOILUTSequence")
    return bool(items) and "LUTDescriptor" in items[0] and "LUTData" in items[0]


def apply_voi_lut_sequence(values: np.ndarray, ds: Dataset, index: int = 0) -> np.ndarray:
    """Apply item ``index`` of the VOI LUT Sequence (C.11.2.1.1) and scale its output by its bit depth to 0..1.

    The LUT is indexed by integer modality values, so ``values`` are rounded to the nearest integer first.
    """
    bits = int(ds.VOILUTSequence[index].LUTDescriptor[2])
    indices = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
    return _pydicom_voi(indices, ds, index).astype(np.float64) / (2**bits - 1)


def _as_list(value: object) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def _numbers(value: object) -> list[float]:
    out = []
    for v in _as_list(value):
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def _number(value: object, default: float) -> float:
    numbers = _numbers(value)
    return numbers[0] if numbers else default
