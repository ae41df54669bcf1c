"""Colour images to 8-bit RGB (PS3.3 C.7.6.3.1.2 Photometric Interpretation, C.7.6.3.1.5 Palette Color).

YBR_FULL and YBR_FULL_422 arrive already converted to RGB by the decoder (PS3.3 C.7.6.3.1.2 equations);
PALETTE COLOR goes through its Red/Green/Blue Palette Color Lookup Tables (segmented or not).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut

from hounsfield.errors import InvalidDataset

COLOUR_PHOTOMETRICS = frozenset({"RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})


def is_colour(photometric: str, arr: np.ndarray) -> bool:
    """True for palette colour or a three-sample image."""
    return photometric == "PALETTE COLOR" or arr.ndim == 3


def palette_to_rgb(indices: np.ndarray, ds: Dataset) -> np.ndarray:
    """Look stored indices up in the palette colour LUTs (C.7.6.3.1.5); 8-bit RGB out.

    LUT entries are scaled from the descriptor's bit depth (8 or 16) to 8 bits.
    """
    try:
        rgb = apply_color_lut(indices, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    except (AttributeError, KeyError, ValueError, IndexError) as exc:
        raise InvalidDataset(f"{getattr(ds, 'filename', '<dataset>')}: unusable palette colour LUT ({exc})") from None
    return _to_8_bit(rgb, bits)


def rgb_to_8_bit(rgb: np.ndarray, bits_stored: int) -> np.ndarray:
    """Scale RGB samples of ``bits_stored`` bits to 0..255."""
    return _to_8_bit(rgb, bits_stored)


def _to_8_bit(arr: np.ndarray, bits: int) -> np.ndarray:
    if bits <= 8:
        return arr.astype(np.uint8, copy=False)
    return (arr.astype(np.uint32) >> (bits - 8)).astype(np.uint8)
