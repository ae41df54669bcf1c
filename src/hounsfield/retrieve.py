"""Choosing the transfer syntax an instance travels in (C-GET, C-MOVE): as stored when the receiver accepts
it, otherwise converted to one the receiver accepted when a codec allows, otherwise sent as stored so that the
sub-operation fails and is counted (PS3.4 C.4.2.3 / C.4.3.3)."""

from __future__ import annotations

import logging

from pydicom import dcmread
from pydicom.dataset import Dataset
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


def dataset_for(instance: StoredInstance, accepted: set[str] | None) -> Dataset:
    """The dataset to send, in a transfer syntax from ``accepted`` when one can be reached."""
    ds = dcmread(instance.path)
    stored = instance.transfer_syntax_uid
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
