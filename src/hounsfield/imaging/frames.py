"""An instance's binary values as WADO-RS sends them: uncompressed frames and bulk data elements.

A frame goes out as its stored values, uncompressed, in little-endian byte order, whatever the file's transfer
syntax: without a transfer-syntax parameter that is what PS3.18 8.7.3.3 (Explicit VR Little Endian) and 8.7.3.3.1
(uncompressed bulk data) ask for. Bulk data is an element's value as stored, named in the metadata by a
BulkDataURI (PS3.18 F.2.6). Decoding lives here, beside ``imaging.io``, so that the web layer only asks.
"""

from __future__ import annotations

import os

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from hounsfield.errors import NotFound
from hounsfield.imaging.io import decode_frame, number_of_frames, read_dataset, source_name

FilePath = str | os.PathLike[str]

PIXEL_TAGS = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))  # Pixel Data, Float / Double Float Pixel Data


def frame_bytes(path: FilePath, number: int) -> bytes:
    """The stored values of frame ``number`` (1-based), uncompressed and little endian.

    pydicom reads only that frame where it can (Part-10 file, a codec its frame reader has); anything else
    (no file meta, deflate, 12-bit JPEG…) is decoded by ``imaging.io`` from the whole file."""
    try:
        arr = pixel_array(path, index=number - 1, raw=True)
    except Exception:  # noqa: BLE001 - whatever pydicom's frame reader refuses, the full reader may take
        ds = read_dataset(path)
        frames = number_of_frames(ds)
        if number > frames:
            raise NotFound(f"{source_name(path)} has {frames} frame(s), not {number}") from None
        arr, _ = decode_frame(ds, number - 1)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr).tobytes()


def bulk_data(path: FilePath, tag: int) -> bytes:
    """The value of the first element ``tag`` in the file, searched depth first through its sequences
    (a BulkDataURI names an element by tag only), as bytes; ``NotFound`` when no such element has a value."""
    ds = read_dataset(path, pixels=tag in PIXEL_TAGS)
    elem = _find_element(ds, tag)
    if elem is None or elem.value is None:
        raise NotFound(f"{source_name(path)} has no bulk data element {tag:08X}")
    value = elem.value
    if isinstance(value, bytes):
        return value
    return b"".join(v if isinstance(v, bytes) else str(v).encode() for v in (value or []))


def _find_element(ds: Dataset, tag: int) -> DataElement | None:
    if tag in ds:
        return ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found = _find_element(item, tag)
                if found is not None:
                    return found
    return None

