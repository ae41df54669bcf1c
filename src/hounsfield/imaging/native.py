"""Fast path for uncompressed little-endian files: a few header values and the stored pixels, no full parse.

pydicom's full parse costs a few microseconds per data element, which dominates loading a series of
slices with large (often private) headers. This module walks the element headers of a Part-10 file with
:func:`struct.unpack_from` (PS3.5 section 7.1: explicit or implicit VR, little endian; PS3.5 7.5:
sequences of defined or undefined length), keeps only the wanted elements as pydicom raw elements
(pydicom still converts their values) and views the Pixel Data with :func:`numpy.frombuffer`.

It answers ``None`` whenever the file is not in its scope (no Part-10 header, another transfer syntax,
encapsulated or multi-frame or colour pixels, a Modality LUT Sequence or functional groups); the caller
then reads the file with pydicom.
"""

from __future__ import annotations

import struct

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from hounsfield.headerjson import LONG_VR_BYTES

WANTED = frozenset(int(Tag(k)) for k in (
    "SOPInstanceUID", "SeriesInstanceUID", "Modality", "InstanceNumber", "SliceThickness", "SpacingBetweenSlices",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SamplesPerPixel",
    "PhotometricInterpretation", "NumberOfFrames", "Rows", "Columns", "BitsAllocated", "BitsStored",
    "PixelRepresentation", "RescaleIntercept", "RescaleSlope",
))
OUT_OF_SCOPE = frozenset(int(Tag(k)) for k in (
    "ModalityLUTSequence", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
))
_PIXEL_DATA = int(Tag("PixelData"))
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class _OutOfScope(Exception):
    """The file needs the full pydicom reader."""


def read_native(data: bytes) -> tuple[Dataset, np.ndarray] | None:
    """The wanted header elements and the single grey frame of stored values, or ``None`` if out of scope."""
    if data[128:132] != b"DICM":
        return None
    try:
        meta, pos, _ = _walk(data, 132, implicit=False, wanted=None, group_end=0x0002)
        tsuid = meta.get(0x00020010)
        syntax = tsuid.value.rstrip(b"\x00 ").decode("ascii") if tsuid else ""
        if syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            return None
        implicit = syntax == ImplicitVRLittleEndian
        elements, _, pixel_span = _walk(data, pos, implicit=implicit, wanted=WANTED, group_end=None)
    except (_OutOfScope, struct.error, IndexError, UnicodeDecodeError):
        return None
    if pixel_span is None:
        return None
    ds = Dataset(elements)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.set_original_encoding(implicit, True)
    pixels = _stored_pixels(ds, data, pixel_span)
    return None if pixels is None else (ds, pixels)


def _stored_pixels(ds: Dataset, data: bytes, pixel_span: tuple[int, int]) -> np.ndarray | None:
    """Single-frame, one-sample, 8/16-bit Pixel Data with unused high bits corrected (PS3.5 8.1.1)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        allocated = int(ds.BitsAllocated)
        stored = int(ds.get("BitsStored") or allocated)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        single = int(ds.get("SamplesPerPixel") or 1) == 1 and int(ds.get("NumberOfFrames") or 1) == 1
        grey = str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME")
    except (AttributeError, TypeError, ValueError):
        return None
    if not (single and grey and allocated in (8, 16) and 0 < stored <= allocated):
        return None
    offset, length = pixel_span
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    count = rows * cols
    if length < count * dtype.itemsize or offset + count * dtype.itemsize > len(data):
        return None
    arr = np.frombuffer(data, dtype, count, offset).reshape(rows, cols)
    if stored < allocated:
        shift = allocated - stored
        arr = np.right_shift(np.left_shift(arr, shift), shift)
    return arr


def _walk(data: bytes, pos: int, *, implicit: bool, wanted: frozenset | None,
          group_end: int | None) -> tuple[dict, int, tuple[int, int] | None]:
    """Walk top-level elements from ``pos``, keeping the ``wanted`` ones (all when ``None``).

    Returns (elements, stop position, (offset, length) of Pixel Data or ``None``). With ``group_end`` it
    stops at the first element of another group (used for the file meta, group 0002).
    """
    elements: dict = {}
    end = len(data)
    while pos + 8 <= end:
        group, element = _TAG.unpack_from(data, pos)
        if group_end is not None and group != group_end:
            return elements, pos, None
        tag = group << 16 | element
        vr, length, value_pos = _element_header(data, pos, implicit or group == 0xFFFE)
        if tag in OUT_OF_SCOPE:
            raise _OutOfScope(f"element {tag:08X}")
        if tag == _PIXEL_DATA:
            if length == _UNDEFINED:
                raise _OutOfScope("encapsulated pixel data")
            return elements, pos, (value_pos, length)
        if length == _UNDEFINED:
            pos = _skip_undefined(data, value_pos, implicit)
            continue
        if wanted is None or tag in wanted:
            elements[Tag(tag)] = RawDataElement(Tag(tag), vr and vr.decode("ascii"), length,
                                                data[value_pos:value_pos + length], value_pos, implicit, True)
        pos = value_pos + length
    return elements, pos, None


def _element_header(data: bytes, pos: int, implicit: bool) -> tuple[bytes | None, int, int]:
    """(VR or None, value length, value position) of the element whose tag starts at ``pos``."""
    if implicit:
        return None, _U32.unpack_from(data, pos + 4)[0], pos + 8
    vr = data[pos + 4:pos + 6]
    if vr in LONG_VR_BYTES:
        return vr, _U32.unpack_from(data, pos + 8)[0], pos + 12
    return vr, _U16.unpack_from(data, pos + 6)[0], pos + 8


def _skip_undefined(data: bytes, pos: int, implicit: bool) -> int:
    """Position after an undefined-length value: items until the Sequence Delimitation Item (PS3.5 7.5.2)."""
    while True:
        tag = _U32.unpack_from(data, pos)[0]
        tag = (tag & 0xFFFF) << 16 | tag >> 16  # (group, element) stored as two little-endian uint16
        length = _U32.unpack_from(data, pos + 4)[0]
        pos += 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            raise _OutOfScope(f"unexpected tag {tag:08X} in a sequence")
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an item of undefined length: its elements until the Item Delimitation Item
            group, element = _TAG.unpack_from(data, pos)
            if (group << 16 | element) == _ITEM_END:
                pos += 8
                break
            _, length, value_pos = _element_header(data, pos, implicit or group == 0xFFFE)
            pos = _skip_undefined(data, value_pos, implicit) if length == _UNDEFINED else value_pos + length
