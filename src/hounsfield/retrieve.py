"""Choosing the transfer syntax an instance travels in (C-GET, C-MOVE): as stored when the receiver accepts
it, otherwise converted to an uncompressed one the receiver accepted (losslessly from an uncompressed one, by
``transcode``; after decompression from a compressed one, when a codec allows), otherwise sent as stored so
that the sub-operation fails and is counted (PS3.4 C.4.2.3 / C.4.3.3)."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.dsutils import encode

from hounsfield import transcode
from hounsfield.headerjson import LONG_VR_BYTES
from hounsfield.archive import StoredInstance

log = logging.getLogger(__name__)
# The uncompressed transfer syntaxes (``transcode`` converts between them), in the order one is chosen when the
# stored one is not accepted: the two every peer supports, then deflated (PS3.5 A.5), big endian (A.3, retired).
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)


def proposed_syntaxes(stored_ts: str) -> list[list[str]]:
    """Presentation contexts to propose (C-MOVE) for an instance stored in ``stored_ts``, one list per context:
    an uncompressed one in a context with every other uncompressed syntax after it (whichever the receiver
    picks, the conversion is lossless); a compressed one in a context of its own, so that a receiver taking
    it gets it as stored, and the uncompressed ones in another."""
    if stored_ts in NATIVE:
        return [[stored_ts, *(ts for ts in NATIVE if ts != stored_ts)]]
    return [[stored_ts], list(NATIVE)]


def _dataset_offset(data: bytes) -> int:
    """Where the dataset starts in a Part-10 file's bytes: after preamble, prefix and file meta group."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part-10 file with a file meta group length")
    return 144 + struct.unpack_from("<I", data, 140)[0]


def _dataset_bytes(instance: StoredInstance) -> bytes:
    """The dataset as stored: the Part-10 file without preamble and file meta group."""
    data = instance.path.read_bytes()
    try:
        return data[_dataset_offset(data):]
    except ValueError as exc:
        raise ValueError(f"{instance.path} is {exc}") from None


class StoredDataset(Dataset):
    """An instance sent exactly as stored. pynetdicom reads only its identity and transfer syntax from the
    dataset it sends; ``dimse/store_send.py`` writes the stored dataset bytes as they are, and
    ``dimse/store_fastpath.py`` hands them over where pynetdicom would encode a decoded copy (5-10 ms for a CT
    slice, the bulk of a C-GET or C-MOVE sub-operation). ``data`` is the whole file when it has been read
    already (to find its transfer syntax): each file is read once."""

    def __init__(self, instance: StoredInstance, syntax: UID, data: bytes | None = None) -> None:
        super().__init__()
        self.SOPClassUID = instance.sop_class_uid
        self.SOPInstanceUID = instance.sop_instance_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = syntax
        self.set_original_encoding(syntax.is_implicit_VR, syntax.is_little_endian)
        self.instance = instance
        self._file = data

    def stored_encoding(self) -> tuple[bool, bool, bool]:
        """(implicit VR, little endian, deflated) of the bytes ``stored_bytes`` returns."""
        syntax = UID(self.file_meta.TransferSyntaxUID)
        return syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated

    def stored_view(self) -> memoryview:
        """The bytes to send, without a copy when the file has been read already."""
        if self._file is None:
            return memoryview(_dataset_bytes(self.instance))
        return memoryview(self._file)[_dataset_offset(self._file):]

    def stored_bytes(self) -> bytes:
        return bytes(self.stored_view())

    def decoded(self) -> Dataset:
        return dcmread(self.instance.path)


class ConvertedDataset(StoredDataset):
    """An instance converted to another uncompressed transfer syntax, sent as its converted bytes the way a
    ``StoredDataset`` is sent as its stored ones. They are made before the instance is handed to pynetdicom,
    so that a data set that cannot be converted is known (and sent as stored, to fail) before the C-STORE."""

    def __init__(self, instance: StoredInstance, syntax: UID, encoded: bytes) -> None:
        super().__init__(instance, syntax)
        self.encoded = encoded

    def stored_view(self) -> memoryview:
        return memoryview(self.encoded)

    def decoded(self) -> Dataset:
        """The converted data set read back with pydicom, in its new encoding, for stock pynetdicom to encode
        (which keeps the values of elements it does not change as read)."""
        implicit, little, deflated = self.stored_encoding()
        data = zlib.decompress(self.encoded, -zlib.MAX_WBITS) if deflated else self.encoded
        ds = read_dataset(BytesIO(data), implicit, little)
        ds.file_meta = self.file_meta
        ds.set_original_encoding(implicit, little)
        return ds


