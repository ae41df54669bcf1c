"""A minimal, fast PNG writer for 8-bit grey and RGB arrays (PNG specification, ISO/IEC 15948).

Every scanline uses filter type 1 (Sub), computed with NumPy, and the filtered data is compressed with
zlib level 1 and the Z_RLE strategy. On CT slices this is several times faster than Pillow's adaptive
filtering and within a few per cent of its level-6 size.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 3: 2}  # samples per pixel -> PNG colour type (greyscale, truecolour)
_FILTER_SUB = 1


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array shaped (rows, columns) or (rows, columns, 3)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"expected a 2-D or 3-D uint8 array, got {pixels.ndim}-D {pixels.dtype}")
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    if samples not in _COLOUR_TYPES:
        raise ValueError(f"expected 1 or 3 samples per pixel, got {samples}")
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, width * samples)
    filtered = np.empty((height, width * samples + 1), np.uint8)
    filtered[:, 0] = _FILTER_SUB
    filtered[:, 1:1 + samples] = rows[:, :samples]
    np.subtract(rows[:, samples:], rows[:, :-samples], out=filtered[:, 1 + samples:])
    compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS, 8, zlib.Z_RLE)
    data = compressor.compress(filtered.data) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[samples], 0, 0, 0)
    return b"".join((_SIGNATURE, _chunk(b"IHDR", header), _chunk(b"IDAT", data), _chunk(b"IEND", b"")))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
