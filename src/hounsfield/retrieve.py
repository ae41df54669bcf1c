"""Choosing the transfer syntax an instance travels in (C-GET, C-MOVE): as stored when the receiver accepts
it, otherwise converted to one the receiver accepted when a codec allows, otherwise sent as stored so that the
sub-operation fails and is counted (PS3.4 C.4.2.3 / C.4.3.3)."""

from __future__ import annotations

import logging
import struct

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from hounsfield.archive import StoredInstance

log = logging.getLogger(__name__)
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)


def proposed_syntaxes(stored_ts: str) -> list[list[str]]:
    """Presentation contexts to propose for an instance stored in ``stored_ts`` (one list per context)."""
    native = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    if stored_ts in native:
        return [native]
    return [[stored_ts], native]


class StoredDataset(Dataset):
    """An instance sent exactly as stored. pynetdicom reads only its identity and transfer syntax from the
    dataset it sends; ``dimse/store_fastpath.py`` then hands over the stored dataset bytes where pynetdicom
    would encode a decoded copy (5-10 ms for a CT slice, the bulk of a C-GET or C-MOVE sub-operation)."""

    def __init__(self, instance: StoredInstance, syntax: UID) -> None:
        super().__init__()
        self.SOPClassUID = instance.sop_class_uid
        self.SOPInstanceUID = instance.sop_instance_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = syntax
        self.set_original_encoding(syntax.is_implicit_VR, syntax.is_little_endian)
        self.stored_path = instance.path

    def stored_encoding(self) -> tuple[bool, bool, bool]:
        """(implicit VR, little endian, deflated) of the stored bytes."""
        syntax = UID(self.file_meta.TransferSyntaxUID)
        return syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated

    def stored_bytes(self) -> bytes:
        """The dataset as stored: the Part-10 file without preamble and file meta group."""
        data = self.stored_path.read_bytes()
        if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
            raise ValueError(f"{self.stored_path} is not a Part-10 file with a file meta group length")
        return data[144 + struct.unpack_from("<I", data, 140)[0]:]

    def decoded(self) -> Dataset:
        return dcmread(self.stored_path)


def _file_syntax(instance: StoredInstance) -> UID | None:
    """The transfer syntax the file itself declares (an overwrite may be on disk before its index row), when
    pydicom knows it; None sends the instance the slow way, where a failure is one failed sub-operation."""
    try:
        syntax = UID(read_file_meta_info(instance.path).TransferSyntaxUID)
    except Exception:  # noqa: BLE001 - unreadable meta: let the slow path report it
        return None
    return syntax if syntax.is_transfer_syntax else None


def dataset_for(instance: StoredInstance, accepted: set[str] | None) -> Dataset:
    """The dataset to send, in a transfer syntax from ``accepted`` when one can be reached."""
    stored = _file_syntax(instance)
    if stored is not None and (accepted is None or stored in accepted):
        return StoredDataset(instance, stored)
    ds = dcmread(instance.path)
    stored = str(ds.file_meta.get("TransferSyntaxUID", instance.transfer_syntax_uid))
    if accepted is None or stored in accepted:
        return ds
    target = next((ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if ts in accepted), None)
    if target is None:
        return ds  # nothing reachable: the send fails and counts as a failed sub-operation
    try:
        if not UID(stored).is_compressed or stored == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = target
            ds.set_original_encoding(target == ImplicitVRLittleEndian, True)
        else:
            ds.decompress(generate_instance_uid=False)  # same image, other encoding: same identity
            if target == ImplicitVRLittleEndian:
                ds.file_meta.TransferSyntaxUID = target
                ds.set_original_encoding(True, True)
    except Exception as exc:  # noqa: BLE001 - any codec failure means "cannot convert": send as stored
        log.warning("cannot convert %s from %s to %s: %s", instance.sop_instance_uid, stored, target, exc)
        return dcmread(instance.path)
    return ds
