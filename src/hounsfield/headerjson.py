"""DICOM JSON (PS3.18 F.2) straight from an encoded dataset, without building pydicom elements.

Ingest needs every received header as DICOM JSON (for C-FIND answers, QIDO-RS and WADO-RS metadata) and the
byte range of its Pixel Data (to check the dataset is complete). pydicom's ``dcmread`` + ``to_json_dict``
costs ~10 ms for a CT header; walking the bytes once costs a fraction of that. Values are rendered as
pydicom renders them (DS as numbers, IS as integers, PN as component groups, AT as hex), so the JSON is the
same whichever path produced it; anything this walker does not understand raises ``HeaderError`` and the
caller falls back to pydicom.
"""

from __future__ import annotations

import base64
import functools
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Callable

from pydicom import datadict
from pydicom.charset import convert_encodings, decode_bytes

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
# VRs whose explicit VR length field has 4 bytes (PS3.5 7.1.2, Table 7.1-1); the one list of them.
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
LONG_VR_BYTES = frozenset(vr.encode() for vr in LONG_VRS)
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
SINGLE_TEXT_VRS = {"LT", "ST", "UT", "UR"}
CHARSET_VRS = {"SH", "LO", "ST", "LT", "UC", "UT", "PN"}
EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
DEFLATED = {"1.2.840.10008.1.2.1.99"}


class HeaderError(ValueError):
    """The bytes are not something this walker reads; use pydicom instead."""


class Truncated(HeaderError):
    """The dataset declares more bytes than it holds: no reader can make it whole."""


class _Undefined(Exception):
    """An undefined length met while skimming: the sequence must be decoded to find its end."""


class TooDeep(HeaderError):
    """Sequences nest deeper than the archive takes (``max_depth``): refused, never handed to pydicom, whose
    reader and JSON writer recurse once per level (a 37 KB dataset nested 1,000 deep ends in RecursionError)."""


# Deepest nesting of sequences accepted by default. The deepest real objects are SR content trees and RT
# structure sets, a handful of levels; dcmtk's and pydicom's readers have no limit at all.
MAX_DEPTH = 64


@dataclass(frozen=True)
class ParsedHeader:
    json: dict[str, Any]  # the dataset (not the file meta) without Pixel Data and trailing padding
    meta: dict[str, Any]  # the file meta group, when present
    transfer_syntax_uid: str
    has_file_meta: bool
    pixel_data_offset: int | None  # of the Pixel Data element in the (inflated) dataset bytes


def _dictionary_vr(tag: int, pixel_representation: int) -> str:
    if tag & 0xFFFF == 0:
        return "UL"  # group length
    if (tag >> 16) % 2:
        return "LO" if 0x0010 <= tag & 0xFFFF <= 0x00FF else "UN"  # private creator, or unknown private
    try:
        vr = datadict.dictionary_VR(tag)
    except KeyError:
        return "UN"
    if vr == "US or SS":
        return "SS" if pixel_representation == 1 else "US"
    if vr in ("OB or OW", "US or OW", "US or SS or OW"):
        return "OW"
    return vr


# Every pair of upper-case ASCII letters, as the VR field of an explicit VR element holds it, and its name: a
# dictionary look-up instead of a decode and two checks per element (the walk's hottest line).
_VR_NAMES = {bytes((a, b)): chr(a) + chr(b) for a in range(65, 91) for b in range(65, 91)}


@functools.lru_cache(maxsize=4096)
def _key(tag: int) -> str:
    """The DICOM JSON key of a tag (PS3.18 F.2.1.1: eight upper-case hex digits)."""
    return f"{tag:08X}"


