"""Lossless conversion of an encoded data set between the uncompressed transfer syntaxes: Implicit VR Little
Endian (PS3.5 A.1), Explicit VR Little Endian (A.2), Deflated Explicit VR Little Endian (A.5) and Explicit VR
Big Endian (A.3, retired, still written by old modalities).

A C-GET or C-MOVE receiver that does not accept the syntax an instance was stored in gets it in one of these.
Between them only the encoding differs, never a value, so the conversion works on the bytes: element headers
are rewritten for the target, binary numbers are byte-swapped when the byte order changes (PS3.5 7.3), and
every other value (text, OB, UN) is copied as it is. pydicom's conversion is not used for this: its writer
keeps OW/OF/OD/OL/OV values in the byte order they were read in (and raw US/SS values with them), so a big
endian LUT or image comes out byte-swapped, and it decodes and re-encodes every text value on the way.

An implicit VR data set carries no VRs; each element gets the one pydicom reads it with: the data dictionary's
(PS3.6), the private dictionary's for a private element of a known creator, UN when unknown (PS3.5 6.2.2),
and for the ambiguous entries of the dictionary the VR the standard gives them (``_Resolver.vr``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
from pydicom import datadict
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from hounsfield.headerjson import ITEM, ITEM_END, LONG_VRS, SEQ_END, UNDEFINED


@dataclass(frozen=True)
class Encoding:
    implicit: bool
    little: bool
    deflated: bool = False


ENCODINGS = {
    ExplicitVRLittleEndian: Encoding(implicit=False, little=True),
    ImplicitVRLittleEndian: Encoding(implicit=True, little=True),
    DeflatedExplicitVRLittleEndian: Encoding(implicit=False, little=True, deflated=True),
    ExplicitVRBigEndian: Encoding(implicit=False, little=False),
}
_IMPLICIT_LE = ENCODINGS[ImplicitVRLittleEndian]
# Bytes per binary number of a VR, the unit a change of byte order reverses (PS3.5 6.2 Table 6.2-1, 7.3); AT
# is a pair of 16-bit numbers. Not listed, never swapped: text, OB, and UN (implicit VR little endian always).
SWAP_UNITS = {"US": 2, "SS": 2, "OW": 2, "AT": 2, "UL": 4, "SL": 4, "FL": 4, "OF": 4, "OL": 4,
              "FD": 8, "OD": 8, "SV": 8, "UV": 8, "OV": 8}
VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF",
                 "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
                 "UR", "US", "UT", "UV"})
PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
PIXEL_DATA, WAVEFORM_DATA = 0x7FE00010, 0x54001010
BITS_ALLOCATED, WAVEFORM_BITS_ALLOCATED = 0x00280100, 0x003A021A
PIXEL_REPRESENTATION, LUT_DESCRIPTOR = 0x00280103, 0x00283002


class TranscodeError(ValueError):
    """The data set cannot be converted: it is not a well-formed uncompressed data set."""


@dataclass
class _Item:
    elements: list[_Element]
    undefined: bool  # of undefined length, ended by an Item Delimitation Item (PS3.5 7.5.2)


@dataclass
class _Element:
    tag: int
    vr: str  # for an element read without a VR, the dictionary's entry (maybe "US or SS") until resolved
    value: memoryview | list[_Item]  # the encoded value, or a sequence's items
    undefined: bool = False  # SQ, or UN holding implicit VR items up to its Sequence Delimitation Item
    from_dictionary: bool = False  # the VR is not the data set's own but the dictionary's
    unit: int = 0  # bytes per number reversed by a change of byte order, set by ``_Resolver``


class _Reader:
    def __init__(self, data: memoryview, encoding: Encoding) -> None:
        self.data = data
        self.implicit = encoding.implicit
        self.order = "<" if encoding.little else ">"

    def header(self, pos: int) -> tuple[int, str | None, int, int]:
        """(tag, VR or None where the encoding has none, value length, value start) at ``pos``. Items and
        delimiters have no VR in any transfer syntax (PS3.5 7.5)."""
        if pos + 8 > len(self.data):
            raise TranscodeError(f"data set ends inside an element header at byte {pos}")
        group, element = struct.unpack_from(self.order + "HH", self.data, pos)
        tag = group << 16 | element
        if self.implicit or group == 0xFFFE:
            return tag, None, struct.unpack_from(self.order + "I", self.data, pos + 4)[0], pos + 8
        vr = bytes(self.data[pos + 4:pos + 6]).decode("latin-1")
        if vr not in VRS:
            raise TranscodeError(f"({group:04X},{element:04X}) has an unknown VR {vr!r}")
        if vr in LONG_VRS:  # PS3.5 7.1.2: 2 reserved bytes, then a 32-bit length
            if pos + 12 > len(self.data):
                raise TranscodeError(f"data set ends inside an element header at byte {pos}")
            return tag, vr, struct.unpack_from(self.order + "I", self.data, pos + 8)[0], pos + 12
        return tag, vr, struct.unpack_from(self.order + "H", self.data, pos + 6)[0], pos + 8

    def dataset(self, pos: int, end: int, undefined: bool) -> tuple[list[_Element], int]:
        """The elements from ``pos`` to ``end`` or, in an item of undefined length, to its delimiter."""
        elements: list[_Element] = []
        creators: dict[int, str] = {}  # private block (group << 8 | block) -> its creator (PS3.5 7.8.1)
        while pos < end:
            tag, vr, length, start = self.header(pos)
            if tag == ITEM_END and undefined:
                return elements, start
            if tag >> 16 == 0xFFFE:
                raise TranscodeError(f"unexpected delimiter ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos}")
            element, pos = self.element(tag, vr or self.implicit_vr(tag, length, creators), length, start)
            element.from_dictionary = vr is None
            if self.implicit and tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
                creators[tag >> 16 << 8 | tag & 0xFF] = bytes(element.value).decode("latin-1").strip(" \x00")
            elements.append(element)
        if undefined:
            raise TranscodeError("item of undefined length has no delimiter (truncated)")
        return elements, pos

    def implicit_vr(self, tag: int, length: int, creators: dict[int, str]) -> str:
        """The VR of an element read without one, as pydicom reads it (``pydicom.hooks.raw_element_vr``)."""
        if length == UNDEFINED:
            return "SQ"  # only a sequence has an undefined length in an uncompressed data set (PS3.5 7.5)
        if tag & 0xFFFF == 0:
            return "UL"  # group length (PS3.5 7.2)
        try:
            if not tag >> 16 & 1:
                return datadict.dictionary_VR(tag)
            if tag & 0xFFFF <= 0xFF:
                return "LO" if tag & 0xFFFF >= 0x10 else "UN"  # private creator (PS3.5 7.8.1)
            creator = creators.get(tag >> 16 << 8 | tag >> 8 & 0xFF)
            return datadict.private_dictionary_VR(tag, creator) if creator else "UN"
        except KeyError:
            return "UN"  # PS3.5 6.2.2

    def element(self, tag: int, vr: str, length: int, start: int) -> tuple[_Element, int]:
        if length == UNDEFINED and tag in PIXEL_DATA_TAGS:
            raise TranscodeError("encapsulated Pixel Data in an uncompressed data set")
        if vr == "SQ":
            items, end = self.sequence(start, length)
            return _Element(tag, vr, items, length == UNDEFINED), end
        if length == UNDEFINED:
            if vr != "UN":
                raise TranscodeError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} has an undefined length")
            # A sequence sent as UN: implicit VR little endian items up to the delimiter (PS3.5 6.2.2), kept as
            # they are, the delimiter with them.
            end = _Reader(self.data, _IMPLICIT_LE).sequence(start, UNDEFINED)[1]
            return _Element(tag, vr, self.data[start:end], True), end
        end = start + length
        if end > len(self.data):
            raise TranscodeError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes but only "
                                 f"{len(self.data) - start} follow (truncated)")
        return _Element(tag, vr, self.data[start:end]), end

    def sequence(self, pos: int, length: int) -> tuple[list[_Item], int]:
        end = len(self.data) if length == UNDEFINED else pos + length
        if end > len(self.data):
            raise TranscodeError("sequence runs past the end of the data set (truncated)")
        items = []
        while pos < end:
            tag, _, item_length, start = self.header(pos)
            if tag == SEQ_END and length == UNDEFINED:
                return items, start
            if tag != ITEM:
                raise TranscodeError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where a sequence item should be")
            item_end = end if item_length == UNDEFINED else start + item_length
            if item_end > end:
                raise TranscodeError("sequence item runs past the end of its sequence (truncated)")
            elements, pos = self.dataset(start, item_end, item_length == UNDEFINED)
            items.append(_Item(elements, item_length == UNDEFINED))
        if length == UNDEFINED:
            raise TranscodeError("sequence of undefined length has no delimiter (truncated)")
        return items, pos


class _Resolver:
    """Gives every element its final VR and swap unit, once the whole data set is read: the VR of an ambiguous
    element depends on elements that may come after it (a Pixel Representation follows a Zero Velocity Pixel
    Value, an item's ancestors hold the Pixel Representation of its values)."""

    def __init__(self, order: str) -> None:
        self.order = order

    def number(self, element: _Element | None, default: int) -> int:
        """The first value of a US or SS element, one of those read to resolve a VR or a unit."""
        if element is None or element.vr == "SQ" or len(element.value) < 2:
            return default
        return struct.unpack_from(self.order + "H", element.value)[0]  # type: ignore[arg-type]

    def resolve(self, elements: list[_Element], pixel_representation: int) -> None:
        siblings = {e.tag: e for e in elements}
        pixel_representation = self.number(siblings.get(PIXEL_REPRESENTATION), pixel_representation)
        for element in elements:
            if element.vr == "SQ":
                for item in element.value:
                    self.resolve(item.elements, pixel_representation)  # type: ignore[union-attr]
                continue
            element.vr = self.vr(element, siblings, pixel_representation)
            element.unit = self.unit(element, siblings)

    def vr(self, element: _Element, siblings: dict[int, _Element], pixel_representation: int) -> str:
        """The VR of an element whose dictionary entry leaves the choice to the data set, chosen as the standard
        does and as pydicom does after an implicit VR read (``pydicom.filewriter.correct_ambiguous_vr``)."""
        vr = element.vr
        if vr == "US or SS":
            # By the Pixel Representation of the image the values belong to, from the nearest data set that
            # has one (PS3.3 C.7.6.3.1, C.11.1.1.1: a LUT Descriptor's first and third values are unsigned
            # whatever its VR, which follows the second).
            return "SS" if pixel_representation == 1 else "US"
        if vr == "US or OW":  # LUT Data: US for a table of one entry (PS3.3 C.11.1.1.1)
            return "US" if self.number(siblings.get(LUT_DESCRIPTOR), 0) == 1 else "OW"
        if vr in ("OB or OW", "US or SS or OW", "OB_OW"):
            return "OW"  # what these are in implicit VR (PS3.5 A.1, 8.1.2, 8.2), kept in explicit VR (A.2, A.3)
        return vr if vr in VRS else "UN"

    def unit(self, element: _Element, siblings: dict[int, _Element]) -> int:
        """Bytes per number: the VR's (PS3.5 7.3), except that OW Pixel Data and Waveform Data of 32 or 64
        bits per value swap whole values, as pydicom reads them (its big endian RT Dose test files hold 32-bit
        pixels most significant byte first)."""
        unit = SWAP_UNITS.get(element.vr, 0)
        bits_tag = {PIXEL_DATA: BITS_ALLOCATED, WAVEFORM_DATA: WAVEFORM_BITS_ALLOCATED}.get(element.tag)
        if element.vr == "OW" and bits_tag is not None:
            bits = self.number(siblings.get(bits_tag), 16)
            return bits // 8 if bits in (32, 64) else unit
        return unit


class _Writer:
    def __init__(self, encoding: Encoding, swap: bool) -> None:
        self.implicit = encoding.implicit
        self.swap = swap  # the byte order changes
        self.order = "<" if encoding.little else ">"
        self.out: list[bytes | memoryview] = []

    def header(self, tag: int, vr: str, length: int) -> bytes:
        if self.implicit:
            return struct.pack(self.order + "HHI", tag >> 16, tag & 0xFFFF, length)
        if vr in LONG_VRS:
            return struct.pack(self.order + "HH2sHI", tag >> 16, tag & 0xFFFF, vr.encode(), 0, length)
        return struct.pack(self.order + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)

    def delimiter(self, tag: int, length: int = 0) -> bytes:
        return struct.pack(self.order + "HHI", 0xFFFE, tag & 0xFFFF, length)

    def dataset(self, elements: list[_Element]) -> int:
        """Append the encoded elements; the number of bytes. Group lengths are left out: they are retired in
        data sets (PS3.5 7.2) and would be wrong once element headers change size."""
        return sum(self.element(e) for e in elements if e.tag & 0xFFFF)

    def element(self, element: _Element) -> int:
        if element.vr == "SQ":
            at = len(self.out)
            self.out.append(b"")
            length = sum(self.item(item) for item in element.value)  # type: ignore[union-attr]
            if element.undefined:
                self.out.append(self.delimiter(SEQ_END))
            self.out[at] = self.header(element.tag, "SQ", UNDEFINED if element.undefined else length)
            return len(self.out[at]) + length + (8 if element.undefined else 0)
        value, vr = element.value, element.vr
        if element.undefined:  # a UN sequence, its delimiter included
            head = self.header(element.tag, vr, UNDEFINED)
        else:
            if not self.implicit and vr not in LONG_VRS and len(value) > 0xFFFF:
                vr = "UN"  # too long for a 16-bit length; read implicit, so little endian as UN is (PS3.5 6.2.2)
            elif self.swap and element.unit > 1:
                vr, value = _swapped(element)
            head = self.header(element.tag, vr, len(value))
        self.out += (head, value)  # type: ignore[arg-type]
        return len(head) + len(value)

    def item(self, item: _Item) -> int:
        at = len(self.out)
        self.out.append(b"")
        length = self.dataset(item.elements)
        if item.undefined:
            self.out.append(self.delimiter(ITEM_END))
        self.out[at] = self.delimiter(ITEM, UNDEFINED if item.undefined else length)
        return 8 + length + (8 if item.undefined else 0)


def _swapped(element: _Element) -> tuple[str, memoryview | bytes]:
    """VR and value with the byte order of each number reversed. A value that is not a whole number of them is
    kept as it is and written UN when its VR is only the dictionary's guess (an implicit VR private element of
    another VR than its creator's dictionary says, PS3.5 6.2.2); in any other element it is an error."""
    value = element.value
    if len(value) % element.unit == 0:  # type: ignore[arg-type]
        return element.vr, np.frombuffer(value, dtype=f"u{element.unit}").byteswap().tobytes()  # type: ignore
    if element.from_dictionary and element.tag not in PIXEL_DATA_TAGS:
        return "UN", value  # type: ignore[return-value]
    raise TranscodeError(f"({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) {element.vr} holds "
                         f"{len(value)} bytes, not a whole number of {element.unit}-byte values")


def _inflate(data: bytes) -> bytes:
    """A deflated data set (PS3.5 A.5); a padding byte after the deflate stream is left out."""
    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    except zlib.error as exc:
        raise TranscodeError(f"deflated data set cannot be inflated: {exc}") from exc


def _deflate(data: bytes) -> bytes:
    """Deflate a data set (PS3.5 A.5), padded to an even length as pynetdicom and pydicom pad it."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(data) + compressor.flush()
    return deflated + b"\x00" if len(deflated) % 2 else deflated


def convert(data: bytes, source: str, target: str) -> bytes:
    """The data set ``data``, encoded in the uncompressed transfer syntax ``source``, encoded in ``target``
    (both keys of ``ENCODINGS``). Raises TranscodeError for a data set that cannot be read as one."""
    if source not in ENCODINGS or target not in ENCODINGS:
        raise TranscodeError(f"no conversion from {source} to {target}: not both uncompressed")
    source_encoding, target_encoding = ENCODINGS[source], ENCODINGS[target]
    raw = memoryview(_inflate(data) if source_encoding.deflated else data)
    reader = _Reader(raw, source_encoding)
    elements, _ = reader.dataset(0, len(raw), undefined=False)
    _Resolver(reader.order).resolve(elements, pixel_representation=0)
    writer = _Writer(target_encoding, swap=source_encoding.little != target_encoding.little)
    writer.dataset(elements)
    encoded = b"".join(writer.out)
    return _deflate(encoded) if target_encoding.deflated else encoded
