"""Reading what the index needs from an encoded instance, without decoding its pixel data.

The archive keeps the bytes it received; this module reads the header (everything before Pixel Data),
checks that the encoded dataset is complete, and turns the header into DICOM JSON (PS3.18 F.2) with bulk
data left out, which is what the index keeps for C-FIND answers, QIDO-RS and WADO-RS metadata.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from hounsfield.errors import InvalidDataset

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024  # binary values above this size are bulk data, not metadata
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0"
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}


@dataclass(frozen=True)
class Header:
    """The header of one encoded instance and where its dataset ends."""

    dataset: Dataset
    transfer_syntax_uid: str
    has_file_meta: bool

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def _element_header(head: bytes, order: str, implicit: bool) -> tuple[int, int, int]:
    """(tag, value length, header length) of the element whose first bytes are ``head``."""
    group, elem = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | elem
    if group == 0xFFFE or implicit or not head[4:6].isalpha():  # items, or Pixel Data written implicitly
        return tag, struct.unpack(order + "I", head[4:8])[0], 8
    if head[4:6] in _LONG_LENGTH_VRS:
        return tag, struct.unpack(order + "I", head[8:12])[0], 12
    return tag, struct.unpack(order + "H", head[6:8])[0], 8


def _check_complete(fp: BinaryIO, size: int, little: bool, implicit: bool) -> None:
    """Walk the elements from ``fp`` (where header parsing stopped: Pixel Data and what follows it) and raise
    when one declares more bytes than the stream holds (PS3.5 7.1, 7.5, A.4)."""
    order = "<" if little else ">"
    pos = fp.tell()
    while pos < size:
        fp.seek(pos)
        head = fp.read(12)
        if len(head) < 8:
            raise InvalidDataset(f"dataset ends inside an element header at byte {pos} (truncated)")
        tag, length, header_len = _element_header(head, order, implicit)
        pos += header_len
        if length != 0xFFFFFFFF:
            pos += length
            if pos > size:
                raise InvalidDataset(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {length} bytes but "
                                     f"only {size - pos + length} were received (truncated)")
            continue
        fp.seek(pos)  # undefined length: look for the end of the sequence or of the encapsulated fragments
        rest = fp.read()
        end = rest.find(_SEQ_DELIMITER if little else b"\xff\xfe\xe0\xdd")
        if end < 0:
            raise InvalidDataset(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) has no sequence delimiter "
                                 "(truncated)")
        pos += end + 8


def read_header(source: Path | bytes) -> Header:
    """Read the header of a Part-10 file or a raw dataset and check it is complete and identifiable."""
    fp: BinaryIO = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    try:
        size = len(source) if isinstance(source, (bytes, bytearray)) else os.fstat(fp.fileno()).st_size
        try:
            ds = dcmread(fp, stop_before_pixels=True, force=True)
        except (InvalidDicomError, EOFError, struct.error, ValueError, OverflowError, KeyError) as exc:
            raise InvalidDataset(f"not a readable DICOM dataset: {exc}") from exc
        meta = getattr(ds, "file_meta", None)
        has_meta = meta is not None and "TransferSyntaxUID" in meta
        implicit, little = ds.original_encoding
        if implicit is None:
            raise InvalidDataset("not a DICOM dataset (no element could be read)")
        _check_complete(fp, size, bool(little), bool(implicit))
    finally:
        fp.close()
    missing = [k for k in REQUIRED_UIDS if not str(ds.get(k, "") or "").strip()]
    if missing:
        raise InvalidDataset(f"dataset has no {', '.join(missing)}")
    if has_meta:
        ts = str(meta.TransferSyntaxUID)
    else:
        ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        if not little:
            ts = "1.2.840.10008.1.2.2"
    return Header(ds, ts, has_meta)


def file_meta_for(ds: Dataset, transfer_syntax_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax_uid
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def part10_prefix(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Preamble, 'DICM' and file meta to put in front of a raw dataset so that it becomes a Part-10 file."""
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, file_meta_for(ds, transfer_syntax_uid), enforce_standard=True)
    return buf.getvalue()


def to_json(ds: Dataset, bulk_uri: str | None = None) -> dict[str, Any]:
    """DICOM JSON of ``ds`` without Pixel Data; other large binary values become BulkDataURIs (PS3.18 F.2.7)."""

    def bulk(elem: DataElement) -> str:
        return f"{bulk_uri}/{elem.tag:08X}" if bulk_uri else ""

    clean = ds
    dropped = [t for t in ds.keys() if t in (0x7FE00010, 0x7FE00008, 0x7FE00009) or t.group == 0xFFFC]
    if dropped:  # pixel data and trailing padding are never metadata
        clean = Dataset({t: ds[t] for t in ds.keys() if t not in dropped})
    try:
        return clean.to_json_dict(BULK_THRESHOLD, bulk)
    except (ValueError, TypeError, OverflowError) as exc:
        # An element that has no JSON form (bad VR value): keep the rest, drop that element.
        out: dict[str, Any] = {}
        for elem in clean:
            one = Dataset()
            one.add(elem)
            try:
                out.update(one.to_json_dict(BULK_THRESHOLD, bulk))
            except (ValueError, TypeError, OverflowError):
                continue
        if not out:
            raise InvalidDataset(f"header cannot be represented as DICOM JSON: {exc}") from exc
        return out


def pack_json(value: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 1)


def unpack_json(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))
