"""What a C-GET or C-MOVE requestor received, and how it is checked against the original file: both read by
pydicom, compared value by value (recursively, LUT and pixel data included), or byte by byte where the transfer
syntax did not change. Used by the round trips of test_dimse_interop.py and test_roundtrip.py."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pynetdicom import _config
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.dataelem import RawDataElement
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels import apply_color_lut
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
# Bytes per number of the VRs pydicom leaves as bytes (in the byte order of the data set they were read from),
# and of those it decodes; only the raw bytes of the latter are compared, where implicit VR lost the VR.
WORDS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
NUMBERS = {**WORDS, "US": 2, "SS": 2, "AT": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8}


def dataset_part(part10: bytes) -> bytes:
    """The encoded data set of a Part-10 file: after preamble, prefix and file meta group, however the writer
    laid them out (pynetdicom's chunked receive writes its own; read as pydicom reads them)."""
    fp = io.BytesIO(part10)
    read_preamble(fp, True)
    _read_file_meta_info(fp)
    return part10[fp.tell():]


@dataclass(frozen=True)
class Received:
    syntax: str  # the transfer syntax of the presentation context it came on
    data: bytes  # the data set as received

    def dataset(self) -> Dataset:
        """The data set read by pydicom, from a Part-10 file made of the received bytes (so deflated ones too)."""
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = self.syntax
        buffer = io.BytesIO()
        buffer.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(buffer, meta, enforce_standard=False)
        buffer.write(self.data)
        return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def collector(received: dict[str, Received]) -> Callable[[Any], int]:
    """An EVT_C_STORE handler keeping each data set as received, by SOP Instance UID."""
    def on_store(event: Any) -> int:
        if _config.STORE_RECV_CHUNKED_DATASET:  # received to a file (importing hounsfield.dimse.server sets
            data = dataset_part(Path(event.dataset_path).read_bytes())  # it): encoded_dataset() would be empty
        else:
            data = event.encoded_dataset(include_meta=False)
        received[str(event.request.AffectedSOPInstanceUID)] = Received(str(event.context.transfer_syntax), data)
        return 0x0000
    return on_store


@dataclass(frozen=True)
class _Value:
    vr: str
    value: Any
    raw: bytes | None  # the encoded value, when pydicom had not decoded it yet


def _read(ds: Dataset, tag: BaseTag) -> _Value:
    raw = ds.get_item(tag)
    encoded = (raw.value or b"") if isinstance(raw, RawDataElement) else None  # an empty value reads as None
    try:
        element = ds[tag]
    except Exception:  # noqa: BLE001 - pydicom cannot read the value with the VR it has: compare the bytes
        return _Value("UN", encoded, encoded)
    if encoded is None and (element.is_empty or isinstance(element.value, bytes)):
        encoded = element.value or b""  # decoded by pydicom while reading (empty and UN values may be)
    return _Value(element.VR, element.value, encoded)


def _numbers(value: _Value, little: bool, units: dict[str, int]) -> Any:
    """A value of numbers whose bytes depend on the byte order, as little endian bytes."""
    unit = units.get(value.vr, 0)
    data = value.raw if units is NUMBERS and value.raw is not None else value.value
    if not isinstance(data, bytes) or unit < 2 or len(data) % unit:
        return data
    return np.frombuffer(data, f"{'<' if little else '>'}u{unit}").astype(f"<u{unit}").tobytes()


def differences(original: Dataset, received: Dataset) -> list[str]:
    """The elements whose values differ, by tag path; [] when the received data set holds the same values.

    Where the received data set is implicit VR it has no VR of its own and pydicom reads each element by the
    data dictionary's (PS3.5 A.1): an element whose VR in the original is another (a private element of an
    unknown creator, a value written with a VR that is not the dictionary's) is compared by its bytes."""
    return _differences(original, received, original.original_encoding[1], received.original_encoding[1],
                        received.original_encoding[0], "")


def _compared_tags(a: Dataset, b: Dataset) -> list[BaseTag]:
    """The tags of either data set, in order, but file meta, group lengths (retired, PS3.5 7.2) and trailing
    padding, which senders drop."""
    return sorted(t for t in set(a.keys()) | set(b.keys()) if t.group != 0x0002 and t.element != 0 and t != 0xFFFCFFFC)


def differing_tags(a: Dataset, b: Dataset) -> list[BaseTag]:
    """The top-level elements whose values differ, by tag (not file meta, group lengths or trailing padding): for
    data sets in the same transfer syntax, as ``factories.comparable`` compares them, bytes first."""
    same_order = a.original_encoding[1] == b.original_encoding[1]
    tags = _compared_tags(a, b)
    return [t for t in tags if t not in a or t not in b
            or not (_same_bytes(a.get_item(t), b.get_item(t), same_order) or a[t].value == b[t].value)]


def _pixels(ds: Dataset) -> np.ndarray | None:
    try:
        return ds.pixel_array
    except Exception:  # noqa: BLE001 - no decoder for it: its Pixel Data is compared as a value
        return None


def _differences(a: Dataset, b: Dataset, little_a: bool, little_b: bool, implicit_b: bool, where: str) -> list[str]:
    out = []
    pixel_data: tuple[_Value, _Value] | None = None
    tags = _compared_tags(a, b)
    for tag in tags:
        name = f"{where}({tag.group:04X},{tag.element:04X})"
        if tag not in a or tag not in b:
            out.append(f"{name} only in the {'received' if tag in b else 'original'}")
            continue
        if _same_bytes(a.get_item(tag), b.get_item(tag), little_a == little_b):
            continue
        va, vb = _read(a, tag), _read(b, tag)
        if va.vr == "SQ" and vb.vr == "SQ":
            if len(va.value) != len(vb.value):
                out.append(f"{name}: {len(va.value)} items, received {len(vb.value)}")
            for k, (ia, ib) in enumerate(zip(va.value, vb.value)):
                out += _differences(ia, ib, little_a, little_b, implicit_b, f"{name}[{k}].")
        elif tag == 0x7FE00010 and not where:
            pixel_data = va, vb  # as pixels below: 32-bit OW pixels are 32-bit numbers to pydicom
        else:
            out += _compare(name, va, vb, little_a, little_b, implicit_b)
    if pixel_data is not None:
        pixels_a, pixels_b = _pixels(a), _pixels(b)
        if pixels_a is None or pixels_b is None:
            out += _compare("Pixel Data", *pixel_data, little_a, little_b, implicit_b)
        elif not np.array_equal(pixels_a, pixels_b):
            out.append("pixel_array")
        elif "SegmentedRedPaletteColorLookupTableData" in a and not np.array_equal(
                apply_color_lut(pixels_a, a), apply_color_lut(pixels_b, b)):  # expanded in either byte order
            out.append("colours through the Segmented Palette Color LUTs")
    return out


def _same_bytes(ra: Any, rb: Any, same_order: bool) -> bool:  # noqa: ANN401 - RawDataElement or DataElement
    """Whether both values are still encoded and their bytes are the same for the same VR: then so are their
    values, with no need to decode them (pydicom's conversion of the DS values of contours and dose grids was
    most of a round trip's check). Text, OB and UN in any byte order; numbers only in the same one; sequences
    item by item (their items may hold numbers)."""
    if not (isinstance(ra, RawDataElement) and isinstance(rb, RawDataElement)):
        return False
    vr_a, vr_b = (raw.VR or _dictionary_vr(raw.tag) for raw in (ra, rb))  # implicit VR: the dictionary's, as
    if vr_a is None or vr_a != vr_b or vr_a == "SQ" or (vr_a in NUMBERS and not same_order):  # pydicom reads it
        return False
    return ra.value == rb.value


def _dictionary_vr(tag: BaseTag) -> str | None:
    try:
        vr = dictionary_VR(tag)
    except KeyError:  # private, or unknown to pydicom
        return None
    return vr if vr.isalpha() and len(vr) == 2 else None  # not "US or SS"


def _compare(name: str, va: _Value, vb: _Value, little_a: bool, little_b: bool, implicit_b: bool) -> list[str]:
    if va.vr == vb.vr:
        return [] if _numbers(va, little_a, WORDS) == _numbers(vb, little_b, WORDS) else [name]
    if not implicit_b:
        return [f"{name}: VR {va.vr}, received {vb.vr}"]
    return [] if _numbers(va, little_a, NUMBERS) == _numbers(vb, little_b, NUMBERS) else [name]