class _Walker:
    def __init__(self, data: bytes, *, implicit: bool, little: bool, bulk: Callable[[int], str],
                 threshold: int, only: frozenset[int] | None = None, max_depth: int = MAX_DEPTH) -> None:
        self.data = data
        self.depth = 0  # of the sequence being read
        self.max_depth = max_depth
        self.only = only
        self.implicit = implicit
        self.order = "<" if little else ">"
        self._tag = struct.Struct(self.order + "HH").unpack_from
        self._u32 = struct.Struct(self.order + "I").unpack_from
        self._u16 = struct.Struct(self.order + "H").unpack_from
        self.bulk = bulk
        self.threshold = threshold
        self.encodings = ["iso8859"]
        self.pixel_representation = 0
        self.pixel_data_offset: int | None = None

    def header(self, pos: int) -> tuple[int, str | None, int, int]:
        """(tag, VR or None for implicit, value length, value start) of the element at ``pos``."""
        data = self.data
        if pos + 8 > len(data):
            raise Truncated(f"dataset ends inside an element header at byte {pos} (truncated)")
        group, elem = self._tag(data, pos)
        tag = group << 16 | elem
        if group == 0xFFFE or self.implicit:
            return tag, None, self._u32(data, pos + 4)[0], pos + 8
        vr = _VR_NAMES.get(data[pos + 4:pos + 6])
        if vr is None:  # not two upper-case letters: some writers put implicit elements in explicit datasets
            return tag, None, self._u32(data, pos + 4)[0], pos + 8
        if vr in LONG_VRS:
            if pos + 12 > len(data):
                raise Truncated("dataset ends inside an element header (truncated)")
            return tag, vr, self._u32(data, pos + 8)[0], pos + 12
        return tag, vr, self._u16(data, pos + 6)[0], pos + 8

    def dataset(self, pos: int, end: int, *, top: bool) -> tuple[dict[str, Any], int]:
        """Elements from ``pos`` until ``end`` (or an item delimiter when ``end`` is None)."""
        out: dict[str, Any] = {}
        data = self.data
        size = len(data)
        header = self.header
        # explicit VR little endian, nearly every dataset: the element header read here, as ``header`` reads it
        fast = not self.implicit and self.order == "<"
        unpack_header, unpack_ul = _EXPLICIT_LE_HEADER.unpack_from, _UL_LE.unpack_from
        while pos < end:
            if fast and pos + 12 <= size:
                group, elem, vr_bytes, length = unpack_header(data, pos)
                vr = _VR_NAMES.get(vr_bytes)
                if vr is None or group == 0xFFFE:
                    tag, vr, length, start = header(pos)
                else:
                    tag = group << 16 | elem
                    if vr in LONG_VRS:
                        length, start = unpack_ul(data, pos + 8)[0], pos + 12
                    else:
                        start = pos + 8
            else:
                tag, vr, length, start = header(pos)
            if tag == ITEM_END:
                return out, start
            if vr is None:
                vr = "SQ" if length == UNDEFINED and tag not in PIXEL_DATA_TAGS else \
                    _dictionary_vr(tag, self.pixel_representation)
            if top and tag in PIXEL_DATA_TAGS:
                self.pixel_data_offset = pos
            if top and self.only is not None and tag not in self.only and length != UNDEFINED:
                pos = self.skim(start, length) if vr == "SQ" else self.skip(tag, start, length)
                continue
            if vr == "SQ" or (length == UNDEFINED and tag not in PIXEL_DATA_TAGS):
                items, pos = self.sequence(start, length)
                out[_key(tag)] = {"vr": "SQ", "Value": items}
                continue
            if length == UNDEFINED:  # encapsulated Pixel Data: fragments up to the sequence delimiter
                pos = self.skip_fragments(start)
                continue
            pos = start + length if start + length <= size else self.skip(tag, start, length)
            if (top and tag in PIXEL_DATA_TAGS) or tag >> 16 == 0xFFFC:
                continue
            if vr == "UN" and tag >> 16 & 1 == 0 and _dictionary_vr(tag, 0) != "UN":
                out[_key(tag)] = self.known_un(tag, data[start:pos])  # as pydicom: UN of a known tag
                continue
            out[_key(tag)] = self.element(tag, vr, data[start:pos])
        return out, pos

    def skip(self, tag: int, start: int, length: int) -> int:
        """The end of a value of ``length`` bytes at ``start``, checked against the data received."""
        if start + length > len(self.data):
            raise Truncated(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes but "
                            f"only {len(self.data) - start} were received (truncated)")
        return start + length

    def known_un(self, tag: int, raw: bytes) -> dict[str, Any]:
        """A public element sent with VR UN: its value is implicit VR little endian (PS3.5 6.2.2)."""
        vr = _dictionary_vr(tag, self.pixel_representation)
        if vr == "SQ":
            inner = _Walker(raw, implicit=True, little=True, bulk=self.bulk, threshold=self.threshold,
                            max_depth=self.max_depth)
            inner.encodings, inner.depth = self.encodings, self.depth
            items, _ = inner.sequence(0, len(raw))
            return {"vr": "SQ", "Value": items}
        order, self.order = self.order, "<"
        try:
            return self.element(tag, vr, raw)
        finally:
            self.order = order

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise TooDeep(f"sequences nest deeper than {self.max_depth} levels")

    def sequence(self, pos: int, length: int) -> tuple[list[dict[str, Any]], int]:
        end = len(self.data) if length == UNDEFINED else pos + length
        if end > len(self.data):
            raise Truncated("sequence runs past the end of the dataset (truncated)")
        self._enter()
        items = []
        while pos < end:
            tag, _, item_len, start = self.header(pos)
            if tag == SEQ_END:
                self.depth -= 1
                return items, start
            if tag != ITEM:
                raise HeaderError(f"unexpected tag {tag:08X} inside a sequence")
            item_end = len(self.data) if item_len == UNDEFINED else start + item_len
            if item_end > end:
                raise Truncated("a sequence item runs past the end of its sequence (truncated)")
            item, pos = self.dataset(start, item_end, top=False)
            if pos > item_end:  # as ``_skim`` says it: the quick check of a C-STORE and this parse agree
                raise Truncated("a sequence item's elements run past the item (truncated)")
            items.append(item)
        if length == UNDEFINED:
            raise Truncated("sequence has no delimiter (truncated)")
        self.depth -= 1
        return items, pos

    def skim(self, pos: int, length: int) -> int:
        """The end of a sequence of defined ``length`` at ``pos``, its structure checked (item and element
        lengths within bounds, nesting within ``max_depth``) without decoding values: what the quick check of
        a received instance (``only``) needs of the sequences it does not read. An undefined length inside
        has to be read to be found, so such a sequence is decoded instead."""
        depth = self.depth
        try:
            return self._skim(pos, length)
        except _Undefined:
            self.depth = depth
            return self.sequence(pos, length)[1]

    def _skim(self, pos: int, length: int) -> int:
        end = self.skip(ITEM, pos, length)
        self._enter()
        while pos < end:
            tag, _, item_len, pos = self.header(pos)
            if tag != ITEM:
                raise HeaderError(f"unexpected tag {tag:08X} inside a sequence")
            if item_len == UNDEFINED:
                raise _Undefined
            item_end = self.skip(tag, pos, item_len)
            if item_end > end:
                raise Truncated("a sequence item runs past the end of its sequence (truncated)")
            while pos < item_end:
                tag, vr, elem_len, start = self.header(pos)
                if elem_len == UNDEFINED:
                    raise _Undefined
                nested = (vr or _dictionary_vr(tag, 0)) == "SQ"
                pos = self._skim(start, elem_len) if nested else self.skip(tag, start, elem_len)
            if pos != item_end:
                raise Truncated("a sequence item's elements run past the item (truncated)")
        self.depth -= 1
        return end

    def skip_fragments(self, pos: int) -> int:
        while True:
            tag, _, length, start = self.header(pos)
            if tag == SEQ_END:
                return start
            if tag != ITEM or start + length > len(self.data):
                raise Truncated("encapsulated Pixel Data is truncated")
            pos = start + length

    def element(self, tag: int, vr: str, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {"vr": vr}
        if vr in BINARY_VRS:
            if len(raw) > self.threshold:
                return {"vr": vr, "BulkDataURI": self.bulk(tag)}
            return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}
        if vr in NUMBER_FORMATS:
            fmt = NUMBER_FORMATS[vr]
            count = len(raw) // struct.calcsize(fmt)
            values = list(struct.unpack_from(f"{self.order}{count}{fmt}", raw))
            if tag == 0x00280103:
                self.pixel_representation = values[0]
            return {"vr": vr, "Value": values}
        if vr == "AT":
            count = len(raw) // 4
            pairs = struct.unpack_from(f"{self.order}{2 * count}H", raw)
            return {"vr": vr, "Value": [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, 2 * count, 2)]}
        if vr in CHARSET_VRS:
            text = decode_bytes(raw, self.encodings, {0x5C, 0x3D, 0x5E} if vr == "PN" else {0x5C})
        else:
            text = raw.decode("latin-1")
        if tag == 0x00080005:
            self.encodings = [v.strip() or "ISO_IR 6" for v in text.split("\\")]
            try:
                self.encodings = convert_encodings(self.encodings)
            except ValueError as exc:  # a NUL in a term: codecs.lookup refuses it (found by test_fuzz_parsers)
                raise HeaderError(f"Specific Character Set {text[:64]!r} names no character set: {exc}") from exc
        values = _text_values(vr, text)
        return {"vr": vr, "Value": values} if values else {"vr": vr}