def _file_syntax(instance: StoredInstance, data: bytes | None = None) -> UID | None:
    """The transfer syntax the file itself declares (an overwrite may be on disk before its index row), when
    pydicom knows it; None sends the instance the slow way, where a failure is one failed sub-operation.
    ``data``: the file's bytes, when read already."""
    text = _meta_syntax(instance.path if data is None else data)
    if text is None:  # not the layout every archive file has: let pydicom read the meta
        try:
            text = str(read_file_meta_info(instance.path).TransferSyntaxUID)
        except Exception:  # noqa: BLE001 - unreadable meta: let the slow path report it
            return None
    syntax = UID(text)
    return syntax if syntax.is_transfer_syntax else None


_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"


def _meta_syntax(source: Path | bytes) -> str | None:
    """(0002,0010) Transfer Syntax UID from a Part-10 file's meta group (explicit VR little endian, led by its
    group length: PS3.10 7.1), read from the bytes (of the file at ``source``, or ``source`` itself):
    pydicom's ``read_file_meta_info`` took a third of a C-MOVE sub-operation's time. None when the file is laid
    out otherwise."""
    if isinstance(source, bytes):
        head = source[:144]
    else:
        with open(source, "rb") as f:
            head = f.read(144)
            source = head + f.read(int.from_bytes(head[140:144], "little")) if len(head) == 144 else head
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:140] != _GROUP_LENGTH:
        return None
    meta = memoryview(source)[144:144 + int.from_bytes(head[140:144], "little")]
    pos = 0
    while pos + 8 <= len(meta):
        group, element = struct.unpack_from("<HH", meta, pos)
        if bytes(meta[pos + 4:pos + 6]) in LONG_VR_BYTES:
            length, start = struct.unpack_from("<I", meta, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", meta, pos + 6)[0], pos + 8
        if group != 0x0002 or start + length > len(meta):
            return None
        if element == 0x0010:
            return bytes(meta[start:start + length]).rstrip(b"\x00 ").decode("ascii", "replace")
        pos = start + length
    return None


def _converted(instance: StoredInstance, stored: UID, target: UID) -> bytes:
    """The instance's dataset encoded in the uncompressed ``target``: converted from the stored bytes, or from
    the decompressed image encoded in Explicit VR Little Endian (what ``Dataset.decompress`` makes of it)."""
    if stored in NATIVE:
        return transcode.convert(_dataset_bytes(instance), stored, target)
    ds = dcmread(instance.path)
    ds.decompress(generate_instance_uid=False)  # same image, other encoding: same identity
    encoded = encode(ds, False, True)
    if encoded is None:
        raise ValueError("pydicom cannot encode the decompressed dataset")
    return encoded if target == ExplicitVRLittleEndian else transcode.convert(encoded, ExplicitVRLittleEndian,
                                                                               target)


def dataset_for(instance: StoredInstance, accepted: set[str] | None, *, as_bytes: bool = True) -> Dataset:
    """The dataset to send, in a transfer syntax from ``accepted`` (None: any) when one can be reached.

    With ``as_bytes`` (hounsfield's fast paths are on: ``dimse.fastpath``) it is a ``StoredDataset`` whose
    bytes go out as they are; without, stock pynetdicom encodes what it is given, so it gets the data set
    decoded — a ``StoredDataset`` holds nothing else but the instance's identity."""
    chosen = _chosen(instance, accepted)
    return chosen if as_bytes or not isinstance(chosen, StoredDataset) else chosen.decoded()


def _chosen(instance: StoredInstance, accepted: set[str] | None) -> Dataset:
    data = instance.path.read_bytes()
    stored = _file_syntax(instance, data)
    if stored is None:
        return dcmread(instance.path)
    if accepted is None or stored in accepted:
        return StoredDataset(instance, stored, data)
    target = next((UID(ts) for ts in NATIVE if ts in accepted), None)
    if target is None:
        return StoredDataset(instance, stored)  # nothing reachable: the send fails, a failed sub-operation
    try:
        return ConvertedDataset(instance, target, _converted(instance, stored, target))
    except Exception as exc:  # noqa: BLE001 - any codec or format failure means "cannot convert": send as stored
        log.warning("cannot convert %s from %s to %s: %s", instance.sop_instance_uid, stored, target, exc)
        return StoredDataset(instance, stored)