def _number(vr: str, text: str) -> int | float | str:
    """A DS or IS value as a JSON number (PS3.18 F.2.3); an invalid one as received, and so is a DS of NaN or
    Infinity, which JSON numbers cannot hold (RFC 8259 6)."""
    try:
        if vr == "IS":
            return int(float(text)) if "." in text or "e" in text.lower() else int(text)
        number = float(text)
    except (ValueError, OverflowError):  # OverflowError: an IS of 1e999 (int of infinity)
        return text
    return number if math.isfinite(number) else text


def _person_name(text: str) -> dict[str, str] | None:
    groups = text.split("=")
    named = {k: g for k, g in zip(("Alphabetic", "Ideographic", "Phonetic"), groups) if g}
    return named or None


def _text_values(vr: str, text: str) -> list[Any]:
    if vr in SINGLE_TEXT_VRS:
        text = text.rstrip(" \x00")
        return [text] if text else []
    stripped = text.rstrip("\x00 ")
    if not stripped:
        return []
    values: list[Any] = []
    for part in stripped.split("\\"):
        if vr in ("AE", "DS", "IS", "UI"):  # as pydicom: only these lose padding inside each value
            part = part.strip(" \x00")
        if vr in ("DS", "IS"):
            values.append(_number(vr, part) if part else None)
        elif vr == "PN":
            values.append(_person_name(part))
        else:
            values.append(part)
    return values


_EXPLICIT_LE_HEADER = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_UL_LE = struct.Struct("<I")


def _scan_keys(walker: _Walker, pos: int, end: int) -> dict[str, Any]:
    """``walker.dataset(pos, end, top=True)`` of an explicit VR little endian dataset when only a few keys are
    wanted (``walker.only``): the same checks, without a method call per element, since this runs before
    every C-STORE acknowledgement. Keys are decoded by the walker; anything unusual (undefined length, a
    delimiter, an implicit VR element) hands the rest of the dataset to it."""
    data, only, out = walker.data, walker.only or frozenset(), {}
    size = len(data)
    unpack_header, unpack_ul = _EXPLICIT_LE_HEADER.unpack_from, _UL_LE.unpack_from
    while pos < end:
        if pos + 12 > size:
            break  # let the walker say what is missing
        group, elem, vr_bytes, length = unpack_header(data, pos)
        vr = _VR_NAMES.get(vr_bytes)
        if vr in LONG_VRS:
            length, start = unpack_ul(data, pos + 8)[0], pos + 12
        else:
            start = pos + 8
        tag = group << 16 | elem
        if length == UNDEFINED or group == 0xFFFE or vr is None:
            break
        if tag in only:
            found, pos = walker.dataset(pos, min(start + length, end), top=True)
            out.update(found)
            continue
        if tag in PIXEL_DATA_TAGS:
            walker.pixel_data_offset = pos
        pos = walker.skim(start, length) if vr == "SQ" else walker.skip(tag, start, length)
    if pos < end:
        rest, pos = walker.dataset(pos, end, top=True)
        out.update(rest)
    return out


def parse(data: bytes, bulk: Callable[[int], str] = lambda _tag: "", threshold: int = 1024,
          only: frozenset[int] | None = None, max_depth: int = MAX_DEPTH) -> ParsedHeader:
    """Parse a Part-10 file or a bare dataset (implicit VR little endian assumed without file meta).

    With ``only``, top-level elements with other tags are checked for length but not decoded (the
    Specific Character Set is always decoded): a quick check that the dataset is whole, with a few keys.
    Either way, sequences nested deeper than ``max_depth`` raise ``TooDeep``.
    """
    meta: dict[str, Any] = {}
    pos = 0
    has_meta = len(data) >= 132 and data[128:132] == b"DICM"
    if has_meta:
        meta_walker = _Walker(data, implicit=False, little=True, bulk=bulk, threshold=threshold)
        tag, _, length, start = meta_walker.header(132)
        if tag != 0x00020000:
            raise HeaderError("file meta has no group length")  # pydicom copes with this; let it
        group_end = start + struct.unpack_from("<I", data, start)[0]
        meta, pos = meta_walker.dataset(132, group_end, top=False)
        ts = (meta.get("00020010", {}).get("Value") or [""])[0]
        if not ts or not isinstance(ts, str):  # not a UID: sent with another VR (a PN is a dict; found by fuzzing)
            raise HeaderError("file meta without Transfer Syntax UID")
    else:
        ts = IMPLICIT_LE
        if data[:4] in (b"\x08\x00\x05\x00",) and data[4:6].isalpha():
            ts = EXPLICIT_LE
    if ts in DEFLATED:
        try:
            data = zlib.decompress(data[pos:], -15)
        except zlib.error as exc:
            raise HeaderError(f"deflated dataset cannot be inflated: {exc}") from exc
        pos = 0
        ts_implicit, ts_little = False, True
    else:
        ts_implicit, ts_little = ts == IMPLICIT_LE, ts != EXPLICIT_BE
    walker = _Walker(data, implicit=ts_implicit, little=ts_little, bulk=bulk, threshold=threshold,
                     only=None if only is None else only | {0x00080005}, max_depth=max_depth)
    if only is not None and not ts_implicit and ts_little:
        dataset = _scan_keys(walker, pos, len(data))
    else:
        dataset, _ = walker.dataset(pos, len(data), top=True)
    return ParsedHeader(dataset, meta, ts, has_meta, walker.pixel_data_offset)
